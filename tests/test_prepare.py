"""`renderd prepare`: remote scripts, stylesheets, fonts and images localised for offline renders.

A real HTTP server on 127.0.0.1 plays the CDN, Google Fonts and an npm registry; it is stopped
before rendering, and the render runs in a network namespace without network when possible.
Prepare fetches only from public addresses unless the operator allows more, so every test here
allows 127.0.0.1 (RENDERD_PREPARE_ALLOW, and ``[prepare] allow`` for the daemon); what is refused
without it is tested in test_confinement_prepare.py.
"""

from __future__ import annotations

import base64
import hashlib
import io
import json
import os
import shutil
import socket
import subprocess
import sys
import tarfile
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest
from conftest import EXAMPLES, renderd_cmd, run_renderd
from daemonctl import Daemon, wait_state
from PIL import Image
from sshhosts import TestHosts
from videotools import close, decode_frames, pixel

from renderd.composition import load_composition
from renderd.prepare.build import scan_composition
from renderd.prepare.cdn import NpmFile, npm_file_for
from renderd.prepare.scan import scan_html

GSAP = EXAMPLES / "vendor" / "gsap" / "gsap.min.js"
GSAP_VERSION = "3.15.0"
DEJAVU = Path("/usr/share/fonts/truetype/dejavu/DejaVuSans.ttf")
W, H = 320, 240


class CdnServer:
    """A threaded HTTP server on a random loopback port serving fixed bodies by path (query included)."""

    def __init__(self) -> None:
        self.routes: dict[str, tuple[bytes, str]] = {}
        self.requests: list[tuple[str, str]] = []  # (path, user agent)
        outer = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:  # noqa: N802 (http.server's name)
                outer.requests.append((self.path, self.headers.get("User-Agent", "")))
                body, ctype = outer.routes.get(self.path, (b"not found", ""))
                # Like Google Fonts, answer stylesheets only to a browser (it picks formats by UA).
                if self.path.startswith("/css2") and "Chrome/" not in self.headers.get("User-Agent", ""):
                    body, ctype = b"browser required", ""
                self.send_response(200 if ctype else (400 if body == b"browser required" else 404))
                self.send_header("Content-Type", ctype or "text/plain")
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, *args: object) -> None:
                pass

        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.base = f"http://127.0.0.1:{self.httpd.server_address[1]}"
        self._thread = threading.Thread(target=self.httpd.serve_forever, daemon=True)
        self._thread.start()

    def stop(self) -> None:
        """Stop serving and close the port: later requests cannot connect."""
        self.httpd.shutdown()
        self.httpd.server_close()
        self._thread.join(10)


# The daemon's config line that lets it fetch from the loopback CDN of these tests.
ALLOW_LOOPBACK = '[prepare]\nallow = ["127.0.0.1"]\n'


@pytest.fixture(autouse=True)
def _allow_loopback(monkeypatch: pytest.MonkeyPatch) -> None:
    """Let `renderd prepare`/`render` (they inherit the environment) fetch from the loopback CDN."""
    monkeypatch.setenv("RENDERD_PREPARE_ALLOW", "127.0.0.1")


@pytest.fixture
def cdn() -> Iterator[CdnServer]:
    server = CdnServer()
    yield server
    if server._thread.is_alive():
        server.stop()


def _png(rgb: tuple[int, int, int]) -> bytes:
    buf = io.BytesIO()
    Image.new("RGB", (40, 40), rgb).save(buf, format="PNG")
    return buf.getvalue()


def _serve_assets(cdn: CdnServer) -> None:
    cdn.routes[f"/npm/gsap@{GSAP_VERSION}/dist/gsap.min.js"] = (GSAP.read_bytes(), "application/javascript")
    font_url = f"{cdn.base}/s/testsans/v1/DejaVuSans.ttf"
    css = (
        "/* latin */\n@font-face {\n  font-family: 'Test Sans';\n  font-style: normal;\n  font-weight: 400;\n"
        f"  font-display: block;\n  src: url({font_url}) format('truetype');\n}}\n"
    )
    cdn.routes["/css2?family=Test+Sans&display=block"] = (css.encode(), "text/css; charset=utf-8")
    cdn.routes["/s/testsans/v1/DejaVuSans.ttf"] = (DEJAVU.read_bytes(), "font/ttf")
    cdn.routes["/img/green.png"] = (_png((0, 255, 0)), "image/png")
    cdn.routes["/img/blue.png"] = (_png((0, 0, 255)), "image/png")


