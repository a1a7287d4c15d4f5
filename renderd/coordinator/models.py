"""Records the coordinator keeps in its store: jobs, chunks, attempts, events and hosts.

Every record is a frozen dataclass built by :mod:`renderd.coordinator.store`; ``to_dict()`` gives
the JSON-friendly form the control socket sends (enums become their string values).

Job ids are strings ``"j-"`` followed by 10 lowercase hex digits (40 random bits, see
:func:`new_job_id`): short enough to type in ``renderd cancel j-3fa9c01b7e``, not guessable from
the submission order, and unique in practice (the store retries on the rare collision).
"""

from __future__ import annotations

import secrets
from dataclasses import asdict, dataclass, field
from enum import Enum, StrEnum
from typing import Any, cast


class JobState(StrEnum):
    """Where a job is in ``queued -> running -> assembling -> done | failed | cancelled``."""

    QUEUED = "queued"
    RUNNING = "running"
    ASSEMBLING = "assembling"
    DONE = "done"
    FAILED = "failed"
    CANCELLED = "cancelled"

    @property
    def finished(self) -> bool:
        """Return True for the terminal states (done, failed, cancelled)."""
        return self in (JobState.DONE, JobState.FAILED, JobState.CANCELLED)


class ChunkState(StrEnum):
    """Where a chunk is in ``pending -> assigned -> rendering -> fetched -> verified``."""

    PENDING = "pending"
    ASSIGNED = "assigned"
    RENDERING = "rendering"
    FETCHED = "fetched"
    VERIFIED = "verified"
    FAILED = "failed"

    @property
    def in_flight(self) -> bool:
        """Return True while a host holds the chunk (assigned, rendering or fetched)."""
        return self in (ChunkState.ASSIGNED, ChunkState.RENDERING, ChunkState.FETCHED)


class AttemptOutcome(StrEnum):
    """How one run of a chunk on a host ended (``running`` until it does)."""

    RUNNING = "running"
    VERIFIED = "verified"
    FAILED = "failed"
    INTERRUPTED = "interrupted"  # the daemon stopped or crashed while it ran
    CANCELLED = "cancelled"  # its job was cancelled or failed
    LOST = "lost"  # the host went away; not the chunk's fault


class HostStatus(StrEnum):
    """A render host's effective state, as the scheduler should read it."""

    UP = "up"
    DOWN = "down"
    QUARANTINED = "quarantined"
    DRAINED = "drained"


def new_job_id() -> str:
    """Return a fresh random job id, ``"j-"`` + 10 hex digits."""
    return "j-" + secrets.token_hex(5)


def _json_dict(items: list[tuple[str, Any]]) -> dict[str, Any]:
    return {k: (v.value if isinstance(v, Enum) else v) for k, v in items}


class _Record:
    """Mixin: ``to_dict()`` for the frozen dataclasses below."""

    __slots__ = ()

    def to_dict(self) -> dict[str, Any]:
        """Return the record as a JSON-friendly dict (enums as their string values)."""
        return asdict(cast(Any, self), dict_factory=_json_dict)


@dataclass(frozen=True, slots=True)
class NewJob(_Record):
    """What a submission asks for: everything about a job the store does not decide itself."""

    composition: str
    output: str
    params: dict[str, Any]
    total_frames: int
    start_frame: int
    end_frame: int
    submitted_by_uid: int
    priority: int = 0
    label: str | None = None


@dataclass(frozen=True, slots=True)
class Job(_Record):
    """A submitted render: a composition, the frames ``[start_frame, end_frame)`` and its outputs.

    ``params`` holds the metadata the job was planned with (fps, width, height, duration, the
    prepared copy) and every render setting (settings.RenderSettings fields, flat); stored as JSON.
    """

    id: str
    state: JobState
    composition: str
    output: str
    params: dict[str, Any]
    priority: int
    label: str | None
    submitted_by_uid: int
    created_at: float
    updated_at: float
    started_at: float | None
    finished_at: float | None
    total_frames: int
    start_frame: int
    end_frame: int
    error: str | None
    output_sha256: str | None

    @property
    def frames(self) -> int:
        """Return how many frames the job renders."""
        return self.end_frame - self.start_frame


@dataclass(frozen=True, slots=True)
class Chunk(_Record):
    """One half-open range ``[start, end)`` of absolute frames of a job, rendered on one host.

    ``attempt_id`` is the attempt that currently holds (or verified) the chunk; a report from any
    other attempt is stale and is ignored by the store. ``attempts`` counts every claim.
    """

    job_id: str
    index: int
    start: int
    end: int
    state: ChunkState
    host: str | None
    attempts: int
    attempt_id: int | None
    output_path: str | None
    sha256: str | None
    frames: int | None
    updated_at: float
    error: str | None


@dataclass(frozen=True, slots=True)
class Attempt(_Record):
    """One run of a chunk on a host."""

    id: int
    job_id: str
    chunk_index: int
    host: str
    started_at: float
    ended_at: float | None
    outcome: AttemptOutcome
    error: str | None
    frames_per_s: float | None


@dataclass(frozen=True, slots=True)
class Event(_Record):
    """One entry of a job's event log (what ``renderd watch`` streams)."""

    id: int
    job_id: str
    ts: float
    kind: str
    data: dict[str, Any]


@dataclass(frozen=True, slots=True)
class HostState(_Record):
    """What the coordinator remembers about a render host across restarts.

    ``state`` is derived when read: ``drained`` if drained, else ``quarantined`` while
    ``quarantined_until`` is in the future, else the last known reachability (``up``/``down``).
    ``speed_fps`` is a moving average of the frames per second of its recent verified chunks.
    """

    name: str
    state: HostStatus
    drained: bool
    consecutive_failures: int
    quarantined_until: float | None
    last_error: str | None
    speed_fps: float | None
    updated_at: float


@dataclass(frozen=True, slots=True)
class Claim(_Record):
    """A chunk held by a host together with the attempt that runs it."""

    chunk: Chunk
    attempt: Attempt
    # The chunk's job as the claim left it (a claim returns it: no second store call for it).
    job: Job | None = field(default=None, compare=False)


@dataclass(frozen=True, slots=True)
class ChunkFailure(_Record):
    """What recording a chunk failure did.

    ``chunk.state`` is ``pending`` when it will be retried, ``failed`` when it will not; then the
    job has failed too (``job_failed``) and ``stopped`` lists the other chunks that were running
    for it, whose attempts are now cancelled: the caller must stop them.
    """

    chunk: Chunk
    job_failed: bool
    stopped: list[Claim] = field(default_factory=list)


@dataclass(frozen=True, slots=True)
class RecoveryReport(_Record):
    """What :meth:`Store.recover` put back in order at daemon start."""

    chunks_requeued: int
    attempts_interrupted: int
    jobs_reassembling: int
    job_ids: list[str] = field(default_factory=list)
