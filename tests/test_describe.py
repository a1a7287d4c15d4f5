"""The coordinator never runs a browser: compositions are described by agents, results cached by content.

A real daemon with a local host whose agent command is a wrapper that records every agent run,
so the tests count `renderd agent --describe` runs; the daemon's process tree is sampled the
whole time to catch any Chromium that is not an agent's.
"""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import psutil
import pytest
from conftest import FIXTURES, RENDERD
from daemonctl import Daemon, wait_state
from test_media import amplitude, decode_left, make_media
from videotools import stream

pytestmark = pytest.mark.browser


def test_coordinator_imports_neither_the_engine_nor_playwright() -> None:
    """Every module of renderd.coordinator, and the CLI the daemon starts from, load browserless."""
    code = (
        "import importlib, pkgutil, sys\n"
        "import renderd.coordinator as c, renderd.cli.main\n"
        "for m in pkgutil.iter_modules(c.__path__):\n"
        "    importlib.import_module('renderd.coordinator.' + m.name)\n"
        "bad = sorted(k for k in sys.modules if k.split('.')[0] == 'playwright' or k.startswith('renderd.engine'))\n"
        "print(bad)\n"
    )
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60, check=True)
    assert r.stdout.strip() == "[]", r.stdout


class BrowserWatch:
    """Sample the daemon's process tree: every Chromium must have a `renderd agent` between it and the daemon."""

    def __init__(self, daemon_pid: int) -> None:
        self.pid = daemon_pid
        self.violations: list[str] = []
        self.seen_under_agents = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def __enter__(self) -> BrowserWatch:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join(10)

    def _run(self) -> None:
        while not self._stop.is_set():
            try:
                self.sample()
            except psutil.Error:
                pass  # a process ended while we looked
            self._stop.wait(0.1)

    def sample(self) -> None:
        daemon = psutil.Process(self.pid)
        for p in daemon.children(recursive=True):
            try:
                if "chrom" not in p.name().lower():
                    continue
                between = []
                for parent in p.parents():
                    if parent.pid == self.pid:
                        break
                    between.append(parent.cmdline())
                else:
                    continue  # reparented since the listing (its agent exited): not the daemon's
            except psutil.Error:
                continue
            if any("agent" in cmd and any("renderd" in a for a in cmd) for cmd in between):
                self.seen_under_agents += 1
            else:
                self.violations.append(f"{p.pid} {p.name()} via {[' '.join(c)[:80] for c in between]}")


@pytest.fixture
def media_project(short_tmp: Path) -> Path:
    root = short_tmp / "hf-media"
    shutil.copytree(FIXTURES / "hf-media", root)
    make_media(root)
    return root


@pytest.fixture
def counted_daemon(short_tmp: Path) -> Iterator[tuple[Daemon, Path]]:
    """A daemon whose local host runs agents through a wrapper that logs each run's arguments."""
    runs = short_tmp / "agent-runs.log"
    wrapper = short_tmp / "agent-wrapper"
    wrapper.write_text(f'#!/bin/sh\necho "$*" >> {runs}\nexec {RENDERD} agent "$@"\n')
    wrapper.chmod(0o755)
    hosts = short_tmp / "hosts.toml"
    hosts.write_text(
        f'[[hosts]]\nname = "local"\naddress = "local"\nslots = 2\nworkers = 1\nagent_command = ["{wrapper}"]\n'
    )
    d = Daemon(short_tmp, hosts_file=hosts)
    d.start()
    yield d, runs
    d.stop()


def _describes(runs: Path) -> int:
    return sum("--describe" in line for line in runs.read_text().splitlines()) if runs.exists() else 0


def _submit(d: Daemon, comp: Path, out: Path) -> str:
    r = d.ctl("submit", comp, "-o", out, "--json")
    assert r.returncode == 0, r.stderr + d.log.read_text()[-3000:]
    job: str = json.loads(r.stdout)["job"]["id"]
    return job