# 320x240, 2 s at 30 fps. Red box 40x40 at y 0..39 moved by GSAP from x = 0 to x = 200 (linear),
# so at frame k its left edge is at 100*k/30. Green <img> at x 260..299, y 0..39; blue CSS
# background at x 260..299, y 45..84. Two lines of ten "i" at 40 px: line 1 (y 100..149) in the
# web font, falling back to monospace; line 2 (y 170..219) in a monospace face (HyperFrames draws
# "DejaVu Sans Mono" with JetBrains Mono). DejaVu Sans "i" is about
# 11 px wide, DejaVu Sans Mono's 24 px: line 1 ends near x = 111 only if the web font loaded.
COMPOSITION = """<!doctype html>
<html>
  <head>
    <meta charset="utf-8">
    <link rel="preconnect" href="https://fonts.gstatic.com" crossorigin>
    <script src="{base}/npm/gsap@{gsap}/dist/gsap.min.js"></script>
    <link href="{base}/css2?family=Test+Sans&amp;display=block" rel="stylesheet">
    <style>
      html, body {{ margin: 0; width: 320px; height: 240px; overflow: hidden; background: #000; }}
      #root {{ position: relative; width: 320px; height: 240px; overflow: hidden; }}
      #box {{ position: absolute; left: 0; top: 0; width: 40px; height: 40px; background: #f00; }}
      #img {{ position: absolute; left: 260px; top: 0; width: 40px; height: 40px; }}
      .line {{ position: absolute; left: 0; font-size: 40px; line-height: 50px; color: #fff; white-space: nowrap; }}
    </style>
  </head>
  <body>
    <div id="root" data-composition-id="main" data-start="0" data-duration="2"
         data-width="320" data-height="240" data-fps="30">
      <div id="box"></div>
      <img id="img" src="{base}/img/green.png">
      <div style="position: absolute; left: 260px; top: 45px; width: 40px; height: 40px;
                  background: url('{base}/img/blue.png')"></div>
      <div class="line" style="top:100px;font-family:'Test Sans', monospace">iiiiiiiiii</div>
      <div class="line" style="top:170px;font-family:'DejaVu Sans Mono', monospace">iiiiiiiiii</div>
    </div>
    <script>
      window.__timelines = window.__timelines || {{}};
      const tl = gsap.timeline({{ paused: true }});
      tl.fromTo("#box", {{ x: 0 }}, {{ x: 200, duration: 2, ease: "none" }});
      window.__timelines["main"] = tl;
    </script>
  </body>
</html>
"""


def _write_composition(root: Path, base: str) -> Path:
    root.mkdir(parents=True)
    (root / "index.html").write_text(COMPOSITION.format(base=base, gsap=GSAP_VERSION), encoding="utf-8")
    return root


def _tree(root: Path) -> dict[str, tuple[str, int]]:
    """Map each file under ``root`` to (sha256, mtime_ns): content and whether it was touched."""
    return {
        p.relative_to(root).as_posix(): (hashlib.sha256(p.read_bytes()).hexdigest(), p.stat().st_mtime_ns)
        for p in sorted(root.rglob("*"))
        if p.is_file()
    }


def _content(root: Path) -> dict[str, str]:
    return {k: v[0] for k, v in _tree(root).items()}


def _bright(frame: bytes, xs: range, ys: range) -> int:
    """Count pixels brighter than mid-grey in a region of a raw RGB frame."""
    return sum(1 for y in ys for x in xs if sum(pixel(frame, W, x, y)) > 3 * 110)


def _assert_picture(frame: bytes, k: int) -> None:
    """Check one decoded frame ``k`` of COMPOSITION: GSAP moved the box, images and font loaded."""
    left = round(100 * k / 30)
    r, g, b = pixel(frame, W, left + 20, 20)
    assert r > 200 and g < 60 and b < 60, f"frame {k}: red box not at x={left}: {(r, g, b)}"
    if left > 60:
        assert sum(pixel(frame, W, 20, 20)) < 90, f"frame {k}: box still at x=0"
    g_px, b_px = pixel(frame, W, 280, 20), pixel(frame, W, 280, 65)
    assert g_px[1] > 200 and g_px[0] < 60, f"frame {k}: remote <img> missing: {g_px}"
    assert b_px[2] > 200 and b_px[0] < 60, f"frame {k}: remote CSS background missing: {b_px}"
    # Control: monospace really is wide here, so a narrow line 1 proves the web font was used.
    assert _bright(frame, range(150, 300, 2), range(170, 220, 2)) > 20, "monospace line is not wide"
    assert _bright(frame, range(0, 100, 2), range(100, 150, 2)) > 20, f"frame {k}: line 1 has no text"
    assert _bright(frame, range(150, 300, 2), range(100, 150, 2)) == 0, f"frame {k}: web font not used"


def _unshare_prefix() -> list[str]:
    """Return ``unshare -n`` when this user may create a network namespace (no interfaces up), else []."""
    unshare = shutil.which("unshare")
    if unshare and subprocess.run([unshare, "-n", "true"], capture_output=True).returncode == 0:
        return [unshare, "-n"]
    return []


