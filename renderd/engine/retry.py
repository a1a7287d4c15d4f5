"""Capture a chunk to disk, then find and re-capture missing frames with fewer workers."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from renderd.engine.pool import CapturePool, FrameCallback, SplitCallback
from renderd.errors import CaptureError
from renderd.frames import (
    FrameRange,
    build_missing_frame_retry_batches,
    distribute_frames,
    find_missing_frame_ranges,
)

log = logging.getLogger(__name__)

MAX_ATTEMPTS = 4


@dataclass(frozen=True, slots=True)
class RetryNotice:
    """A retry pass is starting: which frames (absolute ranges), with how many workers, why."""

    attempt: int
    ranges: list[tuple[int, int]]
    frames: int
    workers: int
    reason: str


@dataclass(frozen=True, slots=True)
class CaptureOutcome:
    """How a chunk's capture went."""

    attempts: int
    retried_frames: int
    final_workers: int


async def execute_disk_capture_with_adaptive_retry(
    pool: CapturePool,
    chunk: FrameRange,
    frames_dir: Path,
    workers: int,
    *,
    on_frame: FrameCallback,
    on_retry: Callable[[RetryNotice], None] | None = None,
    on_split: SplitCallback | None = None,
    max_attempts: int = MAX_ATTEMPTS,
) -> CaptureOutcome:
    """Capture ``chunk`` into ``frames_dir`` (LOCAL names) until no frame is missing.

    After each pass the frames on disk are checked; missing or broken ones are re-captured in
    batches built from their local ranges (shifted back to absolute frames). Workers halve
    after a pass with timeouts or crashed pages. Gives up after ``max_attempts`` retries, or
    as soon as a retry makes no progress, with an error naming the frames still missing.
    """
    total = len(chunk)
    ext = pool.settings.ext
    pool.begin_chunk()
    tasks = distribute_frames(total, workers, frames_dir, chunk.start)
    report = await pool.run_pass(tasks, workers, on_frame, on_split)
    attempt = 0
    retried = 0
    previous_missing: int | None = None
    while True:
        missing = await asyncio.to_thread(find_missing_frame_ranges, frames_dir, total, ext)
        count = sum(b - a for a, b in missing)
        if count == 0:
            return CaptureOutcome(attempt + 1, retried, workers)
        absolute = [(a + chunk.start, b + chunk.start) for a, b in missing]
        no_progress = previous_missing is not None and count >= previous_missing
        if attempt >= max_attempts or no_progress:
            why = "; ".join(report.reasons[-3:]) or "no error reported"
            raise CaptureError(
                f"{count} frame(s) still missing after {attempt + 1} attempt(s): "
                f"{_ranges_text(absolute)} (last errors: {why})",
                frames=absolute,
            )
        if report.timeouts or report.crashes:
            workers = max(1, workers // 2)
        attempt += 1
        retried += count
        reason = report.reasons[-1] if report.reasons else "frames missing on disk"
        notice = RetryNotice(attempt, absolute, count, workers, reason)
        log.warning(
            "retry %d: %d frame(s) %s with %d worker(s) (%s)",
            attempt,
            count,
            _ranges_text(absolute),
            workers,
            reason,
        )
        if on_retry is not None:
            on_retry(notice)
        previous_missing = count
        batches = build_missing_frame_retry_batches(missing, workers, frames_dir, attempt, chunk.start)
        report = await pool.run_pass(batches, workers, on_frame, on_split)


def _ranges_text(ranges: list[tuple[int, int]], limit: int = 6) -> str:
    parts = [f"{a}" if b == a + 1 else f"{a}-{b - 1}" for a, b in ranges[:limit]]
    more = f" and {len(ranges) - limit} more range(s)" if len(ranges) > limit else ""
    return "frames " + ", ".join(parts) + more
