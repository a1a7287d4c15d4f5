"""Ctrl-C during a render: browsers and ffmpeg stop, temp files go, no output is left."""

from __future__ import annotations

import json
import signal
import subprocess
import time
from pathlib import Path

import psutil
import pytest
from conftest import EXAMPLES, renderd_cmd

pytestmark = pytest.mark.browser


def _descendants(pid: int) -> list[psutil.Process]:
    try:
        return psutil.Process(pid).children(recursive=True)
    except psutil.NoSuchProcess:
        return []


@pytest.mark.parametrize("sig", [signal.SIGINT, signal.SIGTERM])
def test_interrupt_cancels_cleanly(tmp_path: Path, sig: signal.Signals) -> None:
    out = tmp_path / "out.mp4"
    proc = subprocess.Popen(
        renderd_cmd("render", EXAMPLES / "hyperframes-gsap", "-o", out, "--json", "--workers", "2"),
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    assert proc.stdout is not None
    children: list[psutil.Process] = []
    deadline = time.monotonic() + 120
    for line in proc.stdout:
        event = json.loads(line)
        # Interrupt once frames are flowing, so browsers (and maybe ffmpeg) are running.
        if event["event"] == "progress" and event["frames_done"] >= 10:
            children = _descendants(proc.pid)
            break
        assert time.monotonic() < deadline, "render never made progress"
    assert any("chrom" in c.name() for c in children), [c.name() for c in children]
    proc.send_signal(sig)
    _, err = proc.communicate(timeout=60)
    assert proc.returncode == 130, err
    assert "cancelled" in err and "Traceback" not in err
    assert not out.exists()
    assert not list(tmp_path.iterdir()), list(tmp_path.iterdir())
    gone, alive = psutil.wait_procs(children, timeout=15)
    assert not alive, [(p.pid, p.name()) for p in alive]