@pytest.mark.browser
def test_prepared_composition_renders_without_network(tmp_path: Path, cdn: CdnServer) -> None:
    _serve_assets(cdn)
    comp = _write_composition(tmp_path / "comp", cdn.base)
    before = _tree(comp)
    env = {"RENDERD_CACHE_DIR": str(tmp_path / "cache")}

    r = run_renderd("prepare", comp, "--json", env=env)
    assert r.returncode == 0, r.stderr
    result = json.loads(r.stdout)
    prepared = Path(result["prepared"])
    assert prepared.is_relative_to(tmp_path / "cache" / "prepared")
    assert result["references"] == 4 and result["rewritten"] == ["index.html"]
    assert result["sources"] == {"network": 5}  # gsap, stylesheet, font, two images
    # The stylesheet was fetched with a browser's User-Agent (Google Fonts serves by it).
    ua = dict(cdn.requests)["/css2?family=Test+Sans&display=block"]
    assert "Chrome/" in ua
    html = (prepared / "index.html").read_text()
    assert cdn.base not in html and "_renderd_assets/" in html
    assert 'href="https://fonts.gstatic.com"' in html, "a preconnect hint is not a load and stays"
    css = next(prepared.glob("_renderd_assets/*-css2.css")).read_text()
    assert "url(" in css and cdn.base not in css
    font = next(prepared.glob("_renderd_assets/*-DejaVuSans.ttf"))
    assert font.read_bytes() == DEJAVU.read_bytes() and font.name in css
    assert _tree(comp) == before, "the user's directory was modified"

    # Same input, same bytes: again into the cache (reused), and into a new directory.
    again = json.loads(run_renderd("prepare", comp, "--json", env=env).stdout)
    assert again["prepared"] == str(prepared) and again["reused"] and again["sources"] == {"cache": 5}
    copy = tmp_path / "copy"
    r = run_renderd("prepare", comp, "-o", copy, env=env)
    assert r.returncode == 0, r.stderr
    assert r.stdout.strip() == str(copy.resolve())
    assert _content(copy) == _content(prepared)

    cdn.stop()
    # Without the server, and without network at all: the cache has everything.
    r = run_renderd("prepare", comp, "--offline", "--json", env=env)
    assert r.returncode == 0, r.stderr
    assert json.loads(r.stdout)["prepared"] == str(prepared)

    out = tmp_path / "out.mp4"
    argv = [*_unshare_prefix(), *renderd_cmd("render", prepared, "-o", out, "--frames", "0:31", "--chunks", "2")]
    r = subprocess.run(argv, capture_output=True, text=True, timeout=240, env={**os.environ, **env})
    assert r.returncode == 0, r.stderr
    frames = decode_frames(out, W, H)
    assert len(frames) == 31
    for k in (0, 15, 30):
        _assert_picture(frames[k], k)
    assert _tree(comp) == before


@pytest.mark.browser
def test_render_prepares_implicitly_unless_told_not_to(tmp_path: Path, cdn: CdnServer) -> None:
    _serve_assets(cdn)
    comp = _write_composition(tmp_path / "comp", cdn.base)
    env = {"RENDERD_CACHE_DIR": str(tmp_path / "cache")}
    out = tmp_path / "out.mp4"
    r = run_renderd("render", comp, "-o", out, "--frames", "24:25", env=env)
    assert r.returncode == 0, r.stderr
    assert "localised 4 remote reference(s)" in r.stderr
    _assert_picture(decode_frames(out, W, H)[0], 24)

    # Unprepared, the engine blocks the CDN: GSAP never loads and the page fails.
    r = run_renderd("render", comp, "-o", tmp_path / "raw.mp4", "--no-prepare", "--ready-timeout", "5", env=env)
    assert r.returncode != 0
    assert "script error during load" in r.stderr and f"remote request refused: {cdn.base}" in r.stderr
    assert not (tmp_path / "raw.mp4").exists()


@pytest.mark.browser
def test_daemon_submit_renders_the_prepared_copy(short_tmp: Path, cdn: CdnServer) -> None:
    _serve_assets(cdn)
    comp = _write_composition(short_tmp / "comp", cdn.base)
    before = _tree(comp)
    daemon = Daemon(short_tmp, timeouts=ALLOW_LOOPBACK)
    daemon.start()
    try:
        out = short_tmp / "out.mp4"
        r = daemon.ctl("submit", comp, "-o", out, "--frames", "0:31", "--chunks", "2")
        assert r.returncode == 0, r.stderr
        job = r.stdout.strip()
        cdn.stop()  # prepared at submission: the agents never need the CDN
        status = wait_state(daemon, job, ("done", "failed"))
        assert status["job"]["state"] == "done", status["job"]
        assert status["job"]["composition"] == str(comp)
        prepared = Path(status["job"]["params"]["prepared"])
        # The daemon's home may be read-only (systemd): its cache is under the state directory.
        assert prepared.is_relative_to(short_tmp / "state" / "cache" / "prepared") and prepared.is_file()
    finally:
        daemon.stop()
    frames = decode_frames(out, W, H)
    assert len(frames) == 31
    for k in (0, 30):
        _assert_picture(frames[k], k)
    assert _tree(comp) == before


