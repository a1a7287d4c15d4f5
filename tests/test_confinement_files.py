"""A composition reads no byte from outside its directory, however it names the file.

Every escape attempt points at a canary outside the composition (a red image, page, style,
font, text, video); a cell of the rendered frame turns red when the canary was read, and stays
green otherwise. Real Chromium, ffmpeg, renderd daemon; the daemon case submits as a throwaway
unprivileged user a composition that names a root-only (0600) file.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
from pathlib import Path

import pytest
from conftest import ROOT, run_renderd
from daemonctl import Daemon, request_as, wait_state
from users import ThrowawayUser, needs_root_and_user_tools
from videotools import close, decode_frames, pixel

pytestmark = pytest.mark.browser

RED = (255, 0, 0)
GREEN = (0, 200, 0)
CELL = 40
FONT = ROOT / "renderd/engine/vendor/hyperframes/fonts/league-gothic-latin-400-normal.woff2"

# One cell per way of naming a file: (name, markup). A cell is green; its content paints it red
# only if the canary outside the composition was read.
CELLS: list[tuple[str, str]] = [
    ("img-symlinked-file", '<img src="lnk.png">'),
    ("img-symlinked-dir", '<img src="lnkdir/canary.png">'),
    ("img-dotdot-encoded", '<img src="..%2foutside%2fcanary.png">'),
    ("img-directory-index", '<img src="idx_png/">'),
    ("iframe-directory-index", '<iframe src="idx_html/"></iframe>'),
    ("iframe-symlinked-file", '<iframe src="lnk.html"></iframe>'),
    ("css-url", '<div class="fill" style="background-image:url(idx_png/);background-size:cover"></div>'),
    ("css-link-symlinked", '<div class="fill" id="css-probe"></div>'),
    ("font-face", '<div class="fill" id="font"></div>'),
    ("fetch", '<div class="fill" id="fetch"></div>'),
    ("xhr", '<div class="fill" id="xhr"></div>'),
    ("worker", '<div class="fill" id="worker"></div>'),
    ("import", '<div class="fill" id="import"></div>'),
    ("video-directory-index", '<video id="vid" src="idx_vid/" muted></video>'),
]

SCRIPT = """
const red = (id) => { document.getElementById(id).style.background = "rgb(255,0,0)"; };
const leaked = (t) => typeof t === "string" && t.includes("CANARY");
const checks = [
  fetch("idx_txt/").then((r) => r.text()).then((t) => leaked(t) && red("fetch"), () => {}),
  new Promise((done) => {
    const x = new XMLHttpRequest();
    x.open("GET", "idx_txt/");
    x.onload = () => { if (leaked(x.responseText)) red("xhr"); done(); };
    x.onerror = () => done();
    x.send();
  }),
  new Promise((done) => {
    const w = new Worker("worker.js");
    w.onmessage = (e) => { if (leaked(e.data)) red("worker"); done(); };
    w.onerror = () => done();
    setTimeout(done, 3000);
  }),
  import("./lnk.mjs").then((m) => leaked(m.default) && red("import"), () => {}),
  document.fonts.load("16px Canary").then((faces) => faces.length > 0 && red("font"), () => {}),
  new Promise((done) => {
    const v = document.getElementById("vid");
    v.addEventListener("loadeddata", done);
    v.addEventListener("error", done);
    setTimeout(done, 3000);
  }),
];
window.__renderd = {
  width: WIDTH, height: 40, fps: 1, duration: 1,
  seek() {},
  ready: Promise.all(checks),
};
"""


def _solid(path: Path, colour: str, *extra: str) -> None:
    subprocess.run(
        ["ffmpeg", "-hide_banner", "-loglevel", "error", "-y", "-f", "lavfi", "-i", f"color={colour}:s=64x64:d=1",
         *extra, str(path)],
        check=True, timeout=60,
    )  # fmt: skip


def _outside(base: Path) -> Path:
    """The canaries: files outside every composition that must never be read."""
    out = base / "outside"
    out.mkdir()
    _solid(out / "canary.png", "red", "-frames:v", "1")
    _solid(out / "canary.mp4", "red", "-pix_fmt", "yuv420p")
    (out / "canary.html").write_text('<body style="margin:0;background:rgb(255,0,0)"></body>')
    (out / "canary.css").write_text("#css-probe { background: rgb(255,0,0) !important; }")
    (out / "canary.txt").write_text("CANARY secret")
    (out / "canary.mjs").write_text('export default "CANARY";')
    shutil.copy(FONT, out / "canary.woff2")
    return out


def _index_of(directory: Path, target: Path) -> None:
    directory.mkdir()
    (directory / "index.html").symlink_to(target)


def _grid(base: Path) -> Path:
    out = _outside(base)
    comp = base / "comp"
    comp.mkdir()
    (comp / "lnk.png").symlink_to(out / "canary.png")
    (comp / "lnkdir").symlink_to(out)
    (comp / "lnk.html").symlink_to(out / "canary.html")
    (comp / "lnk.css").symlink_to(out / "canary.css")
    (comp / "lnk.mjs").symlink_to(out / "canary.mjs")
    for name, target in (
        ("idx_png", "canary.png"),
        ("idx_html", "canary.html"),
        ("idx_txt", "canary.txt"),
        ("idx_font", "canary.woff2"),
        ("idx_vid", "canary.mp4"),
    ):
        _index_of(comp / name, out / target)
    # The worker itself is the composition's own; what it reads is not.
    (comp / "worker.js").write_text(
        'fetch("idx_txt/").then((r) => r.text()).then((t) => postMessage(t), () => postMessage(""));'
    )
    width = CELL * len(CELLS)
    cells = "".join(f'<div class="cell" data-name="{n}">{m}</div>' for n, m in CELLS)
    (comp / "index.html").write_text(
        f"""<!doctype html><html><head><meta charset="utf-8">
