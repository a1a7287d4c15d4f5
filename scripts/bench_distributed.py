"""Measure the overhead of the distributed path against a local render, on one machine.

Both sides use the same total workers: the local render runs `renderd render --workers W`; the
distributed one runs a real daemon fanning chunks over real SSH to W throwaway loopback hosts
(scripts/testhosts) with one worker each. Runs are interleaved and medians compared, so machine
noise hits both sides. Overhead = distributed wall / local wall - 1 (target: <= 10%).

The distributed side runs twice per round, from two daemons over the same hosts: with warm
agents (the default: one serving agent per slot for all of a job's chunks on a host) and with
``warm_agents = false`` (one agent per chunk, the path before warm agents), so the two are
compared side by side in one run. A third daemon keeps its agents between jobs
(``spare_agents = 1``): a short untimed job first leaves one spare agent per host, so each of its
timed jobs starts on agents already running (their browsers are fresh for each job). Every
output's frame count is checked with ffprobe.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "tests"))

from bench_common import default_composition  # noqa: E402
from sshhosts import TestHosts  # noqa: E402

RENDERD = str(Path(sys.executable).with_name("renderd"))


def _range_args(chunks: int | None, frames: str | None) -> list[str]:
    return [*(["--chunks", str(chunks)] if chunks else []), *(["--frames", frames] if frames else [])]


CPUACCT = Path("/sys/fs/cgroup/cpuacct")


class CpuMeter:
    """CPU seconds of this process and everything it starts (a cgroup v1 ``cpuacct`` of its own).

    The daemons, the test hosts' sshd, the agents and their browsers all descend from this
    process, so they land in the group too; as the sides run one at a time, the group's usage
    across one run is that run's CPU, whatever else the machine is doing. None without cgroup
    v1 cpuacct (or without permission).
    """

    def __init__(self) -> None:
        self.group: Path | None = CPUACCT / f"rdbench-{os.getpid()}"
        try:
            self.group.mkdir()
            (self.group / "cgroup.procs").write_text(str(os.getpid()))
        except OSError:
            self.group = None

    def seconds(self) -> float | None:
        if self.group is None:
            return None
        return int((self.group / "cpuacct.usage").read_text()) / 1e9

    def close(self) -> None:
        if self.group is not None:
            with contextlib.suppress(OSError):
                (CPUACCT / "cgroup.procs").write_text(str(os.getpid()))
                self.group.rmdir()


def _timed(argv: list[str], meter: CpuMeter, settle: Callable[[], None] = lambda: None) -> tuple[float, float | None]:
    """Run ``argv``; return (wall seconds, CPU seconds used by everything this bench started).

    ``settle`` waits for work the run leaves behind (agents stopping after the job) before the
    CPU is read, so it counts for this run and not the next.
    """
    cpu0 = meter.seconds()
    t0 = time.perf_counter()
    subprocess.run(argv, check=True, capture_output=True)
    wall = time.perf_counter() - t0
    settle()
    cpu1 = meter.seconds()
    return wall, None if cpu0 is None or cpu1 is None else cpu1 - cpu0


def local_run(
    comp: Path, out: Path, workers: int, chunks: int | None, frames: str | None, meter: CpuMeter
) -> tuple[float, float | None]:
    argv = [RENDERD, "render", str(comp), "-o", str(out), "--workers", str(workers)]
    return _timed(argv + _range_args(chunks, frames), meter)


def distributed_run(
    socket: Path,
    comp: Path,
    out: Path,
    chunks: int | None,
    frames: str | None,
    meter: CpuMeter,
    hosts: TestHosts,
    *,
    spares: bool = False,
) -> tuple[float, float | None]:
    argv = [RENDERD, "submit", str(comp), "-o", str(out), "--wait", "--socket", str(socket)]

    def agents_gone() -> None:
        deadline = time.monotonic() + 30
        while any(hosts.session_commands(n) for n in hosts.names) and time.monotonic() < deadline:
            time.sleep(0.05)

    # Spare agents stay (idle, without CPU): there is nothing to wait for.
    return _timed(argv + _range_args(chunks, frames), meter, (lambda: None) if spares else agents_gone)


def _num(v: float | None) -> str:
    return "n/a" if v is None else f"{v:.1f}"


def frame_count(path: Path) -> int:
    out = subprocess.run(
        ["ffprobe", "-v", "error", "-count_packets", "-select_streams", "v:0", "-show_entries",
         "stream=nb_read_packets", "-of", "csv=p=0", str(path)],
        check=True, capture_output=True, text=True,
    )  # fmt: skip
    return int(out.stdout.strip())


def start_daemon(tmp: Path, name: str, inventory: Path, extra: str = "") -> tuple[subprocess.Popen[bytes], Path]:
    """Start a daemon named ``name`` over ``inventory``; ``extra``: more TOML tables. Return it and its socket."""
    config = tmp / f"{name}.toml"
    socket = tmp / f"{name}.sock"
    config.write_text(
        f'[daemon]\nsocket = "{socket}"\nstate_dir = "{tmp}/state-{name}"\nhosts_file = "{inventory}"\n'
        f'watchdog = false\nlog_level = "info"\n{extra}'
    )
    with (tmp / f"{name}.log").open("wb") as log:
        daemon = subprocess.Popen([RENDERD, "daemon", "--config", str(config)], stderr=log)
    for _ in range(100):
        if socket.exists():
            break
        time.sleep(0.1)
    return daemon, socket


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("composition", nargs="?", type=Path)
    parser.add_argument("--workers", type=int, default=2, help="total workers on each side (= test hosts)")
    parser.add_argument("--chunks", type=int, help="chunks on both sides (default: each side's own policy)")
    parser.add_argument("--frames", help="absolute range A:B (default: the whole composition)")
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--timings", action="store_true", help="print where each distributed chunk's time went")
    args = parser.parse_args()
    comp = args.composition or default_composition()
    if comp is None:
        print("bench: no composition found; pass one", file=sys.stderr)
        return 2
    tmp = Path(tempfile.mkdtemp(prefix="rdb-", dir="/tmp"))
    os.chmod(tmp, 0o755)
    daemons: list[subprocess.Popen[bytes]] = []
    hosts = None
    meter = CpuMeter()
    try:
        hosts = TestHosts(tmp / "ssh", args.workers, agent_command=[sys.executable, "-m", "renderd", "agent"])
        cold_inventory = hosts.write_inventory(
            tmp / "cold-hosts.toml", overrides={n: {"warm_agents": False} for n in hosts.names}
        )
        spare_inventory = hosts.write_inventory(
            tmp / "spare-hosts.toml", overrides={n: {"spare_agents": 1} for n in hosts.names}
        )
        warm, warm_socket = start_daemon(tmp, "warm", hosts.inventory)
        cold, cold_socket = start_daemon(tmp, "cold", cold_inventory)
        spare, spare_socket = start_daemon(tmp, "spare", spare_inventory)
        daemons += [warm, cold, spare]
        # Leave one spare agent per host (untimed): a chunk for each host.
        first = ["--chunks", str(args.workers), "--frames", f"0:{10 * args.workers}"]
        subprocess.run([RENDERD, "submit", str(comp), "-o", str(tmp / "first.mp4"), "--wait", "--socket",
                        str(spare_socket), *first], check=True, capture_output=True)  # fmt: skip
        chunks = args.chunks or "default"
        print(f"bench: {comp}, {args.workers} workers, chunks {chunks}, frames {args.frames or 'all'}")
        sides: dict[str, list[float]] = {"local": [], "cold": [], "warm": [], "spare": []}
        cpu: dict[str, list[float | None]] = {"local": [], "cold": [], "warm": [], "spare": []}
        for r in range(args.rounds):
            outs = {side: tmp / f"{side}-{r}.mp4" for side in sides}
            runs = {
                "local": lambda out: local_run(comp, out, args.workers, args.chunks, args.frames, meter),
                "cold": lambda out: distributed_run(cold_socket, comp, out, args.chunks, args.frames, meter, hosts),
                "warm": lambda out: distributed_run(warm_socket, comp, out, args.chunks, args.frames, meter, hosts),
                "spare": lambda out: distributed_run(
                    spare_socket, comp, out, args.chunks, args.frames, meter, hosts, spares=True
                ),
            }
            # The order rotates every round, so a burst of load on the machine does not always
            # hit the same side.
            order = list(runs)[r % 4 :] + list(runs)[: r % 4]
            for side in order:
                wall, used = runs[side](outs[side])
                sides[side].append(wall)
                cpu[side].append(used)
            counts = {side: frame_count(path) for side, path in outs.items()}
            if len(set(counts.values())) != 1:
                print(f"bench: error: outputs differ in frame count: {counts}", file=sys.stderr)
                return 1
            print(
                f"  round {r + 1}: local {sides['local'][-1]:6.1f} s   agent per chunk {sides['cold'][-1]:6.1f} s"
                f"   warm agents {sides['warm'][-1]:6.1f} s   spare agents {sides['spare'][-1]:6.1f} s   "
                f"({counts['local']} frames each; CPU s: {_num(cpu['local'][-1])} / {_num(cpu['cold'][-1])} / "
                f"{_num(cpu['warm'][-1])} / {_num(cpu['spare'][-1])})",
                flush=True,
            )
        lm, cm, wm, sm = (statistics.median(sides[k]) for k in ("local", "cold", "warm", "spare"))
        lb, cb, wb, sb = (min(sides[k]) for k in ("local", "cold", "warm", "spare"))
        n = args.workers
        print("medians:")
        print(f"local (renderd render --workers {n}):              {lm:6.1f} s")
        print(f"distributed, agent per chunk ({n} hosts x 1 worker): {cm:6.1f} s  {100 * (cm / lm - 1):+.1f}%")
        print(f"distributed, warm agents ({n} hosts x 1 worker):     {wm:6.1f} s  {100 * (wm / lm - 1):+.1f}%")
        print(f"distributed, spare agents ({n} hosts x 1 worker):    {sm:6.1f} s  {100 * (sm / lm - 1):+.1f}%")
        print(
            f"best of each: local {lb:.1f} s, agent per chunk {cb:.1f} s ({100 * (cb / lb - 1):+.1f}%), "
            f"warm agents {wb:.1f} s ({100 * (wb / lb - 1):+.1f}%), "
            f"spare agents {sb:.1f} s ({100 * (sb / lb - 1):+.1f}%)"
        )
        if all(v is not None for k in cpu for v in cpu[k]):
            sides_cpu = ("local", "cold", "warm", "spare")
            lc, cc, wc, sc = (statistics.median([v for v in cpu[k] if v is not None]) for k in sides_cpu)
            print(
                f"CPU seconds, medians (all processes of each side; load on the machine barely moves them): "
                f"local {lc:.1f}, agent per chunk {cc:.1f} ({100 * (cc / lc - 1):+.1f}%), "
                f"warm agents {wc:.1f} ({100 * (wc / lc - 1):+.1f}%), "
                f"spare agents {sc:.1f} ({100 * (sc / lc - 1):+.1f}%)"
            )
        print("overhead target: <= 10%")
        if args.timings:
            # Where each chunk's time went (the daemon logs it per verified chunk).
            for name in ("cold", "warm", "spare"):
                lines = (tmp / f"{name}.log").read_text(errors="replace").splitlines()
                print(f"chunk timings, {name}:")
                for line in lines:
                    if "timing:" in line:
                        print("  " + line[line.find("[host=") :].replace("timing: ", ""))
        for socket in (warm_socket, cold_socket, spare_socket):
            listing = subprocess.run(
                [RENDERD, "list", "--json", "--socket", str(socket)], capture_output=True, text=True
            )
            states = [j["state"] for j in json.loads(listing.stdout)["jobs"]] if listing.returncode == 0 else []
            if any(s != "done" for s in states):
                print(f"bench: warning: distributed jobs ended {states}", file=sys.stderr)
        return 0
    finally:
        for daemon in daemons:
            daemon.terminate()
            daemon.wait(timeout=60)
        if hosts is not None:
            hosts.close()
        meter.close()
        shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main())