def test_sub_compositions_and_local_stylesheets_are_followed(tmp_path: Path, cdn: CdnServer) -> None:
    _serve_assets(cdn)
    b = cdn.base
    comp = tmp_path / "comp"
    for d in ("css", "compositions", "img"):
        (comp / d).mkdir(parents=True)
    files = {
        "index.html": '<link rel="stylesheet" href="css/style.css">\n'
        '<div data-composition-src="compositions/intro.html"></div>\n'
        f'<img src="{b}/img/green.png">\n',
        "css/style.css": f'@import url("{b}/css2?family=Test+Sans&display=block");\n'
        f".bg {{ background: url({b}/img/blue.png) }}\n.local {{ background: url(../img/local.png) }}\n",
        "compositions/intro.html": f'<template id="intro-template">\n<div style="background: url({b}/img/blue.png)">'
        f'<img src="{b}/img/green.png"></div>\n</template>\n',
        "unrelated.html": f'<script src="{b}/not-served.js"></script>\n',  # referenced by nothing: left alone
    }
    for rel, text in files.items():
        (comp / rel).write_text(text)
    (comp / "img" / "local.png").write_bytes(_png((1, 2, 3)))
    r = run_renderd("prepare", comp, "--json", env={"RENDERD_CACHE_DIR": str(tmp_path / "cache")})
    assert r.returncode == 0, r.stderr
    result = json.loads(r.stdout)
    assert result["rewritten"] == ["compositions/intro.html", "css/style.css", "index.html"]
    prepared = Path(result["prepared"])
    name = {a["url"]: a["file"] for a in result["assets"]}
    green, blue = name[f"{b}/img/green.png"], name[f"{b}/img/blue.png"]
    css2 = name[f"{b}/css2?family=Test+Sans&display=block"]
    expected = {
        # Next to the entry: relative; CSS: relative to the stylesheet; a sub-composition in a
        # sub-directory is mounted into the entry document, so root-absolute.
        "index.html": files["index.html"].replace(f"{b}/img/green.png", f"_renderd_assets/{green}"),
        "css/style.css": files["css/style.css"]
        .replace(f"{b}/css2?family=Test+Sans&display=block", f"../_renderd_assets/{css2}")
        .replace(f"{b}/img/blue.png", f"../_renderd_assets/{blue}"),
        "compositions/intro.html": files["compositions/intro.html"]
        .replace(f"{b}/img/blue.png", f"/_renderd_assets/{blue}")
        .replace(f"{b}/img/green.png", f"/_renderd_assets/{green}"),
        "unrelated.html": files["unrelated.html"],
    }
    for rel, text in expected.items():
        assert (prepared / rel).read_text() == text, rel
    assert (prepared / "css" / f"../_renderd_assets/{css2}").resolve().is_file()
    # In the cache, files that need no rewrite are hard links to the user's (no second copy of
    # media); rewritten ones are new files. A copy asked for with -o is a real copy.
    assert (prepared / "img" / "local.png").stat().st_ino == (comp / "img" / "local.png").stat().st_ino
    assert (prepared / "index.html").stat().st_ino != (comp / "index.html").stat().st_ino
    assert (comp / "index.html").read_text() == files["index.html"]
    out = tmp_path / "out"
    r = run_renderd("prepare", comp, "-o", out, env={"RENDERD_CACHE_DIR": str(tmp_path / "cache")})
    assert r.returncode == 0, r.stderr
    assert _content(out) == _content(prepared)
    assert (out / "img" / "local.png").stat().st_ino != (comp / "img" / "local.png").stat().st_ino


@pytest.mark.browser
@pytest.mark.skipif(not _unshare_prefix(), reason="cannot create a network namespace here")
def test_ssh_hosts_without_network_render_the_prepared_copy(short_tmp: Path, cdn: CdnServer) -> None:
    """The done-when of the issue: a composition referencing a CDN renders on hosts with no network."""
    _serve_assets(cdn)
    comp = _write_composition(short_tmp / "comp", cdn.base)
    # Each host's agent runs in its own network namespace: no interface up, not even loopback.
    agent = [*_unshare_prefix(), sys.executable, "-m", "renderd", "agent"]
    with TestHosts(short_tmp / "ssh", 2, agent_command=agent) as hosts:
        daemon = Daemon(short_tmp, hosts_file=hosts.inventory, timeouts=ALLOW_LOOPBACK)
        daemon.start()
        try:
            out = short_tmp / "out.mp4"
            r = daemon.ctl("submit", comp, "-o", out, "--frames", "0:31", "--chunks", "2")
            assert r.returncode == 0, r.stderr
            cdn.stop()
            status = wait_state(daemon, r.stdout.strip(), ("done", "failed"))
            assert status["job"]["state"] == "done", status["job"]
            prepared = Path(status["job"]["params"]["prepared"]).parent
        finally:
            daemon.stop()
        # What the hosts received is the prepared copy, with its assets.
        synced = [c for name in hosts.names for c in (hosts.host(name).work_dir / "cache").glob("*")]
        assert synced
        for copy in synced:
            assert _content(copy) == _content(prepared)
    frames = decode_frames(out, W, H)
    for k in (0, 15, 30):
        _assert_picture(frames[k], k)


