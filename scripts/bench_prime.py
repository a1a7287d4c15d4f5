"""Cost of priming: renders with the default priming against renders with none, side by side.

Usage: scripts/bench prime [--rounds N] [COMPOSITION]

Each round renders the composition twice in-process (default workers and chunks, JPEG frames),
once with CaptureSettings(prime_frames=1) (renderd's default: one uncaptured seek before each
worker task, more for pages with CSS transitions) and once with prime_frames=0, alternating which
goes first. Prints the median wall time of each and their ratio. Priming with 0 is not offered on
the command line: without it, compositions that keep state between seeks render differently
depending on the split (docs/design.md).
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import sys
import tempfile
import time
from pathlib import Path

from bench_common import default_composition

from renderd.engine import CaptureSettings
from renderd.render import RenderRequest, render_local


async def timed(comp: Path, out: Path, prime: int) -> float:
    """Render ``comp`` to ``out`` with ``prime`` priming frames; return the wall time in seconds."""
    req = RenderRequest(composition=comp, output=out, capture=CaptureSettings(prime_frames=prime))
    start = time.monotonic()
    await render_local(req, lambda _event: None)
    return time.monotonic() - start


async def run(comp: Path, rounds: int) -> None:
    times: dict[int, list[float]] = {0: [], 1: []}
    with tempfile.TemporaryDirectory(prefix="renderd-bench-prime-") as tmp:
        for r in range(rounds):
            for prime in (0, 1) if r % 2 == 0 else (1, 0):
                times[prime].append(await timed(comp, Path(tmp) / f"prime{prime}.mp4", prime))
                print(f"round {r + 1}: prime_frames={prime}: {times[prime][-1]:.2f} s", flush=True)
    off, on = statistics.median(times[0]), statistics.median(times[1])
    print(f"median without priming {off:.2f} s, with {on:.2f} s: ratio {on / off:.3f} ({comp})")


def main() -> int:
    parser = argparse.ArgumentParser(prog="bench prime", description=__doc__.splitlines()[0])
    parser.add_argument("composition", nargs="?", type=Path, default=default_composition())
    parser.add_argument("--rounds", type=int, default=3, help="rounds, each one render of both (default 3)")
    args = parser.parse_args()
    if args.composition is None or not args.composition.exists():
        print("bench prime: no composition given and no default one found", file=sys.stderr)
        return 2
    if args.rounds < 1:
        print("bench prime: --rounds must be at least 1", file=sys.stderr)
        return 2
    asyncio.run(run(args.composition, args.rounds))
    return 0


if __name__ == "__main__":
    sys.exit(main())
