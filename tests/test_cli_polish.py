"""What the walk-through of issue 19 found in the command line, checked on real processes.

`-v` after the command, the output directory created for render and submit, `list`/`watch`/
`status` showing rate, time and ETA, cancelled chunks and per-job attempt numbers, a closed
stdout pipe, deeply nested requests on the real socket, and the daemon's log timestamps.
"""

from __future__ import annotations

import json
import os
import pty
import re
import socket
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from conftest import FIXTURES, renderd_cmd, run_renderd
from daemonctl import Daemon, wait_state

from renderd.cli.main import build_parser

TIMESTAMPED = re.compile(r"^\d{4}-\d\d-\d\d \d\d:\d\d:\d\d,\d{3} renderd\[")


def test_verbose_after_the_command_counts_like_before_it() -> None:
    parse = build_parser().parse_args
    assert parse(["render", "c", "-o", "o.mp4", "-v"]).verbose == 1
    assert parse(["render", "c", "-o", "o.mp4", "-vv"]).verbose == 2
    assert parse(["-v", "render", "c", "-o", "o.mp4"]).verbose == 1
    assert parse(["render", "c", "-o", "o.mp4"]).verbose == 0
    assert parse(["config", "check", "-v"]).verbose == 1
    assert parse(["status", "-v"]).verbose == 1


def test_require_takes_one_value_so_the_composition_after_it_stays_the_composition() -> None:
    args = build_parser().parse_args(["submit", "--require", "gpu", "comp", "-o", "o.mp4", "--require", "a,b"])
    assert str(args.composition) == "comp"
    assert args.require == ["gpu", "a,b"]


def test_verbose_after_the_command_in_a_real_run(tmp_path: Path) -> None:
    comp = tmp_path / "comp"
    comp.mkdir()
    (comp / "index.html").write_text("<!doctype html><p>x</p>")
    r = run_renderd("prepare", comp, "-o", tmp_path / "out", "-v", env={"RENDERD_CACHE_DIR": str(tmp_path / "c")})
    assert r.returncode == 0, r.stderr


@pytest.mark.browser
def test_render_creates_the_output_directory(tmp_path: Path) -> None:
    out = tmp_path / "new" / "deeper" / "out.mp4"
    r = run_renderd("render", FIXTURES / "frame-index-hook", "-o", out, "--frames", "0:4")
    assert r.returncode == 0, r.stderr
    assert out.is_file() and out.stat().st_size > 0
    # A parent that cannot be a directory: one line, exit 2, nothing started.
    blocker = tmp_path / "file.txt"
    blocker.write_text("x")
    r = run_renderd("render", FIXTURES / "frame-index-hook", "-o", blocker / "out.mp4", "--frames", "0:4")
    assert r.returncode == 2, r.stderr
    assert r.stderr.strip().splitlines() == [f"renderd: error: output directory {blocker} is not a directory"]


@pytest.fixture
def daemon(short_tmp: Path) -> Iterator[Daemon]:
    d = Daemon(short_tmp, slots=1)
    d.start()
    yield d
    d.stop()


def _closed_pipe_run(d: Daemon, *args: str) -> subprocess.CompletedProcess[bytes]:
    """Run a client command whose stdout reader has already gone (`renderd ... | head -0`)."""
    read_end, write_end = os.pipe()
    os.close(read_end)
    try:
        return subprocess.run(
            renderd_cmd(*args, "--socket", d.socket), stdout=write_end, stderr=subprocess.PIPE, timeout=60
        )
    finally:
        os.close(write_end)


def _on_a_terminal(d: Daemon, *args: str) -> str:
    """Run a client command with stderr on a pseudo-terminal; return what it drew, without escapes."""
    master, slave = pty.openpty()
    try:
        env = {**os.environ, "COLUMNS": "200", "TERM": "xterm"}
        r = subprocess.run(
            renderd_cmd(*args, "--socket", d.socket), stdout=subprocess.PIPE, stderr=slave, env=env, timeout=60
        )
        assert r.returncode == 0
    finally:
        os.close(slave)
    drawn = b""
    while True:
        try:
            block = os.read(master, 65536)
        except OSError:  # EIO: the terminal's other side is closed and everything was read
            break
        if not block:
            break
        drawn += block
    os.close(master)
    return re.sub(r"\x1b\[[0-9;?]*[A-Za-z]", "", drawn.decode(errors="replace"))