def test_stylesheets_importing_each_other_fail_instead_of_hanging(tmp_path: Path, cdn: CdnServer) -> None:
    b = cdn.base
    cdn.routes["/a.css"] = (f'@import "{b}/b.css";\n.a {{ color: red }}\n'.encode(), "text/css")
    cdn.routes["/b.css"] = (b'@import "a.css";\n.b { color: blue }\n', "text/css")
    comp = tmp_path / "comp"
    comp.mkdir()
    # Both referenced from the page, so both are being resolved when each reaches the other.
    (comp / "index.html").write_text(
        f'<link rel="stylesheet" href="{b}/a.css">\n<link rel="stylesheet" href="{b}/b.css">\n'
    )
    r = run_renderd("prepare", comp, env={"RENDERD_CACHE_DIR": str(tmp_path / "cache")}, timeout=60)
    assert r.returncode == 2, r.stderr
    assert "in a cycle" in r.stderr and "1 remote URL could not be localised" in r.stderr


def _closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def test_unresolved_urls_fail_with_every_url_and_where(tmp_path: Path, cdn: CdnServer) -> None:
    _serve_assets(cdn)
    dead = f"http://127.0.0.1:{_closed_port()}"
    cdn.routes["/fonts.css"] = (
        f"@font-face {{ font-family: X; src: url({cdn.base}/gone.woff2); }}".encode(),
        "text/css",
    )
    comp = tmp_path / "comp"
    (comp / "compositions").mkdir(parents=True)
    (comp / "index.html").write_text(
        "<!doctype html>\n<html><head>\n"
        f'<script src="{cdn.base}/missing.js"></script>\n'
        f'<link rel="stylesheet" href="{cdn.base}/fonts.css">\n'
        "</head><body>\n"
        '<div data-composition-id="main" data-width="320" data-height="240" data-duration="1">\n'
        '<div data-composition-src="compositions/intro.html"></div></div>\n'
        "</body></html>\n"
    )
    (comp / "compositions" / "intro.html").write_text(
        f'<template>\n<div>\n<img src="{dead}/logo.png">\n</div>\n</template>\n'
    )
    before = _tree(comp)
    env = {"RENDERD_CACHE_DIR": str(tmp_path / "cache")}
    for argv in (("prepare", comp), ("render", comp, "-o", tmp_path / "out.mp4")):
        r = run_renderd(*argv, env=env)
        assert r.returncode == 2, r.stderr
        assert "Traceback" not in r.stderr
        err = r.stderr
        assert "3 remote URLs could not be localised" in err
        assert f"index.html:3: {cdn.base}/missing.js: HTTP 404" in err
        assert f"compositions/intro.html:3: {dead}/logo.png: cannot connect" in err
        assert f"{cdn.base}/fonts.css:1: {cdn.base}/gone.woff2: HTTP 404" in err
        assert ("--no-prepare" in err) == (argv[0] == "render")
    assert not (tmp_path / "out.mp4").exists()
    assert _tree(comp) == before
    r = run_renderd("prepare", comp, "--offline", env=env)
    assert r.returncode == 2 and f"{dead}/logo.png: not in the asset cache and --offline forbids" in r.stderr


def _npm_registry(cdn: CdnServer) -> None:
    """Serve a one-package npm registry under /npm-registry/ with gsap as a tarball built here."""
    buf = io.BytesIO()
    pkg = json.dumps({"name": "gsap", "version": GSAP_VERSION, "main": "dist/gsap.js"}).encode()
    with tarfile.open(fileobj=buf, mode="w:gz") as tar:
        for name, data in (("package/package.json", pkg), ("package/dist/gsap.min.js", GSAP.read_bytes())):
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
    tgz = buf.getvalue()
    tarball = f"{cdn.base}/npm-registry/gsap/-/gsap-{GSAP_VERSION}.tgz"
    integrity = "sha512-" + base64.b64encode(hashlib.sha512(tgz).digest()).decode()
    dist = {"tarball": tarball, "shasum": hashlib.sha1(tgz).hexdigest(), "integrity": integrity}
    packument = {
        "name": "gsap",
        "dist-tags": {"latest": GSAP_VERSION},
        "versions": {GSAP_VERSION: {"name": "gsap", "version": GSAP_VERSION, "dist": dist}},
    }
    cdn.routes["/npm-registry/gsap"] = (json.dumps(packument).encode(), "application/json")
    cdn.routes[f"/npm-registry/gsap/-/gsap-{GSAP_VERSION}.tgz"] = (tgz, "application/octet-stream")


GSAP_CDN_URLS = [
    f"https://cdn.jsdelivr.net/npm/gsap@{GSAP_VERSION}/dist/gsap.min.js",
    f"https://unpkg.com/gsap@{GSAP_VERSION}/dist/gsap.min.js",
    f"https://cdnjs.cloudflare.com/ajax/libs/gsap/{GSAP_VERSION}/gsap.min.js",
]


def _npm_env(cdn: CdnServer, cache: Path) -> dict[str, str]:
    return {
        "npm_config_registry": f"{cdn.base}/npm-registry/",
        "npm_config_cache": str(cache),
        "npm_config_update_notifier": "false",
        "NO_PROXY": "127.0.0.1",  # the registry is local, whatever proxy the machine has
        "no_proxy": "127.0.0.1",
    }


