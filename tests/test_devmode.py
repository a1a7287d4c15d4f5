"""`renderd daemon --dev DIR`: a trial daemon as an ordinary user, set up and rendering in one command."""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import time
from pathlib import Path

import psutil
import pytest
from conftest import FIXTURES, decode_index, run_renderd
from users import ThrowawayUser
from videotools import decode_frames

from renderd.config import load_daemon_config, load_inventory

pytestmark = pytest.mark.browser


def _stop(proc: subprocess.Popen[str]) -> None:
    """SIGTERM the daemon itself (runuser's child), then reap runuser."""
    for child in psutil.Process(proc.pid).children(recursive=True):
        if "daemon" in child.cmdline():
            child.send_signal(signal.SIGTERM)
    try:
        proc.communicate(timeout=60)
    except subprocess.TimeoutExpired:
        for child in psutil.Process(proc.pid).children(recursive=True):
            child.kill()
        proc.kill()
        proc.communicate(timeout=30)


def test_dev_daemon_runs_as_an_ordinary_user_and_renders_a_job(short_tmp: Path, throwaway_user: ThrowawayUser) -> None:
    user = throwaway_user
    home = short_tmp / "home"
    home.mkdir()
    os.chown(home, user.uid, user.gid)
    comp = home / "comp"
    shutil.copytree(FIXTURES / "frame-index-hook", comp)
    for p in [comp, *comp.rglob("*")]:
        os.chown(p, user.uid, user.gid)
    trial = home / "trial"
    proc = subprocess.Popen(
        user.renderd_argv("daemon", "--dev", trial, env={"HOME": str(home)}),
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    try:
        assert proc.stdout is not None
        lines = [proc.stdout.readline() for _ in range(3)]
        socket = trial / "renderd.sock"
        assert lines[1] == f"  export RENDERD_SOCKET={socket}\n", lines
        assert lines[2].startswith("  renderd submit "), lines
        # The ready config: socket and state inside DIR, no watchdog, one local host; all the user's.
        config = load_daemon_config(trial / "renderd.toml")
        assert (config.socket, config.state_dir, config.watchdog) == (socket, trial / "state", False)
        assert [h.name for h in load_inventory(config.hosts_file).hosts] == ["local"]
        deadline = time.monotonic() + 60
        while not socket.exists():
            assert proc.poll() is None and time.monotonic() < deadline, proc.stdout.read()
            time.sleep(0.2)
        assert socket.stat().st_uid == user.uid and (trial / "state").stat().st_uid == user.uid
        daemon = next(c for c in psutil.Process(proc.pid).children(recursive=True) if "daemon" in c.cmdline())
        assert daemon.uids().real == user.uid

        out = home / "out.mp4"
        r = user.renderd("submit", comp, "-o", out, "--frames", "0:30", "--wait", env={"RENDERD_SOCKET": str(socket)})
        assert r.returncode == 0, r.stdout + r.stderr
        assert out.stat().st_uid == user.uid
        assert [decode_index(f, 320) for f in decode_frames(out, 320, 240)] == list(range(30))
    finally:
        _stop(proc)


def test_dev_refuses_root_in_one_line(short_tmp: Path) -> None:
    if os.geteuid() != 0:
        pytest.skip("checks the refusal for root")
    r = run_renderd("daemon", "--dev", short_tmp / "trial")
    assert r.returncode != 0
    assert (
        r.stderr.startswith("renderd: error: --dev runs a trial daemon as your own user") and r.stderr.count("\n") == 1
    )
    assert not (short_tmp / "trial").exists()
