"""Capture-cost calibration against the measured best: the probe's choice of workers vs capture with 1, 2, 3.

Usage: scripts/bench calibrate [--frames N] [--rounds N] [--workers 1,2,3] COMP...

For each composition: loads it, runs the capture probe (renderd/engine/calibrate.py) on the
span measured below and prints its measurement and choice (workers, chunk size, ms/frame,
cores/worker, MiB/worker); then captures that fixed span of frames (from a quarter into the
composition, or from frame 0 for pages that keep all their history) with each worker count,
interleaved over the rounds (w1, w2, w3, w1, ...; warm browsers, launch excluded, as
scripts/bench.py does), and prints the median ms/frame of each, the best, and how far the probe's
choice is from it. Compare within one run only: the machine may be shared.
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import sys
import tempfile
import time
from pathlib import Path

from renderd.capture_cost import Calibration
from renderd.composition import load_composition
from renderd.confine import MIB
from renderd.engine import CaptureSettings, Engine, EngineOptions
from renderd.frames import FrameRange


def span_of(engine: Engine, total: int, frames: int) -> FrameRange:
    """The measured span: from a quarter in (most layers on screen), from 0 for pages replaying all history."""
    n = min(frames, total)
    start = 0 if engine.keeps_all_history else max(0, min(total - n, total // 4))
    return FrameRange(start, start + n)


async def probe(comp_dir: Path, frames: int) -> tuple[Calibration, FrameRange, bool]:
    """Run the capture probe on a fresh engine; return its calibration, the span and whether auto keeps 1 worker."""
    comp = load_composition(comp_dir)
    async with Engine(comp, EngineOptions(capture=CaptureSettings(), workers=None)) as engine:
        info = await engine.probe()
        span = span_of(engine, info.total_frames, frames)
        with tempfile.TemporaryDirectory(prefix="renderd-bench-media-") as media:
            await engine.prepare_media(span, Path(media))
            # Workers chosen for the whole composition: the short span measured here has warm
            # browsers, so the frames-per-browser-start bound would only get in the way.
            cal = await engine.calibrate(span, info.total_frames)
        return cal, span, engine.gl and engine.keeps_all_history


async def capture_ms_per_frame(comp_dir: Path, span: FrameRange, workers: int) -> float:
    """Capture ``span`` with ``workers`` warm workers; return wall ms per frame."""
    comp = load_composition(comp_dir)
    with tempfile.TemporaryDirectory(prefix="renderd-bench-cal-") as tmp:
        async with Engine(comp, EngineOptions(capture=CaptureSettings(), workers=workers)) as engine:
            await engine.probe()
            await engine.prepare_media(span, Path(tmp, "media"))
            await engine.warm_up(workers)
            t0 = time.perf_counter()
            await engine.capture_chunk(span, Path(tmp, "frames"), workers, on_frame=lambda _i: None)
            return (time.perf_counter() - t0) * 1000 / len(span)


def bench_one(comp: Path, frames: int, rounds: int, counts: list[int]) -> tuple[str, ...]:
    """Probe and measure one composition; print the lines; return its summary row."""
    t0 = time.perf_counter()
    cal, span, replays_gl = asyncio.run(probe(comp, frames))
    c, ch = cal.cost, cal.choice
    chosen = 1 if replays_gl else ch.workers
    rule = " (auto keeps 1: WebGL replaying all history)" if replays_gl else ""
    print(f"{comp.name}: span {span}, {len(span)} frames")
    print(f"  probe ({time.perf_counter() - t0:.1f} s incl. load): {cal.describe()}{rule}", flush=True)
    # The probe's choice (and auto's) are measured too, should they lie outside the counts asked for.
    counts = sorted({*counts, chosen, ch.workers})
    samples: dict[int, list[float]] = {w: [] for w in counts}
    for r in range(rounds):
        for w in counts if r % 2 == 0 else counts[::-1]:
            ms = asyncio.run(capture_ms_per_frame(comp, span, w))
            samples[w].append(ms)
            print(f"  round {r + 1}: workers {w}: {ms:7.1f} ms/frame", flush=True)
    med = {w: statistics.median(v) for w, v in samples.items()}
    best = min(med, key=lambda w: med[w])

    def verdict(w: int) -> str:
        return "best" if w == best else f"{(med[w] / med[best] - 1) * 100:+.0f} % vs best"

    verdicts = f"probe {ch.workers}: {verdict(ch.workers)}"
    if chosen != ch.workers:
        verdicts += f"; auto {chosen}: {verdict(chosen)}"
    line = "  ".join(f"w{w} {med[w]:.0f}" for w in counts)
    print(f"  median ms/frame: {line}; best {best} worker(s); {verdicts}", flush=True)
    return (
        comp.name,
        f"{c.ms_per_frame:.0f}",
        f"{c.cores_per_worker:.2f}",
        f"{c.mem_per_worker / MIB:.0f}",
        f"{ch.workers} (auto {chosen})" if chosen != ch.workers else str(chosen),
        str(ch.chunk_frames),
        ", ".join(f"w{w} {med[w]:.0f}" for w in counts),
        str(best),
        verdicts,
    )


def main() -> int:
    parser = argparse.ArgumentParser(prog="bench calibrate", description=__doc__.splitlines()[0])
    parser.add_argument("compositions", nargs="+", type=Path)
    parser.add_argument("--frames", type=int, default=45, help="frames captured per measurement (default 45)")
    parser.add_argument("--rounds", type=int, default=2, help="interleaved rounds per worker count (default 2)")
    parser.add_argument("--workers", default="1,2,3", help="worker counts to measure (default 1,2,3)")
    args = parser.parse_args()
    missing = [str(c) for c in args.compositions if not c.exists()]
    if missing:
        print(f"bench calibrate: no such composition: {', '.join(missing)}", file=sys.stderr)
        return 2
    try:
        counts = [int(w) for w in args.workers.split(",")]
    except ValueError:
        counts = []
    if not counts or min(counts) < 1 or args.frames < 1 or args.rounds < 1:
        print("bench calibrate: --workers must list counts >= 1; --frames and --rounds must be >= 1", file=sys.stderr)
        return 2
    rows = [bench_one(comp, args.frames, args.rounds, counts) for comp in args.compositions]
    head = (
        "composition",
        "ms/frame",
        "cores/worker",
        "MiB/worker",
        "probe workers",
        "chunk",
        "median ms/frame by workers",
        "best",
        "probe vs best",
    )
    print("| " + " | ".join(head) + " |")
    print("|" + "---|" * len(head))
    for row in rows:
        print("| " + " | ".join(row) + " |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
