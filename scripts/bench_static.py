"""Static frames: renders with them (skip_static, the default) against without, side by side.

Usage: scripts/bench static [--rounds N] [--workers N] [--frames A:B] [COMPOSITION...]

Each round renders each composition twice in-process (JPEG frames, mp4, default chunks), once
with static frames and once without, alternating which goes first. Prints per composition the
frames skipped (not captured), verified (captured anyway to compare) and mismatched, the median
wall time and CPU time (this process, its browsers and ffmpeg) of each side, the time saved
and the ratios, and whether every frame file (JPEG, kept
with keep_frames) is byte-identical between the two sides: same pixels, same encoder, same bytes.
The default composition is tests/fixtures/hf-static-skip (tiny: mostly start-up); HyperFrames' decks
(scripts/peer-samples: slideshow-demo, startup-pitch, airbnb-deck) are the fair cases
(docs/performance.md).
"""

from __future__ import annotations

import argparse
import asyncio
import shutil
import statistics
import sys
import tempfile
import threading
import time
from pathlib import Path

import psutil

from renderd.engine import CaptureSettings, StaticStats
from renderd.errors import FrameRangeError
from renderd.render import RenderRequest, render_local

FIXTURE = Path(__file__).resolve().parent.parent / "tests" / "fixtures" / "hf-static-skip"


class CpuMeter:
    """CPU seconds of this process and its descendants (browsers, ffmpeg), sampled every 0.2 s.

    On a shared machine CPU time moves far less than wall time with other jobs' load. A process's
    last 0.2 s before it exits can be missed, alike on both sides.
    """

    def __init__(self) -> None:
        self._seen: dict[tuple[int, float], float] = {}
        self._start: dict[tuple[int, float], float] = {}
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _sample(self) -> None:
        me = psutil.Process()
        for proc in [me, *me.children(recursive=True)]:
            try:
                t = proc.cpu_times()
                self._seen[(proc.pid, proc.create_time())] = t.user + t.system
            except psutil.Error:
                pass

    def _run(self) -> None:
        while not self._stop.wait(0.2):
            self._sample()

    def __enter__(self) -> CpuMeter:
        self._sample()
        self._start = dict(self._seen)
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()
        self._sample()

    @property
    def seconds(self) -> float:
        """CPU seconds used between enter and exit."""
        return sum(v - self._start.get(k, 0.0) for k, v in self._seen.items())


async def timed(
    comp: Path, out: Path, skip: bool, workers: int, frames: str | None
) -> tuple[float, float, StaticStats, Path]:
    """Render ``comp`` to ``out`` with static frames on or off; return (wall s, CPU s, stats, frames dir)."""
    req = RenderRequest(
        composition=comp,
        output=out,
        workers=workers,
        frames=frames,
        keep_frames=True,
        work_dir=out.parent,
        capture=CaptureSettings(skip_static=skip),
    )
    start = time.monotonic()
    with CpuMeter() as cpu:
        result = await render_local(req, lambda _event: None)
    elapsed = time.monotonic() - start
    assert result.frames_dir is not None
    return elapsed, cpu.seconds, result.static, result.frames_dir


def differing_frames(a: Path, b: Path) -> list[str]:
    """Return the frame files (relative names) whose bytes differ between work dirs ``a`` and ``b``."""
    names = sorted(p.relative_to(a) for p in a.rglob("frame_*.jpg"))
    other = sorted(p.relative_to(b) for p in b.rglob("frame_*.jpg"))
    if names != other:
        return ["(different frame files)"]
    return [str(n) for n in names if (a / n).read_bytes() != (b / n).read_bytes()]


async def bench(comp: Path, rounds: int, workers: int, frames: str | None) -> None:
    times: dict[bool, list[float]] = {False: [], True: []}
    cpus: dict[bool, list[float]] = {False: [], True: []}
    stats: StaticStats | None = None
    diffs: list[str] = []
    control: list[str] | None = None  # frames two renders without static frames disagree on
    first_off: Path | None = None
    with tempfile.TemporaryDirectory(prefix="renderd-bench-static-") as tmp:
        for r in range(rounds):
            dirs: dict[bool, Path] = {}
            for skip in (False, True) if r % 2 == 0 else (True, False):
                side = Path(tmp, f"r{r}-skip{int(skip)}")
                side.mkdir()
                wall, cpu, static, dirs[skip] = await timed(comp, side / "out.mp4", skip, workers, frames)
                times[skip].append(wall)
                cpus[skip].append(cpu)
                if skip:
                    stats = static
                print(f"  round {r + 1}: skip_static={skip}: {wall:.2f} s, CPU {cpu:.1f} s", flush=True)
            diffs = differing_frames(dirs[False], dirs[True]) or diffs
            if first_off is None:
                first_off = dirs[False]
            else:
                control = differing_frames(first_off, dirs[False]) or control or []
            shutil.rmtree(dirs[True].parent, ignore_errors=True)
            if dirs[False] != first_off:
                shutil.rmtree(dirs[False].parent, ignore_errors=True)
    assert stats is not None
    same = "yes" if not diffs else f"NO ({len(diffs)}: {diffs[:3]})"
    if control:
        # Then the differences need not come from static frames: the render itself is not repeatable.
        same += f"; two renders without static frames differ too ({len(control)} frames)"
    elif control is not None:
        same += "; two renders without static frames: identical"
    off, on = statistics.median(times[False]), statistics.median(times[True])
    cpu_off, cpu_on = statistics.median(cpus[False]), statistics.median(cpus[True])
    print(
        f"{comp.name}{f' frames {frames}' if frames else ''}: skipped {stats.skipped}, verified {stats.verified}, "
        f"mismatches {stats.mismatches}; median wall off {off:.2f} s, on {on:.2f} s: saved {off - on:.2f} s, "
        f"ratio {on / off:.3f}; median CPU off {cpu_off:.1f} s, on {cpu_on:.1f} s: saved {cpu_off - cpu_on:.1f} s, "
        f"ratio {cpu_on / cpu_off:.3f}; frames identical: {same}",
        flush=True,
    )


def main() -> int:
    parser = argparse.ArgumentParser(prog="bench static", description=__doc__.splitlines()[0])
    parser.add_argument("compositions", nargs="*", type=Path, default=[FIXTURE])
    parser.add_argument("--rounds", type=int, default=2, help="rounds, each one render of both sides (default 2)")
    parser.add_argument("--workers", type=int, default=2, help="capture workers (default 2)")
    parser.add_argument("--frames", help="absolute frame range A:B of each composition (default: all)")
    args = parser.parse_args()
    for comp in args.compositions:
        if not comp.exists():
            print(f"bench static: {comp}: no such composition", file=sys.stderr)
            return 2
    if args.rounds < 1 or args.workers < 1:
        print("bench static: --rounds and --workers must be at least 1", file=sys.stderr)
        return 2
    for comp in args.compositions:
        try:
            asyncio.run(bench(comp, args.rounds, args.workers, args.frames))
        except FrameRangeError as exc:
            print(f"{comp.name}: {exc}; the whole composition instead", flush=True)
            asyncio.run(bench(comp, args.rounds, args.workers, None))
    return 0


if __name__ == "__main__":
    sys.exit(main())
