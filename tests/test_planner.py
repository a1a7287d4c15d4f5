"""Chunk planning for jobs: speed- and slot-aware sizes, explicit plans win."""

from __future__ import annotations

import pytest

from renderd.coordinator.planner import ChunkPolicy, plan_job_chunks
from renderd.frames import FrameRange


def sizes(total: int, slots: int, **kw: object) -> list[int]:
    return [len(c) for c in plan_job_chunks(FrameRange(0, total), ChunkPolicy(), slots=slots, **kw)]  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("total", "slots", "expected"),
    [
        (300, 2, [75] * 4),  # 120-frame chunks would be 3: rounded up to 2 full rounds over 2 slots
        (150, 2, [75, 75]),
        (120, 3, [40, 40, 40]),
        (40, 3, [40]),  # never below min_chunk_frames (30)
        (10, 4, [10]),
    ],
)
def test_default_plan_fills_whole_rounds_of_slots(total: int, slots: int, expected: list[int]) -> None:
    assert sizes(total, slots) == expected


def test_faster_hosts_get_bigger_chunks() -> None:
    slow = sizes(3000, 2, slot_fps=2.0)
    fast = sizes(3000, 2, slot_fps=20.0)
    assert max(fast) > max(slow)
    assert max(fast) <= ChunkPolicy().max_chunk_frames
    assert sum(slow) == sum(fast) == 3000
    assert len(slow) % 2 == 0 and len(fast) % 2 == 0


def test_explicit_plans_win_and_keep_absolute_frames() -> None:
    chunks = plan_job_chunks(FrameRange(50, 150), ChunkPolicy(), slots=8, chunks=3)
    assert [(c.start, c.end) for c in chunks] == [(50, 84), (84, 117), (117, 150)]
    chunks = plan_job_chunks(FrameRange(0, 100), ChunkPolicy(), slots=1, frames_per_chunk=40)
    assert [len(c) for c in chunks] == [40, 40, 20]
