"""Prepare fetches only from public internet addresses: a composition cannot make renderd (the CLI
or the daemon at submit) fetch from loopback, the LAN or a metadata address and draw the answer.

Real HTTP listeners on 127.0.0.x (and ::1 when the machine has it) count every TCP connection they
accept; a refused URL must open none. With the operator's allow-list the same listener is reached,
which shows the counting sees a request when there is one.
"""

from __future__ import annotations

import io
import json
import socket
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest
from conftest import run_renderd
from daemonctl import Daemon
from PIL import Image

from renderd.netguard import AddressPolicy, is_public
from renderd.prepare.cdn import npm_file_for

ALLOW_ENV = "RENDERD_PREPARE_ALLOW"


def _png() -> bytes:
    buf = io.BytesIO()
    Image.new("RGB", (8, 8), (0, 255, 0)).save(buf, format="PNG")
    return buf.getvalue()


PNG = _png()


class Listener:
    """A threaded HTTP server on ``host``: counts connections, answers a PNG or a redirect."""

    def __init__(self, host: str, redirect_to: str | None = None, css: str | None = None) -> None:
        self.connections = 0
        self.paths: list[str] = []
        outer = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:  # noqa: N802 (http.server's name)
                outer.paths.append(self.path)
                if redirect_to is not None:
                    self.send_response(302)
                    self.send_header("Location", redirect_to)
                    self.send_header("Content-Length", "0")
                    self.end_headers()
                    return
                body, ctype = (css.encode(), "text/css") if css is not None else (PNG, "image/png")
                self.send_response(200)
                self.send_header("Content-Type", ctype)
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, *args: object) -> None:
                pass

        class Server(ThreadingHTTPServer):
            address_family = socket.AF_INET6 if ":" in host else socket.AF_INET

            def process_request(self, request: Any, client_address: Any) -> None:
                outer.connections += 1  # counted before any byte is read: a bare connect counts too
                super().process_request(request, client_address)

        self.httpd = Server((host, 0), Handler)
        self.port = self.httpd.server_address[1]
        self._thread = threading.Thread(target=self.httpd.serve_forever, daemon=True)
        self._thread.start()

    def stop(self) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()
        self._thread.join(10)


def _has_ipv6_loopback() -> bool:
    try:
        with socket.socket(socket.AF_INET6, socket.SOCK_STREAM) as s:
            s.bind(("::1", 0))
        return True
    except OSError:
        return False


@pytest.fixture
def listener() -> Iterator[Listener]:
    server = Listener("127.0.0.1")
    yield server
    server.stop()


@pytest.fixture
def listener6() -> Iterator[Listener | None]:
    server = Listener("::1") if _has_ipv6_loopback() else None
    yield server
    if server is not None:
        server.stop()


def _forms(port: int, port6: int | None) -> list[str]:
    """Ways of writing a loopback address in a URL (each reaches the listener on the old code)."""
    forms = [
        f"http://127.0.0.1:{port}/literal.png",
        f"http://localhost:{port}/name.png",
        f"http://2130706433:{port}/decimal.png",
        f"http://0x7f.1:{port}/hex.png",
        f"http://0.0.0.0:{port}/unspecified.png",
        f"http://[::ffff:127.0.0.1]:{port}/mapped.png",
    ]
    if port6 is not None:
        forms.append(f"http://[::1]:{port6}/v6.png")
    return forms


PAGE = """<!doctype html>
<html><head><meta charset="utf-8">
<style>{css}</style>
{head}
</head><body>
<div id="root" data-composition-id="main" data-start="0" data-duration="1" data-width="160" data-height="120"
     data-fps="30" style="width:160px;height:120px;background:#00f">
{body}
</div>
</body></html>
"""


def _write(comp: Path, *, css: str = "", head: str = "", body: str = "", files: dict[str, str] | None = None) -> Path:
    comp.mkdir(parents=True)
    (comp / "index.html").write_text(PAGE.format(css=css, head=head, body=body))
    for name, text in (files or {}).items():
        (comp / name).write_text(text)
    return comp


