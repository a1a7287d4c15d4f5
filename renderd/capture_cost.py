"""What capturing a composition costs, and the workers and chunk sizes chosen from that cost.

The measuring half (a capture probe on a loaded page) is renderd/engine/calibrate.py; this half
is pure arithmetic, importable without the engine, so that the coordinator plans a job's chunks
from a cost an agent measured (its describe, renderd/describe.py) and `renderd render` chooses its
workers from the same rules.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass, fields
from typing import Any, TypeGuard

from renderd.confine import MIB
from renderd.coordinator.planner import ChunkPolicy
from renderd.frames import MAX_AUTO_WORKERS, MIN_FRAMES_PER_WORKER

# A worker's memory grows while it captures (tiles, image decodes): budget this much over the
# steady state the probe saw.
MEMORY_HEADROOM = 1.5
# One worker more than the cores strictly fit pays only when it adds this much throughput:
# 1.5 workers' worth of cores gets 2 workers, 2.2 gets 2 (a third worker would only contend).
EXTRA_WORKER_GAIN = 0.2
# Renders (and jobs) shorter than this keep the fixed worker rule and the planner's usual speed:
# the probe's frames are captured and thrown away (a few seconds with the page load), which only
# a long render pays back.
CALIBRATE_MIN_FRAMES = 600
# Memory is no bound when none is known (the coordinator plans before any agent measures it;
# each agent still bounds its own workers by the memory it has).
UNKNOWN_MEMORY = 1 << 50


@dataclass(frozen=True, slots=True)
class CaptureCost:
    """What one worker cost on this composition, as the probe measured it."""

    frames: int  # frames captured (warm-up left out)
    ms_per_frame: float  # median wall time from one captured frame to the next
    cores_per_worker: float  # CPU seconds per wall second: browser tree + driver + this process
    browser_cores: float  # the browser tree's part of cores_per_worker
    # Seconds its processes' threads were runnable but had no core, per wall second: other work
    # on the host. Not counted in cores_per_worker (see measure_capture_cost).
    waited: float
    mem_per_worker: int  # bytes: the browser tree's PSS (RSS where PSS is not reported)
    seconds: float  # the probe's wall time, warm-up included

    def to_dict(self) -> dict[str, Any]:
        """Return the cost as JSON-ready fields (a describe result carries it)."""
        return asdict(self)

    @classmethod
    def from_dict(cls, data: object) -> CaptureCost:
        """Parse a cost from an agent's describe result; raise ValueError naming a bad field."""
        if not isinstance(data, Mapping):
            raise ValueError("capture cost must be an object")
        values: dict[str, Any] = {}
        for f in fields(cls):
            value = data.get(f.name)
            if not _finite_number(value) or value < 0:
                raise ValueError(f"capture cost: {f.name} must be a number >= 0")
            values[f.name] = int(value) if f.type in (int, "int") else float(value)
        if values["ms_per_frame"] <= 0:
            raise ValueError("capture cost: ms_per_frame must be > 0")
        return cls(**values)


def _finite_number(value: object) -> TypeGuard[int | float]:
    if isinstance(value, bool) or not isinstance(value, int | float):
        return False
    try:
        return math.isfinite(value)
    except OverflowError:  # an int too large for a float
        return False


def positive_int(value: object) -> int | None:
    """Return ``value`` if it is an int >= 1 (not a bool), else None: a count an agent reported, checked."""
    return value if isinstance(value, int) and not isinstance(value, bool) and value > 0 else None


@dataclass(frozen=True, slots=True)
class WorkerChoice:
    """Workers and chunk size chosen from a CaptureCost, with the bound that decided each."""

    workers: int
    chunk_frames: int
    by_cpu: int
    by_memory: int
    by_frames: int
    frames_per_s: float  # the chosen workers' expected capture throughput


@dataclass(frozen=True, slots=True)
class Calibration:
    """A probe's measurement and the choice made from it."""

    cost: CaptureCost
    choice: WorkerChoice

    def describe(self) -> str:
        """Return the one-line summary logged by `renderd render -v` and agents."""
        c, w = self.cost, self.choice
        return (
            f"capture probe: {c.frames} frames in {c.seconds:.1f} s, {c.ms_per_frame:.0f} ms/frame, "
            f"{c.cores_per_worker:.2f} cores/worker ({c.browser_cores:.2f} browser, {c.waited:.2f} waited for a core), "
            f"{c.mem_per_worker / MIB:.0f} MiB/worker -> {w.workers} worker(s) "
            f"(cores allow {w.by_cpu}, memory {w.by_memory}, frames {w.by_frames}), "
            f"chunks of ~{w.chunk_frames} frames"
        )


