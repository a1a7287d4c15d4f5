"""The daemon's dashboard and /metrics ([web]): a real daemon, the CLI, a real Chromium page, a real scrape.

Set RENDERD_SCREENSHOT=<path> to keep the dashboard screenshot the browser test takes (the
README's docs/dashboard.png is made that way).
"""

from __future__ import annotations

import io
import json
import os
import secrets
import shutil
import socket
import subprocess
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from conftest import FIXTURES, renderd_cmd
from daemonctl import Daemon, wait_state
from PIL import Image
from prometheus_client.parser import text_string_to_metric_families

from renderd.config import load_daemon_config
from renderd.errors import ConfigError

COMP = FIXTURES / "frame-index-hook"
# 20 s at 30 fps in chunks of 60 frames on one slot: long enough to watch it move, then cancel it.
SLOW_JOB = ("--duration", "20", "--frames-per-chunk", "60")


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


def _http(
    url: str, *, method: str = "GET", headers: dict[str, str] | None = None, timeout: float = 30
) -> tuple[int, bytes]:
    req = urllib.request.Request(url, method=method, headers=headers or {})
    try:
        with urllib.request.urlopen(req, timeout=timeout) as r:
            return r.status, r.read()
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read()


def _web_daemon(root: Path, token: str | None) -> tuple[Daemon, str]:
    port = _free_port()
    web = f'\n[web]\nlisten = "127.0.0.1:{port}"\n'
    if token is not None:
        (root / "web-token").write_text(token + "\n")
        web += 'token_file = "web-token"\n'  # relative: to the config file's directory
    d = Daemon(root, slots=1, timeouts=web)
    d.start()
    return d, f"http://127.0.0.1:{port}"


@pytest.fixture
def web_root(short_tmp: Path) -> Iterator[Path]:
    yield short_tmp


def _submit(d: Daemon, out: Path) -> str:
    r = d.ctl("submit", COMP, "-o", out, *SLOW_JOB)
    assert r.returncode == 0, r.stderr
    return r.stdout.strip()


def _samples(text: str) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    out = {}
    for family in text_string_to_metric_families(text):
        for s in family.samples:
            out[(s.name, tuple(sorted(s.labels.items())))] = s.value
    return out


# -- config ---------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("table", "message"),
    [
        ('listen = "0.0.0.0:8470"', "web.listen: 0.0.0.0 is not a loopback address: set web.token_file too"),
        ('listen = "127.0.0.1"', 'web.listen: expected "host:port"'),
        ('listen = "example.org:80"', "web.listen: 'example.org' is not an IP address"),
        ('token_file = "t"', "web: missing required key 'listen'"),
        ('listen = "127.0.0.1:1"\nport = 3', "web.port: unknown key"),
    ],
)
def test_web_config_mistakes_are_one_line_each(tmp_path: Path, table: str, message: str) -> None:
    path = tmp_path / "renderd.toml"
    path.write_text(f"[daemon]\nwatchdog = false\n\n[web]\n{table}\n")
    with pytest.raises(ConfigError) as info:
        load_daemon_config(path)
    problems = info.value.problems
    assert len(problems) == 1 and problems[0].startswith(f"{path}:"), problems
    assert message in problems[0], problems


def test_web_config_is_optional_and_resolves_the_token_file(tmp_path: Path) -> None:
    path = tmp_path / "renderd.toml"
    path.write_text("[daemon]\nwatchdog = false\n")
    assert load_daemon_config(path).web is None
    path.write_text('[web]\nlisten = "[::1]:0"\ntoken_file = "tok"\n')
    web = load_daemon_config(path).web
    assert web is not None and web.host == "::1" and web.port == 0 and web.loopback
    assert web.token_file == tmp_path / "tok"
    path.write_text('[web]\nlisten = "0.0.0.0:8470"\ntoken_file = "/etc/renderd/web-token"\n')
    web = load_daemon_config(path).web
    assert web is not None and not web.loopback


def test_example_config_documents_the_web_table(tmp_path: Path) -> None:
    """The shipped renderd.toml shows [web] commented out; uncommented, it is valid and on loopback."""
    example = (Path(__file__).parent.parent / "config" / "renderd.toml").read_text()
    block = example[example.index("# [web]") :]
    lines = [
        line.removeprefix("# ") for line in block.splitlines() if line.startswith(("# [web]", "# listen", "# token"))
    ]
    path = tmp_path / "renderd.toml"
    path.write_text("\n".join(lines) + "\n")
    web = load_daemon_config(path).web
    assert web is not None and web.loopback and web.port == 8470
    assert web.token_file == Path("/etc/renderd/web-token")


def test_a_taken_port_stops_the_daemon_with_one_line(web_root: Path) -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        d = Daemon(web_root, slots=1, timeouts=f'\n[web]\nlisten = "127.0.0.1:{port}"\n')
        r = subprocess.run(renderd_cmd("daemon", "--config", d.config), capture_output=True, text=True, timeout=60)
    assert r.returncode != 0
    errors = [line for line in r.stderr.splitlines() if line.startswith("renderd: error:")]
    assert len(errors) == 1, r.stderr
    assert errors[0].startswith(f"renderd: error: {d.config}: web.listen: cannot listen on 127.0.0.1:{port}: ")
    assert "address already in use" in errors[0] and "Traceback" not in r.stderr
    assert not d.socket.exists()  # the control socket it had opened is gone again


