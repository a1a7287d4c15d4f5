"""A real `renderd daemon` process on a temp socket, driven only through the CLI (and raw sockets)."""

from __future__ import annotations

import json
import signal
import socket
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import psutil
import pytest
from conftest import EXAMPLES, FIXTURES, decode_index, renderd_cmd
from daemonctl import HOSTS, Daemon, request_as, wait_state
from videotools import decode_frames

pytestmark = pytest.mark.browser


@pytest.fixture
def daemon_root(short_tmp: Path) -> Path:
    return short_tmp


@pytest.fixture
def daemon(daemon_root: Path) -> Iterator[Daemon]:
    d = Daemon(daemon_root)
    d.start()
    yield d
    d.stop()
    _assert_no_agents_left()


def _agents() -> list[psutil.Process]:
    out = []
    for p in psutil.process_iter(["cmdline"]):
        cmd = " ".join(p.info["cmdline"] or [])
        if "renderd agent" in cmd:
            out.append(p)
    return out


def _assert_no_agents_left(timeout: float = 30) -> None:
    deadline = time.monotonic() + timeout
    while _agents() and time.monotonic() < deadline:
        time.sleep(0.3)
    assert not _agents(), [p.info["cmdline"] for p in _agents()]


def _frame_indices(path: Path) -> list[int]:
    return [decode_index(f, 320) for f in decode_frames(path, 320, 240)]