def _every_form(comp: Path, urls: list[str]) -> Path:
    """A composition loading each URL a different way: CSS url(), <img>, <script>, <link> stylesheet."""
    css = "\n".join(f"#d{i} {{ background: url({u}); }}" for i, u in enumerate(urls))
    head = f'<script src="{urls[0]}"></script>\n<link rel="stylesheet" href="{urls[1]}">'
    body = "\n".join(f'<img src="{u}"><div id="d{i}"></div>' for i, u in enumerate(urls))
    return _write(comp, css=css, head=head, body=body)


def _assert_refused(stderr: str, urls: list[str]) -> None:
    assert "could not be localised" in stderr, stderr
    for u in urls:
        assert f"{u}: refused: " in stderr, (u, stderr)
    assert "Traceback" not in stderr


def test_prepare_refuses_every_loopback_form(tmp_path: Path, listener: Listener, listener6: Listener | None) -> None:
    urls = _forms(listener.port, listener6.port if listener6 else None)
    # Only loopback targets here: on a build without the guard this test would really connect,
    # and nothing off this machine may ever be contacted. Private, link-local and metadata
    # addresses are judged by test_address_ranges without any connection.
    comp = _every_form(tmp_path / "comp", urls)
    env = {"RENDERD_CACHE_DIR": str(tmp_path / "cache"), ALLOW_ENV: ""}
    r = run_renderd("prepare", comp, "-o", tmp_path / "out", env=env)
    assert r.returncode == 2, r.stderr
    _assert_refused(r.stderr, urls)
    assert "redirected" not in r.stderr
    assert (
        f"index.html:3: http://127.0.0.1:{listener.port}/literal.png: refused: 127.0.0.1 is not a public address"
        in r.stderr
    )
    assert f"http://localhost:{listener.port}/name.png: refused: localhost resolves to 127.0.0.1" in r.stderr
    assert (
        f"http://[::ffff:127.0.0.1]:{listener.port}/mapped.png: refused: ::ffff:127.0.0.1 is not a public" in r.stderr
    )
    assert listener.connections == 0, listener.paths
    assert listener6 is None or listener6.connections == 0, listener6.paths
    assert not (tmp_path / "out").exists()
    assert not (tmp_path / "cache" / "assets").exists()


def test_prepare_with_the_allow_list_reaches_the_listener(
    tmp_path: Path, listener: Listener, listener6: Listener | None
) -> None:
    """The same loads with the operator's override: the listener sees them, so the test above can see a request."""
    urls = _forms(listener.port, listener6.port if listener6 else None)
    comp = _every_form(tmp_path / "comp", urls)
    env = {"RENDERD_CACHE_DIR": str(tmp_path / "cache"), ALLOW_ENV: "127.0.0.0/8, 0.0.0.0,::1"}
    r = run_renderd("prepare", comp, "-o", tmp_path / "out", "--json", env=env)
    assert r.returncode == 0, r.stderr
    result = json.loads(r.stdout)
    assert result["sources"] == {"network": len(urls)}
    assert {p for p in listener.paths} >= {"/literal.png", "/name.png", "/decimal.png", "/hex.png", "/mapped.png"}
    assert listener6 is None or listener6.paths == ["/v6.png"]


def test_a_host_name_in_the_allow_list_allows_that_name_only(tmp_path: Path, listener: Listener) -> None:
    urls = [f"http://localhost:{listener.port}/name.png", f"http://127.0.0.1:{listener.port}/literal.png"]
    comp = _every_form(tmp_path / "comp", urls)
    env = {"RENDERD_CACHE_DIR": str(tmp_path / "cache"), ALLOW_ENV: "LOCALHOST"}
    r = run_renderd("prepare", comp, "-o", tmp_path / "out", env=env)
    assert r.returncode == 2, r.stderr
    _assert_refused(r.stderr, urls[1:])
    assert f"{urls[0]}: refused" not in r.stderr
    assert listener.paths and set(listener.paths) == {"/name.png"}