# -- /metrics -------------------------------------------------------------------------------------


def test_metrics_scraped_during_a_job_and_actions_off_without_a_token(web_root: Path) -> None:
    d, url = _web_daemon(web_root, token=None)
    kept: socket.socket | None = None
    try:
        job = _submit(d, web_root / "out.mp4")
        deadline = time.monotonic() + 180
        while True:
            status = d.json("status", job)
            assert status["job"]["state"] == "running", status["job"]
            if any(c["state"] == "verified" for c in status["chunks"]):
                break
            assert time.monotonic() < deadline, status
            time.sleep(0.3)
        code, body = _http(f"{url}/metrics")
        assert code == 200
        samples = _samples(body.decode())
        assert samples[("renderd_jobs", (("state", "running"),))] == 1
        assert samples[("renderd_jobs", (("state", "done"),))] == 0
        assert samples[("renderd_chunk_duration_seconds_count", ())] >= 1
        assert samples[("renderd_chunks_rendered_total", (("host", "local"),))] >= 1
        assert samples[("renderd_host_fps", (("host", "local"),))] > 0
        assert samples[("renderd_queue_depth", ())] >= 1  # 10 chunks, one slot
        assert samples[("renderd_hosts_quarantined", ())] == 0
        db = web_root / "state" / "renderd.db"
        assert samples[("renderd_store_bytes", ())] >= db.stat().st_size > 0

        # The farm as the page gets it, and a thumbnail of the verified chunk: 320x240 JPEG.
        code, body = _http(f"{url}/api/farm")
        farm = json.loads(body)
        (entry,) = [j for j in farm["jobs"] if j["id"] == job]
        # One slot: chunk 0 goes first, so the poster (its first frame) exists with the first thumbnail.
        assert farm["actions"] is False and entry["thumb"] and entry["poster"]
        assert entry["chunks_by_host"].get("local", 0) >= 1 and entry["chunks_by_state"]["verified"] >= 1
        code, body = _http(f"{url}/api/jobs/{job}/thumb")
        assert code == 200, body
        assert Image.open(io.BytesIO(body)).format == "JPEG"
        assert Image.open(io.BytesIO(body)).size == (320, 240)

        # No token_file: every action is refused, the job runs on.
        code, body = _http(f"{url}/api/jobs/{job}/cancel", method="POST", headers={"Authorization": "Bearer x"})
        assert code == 403 and "no web.token_file" in json.loads(body)["error"]["message"]
        # A page served under a foreign name (DNS rebinding) gets nothing.
        code, _ = _http(f"{url}/api/farm", headers={"Host": "attacker.example"})
        assert code == 421
        assert d.json("status", job)["job"]["state"] == "running"
        assert d.ctl("cancel", job).returncode == 0

        # A page that goes away leaves no stream behind; one still open is ended by the daemon's stop.
        gone = _stream(url)
        assert _gauge(url, "renderd_web_streams") == 1
        gone.close()
        _until(lambda: _gauge(url, "renderd_web_streams") == 0, "the closed stream is still counted")
        kept = _stream(url)
    finally:
        d.stop()
        if kept is not None:
            with kept:
                assert _drained(kept)
    log = d.log.read_text()
    assert "Traceback" not in log, log
    assert "stopped" in log


def _stream(url: str) -> socket.socket:
    """Open /api/events and read until the first snapshot arrived."""
    host, port = url.removeprefix("http://").split(":")
    s = socket.create_connection((host, int(port)), timeout=30)
    s.sendall(f"GET /api/events HTTP/1.1\r\nHost: {host}:{port}\r\n\r\n".encode())
    got = b""
    while b"\ndata: " not in got:
        chunk = s.recv(65536)
        assert chunk, got
        got += chunk
    return s


def _drained(s: socket.socket) -> bool:
    """Read until the daemon closes the stream; True when it did."""
    while s.recv(1 << 20):
        pass
    return True


def _gauge(url: str, name: str) -> float:
    code, body = _http(f"{url}/metrics")
    assert code == 200
    return _samples(body.decode())[(name, ())]


def _until(check: Any, why: str, timeout: float = 15) -> None:
    deadline = time.monotonic() + timeout
    while not check():
        assert time.monotonic() < deadline, why
        time.sleep(0.2)


# -- the dashboard in a browser -------------------------------------------------------------------