def test_two_jobs_at_once_one_cancelled(daemon: Daemon, daemon_root: Path) -> None:
    out_a = daemon_root / "a.mp4"
    out_b = daemon_root / "b.mp4"
    subs = [
        subprocess.Popen(
            renderd_cmd("submit", comp, "-o", out, "--chunks", "4", "--socket", daemon.socket),
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        for comp, out in ((FIXTURES / "frame-index-hook", out_a), (EXAMPLES / "hyperframes-gsap", out_b))
    ]
    job_a, job_b = (p.communicate(timeout=120)[0].strip() for p in subs)
    assert job_a.startswith("j-") and job_b.startswith("j-") and job_a != job_b
    wait_state(daemon, job_b, ("running",))
    r = daemon.ctl("cancel", job_b)
    assert r.returncode == 0, r.stderr
    watch = daemon.ctl("watch", job_a, "--json")
    assert watch.returncode == 0, watch.stderr
    events = [json.loads(line) for line in watch.stdout.splitlines()]
    assert events[-1]["final"] and events[-1]["state"] == "done"
    assert _frame_indices(out_a) == list(range(120))
    status_b = daemon.json("status", job_b)
    assert status_b["job"]["state"] == "cancelled"
    assert not out_b.exists()
    assert not list(daemon_root.glob(".b.mp4*")), "partial output left behind"
    assert not (daemon_root / "state" / "jobs" / job_b).exists(), "cancelled job's chunk files left behind"
    _assert_no_agents_left()
    # A cancelled job cannot be cancelled twice; a clear error, not a crash.
    again = daemon.ctl("cancel", job_b)
    assert again.returncode != 0 and "already cancelled" in again.stderr


def test_sigkill_mid_job_then_restart_resumes_without_rerendering(daemon_root: Path) -> None:
    d = Daemon(daemon_root, slots=1)
    d.start()
    out = daemon_root / "resume.mp4"
    r = d.ctl("submit", FIXTURES / "frame-index-hook", "-o", out, "--chunks", "6")
    assert r.returncode == 0, r.stderr
    job = r.stdout.strip()
    deadline = time.monotonic() + 180
    while True:
        status = d.json("status", job)
        verified_before = {c["index"] for c in status["chunks"] if c["state"] == "verified"}
        if len(verified_before) >= 2:
            break
        assert time.monotonic() < deadline, status
        time.sleep(0.2)
    d.kill(signal.SIGKILL)
    # The orphaned agent sees its stdin close and stops by itself.
    _assert_no_agents_left()
    d.start()
    try:
        final = wait_state(d, job, ("done", "failed"))
        assert final["job"]["state"] == "done", final["job"]
        assert _frame_indices(out) == list(range(120))
        by_chunk: dict[int, list[dict[str, Any]]] = {}
        for a in final["attempts"]:
            by_chunk.setdefault(a["chunk_index"], []).append(a)
        for index in verified_before:
            # Verified before the kill: exactly one attempt, never rendered again.
            assert [a["outcome"] for a in by_chunk[index]] == ["verified"], by_chunk[index]
        interrupted = [a for a in final["attempts"] if a["outcome"] == "interrupted"]
        assert interrupted, "the chunk in flight at the kill should show as interrupted"
    finally:
        d.stop()


def test_sighup_with_broken_inventory_keeps_the_old_one(daemon: Daemon) -> None:
    before = daemon.json("hosts")
    daemon.hosts.write_text('[[hosts]]\nname = "x"\nslots = "many"\n')
    assert daemon.proc is not None
    daemon.proc.send_signal(signal.SIGHUP)
    deadline = time.monotonic() + 10
    while "reload refused" not in daemon.log.read_text():
        assert time.monotonic() < deadline, daemon.log.read_text()
        time.sleep(0.1)
    assert daemon.json("hosts") == before
    r = daemon.ctl("reload")
    assert r.returncode != 0 and "hosts.toml" in r.stderr
    # A good inventory is taken.
    daemon.hosts.write_text(HOSTS.format(slots=3))
    assert daemon.ctl("reload").returncode == 0
    assert daemon.json("hosts")["hosts"][0]["slots"] == 3


def test_peer_outside_the_allowed_uids_is_refused(daemon_root: Path) -> None:
    d = Daemon(daemon_root)
    d.start(socket_mode="0666")
    try:
        reply = request_as(65534, 65534, d.socket, b'{"op": "list"}\n')
        assert reply.get("ok") is False, reply
        assert reply["error"]["code"] == "forbidden"
        assert "uid 65534 is not allowed" in reply["error"]["message"]
        assert "jobs" not in reply
        assert d.ctl("list").returncode == 0
    finally:
        d.stop()


def test_a_thousand_malformed_requests_leave_the_daemon_serving(daemon: Daemon) -> None:
    bad = [
        b"not json\n",
        b"[1,2,3]\n",
        b'{"no_op": 1}\n',
        b'{"op": "explode"}\n',
        b'{"op": "status"}\n',
        b'{"op": "status", "job": 7}\n',
        b'{"op": "submit", "composition": "/nonexistent", "output": "relative.mp4"}\n',
        b'{"op": "cancel", "job": "j-doesnotexist"}\n',
        b"\xff\xfe\x00garbage\n",
        b'{"op": "list", "limit": true}\n',
    ]
    codes: set[str] = set()
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as s:
        s.connect(str(daemon.socket))
        s.settimeout(30)
        f = s.makefile("rb")
        for i in range(1000):
            s.sendall(bad[i % len(bad)])
            reply = json.loads(f.readline())
            assert reply["ok"] is False
            codes.add(reply["error"]["code"])
    assert {"bad_json", "bad_request", "unknown_op", "not_found", "bad_input"} <= codes
    # An oversized line is refused and the connection dropped; the daemon stays up.
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as s:
        s.connect(str(daemon.socket))
        s.sendall(b"x" * 200_000 + b"\n")
        assert json.loads(s.makefile("rb").readline())["error"]["code"] == "too_large"
    assert daemon.json("list")["jobs"] == []
    assert daemon.proc is not None and daemon.proc.poll() is None


def test_bad_submissions_get_one_line_errors(daemon: Daemon, daemon_root: Path) -> None:
    cases = [
        (("submit", daemon_root / "missing", "-o", daemon_root / "x.mp4"), "does not exist"),
        (("submit", FIXTURES / "bad-script-error", "-o", daemon_root / "x.mp4"), "boom from composition"),
        (("submit", FIXTURES / "frame-index-hook", "-o", daemon_root / "daemon.log" / "x.mp4"), "is not a directory"),
        (("submit", FIXTURES / "frame-index-hook", "-o", daemon_root / "x.mp4", "--frames", "5:500"), "beyond"),
        (("status", "j-nope"), "no job 'j-nope'"),
    ]
    for args, pattern in cases:
        r = daemon.ctl(*args)
        assert r.returncode != 0, args
        lines = [ln for ln in r.stderr.splitlines() if ln.strip()]
        assert len(lines) == 1 and pattern in lines[0], (args, r.stderr)
        assert "Traceback" not in r.stderr
    assert daemon.proc is not None and daemon.proc.poll() is None
