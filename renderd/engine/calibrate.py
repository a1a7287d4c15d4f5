"""Capture-cost calibration: measure what one worker costs on this composition, then size workers and chunks.

`renderd render --workers auto` used to take one worker per core, as if every page kept one core
busy. It does not: a DOM page's worker waits on paints and screenshots for part of each frame,
while a software-GL page's one worker already keeps every core busy. The probe captures a few
frames with the already loaded worker and measures, over that stretch:

- wall milliseconds per frame (between consecutive captured frames, so priming is left out);
- the CPU seconds its browser's process tree (plus the Playwright driver and this process, which
  work for every frame too) spends per wall second: the cores one worker keeps busy;
- the seconds its threads were runnable but had no core (Linux schedstat), reported as a sign of
  other work on the host;
- the browser tree's memory (PSS where the kernel reports it, else RSS).

`renderd.capture_cost.choose_from_cost` turns that into workers (bounded by cores, memory and
frames) and a chunk size holding about `ChunkPolicy.target_chunk_seconds` of capture work at that
speed (a straggler or a speculative copy of one chunk then costs little), within the planner's
bounds. That half is pure, so the coordinator plans a job's chunks from a cost measured by an
agent's describe (renderd/describe.py) without importing the engine.
"""

from __future__ import annotations

import asyncio
import os
import shutil
import statistics
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

import psutil

from renderd.capture_cost import CaptureCost
from renderd.engine.pool import CapturePool
from renderd.frames import FrameRange, WorkerTask

# The probe: captured frames per spot, spots spread over the span, and a time budget after which
# no new spot is started once MIN_INTERVALS frame-to-frame times were measured.
RUN_FRAMES = 3
SPOTS = 4
MIN_INTERVALS = 2
BUDGET_S = 2.0


def probe_spots(span: FrameRange, contiguous: bool) -> list[FrameRange]:
    """Return the frame runs the probe captures: SPOTS runs spread over ``span``, or back to back from its start.

    A page that keeps all its history replays every frame before a jump, so it is probed from the
    start of the span, run after run (no jump between them). Short spans are probed that way too.
    """
    n = len(span)
    if contiguous or n < SPOTS * RUN_FRAMES * 2:
        starts = range(span.start, span.start + min(n, SPOTS * RUN_FRAMES), RUN_FRAMES)
        return [FrameRange(a, min(a + RUN_FRAMES, span.end)) for a in starts]
    step = (n - RUN_FRAMES) // (SPOTS - 1)
    return [FrameRange(span.start + k * step, span.start + k * step + RUN_FRAMES) for k in range(SPOTS)]


async def measure_capture_cost(
    pool: CapturePool, span: FrameRange, *, contiguous: bool = False, budget_s: float = BUDGET_S
) -> CaptureCost:
    """Capture a few frames of ``span`` with the pool's first worker and return what they cost.

    The pool must have been set up by probing (its first worker holds the probe's browser). The
    frames are written to a scratch directory and deleted. On a host busy with other work the
    worker's threads wait for cores, so it shows fewer cores busy than it would keep on a free
    host and more workers are chosen; that wait is not added to the cores (several threads
    waiting at once would count several times, and on a shared host more workers do win a larger
    share of the cores), only reported. Raises RuntimeError when the worker
    failed a frame (the caller falls back to the fixed rule).
    """
    spots = probe_spots(span, contiguous)
    scratch = Path(await asyncio.to_thread(tempfile.mkdtemp, prefix="renderd-probe-"))
    stamps: dict[int, float] = {}

    def on_frame(i: int) -> None:
        stamps[i] = time.perf_counter()

    async def capture(run: FrameRange) -> None:
        pool.begin_chunk()
        report = await pool.run_pass([WorkerTask(0, run.start, run.end, run.start, scratch)], 1, on_frame)
        if report.reasons:
            raise RuntimeError("; ".join(report.reasons))

    started = time.perf_counter()
    try:
        # Warm-up: the page may still have to load, and the first screenshot sets up its surfaces.
        await capture(FrameRange(spots[0].start, spots[0].start + 1))
        stamps.clear()
        before = await asyncio.to_thread(_cpu_snapshot)
        t0 = time.perf_counter()
        intervals: list[float] = []
        for run in spots:
            await capture(run)
            times = [stamps[i] for i in range(run.start, run.end) if i in stamps]
            intervals += [b - a for a, b in zip(times, times[1:], strict=False)]
            if time.perf_counter() - t0 > budget_s and len(intervals) >= MIN_INTERVALS:
                break
        wall = time.perf_counter() - t0
        after = await asyncio.to_thread(_cpu_snapshot)
        tree = _busiest_tree(before, after)
        memory = await asyncio.to_thread(_tree_memory, after.trees.get(tree, []))
    finally:
        await asyncio.to_thread(shutil.rmtree, scratch, True)
    if not intervals:
        raise RuntimeError("the probe captured no two frames in a row")
    browser_s, browser_wait = _delta(before.trees.get(tree, []), after.trees.get(tree, []))
    host_s, host_wait = _delta(before.host, after.host)
    return CaptureCost(
        frames=len(stamps),
        ms_per_frame=statistics.median(intervals) * 1000.0,
        cores_per_worker=(browser_s + host_s) / wall,
        browser_cores=browser_s / wall,
        waited=(browser_wait + host_wait) / wall,
        mem_per_worker=memory,
        seconds=time.perf_counter() - started,
    )


