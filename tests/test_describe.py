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
from typing import Any

import psutil
import pytest
from conftest import FIXTURES, RENDERD
from daemonctl import Daemon, wait_state
from test_media import amplitude, decode_left, make_media
from videotools import stream

from renderd.capture_cost import UNKNOWN_MEMORY, CaptureCost, choose_from_cost
from renderd.confine import MIB
from renderd.coordinator.planner import ChunkPolicy, plan_job_chunks
from renderd.engine.calibrate import cpu_count
from renderd.frames import FrameRange

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
    return _submit_args(d, comp, out)


def _submit_args(d: Daemon, comp: Path, out: Path, *args: str) -> str:
    r = d.ctl("submit", comp, "-o", out, *args, "--json")
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


def _agent_describe(request: dict[str, object]) -> dict[str, Any]:
    r = subprocess.run(
        [str(RENDERD), "agent", "--describe"],
        input=json.dumps(request),
        capture_output=True,
        text=True,
        timeout=180,
    )
    assert r.returncode == 0, r.stderr
    [line] = r.stdout.splitlines()
    described: dict[str, Any] = json.loads(line)
    return described


def test_agent_describe_measures_the_capture_cost_of_a_long_enough_composition() -> None:
    comp = str(FIXTURES / "frame-index-gsap")  # 120 frames
    plain = _agent_describe({"composition": comp})
    assert plain["total_frames"] == 120 and plain["capture"] is None
    too_short = _agent_describe({"composition": comp, "calibrate_min_frames": 121})
    assert too_short["capture"] is None
    measured = _agent_describe({"composition": comp, "calibrate_min_frames": 120})
    cost = CaptureCost.from_dict(measured["capture"])
    assert cost.frames >= 3 and cost.ms_per_frame > 0 and cost.cores_per_worker > 0
    assert cost.mem_per_worker > 10 * MIB  # a browser's renderer, GPU and main process, not one of them
    r = subprocess.run(
        [str(RENDERD), "agent", "--describe"],
        input=json.dumps({"composition": comp, "calibrate_min_frames": "120"}),
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert r.returncode != 0 and "calibrate_min_frames has the wrong type" in r.stdout + r.stderr


def test_submit_sizes_chunks_from_the_capture_probe_of_a_long_job(short_tmp: Path) -> None:
    # Chunks of 1 s of capture (at least 1 frame) so that the measured speed shows in the plan;
    # at the planner's default 6 frames/s a slot they would be 6 frames, 20 chunks.
    scheduling = "[scheduling]\ncalibrate_min_frames = 100\ntarget_chunk_seconds = 1\nmin_chunk_frames = 1\n"
    # No `workers` in the inventory: the probe's choice for this host goes to its agents, whose
    # stdin (the assignments) the wrapper records.
    stdin_log = short_tmp / "agent-stdin.log"
    wrapper = short_tmp / "agent-wrapper"
    wrapper.write_text(
        f"#!{sys.executable}\n"
        "import os, subprocess, sys, threading\n"
        f"agent = subprocess.Popen([{str(RENDERD)!r}, 'agent', *sys.argv[1:]], stdin=subprocess.PIPE)\n"
        "def pump():\n"
        f"    with open({str(stdin_log)!r}, 'ab') as log:\n"
        "        for line in sys.stdin.buffer:\n"
        "            log.write(line)\n"
        "            log.flush()\n"
        "            agent.stdin.write(line)\n"
        "            agent.stdin.flush()\n"
        "    agent.stdin.close()\n"
        "threading.Thread(target=pump, daemon=True).start()\n"
        "os._exit(agent.wait())  # not sys.exit: the pump thread may hold stdin\n"
    )
    wrapper.chmod(0o755)
    hosts = short_tmp / "hosts.toml"
    hosts.write_text(f'[[hosts]]\nname = "local"\naddress = "local"\nslots = 2\nagent_command = ["{wrapper}"]\n')
    d = Daemon(short_tmp, hosts_file=hosts, timeouts=scheduling)
    d.start()
    try:
        job = _submit(d, FIXTURES / "frame-index-gsap", short_tmp / "out.mp4")
        status = d.json("status", job)
        cal = status["job"]["params"]["calibration"]
        assert cal["cost"]["ms_per_frame"] > 0
        # This host's cores (from its start-up probe) are shared by its 2 slots.
        cores = cpu_count()
        per_slot = choose_from_cost(
            CaptureCost.from_dict(cal["cost"]),
            cpu_count=cores / 2,
            available_memory=UNKNOWN_MEMORY,
            frames=900,
            policy=ChunkPolicy(1.0, 1, 900),
        )
        assert cal["hosts"] == {
            "local": {"workers": per_slot.workers, "chunk_frames": per_slot.chunk_frames, "fps": cal["slot_fps"]}
        }
        assert cal["slot_fps"] == pytest.approx(per_slot.frames_per_s, abs=0.001)
        expected = plan_job_chunks(FrameRange(0, 120), ChunkPolicy(1.0, 1, 900), slots=2, slot_fps=cal["slot_fps"])
        assert [(c["start"], c["end"]) for c in status["chunks"]] == [(c.start, c.end) for c in expected]
        text = d.ctl("status", job).stdout
        assert f"chunks sized by a capture probe: {cal['cost']['ms_per_frame']:.0f} ms/frame" in text, text
        assert f"(local: {per_slot.workers} worker(s), ~{per_slot.chunk_frames} frames)" in text, text
        done = wait_state(d, job, ("done", "failed"), timeout=300)
        assert done["job"]["state"] == "done", done["job"]
        assert int(stream(short_tmp / "out.mp4", "video")["nb_frames"]) == 120
        # Every chunk's agent was given the workers chosen for this host.
        sent = [json.loads(line) for line in stdin_log.read_text().splitlines() if '"chunk_index"' in line]
        assert len(sent) >= len(expected)
        assert {a["settings"]["workers"] for a in sent} == {per_slot.workers}

        # A plan the submitter gave is not measured: no probe, no calibration.
        given = _submit_args(d, FIXTURES / "frame-index-gsap", short_tmp / "given.mp4", "--chunks", "3")
        status = d.json("status", given)
        assert "calibration" not in status["job"]["params"] and len(status["chunks"]) == 3
        d.ctl("cancel", given)
    finally:
        d.stop()
