"""Cost of drawing will-change layers as a sequential pass: renders with it against without, side by side.

Usage: scripts/bench raster [--rounds N] [--workers N] [COMPOSITION]

Each round renders the composition twice in-process (JPEG frames, default chunks), once with
CaptureSettings(anchor_rasters=True) (renderd's default: before each jump, the will-change
layers the first frame draws are drawn first where their episode began, read in a walker page)
and once with it off, alternating which goes first. Prints the median wall time of each and their
ratio. A composition without will-change layers costs nothing either way; the default one is
tests/fixtures/hf-will-change (tiny: mostly start-up); HyperFrames' news-ticker block is a fairer
case (docs/performance.md).
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import sys
import tempfile
import time
from pathlib import Path

from renderd.engine import CaptureSettings
from renderd.render import RenderRequest, render_local

FIXTURE = Path(__file__).resolve().parent.parent / "tests" / "fixtures" / "hf-will-change"


async def timed(comp: Path, out: Path, anchor: bool, workers: int) -> float:
    """Render ``comp`` to ``out`` with anchoring on or off; return the wall time in seconds."""
    req = RenderRequest(composition=comp, output=out, workers=workers, capture=CaptureSettings(anchor_rasters=anchor))
    start = time.monotonic()
    await render_local(req, lambda _event: None)
    return time.monotonic() - start


async def run(comp: Path, rounds: int, workers: int) -> None:
    times: dict[bool, list[float]] = {False: [], True: []}
    with tempfile.TemporaryDirectory(prefix="renderd-bench-raster-") as tmp:
        for r in range(rounds):
            for anchor in (False, True) if r % 2 == 0 else (True, False):
                times[anchor].append(await timed(comp, Path(tmp) / f"anchor{int(anchor)}.mp4", anchor, workers))
                print(f"round {r + 1}: anchor_rasters={anchor}: {times[anchor][-1]:.2f} s", flush=True)
    off, on = statistics.median(times[False]), statistics.median(times[True])
    print(f"median without drawing layers first {off:.2f} s, with {on:.2f} s: ratio {on / off:.3f} ({comp})")


def main() -> int:
    parser = argparse.ArgumentParser(prog="bench raster", description=__doc__.splitlines()[0])
    parser.add_argument("composition", nargs="?", type=Path, default=FIXTURE)
    parser.add_argument("--rounds", type=int, default=3, help="rounds, each one render of both (default 3)")
    parser.add_argument("--workers", type=int, default=2, help="capture workers (default 2)")
    args = parser.parse_args()
    if not args.composition.exists():
        print(f"bench raster: {args.composition}: no such composition", file=sys.stderr)
        return 2
    if args.rounds < 1 or args.workers < 1:
        print("bench raster: --rounds and --workers must be at least 1", file=sys.stderr)
        return 2
    asyncio.run(run(args.composition, args.rounds, args.workers))
    return 0


if __name__ == "__main__":
    sys.exit(main())
