"""Measure renderd's capture speed with 1 and 2 workers (and more) in one run, and their ratio.

Compare within one run only: the machine is shared and noisy. Runs are interleaved
(w1, w2, w1, w2, ...) and the median of each is reported, so a burst of noise hits both sides.
Capture is measured with warm browsers (launch excluded); the end-to-end line times a whole
`renderd render` of the composition, the figure to hold against another tool's wall clock.
With --peer, the HyperFrames CLI (scripts/peer-hyperframes, installed first, install not timed)
renders the same composition end to end, interleaved with `renderd render` at the same worker
counts, and the side-by-side wall clocks and their ratio are printed.
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

from bench_common import PEER, count_frames, default_composition, peer_install

from renderd.composition import load_composition
from renderd.engine import CaptureSettings, Engine, EngineOptions
from renderd.frames import FrameRange

ROOT = Path(__file__).resolve().parent.parent
PEER_TIMEOUT_S = 1800


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


def renderd_cmd(comp_dir: Path, out: Path, workers: str) -> list[str]:
    exe = Path(sys.executable).with_name("renderd")
    return [str(exe), "render", str(comp_dir), "-o", str(out), "--workers", workers]


def end_to_end_s(comp_dir: Path, workers: str) -> float:
    with tempfile.TemporaryDirectory(prefix="renderd-bench-") as tmp:
        t0 = time.perf_counter()
        subprocess.run(renderd_cmd(comp_dir, Path(tmp, "out.mp4"), workers), check=True, capture_output=True)
        return time.perf_counter() - t0


def timed_render(cmd: list[str], out: Path) -> tuple[float, int]:
    """Run one whole render; return (wall seconds, frames in the output). Raises RuntimeError."""
    t0 = time.perf_counter()
    try:
        r = subprocess.run(cmd, capture_output=True, text=True, timeout=PEER_TIMEOUT_S)
    except (OSError, subprocess.TimeoutExpired) as exc:
        raise RuntimeError(str(exc)) from exc
    wall = time.perf_counter() - t0
    if r.returncode != 0:
        tail = (r.stderr.strip() or r.stdout.strip() or "no output").splitlines()[-1]
        raise RuntimeError(f"exit {r.returncode}: {tail}")
    return wall, count_frames(out)


def peer_side_by_side(comp_dir: Path, counts: list[int], rounds: int) -> None:
    """Time `renderd render` and the HyperFrames CLI end to end, interleaved, and print the ratio."""
    version = peer_install(PEER_TIMEOUT_S)  # before any timing: install time is not measured
    if version is None:
        return
    print(f"end to end vs HyperFrames ({version}; wall clock incl. browser start, encode, mux):", flush=True)
    tools = ("renderd", "hyperframes")
    samples: dict[tuple[str, int], list[float]] = {(t, w): [] for t in tools for w in counts}
    runs = [
        (r, w, tool)
        for r in range(rounds)
        for w in counts
        # Alternate which tool goes first, so neither always runs right after the other's load.
        for tool in (tools if r % 2 == 0 else tools[::-1])
    ]
    with tempfile.TemporaryDirectory(prefix="renderd-bench-peer-") as tmp:
        for r, w, tool in runs:
            out = Path(tmp, f"{tool}-w{w}-r{r}.mp4")
            if tool == "renderd":
                cmd = renderd_cmd(comp_dir, out, str(w))
            else:
                cmd = [str(PEER), "render", str(comp_dir), "-o", str(out), "--workers", str(w)]
            try:
                wall, frames = timed_render(cmd, out)
            except RuntimeError as exc:
                print(f"peer: stopped - {tool} render with {w} workers failed: {exc}")
                break
            out.unlink(missing_ok=True)
            samples[tool, w].append(wall)
            print(f"  round {r + 1}: workers {w}: {tool:<11} {wall:6.1f} s  {frames} frames", flush=True)
    done = [w for w in counts if samples["renderd", w] and samples["hyperframes", w]]
    if not done:
        print("peer: no complete measurement")
        return
    print("end to end (median of the rounds above):")
    print(f"  {'workers':>7}  {'renderd':>8}  {'HyperFrames':>11}  HyperFrames / renderd")
    for w in done:
        ours, theirs = statistics.median(samples["renderd", w]), statistics.median(samples["hyperframes", w])
        print(f"  {w:>7}  {ours:6.1f} s  {theirs:9.1f} s  {theirs / ours:.2f}x")


def main() -> int:
    parser = argparse.ArgumentParser(
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument(
        "composition",
        nargs="?",
        type=Path,
        help="default: shared/bench/gsap-cards if present",
    )
    parser.add_argument("--frames", type=int, default=90, help="frames captured per measurement")
    parser.add_argument("--rounds", type=int, default=3, help="interleaved rounds per worker count")
    parser.add_argument("--workers", default="1,2", help="worker counts to compare, e.g. 1,2,3")
    parser.add_argument("--format", default="jpeg", choices=("jpeg", "png"))
    parser.add_argument("--settle", type=int, default=CaptureSettings().settle_frames)
    parser.add_argument("--end-to-end", action="store_true", help="also time a whole `renderd render`")
    parser.add_argument(
        "--peer",
        action="store_true",
        help="also time the HyperFrames CLI end to end, interleaved with `renderd render`",
    )
    parser.add_argument("--peer-workers", default="1,2", help="worker counts for --peer (default 1,2)")
    args = parser.parse_args()
    comp = args.composition or default_composition()
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
    if args.peer:
        peer_side_by_side(comp, [int(w) for w in args.peer_workers.split(",")], args.rounds)
    if shutil.which("nproc"):
        print(f"cores: {subprocess.run(['nproc'], capture_output=True, text=True).stdout.strip()}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
