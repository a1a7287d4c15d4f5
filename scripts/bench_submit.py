"""Time `renderd submit` of an unchanged composition against a daemon with one local host.

Usage: scripts/bench submit [--rounds N] [COMPOSITION]

A daemon is started on a temp socket with a local host. The first submit describes the
composition on a local agent (a browser load); every later submit of the same, unchanged
composition is answered from the describe cache. After the first submit the host is drained,
so the queued jobs do not render and only submission is measured. Each whole command is timed
from process start to exit, as a user types it. Printed side by side:

  first     the first submit (agent describe)
  submit    p50/p90 of the next N `renderd submit` commands (cache hit: tree digest by stat, no agent)
  pass      p50/p90 of `python -c pass` with the same interpreter: the floor of any Python command
  version   p50/p90 of `renderd --version`: Python start plus the CLI's imports
  socket    p50/p90 of the same submit request sent in-process over the control socket (no CLI start)

The three commands run round-robin within each round, so a load spike on a shared machine
hits all of them alike; their ratios to `pass` are printed too. The socket line is the
daemon's share.
"""

from __future__ import annotations

import argparse
import json
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "tests"))
sys.path.insert(0, str(ROOT / "scripts"))

from bench_common import default_composition  # noqa: E402
from conftest import renderd_cmd  # noqa: E402
from daemonctl import Daemon  # noqa: E402

from renderd.coordinator.client import Client  # noqa: E402


def _timed(argv: list[str]) -> tuple[float, subprocess.CompletedProcess[str]]:
    t0 = time.perf_counter()
    r = subprocess.run(argv, capture_output=True, text=True, timeout=300)
    return time.perf_counter() - t0, r


def _pct(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(q * (len(ordered) - 1)))]


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rounds", type=int, default=20)
    parser.add_argument("composition", nargs="?", type=Path, default=None)
    args = parser.parse_args()
    comp = args.composition or default_composition()
    if comp is None:
        print("no composition given and no default found", file=sys.stderr)
        return 2
    root = Path(tempfile.mkdtemp(prefix="rd-bs-", dir="/tmp"))
    root.chmod(0o755)
    d = Daemon(root, slots=1)
    d.start()
    try:

        def submit(i: int) -> float:
            elapsed, r = _timed(
                renderd_cmd("submit", comp.resolve(), "-o", root / f"out{i}.mp4", "--socket", d.socket, "--json")
            )
            if r.returncode != 0:
                raise SystemExit(f"submit failed: {r.stderr.strip()}")
            return elapsed

        first = submit(0)
        d.ctl("drain", "local")
        job = json.loads(d.ctl("list", "--json").stdout)["jobs"][0]["id"]
        d.ctl("cancel", job)
        floor: list[float] = []
        version: list[float] = []
        cached: list[float] = []
        for i in range(args.rounds):
            floor.append(_timed([sys.executable, "-c", "pass"])[0])
            version.append(_timed(renderd_cmd("--version"))[0])
            cached.append(submit(i + 1))
        socket = []
        for i in range(args.rounds):
            t0 = time.perf_counter()
            with Client(d.socket) as c:
                reply = c.request("submit", composition=str(comp.resolve()), output=str(root / f"s{i}.mp4"))
            socket.append(time.perf_counter() - t0)
            if not reply.get("ok"):
                raise SystemExit(f"submit failed: {reply}")
    finally:
        d.stop()
        shutil.rmtree(root, ignore_errors=True)
    floor_p50 = statistics.median(floor)

    def line(name: str, values: list[float]) -> str:
        p50 = statistics.median(values)
        return (
            f"{name:34s} p50 {p50 * 1000:5.0f} ms   p90 {_pct(values, 0.9) * 1000:5.0f} ms"
            f"   {p50 / floor_p50:5.1f}x python -c pass"
        )

    print(f"composition: {comp}")
    print(f"first submit (agent describe):     {first * 1000:7.0f} ms")
    print(line(f"renderd submit, cached x{len(cached)}:", cached))
    print(line("python -c pass (floor):", floor))
    print(line("renderd --version:", version))
    print(line("same submit, in-process socket:", socket))
    print(f"first / cached submit p50: {first / statistics.median(cached):.1f}x")
    return 0


if __name__ == "__main__":
    sys.exit(main())
