"""The planner's chunk size from the capture probe against fixed chunk sizes, over loopback SSH hosts.

Usage: scripts/bench chunks [--hosts N] [--rounds N] [--sizes 30,60,150] [--frames A:B] [COMP]

One daemon (``[scheduling] calibrate_min_frames = 0``: every job is measured when described)
fans jobs over N throwaway loopback hosts (scripts/testhosts), 1 slot and 1 worker each, so only
the chunk size changes between the sides: the probe's plan (no flag) and ``--frames-per-chunk S``
for each size given. Submissions are interleaved round by round (the order rotates) and their
wall times compared by median; the describes are made untimed first (each kind once: the plan
given by the submitter asks for no probe), so every timed job starts from a cached describe.
Every output's frame count is checked with ffprobe. Prints the probe's chunk size and workers per
host, then each side's median and which was best.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "tests"))

from bench_common import default_composition  # noqa: E402
from bench_distributed import frame_count, start_daemon  # noqa: E402
from sshhosts import TestHosts  # noqa: E402

from renderd.cli.control import calibration_text  # noqa: E402

RENDERD = str(Path(sys.executable).with_name("renderd"))
PROBE = "probe"


def submit(socket: Path, comp: Path, out: Path, extra: list[str]) -> tuple[float, dict[str, Any]]:
    """Submit and follow the job to its end; return the wall seconds and the job's status."""
    where = ["--socket", str(socket)]
    t0 = time.perf_counter()
    r = subprocess.run(
        [RENDERD, "submit", str(comp), "-o", str(out), "--json", *where, *extra], capture_output=True, text=True
    )
    if r.returncode != 0:
        raise RuntimeError(f"submit {' '.join(extra)} failed: {r.stderr.strip()[-500:]}")
    job = json.loads(r.stdout)["job"]["id"]
    subprocess.run([RENDERD, "watch", job, *where], capture_output=True, check=True)
    wall = time.perf_counter() - t0
    status = subprocess.run([RENDERD, "status", job, "--json", *where], capture_output=True, text=True, check=True)
    result: dict[str, Any] = json.loads(status.stdout)
    if result["job"]["state"] != "done":
        raise RuntimeError(f"job {job} ended {result['job']['state']}: {result['job'].get('error')}")
    return wall, result


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("composition", nargs="?", type=Path)
    parser.add_argument("--hosts", type=int, default=2, help="loopback test hosts (1 slot, 1 worker each)")
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--sizes", default="30,60,150", help="fixed chunk sizes to compare (frames)")
    parser.add_argument("--frames", help="absolute range A:B (default: the whole composition)")
    args = parser.parse_args()
    comp = args.composition or default_composition()
    if comp is None:
        print("bench chunks: no composition found; pass one", file=sys.stderr)
        return 2
    try:
        sizes = [int(s) for s in args.sizes.split(",")]
    except ValueError:
        sizes = []
    if not sizes or min(sizes) < 1 or args.hosts < 1 or args.rounds < 1:
        print("bench chunks: --sizes must list frame counts >= 1; --hosts and --rounds must be >= 1", file=sys.stderr)
        return 2
    span = ["--frames", args.frames] if args.frames else []
    sides: dict[str, list[str]] = {PROBE: [], **{str(s): ["--frames-per-chunk", str(s)] for s in sizes}}
    tmp = Path(tempfile.mkdtemp(prefix="rdc-", dir="/tmp"))
    os.chmod(tmp, 0o755)
    hosts = daemon = None
    try:
        hosts = TestHosts(tmp / "ssh", args.hosts, agent_command=[sys.executable, "-m", "renderd", "agent"])
        # Every job is measured when it is described.
        daemon, socket = start_daemon(tmp, "chunks", hosts.inventory, "[scheduling]\ncalibrate_min_frames = 0\n")
        # Untimed: one describe of each kind (measured, and not), cached for the timed jobs.
        _, first = submit(socket, comp, tmp / "first-probe.mp4", [*span])
        submit(socket, comp, tmp / "first-fixed.mp4", [*span, "--frames-per-chunk", str(sizes[0])])
        cal = first["job"]["params"].get("calibration")
        if not cal:
            print("bench chunks: the job was not measured (see the daemon log)", file=sys.stderr)
            return 1
        print(f"bench chunks: {comp}, {args.hosts} hosts x 1 slot x 1 worker, frames {args.frames or 'all'}")
        print(f"{calibration_text(cal)}; {len(first['chunks'])} chunks planned", flush=True)
        walls: dict[str, list[float]] = {side: [] for side in sides}
        chunks: dict[str, int] = {}
        names = list(sides)
        for r in range(args.rounds):
            order = names[r % len(names) :] + names[: r % len(names)]
            for side in order:
                out = tmp / f"{side}-{r}.mp4"
                wall, status = submit(socket, comp, out, [*span, *sides[side]])
                walls[side].append(wall)
                chunks[side] = len(status["chunks"])
                frames = frame_count(out)
                print(f"  round {r + 1}: {side:>7}: {wall:6.1f} s, {chunks[side]} chunks, {frames} frames", flush=True)
        medians = {side: statistics.median(v) for side, v in walls.items()}
        best = min(medians, key=lambda s: medians[s])
        print("medians:")
        for side, m in medians.items():
            label = "probe's plan" if side == PROBE else f"{side} frames a chunk"
            print(f"  {label:22s} {m:6.1f} s  {chunks[side]:3d} chunks  {100 * (m / medians[best] - 1):+.1f}% vs best")
        print(f"best: {best}; the probe's plan is {100 * (medians[PROBE] / medians[best] - 1):+.1f}% from it")
        return 0
    finally:
        if daemon is not None:
            daemon.terminate()
            daemon.wait(timeout=60)
        if hosts is not None:
            hosts.close()
        shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main())
