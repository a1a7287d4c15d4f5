"""How a job looks to the people watching it: rate, time left, and the chunk and attempt rows.

Pure functions of what the store and the scheduler know, so that `renderd status`, `list`,
`watch` and the web dashboard show the same numbers, and tests need no daemon.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any


@dataclass(frozen=True, slots=True)
class Pace:
    """A job's rate and time: ``fps`` over its running time, ``eta_s`` None while unknown."""

    elapsed_s: float | None
    fps: float | None
    eta_s: float | None

    def to_dict(self) -> dict[str, float | None]:
        """The summary keys `status --json`, `list --json` and `watch --json` carry."""
        return {"elapsed_s": self.elapsed_s, "fps": self.fps, "eta_s": self.eta_s}


def pace(
    *,
    state: str,
    started_at: float | None,
    finished_at: float | None,
    frames_done: int,
    frames: int,
    now: float,
) -> Pace:
    """Return a job's elapsed running time, frames per second over it, and the seconds left.

    The running time starts when the first chunk was claimed (``started_at``; a queued job has
    none) and ends when the job finished. ``eta_s`` is 0 for a done job, None for a failed or
    cancelled one (it will not finish) and for a running one that has no frames yet.
    """
    if started_at is None:
        return Pace(None, None, None)
    end = finished_at if finished_at is not None else now
    elapsed = max(0.0, end - started_at)
    fps = frames_done / elapsed if elapsed > 0 and frames_done > 0 else None
    if state == "done":
        eta: float | None = 0.0
    elif state in ("failed", "cancelled") or fps is None:
        eta = None
    else:
        eta = max(0, frames - frames_done) / fps
    return Pace(round(elapsed, 3), None if fps is None else round(fps, 3), None if eta is None else round(eta, 1))


def chunk_state(stored: str, job_state: str) -> str:
    """The state to show for a chunk: ``cancelled`` for one its cancelled job never finished.

    The store ends such a chunk as ``failed`` (it ends every unverified chunk of a stopped job
    so); a chunk that really failed for good would have failed the job instead, so in a
    cancelled job "failed" only ever means "stopped by the cancel".
    """
    if job_state == "cancelled" and stored != "verified":
        return "cancelled"
    return stored


def number_attempts(attempts: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Return the attempts in the order they started, each with ``number`` 1..n within the job.

    The store's ``id`` counts over every job of the daemon; people read "attempt 3 of this job".
    """
    ordered = sorted(attempts, key=lambda a: (a["started_at"], a["id"]))
    return [{**a, "number": i} for i, a in enumerate(ordered, 1)]
