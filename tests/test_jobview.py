"""Job pace (fps, eta_s, elapsed_s), chunk display states and per-job attempt numbers (pure functions)."""

from __future__ import annotations

import pytest

from renderd.coordinator.jobview import chunk_state, number_attempts, pace


def test_running_job_rate_and_time_left() -> None:
    p = pace(state="running", started_at=100.0, finished_at=None, frames_done=60, frames=120, now=110.0)
    assert p.elapsed_s == 10.0 and p.fps == 6.0 and p.eta_s == 10.0


def test_queued_job_has_no_pace() -> None:
    p = pace(state="queued", started_at=None, finished_at=None, frames_done=0, frames=120, now=110.0)
    assert p.to_dict() == {"elapsed_s": None, "fps": None, "eta_s": None}


def test_running_job_without_frames_has_unknown_eta() -> None:
    p = pace(state="running", started_at=100.0, finished_at=None, frames_done=0, frames=120, now=105.0)
    assert p.fps is None and p.eta_s is None and p.elapsed_s == 5.0


@pytest.mark.parametrize(("state", "eta"), [("done", 0.0), ("failed", None), ("cancelled", None)])
def test_finished_job_time_stops_at_its_end(state: str, eta: float | None) -> None:
    p = pace(
        state=state, started_at=100.0, finished_at=120.0, frames_done=40, frames=120 if eta is None else 40, now=999
    )
    assert p.elapsed_s == 20.0 and p.fps == 2.0 and p.eta_s == eta


def test_cancelled_job_shows_unfinished_chunks_cancelled() -> None:
    unfinished = ("pending", "assigned", "rendering", "fetched", "failed")
    assert [chunk_state(s, "cancelled") for s in unfinished] == ["cancelled"] * 5
    assert chunk_state("verified", "cancelled") == "verified"
    assert chunk_state("failed", "failed") == "failed"
    assert chunk_state("pending", "running") == "pending"


def test_attempts_are_numbered_within_the_job() -> None:
    rows = [
        {"id": 57, "started_at": 3.0, "chunk_index": 1},
        {"id": 41, "started_at": 1.0, "chunk_index": 0},
        {"id": 58, "started_at": 3.0, "chunk_index": 2},
    ]
    numbered = number_attempts(rows)
    assert [(a["number"], a["id"]) for a in numbered] == [(1, 41), (2, 57), (3, 58)]