def choose_from_cost(
    cost: CaptureCost,
    *,
    cpu_count: float,
    available_memory: int,
    frames: int,
    policy: ChunkPolicy | None = None,
    workers: int | None = None,
) -> WorkerChoice:
    """Return workers and chunk size for ``frames`` frames given one worker's measured ``cost``.

    Workers: as many as the cores fit (``cpu_count / cores_per_worker``, one more only when it
    adds EXTRA_WORKER_GAIN of throughput), as memory fits (the probed worker is already running,
    so ``available_memory`` pays only for the others, with MEMORY_HEADROOM), and as the frames
    pay for (MIN_FRAMES_PER_WORKER each), at most MAX_AUTO_WORKERS; an explicit ``workers``
    wins. Chunk: about ``policy.target_chunk_seconds`` of capture at the chosen workers'
    throughput (limited by the cores), clamped to the policy's bounds.
    """
    policy = policy or ChunkPolicy()
    cores = max(1.0, cpu_count)
    per_worker = max(cost.cores_per_worker, 0.05)
    fit = cores / per_worker
    whole = max(1, math.floor(fit))
    by_cpu = whole + 1 if fit >= 1 and (fit - whole) / whole >= EXTRA_WORKER_GAIN else whole
    by_memory = 1 + int(max(0, available_memory) // max(1, int(cost.mem_per_worker * MEMORY_HEADROOM)))
    by_frames = max(1, frames // MIN_FRAMES_PER_WORKER)
    chosen = workers if workers is not None else max(1, min(by_cpu, by_memory, by_frames, MAX_AUTO_WORKERS))
    # Throughput in single workers: more workers than the cores fit add nothing.
    speed_up = min(float(chosen), max(1.0, fit))
    frames_per_s = speed_up * 1000.0 / max(cost.ms_per_frame, 1.0)
    chunk = round(policy.target_chunk_seconds * frames_per_s)
    chunk = max(policy.min_chunk_frames, min(policy.max_chunk_frames, chunk))
    return WorkerChoice(chosen, chunk, by_cpu, by_memory, by_frames, frames_per_s)


@dataclass(frozen=True, slots=True)
class SlotShare:
    """One host as the planner sees it: its slots, its cores (None: not probed yet) and workers per chunk."""

    host: str
    slots: int
    cores: int | None
    workers: int | None  # None: auto


@dataclass(frozen=True, slots=True)
class FleetChoice:
    """A job's speed per slot over the fleet, and each host's workers and chunk size, from one cost."""

    slot_fps: float  # frames/s of one slot, averaged over every slot of the fleet
    per_host: dict[str, WorkerChoice]

    def to_dict(self) -> dict[str, Any]:
        """Return what a job records of the choice (``renderd status --json`` shows it)."""
        return {
            "slot_fps": round(self.slot_fps, 3),
            "hosts": {
                name: {"workers": c.workers, "chunk_frames": c.chunk_frames, "fps": round(c.frames_per_s, 3)}
                for name, c in self.per_host.items()
            },
        }


def choose_for_fleet(
    cost: CaptureCost,
    shares: Sequence[SlotShare],
    policy: ChunkPolicy,
    *,
    default_cores: int,
    workers: int | None = None,
) -> FleetChoice | None:
    """Return each host's workers and chunk size for a composition of ``cost``, and the fleet's slot speed.

    A host's slots share its cores: each slot's agent gets ``cores / slots`` of them
    (``default_cores``, the describing host's, where a host's are not known yet). ``workers``: the
    job's explicit count, else the host's own setting, else chosen from the cost. None without
    slots. The cost was measured on one host; a host with faster or slower cores is planned as
    if it had that host's speed per core (the scheduler's speculation covers the difference).
    """
    per_host: dict[str, WorkerChoice] = {}
    weighted = 0.0
    slots = 0
    for share in shares:
        if share.slots < 1:
            continue
        cores = (share.cores or default_cores) / share.slots
        given = workers or share.workers

        def choose(frames: int, cores: float = cores, given: int | None = given) -> WorkerChoice:
            return choose_from_cost(
                cost, cpu_count=cores, available_memory=UNKNOWN_MEMORY, frames=frames, policy=policy, workers=given
            )

        choice = choose(policy.max_chunk_frames)
        if given is None and choice.workers > max(1, choice.chunk_frames // MIN_FRAMES_PER_WORKER):
            # More workers than the chunk's frames pay browsers for: bound them by the chunk's own
            # frames (which makes the chunk smaller, as fewer workers capture less in 20 s).
            choice = choose(choice.chunk_frames)
        per_host[share.host] = choice
        weighted += choice.frames_per_s * share.slots
        slots += share.slots
    if not slots:
        return None
    return FleetChoice(weighted / slots, per_host)
