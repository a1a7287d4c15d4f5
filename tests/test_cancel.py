"""Ctrl-C during a render: browsers and ffmpeg stop, temp files go, no output is left."""

from __future__ import annotations

import json
import signal
import subprocess
import time
from pathlib import Path

import psutil
import pytest
from conftest import EXAMPLES, decode_index, renderd_cmd
from videotools import decode_frames

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


def test_killed_renderer_process_is_recovered(tmp_path: Path) -> None:
    """SIGKILL one Chromium renderer from outside mid-render: the frames are captured again."""
    out = tmp_path / "out.mp4"
    proc = subprocess.Popen(
        renderd_cmd(
            "render", EXAMPLES.parent / "tests/fixtures/frame-index-hook", "-o", out, "--json",
            "--workers", "2", "--chunks", "1", "--frame-timeout", "20",
        ),
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )  # fmt: skip
    assert proc.stdout is not None
    killed = None
    events = []
    for line in proc.stdout:
        events.append(json.loads(line))
        if killed is None and events[-1]["event"] == "progress" and events[-1]["frames_done"] >= 10:
            # Chromium keeps spare renderers around: kill every renderer of one browser.
            kids = _descendants(proc.pid)
            browsers = [p for p in kids if "chrom" in p.name() and "--type=" not in " ".join(p.cmdline())]
            assert browsers, "no browser process found"
            renderers = [p for p in browsers[0].children(recursive=True) if "--type=renderer" in " ".join(p.cmdline())]
            assert renderers, "no renderer process found"
            for r in renderers:
                r.kill()
            killed = renderers
    _, err = proc.communicate(timeout=120)
    assert proc.returncode == 0, err
    assert killed is not None
    assert any(e["event"] == "retry" for e in events)
    assert [decode_index(f, 320) for f in decode_frames(out, 320, 240)] == list(range(120))
