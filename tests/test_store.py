"""The job store against real SQLite files: lifecycle, ordering, atomic claims, crash recovery, migrations."""

from __future__ import annotations

import asyncio
import contextlib
import functools
import json
import os
import signal
import sqlite3
import subprocess
import sys
import textwrap
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
import pytest_asyncio

from renderd.coordinator import store as store_module
from renderd.coordinator.models import AttemptOutcome, ChunkState, HostStatus, JobState, NewJob
from renderd.coordinator.store import MIGRATIONS, SCHEMA_VERSION, Store, apply_migration
from renderd.errors import FrameRangeError, StoreError

ROOT = Path(__file__).resolve().parent.parent


class FakeClock:
    """A clock that moves only when told to."""

    def __init__(self, now: float = 1000.0) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now

    def advance(self, seconds: float = 1.0) -> None:
        self.now += seconds


def new_job(frames: int = 40, *, priority: int = 0, label: str | None = None) -> NewJob:
    """Return a submission for frames [0, frames)."""
    params = {"fps": "30/1", "width": 320, "height": 240, "format": "mp4", "crf": 18, "chunks": 4}
    return NewJob(
        composition="/srv/comp/index.html",
        output="/srv/out/video.mp4",
        params=params,
        total_frames=frames,
        start_frame=0,
        end_frame=frames,
        submitted_by_uid=1000,
        priority=priority,
        label=label,
    )


def plan(frames: int = 40, size: int = 10) -> list[tuple[int, int]]:
    """Return chunks of ``size`` frames tiling [0, frames)."""
    return [(s, min(s + size, frames)) for s in range(0, frames, size)]


def query(path: Path, sql: str) -> list[Any]:
    """Run one statement on a fresh connection to ``path`` and return its rows."""
    with contextlib.closing(sqlite3.connect(path)) as db:
        return db.execute(sql).fetchall()


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock()


@pytest_asyncio.fixture(loop_scope="function")
async def store(tmp_path: Path, clock: FakeClock) -> AsyncIterator[Store]:
    s = await Store.open(tmp_path / "state" / "renderd.db", clock=clock, max_attempts=3)
    try:
        yield s
    finally:
        await s.close()


async def verify(store: Store, job_id: str, host: str) -> int:
    """Claim the next chunk on ``host`` and take it through to verified; return its index."""
    claim = await store.claim_chunk(host)
    assert claim is not None and claim.chunk.job_id == job_id
    idx, attempt = claim.chunk.index, claim.attempt.id
    assert await store.mark_chunk_rendering(job_id, idx, attempt) is not None
    assert await store.mark_chunk_fetched(job_id, idx, attempt) is not None
    frames = claim.chunk.end - claim.chunk.start
    done = await store.mark_chunk_verified(
        job_id, idx, attempt, output_path=f"/out/{idx}.mp4", sha256=f"{idx:064x}", frames=frames, fps=20.0
    )
    assert done is not None and done.state is ChunkState.VERIFIED
    return idx


async def test_open_creates_a_wal_database_at_the_latest_schema(tmp_path: Path) -> None:
    path = tmp_path / "a" / "b" / "renderd.db"
    async with await Store.open(path) as store:
        assert await store.list_jobs() == []
        with pytest.raises(StoreError, match="FOREIGN KEY"):  # foreign keys are enforced
            await store.add_event("j-0000000000", "note")
    assert query(path, "PRAGMA journal_mode") == [("wal",)]
    assert query(path, "PRAGMA user_version") == [(SCHEMA_VERSION,)] and SCHEMA_VERSION == 2
    with pytest.raises(StoreError, match="closed"):
        await store.get_job("j-0000000000")