def _assert_gsap_from_npm(stdout: str) -> None:
    result = json.loads(stdout)
    assert result["sources"] == {"npm": 3}
    assert {a["url"] for a in result["assets"]} == set(GSAP_CDN_URLS)
    prepared = Path(result["prepared"])
    for a in result["assets"]:
        assert (prepared / "_renderd_assets" / a["file"]).read_bytes() == GSAP.read_bytes()


@pytest.mark.skipif(shutil.which("npm") is None, reason="npm is not installed")
def test_cdn_urls_resolve_from_the_npm_registry_when_the_cdn_is_unreachable(tmp_path: Path, cdn: CdnServer) -> None:
    _npm_registry(cdn)
    comp = tmp_path / "comp"
    comp.mkdir()
    (comp / "index.html").write_text("".join(f'<script src="{u}"></script>\n' for u in GSAP_CDN_URLS))
    # HTTPS goes through a proxy that is not there: the CDNs cannot be reached, the registry can.
    env = {
        **_npm_env(cdn, tmp_path / "npm-cache"),
        "RENDERD_CACHE_DIR": str(tmp_path / "cache"),
        "HTTPS_PROXY": f"http://127.0.0.1:{_closed_port()}",
        "https_proxy": f"http://127.0.0.1:{_closed_port()}",
    }
    r = run_renderd("prepare", comp, "--json", env=env)
    assert r.returncode == 0, r.stderr
    _assert_gsap_from_npm(r.stdout)
    assert any(path.endswith(".tgz") for path, _ in cdn.requests), "npm did not fetch from the registry"


@pytest.mark.skipif(shutil.which("npm") is None, reason="npm is not installed")
def test_cdn_urls_resolve_from_the_npm_cache_offline(tmp_path: Path, cdn: CdnServer) -> None:
    _npm_registry(cdn)
    npm_env = _npm_env(cdn, tmp_path / "npm-cache")
    add = subprocess.run(
        ["npm", "cache", "add", f"gsap@{GSAP_VERSION}"],
        capture_output=True, text=True, timeout=120, env={**os.environ, **npm_env}, cwd=tmp_path,
    )  # fmt: skip
    assert add.returncode == 0, add.stderr
    cdn.stop()  # from here on, only npm's cache has gsap
    comp = tmp_path / "comp"
    comp.mkdir()
    (comp / "index.html").write_text("".join(f'<script src="{u}"></script>\n' for u in GSAP_CDN_URLS))
    env = {**npm_env, "RENDERD_CACHE_DIR": str(tmp_path / "cache")}
    r = run_renderd("prepare", comp, "--offline", "--json", env=env)
    assert r.returncode == 0, r.stderr
    _assert_gsap_from_npm(r.stdout)
    # Not in npm's cache either: the reason says so.
    anime = "https://unpkg.com/animejs@3.2.2/lib/anime.min.js"
    (comp / "index.html").write_text(f'<script src="{anime}"></script>\n')
    r = run_renderd("prepare", comp, "--offline", env=env)
    assert r.returncode == 2
    assert f"index.html:1: {anime}: not in the asset cache" in r.stderr
    assert "npm pack animejs@3.2.2 --offline: not in the npm cache" in r.stderr


@pytest.mark.parametrize(
    ("url", "expected"),
    [
        ("https://cdn.jsdelivr.net/npm/gsap@3.12.5/dist/gsap.min.js", NpmFile("gsap", "3.12.5", "dist/gsap.min.js")),
        ("https://cdn.jsdelivr.net/npm/gsap@3.12.5", NpmFile("gsap", "3.12.5", None)),
        ("https://unpkg.com/animejs@3.2.2/lib/anime.min.js", NpmFile("animejs", "3.2.2", "lib/anime.min.js")),
        (
            "https://cdn.jsdelivr.net/npm/@lottiefiles/lottie-player@2.0.4/dist/lottie-player.js",
            NpmFile("@lottiefiles/lottie-player", "2.0.4", "dist/lottie-player.js"),
        ),
        (
            "https://cdnjs.cloudflare.com/ajax/libs/gsap/3.12.5/ScrollTrigger.min.js",
            NpmFile("gsap", "3.12.5", "ScrollTrigger.min.js", ("dist/", "")),
        ),
        (
            "https://cdnjs.cloudflare.com/ajax/libs/lottie-web/5.12.2/lottie.min.js",
            NpmFile("lottie-web", "5.12.2", "lottie.min.js", ("build/player/", "")),
        ),
        (
            "https://cdnjs.cloudflare.com/ajax/libs/three.js/r128/three.min.js",
            NpmFile("three", "0.128.0", "three.min.js", ("build/", "")),
        ),
        ("https://cdn.jsdelivr.net/npm/gsap/dist/gsap.min.js", None),  # no version: not reproducible
        ("https://cdn.jsdelivr.net/npm/three@0.160.0/+esm", None),  # generated by jsDelivr, not in the package
        ("https://cdnjs.cloudflare.com/ajax/libs/jquery/3.7.1/jquery.min.js", None),  # not a mapped cdnjs library
        ("https://fonts.googleapis.com/css2?family=Inter", None),
    ],
)
def test_cdn_urls_name_npm_files(url: str, expected: NpmFile | None) -> None:
    assert npm_file_for(url) == expected