@pytest.mark.browser
def test_job_views_through_the_daemon(daemon: Daemon, short_tmp: Path) -> None:
    r = daemon.ctl("list")
    assert r.returncode == 0 and r.stdout.strip() == "no jobs", r
    # Deeply nested JSON on the real socket: bad_json, the connection and the daemon stay.
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as s:
        s.connect(str(daemon.socket))
        s.settimeout(30)
        f = s.makefile("rb")
        s.sendall(b"[" * 60_000 + b"\n")
        assert json.loads(f.readline())["error"]["code"] == "bad_json"
        s.sendall(b'{"op": "list"}\n')
        assert json.loads(f.readline()) == {"ok": True, "jobs": []}

    # Submit creates the output directory, as the submitting user.
    out_a = short_tmp / "new" / "sub" / "a.mp4"
    r = daemon.ctl("submit", FIXTURES / "frame-index-hook", "-o", out_a, "--chunks", "3", "--priority", "7")
    assert r.returncode == 0, r.stderr
    job_a = r.stdout.strip()
    wait_state(daemon, job_a, ("done",))
    assert out_a.is_file()

    # A second job, cancelled after its first chunk: numbering restarts, unfinished chunks show cancelled.
    r = daemon.ctl("submit", FIXTURES / "frame-index-hook", "-o", short_tmp / "b.mp4", "--chunks", "6")
    assert r.returncode == 0, r.stderr
    job_b = r.stdout.strip()
    deadline = time.monotonic() + 240
    while daemon.json("status", job_b)["job"]["chunks_verified"] < 1:
        assert time.monotonic() < deadline, "job b never verified a chunk"
        time.sleep(0.2)
    assert daemon.ctl("cancel", job_b).returncode == 0
    status = daemon.json("status", job_b)
    assert status["job"]["state"] == "cancelled"
    states = [c["state"] for c in status["chunks"]]
    assert "verified" in states and "cancelled" in states
    assert set(states) == {"verified", "cancelled"}, states
    numbers = [a["number"] for a in status["attempts"]]
    assert numbers == list(range(1, len(numbers) + 1))
    assert min(a["id"] for a in status["attempts"]) > 3  # job a had attempts 1..3
    text = daemon.ctl("status", job_b).stdout
    assert re.search(r"^  chunk +\d+ .* cancelled ", text, re.M), text
    assert "  attempt 1: chunk " in text, text

    # list: priority, running time, ETA; JSON keys the dashboard reads.
    jobs = {j["id"]: j for j in daemon.json("list")["jobs"]}
    a = jobs[job_a]
    assert a["fps"] > 0 and a["elapsed_s"] > 0 and a["eta_s"] == 0
    assert jobs[job_b]["eta_s"] is None
    lines = daemon.ctl("list").stdout.splitlines()
    assert lines[0].split()[:8] == ["JOB", "STATE", "PRIO", "FRAMES", "FPS", "TIME", "ETA", "SUBMITTED"]
    row_a = next(ln.split() for ln in lines if ln.startswith(job_a))
    assert row_a[1:4] == ["done", "7", "120/120"] and float(row_a[4]) > 0 and row_a[6] == "00:00", row_a
    row_b = next(ln.split() for ln in lines if ln.startswith(job_b))
    assert row_b[1] == "cancelled" and row_b[6] == "--:--", row_b

    # watch without a terminal: the progress line has fps and eta like `renderd render`'s.
    w = daemon.ctl("watch", job_a)
    assert w.returncode == 0, w.stderr
    assert re.search(rf"renderd: {job_a} done 120/120 frames, \d+\.\d fps, eta 00:00, chunks 3/3", w.stderr), w.stderr

    # On a terminal: the live bar carries them too.
    bar = _on_a_terminal(daemon, "watch", job_a)
    assert re.search(r"120/120 +\d+\.\d fps +eta 00:00 +chunks 3/3", bar), bar

    # A reader that went away: no traceback, the exit status a SIGPIPE'd command gets.
    for args in (("status", job_b), ("list",), ("logs", job_a), ("hosts",)):
        r2 = _closed_pipe_run(daemon, *args)
        assert r2.returncode == 141 and r2.stderr == b"", (args, r2)

    # The daemon's own log (a file here, not journald): every line stamped.
    log_lines = [ln for ln in daemon.log.read_text().splitlines() if ln.startswith(("20", "renderd["))]
    assert log_lines and all(TIMESTAMPED.match(ln) for ln in log_lines), log_lines[:5]


def test_daemon_under_journald_leaves_timestamps_to_it(short_tmp: Path) -> None:
    d = Daemon(short_tmp)
    d.log.touch()
    st = d.log.stat()
    d.start(env={"JOURNAL_STREAM": f"{st.st_dev}:{st.st_ino}"})
    try:
        assert d.ctl("list").returncode == 0
    finally:
        d.stop()
    lines = [ln for ln in d.log.read_text().splitlines() if "renderd[" in ln]
    assert lines and all(ln.startswith("renderd[") for ln in lines), lines[:5]