async def test_full_lifecycle(store: Store, clock: FakeClock) -> None:
    job = await store.create_job(new_job(label="promo"), plan())
    assert job.id.startswith("j-") and len(job.id) == 12
    assert job.state is JobState.QUEUED and job.started_at is None and job.frames == 40
    assert job.params["crf"] == 18 and job.label == "promo" and job.created_at == clock.now
    assert [c.state for c in await store.get_chunks(job.id)] == [ChunkState.PENDING] * 4

    clock.advance()
    for host in ("r1", "r2", "r1", "r2"):
        assert not await store.job_all_verified(job.id)
        await verify(store, job.id, host)
    assert await store.claim_chunk("r1") is None
    assert await store.job_all_verified(job.id)

    running = await store.get_job(job.id)
    assert running is not None and running.state is JobState.RUNNING and running.started_at == clock.now
    assert await store.mark_job_done(job.id, "f" * 64) is None  # not assembling yet
    assembling = await store.mark_job_assembling(job.id)
    assert assembling is not None and assembling.state is JobState.ASSEMBLING
    clock.advance()
    done = await store.mark_job_done(job.id, "f" * 64)
    assert done is not None and done.state is JobState.DONE
    assert done.output_sha256 == "f" * 64 and done.finished_at == clock.now
    assert await store.cancel_job(job.id) is None  # finished jobs cannot be cancelled

    chunks = await store.get_chunks(job.id)
    assert [(c.start, c.end, c.host, c.attempts, c.frames) for c in chunks] == [
        (0, 10, "r1", 1, 10), (10, 20, "r2", 1, 10), (20, 30, "r1", 1, 10), (30, 40, "r2", 1, 10),
    ]  # fmt: skip
    attempts = await store.get_attempts(job.id)
    assert [a.outcome for a in attempts] == [AttemptOutcome.VERIFIED] * 4
    assert all(a.frames_per_s == 20.0 and a.ended_at is not None for a in attempts)
    kinds = [e.kind for e in await store.get_events(job.id)]
    assert kinds[:3] == ["submitted", "started", "chunk_assigned"]
    assert kinds.count("chunk_verified") == 4 and kinds[-2:] == ["assembling", "done"]
    json.dumps([done.to_dict(), *(c.to_dict() for c in chunks), *(a.to_dict() for a in attempts)])
    assert done.to_dict()["state"] == "done"


async def test_claims_follow_priority_then_submission_order(store: Store, clock: FakeClock) -> None:
    first = await store.create_job(new_job(20), plan(20))
    second = await store.create_job(new_job(20), plan(20))  # same created_at: submission order decides
    clock.advance()
    urgent = await store.create_job(new_job(20, priority=5), plan(20))
    order = []
    while (claim := await store.claim_chunk("r1")) is not None:
        order.append((claim.chunk.job_id, claim.chunk.index))
    assert order == [
        (urgent.id, 0),
        (urgent.id, 1),
        (first.id, 0),
        (first.id, 1),
        (second.id, 0),
        (second.id, 1),
    ]
    listed = await store.list_jobs(states=["running"])
    assert [j.id for j in listed] == [urgent.id, second.id, first.id]  # newest first
    assert await store.list_jobs(states=[JobState.DONE]) == []


async def test_calls_of_one_turn_share_a_transaction_and_fail_alone(store: Store) -> None:
    """Group commit: calls made together run in one batch and one transaction; a failing one is undone alone."""
    job = await store.create_job(new_job(30), plan(30))  # 3 chunks
    batches, transactions = store.stats.batches, store.stats.transactions
    first = store.claim_chunk("r1")
    broken = store.add_event("j-0000000000", "nobody")  # no such job: the foreign key refuses it
    second = store.claim_chunk("r2", start=True)
    done = await asyncio.gather(first, broken, second, return_exceptions=True)
    assert store.stats.batches - batches == 1 and store.stats.transactions - transactions == 1
    a, error, b = done
    assert isinstance(error, StoreError) and "FOREIGN KEY" in str(error)
    assert a is not None and not isinstance(a, BaseException) and a.chunk.state is ChunkState.ASSIGNED
    assert b is not None and not isinstance(b, BaseException) and b.chunk.state is ChunkState.RENDERING
    assert b.job is not None and b.job.state is JobState.RUNNING and b.job.id == job.id
    # Committed before the results were handed out: another connection sees both claims, not the event.
    rows = query(store.path, "SELECT idx, state, host FROM chunks ORDER BY idx")
    assert rows == [(0, "assigned", "r1"), (1, "rendering", "r2"), (2, "pending", None)]
    assert query(store.path, "SELECT count(*) FROM events WHERE kind = 'nobody'") == [(0,)]
    kinds = [e.kind for e in await store.get_events(job.id)]
    assert kinds == ["submitted", "started", "chunk_assigned", "chunk_assigned", "chunk_rendering"]


