"""Capture paths side by side: BeginFrame in chromium-headless-shell vs Chromium screenshots.

For each composition, rounds alternate the two paths (and the worker counts), with warm browsers
(launch and page load excluded, as scripts/bench.py measures capture), over the same frame span;
each run sums the CPU seconds of this process and its browsers (bench_static.CpuMeter), which the
shared machine disturbs far less than wall time. After the timed runs, every frame of the two
paths (1 worker, PNG) is compared pixel for pixel: a farm may only pick the faster path if it
draws the same picture.

    scripts/bench paths [--frames A:B] [--rounds N] [--workers 1,2] [--format jpeg|png] COMP...
"""

from __future__ import annotations

import argparse
import asyncio
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from bench_common import default_composition
from bench_static import CpuMeter

from renderd.composition import load_composition
from renderd.engine import CaptureSettings, Engine, EngineOptions
from renderd.frames import parse_frame_range

PATHS = ("chromium", "headless-shell")


async def capture(
    comp_dir: Path, browser: str, workers: int, span: str | None, fmt: str, out: Path
) -> tuple[float, float, int]:
    """Capture ``span`` with warm browsers; return (wall s, CPU s, frames)."""
    comp = load_composition(comp_dir)
    opts = EngineOptions(capture=CaptureSettings(fmt=fmt, skip_static=False), workers=workers, browser=browser)
    async with Engine(comp, opts) as engine:
        info = await engine.probe()
        frames = parse_frame_range(span or f"0:{info.total_frames}", info.total_frames)
        await engine.warm_up(workers)
        with CpuMeter() as meter:
            t0 = time.perf_counter()
            await engine.capture_chunk(frames, out, workers, on_frame=lambda _i: None)
            wall = time.perf_counter() - t0
        return wall, meter.seconds, len(frames)


def same_pixels(a: Path, b: Path) -> tuple[int, int]:
    """Return (frames whose decoded pixels are equal, frames compared)."""
    files = sorted(a.iterdir())
    equal = 0
    for f in files:
        raw = [
            subprocess.run(
                ["ffmpeg", "-v", "error", "-i", str(p), "-f", "rawvideo", "-pix_fmt", "rgba", "-"],
                check=True, capture_output=True,
            ).stdout
            for p in (f, b / f.name)
        ]  # fmt: skip
        equal += raw[0] == raw[1]
    return equal, len(files)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(
        prog="scripts/bench paths", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    p.add_argument("compositions", nargs="*", type=Path)
    p.add_argument("--frames", help="absolute span A:B (default: the whole composition)")
    p.add_argument("--rounds", type=int, default=2)
    p.add_argument("--workers", default="1,2", help="worker counts, comma-separated (default 1,2)")
    p.add_argument("--format", default="jpeg", choices=("jpeg", "png"), help="frame format of the timed runs")
    args = p.parse_args(argv)
    comps = args.compositions or [c for c in [default_composition()] if c is not None]
    if shutil.which("chromium-headless-shell") is None:
        print(
            "bench paths: chromium-headless-shell is not installed (apt-get install chromium-headless-shell)",
            file=sys.stderr,
        )
        return 1
    counts = [int(w) for w in args.workers.split(",")]
    rows = []
    for comp in comps:
        print(
            f"bench paths: {comp.name}, frames {args.frames or 'all'}, {args.rounds} round(s), {args.format}",
            flush=True,
        )
        walls: dict[tuple[str, int], list[float]] = {}
        cpus: dict[tuple[str, int], list[float]] = {}
        n = 0
        for r in range(args.rounds):
            order = PATHS if r % 2 == 0 else PATHS[::-1]
            for w in counts:
                for browser in order:
                    with tempfile.TemporaryDirectory(prefix="renderd-bench-") as tmp:
                        wall, cpu, n = asyncio.run(capture(comp, browser, w, args.frames, args.format, Path(tmp)))
                    walls.setdefault((browser, w), []).append(wall)
                    cpus.setdefault((browser, w), []).append(cpu)
                    print(
                        f"  round {r + 1}: {browser:14s} {w} worker(s): {wall * 1000 / n:7.1f} ms/frame wall, {cpu * 1000 / n:7.1f} ms/frame CPU",
                        flush=True,
                    )
        with tempfile.TemporaryDirectory(prefix="renderd-bench-") as tmp:
            outs = {b: Path(tmp, b) for b in PATHS}
            for b in PATHS:
                asyncio.run(capture(comp, b, 1, args.frames, "png", outs[b]))
            equal, total = same_pixels(outs["chromium"], outs["headless-shell"])
        for w in counts:
            shot = statistics.median(walls[("chromium", w)]) * 1000 / n
            begin = statistics.median(walls[("headless-shell", w)]) * 1000 / n
            shot_cpu = statistics.median(cpus[("chromium", w)]) * 1000 / n
            begin_cpu = statistics.median(cpus[("headless-shell", w)]) * 1000 / n
            rows.append((comp.name, w, shot, begin, shot_cpu, begin_cpu, f"{equal}/{total}"))
    print()
    print(
        "| composition | workers | screenshot ms/frame | BeginFrame ms/frame | speed-up | screenshot CPU ms/frame | BeginFrame CPU ms/frame | CPU ratio | same pixels (PNG, 1 worker) |"
    )
    print("|---|---|---|---|---|---|---|---|---|")
    for name, w, shot, begin, shot_cpu, begin_cpu, same in rows:
        print(
            f"| {name} | {w} | {shot:.1f} | {begin:.1f} | {shot / begin:.2f}x | {shot_cpu:.1f} | {begin_cpu:.1f} | {shot_cpu / begin_cpu:.2f}x | {same} |"
        )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
