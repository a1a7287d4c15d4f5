"""Split a job's frames into chunks sized by expected render speed and the slots available."""

from __future__ import annotations

import math
from dataclasses import dataclass

from renderd.frames import FrameRange, plan_chunks

# Until a host has reported its speed: a conservative 1080p figure (frames/s per slot).
DEFAULT_SLOT_FPS = 6.0


@dataclass(frozen=True, slots=True)
class ChunkPolicy:
    """How big chunks should be."""

    target_chunk_seconds: float = 20.0
    min_chunk_frames: int = 30
    max_chunk_frames: int = 900


def plan_job_chunks(
    span: FrameRange,
    policy: ChunkPolicy,
    *,
    slots: int,
    slot_fps: float | None = None,
    chunks: int | None = None,
    frames_per_chunk: int | None = None,
) -> list[FrameRange]:
    """Return the chunks of ``span``.

    An explicit ``chunks`` or ``frames_per_chunk`` wins. Otherwise a chunk holds about
    ``target_chunk_seconds`` of rendering at the slots' measured speed, clamped to the policy's
    bounds, rounded up to a multiple of the slots (so no slot idles through a last round) when
    the frames allow chunks of ``min_chunk_frames``.
    """
    total = len(span)
    if chunks is not None or frames_per_chunk is not None:
        return plan_chunks(total, chunks=chunks, frames_per_chunk=frames_per_chunk, range_start=span.start)
    fps = slot_fps if slot_fps and slot_fps > 0 else DEFAULT_SLOT_FPS
    size = int(policy.target_chunk_seconds * fps)
    size = max(policy.min_chunk_frames, min(policy.max_chunk_frames, size))
    count = math.ceil(total / size)
    # A whole number of rounds over the slots: 3 chunks on 2 slots would leave one slot idle for
    # the whole last round. Never below the minimum chunk size, though.
    slots = max(1, slots)
    count = slots * math.ceil(count / slots)
    count = min(count, max(1, total // max(1, policy.min_chunk_frames)))
    return plan_chunks(total, chunks=count, range_start=span.start)