async def test_concurrent_claims_never_hand_out_a_chunk_twice(store: Store, tmp_path: Path) -> None:
    for _ in range(4):
        await store.create_job(new_job(100), plan(100))  # 4 jobs x 10 chunks
    # A second store on the same file: another connection on another thread, racing for the lock.
    async with await Store.open(store.path) as other:
        claims = await asyncio.gather(*((store, other)[i % 2].claim_chunk(f"h{i}") for i in range(50)))
    got = [(c.chunk.job_id, c.chunk.index) for c in claims if c is not None]
    assert len(got) == 40 and len(set(got)) == 40 and claims.count(None) == 10
    assert len({c.attempt.id for c in claims if c is not None}) == 40
    for job in await store.list_jobs():
        chunks = await store.get_chunks(job.id)
        assert all(c.state is ChunkState.ASSIGNED and c.attempts == 1 for c in chunks)
        assert len(await store.get_attempts(job.id)) == 10


async def test_failed_chunk_is_retried_until_the_limit_then_fails_the_job(store: Store) -> None:
    job = await store.create_job(new_job(20), plan(20))
    claim = await store.claim_chunk("r1")
    assert claim is not None
    failure = await store.mark_chunk_failed(job.id, 0, claim.attempt.id, "chromium crashed")
    assert failure is not None and not failure.job_failed
    assert failure.chunk.state is ChunkState.PENDING and failure.chunk.attempt_id is None
    # A lost host does not count against the chunk.
    claim = await store.claim_chunk("r2")
    assert claim is not None and claim.chunk.index == 0 and claim.chunk.attempts == 2
    lost = await store.mark_chunk_lost(job.id, 0, claim.attempt.id, "ssh connection closed")
    assert lost is not None and lost.state is ChunkState.PENDING
    claim = await store.claim_chunk("r3")
    other = await store.claim_chunk("r4")
    assert claim is not None and other is not None and other.chunk.index == 1
    failure = await store.mark_chunk_failed(job.id, 0, claim.attempt.id, "chromium crashed", max_attempts=2)
    assert failure is not None and failure.job_failed
    assert failure.chunk.state is ChunkState.FAILED and failure.chunk.attempts == 3
    assert [(s.chunk.index, s.attempt.id) for s in failure.stopped] == [(1, other.attempt.id)]

    failed = await store.get_job(job.id)
    assert failed is not None and failed.state is JobState.FAILED and failed.finished_at is not None
    assert failed.error == "chunk 0 (frames 0-9) failed after 2 failed attempts: chromium crashed"
    outcomes = [a.outcome for a in await store.get_attempts(job.id)]
    assert outcomes == ["failed", "lost", "failed", "cancelled"]
    assert [c.state for c in await store.get_chunks(job.id)] == [ChunkState.FAILED] * 2
    # The stopped attempt's late report changes nothing.
    assert await store.mark_chunk_verified(job.id, 1, other.attempt.id, output_path="x", sha256="0", frames=10) is None
    assert await store.claim_chunk("r1") is None


async def test_a_failure_that_cannot_be_retried_fails_the_job_at_once(store: Store) -> None:
    job = await store.create_job(new_job(10), plan(10))
    claim = await store.claim_chunk("r1")
    assert claim is not None
    failure = await store.mark_chunk_failed(job.id, 0, claim.attempt.id, "bad composition", retry=False)
    assert failure is not None and failure.job_failed and failure.stopped == []
    failed = await store.get_job(job.id)
    assert failed is not None and failed.error == "chunk 0 (frames 0-9) failed and cannot be retried: bad composition"


