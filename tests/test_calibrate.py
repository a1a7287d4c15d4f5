"""Capture-cost calibration: the pure choice from a measured cost, and the probe on real Chromium."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest
from conftest import FIXTURES, json_events, run_renderd

from renderd.capture_cost import CaptureCost, SlotShare, choose_for_fleet, choose_from_cost
from renderd.composition import load_composition
from renderd.confine import MIB
from renderd.coordinator.planner import ChunkPolicy
from renderd.coordinator.submit import _fleet_choice
from renderd.describe import DescribeRequest
from renderd.engine import Engine, EngineOptions
from renderd.engine.calibrate import probe_spots
from renderd.frames import MAX_AUTO_WORKERS, FrameRange

GIB = 1 << 30


def cost(cores: float, *, ms: float = 200.0, mem: int = 400 * MIB) -> CaptureCost:
    return CaptureCost(
        frames=9,
        ms_per_frame=ms,
        cores_per_worker=cores,
        browser_cores=cores,
        waited=0.0,
        mem_per_worker=mem,
        seconds=2.0,
    )


@pytest.mark.parametrize(
    ("cores_per_worker", "cpu_count", "workers"),
    [
        (2.0, 2, 1),  # software GL: one worker already keeps both cores busy
        (2.6, 2, 1),  # more than the cores: still one
        (1.3, 2, 2),  # 1.54 workers fit: the second adds 54 % throughput
        (1.8, 2, 1),  # 1.11 fit: a second worker would add 11 % and contend
        (0.6, 2, 3),  # a DOM page that waits on paints: 3.3 fit, a fourth adds 11 %
        (0.45, 2, 4),  # 4.4 fit: 4
        (1.0, 8, 8),
        (0.1, 64, MAX_AUTO_WORKERS),
    ],
)
def test_workers_follow_the_cores_one_worker_keeps_busy(cores_per_worker: float, cpu_count: int, workers: int) -> None:
    choice = choose_from_cost(cost(cores_per_worker), cpu_count=cpu_count, available_memory=64 * GIB, frames=900)
    assert choice.workers == workers
    assert choice.by_cpu == workers or choice.workers == MAX_AUTO_WORKERS


def test_memory_bounds_the_workers_beyond_the_probed_one() -> None:
    # The probed worker is already running: 1 GiB free pays for one more 600 MiB worker (with
    # 1.5x headroom: 900 MiB), not two.
    choice = choose_from_cost(cost(0.5, mem=600 * MIB), cpu_count=8, available_memory=GIB, frames=900)
    assert (choice.workers, choice.by_memory) == (2, 2)
    none_free = choose_from_cost(cost(0.5, mem=600 * MIB), cpu_count=8, available_memory=0, frames=900)
    assert none_free.workers == 1


def test_frames_bound_the_workers() -> None:
    choice = choose_from_cost(cost(0.5), cpu_count=8, available_memory=64 * GIB, frames=30)
    assert (choice.workers, choice.by_frames) == (2, 2)
    assert choose_from_cost(cost(0.5), cpu_count=8, available_memory=64 * GIB, frames=5).workers == 1


def test_chunk_holds_the_target_seconds_of_capture_within_the_policy() -> None:
    policy = ChunkPolicy(target_chunk_seconds=20.0, min_chunk_frames=30, max_chunk_frames=900)

    def chunk(c: CaptureCost, cores: int) -> tuple[int, int]:
        got = choose_from_cost(c, cpu_count=cores, available_memory=64 * GIB, frames=9000, policy=policy)
        return got.workers, got.chunk_frames

    # 100 ms/frame, 2 workers that the 2 cores fit (1.0 core each): 20 frames/s, 400 frames in 20 s.
    assert chunk(cost(1.0, ms=100), 2) == (2, 400)
    # 2 workers chosen but 1.3 cores each: the cores give 1.54x one worker, not 2x.
    assert chunk(cost(1.3, ms=100), 2) == (2, round(20 * 10 * 2 / 1.3))
    # A slow WebGL page: 1.5 s/frame on one worker is 13 frames in 20 s, below the minimum of 30.
    assert chunk(cost(2.0, ms=1500), 2) == (1, 30)
    # A fast page on many cores: capped at the maximum.
    assert chunk(cost(0.5, ms=20), 16) == (16, 900)


async def test_probe_measures_a_real_worker(tmp_path: Path) -> None:
    comp = load_composition(FIXTURES / "frame-index-gsap")
    async with Engine(comp, EngineOptions(workers=None)) as engine:
        info = await engine.probe()
        cal = await engine.calibrate(FrameRange(0, info.total_frames))
    c = cal.cost
    assert c.frames >= 3
    assert 0 < c.ms_per_frame < 10_000
    assert 0 < c.cores_per_worker and 0 < c.browser_cores <= c.cores_per_worker
    # A headless Chromium tree takes tens of MiB at least, and not gigabytes for a 320x240 page.
    assert 20 * MIB < c.mem_per_worker < 4 * GIB
    assert 1 <= cal.choice.workers <= MAX_AUTO_WORKERS
    assert 30 <= cal.choice.chunk_frames <= 900
    assert engine.calibration is cal


def test_render_auto_logs_the_probe_and_uses_its_choice(tmp_path: Path) -> None:
    out = tmp_path / "out.mp4"
    # 120 frames: below the bound, the fixed rule and no probe.
    r = run_renderd("render", FIXTURES / "frame-index-gsap", "-o", out, "--workers", "auto", "-v")
    assert r.returncode == 0 and "capture probe" not in r.stderr, r.stderr
    always = {"RENDERD_CALIBRATE_MIN_FRAMES": "0"}
    r = run_renderd("render", FIXTURES / "frame-index-gsap", "-o", out, "--workers", "auto", "--json", "-v", env=always)
    assert r.returncode == 0, r.stderr
    m = re.search(r"capture probe: \d+ frames .* ms/frame, [\d.]+ cores/worker .* -> (\d+) worker\(s\)", r.stderr)
    assert m, r.stderr
    started = next(e for e in json_events(r.stdout) if e["event"] == "started")
    assert started["workers"] == int(m.group(1))
    # An explicit count wins, without a probe.
    r2 = run_renderd("render", FIXTURES / "frame-index-gsap", "-o", out, "--workers", "2", "--json", "-v", env=always)
    assert r2.returncode == 0, r2.stderr
    assert "capture probe" not in r2.stderr
    assert next(e for e in json_events(r2.stdout) if e["event"] == "started")["workers"] == 2


def test_probe_spots_spread_over_the_span_or_run_back_to_back() -> None:
    spread = probe_spots(FrameRange(100, 400), contiguous=False)
    assert [(r.start, r.end) for r in spread] == [(100, 103), (199, 202), (298, 301), (397, 400)]
    # Pages that keep all their history: from the span's start, one run after the other.
    runs = probe_spots(FrameRange(100, 400), contiguous=True)
    assert [(r.start, r.end) for r in runs] == [(100, 103), (103, 106), (106, 109), (109, 112)]
    assert [(r.start, r.end) for r in probe_spots(FrameRange(0, 5), contiguous=False)] == [(0, 3), (3, 5)]


def test_fleet_choice_shares_each_hosts_cores_among_its_slots() -> None:
    policy = ChunkPolicy(target_chunk_seconds=20.0, min_chunk_frames=30, max_chunk_frames=900)
    shares = [
        SlotShare("big", slots=2, cores=8, workers=None),  # 4 cores a slot
        SlotShare("small", slots=1, cores=2, workers=None),  # 2 cores a slot
        SlotShare("fixed", slots=1, cores=8, workers=1),  # its inventory says 1 worker a chunk
    ]
    fleet = choose_for_fleet(cost(1.0, ms=100), shares, policy, default_cores=2)
    assert fleet is not None
    per = {name: (c.workers, c.chunk_frames) for name, c in fleet.per_host.items()}
    # 100 ms/frame a worker, 1 core each: 4 workers -> 40 frames/s, 800 frames in 20 s.
    assert per == {"big": (4, 800), "small": (2, 400), "fixed": (1, 200)}
    # The fleet's slot speed: the slots' mean (big counts twice).
    assert fleet.slot_fps == pytest.approx((40 * 2 + 20 + 10) / 4)
    # The job's explicit workers win over the hosts'; a host not probed yet gets the default cores.
    forced = choose_for_fleet(
        cost(1.0, ms=100), [*shares, SlotShare("new", 1, None, None)], policy, default_cores=3, workers=2
    )
    assert forced is not None
    assert {n: c.workers for n, c in forced.per_host.items()} == {"big": 2, "small": 2, "fixed": 2, "new": 2}
    assert choose_for_fleet(cost(1.0), [SlotShare("off", 0, 4, None)], policy, default_cores=2) is None


def test_a_capture_cost_from_an_agent_is_checked_field_by_field() -> None:
    good = cost(1.0).to_dict()
    assert CaptureCost.from_dict(good) == cost(1.0)
    assert CaptureCost.from_dict(json.loads(json.dumps(good))) == cost(1.0)
    bad = [
        ("ms_per_frame", 0),
        ("cores_per_worker", "1"),
        ("mem_per_worker", -1),
        ("seconds", True),
        ("frames", 10**400),
    ]
    for name, value in bad:
        with pytest.raises(ValueError, match=name):
            CaptureCost.from_dict({**good, name: value})
    with pytest.raises(ValueError, match="frames"):
        CaptureCost.from_dict({k: v for k, v in good.items() if k != "frames"})
    with pytest.raises(ValueError, match="object"):
        CaptureCost.from_dict([1, 2])


def test_fleet_choice_keeps_a_chunk_long_enough_for_its_workers() -> None:
    # A slow page that barely loads a core: 16 workers would fit 8 cores, but at 5 s/frame a
    # chunk of 20 s holds too few frames for them; the workers follow the chunk's frames.
    policy = ChunkPolicy(target_chunk_seconds=20.0, min_chunk_frames=30, max_chunk_frames=900)
    fleet = choose_for_fleet(cost(0.25, ms=5000), [SlotShare("h", 1, 8, None)], policy, default_cores=8)
    assert fleet is not None
    assert (fleet.per_host["h"].workers, fleet.per_host["h"].chunk_frames) == (5, 30)


def test_submission_plans_from_the_described_cost_or_falls_back() -> None:
    policy = ChunkPolicy(target_chunk_seconds=20.0, min_chunk_frames=30, max_chunk_frames=900)
    shares = [SlotShare("a", 1, 4, None), SlotShare("b", 2, None, None)]
    described = {"capture": cost(1.0, ms=100).to_dict(), "cpus": 2, "gl": False, "keeps_all_history": False}
    fps, record = _fleet_choice(described, shares, policy, "a", None, 6.0)
    hosts = record["calibration"]["hosts"]
    # a: 4 cores, 1 slot: 4 workers; b: not probed, the describing host's 4 cores over 2 slots.
    assert {n: h["workers"] for n, h in hosts.items()} == {"a": 4, "b": 2}
    assert fps == pytest.approx((40 + 20 * 2) / 3)
    # Described from the cache (no host): b's cores are the describe's own `cpus`.
    _, cached = _fleet_choice(described, shares, policy, None, None, 6.0)
    assert cached["calibration"]["hosts"]["b"]["workers"] == 1
    # A WebGL page that keeps all its history gets one worker everywhere; --workers wins.
    gl = {**described, "gl": True, "keeps_all_history": True}
    assert {
        h["workers"] for h in _fleet_choice(gl, shares, policy, "a", None, 6.0)[1]["calibration"]["hosts"].values()
    } == {1}
    assert {
        h["workers"] for h in _fleet_choice(gl, shares, policy, "a", 3, 6.0)[1]["calibration"]["hosts"].values()
    } == {3}
    # No cost, or a malformed one: the hosts' past speed, nothing recorded.
    assert _fleet_choice({**described, "capture": None}, shares, policy, "a", None, 6.0) == (6.0, {})
    assert _fleet_choice({**described, "capture": {"frames": "x"}}, shares, policy, "a", None, None) == (None, {})


def test_a_describe_request_names_the_probe_only_when_it_asks_for_one() -> None:
    plain = DescribeRequest(composition="/c")
    assert "calibrate_min_frames" not in json.loads(plain.to_json())
    assert DescribeRequest.from_json(plain.to_json()) == plain
    measured = DescribeRequest(composition="/c", calibrate_min_frames=600)
    assert json.loads(measured.to_json())["calibrate_min_frames"] == 600
    assert DescribeRequest.from_json(measured.to_json()) == measured
