"""Assembly of a job whose chunks are all verified: concat, verify, the soundtrack, move into place.

:func:`assemble_output` is the whole file-producing step, with no scheduler state, so the
scheduler only marks the job assembling before and done or failed after.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
from fractions import Fraction
from pathlib import Path

from renderd.composition import Overrides
from renderd.coordinator.models import Chunk, Job
from renderd.encode import concat_videos, sha256_file_async
from renderd.errors import RenderdError
from renderd.frames import Fps, FrameRange
from renderd.hyperframes.audio import add_composition_audio


async def assemble_output(job: Job, chunks: list[Chunk], timeout: float) -> tuple[str, int]:
    """Join the verified chunks into the job's output (atomically); return (sha256, frames)."""
    parts = [Path(c.output_path or "") for c in sorted(chunks, key=lambda c: c.index)]
    out = Path(job.output)
    job_span = FrameRange(job.start_frame, job.end_frame)
    tmp = out.with_name(f".{out.name}.renderd-{job.id}.partial.mp4")
    try:
        async with asyncio.timeout(timeout):
            video = await concat_videos(parts, tmp)
            if video.frames != job.frames:
                raise RenderdError(f"assembled video has {video.frames} frames, expected {job.frames}")
            # The soundtrack is mixed once over the job's frames, after concatenation.
            await add_composition_audio(Path(job.composition), job_overrides(job), job_span, tmp)
        digest = await sha256_file_async(tmp)
        await asyncio.to_thread(os.replace, tmp, out)
    finally:
        with contextlib.suppress(FileNotFoundError):
            await asyncio.to_thread(tmp.unlink)
    return digest, video.frames


def job_overrides(job: Job) -> Overrides:
    """Return the metadata the job was planned with, to load its composition the same way."""
    p = job.params
    return Overrides(
        width=int(p["width"]), height=int(p["height"]), fps=Fps.parse(p["fps"]), duration=Fraction(p["duration"])
    )