async def test_verified_chunk_never_goes_back(store: Store) -> None:
    job = await store.create_job(new_job(20), plan(20))
    await verify(store, job.id, "r1")
    attempt = (await store.get_attempts(job.id))[0].id
    assert await store.mark_chunk_failed(job.id, 0, attempt, "late error") is None
    assert await store.mark_chunk_lost(job.id, 0, attempt, "late loss") is None
    assert await store.mark_chunk_rendering(job.id, 0, attempt) is None
    report = await store.recover()
    assert report.chunks_requeued == 0
    assert await store.cancel_job(job.id) == []
    chunk = (await store.get_chunks(job.id))[0]
    assert chunk.state is ChunkState.VERIFIED and chunk.sha256 == f"{0:064x}"
    assert (await store.get_attempts(job.id))[0].outcome is AttemptOutcome.VERIFIED
    # Not even a hand-written UPDATE can move it: the schema's trigger refuses.
    with pytest.raises(sqlite3.IntegrityError, match="verified chunk"):
        query(store.path, f"UPDATE chunks SET state = 'pending' WHERE job_id = '{job.id}' AND idx = 0")


async def test_cancel_returns_the_running_chunks_and_ends_everything_else(store: Store) -> None:
    job = await store.create_job(new_job(), plan())
    await verify(store, job.id, "r1")
    running = await store.claim_chunk("r2")
    assert running is not None
    stopped = await store.cancel_job(job.id)
    assert stopped is not None and [(s.chunk.index, s.chunk.host, s.attempt.id) for s in stopped] == [
        (1, "r2", running.attempt.id)
    ]
    cancelled = await store.get_job(job.id)
    assert cancelled is not None and cancelled.state is JobState.CANCELLED and cancelled.error == "cancelled"
    chunks = await store.get_chunks(job.id)
    assert [c.state for c in chunks] == [ChunkState.VERIFIED] + [ChunkState.FAILED] * 3
    assert [a.outcome for a in await store.get_attempts(job.id)] == ["verified", "cancelled"]
    assert await store.claim_chunk("r3") is None
    assert await store.mark_chunk_rendering(job.id, 1, running.attempt.id) is None
    assert await store.cancel_job(job.id) is None
    with pytest.raises(StoreError, match="no job j-ffffffffff") as info:
        await store.cancel_job("j-ffffffffff")
    assert info.value.job == "j-ffffffffff"


async def test_recover_requeues_in_flight_chunks_and_reassembles(store: Store) -> None:
    job = await store.create_job(new_job(20), plan(20))
    for host in ("r1", "r2"):
        await verify(store, job.id, host)
    assert await store.mark_job_assembling(job.id) is not None
    other = await store.create_job(new_job(20), plan(20))
    assert await store.claim_chunk("r3") is not None
    report = await store.recover()
    assert (report.chunks_requeued, report.attempts_interrupted, report.jobs_reassembling) == (1, 1, 1)
    assert report.job_ids == sorted([job.id, other.id])
    again = await store.get_job(job.id)
    assert again is not None and again.state is JobState.RUNNING
    assert (await store.get_events(other.id))[-1].kind == "recovered"


CRASH_SCRIPT = textwrap.dedent(
    """
    import asyncio, os, signal, sqlite3, sys
    from renderd.coordinator.models import NewJob
    from renderd.coordinator.store import Store

    async def main(path):
        store = await Store.open(path)
        job = await store.create_job(
            NewJob("/c/index.html", "/o/out.mp4", {"fps": "30/1"}, 40, 0, 40, submitted_by_uid=0),
            [(0, 10), (10, 20), (20, 30), (30, 40)],
        )
        a, b, c = [await store.claim_chunk(h) for h in ("r1", "r2", "r3")]
        await store.mark_chunk_rendering(job.id, 0, a.attempt.id)
        await store.mark_chunk_fetched(job.id, 0, a.attempt.id)
        await store.mark_chunk_verified(
            job.id, 0, a.attempt.id, output_path="/o/0.mp4", sha256="ab" * 32, frames=10, fps=9.5
        )
        await store.mark_chunk_rendering(job.id, 1, b.attempt.id)
        print(job.id, flush=True)
        # A transaction still open when the process dies must leave no trace.
        raw = sqlite3.connect(path, isolation_level=None)
        raw.execute("BEGIN IMMEDIATE")
        raw.execute("UPDATE chunks SET state = 'assigned', host = 'ghost' WHERE idx = 3")
        os.kill(os.getpid(), signal.SIGKILL)

    asyncio.run(main(sys.argv[1]))
    """
)