def test_scan_finds_loads_with_lines_and_leaves_the_rest() -> None:
    text = (
        "<html><head>\n"
        '<link rel="preconnect" href="https://fonts.gstatic.com">\n'
        "<style>/* url(https://commented.example/x.png) */ @import url('https://a.example/b.css');\n"
        ".x { background: url(//img.example/sprite.svg#icon) }</style>\n"
        "</head><body><template>\n"
        '<img srcset="https://a.example/1.png 1x, https://a.example/2.png 2x" src=https://a.example/0.png>\n'
        '</template><a href="https://link.example/page">x</a>\n'
        '<video poster="https://v.example/p.jpg"><source src="https://v.example/v.mp4"></video>\n'
        '<script>fetch("https://script.example/data.json")</script>\n'
        '<script type="module">import * as T from "https://m.example/t.js"; const u = "https://m.example/x";\n'
        "export { a } from 'https://m.example/a.js'; import(\"https://m.example/lazy.js\");</script>\n"
        '<script type="importmap">{"imports": {"three": "https://m.example/three.js"}}</script>\n'
        '<script type="application/json">{"u": "https://data.example/not-a-load.js"}</script></body></html>\n'
    )
    found = scan_html(text)
    got = [(r.line, r.kind, r.url, r.fragment, text[r.start : r.end]) for r in found.refs]
    assert got == [
        (3, "stylesheet", "https://a.example/b.css", "", "https://a.example/b.css"),
        (4, "asset", "https://img.example/sprite.svg", "#icon", "//img.example/sprite.svg#icon"),
        (6, "asset", "https://a.example/1.png", "", "https://a.example/1.png"),
        (6, "asset", "https://a.example/2.png", "", "https://a.example/2.png"),
        (6, "asset", "https://a.example/0.png", "", "https://a.example/0.png"),
        (8, "asset", "https://v.example/p.jpg", "", "https://v.example/p.jpg"),
        (8, "asset", "https://v.example/v.mp4", "", "https://v.example/v.mp4"),
        # A file a script names (fetch): localised when it can be, not required (naming is not loading).
        (9, "asset", "https://script.example/data.json", "", "https://script.example/data.json"),
        (10, "module", "https://m.example/t.js", "", "https://m.example/t.js"),
        (11, "module", "https://m.example/a.js", "", "https://m.example/a.js"),
        (11, "module", "https://m.example/lazy.js", "", "https://m.example/lazy.js"),
        (12, "module", "https://m.example/three.js", "", "https://m.example/three.js"),
    ]
    assert [r.url for r in found.refs if not r.required] == ["https://script.example/data.json"]


# A 64x64 composition whose #box a script paints: green when what it loaded arrived.
BOX_PAGE = """<!doctype html>
<html><head><style>
  html, body {{ margin: 0; width: 64px; height: 64px; overflow: hidden; background: #000; }}
  #box {{ position: absolute; inset: 0; }}
</style></head><body>
  <div id="root" data-composition-id="main" data-start="0" data-duration="0.2"
       data-width="64" data-height="64" data-fps="30"><div id="box"></div></div>
  {script}
</body></html>
"""
MODULE_SCRIPT = """<script type="module">
    import {{ colour }} from "{base}/npm/colours@1.0.0/colour.mjs";
    document.getElementById("box").style.background = colour;
  </script>"""


def _assert_renders_green(prepared: Path, tmp_path: Path, env: dict[str, str]) -> None:
    out = tmp_path / "out.mp4"
    r = run_renderd("render", prepared, "-o", out, "--crf", "0", env=env)
    assert r.returncode == 0, r.stderr
    frames = decode_frames(out, 64, 64)
    assert len(frames) == 6
    assert close(pixel(frames[0], 64, 32, 32), (0, 255, 0), 8)


@pytest.mark.browser
def test_es_module_imports_in_inline_scripts_are_localised(tmp_path: Path, cdn: CdnServer) -> None:
    """airbnb-deck's `import * as THREE from "https://cdn.jsdelivr.net/npm/three@.../three.module.js"`."""
    cdn.routes["/npm/colours@1.0.0/colour.mjs"] = (b'export const colour = "#00ff00";\n', "text/javascript")
    comp = tmp_path / "comp"
    comp.mkdir()
    (comp / "index.html").write_text(BOX_PAGE.format(script=MODULE_SCRIPT.format(base=cdn.base)))
    env = {"RENDERD_CACHE_DIR": str(tmp_path / "cache")}
    prepared = tmp_path / "prepared"
    r = run_renderd("prepare", comp, "-o", prepared, env=env)
    assert r.returncode == 0, r.stderr
    html = (prepared / "index.html").read_text()
    assert cdn.base not in html and 'from "./_renderd_assets/' in html
    cdn.stop()
    _assert_renders_green(prepared, tmp_path, env)