def test_a_script_named_loopback_url_is_left_remote_and_never_fetched(tmp_path: Path, listener: Listener) -> None:
    url = f"http://127.0.0.1:{listener.port}/x.json"
    comp = _write(tmp_path / "comp", head='<script src="js/app.js"></script>', files={})
    (comp / "js").mkdir()
    (comp / "js" / "app.js").write_text(f'fetch("{url}").then((r) => r.json());\n')
    env = {"RENDERD_CACHE_DIR": str(tmp_path / "cache"), ALLOW_ENV: ""}
    r = run_renderd("prepare", comp, "-o", tmp_path / "out", env=env)
    assert r.returncode == 0, r.stderr
    assert f"js/app.js:1: {url}: refused: 127.0.0.1 is not a public address" in r.stderr
    assert listener.connections == 0, listener.paths
    assert url in (tmp_path / "out" / "js" / "app.js").read_text()


def test_a_redirect_from_an_allowed_address_to_a_refused_one_is_not_followed(
    tmp_path: Path, listener: Listener
) -> None:
    """127.0.0.2 is allowed by the operator; its redirect to 127.0.0.1 (not allowed) is refused."""
    secret = f"http://127.0.0.1:{listener.port}/secret.png"
    hop = Listener("127.0.0.2", redirect_to=secret)
    try:
        url = f"http://127.0.0.2:{hop.port}/hop.png"
        comp = _write(tmp_path / "comp", body=f'<img src="{url}">')
        env = {"RENDERD_CACHE_DIR": str(tmp_path / "cache"), ALLOW_ENV: "127.0.0.2"}
        r = run_renderd("prepare", comp, "-o", tmp_path / "out", env=env)
        assert r.returncode == 2, r.stderr
        assert f"{url}: refused: redirected to {secret}: 127.0.0.1 is not a public address" in r.stderr, r.stderr
        assert hop.paths == ["/hop.png"]  # the first hop was allowed and asked
        assert listener.connections == 0, listener.paths
    finally:
        hop.stop()


def test_render_refuses_before_anything_is_fetched(tmp_path: Path, listener: Listener) -> None:
    urls = _forms(listener.port, None)[:4]
    comp = _every_form(tmp_path / "comp", urls)
    env = {"RENDERD_CACHE_DIR": str(tmp_path / "cache"), ALLOW_ENV: ""}
    r = run_renderd("render", comp, "-o", tmp_path / "out.mp4", env=env)
    assert r.returncode == 2, r.stderr
    _assert_refused(r.stderr, urls)
    assert listener.connections == 0, listener.paths
    assert not (tmp_path / "out.mp4").exists()


def test_the_allow_list_is_checked(tmp_path: Path) -> None:
    comp = _write(tmp_path / "comp", body='<img src="https://example.com/a.png">')
    r = run_renderd("prepare", comp, env={ALLOW_ENV: "10.0.0.0/33", "RENDERD_CACHE_DIR": str(tmp_path / "c")})
    assert r.returncode == 2
    assert r.stderr.startswith(f"renderd: error: {ALLOW_ENV}: '10.0.0.0/33' is not an address, a network") and (
        "Traceback" not in r.stderr
    ), r.stderr


def test_daemon_submit_refuses_loopback_and_keeps_running(
    short_tmp: Path, listener: Listener, monkeypatch: pytest.MonkeyPatch
) -> None:
    urls = _forms(listener.port, None)
    comp = _every_form(short_tmp / "comp", urls)
    (short_tmp / "d").mkdir()
    # Only the daemon's config widens what it fetches from, not its environment.
    monkeypatch.setenv(ALLOW_ENV, "127.0.0.1")
    daemon = Daemon(short_tmp / "d")
    daemon.start()
    try:
        r = daemon.ctl("submit", comp, "-o", short_tmp / "out.mp4")
        assert r.returncode != 0
        _assert_refused(r.stderr, urls)
        assert listener.connections == 0, listener.paths
        assert daemon.ctl("list").returncode == 0  # still serving
    finally:
        daemon.stop()
    assert not (short_tmp / "out.mp4").exists()