<link rel="stylesheet" href="lnk.css">
<style>
@font-face {{ font-family: Canary; src: url(idx_font/); }}
html, body {{ margin: 0; width: {width}px; height: 40px; overflow: hidden; background: rgb(0,200,0); }}
.cell {{ position: absolute; top: 0; width: {CELL}px; height: {CELL}px; overflow: hidden; background: rgb(0,200,0); }}
.cell > * {{ display: block; width: {CELL}px; height: {CELL}px; border: 0; margin: 0; object-fit: cover; }}
.fill {{ background: rgb(0,200,0); }}
#font {{ font-family: Canary, monospace; }}
</style></head><body>{cells}
<script>
document.querySelectorAll(".cell").forEach((c, i) => {{ c.style.left = (i * {CELL}) + "px"; }});
{SCRIPT.replace("WIDTH", str(width))}
</script></body></html>"""
    )
    return comp


@pytest.fixture(scope="module")
def grid_frame(tmp_path_factory: pytest.TempPathFactory) -> bytes:
    base = tmp_path_factory.mktemp("confine")
    comp = _grid(base)
    out = base / "grid.mp4"
    r = run_renderd("render", comp, "-o", out, "--no-prepare")
    assert r.returncode == 0, r.stderr
    frames = decode_frames(out, CELL * len(CELLS), CELL)
    assert frames
    return frames[0]


@pytest.mark.parametrize("index", range(len(CELLS)), ids=[n for n, _ in CELLS])
def test_no_escape_shows_the_canary(grid_frame: bytes, index: int) -> None:
    got = pixel(grid_frame, CELL * len(CELLS), index * CELL + CELL // 2, CELL // 2)
    assert not close(got, RED, 60), f"{CELLS[index][0]}: the canary outside the composition was drawn"
    if not CELLS[index][0].startswith("iframe"):  # a refused iframe shows Chrome's error page
        assert close(got, GREEN, 40), f"{CELLS[index][0]}: cell is {got}, expected the composition's green"


def test_prepare_copy_never_dereferences_a_symlink_out_of_the_root(tmp_path: Path) -> None:
    out = _outside(tmp_path)
    comp = tmp_path / "comp"
    comp.mkdir()
    (comp / "index.html").write_text('<html><body><img src="lnk.png"></body></html>')
    (comp / "own.png").write_bytes((out / "canary.png").read_bytes())
    (comp / "lnk.png").symlink_to(out / "canary.png")
    (comp / "own-link.png").symlink_to("own.png")
    dest = tmp_path / "prepared"
    r = run_renderd("prepare", comp, "-o", dest, "--offline")
    assert r.returncode != 0
    lines = r.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("renderd: error:"), r.stderr
    assert "lnk.png" in lines[0] and "outside the composition" in lines[0]
    assert not (dest / "lnk.png").exists()
    # Without the outside link the copy is made, and the link inside the root stays a link to its copy.
    (comp / "lnk.png").unlink()
    r = run_renderd("prepare", comp, "-o", dest, "--offline")
    assert r.returncode == 0, r.stderr
    assert (dest / "own-link.png").is_symlink() and os.readlink(dest / "own-link.png") == "own.png"


def test_asset_over_the_limit_fails_with_one_line(tmp_path: Path) -> None:
    comp = tmp_path / "comp"
    comp.mkdir()
    big = comp / "big.png"
    with big.open("wb") as f:
        f.truncate(2 << 30)  # sparse: 2 GiB that take no disk
    (comp / "index.html").write_text(
        '<html><body style="margin:0"><img src="big.png"><script>window.__renderd = '
        "{width: 64, height: 48, fps: 1, duration: 1, seek() {}};</script></body></html>"
    )
    out = tmp_path / "out.mp4"
    r = run_renderd("render", comp, "-o", out, "--no-prepare", "--max-asset-size", "64")
    assert r.returncode != 0
    assert r.stderr.strip().splitlines()[-1] == (
        "renderd: error: big.png: asset is 2048 MiB, over the limit of 64 MiB (--max-asset-size)"
    ), r.stderr
    assert "Traceback" not in r.stderr
    assert not out.exists()


@needs_root_and_user_tools
def test_daemon_submitter_cannot_read_a_root_only_file(short_tmp: Path, throwaway_user: ThrowawayUser) -> None:
    user = throwaway_user
    secret = short_tmp / "secret"
    secret.mkdir(mode=0o700)
    (secret / "canary.html").write_text('<body style="margin:0;background:rgb(255,0,0)"></body>')
    os.chmod(secret / "canary.html", 0o600)
    home = short_tmp / "home"
    home.mkdir()
    os.chown(home, user.uid, user.gid)
    comp = home / "comp"
    assert user.run("mkdir", "-p", comp / "sub").returncode == 0
    assert user.run("ln", "-s", secret / "canary.html", comp / "sub" / "index.html").returncode == 0
    page = (
        '<html><body style="margin:0;background:rgb(0,200,0)">'
        '<iframe src="sub/" style="border:0;width:32px;height:48px"></iframe>'
        "<script>window.__renderd = {width: 64, height: 48, fps: 1, duration: 1, seek() {}};</script></body></html>"
    )
    (comp / "index.html").write_text(page)
    os.chown(comp / "index.html", user.uid, user.gid)
    (short_tmp / "d").mkdir()
    d = Daemon(short_tmp / "d")
    d.allow_uids(user.uid)
    d.start(socket_mode="0666")
    try:
        out = home / "out.mp4"
        # The request `renderd submit` would send, on a connection the user's own process makes:
        # the daemon learns the submitter's uid from the socket's peer credentials.
        line = json.dumps({"op": "submit", "composition": str(comp), "output": str(out)}).encode() + b"\n"
        reply = request_as(user.uid, user.gid, d.socket, line, timeout=180)
        assert "job" in reply, reply
        job = reply["job"]["id"]
        status = wait_state(d, job, ("done", "failed"))
        assert status["job"]["state"] == "done", status
        frame = decode_frames(out, 64, 48)[0]
        got = pixel(frame, 64, 16, 24)
        assert not close(got, RED, 60), "the root-only file was drawn into the submitter's video"
        assert close(pixel(frame, 64, 56, 24), GREEN, 40)  # the composition itself was drawn
    finally:
        d.stop()