@dataclass(slots=True)
class _Snapshot:
    # (CPU seconds, seconds runnable but waiting for a CPU) per pid, grouped by browser: the pid
    # of each browser's main process -> its tree.
    trees: dict[int, list[tuple[int, float, float]]]
    host: list[tuple[int, float, float]]  # this process and the Playwright drivers


def _is_browser(proc: psutil.Process) -> bool:
    name = proc.name().lower()
    return "chrom" in name or "headless_shell" in name


def _times(proc: psutil.Process) -> tuple[int, float, float]:
    """Return ``(pid, CPU seconds, run-queue wait seconds)`` of ``proc``, summed over its threads.

    The wait (Linux schedstat) is time the process could have run but had no core: on a host
    that other work keeps busy, busy time alone understates what a worker would use of a free
    core. Without schedstat the wait counts as 0.
    """
    cpu = wait = 0.0
    try:
        for task in os.scandir(f"/proc/{proc.pid}/task"):
            try:
                with open(f"{task.path}/schedstat") as f:
                    run_ns, wait_ns, _ = f.read().split()
            except (OSError, ValueError):
                continue
            cpu += int(run_ns) / 1e9
            wait += int(wait_ns) / 1e9
    except OSError:
        pass
    if cpu == 0.0:
        t = proc.cpu_times()
        cpu = float(t.user + t.system)
    return proc.pid, cpu, wait


def _cpu_snapshot() -> _Snapshot:
    """CPU and wait times of every browser this process started (by browser), of this process and its drivers."""
    me = psutil.Process()
    snap = _Snapshot(trees={}, host=[_times(me)])
    for child in me.children():  # the Playwright drivers (node), whose children are the browsers
        try:
            snap.host.append(_times(child))
            for root in child.children():
                if not _is_browser(root):
                    continue
                tree = [root, *root.children(recursive=True)]
                snap.trees[root.pid] = [_times(p) for p in tree if _alive(p)]
        except (psutil.NoSuchProcess, psutil.AccessDenied):
            continue
    return snap


def _alive(proc: psutil.Process) -> bool:
    try:
        return proc.is_running()
    except psutil.Error:
        return False


def _delta(before: list[tuple[int, float, float]], after: list[tuple[int, float, float]]) -> tuple[float, float]:
    """Return the (CPU, wait) seconds spent between two snapshots of the same processes."""
    # A process started during the probe counts from zero; one that ended is lost (a renderer
    # that exits mid-probe is rare, and the probe errs towards fewer cores per worker then).
    start = {pid: (c, w) for pid, c, w in before}
    cpu = wait = 0.0
    for pid, c, w in after:
        c0, w0 = start.get(pid, (0.0, 0.0))
        cpu += max(0.0, c - c0)
        wait += max(0.0, w - w0)
    return cpu, wait


def _busiest_tree(before: _Snapshot, after: _Snapshot) -> int:
    """Return the browser whose tree spent the most CPU: the probing worker's (others sit idle)."""
    if not after.trees:
        return -1
    return max(after.trees, key=lambda root: _delta(before.trees.get(root, []), after.trees[root])[0])


def _tree_memory(tree: list[tuple[int, float, float]]) -> int:
    total = 0
    for pid, _, _ in tree:
        try:
            proc = psutil.Process(pid)
            try:
                total += int(getattr(proc.memory_full_info(), "pss", proc.memory_info().rss))
            except psutil.AccessDenied:
                total += int(proc.memory_info().rss)
        except psutil.NoSuchProcess:
            continue
    return total


def cpu_count() -> int:
    """Return the cores this process may run on (its affinity, else all)."""
    try:
        return len(os.sched_getaffinity(0)) or 1
    except (AttributeError, OSError):
        return psutil.cpu_count(logical=True) or 1