@pytest.mark.browser
def test_daemon_prepare_allow_reaches_the_listener(short_tmp: Path, listener: Listener) -> None:
    url = f"http://127.0.0.1:{listener.port}/literal.png"
    comp = _write(short_tmp / "comp", body=f'<img src="{url}">')
    (short_tmp / "d").mkdir()
    daemon = Daemon(short_tmp / "d", timeouts='[prepare]\nallow = ["127.0.0.1"]\n')
    daemon.start()
    try:
        r = daemon.ctl("submit", comp, "-o", short_tmp / "out.mp4")
        assert r.returncode == 0, r.stderr
        assert listener.paths == ["/literal.png"]
    finally:
        daemon.stop()


def test_daemon_config_checks_prepare_allow(tmp_path: Path) -> None:
    config = tmp_path / "renderd.toml"
    config.write_text('[prepare]\nallow = ["10.0.0.0/8", "bad host"]\n')
    (tmp_path / "hosts.toml").write_text("")
    r = run_renderd("config", "check", "--config", config, "--hosts", tmp_path / "hosts.toml")
    assert r.returncode != 0
    assert f"{config}:2: prepare.allow[1]:" in r.stderr + r.stdout, r.stderr + r.stdout


@pytest.mark.parametrize(
    "address",
    (
        "127.0.0.1 10.1.2.3 172.16.0.1 192.168.1.1 169.254.169.254 100.64.0.1 0.0.0.0 224.0.0.1 255.255.255.255 "
        "192.0.2.1 198.18.0.1 240.0.0.1 ::1 :: fe80::1 fc00::1 fd12::1 ff02::1 2001:db8::1 ::ffff:127.0.0.1 "
        "::ffff:10.0.0.1 ::127.0.0.1 2002:7f00:1:: 2002:a9fe:a9fe:: 64:ff9b::a9fe:a9fe 192.0.0.8 fec0::1 3fff::1 "
        "100::1 2001::1"
    ).split(),
)
def test_non_public_addresses(address: str) -> None:
    import ipaddress

    assert not is_public(ipaddress.ip_address(address))


@pytest.mark.parametrize("address", ["8.8.8.8", "1.1.1.1", "2606:4700::1111", "::ffff:8.8.8.8", "64:ff9b::808:808"])
def test_public_addresses(address: str) -> None:
    import ipaddress

    assert is_public(ipaddress.ip_address(address))


def test_allow_policy_parses_networks_and_names() -> None:
    import ipaddress

    policy = AddressPolicy.parse(["10.0.0.0/8", "assets.LAN.", "fd00::/8", "192.168.1.7"])
    assert policy.allows_address(ipaddress.ip_address("10.9.9.9"))
    assert policy.allows_address(ipaddress.ip_address("192.168.1.7"))
    assert not policy.allows_address(ipaddress.ip_address("192.168.1.8"))
    assert policy.allows_address(ipaddress.ip_address("fd00::5"))
    assert policy.allows_host("assets.lan") and not policy.allows_host("other.lan")
    for bad in ("10.0.0.0/33", "bad host", "http://x/", ""):
        with pytest.raises(ValueError):
            AddressPolicy.parse([bad])


@pytest.mark.parametrize(
    "url",
    [
        "https://cdn.jsdelivr.net/npm/gsap@file:../x/y.js",
        "https://cdn.jsdelivr.net/npm/gsap@file:%2E%2E%2Fetc/passwd",
        "https://cdn.jsdelivr.net/npm/gsap@git+ssh:x",
        "https://cdn.jsdelivr.net/npm/gsap@npm:evil@1.0.0/x.js",
        "https://cdn.jsdelivr.net/npm/gsap@http:%2F%2F127.0.0.1:9%2Fx.tgz",
        "https://cdn.jsdelivr.net/npm/--registry=x@1.0.0/x.js",
        "https://unpkg.com/-x@1.0.0/x.js",
        "https://unpkg.com/gsap@..%2F..%2Fx/x.js",
        "https://cdnjs.cloudflare.com/ajax/libs/gsap/file:x/gsap.min.js",
    ],
)
def test_cdn_urls_cannot_choose_what_npm_packs(url: str) -> None:
    """Only NAME@VERSION from the operator's registry: no URL, git, file or alias spec, no option."""
    assert npm_file_for(url) is None


