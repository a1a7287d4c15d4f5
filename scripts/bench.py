"""Measure renderd's capture speed with 1 and 2 workers (and more) in one run, and their ratio.

Compare within one run only: the machine is shared and noisy. Runs are interleaved
(w1, w2, w1, w2, ...) and the median of each is reported, so a burst of noise hits both sides.
Capture is measured with warm browsers (launch excluded); the end-to-end line times a whole
`renderd render` of the composition, the figure to hold against another tool's wall clock.
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

from renderd.composition import load_composition
from renderd.engine import CaptureSettings, Engine, EngineOptions
from renderd.frames import FrameRange

ROOT = Path(__file__).resolve().parent.parent
DEFAULT_COMPOSITIONS = (
    ROOT.parent / "shared" / "bench" / "gsap-cards",
    ROOT / "examples" / "hyperframes-gsap",
)


async def capture_ms_per_frame(comp_dir: Path, workers: int, frames: int, fmt: str, settle: int) -> float:
    comp = load_composition(comp_dir)
    opts = EngineOptions(capture=CaptureSettings(fmt=fmt, settle_frames=settle), workers=workers)
    with tempfile.TemporaryDirectory(prefix="renderd-bench-") as tmp:
        async with Engine(comp, opts) as engine:
            info = await engine.probe()
            await engine.warm_up(workers)
            n = min(frames, info.total_frames)
            # Start mid-composition, where the benchmark has the most layers on screen.
            start = max(0, min(info.total_frames - n, info.total_frames // 4))
            t0 = time.perf_counter()
            span = FrameRange(start, start + n)
            await engine.capture_chunk(span, Path(tmp), workers, on_frame=lambda _i: None)
            return (time.perf_counter() - t0) * 1000 / n


def end_to_end_s(comp_dir: Path, workers: str) -> float:
    with tempfile.TemporaryDirectory(prefix="renderd-bench-") as tmp:
        t0 = time.perf_counter()
        subprocess.run(
            [str(Path(sys.executable).with_name("renderd")), "render", str(comp_dir), "-o", f"{tmp}/out.mp4",
             "--workers", workers],
            check=True, capture_output=True,
        )  # fmt: skip
        return time.perf_counter() - t0


def main() -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument(
        "composition", nargs="?", type=Path, help="default: shared/bench/gsap-cards if present"
    )
    parser.add_argument("--frames", type=int, default=90, help="frames captured per measurement")
    parser.add_argument("--rounds", type=int, default=3, help="interleaved rounds per worker count")
    parser.add_argument("--workers", default="1,2", help="worker counts to compare, e.g. 1,2,3")
    parser.add_argument("--format", default="jpeg", choices=("jpeg", "png"))
    parser.add_argument("--settle", type=int, default=CaptureSettings().settle_frames)
    parser.add_argument("--end-to-end", action="store_true", help="also time a whole `renderd render`")
    args = parser.parse_args()
    comp = args.composition or next((p for p in DEFAULT_COMPOSITIONS if p.exists()), None)
    if comp is None:
        print("bench: no composition found; pass one", file=sys.stderr)
        return 2
    counts = [int(w) for w in args.workers.split(",")]
    print(f"bench: {comp} - {args.frames} frames x {args.rounds} rounds, {args.format}, settle {args.settle}")
    samples: dict[int, list[float]] = {w: [] for w in counts}
    for r in range(args.rounds):
        for w in counts:
            ms = asyncio.run(capture_ms_per_frame(comp, w, args.frames, args.format, args.settle))
            samples[w].append(ms)
            print(f"  round {r + 1}: workers {w}: {ms:7.1f} ms/frame", flush=True)
    med = {w: statistics.median(v) for w, v in samples.items()}
    base = med[counts[0]]
    print("capture (warm browsers, median):")
    for w in counts:
        print(f"  workers {w}: {med[w]:7.1f} ms/frame  speed-up vs {counts[0]}: {base / med[w]:.2f}x")
    if args.end_to_end:
        wall = {w: end_to_end_s(comp, w) for w in ("1", "auto")}
        print("end to end (`renderd render`, incl. browser start, encode, concat):")
        for w, s in wall.items():
            print(f"  workers {w}: {s:6.1f} s")
    if shutil.which("nproc"):
        print(f"cores: {subprocess.run(['nproc'], capture_output=True, text=True).stdout.strip()}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
