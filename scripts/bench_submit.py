"""Time `renderd submit` of an unchanged composition against a daemon with one local host.

Usage: scripts/bench submit [--rounds N] [COMPOSITION]

A daemon is started on a temp socket with a local host. The first submit describes the
composition on a local agent (a browser load); every later submit of the same, unchanged
composition is answered from the describe cache. After the first submit the host is drained,
so the queued jobs do not render and only submission is measured. Printed side by side:

  first     the first submit (agent describe)
  cached    p50/p90 of the next N submits (cache hit: tree digest by stat, no agent)
  socket    p50/p90 of the same submit request sent in-process over the control socket (no CLI start)
  cli       p50 of `renderd --version`: what starting the CLI alone costs

On a loaded machine the CLI's Python start dominates; the socket line is the daemon's share.
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
        cached = [submit(i + 1) for i in range(args.rounds)]
        socket = []
        for i in range(args.rounds):
            t0 = time.perf_counter()
            with Client(d.socket) as c:
                reply = c.request("submit", composition=str(comp.resolve()), output=str(root / f"s{i}.mp4"))
            socket.append(time.perf_counter() - t0)
            if not reply.get("ok"):
                raise SystemExit(f"submit failed: {reply}")
        cli = [_timed(renderd_cmd("--version"))[0] for _ in range(min(args.rounds, 10))]
    finally:
        d.stop()
        shutil.rmtree(root, ignore_errors=True)
    p50, p90 = statistics.median(cached), _pct(cached, 0.9)
    print(f"composition: {comp}")
    print(f"first submit (agent describe): {first * 1000:7.0f} ms")
    print(f"cached submits x{len(cached)}:        p50 {p50 * 1000:5.0f} ms   p90 {p90 * 1000:5.0f} ms")
    print(
        f"same, in-process socket:      p50 {statistics.median(socket) * 1000:5.0f} ms"
        f"   p90 {_pct(socket, 0.9) * 1000:5.0f} ms"
    )
    print(f"CLI start alone (--version):   p50 {statistics.median(cli) * 1000:5.0f} ms")
    print(f"first / cached p50: {first / p50:.1f}x")
    return 0


if __name__ == "__main__":
    sys.exit(main())
