"""Measure the overhead of the distributed path against a local render, on one machine.

Both sides use the same total workers: the local render runs `renderd render --workers W`; the
distributed one runs a real daemon fanning chunks over real SSH to W throwaway loopback hosts
(scripts/testhosts) with one worker each. Runs are interleaved and medians compared, so machine
noise hits both sides. Overhead = distributed wall / local wall - 1 (target: <= 10%).
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

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "tests"))

from sshhosts import TestHosts  # noqa: E402

RENDERD = str(Path(sys.executable).with_name("renderd"))
DEFAULT_COMPOSITIONS = (ROOT.parent / "shared" / "bench" / "gsap-cards", ROOT / "examples" / "hyperframes-gsap")


def _range_args(chunks: int | None, frames: str | None) -> list[str]:
    return [*(["--chunks", str(chunks)] if chunks else []), *(["--frames", frames] if frames else [])]


def _timed(argv: list[str]) -> float:
    t0 = time.perf_counter()
    subprocess.run(argv, check=True, capture_output=True)
    return time.perf_counter() - t0


def local_wall(comp: Path, out: Path, workers: int, chunks: int | None, frames: str | None) -> float:
    argv = [RENDERD, "render", str(comp), "-o", str(out), "--workers", str(workers)]
    return _timed(argv + _range_args(chunks, frames))


def distributed_wall(socket: Path, comp: Path, out: Path, chunks: int | None, frames: str | None) -> float:
    argv = [RENDERD, "submit", str(comp), "-o", str(out), "--wait", "--socket", str(socket)]
    return _timed(argv + _range_args(chunks, frames))


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("composition", nargs="?", type=Path)
    parser.add_argument("--workers", type=int, default=2, help="total workers on each side (= test hosts)")
    parser.add_argument("--chunks", type=int, help="chunks on both sides (default: each side's own policy)")
    parser.add_argument("--frames", help="absolute range A:B (default: the whole composition)")
    parser.add_argument("--rounds", type=int, default=2)
    args = parser.parse_args()
    comp = args.composition or next((p for p in DEFAULT_COMPOSITIONS if p.exists()), None)
    if comp is None:
        print("bench: no composition found; pass one", file=sys.stderr)
        return 2
    tmp = Path(tempfile.mkdtemp(prefix="rdb-", dir="/tmp"))
    os.chmod(tmp, 0o755)
    daemon = None
    hosts = None
    try:
        hosts = TestHosts(tmp / "ssh", args.workers, agent_command=[sys.executable, "-m", "renderd", "agent"])
        config = tmp / "renderd.toml"
        config.write_text(
            f'[daemon]\nsocket = "{tmp}/renderd.sock"\nstate_dir = "{tmp}/state"\nhosts_file = "{hosts.inventory}"\n'
            "watchdog = false\n"
        )
        daemon = subprocess.Popen([RENDERD, "daemon", "--config", str(config)], stderr=subprocess.DEVNULL)
        for _ in range(100):
            if (tmp / "renderd.sock").exists():
                break
            time.sleep(0.1)
        chunks = args.chunks or "default"
        print(f"bench: {comp}, {args.workers} workers, chunks {chunks}, frames {args.frames or 'all'}")
        local: list[float] = []
        dist: list[float] = []
        for r in range(args.rounds):
            local.append(local_wall(comp, tmp / f"local-{r}.mp4", args.workers, args.chunks, args.frames))
            dist.append(distributed_wall(tmp / "renderd.sock", comp, tmp / f"dist-{r}.mp4", args.chunks, args.frames))
            print(f"  round {r + 1}: local {local[-1]:6.1f} s   distributed {dist[-1]:6.1f} s", flush=True)
        lm, dm = statistics.median(local), statistics.median(dist)
        print(f"local (renderd render --workers {args.workers}): {lm:6.1f} s")
        print(f"distributed ({args.workers} SSH hosts x 1 worker):  {dm:6.1f} s")
        print(f"overhead of the distributed path: {100 * (dm / lm - 1):+.1f}% (target <= 10%)")
        listing = subprocess.run(
            [RENDERD, "list", "--json", "--socket", str(tmp / "renderd.sock")], capture_output=True, text=True
        )
        states = [j["state"] for j in json.loads(listing.stdout)["jobs"]] if listing.returncode == 0 else []
        if any(s != "done" for s in states):
            print(f"bench: warning: distributed jobs ended {states}", file=sys.stderr)
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