def test_submit_describes_on_an_agent_once_per_content_and_assembly_keeps_the_soundtrack(
    counted_daemon: tuple[Daemon, Path], media_project: Path, short_tmp: Path
) -> None:
    d, runs = counted_daemon
    assert d.proc is not None
    with BrowserWatch(d.proc.pid) as watch:
        out = short_tmp / "job.mp4"
        job = _submit(d, media_project, out)
        assert _describes(runs) == 1
        status = wait_state(d, job, ("done", "failed"), timeout=400)
        assert status["job"]["state"] == "done", status["job"]

        # Unchanged composition: answered from the cache, no agent runs for it.
        again = _submit(d, media_project, short_tmp / "again.mp4")
        assert _describes(runs) == 1
        d.ctl("cancel", again)
        # A new mtime with the same bytes is still the same composition.
        index = media_project / "index.html"
        index.touch()
        same = _submit(d, media_project, short_tmp / "same.mp4")
        assert _describes(runs) == 1
        d.ctl("cancel", same)
        # Changed bytes: described again.
        index.write_text(index.read_text() + "\n<!-- changed -->\n")
        changed = _submit(d, media_project, short_tmp / "changed.mp4")
        assert _describes(runs) == 2
        d.ctl("cancel", changed)

        # A broken page is refused with the page's own error, read by an agent too.
        r = d.ctl("submit", FIXTURES / "bad-script-error", "-o", short_tmp / "bad.mp4")
        assert r.returncode != 0
        assert r.stderr.strip().splitlines() == [
            "renderd: error: index.html: script error during load: Error: boom from composition"
        ], r.stderr
        assert _describes(runs) == 3
    assert watch.violations == [], watch.violations
    assert watch.seen_under_agents > 0  # the sampler did see the agents' browsers

    # The soundtrack came from the stored plan: 440 Hz at half level from 0.5 s, 880 Hz from 2.5 s.
    assert abs(float(stream(out, "audio")["duration"]) - 3.0) < 0.03
    pcm = decode_left(out)
    assert abs(amplitude(pcm, 0.6, 2.4, 440) - 0.25) < 0.025
    assert abs(amplitude(pcm, 2.6, 2.95, 880) - 0.4) < 0.04
    stored = d.json("status", job)["job"]["params"]
    assert sorted(t["path"] for t in stored["audio"]) == ["media/clip.mp4", "media/tone440.wav"]
    assert stored["described"]["host"] == "local"


def test_agent_describe_prints_metadata_and_a_relative_audio_plan(media_project: Path) -> None:
    r = subprocess.run(
        [str(RENDERD), "agent", "--describe"],
        input=json.dumps({"composition": str(media_project), "fps": "30"}),
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert r.returncode == 0, r.stderr
    [line] = r.stdout.splitlines()
    d = json.loads(line)
    assert (d["event"], d["width"], d["height"], d["fps"], d["duration"], d["total_frames"]) == (
        "described", 320, 240, "30", "3", 90
    )  # fmt: skip
    tracks = {(t["path"], t["start"], t["end"], t["volume"], t["rate"]) for t in d["audio"]}
    assert tracks == {("media/tone440.wav", 0.5, 2.5, 0.5, 1.0), ("media/clip.mp4", 2.5, 3.0, 1.0, 2.0)}
    assert d["videos"] == 2 and d["gl"] is False


def test_agent_describe_of_a_broken_page_is_the_page_error(tmp_path: Path) -> None:
    done = subprocess.run(
        [str(RENDERD), "agent", "--describe"],
        input=json.dumps({"composition": str(FIXTURES / "bad-script-error")}),
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 2
    event = json.loads(done.stdout.splitlines()[-1])
    assert event == {
        "event": "error",
        "code": "CompositionError",
        "message": "index.html: script error during load: Error: boom from composition",
    }
    assert done.stderr.strip().splitlines()[-1].startswith("renderd: error: index.html: script error")


def test_describe_cache_key_follows_content_not_mtime(tmp_path: Path) -> None:
    from renderd.composition import load_composition
    from renderd.coordinator.describe import Describer
    from renderd.describe import DescribeRequest

    root = tmp_path / "c"
    shutil.copytree(FIXTURES / "frame-index-hook", root)
    comp = load_composition(root)
    describer = Describer()
    req = DescribeRequest(composition="")
    first = describer.cache_key(comp, req)
    time.sleep(0.01)
    (root / "index.html").touch()
    assert describer.cache_key(comp, req) == first
    assert describer.cache_key(comp, DescribeRequest(composition="", fps="60")) != first
    (root / "extra.txt").write_text("x")
    assert describer.cache_key(comp, req) != first
