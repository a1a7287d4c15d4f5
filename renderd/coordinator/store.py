"""The coordinator's job store: jobs, chunks, attempts, events and host health in one SQLite file.

The only module that talks to SQLite. One connection is opened, used and closed by one worker
thread; every public method queues its body for that thread and returns a future of the result,
so the event loop never waits on the disk and no two store operations interleave. Group commit:
the calls made in one event-loop turn, and those made while the thread is busy, run as one batch
(one thread hop) inside one ``BEGIN IMMEDIATE`` transaction, each call a savepoint of its own
(one that fails is undone alone); the batch commits before any of its futures is settled, so a
result a caller sees is committed, as when every call was its own transaction. Under load, one
commit then carries many decisions instead of one each. (The immediate lock also keeps a second
process on the same file from interleaving with a claim.) Cancelling the caller does not take
its call out of the batch, which still runs to its end: await results you must not miss (a claim,
a verification) under ``asyncio.shield``. A write whose loss a restart repairs may be left
unawaited (``mark_chunk_fetched``: a crash requeues a fetched chunk like a rendering one).

Durability: WAL with ``synchronous=NORMAL``. A commit appends the transaction to the WAL file, so
it is in the kernel's page cache when the call returns: SIGKILL, an OOM kill or any other crash of
the daemon process cannot lose it. Only a power loss or kernel crash can (the last commits before
it; a checkpoint fsyncs), and then SQLite comes back to an older consistent state, never a
corrupt one, which the coordinator re-derives from like from any restart: :meth:`Store.recover`
requeues every chunk that was in flight (an agent told to render one that the store forgot
renders it for nothing, and the chunk is rendered again, never lost), and a chunk is verified by
one committed UPDATE or not at all, so it is counted once or rendered again, never twice. FULL
would add an fsync per commit on the single store thread to guard against failures this
lifecycle does not rely on.

Settings of the connection: a 32 MiB page cache (the default 2 MiB is smaller than the indexes a
claim walks on a store of 100k chunks: every miss is a read syscall) and temporary b-trees (the
DISTINCT of a claim) in memory.

Host-driven chunk transitions carry the attempt id of their claim; a report from an attempt that
no longer holds the chunk (cancelled, interrupted, lost) changes nothing and returns ``None``. A
verified chunk never changes state again: every UPDATE that could move one says
``state != 'verified'``, and a trigger (schema v2) aborts any statement that tries. Transitions
also append to the job's event log: submitted, started, chunk_assigned, chunk_rendering,
chunk_fetched, chunk_verified, chunk_failed, chunk_lost, assembling, done, failed, cancelled,
recovered.
"""

from __future__ import annotations

import asyncio
import functools
import json
import os
import sqlite3
import time
from collections.abc import Callable, Iterable, Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Concatenate, ParamSpec, TypeVar

from renderd.coordinator.models import (
    Attempt,
    AttemptOutcome,
    Chunk,
    ChunkFailure,
    ChunkState,
    Claim,
    Event,
    HostState,
    HostStatus,
    Job,
    JobState,
    NewJob,
    RecoveryReport,
    new_job_id,
)
from renderd.errors import FrameRangeError, StoreError

P = ParamSpec("P")
R = TypeVar("R")
Clock = Callable[[], float]

BUSY_TIMEOUT_S = 10.0
DEFAULT_MAX_ATTEMPTS = 3
SPEED_WEIGHT = 0.5  # weight of the newest sample in a host's moving-average speed
IN_FLIGHT = "('assigned', 'rendering', 'fetched')"

# MIGRATIONS[n] takes a database from schema version n to n + 1 (PRAGMA user_version). Never edit
# a shipped migration: append one. Each is SQL or a function of the connection.
_V1 = """
CREATE TABLE jobs (
    id TEXT PRIMARY KEY,
    state TEXT NOT NULL
        CHECK (state IN ('queued', 'running', 'assembling', 'done', 'failed', 'cancelled')),
    composition TEXT NOT NULL, output TEXT NOT NULL, params TEXT NOT NULL,
    priority INTEGER NOT NULL DEFAULT 0, label TEXT, submitted_by_uid INTEGER NOT NULL,
    created_at REAL NOT NULL, updated_at REAL NOT NULL, started_at REAL, finished_at REAL,
    total_frames INTEGER NOT NULL, start_frame INTEGER NOT NULL, end_frame INTEGER NOT NULL,
    error TEXT, output_sha256 TEXT);
CREATE TABLE chunks (
    job_id TEXT NOT NULL REFERENCES jobs(id) ON DELETE CASCADE,
    idx INTEGER NOT NULL, start_frame INTEGER NOT NULL, end_frame INTEGER NOT NULL,
    state TEXT NOT NULL
        CHECK (state IN ('pending', 'assigned', 'rendering', 'fetched', 'verified', 'failed')),
    host TEXT, attempts INTEGER NOT NULL DEFAULT 0, attempt_id INTEGER,
    output_path TEXT, sha256 TEXT, frames INTEGER, updated_at REAL NOT NULL, error TEXT,
    PRIMARY KEY (job_id, idx), CHECK (start_frame < end_frame));
-- AUTOINCREMENT: ids are never reused, so a stale attempt id never matches a newer attempt.
CREATE TABLE attempts (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    job_id TEXT NOT NULL, chunk_index INTEGER NOT NULL, host TEXT NOT NULL,
    started_at REAL NOT NULL, ended_at REAL,
    outcome TEXT NOT NULL
        CHECK (outcome IN ('running', 'verified', 'failed', 'interrupted', 'cancelled', 'lost')),
    error TEXT, frames_per_s REAL,
    FOREIGN KEY (job_id, chunk_index) REFERENCES chunks(job_id, idx) ON DELETE CASCADE);
CREATE INDEX attempts_by_chunk ON attempts(job_id, chunk_index);
CREATE TABLE events (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    job_id TEXT NOT NULL REFERENCES jobs(id) ON DELETE CASCADE,
    ts REAL NOT NULL, kind TEXT NOT NULL, data TEXT NOT NULL DEFAULT '{}');
CREATE INDEX events_by_job ON events(job_id, id);
CREATE TABLE hosts (
    name TEXT PRIMARY KEY, state TEXT NOT NULL DEFAULT 'up' CHECK (state IN ('up', 'down')),
    drained INTEGER NOT NULL DEFAULT 0, consecutive_failures INTEGER NOT NULL DEFAULT 0,
    quarantined_until REAL, last_error TEXT, updated_at REAL NOT NULL);
"""
# v2: host speed, the indexes the scheduler's queries use, and the verified-is-final trigger.
_V2 = """
ALTER TABLE hosts ADD COLUMN speed_fps REAL;
CREATE INDEX chunks_by_state ON chunks(state, job_id, idx);
CREATE INDEX jobs_by_state ON jobs(state, priority DESC, created_at);
CREATE TRIGGER chunks_verified_is_final BEFORE UPDATE OF state ON chunks
    WHEN OLD.state = 'verified' AND NEW.state != 'verified'
    BEGIN SELECT RAISE(ABORT, 'a verified chunk never changes state'); END;
"""
MIGRATIONS: tuple[str | Callable[[sqlite3.Connection], None], ...] = (_V1, _V2)
SCHEMA_VERSION = len(MIGRATIONS)