@pytest.mark.browser
def test_dashboard_follows_a_cli_job_and_cancels_it_with_the_token(web_root: Path) -> None:
    from playwright.sync_api import expect, sync_playwright

    token = secrets.token_urlsafe(24)
    d, url = _web_daemon(web_root, token=token)
    try:
        job = _submit(d, web_root / "out.mp4")
        with sync_playwright() as pw:
            browser = pw.chromium.launch(executable_path="/usr/bin/chromium", args=["--no-sandbox"])
            try:
                page = browser.new_page(viewport={"width": 1200, "height": 340})
                page.goto(url, timeout=30_000)
                row = page.locator(f'#jobs tr[data-job="{job}"]')
                expect(row).to_be_visible(timeout=30_000)
                expect(page.locator('#hosts tr[data-host="local"]')).to_be_visible()
                first = _frames_done(row)
                # The page is live: progress moves without a reload, up to a verified chunk's thumbnail.
                expect(row.locator("img.latest")).to_be_visible(timeout=180_000)
                expect(row).not_to_have_attribute("data-frames-done", str(first), timeout=60_000)
                assert _frames_done(row) > first
                assert row.get_attribute("data-state") == "running"

                # Without the token the button does nothing but say so; the job runs on.
                cancel = row.locator('button[data-op="cancel"]')
                cancel.click()
                expect(page.locator("#message")).to_contain_text("token")
                code, body = _http(f"{url}/api/jobs/{job}/cancel", method="POST")
                assert code == 403, body
                code, _ = _http(
                    f"{url}/api/jobs/{job}/cancel", method="POST", headers={"Authorization": "Bearer wrong-token-1234"}
                )
                assert code == 403
                assert d.json("status", job)["job"]["state"] == "running"

                page.fill("#token", token)
                page.click("#token-save")
                expect(page.locator("#token-state")).to_have_text("token set")
                _screenshot(page)
                cancel.click()
                expect(page.locator("#message")).to_contain_text(f"cancel {job}: done", timeout=60_000)
                expect(row).to_have_attribute("data-state", "cancelled", timeout=30_000)
                expect(cancel).to_be_disabled()
                status = wait_state(d, job, ("cancelled",), timeout=30)
                assert status["job"]["state"] == "cancelled"
                assert not (web_root / "out.mp4").exists()
                # Retry goes to the daemon's "retry" op; whatever it answers (an error where the
                # daemon has no such op), the page shows it.
                row.locator('button[data-op="retry"]').click()
                expect(page.locator("#message")).to_contain_text(f"retry {job}: ", timeout=60_000)
            finally:
                browser.close()

        # SIGHUP (renderd reload) rereads the token file: the old token stops working.
        new = secrets.token_urlsafe(24)
        (web_root / "web-token").write_text(new)
        assert d.ctl("reload").returncode == 0
        code, _ = _http(f"{url}/api/hosts/local/drain", method="POST", headers={"Authorization": f"Bearer {token}"})
        assert code == 403
        assert d.json("hosts")["hosts"][0]["state"] != "drained"
        code, body = _http(f"{url}/api/hosts/local/drain", method="POST", headers={"Authorization": f"Bearer {new}"})
        assert code == 200 and json.loads(body)["host"]["drained"] is True, body
        assert d.json("hosts")["hosts"][0]["state"] == "drained"
        code, body = _http(f"{url}/api/hosts/nope/drain", method="POST", headers={"Authorization": f"Bearer {new}"})
        assert code == 404 and "no host 'nope'" in json.loads(body)["error"]["message"]
    finally:
        d.stop()
    log = d.log.read_text()
    assert "Traceback" not in log, log
    assert f"dashboard: cancel {job}" in log


def _frames_done(row: Any) -> int:
    return int(row.get_attribute("data-frames-done") or 0)


def _screenshot(page: Any) -> None:
    target = os.environ.get("RENDERD_SCREENSHOT")
    if not target:
        return
    tmp = Path(target).with_suffix(".tmp.png")
    page.screenshot(path=str(tmp))
    shutil.move(tmp, target)


# -- thumbnails -----------------------------------------------------------------------------------


async def test_thumbnail_of_a_png_sequence_part_and_of_a_gone_file(tmp_path: Path) -> None:
    """A png-sequence chunk is a tar of PNGs: its first frame is the thumbnail; a removed part has none."""
    import asyncio
    import tarfile

    from renderd.coordinator.web import _extract_frame

    for i, colour in enumerate(("red", "blue")):
        proc = await asyncio.create_subprocess_exec(
            "ffmpeg", "-v", "error", "-f", "lavfi", "-i", f"color={colour}:size=640x360", "-frames:v", "1",
            str(tmp_path / f"frame_{i:06d}.png"),
        )  # fmt: skip
        assert await proc.wait() == 0
    part = tmp_path / "chunk-00000-a1.tar"
    with tarfile.open(part, "w") as tar:
        for i in range(2):
            tar.add(tmp_path / f"frame_{i:06d}.png", arcname=f"frame_{i:06d}.png")
    image = await _extract_frame(part)
    assert image is not None
    thumb = Image.open(io.BytesIO(image))
    assert thumb.format == "JPEG" and thumb.size == (320, 180)
    r, g, b = thumb.convert("RGB").getpixel((160, 90))
    assert r > 200 and g < 60 and b < 60, (r, g, b)  # the first frame (red), not the second
    assert await _extract_frame(tmp_path / "gone.mp4") is None