def test_through_a_proxy_the_target_is_checked_first(tmp_path: Path, listener: Listener) -> None:
    """With HTTP_PROXY the proxy connects, so renderd checks the target before asking it.

    The 127.0.0.2 listener plays the operator's proxy (trusted: its own address is not checked).
    A loopback target never reaches it; a name this machine cannot resolve is left to the proxy,
    which then sees the request (so the test can see one).
    """
    proxy = Listener("127.0.0.2")
    try:
        refused = [f"http://127.0.0.1:{listener.port}/literal.png", f"http://localhost:{listener.port}/name.png"]
        comp = _write(tmp_path / "comp", body="".join(f'<img src="{u}">' for u in refused))
        env = {
            "RENDERD_CACHE_DIR": str(tmp_path / "cache"),
            ALLOW_ENV: "",
            "HTTP_PROXY": f"http://127.0.0.2:{proxy.port}",
            "http_proxy": f"http://127.0.0.2:{proxy.port}",
            "NO_PROXY": "",
            "no_proxy": "",
        }
        r = run_renderd("prepare", comp, "-o", tmp_path / "out", env=env)
        assert r.returncode == 2, r.stderr
        _assert_refused(r.stderr, refused)
        assert proxy.connections == 0 and listener.connections == 0, (proxy.paths, listener.paths)

        unresolvable = "http://assets.renderd-test.invalid/mirror.png"
        comp2 = _write(tmp_path / "comp2", body=f'<img src="{unresolvable}">')
        r = run_renderd("prepare", comp2, "-o", tmp_path / "out2", env=env)
        assert r.returncode == 0, r.stderr
        assert proxy.paths == [unresolvable]
    finally:
        proxy.stop()


def test_a_loopback_url_inside_an_allowed_stylesheet_is_refused(tmp_path: Path, listener: Listener) -> None:
    """A remote stylesheet (as Google Fonts' is) naming a loopback font: refused, the stylesheet named as where."""
    font = f"http://127.0.0.1:{listener.port}/font.woff2"
    sheet = Listener("127.0.0.2", css=f"@font-face {{ font-family: x; src: url({font}); }}\n")
    try:
        url = f"http://127.0.0.2:{sheet.port}/css2"
        comp = _write(tmp_path / "comp", head=f'<link rel="stylesheet" href="{url}">')
        env = {"RENDERD_CACHE_DIR": str(tmp_path / "cache"), ALLOW_ENV: "127.0.0.2"}
        r = run_renderd("prepare", comp, "-o", tmp_path / "out", env=env)
        assert r.returncode == 2, r.stderr
        assert f"{url}:1: {font}: refused: 127.0.0.1 is not a public address" in r.stderr, r.stderr
        assert sheet.paths == ["/css2"]
        assert listener.connections == 0, listener.paths
    finally:
        sheet.stop()


def test_npm_never_packs_a_spec_that_is_not_name_and_version(tmp_path: Path) -> None:
    """The argv check in npm.py, behind the one in cdn.py: npm is not even started."""
    import asyncio

    from renderd.errors import NpmFailed
    from renderd.prepare.cdn import NpmFile
    from renderd.prepare.npm import NpmResolver

    marker = tmp_path / "npm-ran"
    fake_npm = tmp_path / "npm"
    fake_npm.write_text(f"#!/bin/sh\ntouch {marker}\nexit 1\n")
    fake_npm.chmod(0o755)
    resolver = NpmResolver(offline=True, npm=str(fake_npm))
    try:
        for name, version in (("gsap", "file:.."), ("--registry=x", "1.0.0"), ("gsap", "git+ssh:x")):
            with pytest.raises(NpmFailed, match="is not a package name and version"):
                asyncio.run(resolver.read(NpmFile(name, version, None)))
    finally:
        resolver.close()
    assert not marker.exists()