@contextmanager
def transaction(db: sqlite3.Connection) -> Iterator[None]:
    """Run the block as one write transaction: committed if it returns, rolled back if it raises."""
    db.execute("BEGIN IMMEDIATE")
    try:
        yield
        db.execute("COMMIT")
    except BaseException:
        if db.in_transaction:
            db.execute("ROLLBACK")
        raise


def apply_migration(db: sqlite3.Connection, migration: str | Callable[[sqlite3.Connection], None]) -> None:
    """Run one migration inside the caller's transaction (``executescript`` would commit it)."""
    if callable(migration):
        migration(db)
        return
    statement = ""
    for line in migration.splitlines(keepends=True):
        statement += line
        if sqlite3.complete_statement(statement):  # a trigger body's inner ';' does not end it
            db.execute(statement)
            statement = ""
    if statement.strip():
        raise StoreError(f"incomplete SQL at the end of a migration: {statement.strip()[:60]!r}")


def migrate(db: sqlite3.Connection, path: str = "job store") -> int:
    """Bring ``db`` to :data:`SCHEMA_VERSION` in one transaction; return the version it had."""
    with transaction(db):
        version: int = db.execute("PRAGMA user_version").fetchone()[0]
        if version > SCHEMA_VERSION:
            raise StoreError(
                f"{path} has schema version {version}, but this renderd knows versions up to "
                f"{SCHEMA_VERSION}: it was written by a newer renderd; upgrade renderd or use another "
                "state file",
                path=path,
            )
        for migration in MIGRATIONS[version:]:
            apply_migration(db, migration)
        if version != SCHEMA_VERSION:
            db.execute(f"PRAGMA user_version = {SCHEMA_VERSION:d}")
    return version


SQLITE_MAGIC = b"SQLite format 3\x00"


def _refuse(path: Path, why: str) -> StoreError:
    return StoreError(
        f"{path} {why}; renderd does not replace it: move it away or set another state_dir", path=str(path)
    )


def _connect(path: Path, busy_timeout_s: float) -> sqlite3.Connection:
    """Open the store at ``path``; a missing one is created, anything that is not renderd's is refused."""
    if not path.exists():
        _create(path, busy_timeout_s)
    if path.stat().st_size == 0:
        raise _refuse(path, "is an empty file, not a renderd job store")
    with path.open("rb") as f:
        if f.read(len(SQLITE_MAGIC)) != SQLITE_MAGIC:
            raise _refuse(path, "is not a SQLite database")
    # isolation_level=None: no implicit transactions; transaction() says where each one is.
    db = sqlite3.connect(path, timeout=busy_timeout_s, isolation_level=None)
    try:
        # Before anything writes to it (the WAL switch does): is it a renderd store at all?
        if db.execute("PRAGMA user_version").fetchone()[0] == 0:
            raise _refuse(path, "is a SQLite database without renderd's schema (user_version 0)")
        _configure(db, path, busy_timeout_s)
    except BaseException:
        db.close()
        raise
    return db


def _create(path: Path, busy_timeout_s: float) -> None:
    """Create a new store under a temporary name, then move it into place complete.

    A crash half-way leaves the temporary file, never a zero-length or schema-less ``path``
    (which the next start would refuse).
    """
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.new-{os.getpid()}")
    for stale in (tmp, tmp.with_name(tmp.name + "-wal"), tmp.with_name(tmp.name + "-shm")):
        stale.unlink(missing_ok=True)
    db = sqlite3.connect(tmp, timeout=busy_timeout_s, isolation_level=None)
    try:
        _configure(db, tmp, busy_timeout_s)
    finally:
        db.close()
    os.rename(tmp, path)


def _configure(db: sqlite3.Connection, path: Path, busy_timeout_s: float) -> None:
    db.row_factory = sqlite3.Row
    db.execute(f"PRAGMA busy_timeout = {int(busy_timeout_s * 1000):d}")
    mode = db.execute("PRAGMA journal_mode = WAL").fetchone()[0]
    if str(mode).lower() != "wal":
        raise StoreError(f"{path}: cannot use the WAL journal (got {mode!r})", path=str(path))
    db.execute("PRAGMA synchronous = NORMAL")  # safe against process crashes: module docstring
    db.execute("PRAGMA cache_size = -32768")  # KiB: see the module docstring
    db.execute("PRAGMA temp_store = MEMORY")
    db.execute("PRAGMA foreign_keys = ON")
    migrate(db, str(path))


def _in_thread(fn: Callable[Concatenate[Store, P], R]) -> Callable[Concatenate[Store, P], asyncio.Future[R]]:
    """Make a blocking Store method a call that queues its body for the store's thread.

    The call queues at once and returns a future of the result, settled once the batch it ran
    in is committed (:meth:`Store._submit`). Awaiting it is how a caller waits for durability;
    a caller that does not need the result (a write whose loss a restart repairs) may leave it.
    """

    def run(self: Store, /, *args: P.args, **kwargs: P.kwargs) -> asyncio.Future[R]:
        return self._submit(functools.partial(fn, self, *args, **kwargs))

    functools.update_wrapper(run, fn)
    return run


@dataclass(slots=True)
class StoreStats:
    """What the store did, counted: the cost of scheduling is in these, not in wall time."""

    calls: int = 0  # store method calls
    batches: int = 0  # thread hops: one per batch of calls
    transactions: int = 0  # write transactions committed (or attempted): one per batch that writes


@dataclass(slots=True)
class _Batch:
    """The store thread's bookkeeping of the batch it runs: where its write transaction began."""

    tx_first: int | None = None  # index of the call that opened the transaction
    begin_error: sqlite3.Error | None = None  # BEGIN failed: the batch's later writes fail alike
    current: int = 0


def _check_plan(chunks: Sequence[tuple[int, int]], start: int, end: int, total: int) -> None:
    if not 0 <= start < end <= total:
        raise FrameRangeError(f"job frames [{start}, {end}) are not a non-empty range within 0..{total}")
    expected = start
    for i, (s, e) in enumerate(chunks):
        if s != expected or e <= s:
            raise FrameRangeError(
                f"chunk {i} is [{s}, {e}): chunks must tile [{start}, {end}) in order, "
                f"so it must start at {expected} and not be empty"
            )
        expected = e
    if expected != end:
        raise FrameRangeError(f"the chunks end at frame {expected}, the job at {end}")