async def test_recover_after_the_daemon_is_killed(tmp_path: Path) -> None:
    path = tmp_path / "renderd.db"
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    proc = subprocess.run(
        [sys.executable, "-c", CRASH_SCRIPT, str(path)], capture_output=True, text=True, timeout=60, env=env
    )
    assert proc.returncode == -signal.SIGKILL, proc.stderr
    job_id = proc.stdout.strip()
    assert Path(f"{path}-wal").stat().st_size > 0  # never checkpointed: the commits live in the WAL

    async with await Store.open(path) as store:
        states = [(c.state, c.host) for c in await store.get_chunks(job_id)]
        assert states == [
            (ChunkState.VERIFIED, "r1"), (ChunkState.RENDERING, "r2"), (ChunkState.ASSIGNED, "r3"),
            (ChunkState.PENDING, None),
        ]  # fmt: skip
        report = await store.recover()
        assert (report.chunks_requeued, report.attempts_interrupted, report.job_ids) == (2, 2, [job_id])

        chunks = await store.get_chunks(job_id)
        assert [c.state for c in chunks] == [ChunkState.VERIFIED] + [ChunkState.PENDING] * 3
        assert chunks[0].sha256 == "ab" * 32 and chunks[0].frames == 10 and chunks[0].output_path == "/o/0.mp4"
        attempts = await store.get_attempts(job_id)
        assert [(a.chunk_index, a.outcome) for a in attempts] == [
            (0, AttemptOutcome.VERIFIED), (1, AttemptOutcome.INTERRUPTED), (2, AttemptOutcome.INTERRUPTED),
        ]  # fmt: skip
        job = await store.get_job(job_id)
        assert job is not None and job.state is JobState.RUNNING
        resumed = [await store.claim_chunk("r1") for _ in range(4)]
        assert [c.chunk.index if c else None for c in resumed] == [1, 2, 3, None]
        assert resumed[0] is not None and resumed[0].chunk.attempts == 2


async def test_a_v1_database_is_migrated_with_its_data(tmp_path: Path) -> None:
    path = tmp_path / "old.db"
    with contextlib.closing(sqlite3.connect(path, isolation_level=None)) as db:
        db.execute("BEGIN")
        apply_migration(db, MIGRATIONS[0])  # only migration 1: a database as renderd v1 left it
        db.execute("PRAGMA user_version = 1")
        db.execute(
            "INSERT INTO jobs (id, state, composition, output, params, submitted_by_uid, created_at, "
            "updated_at, total_frames, start_frame, end_frame) VALUES ('j-0123456789', 'running', '/c', "
            "'/o', '{\"fps\": 24}', 7, 1.0, 2.0, 10, 0, 10)"
        )
        db.execute(
            "INSERT INTO chunks (job_id, idx, start_frame, end_frame, state, host, attempts, sha256, frames, "
            "updated_at) VALUES ('j-0123456789', 0, 0, 10, 'verified', 'r1', 1, 'abc', 10, 2.0)"
        )
        db.execute("INSERT INTO hosts (name, consecutive_failures, updated_at) VALUES ('r1', 2, 2.0)")
        db.execute("COMMIT")

    async with await Store.open(path) as store:
        job = await store.get_job("j-0123456789")
        assert job is not None and job.params == {"fps": 24} and job.submitted_by_uid == 7
        chunk = (await store.get_chunks(job.id))[0]
        assert chunk.state is ChunkState.VERIFIED and chunk.sha256 == "abc"
        host = await store.get_host("r1")
        assert host is not None and host.consecutive_failures == 2 and host.speed_fps is None
    assert query(path, "PRAGMA user_version") == [(2,)]
    assert query(path, "SELECT name FROM sqlite_master WHERE type = 'trigger'") == [("chunks_verified_is_final",)]


