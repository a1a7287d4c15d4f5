"""Drive the real Scheduler and Store with simulated hosts, on a virtual clock.

Everything of the coordinator is the shipped code: the scheduling loop, claims, speculation,
host health and quarantine, and the SQLite store (a real file). What is simulated: the hosts (a
fake transport whose chunk "renders" for frames / speed seconds, and whose dead hosts raise
HostUnavailable), the check of a fetched chunk (ffprobe and sha256 of a file that is not there;
the done event's frame count is taken) and a job's assembly (ffmpeg concat of files that are not
there). Time is virtual: an event loop whose clock jumps to the next timer whenever nothing is
runnable and no store call is in flight, so an hour of rendering takes the coordinator's own CPU
time only, and a store call takes no virtual time. The Store gets the same clock.

Used by `scripts/bench sim` (decisions/s, CPU, RSS, store size, makespan vs ideal and vs a
static split) and by tests/test_simulate.py (a small run, asserted).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import logging
import random
import resource
import selectors
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from renderd.assignment import Assignment
from renderd.config import DaemonConfig, HostConfig, Inventory, SchedulingPolicy, Timeouts
from renderd.coordinator import claims as claims_mod
from renderd.coordinator import hosts as hosts_mod
from renderd.coordinator import scheduler as scheduler_mod
from renderd.coordinator.models import JobState, NewJob
from renderd.coordinator.scheduler import Scheduler
from renderd.coordinator.store import Store
from renderd.describe import DescribeRequest
from renderd.errors import HostUnavailable, RenderdError

EPOCH = 1_800_000_000.0  # the store's wall clock at virtual time 0
PARAMS = {"fps": "30/1", "width": 1920, "height": 1080, "duration": "10", "format": "jpeg", "workers": 1}
DECISION_EVENTS = (
    "chunk_assigned",
    "chunk_rendering",
    "chunk_fetched",
    "chunk_verified",
    "chunk_failed",
    "chunk_lost",
    "chunk_speculative",
)


# -- virtual time -----------------------------------------------------------------------------


class VirtualTimeLoop(asyncio.SelectorEventLoop):
    """An event loop whose clock jumps to the next timer when nothing else can happen.

    Executor calls (the store's thread, ``asyncio.to_thread``) take no virtual time: while one is
    in flight the loop waits for it in real time without moving its clock, so a host's chunk
    never ends before the store has recorded its start.
    """

    def __init__(self) -> None:
        super().__init__(selectors.DefaultSelector())
        self._now = 0.0
        self._threads = 0
        self.executor_calls = 0  # store calls and asyncio.to_thread hops, all told
        real_select = self._selector.select  # type: ignore[attr-defined]

        def select(timeout: float | None = None) -> list[Any]:
            events = real_select(0)
            if events or timeout == 0:
                return events
            if self._threads or timeout is None:
                # A thread will wake us (call_soon_threadsafe); never advance past its result.
                return real_select(1.0)
            self._now += timeout
            return []

        self._selector.select = select  # type: ignore[attr-defined]

    def time(self) -> float:
        """Return the virtual time."""
        return self._now

    def run_in_executor(self, executor: Any, func: Callable[..., Any], *args: Any) -> asyncio.Future[Any]:
        """Run ``func`` in a thread; the clock stands still until its result is delivered."""
        self._threads += 1
        self.executor_calls += 1
        fut = super().run_in_executor(executor, func, *args)
        fut.add_done_callback(self._thread_done)
        return fut

    def _thread_done(self, _fut: asyncio.Future[Any]) -> None:
        self._threads -= 1


# -- simulated hosts --------------------------------------------------------------------------


@dataclass
class SimHost:
    """A simulated render host: its speed per slot and when (virtual time) it dies, if it does."""

    name: str
    slots: int
    speed: float  # frames per virtual second per slot
    slow: bool = False
    dies_at: float | None = None
    rendered: int = 0  # chunks it finished (verified or not)


class SimTransport:
    """A transport whose agent "renders" a chunk for frames / speed virtual seconds."""

    def __init__(self, host: SimHost) -> None:
        self.host = host
        self.name = host.name

    def _dead(self) -> bool:
        dies_at = self.host.dies_at
        return dies_at is not None and asyncio.get_running_loop().time() >= dies_at

    async def stage_composition(self, job_id: str, composition: Path) -> str:
        """Nothing to copy."""
        if self._dead():
            raise HostUnavailable(f"host {self.name}: connection refused", host=self.name)
        return str(composition)

    def chunk_paths(self, job_id: str, index: int, attempt_id: int, ext: str = "mp4") -> tuple[str, str]:
        """Paths that are never written."""
        return f"/sim/{job_id}/chunk-{index:05d}-a{attempt_id}.{ext}", f"/sim/{job_id}/work"

    async def run_chunk(self, assignment: Assignment, on_event: Any, *, timeout: float) -> dict[str, Any]:
        """Sleep for the chunk's render time; die at the host's time of death."""
        loop = asyncio.get_running_loop()
        if self._dead():
            raise HostUnavailable(f"host {self.name}: connection refused", host=self.name)
        frames = assignment.end - assignment.start
        on_event({"event": "started"})
        took = frames / self.host.speed
        dies_at = self.host.dies_at
        if dies_at is not None and loop.time() + took >= dies_at:
            await asyncio.sleep(dies_at - loop.time())
            raise HostUnavailable(f"host {self.name}: connection lost", host=self.name)
        await asyncio.sleep(took)
        self.host.rendered += 1
        return {"event": "done", "frames": frames, "sha256": f"{assignment.job_id}-{assignment.chunk_index}"}

    async def fetch(self, remote_path: str, local_path: Path) -> None:
        """Nothing to copy."""

    async def cleanup_job(self, job_id: str) -> None:
        """Nothing to remove."""

    async def close(self) -> None:
        """No connection."""

    async def probe(self) -> dict[str, Any]:
        """A dead host is unreachable; a live one would pass (never asked: live hosts are not quarantined)."""
        if self._dead():
            raise HostUnavailable(f"host {self.name}: connection refused", host=self.name)
        raise RenderdError("simulated hosts have no probe facts")

    async def describe(self, request: DescribeRequest, *, timeout: float) -> dict[str, Any]:
        """Not used by the scheduler."""
        raise RenderdError("simulated hosts do not describe")


async def _verify(output: Path, done: dict[str, Any], expected: int) -> int:
    frames = int(done["frames"])
    if frames != expected:
        raise RenderdError(f"chunk {output.name} has {frames} frames, expected {expected}")
    return frames


async def _assemble(job: Any, chunks: Any, work_dir: Path, timeout: float) -> tuple[str, int]:
    return "sim", sum(c.end - c.start for c in chunks)


@contextlib.contextmanager
def simulated(hosts: dict[str, SimHost], speculate: bool) -> Iterator[None]:
    """Swap in the simulated transports, chunk check and assembly (and turn speculation off)."""
    saved = (hosts_mod.make_transport, claims_mod._verify_chunk, scheduler_mod.assemble_output)
    hosts_mod.make_transport = lambda host, config: SimTransport(hosts[host.name])  # type: ignore[assignment,return-value]
    claims_mod._verify_chunk = _verify
    scheduler_mod.assemble_output = _assemble  # type: ignore[assignment]
    try:
        yield
    finally:
        hosts_mod.make_transport, claims_mod._verify_chunk, scheduler_mod.assemble_output = saved  # type: ignore[assignment]


# -- the scenario ------------------------------------------------------------------------------


@dataclass
class Scenario:
    """What to simulate; every draw comes from ``seed``."""

    hosts: int = 1000
    chunks: int = 100_000
    jobs: int = 100
    priorities: int = 3
    fail_fraction: float = 0.02
    slow_fraction: float = 0.05
    slow_factor: float = 10.0
    min_frames: int = 30
    max_frames: int = 120
    min_speed: float = 2.0  # frames per second per slot, before slowness
    max_speed: float = 8.0
    max_slots: int = 2
    speculate: bool = True
    seed: int = 1


@dataclass
class JobPlan:
    """One job: its priority and chunk sizes."""

    priority: int
    frames: list[int]


@dataclass
class Result:
    """What a run measured."""

    scenario: Scenario
    makespan: float
    ideal: float
    ideal_alive: float
    static_split: float
    cpu_s: float
    wall_s: float
    decisions: int
    claims: int
    speculative: int
    lost: int
    rss_mb: float
    store_mb: float
    verified: int
    job_finish: dict[str, float] = field(default_factory=dict)
    job_priority: dict[str, int] = field(default_factory=dict)
    job_chunks: dict[str, int] = field(default_factory=dict)
    verified_per_chunk: dict[tuple[str, int], int] = field(default_factory=dict)
    lost_chunks: int = 0  # chunks whose attempt was lost (its host died)
    store_calls: int = 0  # executor calls of the coordinator while the jobs ran: thread hops (the store's, mostly)
    store_api_calls: int = 0  # Store method calls while the jobs ran (a batch of them is one hop)
    transactions: int = 0  # write transactions the store committed while the jobs ran
    job_claims: dict[str, tuple[float, float]] = field(default_factory=dict)  # first and last claim, virtual s
    rerun_elsewhere: int = 0  # of those, verified on a host where none of its attempts was lost

    @property
    def decisions_per_s(self) -> float:
        """Scheduling decisions (claims + chunk state transitions) per second of coordinator CPU."""
        return self.decisions / max(self.cpu_s, 1e-9)


def make_hosts(sc: Scenario, rng: random.Random) -> list[SimHost]:
    """Hosts of mixed speeds and slots; a fraction slow, a fraction dying (death times set later)."""
    out = []
    order = list(range(sc.hosts))
    rng.shuffle(order)
    n_slow = round(sc.hosts * sc.slow_fraction)
    slow = set(order[:n_slow])
    for i in range(sc.hosts):
        speed = rng.uniform(sc.min_speed, sc.max_speed)
        is_slow = i in slow
        host = SimHost(f"h{i:04d}", rng.randint(1, sc.max_slots), speed / (sc.slow_factor if is_slow else 1), is_slow)
        out.append(host)
    return out


def make_jobs(sc: Scenario, rng: random.Random) -> list[JobPlan]:
    """``sc.chunks`` chunks over ``sc.jobs`` jobs of random priority."""
    per = [sc.chunks // sc.jobs + (1 if j < sc.chunks % sc.jobs else 0) for j in range(sc.jobs)]
    return [
        JobPlan(rng.randrange(sc.priorities), [rng.randint(sc.min_frames, sc.max_frames) for _ in range(n)])
        for n in per
    ]


def static_split_makespan(hosts: list[SimHost], jobs: list[JobPlan]) -> float:
    """Each host gets an equal share of the chunks up front (dealt round-robin), no stealing, no failures."""
    load = [0] * len(hosts)
    k = 0
    for job in jobs:
        for frames in job.frames:
            load[k % len(hosts)] += frames
            k += 1
    return max(frames / (h.speed * h.slots) for h, frames in zip(hosts, load, strict=True))


def rss_mb() -> float:
    """Peak resident set size of this process, in MiB."""
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


async def _run(sc: Scenario, root: Path) -> Result:
    rng = random.Random(sc.seed)
    hosts = make_hosts(sc, rng)
    jobs = make_jobs(sc, rng)
    total_frames = sum(sum(j.frames) for j in jobs)
    capacity = sum(h.speed * h.slots for h in hosts)
    ideal = total_frames / capacity
    n_fail = round(sc.hosts * sc.fail_fraction)
    for h in rng.sample(hosts, n_fail):
        h.dies_at = rng.uniform(0, ideal)  # somewhere in the run, never back
    alive = sum(h.speed * h.slots for h in hosts if h.dies_at is None)
    by_name = {h.name: h for h in hosts}
    loop = asyncio.get_running_loop()
    store = await Store.open(root / "state" / "renderd.db", clock=lambda: EPOCH + loop.time())
    config = DaemonConfig(
        socket=root / "renderd.sock",
        state_dir=root / "state",
        hosts_file=root / "hosts.toml",
        scheduling=SchedulingPolicy(),
        timeouts=Timeouts(chunk=3600, shutdown=5),
        watchdog=False,
    )
    inv = Inventory(
        tuple(HostConfig(h.name, f"sim-{h.name}", slots=h.slots, workers=1, warm_agents=False) for h in hosts),
        root / "hosts.toml",
    )
    job_ids: list[str] = []
    priorities: dict[str, int] = {}
    chunk_count: dict[str, int] = {}
    for n, job in enumerate(jobs):
        spans, start = [], 0
        for frames in job.frames:
            spans.append((start, start + frames))
            start += frames
        spec = NewJob(f"/sim/comp-{n}", str(root / f"out-{n}.mp4"), PARAMS, start, 0, start, 0, job.priority)
        created = await store.create_job(spec, spans)
        job_ids.append(created.id)
        priorities[created.id] = job.priority
        chunk_count[created.id] = len(spans)
    with simulated(by_name, sc.speculate):
        sched = Scheduler(store, config, inv)
        if not sc.speculate:

            async def no_speculation(*_: Any) -> None:
                return None

            sched.speculation.speculate = no_speculation  # type: ignore[method-assign]
        stop = asyncio.Event()
        cpu0, wall0, t0 = time.process_time(), time.perf_counter(), loop.time()
        calls0 = loop.executor_calls if isinstance(loop, VirtualTimeLoop) else 0
        api0, tx0 = store.stats.calls, store.stats.transactions
        run = asyncio.create_task(sched.run(stop))
        finish: dict[str, float] = {}
        pending = set(job_ids)
        while pending:
            await asyncio.sleep(5.0)
            if run.done():
                raise RuntimeError(f"the scheduler loop ended: {run.exception()!r}")
            for job_id in list(pending):
                job = await store.get_job(job_id)
                assert job is not None
                if job.state.finished:
                    if job.state != JobState.DONE:
                        raise RuntimeError(f"job {job_id} ended {job.state.value}: {job.error}")
                    assert job.finished_at is not None
                    finish[job_id] = job.finished_at - EPOCH
                    pending.discard(job_id)
        makespan = max(finish.values()) - t0
        cpu, wall = time.process_time() - cpu0, time.perf_counter() - wall0
        calls = (loop.executor_calls if isinstance(loop, VirtualTimeLoop) else 0) - calls0
        api_calls, transactions = store.stats.calls - api0, store.stats.transactions - tx0
        stop.set()
        sched.stop_claiming()
        sched.wake()
        await sched.drain(5)
        await sched.close()
        await asyncio.wait([run], timeout=5)
    result = await _tally(store, job_ids)
    await store.close()
    size = sum(p.stat().st_size for p in (root / "state").glob("renderd.db*"))
    return Result(
        sc, makespan, ideal, total_frames / alive, static_split_makespan(hosts, jobs), cpu, wall,
        decisions=result["decisions"], claims=result["chunk_assigned"], speculative=result["chunk_speculative"],
        lost=result["chunk_lost"], rss_mb=rss_mb(), store_mb=size / 2**20, verified=result["chunk_verified"],
        job_finish=finish, job_priority=priorities, job_chunks=chunk_count,
        verified_per_chunk=result["per_chunk"], lost_chunks=result["lost_chunks"],
        rerun_elsewhere=result["rerun_elsewhere"], job_claims=result["claims"], store_calls=calls,
        store_api_calls=api_calls, transactions=transactions,
    )  # fmt: skip


async def _tally(store: Store, job_ids: list[str]) -> dict[str, Any]:
    counts: dict[str, Any] = dict.fromkeys(DECISION_EVENTS, 0)
    per_chunk: dict[tuple[str, int], int] = {}
    rerun = lost_chunks = 0
    claims: dict[str, tuple[float, float]] = {}
    for job_id in job_ids:
        after = 0
        while True:
            events = await store.get_events(job_id, after_id=after, limit=50_000)
            if not events:
                break
            after = events[-1].id
            for e in events:
                if e.kind in counts:
                    counts[e.kind] += 1
                if e.kind == "chunk_verified":
                    key = (job_id, int(e.data["chunk"]))
                    per_chunk[key] = per_chunk.get(key, 0) + 1
        attempts = await store.get_attempts(job_id)
        starts = [a.started_at - EPOCH for a in attempts]
        claims[job_id] = (min(starts), max(starts))
        lost_on: dict[int, set[str]] = {}
        for a in attempts:
            if a.outcome.value == "lost":
                lost_on.setdefault(a.chunk_index, set()).add(a.host)
        lost_chunks += len(lost_on)
        for a in attempts:
            if a.outcome.value == "verified" and a.chunk_index in lost_on and a.host not in lost_on[a.chunk_index]:
                rerun += 1
    counts["decisions"] = sum(counts[k] for k in DECISION_EVENTS)
    counts["per_chunk"] = per_chunk
    counts["rerun_elsewhere"] = rerun
    counts["lost_chunks"] = lost_chunks
    counts["claims"] = claims
    return counts


def simulate(sc: Scenario, root: Path | None = None) -> Result:
    """Run one simulation on a fresh virtual-time loop; the store lives under ``root`` (default: a temp dir)."""
    logging.getLogger("renderd").setLevel(logging.ERROR)  # per-chunk info lines are not the subject
    with contextlib.ExitStack() as stack:
        if root is None:
            root = Path(stack.enter_context(tempfile.TemporaryDirectory(prefix="renderd-sim-")))
        loop = VirtualTimeLoop()
        try:
            return loop.run_until_complete(_run(sc, root))
        finally:
            loop.close()


def report(r: Result) -> str:
    """The figures of one run, one per line."""
    sc = r.scenario
    head = (
        f"sim: {sc.hosts} hosts, {sc.chunks} chunks in {sc.jobs} jobs ({sc.priorities} priorities), "
        f"{sc.fail_fraction:.0%} hosts die, {sc.slow_fraction:.0%} hosts {sc.slow_factor:g}x slow, "
        f"speculation {'on' if sc.speculate else 'off'}, seed {sc.seed}"
    )
    return "\n".join(
        [
            head,
            f"  decisions: {r.decisions} ({r.claims} claims, {r.speculative} speculative, {r.lost} lost) "
            f"in {r.cpu_s:.1f} s coordinator CPU ({r.wall_s:.1f} s wall): {r.decisions_per_s:,.0f} decisions/s",
            f"  peak RSS {r.rss_mb:.0f} MiB, store {r.store_mb:.0f} MiB; per chunk: "
            f"{r.store_api_calls / max(1, r.verified):.1f} store calls in {r.store_calls / max(1, r.verified):.1f} "
            f"thread hops, {r.transactions / max(1, r.verified):.1f} transactions "
            f"({r.decisions / max(1, r.transactions):.1f} decisions per transaction)",
            f"  makespan {r.makespan:,.0f} s virtual; ideal (total work / total capacity) {r.ideal:,.0f} s: "
            f"{r.makespan / r.ideal:.3f}x ideal "
            f"({r.makespan / r.ideal_alive:.3f}x the ideal of the hosts that stay up)",
            f"  static equal split (no stealing, no failures): {r.static_split:,.0f} s = "
            f"{r.static_split / r.ideal:.2f}x ideal",
        ]
    )


def main(argv: list[str] | None = None) -> int:
    """`scripts/bench sim`: run the scenario with speculation on and off; print each figure."""
    p = argparse.ArgumentParser(
        prog="scripts/bench sim", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    d = Scenario()
    p.add_argument("--hosts", type=int, default=d.hosts)
    p.add_argument("--chunks", type=int, default=d.chunks)
    p.add_argument("--jobs", type=int, default=d.jobs)
    p.add_argument("--fail", type=float, default=d.fail_fraction, help="fraction of hosts that die (default 0.02)")
    p.add_argument("--slow", type=float, default=d.slow_fraction, help="fraction of hosts 10x slow (default 0.05)")
    p.add_argument("--seed", type=int, default=d.seed)
    p.add_argument("--speculation", choices=("on", "off", "both"), default="both")
    args = p.parse_args(argv)
    if args.speculation == "both":
        # One process per mode, so each peak RSS is its own.
        given = sys.argv[1:] if argv is None else argv
        for mode in ("on", "off"):
            rc = subprocess.run([sys.executable, __file__, *given, "--speculation", mode], check=False).returncode
            if rc:
                return rc
        return 0
    for speculate in [args.speculation == "on"]:
        sc = Scenario(
            hosts=args.hosts, chunks=args.chunks, jobs=args.jobs, fail_fraction=args.fail,
            slow_fraction=args.slow, seed=args.seed, speculate=speculate,
        )  # fmt: skip
        print(report(simulate(sc)), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