# What HyperFrames' map blocks do (us-map: fetch("https://cdn.jsdelivr.net/npm/us-atlas@3/...json")),
# from a local script file; the namespace and the endpoint without a file type are not loads.
FETCH_SCRIPT = """const DATA = "{base}/npm/palette@1.0.0/palette.json";
const SVG_NS = "http://www.w3.org/2000/svg";
const API = "{base}/api/v1";
const MISSING = "{base}/npm/gone@1.0.0/gone.json";
fetch(DATA).then((r) => r.json()).then((p) => {{
  document.getElementById("box").style.background = p.colour;
  document.getElementById("box").dataset.ns = SVG_NS + API;
  // Registered once the data is in, as the map blocks build their timeline: ready waits for it.
  window.__timelines = {{ main: {{ paused: true, duration: () => 0.2, seek() {{}}, time: () => 0 }} }};
}});
"""


@pytest.mark.browser
def test_files_a_script_fetches_are_localised_and_unfetchable_ones_are_reported(tmp_path: Path, cdn: CdnServer) -> None:
    """A data file a local script fetches from a CDN renders without network after prepare."""
    cdn.routes["/npm/palette@1.0.0/palette.json"] = (b'{"colour": "#00ff00"}\n', "application/json")
    comp = tmp_path / "comp"
    (comp / "js").mkdir(parents=True)
    (comp / "index.html").write_text(BOX_PAGE.format(script='<script src="js/paint.js"></script>'))
    (comp / "js" / "paint.js").write_text(FETCH_SCRIPT.format(base=cdn.base))
    env = {"RENDERD_CACHE_DIR": str(tmp_path / "cache")}
    prepared = tmp_path / "prepared"
    r = run_renderd("prepare", comp, "-o", prepared, env=env)
    assert r.returncode == 0, r.stderr
    # The missing one is left as written and named with its file and line; the rest is quiet.
    assert f"js/paint.js:4: {cdn.base}/npm/gone@1.0.0/gone.json: HTTP 404" in r.stderr, r.stderr
    script = (prepared / "js" / "paint.js").read_text()
    assert 'const DATA = "/_renderd_assets/' in script
    assert 'SVG_NS = "http://www.w3.org/2000/svg"' in script and f'API = "{cdn.base}/api/v1"' in script
    assert f'MISSING = "{cdn.base}/npm/gone@1.0.0/gone.json"' in script
    manifest = json.loads((prepared / "_renderd_assets" / "manifest.json").read_text())
    assert [a["url"] for a in manifest["assets"]] == [f"{cdn.base}/npm/palette@1.0.0/palette.json"]
    cdn.stop()
    _assert_renders_green(prepared, tmp_path, env)


def test_files_are_scanned_as_what_loads_them(tmp_path: Path) -> None:
    """A script without a .js name is still a script (it was a stylesheet by its suffix)."""
    (tmp_path / "lib").mkdir()
    (tmp_path / "index.html").write_text('<link rel="stylesheet" href="lib/look"><script src="lib/app.cjs"></script>\n')
    (tmp_path / "lib" / "app.cjs").write_text('fetch("https://cdn.example/d.json"); import("./more.js");\n')
    (tmp_path / "lib" / "more.js").write_text('const u = "https://cdn.example/m.png";\n')
    (tmp_path / "lib" / "look").write_text("body { background: url(https://cdn.example/bg.png) }\n")
    files = scan_composition(load_composition(tmp_path))
    got = {f.rel: (f.kind, [r.url for r in f.refs]) for f in files}
    assert got == {
        "index.html": ("html", []),
        "lib/look": ("css", ["https://cdn.example/bg.png"]),
        "lib/app.cjs": ("js", ["https://cdn.example/d.json"]),
        "lib/more.js": ("js", ["https://cdn.example/m.png"]),
    }


def test_output_directory_rules(tmp_path: Path) -> None:
    comp = tmp_path / "comp"
    comp.mkdir()
    (comp / "index.html").write_text("<p>static</p>\n")
    (tmp_path / "busy").mkdir()
    (tmp_path / "busy" / "keep.txt").write_text("mine")
    env = {"RENDERD_CACHE_DIR": str(tmp_path / "cache")}
    r = run_renderd("prepare", comp, "-o", comp / "prepared", env=env)
    assert r.returncode == 2 and "is inside the composition" in r.stderr
    r = run_renderd("prepare", comp, "-o", tmp_path / "busy", env=env)
    assert r.returncode == 2 and "is not a prepared composition" in r.stderr
    assert (tmp_path / "busy" / "keep.txt").read_text() == "mine"
    # Nothing remote: the copy is still made (with an empty manifest), and may be replaced.
    for _ in range(2):
        r = run_renderd("prepare", comp, "-o", tmp_path / "out", env=env)
        assert r.returncode == 0, r.stderr
    assert (tmp_path / "out" / "index.html").read_text() == "<p>static</p>\n"
    assert json.loads((tmp_path / "out" / "_renderd_assets" / "manifest.json").read_text())["assets"] == []