async def test_a_failed_migration_leaves_the_database_untouched(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    path = tmp_path / "old.db"
    with contextlib.closing(sqlite3.connect(path, isolation_level=None)) as db:
        apply_migration(db, MIGRATIONS[0])
        db.execute("PRAGMA user_version = 1")
    monkeypatch.setattr(store_module, "MIGRATIONS", (*MIGRATIONS, "CREATE TABLE extra (x);\nNOT SQL;"))
    monkeypatch.setattr(store_module, "SCHEMA_VERSION", len(MIGRATIONS) + 1)
    with pytest.raises(StoreError, match="syntax error"):
        await Store.open(path)
    assert query(path, "PRAGMA user_version") == [(1,)]
    assert "speed_fps" not in [r[1] for r in query(path, "PRAGMA table_info(hosts)")]
    assert query(path, "SELECT name FROM sqlite_master WHERE name = 'extra'") == []  # v2 and v3 rolled back


async def test_a_newer_schema_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "future.db"
    query(path, "PRAGMA user_version = 99")
    with pytest.raises(StoreError, match=r"schema version 99, but this renderd knows versions up to 2") as info:
        await Store.open(path)
    assert info.value.path == str(path)


async def test_a_bad_chunk_plan_writes_nothing(store: Store) -> None:
    with pytest.raises(FrameRangeError, match="chunk 1 is \\[12, 20\\)"):
        await store.create_job(new_job(20), [(0, 10), (12, 20)])
    with pytest.raises(FrameRangeError, match="end at frame 10"):
        await store.create_job(new_job(20), [(0, 10)])
    with pytest.raises(StoreError, match="not JSON"):
        await store.create_job(NewJob("/c", "/o", {"x": object()}, 10, 0, 10, 0), plan(10))
    assert await store.list_jobs() == []


async def test_events_are_read_after_an_id(store: Store, clock: FakeClock) -> None:
    job = await store.create_job(new_job(10), plan(10))
    first = (await store.get_events(job.id))[-1]
    clock.advance(5)
    note = await store.add_event(job.id, "progress", {"frames_done": 4, "job_id": "kept as data"})
    assert note.ts == clock.now and note.data == {"frames_done": 4, "job_id": "kept as data"}
    assert await store.get_events(job.id, after_id=first.id) == [note]
    assert await store.get_events(after_id=first.id) == [note]


async def test_host_failures_quarantine_with_backoff_and_success_clears(store: Store, clock: FakeClock) -> None:
    host = await store.upsert_host("r1")
    assert host.state is HostStatus.UP and host.consecutive_failures == 0
    fail = functools.partial(store.record_host_failure, "r1", quarantine_after=2, backoff_s=10.0, max_backoff_s=25.0)
    host = await fail("render timed out")
    assert host.state is HostStatus.UP and host.consecutive_failures == 1 and host.quarantined_until is None
    host = await fail("render timed out")
    assert host.state is HostStatus.QUARANTINED and host.quarantined_until == clock.now + 10
    host = await fail("ssh refused", reachable=False)
    assert host.quarantined_until == clock.now + 20 and host.last_error == "ssh refused"
    host = await fail("ssh refused", reachable=False)
    assert host.quarantined_until == clock.now + 25  # capped
    clock.advance(30)
    later = await store.get_host("r1")
    assert later is not None and later.state is HostStatus.DOWN  # quarantine over, still unreachable

    host = await store.record_host_success("r1", speed_fps=20.0)
    assert host.state is HostStatus.UP and host.consecutive_failures == 0 and host.quarantined_until is None
    host = await store.record_host_success("r1", speed_fps=40.0)
    assert host.speed_fps == 30.0
    host = await store.record_host_success("r1")
    assert host.speed_fps == 30.0

    host = await store.set_drained("r1", True)
    assert host.state is HostStatus.DRAINED and host.drained
    await store.upsert_host("r0", reachable=False)
    assert [(h.name, h.state) for h in await store.list_hosts()] == [
        ("r0", HostStatus.DOWN), ("r1", HostStatus.DRAINED)
    ]  # fmt: skip
    assert (await store.set_drained("r1", False)).state is HostStatus.UP
    assert json.loads(json.dumps(host.to_dict()))["state"] == "drained"


async def test_a_failed_chunk_is_left_for_other_hosts_when_asked(store: Store) -> None:
    job = await store.create_job(new_job(20), plan(20))
    claim = await store.claim_chunk("r1")
    assert claim is not None and claim.chunk.index == 0
    await store.mark_chunk_failed(job.id, 0, claim.attempt.id, "disk full")
    # r1 skips the chunk it failed and takes the next one; another host gets the failed one.
    mine = await store.claim_chunk("r1", avoid_own_failures=True)
    assert mine is not None and mine.chunk.index == 1
    theirs = await store.claim_chunk("r2", avoid_own_failures=True)
    assert theirs is not None and theirs.chunk.index == 0
    # Without the flag (a single host), the failed chunk is retried where it failed.
    await store.mark_chunk_failed(job.id, 0, theirs.attempt.id, "disk full")
    again = await store.claim_chunk("r2")
    assert again is not None and again.chunk.index == 0


async def test_a_host_claims_only_chunks_of_jobs_whose_required_labels_it_carries(store: Store) -> None:
    gpu = new_job(20, priority=5)
    gpu.params["require"] = ["gpu", "fonts"]
    gpu_job = await store.create_job(gpu, plan(20))
    plain_job = await store.create_job(new_job(10), plan(10))
    # The higher-priority job needs labels r1 lacks (one of two is not enough): r1 gets the plain job.
    for labels in ((), ("gpu",), ("fonts", "cpu")):
        claim = await store.claim_chunk("r1", labels=labels)
        assert claim is not None and claim.chunk.job_id == plain_job.id, labels
        await store.mark_chunk_lost(plain_job.id, claim.chunk.index, claim.attempt.id, "returned")
    # A host with both labels (and more) takes the labelled job first, by priority.
    claim = await store.claim_chunk("r2", labels=("fonts", "gpu", "rack-a"))
    assert claim is not None and claim.chunk.job_id == gpu_job.id
    # With the plain job's chunk taken, a host without the labels finds nothing.
    taken = await store.claim_chunk("r2", avoid_own_failures=True, labels=("gpu", "fonts"))
    assert taken is not None and taken.chunk.job_id == gpu_job.id
    assert (await store.claim_chunk("r3", labels=("cpu",))).chunk.job_id == plain_job.id  # type: ignore[union-attr]
    assert await store.claim_chunk("r3", labels=("cpu",)) is None
    assert (await store.get_job(gpu_job.id)).state is JobState.RUNNING  # type: ignore[union-attr]


async def test_out_of_service_hosts_and_pending_chunks(store: Store, clock: FakeClock) -> None:
    """The scheduler's once-a-round queries: which hosts are out, and whether anything is pending."""
    assert not await store.has_pending_chunks()
    for name in ("r1", "r2", "r3", "r4"):
        await store.upsert_host(name)
    await store.set_drained("r2", True)
    await store.record_host_failure("r3", "ssh refused", quarantine_after=1, backoff_s=10.0)
    clock.advance(30)  # r3's quarantine ran out but is still set: it needs its re-probe
    await store.record_host_failure("r4", "render timed out", quarantine_after=5, backoff_s=10.0)  # not yet
    out = await store.list_hosts_out_of_service()
    assert [(h.name, h.state) for h in out] == [("r2", HostStatus.DRAINED), ("r3", HostStatus.UP)]
    assert out[1].quarantined_until is not None

    job = await store.create_job(new_job(20), plan(20))
    assert await store.has_pending_chunks()
    first = await store.claim_chunk("r1")
    second = await store.claim_chunk("r1")
    assert first is not None and second is not None
    assert not await store.has_pending_chunks()
    await store.mark_chunk_lost(job.id, 1, second.attempt.id, "connection lost")
    assert await store.has_pending_chunks()
    await store.cancel_job(job.id)
    assert not await store.has_pending_chunks()  # a cancelled job's chunks are nobody's work


async def test_all_verified_sees_every_unfinished_state(store: Store) -> None:
    job = await store.create_job(new_job(30), plan(30))
    assert not await store.job_all_verified("no-such-job")
    await verify(store, job.id, "r1")
    claim = await store.claim_chunk("r1")
    assert claim is not None
    for step in (store.mark_chunk_rendering, store.mark_chunk_fetched):
        assert not await store.job_all_verified(job.id)
        await step(job.id, claim.chunk.index, claim.attempt.id)
    await store.mark_chunk_verified(job.id, 1, claim.attempt.id, output_path="/o/1", sha256="0" * 64, frames=10)
    assert not await store.job_all_verified(job.id)  # chunk 2 still pending
    await verify(store, job.id, "r1")
    assert await store.job_all_verified(job.id)
