"""`renderd agent --serve`: several chunk assignments over one stdin, browsers kept warm per job."""

from __future__ import annotations

import json
import subprocess
import time
from pathlib import Path
from typing import IO, Any

import psutil
import pytest
from conftest import FIXTURES, decode_index, renderd_cmd
from sshhosts import is_alive
from videotools import decode_frames

pytestmark = pytest.mark.browser


def _assignment(root: Path, job: str, index: int, start: int, end: int) -> dict[str, Any]:
    return {
        "job_id": job,
        "chunk_index": index,
        "composition": str(FIXTURES / "frame-index-hook"),
        "start": start,
        "end": end,
        "total_frames": 120,
        "fps": "30",
        "width": 320,
        "height": 240,
        "duration": "4",
        "output": str(root / f"{job}-{index}.mp4"),
        "work_dir": str(root / f"work-{job}-{index}"),
        "settings": {"workers": 1},
    }


def _send(stdin: IO[bytes], assignment: dict[str, Any]) -> None:
    stdin.write(json.dumps(assignment).encode() + b"\n")
    stdin.flush()


def _until_final(stdout: IO[bytes]) -> dict[str, Any]:
    """Read events up to the chunk's ``done`` or ``error``."""
    while True:
        line = stdout.readline()
        assert line, "the agent closed stdout before its chunk's final event"
        event: dict[str, Any] = json.loads(line)
        if event["event"] in ("done", "error"):
            return event


def _browsers(pid: int) -> set[int]:
    out = set()
    for p in psutil.Process(pid).children(recursive=True):
        try:
            if "chrom" in p.name() and "--type=" not in " ".join(p.cmdline()):
                out.add(p.pid)
        except psutil.Error:
            pass
    return out


def test_serve_renders_each_assignment_and_keeps_browsers_for_the_same_job(tmp_path: Path) -> None:
    agent = subprocess.Popen(
        renderd_cmd("agent", "--serve"), stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL
    )
    assert agent.stdin is not None and agent.stdout is not None
    try:
        _send(agent.stdin, _assignment(tmp_path, "j-a", 0, 0, 20))
        first = _until_final(agent.stdout)
        assert first["event"] == "done", first
        browsers = _browsers(agent.pid)
        assert browsers
        _send(agent.stdin, _assignment(tmp_path, "j-a", 1, 20, 45))
        second = _until_final(agent.stdout)
        assert second["event"] == "done", second
        assert _browsers(agent.pid) == browsers  # the same job: the same browsers rendered it
        # A bad assignment is answered with an error; the agent keeps serving.
        agent.stdin.write(b'{"job_id": 3}\n')
        agent.stdin.flush()
        bad = _until_final(agent.stdout)
        assert bad["event"] == "error" and bad["code"] == "AssignmentError", bad
        _send(agent.stdin, _assignment(tmp_path, "j-b", 0, 45, 60))
        third = _until_final(agent.stdout)
        assert third["event"] == "done", third
        assert not _browsers(agent.pid) & browsers  # another job: fresh browsers
        for event, (start, end) in ((first, (0, 20)), (second, (20, 45)), (third, (45, 60))):
            frames = decode_frames(Path(event["output"]), 320, 240)
            assert [decode_index(f, 320) for f in frames] == list(range(start, end))
        # End of stdin in the middle of a chunk: the chunk is cancelled, browsers and all.
        _send(agent.stdin, _assignment(tmp_path, "j-b", 1, 0, 120))
        assert json.loads(agent.stdout.readline())["event"] == "started"
        tree = psutil.Process(agent.pid).children(recursive=True)
        agent.stdin.close()
        assert agent.wait(timeout=60) != 0
        deadline = time.monotonic() + 30
        while any(is_alive(p) for p in tree) and time.monotonic() < deadline:
            time.sleep(0.1)
        assert not [p.pid for p in tree if is_alive(p)]
        assert not (tmp_path / "j-b-1.mp4").exists()
    finally:
        if agent.poll() is None:
            agent.kill()
            agent.wait()
        agent.stdout.close()
        if not agent.stdin.closed:
            agent.stdin.close()