def _job(row: sqlite3.Row) -> Job:
    return Job(**{**dict(row), "state": JobState(row["state"]), "params": json.loads(row["params"])})


def _chunk(row: sqlite3.Row) -> Chunk:
    d = dict(row)
    d.update(index=d.pop("idx"), start=d.pop("start_frame"), end=d.pop("end_frame"))
    return Chunk(**{**d, "state": ChunkState(d["state"])})


def _attempt(row: sqlite3.Row) -> Attempt:
    return Attempt(**{**dict(row), "outcome": AttemptOutcome(row["outcome"])})


def _event(row: sqlite3.Row) -> Event:
    return Event(**{**dict(row), "data": json.loads(row["data"])})


def _host(row: sqlite3.Row, now: float) -> HostState:
    until = row["quarantined_until"]
    if row["drained"]:
        state = HostStatus.DRAINED
    elif until is not None and until > now:
        state = HostStatus.QUARANTINED
    else:
        state = HostStatus(row["state"])
    return HostState(**{**dict(row), "state": state, "drained": bool(row["drained"])})


class Store:
    """The job store; create with ``await Store.open(path)``, finish with ``await close()``."""

    def __init__(
        self, path: Path, db: sqlite3.Connection, pool: ThreadPoolExecutor, clock: Clock, max_attempts: int
    ) -> None:
        self.path = path
        self.max_attempts = max_attempts
        self._db = db
        self._executor = pool
        self._clock = clock
        self._closed = False
        self.stats = StoreStats()
        # Group commit: calls queue here and run on the store thread in batches, one thread hop
        # and one write transaction per batch (see _submit).
        self._queue: list[tuple[Callable[[], Any], asyncio.Future[Any]]] = []
        self._running = False  # a batch is scheduled or in flight
        self._idle = asyncio.Event()
        self._idle.set()
        self._batch: _Batch | None = None  # set on the store thread while a batch runs
        # The hosts out of service (drained, or a quarantine time set), kept by every host write;
        # None until first read. Replaced whole, never mutated: the loop thread reads it.
        self._out_of_service: dict[str, sqlite3.Row] | None = None

    @classmethod
    async def open(
        cls,
        path: str | Path,
        *,
        clock: Clock = time.time,
        max_attempts: int = DEFAULT_MAX_ATTEMPTS,
        busy_timeout_s: float = BUSY_TIMEOUT_S,
    ) -> Store:
        """Open (creating directories and file as needed) and migrate the store at ``path``."""
        path = Path(path)
        pool = ThreadPoolExecutor(max_workers=1, thread_name_prefix="renderd-store")
        try:
            db = await asyncio.get_running_loop().run_in_executor(pool, _connect, path, busy_timeout_s)
        except (sqlite3.Error, OSError) as exc:
            pool.shutdown(wait=False)
            raise StoreError(f"cannot open job store {path}: {exc}", path=str(path)) from exc
        except BaseException:
            pool.shutdown(wait=False)
            raise
        return cls(path, db, pool, clock, max_attempts)

    async def close(self) -> None:
        """Close the connection and stop the store thread; safe to call twice."""
        if self._closed:
            return
        self._closed = True
        try:
            await self._idle.wait()  # the calls queued before close still run and commit
            await asyncio.get_running_loop().run_in_executor(self._executor, self._db.close)
        finally:
            self._executor.shutdown(wait=False)

    async def __aenter__(self) -> Store:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

    # -- group commit --------------------------------------------------------------------------

    def _submit(self, call: Callable[[], R]) -> asyncio.Future[R]:
        """Queue ``call`` for the store thread; return the future of its result.

        Every call queued in the same event-loop turn, and every call queued while a batch runs,
        goes into the next batch: one thread hop and at most one ``BEGIN IMMEDIATE`` transaction
        for all of them, committed before any of their futures is settled. So a caller still
        never sees a result that is not on disk, and a busy coordinator pays one commit for
        many decisions instead of one each. Calls run in the order they were made; each write
        is a savepoint of its own, so one that fails is undone alone and the others commit.
        Cancelling a caller does not take its call out of the batch.
        """
        loop = asyncio.get_running_loop()
        fut: asyncio.Future[R] = loop.create_future()
        if self._closed:
            fut.set_exception(StoreError(f"job store {self.path} is closed", path=str(self.path)))
            return fut
        self.stats.calls += 1
        self._queue.append((call, fut))
        if not self._running:
            self._running = True
            self._idle.clear()
            loop.call_soon(self._run_next)  # the rest of this loop turn joins the batch
        return fut

    def _run_next(self) -> None:
        """Hand the queued calls to the store thread as one batch (runs on the event loop)."""
        batch, self._queue = self._queue, []
        if not batch:
            self._running = False
            self._idle.set()
            return
        self.stats.batches += 1
        loop = asyncio.get_running_loop()
        done = loop.run_in_executor(self._executor, self._run_batch, [call for call, _ in batch])
        done.add_done_callback(functools.partial(self._batch_done, batch))

    def _batch_done(
        self, batch: list[tuple[Callable[[], Any], asyncio.Future[Any]]], done: asyncio.Future[list[Any]]
    ) -> None:
        if done.cancelled() or done.exception() is not None:  # the thread itself failed (shut down)
            exc = done.exception() if not done.cancelled() else None
            outcomes: list[Any] = [StoreError(f"job store {self.path}: {exc or 'stopped'}", path=str(self.path))]
            outcomes *= len(batch)
            failed = [True] * len(batch)
        else:
            results = done.result()
            outcomes = [r for _, r in results]
            failed = [not ok for ok, _ in results]
        for (_, fut), outcome, bad in zip(batch, outcomes, failed, strict=True):
            if fut.cancelled():
                continue
            if not bad:
                fut.set_result(outcome)
            elif isinstance(outcome, sqlite3.Error):
                error = StoreError(f"job store {self.path}: {outcome}", path=str(self.path))
                error.__cause__ = outcome
                fut.set_exception(error)
            else:
                fut.set_exception(outcome)
        self._run_next()  # what queued meanwhile is the next batch

    def _run_batch(self, calls: list[Callable[[], Any]]) -> list[tuple[bool, Any]]:
        """Run a batch on the store thread; commit its transaction; return (ok, result or exception) per call."""
        self._batch = state = _Batch()
        try:
            return self._run_calls(calls, state)
        except BaseException:
            # Only an interrupt gets here: leave no transaction open for the next batch.
            if self._db.in_transaction:
                self._db.execute("ROLLBACK")
            self._out_of_service = None
            raise
        finally:
            self._batch = None

    def _run_calls(self, calls: list[Callable[[], Any]], state: _Batch) -> list[tuple[bool, Any]]:
        results: list[tuple[bool, Any]] = []
        for i, call in enumerate(calls):
            state.current = i
            try:
                results.append((True, call()))
            except Exception as exc:  # noqa: BLE001 - handed to that call's caller
                results.append((False, exc))
            if state.tx_first is not None and not self._db.in_transaction:
                # SQLite rolled the whole transaction back (a full disk, say): every call since
                # it began is undone, so none of them may report success.
                self._fail_since(results, state.tx_first, StoreError("the transaction was rolled back"))
                state.tx_first = None
                self._out_of_service = None  # it may hold a host write that was undone
        if state.tx_first is not None:
            try:
                self._db.execute("COMMIT")
            except sqlite3.Error as exc:
                if self._db.in_transaction:
                    self._db.execute("ROLLBACK")
                self._fail_since(results, state.tx_first, exc)
                self._out_of_service = None
        return results

    @staticmethod
    def _fail_since(results: list[tuple[bool, Any]], first: int, exc: Exception) -> None:
        for j in range(first, len(results)):
            results[j] = (False, exc)

    @contextmanager
    def _tx(self) -> Iterator[None]:
        """Run the block as one write: a savepoint in the batch's transaction, which it opens if needed."""
        state, db = self._batch, self._db
        if state is None:  # not in a batch (never, from a public method): a transaction of its own
            with transaction(db):
                yield
            return
        if state.begin_error is not None:
            raise state.begin_error
        if state.tx_first is None:
            try:
                db.execute("BEGIN IMMEDIATE")
            except sqlite3.Error as exc:
                # Another connection holds the lock past the busy timeout: the batch's later
                # writes would wait as long again, one after the other, to fail the same way.
                state.begin_error = exc
                raise
            state.tx_first = state.current
            self.stats.transactions += 1
        db.execute("SAVEPOINT call")
        try:
            yield
            db.execute("RELEASE call")
        except BaseException:
            if db.in_transaction:
                db.execute("ROLLBACK TO call")
                db.execute("RELEASE call")
            raise

    # -- helpers: run on the store thread, inside the caller's transaction ----------------------

    def _one(self, sql: str, args: Sequence[Any] = ()) -> sqlite3.Row | None:
        row: sqlite3.Row | None = self._db.execute(sql, args).fetchone()
        return row

    def _add_event(self, job_id: str, kind: str, /, **data: Any) -> int:
        cur = self._db.execute(
            "INSERT INTO events (job_id, ts, kind, data) VALUES (?, ?, ?, ?)",
            (job_id, self._clock(), kind, json.dumps(data, sort_keys=True)),
        )
        return int(cur.lastrowid or 0)

    def _get_job(self, job_id: str) -> Job | None:
        row = self._one("SELECT * FROM jobs WHERE id = ?", (job_id,))
        return None if row is None else _job(row)

    def _get_attempt(self, attempt_id: int) -> Attempt:
        row = self._one("SELECT * FROM attempts WHERE id = ?", (attempt_id,))
        assert row is not None
        return _attempt(row)

    def _move_chunk(self, job_id: str, index: int, attempt_id: int, to: ChunkState, /, **cols: Any) -> Chunk | None:
        """Move an in-flight chunk held by ``attempt_id`` to ``to``; None if it is not held by it."""
        values = {"state": to.value, "updated_at": self._clock(), **cols}
        sets = ", ".join(f"{name} = ?" for name in values)  # names come from this module only
        row = self._one(
            f"UPDATE chunks SET {sets} WHERE job_id = ? AND idx = ? AND attempt_id = ? "
            f"AND state IN {IN_FLIGHT} AND state != 'verified' RETURNING *",
            (*values.values(), job_id, index, attempt_id),
        )
        return None if row is None else _chunk(row)

    def _end_attempt(self, attempt_id: int, outcome: AttemptOutcome, error: str | None, fps: float | None) -> None:
        self._db.execute(
            "UPDATE attempts SET outcome = ?, ended_at = ?, error = ?, frames_per_s = ? "
            "WHERE id = ? AND outcome = 'running'",
            (outcome.value, self._clock(), error, fps, attempt_id),
        )

    def _finish_job(self, job_id: str, state: JobState, error: str) -> list[Claim]:
        """End a job as failed or cancelled; return its chunks that were running, as they were."""
        now, why = self._clock(), f"job {state.value}"
        rows = self._db.execute(f"SELECT * FROM chunks WHERE job_id = ? AND state IN {IN_FLIGHT}", (job_id,))
        running = [Claim(_chunk(r), self._get_attempt(r["attempt_id"])) for r in rows.fetchall()]
        self._db.execute(
            "UPDATE attempts SET outcome = 'cancelled', ended_at = ?, error = ? "
            "WHERE job_id = ? AND outcome = 'running'",
            (now, why, job_id),
        )
        self._db.execute(
            "UPDATE chunks SET state = 'failed', attempt_id = NULL, error = ?, updated_at = ? "
            "WHERE job_id = ? AND state NOT IN ('verified', 'failed')",
            (why, now, job_id),
        )
        self._db.execute(
            "UPDATE jobs SET state = ?, error = ?, finished_at = ?, updated_at = ? WHERE id = ?",
            (state.value, error, now, now, job_id),
        )
        self._add_event(job_id, state.value, error=error, stopped=len(running))
        return running

    # -- jobs ---------------------------------------------------------------------------------

    @_in_thread
    def create_job(self, new: NewJob, chunks: Sequence[tuple[int, int]]) -> Job:
        """Record a queued job, its pending chunks and a "submitted" event in one transaction.

        ``chunks`` are absolute half-open frame ranges that tile ``[start_frame, end_frame)`` in order.
        """
        _check_plan(chunks, new.start_frame, new.end_frame, new.total_frames)
        values = asdict(new)
        try:
            values["params"] = json.dumps(new.params, sort_keys=True)
        except (TypeError, ValueError) as exc:
            raise StoreError(f"job parameters are not JSON: {exc}") from exc
        values.update(id="", state=JobState.QUEUED.value, created_at=self._clock())
        values["updated_at"] = now = values["created_at"]
        sql = f"INSERT INTO jobs ({', '.join(values)}) VALUES ({', '.join(':' + k for k in values)}) "
        with self._tx():
            while True:  # a new id on the (1 in 10^12 per pair) collision
                values["id"] = new_job_id()
                if self._db.execute(sql + "ON CONFLICT (id) DO NOTHING", values).rowcount:
                    break
            job_id = values["id"]
            self._db.executemany(
                "INSERT INTO chunks (job_id, idx, start_frame, end_frame, state, updated_at) "
                "VALUES (?, ?, ?, ?, 'pending', ?)",
                [(job_id, i, s, e, now) for i, (s, e) in enumerate(chunks)],
            )
            self._add_event(job_id, "submitted", frames=new.end_frame - new.start_frame, chunks=len(chunks))
            job = self._get_job(job_id)
        assert job is not None
        return job

    @_in_thread
    def get_job(self, job_id: str) -> Job | None:
        """Return the job, or None if there is no such job."""
        return self._get_job(job_id)

    @_in_thread
    def list_jobs(self, states: Iterable[JobState | str] | None = None, limit: int = 100) -> list[Job]:
        """Return up to ``limit`` jobs, newest first, optionally only those in ``states``."""
        wanted = [s.value for s in JobState] if states is None else [JobState(s).value for s in states]
        marks = ", ".join("?" * len(wanted))
        sql = f"SELECT * FROM jobs WHERE state IN ({marks}) ORDER BY created_at DESC, rowid DESC LIMIT ?"
        return [_job(row) for row in self._db.execute(sql, (*wanted, limit))]

    @_in_thread
    def get_chunks(self, job_id: str) -> list[Chunk]:
        """Return the job's chunks in frame order."""
        rows = self._db.execute("SELECT * FROM chunks WHERE job_id = ? ORDER BY idx", (job_id,))
        return [_chunk(r) for r in rows]

    @_in_thread
    def get_attempts(self, job_id: str) -> list[Attempt]:
        """Return every attempt at the job's chunks, oldest first."""
        rows = self._db.execute("SELECT * FROM attempts WHERE job_id = ? ORDER BY id", (job_id,))
        return [_attempt(r) for r in rows]

    @_in_thread
    def get_events(self, job_id: str | None = None, after_id: int = 0, limit: int = 1000) -> list[Event]:
        """Return events with id > ``after_id`` (of one job, or of all jobs), oldest first."""
        where = "id > ?" if job_id is None else "job_id = ? AND id > ?"
        args = (after_id,) if job_id is None else (job_id, after_id)
        rows = self._db.execute(f"SELECT * FROM events WHERE {where} ORDER BY id LIMIT ?", (*args, limit))
        return [_event(r) for r in rows]

    @_in_thread
    def add_event(self, job_id: str, kind: str, data: dict[str, Any] | None = None) -> Event:
        """Append an event to the job's log and return it."""
        with self._tx():
            row = self._one("SELECT * FROM events WHERE id = ?", (self._add_event(job_id, kind, **(data or {})),))
        assert row is not None
        return _event(row)

    @_in_thread
    def counts(self) -> tuple[dict[str, int], int]:
        """Return the number of jobs in each state and of chunks waiting for a host (for /metrics)."""
        jobs = {state: n for state, n in self._db.execute("SELECT state, count(*) FROM jobs GROUP BY state")}
        pending = self._db.execute("SELECT count(*) FROM chunks WHERE state = 'pending'").fetchone()[0]
        return jobs, int(pending)

    @_in_thread
    def job_all_verified(self, job_id: str) -> bool:
        """Return True when the job has chunks and every one of them is verified."""
        # Index seeks on (state, job_id) for a chunk that is not verified, not a count of the
        # job's chunks: this runs after every verified chunk.
        sql = (
            "SELECT EXISTS (SELECT 1 FROM chunks WHERE job_id = ?1) AND NOT EXISTS (SELECT 1 FROM chunks "
            "WHERE state IN ('pending', 'assigned', 'rendering', 'fetched', 'failed') AND job_id = ?1)"
        )
        return bool(self._db.execute(sql, (job_id,)).fetchone()[0])

    def _set_job(self, job_id: str, sets: str, args: Sequence[Any], when: str, **data: Any) -> Job | None:
        """Apply ``sets`` to the job if ``when`` holds, with an event named after its new state."""
        sql = f"UPDATE jobs SET {sets}, updated_at = ? WHERE id = ? AND {when} RETURNING *"
        with self._tx():
            row = self._one(sql, (*args, self._clock(), job_id))
            if row is not None:
                self._add_event(job_id, row["state"], **data)
        return None if row is None else _job(row)

    @_in_thread
    def mark_job_assembling(self, job_id: str) -> Job | None:
        """Move a running job whose chunks are all verified to assembling; None if it is not one."""
        all_verified = "NOT EXISTS (SELECT 1 FROM chunks WHERE job_id = jobs.id AND state != 'verified')"
        return self._set_job(job_id, "state = 'assembling'", (), f"state = 'running' AND {all_verified}")

    @_in_thread
    def mark_job_done(self, job_id: str, output_sha256: str) -> Job | None:
        """Record the assembled output of an assembling job; None if the job is not assembling."""
        sets = "state = 'done', output_sha256 = ?, error = NULL, finished_at = ?"
        args = (output_sha256, self._clock())
        return self._set_job(job_id, sets, args, "state = 'assembling'", sha256=output_sha256)

    def _stop_job(self, job_id: str, state: JobState, error: str) -> list[Claim] | None:
        with self._tx():
            job = self._get_job(job_id)
            if job is None:
                raise StoreError(f"there is no job {job_id}", path=str(self.path), job=job_id)
            return None if job.state.finished else self._finish_job(job_id, state, error)

    @_in_thread
    def mark_job_failed(self, job_id: str, error: str) -> list[Claim] | None:
        """Fail an unfinished job; return the chunks that were running (stop them); None if finished.

        Its other chunks become failed and running attempts cancelled; verified chunks stay verified.
        """
        return self._stop_job(job_id, JobState.FAILED, error)

    @_in_thread
    def cancel_job(self, job_id: str, reason: str = "cancelled") -> list[Claim] | None:
        """Cancel an unfinished job; return the chunks that were running (stop them); None if finished.

        Raises StoreError (with ``job`` set) if there is no such job.
        """
        return self._stop_job(job_id, JobState.CANCELLED, reason)

    # -- chunks -------------------------------------------------------------------------------

    @_in_thread
    def claim_chunk(
        self, host: str, *, avoid_own_failures: bool = False, labels: Sequence[str] = (), start: bool = False
    ) -> Claim | None:
        """Assign the next pending chunk to ``host`` and start an attempt; None if nothing is pending.

        Order: job priority (higher first), then submission (older first), then chunk index. With
        ``avoid_own_failures`` a chunk that already failed on ``host`` is left for other hosts. Only
        jobs whose required labels (``params["require"]``) are all among the host's ``labels`` are
        considered. The job becomes running if it was queued. With ``start`` the chunk goes on to
        rendering as :meth:`mark_chunk_rendering` would (for a caller that starts it right away).
        All of it is one transaction; the claim carries the job as it left it.
        """
        now = self._clock()
        avoid = (
            "AND NOT EXISTS (SELECT 1 FROM attempts a WHERE a.job_id = c.job_id AND a.chunk_index = c.idx "
            "AND a.host = ? AND a.outcome = 'failed') "
            if avoid_own_failures
            else ""
        )
        with self._tx():
            # The active jobs that need a label this host lacks: a query over active jobs only
            # (never per pending chunk), so a queue without such jobs pays nothing more below.
            unfit = [
                r[0]
                for r in self._db.execute(
                    # The LIKE is only a cheap prefilter: most jobs require nothing, and parsing
                    # their params JSON on every claim is what a claim would pay for them.
                    "SELECT DISTINCT u.id FROM jobs u, json_each(u.params, '$.require') r "
                    "WHERE u.state IN ('queued', 'running') AND u.params LIKE '%\"require\"%' "
                    "AND r.value NOT IN (SELECT value FROM json_each(?))",
                    (json.dumps(list(labels)),),
                )
            ]
            skip = "AND j.id NOT IN (SELECT value FROM json_each(?)) " if unfit else ""
            # Per active job (a few), its first pending chunk by the (state, job_id, idx) index: a
            # join over every pending chunk, sorted, cost a full scan of the queue per claim.
            # Parameters bind in text order: the subquery's host, then the unfit list.
            row = self._one(
                "SELECT j.id AS job_id, (SELECT c.idx FROM chunks c WHERE c.state = 'pending' AND c.job_id = j.id "
                f"{avoid}ORDER BY c.idx LIMIT 1) AS idx FROM jobs j "
                f"WHERE j.state IN ('queued', 'running') {skip}AND idx IS NOT NULL "
                "ORDER BY j.priority DESC, j.created_at, j.rowid LIMIT 1",
                (*((host,) if avoid_own_failures else ()), *((json.dumps(unfit),) if unfit else ())),
            )
            if row is None:
                return None
            job_id, index = row["job_id"], row["idx"]
            attempt_id = self._db.execute(
                "INSERT INTO attempts (job_id, chunk_index, host, started_at, outcome) VALUES (?, ?, ?, ?, 'running')",
                (job_id, index, host, now),
            ).lastrowid
            assert attempt_id is not None
            to = ChunkState.RENDERING if start else ChunkState.ASSIGNED
            chunk = self._one(
                "UPDATE chunks SET state = ?, host = ?, attempts = attempts + 1, attempt_id = ?, "
                "updated_at = ? WHERE job_id = ? AND idx = ? AND state = 'pending' RETURNING *",
                (to.value, host, attempt_id, now, job_id, index),
            )
            assert chunk is not None
            begin = "UPDATE jobs SET state = 'running', started_at = ?, updated_at = ? WHERE id = ? AND state = ?"
            if self._db.execute(begin, (now, now, job_id, JobState.QUEUED.value)).rowcount:
                self._add_event(job_id, "started")
            self._add_event(job_id, "chunk_assigned", chunk=index, host=host, attempt=attempt_id)
            if start:  # the two steps of a claim and a mark_chunk_rendering, in one write
                self._add_event(job_id, "chunk_rendering", chunk=index, attempt=attempt_id)
            # The attempt row as just inserted, without reading it back.
            attempt = Attempt(
                id=attempt_id, job_id=job_id, chunk_index=index, host=host, started_at=now, ended_at=None,
                outcome=AttemptOutcome.RUNNING, error=None, frames_per_s=None,
            )  # fmt: skip
            return Claim(_chunk(chunk), attempt, self._get_job(job_id))

    @_in_thread
    def has_pending_chunks(self) -> bool:
        """Return True if a queued or running job has a pending chunk (any host might claim it)."""
        sql = (
            "SELECT EXISTS (SELECT 1 FROM chunks c JOIN jobs j ON j.id = c.job_id "
            "WHERE c.state = 'pending' AND j.state IN ('queued', 'running'))"
        )
        return bool(self._db.execute(sql).fetchone()[0])

    def _advance(self, job_id: str, index: int, attempt_id: int, to: ChunkState) -> Chunk | None:
        with self._tx():
            chunk = self._move_chunk(job_id, index, attempt_id, to)
            if chunk is not None:
                self._add_event(job_id, f"chunk_{to.value}", chunk=index, attempt=attempt_id)
        return chunk

    @_in_thread
    def mark_chunk_rendering(self, job_id: str, index: int, attempt_id: int) -> Chunk | None:
        """Record that the host started rendering the chunk; None if the attempt no longer holds it."""
        return self._advance(job_id, index, attempt_id, ChunkState.RENDERING)

    @_in_thread
    def mark_chunk_fetched(self, job_id: str, index: int, attempt_id: int) -> Chunk | None:
        """Record that the chunk's file was copied back; None if the attempt no longer holds it."""
        return self._advance(job_id, index, attempt_id, ChunkState.FETCHED)

    @_in_thread
    def mark_chunk_verified(
        self,
        job_id: str,
        index: int,
        attempt_id: int,
        *,
        output_path: str,
        sha256: str,
        frames: int,
        fps: float | None = None,
    ) -> Chunk | None:
        """Record the chunk's checked output and end its attempt as verified; None if stale."""
        with self._tx():
            cols = {"output_path": output_path, "sha256": sha256, "frames": frames, "error": None}
            chunk = self._move_chunk(job_id, index, attempt_id, ChunkState.VERIFIED, **cols)
            if chunk is not None:
                self._end_attempt(attempt_id, AttemptOutcome.VERIFIED, None, fps)
                info = {"host": chunk.host, "frames": frames, "fps": fps}
                self._add_event(job_id, "chunk_verified", chunk=index, attempt=attempt_id, **info)
        return chunk

    @_in_thread
    def mark_chunk_failed(
        self,
        job_id: str,
        index: int,
        attempt_id: int,
        error: str,
        *,
        retry: bool = True,
        max_attempts: int | None = None,
    ) -> ChunkFailure | None:
        """End the attempt as failed; requeue the chunk, or fail it and its job; None if stale.

        The chunk goes back to pending if ``retry`` and it has failed fewer than ``max_attempts``
        times (default: the store's); interrupted, lost and cancelled attempts do not count.
        """
        limit = self.max_attempts if max_attempts is None else max_attempts
        held = f"SELECT 1 FROM chunks WHERE job_id = ? AND idx = ? AND attempt_id = ? AND state IN {IN_FLIGHT}"
        # Failures before the job's latest `renderd retry` do not count against the retried chunk.
        count = (
            "SELECT count(*) FROM attempts WHERE job_id = ? AND chunk_index = ? AND outcome = 'failed' "
            "AND id > coalesce((SELECT max(json_extract(data, '$.after_attempt')) FROM events "
            "WHERE job_id = ? AND kind = 'retried'), 0)"
        )
        with self._tx():
            if self._one(held, (job_id, index, attempt_id)) is None:
                return None
            self._end_attempt(attempt_id, AttemptOutcome.FAILED, error, None)
            failures: int = self._db.execute(count, (job_id, index, job_id)).fetchone()[0]
            requeue = retry and failures < limit
            to = ChunkState.PENDING if requeue else ChunkState.FAILED
            chunk = self._move_chunk(job_id, index, attempt_id, to, attempt_id=None, error=error)
            assert chunk is not None
            info = {"host": chunk.host, "error": error, "failures": failures, "retry": requeue}
            self._add_event(job_id, "chunk_failed", chunk=index, attempt=attempt_id, **info)
            if requeue:
                return ChunkFailure(chunk, job_failed=False)
            why = f"after {failures} failed attempts" if retry else "and cannot be retried"
            message = f"chunk {index} (frames {chunk.start}-{chunk.end - 1}) failed {why}: {error}"
            stopped = self._finish_job(job_id, JobState.FAILED, message)
            return ChunkFailure(chunk, job_failed=True, stopped=stopped)

    @_in_thread
    def mark_chunk_lost(self, job_id: str, index: int, attempt_id: int, error: str) -> Chunk | None:
        """Requeue a chunk whose host went away; the attempt ends "lost" and does not count as failed."""
        with self._tx():
            chunk = self._move_chunk(job_id, index, attempt_id, ChunkState.PENDING, attempt_id=None, error=error)
            if chunk is not None:
                self._end_attempt(attempt_id, AttemptOutcome.LOST, error, None)
                self._add_event(job_id, "chunk_lost", chunk=index, attempt=attempt_id, error=error)
        return chunk

    # -- speculative copies of straggling chunks ------------------------------------------------

    @_in_thread
    def start_speculative_attempt(self, job_id: str, index: int, host: str) -> Attempt | None:
        """Start a second attempt of an in-flight chunk on ``host``; None if the chunk is not in flight.

        The chunk stays held by its first attempt; whichever attempt verifies first wins
        (:meth:`mark_speculative_verified`).
        """
        now = self._clock()
        with self._tx():
            held = self._one(
                f"SELECT attempt_id FROM chunks WHERE job_id = ? AND idx = ? AND state IN {IN_FLIGHT}",
                (job_id, index),
            )
            if held is None:
                return None
            attempt_id = self._db.execute(
                "INSERT INTO attempts (job_id, chunk_index, host, started_at, outcome) VALUES (?, ?, ?, ?, 'running')",
                (job_id, index, host, now),
            ).lastrowid
            assert attempt_id is not None
            self._add_event(job_id, "chunk_speculative", chunk=index, host=host, attempt=attempt_id)
            return self._get_attempt(attempt_id)

    @_in_thread
    def mark_speculative_verified(
        self, job_id: str, index: int, attempt_id: int, *, output_path: str, sha256: str, frames: int, fps: float
    ) -> Chunk | None:
        """Let a speculative attempt win the chunk: the holder's attempt ends superseded; None if too late."""
        with self._tx():
            row = self._one(
                f"SELECT attempt_id FROM chunks WHERE job_id = ? AND idx = ? AND state IN {IN_FLIGHT}",
                (job_id, index),
            )
            running = self._one("SELECT host FROM attempts WHERE id = ? AND outcome = 'running'", (attempt_id,))
            if row is None or running is None:
                self._end_attempt(attempt_id, AttemptOutcome.CANCELLED, "another attempt finished first", None)
                return None
            holder = row["attempt_id"]
            if holder is not None and holder != attempt_id:
                why = f"superseded by speculative attempt {attempt_id}"
                self._end_attempt(holder, AttemptOutcome.CANCELLED, why, None)
            self._db.execute(
                "UPDATE chunks SET attempt_id = ?, host = ? WHERE job_id = ? AND idx = ?",
                (attempt_id, running["host"], job_id, index),
            )
            cols = {"output_path": output_path, "sha256": sha256, "frames": frames, "error": None}
            chunk = self._move_chunk(job_id, index, attempt_id, ChunkState.VERIFIED, **cols)
            assert chunk is not None
            self._end_attempt(attempt_id, AttemptOutcome.VERIFIED, None, fps)
            info = {"host": chunk.host, "frames": frames, "fps": fps, "speculative": True}
            self._add_event(job_id, "chunk_verified", chunk=index, attempt=attempt_id, **info)
            return chunk

    @_in_thread
    def end_attempt(self, attempt_id: int, outcome: AttemptOutcome, error: str | None = None) -> None:
        """End a still-running attempt that does not hold its chunk (a speculative copy that lost or failed)."""
        with self._tx():
            self._end_attempt(attempt_id, outcome, error, None)

    @_in_thread
    def recover(self) -> RecoveryReport:
        """Put back in order what a stopped or crashed daemon left; call once at start.

        In-flight chunks go back to pending and their running attempts end "interrupted";
        assembling jobs go back to running (assembly is redone). Verified chunks are untouched.
        """
        now, db = self._clock(), self._db
        with self._tx():
            sql = f"SELECT job_id, count(*) FROM chunks WHERE state IN {IN_FLIGHT} GROUP BY job_id"
            per_job: dict[str, int] = dict(db.execute(sql).fetchall())
            assembling = [r[0] for r in db.execute("SELECT id FROM jobs WHERE state = 'assembling'")]
            attempts = db.execute(
                "UPDATE attempts SET outcome = 'interrupted', ended_at = ?, error = 'coordinator restarted' "
                "WHERE outcome = 'running'",
                (now,),
            ).rowcount
            chunks = db.execute(
                "UPDATE chunks SET state = 'pending', attempt_id = NULL, updated_at = ? "
                f"WHERE state IN {IN_FLIGHT} AND state != 'verified'",
                (now,),
            ).rowcount
            sql = "UPDATE jobs SET state = 'running', updated_at = ? WHERE state = 'assembling'"
            jobs = db.execute(sql, (now,)).rowcount
            job_ids = sorted(set(per_job) | set(assembling))
            for job_id in job_ids:
                requeued, again = per_job.get(job_id, 0), job_id in assembling
                self._add_event(job_id, "recovered", chunks_requeued=requeued, reassembling=again)
        return RecoveryReport(chunks, attempts, jobs, job_ids)

    # -- hosts --------------------------------------------------------------------------------

    def _update_host(self, name: str, sql: str, args: Sequence[Any]) -> HostState:
        """Create the host if new, then apply ``sql`` (a plain ``?`` after ``?N`` in it is ``?N+1``)."""
        now = self._clock()
        with self._tx():
            insert = "INSERT INTO hosts (name, updated_at) VALUES (?, ?) ON CONFLICT (name) DO NOTHING"
            self._db.execute(insert, (name, now))
            row = self._one(f"UPDATE hosts SET {sql}, updated_at = ? WHERE name = ? RETURNING *", (*args, now, name))
        assert row is not None
        known = self._out_of_service
        if known is not None:
            out = row["drained"] or row["quarantined_until"] is not None
            if out or name in known:  # most writes (a success per chunk) leave it as it is
                known = {n: r for n, r in known.items() if n != name}
                if out:
                    known[name] = row
                self._out_of_service = dict(sorted(known.items()))
        return _host(row, now)

    @_in_thread
    def upsert_host(self, name: str, *, reachable: bool | None = None) -> HostState:
        """Make sure the host is known; record whether it is reachable if ``reachable`` is given."""
        if reachable is None:
            return self._update_host(name, "name = name", ())
        return self._update_host(name, "state = ?", ("up" if reachable else "down",))

    @_in_thread
    def get_host(self, name: str) -> HostState | None:
        """Return what is known about the host, or None."""
        row = self._one("SELECT * FROM hosts WHERE name = ?", (name,))
        return None if row is None else _host(row, self._clock())

    @_in_thread
    def list_hosts(self) -> list[HostState]:
        """Return every known host, by name."""
        now = self._clock()
        return [_host(row, now) for row in self._db.execute("SELECT * FROM hosts ORDER BY name")]

    def list_hosts_out_of_service(self) -> asyncio.Future[list[HostState]]:
        """Return the hosts that are drained or have a quarantine time set (ran out or not), by name.

        Every other host may take chunks: the scheduler asks this once a round instead of
        reading each host (a thousand store calls a round on a large farm). Only the store
        writes the hosts table, so after the first read the answer comes from what it keeps in
        memory, without a store call: the state of every host write made so far.
        """
        known = self._out_of_service
        if known is None or self._closed:
            return self._list_hosts_out_of_service()
        fut: asyncio.Future[list[HostState]] = asyncio.get_running_loop().create_future()
        now = self._clock()
        fut.set_result([_host(row, now) for row in known.values()])
        return fut

    @_in_thread
    def _list_hosts_out_of_service(self) -> list[HostState]:
        now = self._clock()
        sql = "SELECT * FROM hosts WHERE drained != 0 OR quarantined_until IS NOT NULL ORDER BY name"
        rows = self._db.execute(sql).fetchall()
        self._out_of_service = {row["name"]: row for row in rows}
        return [_host(row, now) for row in rows]

    @_in_thread
    def record_host_failure(
        self,
        name: str,
        error: str,
        *,
        quarantine_after: int,
        backoff_s: float,
        max_backoff_s: float = 3600.0,
        reachable: bool = True,
    ) -> HostState:
        """Count a failure in a row on the host; from the ``quarantine_after``-th, quarantine it.

        The quarantine lasts ``backoff_s``, doubling with each further failure up to
        ``max_backoff_s``; ``quarantine_after <= 0`` never quarantines.
        """
        # One UPDATE reads the old count and writes the new one, so concurrent reports both count.
        return self._update_host(
            name,
            "consecutive_failures = consecutive_failures + 1, last_error = ?, state = ?, "
            "quarantined_until = CASE WHEN ?3 > 0 AND consecutive_failures + 1 >= ?3 "
            "THEN ?4 + min(?5, ?6 * (1 << min(consecutive_failures + 1 - ?3, 32))) "
            "ELSE quarantined_until END",
            (error, "up" if reachable else "down", quarantine_after, self._clock(), max_backoff_s, backoff_s),
        )

    @_in_thread
    def record_host_success(self, name: str, speed_fps: float | None = None) -> HostState:
        """Clear the host's failures and quarantine; fold ``speed_fps`` into its average speed."""
        return self._update_host(
            name,
            "state = 'up', consecutive_failures = 0, quarantined_until = NULL, "
            "speed_fps = CASE WHEN ?1 IS NULL THEN speed_fps WHEN speed_fps IS NULL THEN ?1 "
            "ELSE ?2 * ?1 + (1 - ?2) * speed_fps END",
            (speed_fps, SPEED_WEIGHT),
        )

    @_in_thread
    def set_drained(self, name: str, drained: bool) -> HostState:
        """Drain the host (it gets no new chunks) or put it back in service."""
        return self._update_host(name, "drained = ?", (int(drained),))

    # -- retry, retention and hook bookkeeping -------------------------------------------------

    @_in_thread
    def retry_job(self, job_id: str) -> tuple[Job, int] | None:
        """Requeue a failed job's chunks that are not verified; return (job, chunks requeued), None if not failed.

        Verified chunks keep their file, attempts and checksum. The job goes back to queued, or to
        running when every chunk is verified already (only its assembly failed: it is redone).
        Earlier failed attempts no longer count against ``max_attempts`` (see mark_chunk_failed).
        """
        now = self._clock()
        with self._tx():
            job = self._get_job(job_id)
            if job is None or job.state is not JobState.FAILED:
                return None
            last = self._one("SELECT coalesce(max(id), 0) AS n FROM attempts WHERE job_id = ?", (job_id,))
            requeued = self._db.execute(
                "UPDATE chunks SET state = 'pending', host = NULL, attempt_id = NULL, error = NULL, updated_at = ? "
                "WHERE job_id = ? AND state != 'verified'",
                (now, job_id),
            ).rowcount
            state = JobState.QUEUED if requeued else JobState.RUNNING
            self._db.execute(
                "UPDATE jobs SET state = ?, error = NULL, finished_at = NULL, updated_at = ? WHERE id = ?",
                (state.value, now, job_id),
            )
            self._add_event(job_id, "retried", chunks_requeued=requeued, after_attempt=last["n"] if last else 0)
            job = self._get_job(job_id)
        assert job is not None
        return job, requeued

    @_in_thread
    def finished_before(self, before: float, limit: int = 1000) -> list[Job]:
        """Return up to ``limit`` finished jobs whose ``finished_at`` is before ``before``, oldest first."""
        rows = self._db.execute(
            "SELECT * FROM jobs WHERE state IN ('done', 'failed', 'cancelled') AND finished_at < ? "
            "ORDER BY finished_at LIMIT ?",
            (before, limit),
        )
        return [_job(r) for r in rows]

    @_in_thread
    def delete_finished_job(self, job_id: str) -> bool:
        """Delete a finished job with its chunks, attempts and events; False if it is not finished (or gone)."""
        with self._tx():
            sql = "DELETE FROM jobs WHERE id = ? AND state IN ('done', 'failed', 'cancelled')"
            return bool(self._db.execute(sql, (job_id,)).rowcount)

    @_in_thread
    def last_event_id(self) -> int:
        """Return the id of the newest event (0 if there is none)."""
        row = self._one("SELECT coalesce(max(id), 0) AS n FROM events")
        return int(row["n"]) if row else 0

    @_in_thread
    def unsettled_hooks(self) -> list[Event]:
        """Return the "hook_queued" events with no "hook_delivered"/"hook_failed" of the same ``key``, oldest first."""
        rows = self._db.execute(
            "SELECT * FROM events q WHERE q.kind = 'hook_queued' AND NOT EXISTS (SELECT 1 FROM events o "
            "WHERE o.job_id = q.job_id AND o.kind IN ('hook_delivered', 'hook_failed') "
            "AND json_extract(o.data, '$.key') = json_extract(q.data, '$.key')) ORDER BY q.id"
        )
        return [_event(r) for r in rows]
