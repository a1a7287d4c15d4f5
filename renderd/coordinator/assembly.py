"""Assembly of a job whose chunks are all verified: concat, verify, the soundtrack, move into place.

:func:`assemble_output` is the whole file-producing step, with no scheduler state, so the
scheduler only marks the job assembling before and done or failed after. It runs no browser:
the soundtrack is mixed by ffmpeg from the plan an agent read at submission.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from pathlib import Path

from renderd.composition import load_composition
from renderd.coordinator.models import Chunk, Job
from renderd.encode import concat_videos, sha256_file_async
from renderd.errors import RenderdError
from renderd.frames import Fps, FrameRange
from renderd.hyperframes.audio import add_planned_audio, plan_from_json
from renderd.hyperframes.media import AudioTrack
from renderd.outputs import Owner, install_output

log = logging.getLogger(__name__)


async def assemble_output(job: Job, chunks: list[Chunk], work_dir: Path, timeout: float) -> tuple[str, int]:
    """Join the verified chunks into the job's output (atomically); return (sha256, frames).

    ``work_dir`` is the job's own directory, which only the daemon writes: the output is made
    there and renamed into place for its submitter (see :func:`renderd.outputs.install_output`).
    """
    parts = [Path(c.output_path or "") for c in sorted(chunks, key=lambda c: c.index)]
    out = Path(job.output)
    job_span = FrameRange(job.start_frame, job.end_frame)
    tmp = work_dir / "output.partial.mp4"
    await asyncio.to_thread(tmp.parent.mkdir, parents=True, exist_ok=True)
    try:
        async with asyncio.timeout(timeout):
            video = await concat_videos(parts, tmp)
            if video.frames != job.frames:
                raise RenderdError(f"assembled video has {video.frames} frames, expected {job.frames}")
            # The soundtrack is mixed once over the job's frames, after concatenation.
            await add_planned_audio(await audio_plan(job), job_span, Fps.parse(job.params["fps"]), tmp)
        digest = await sha256_file_async(tmp)
        owner = await asyncio.to_thread(Owner.of_uid, job.submitted_by_uid)
        await asyncio.to_thread(install_output, tmp, out, owner)
    finally:
        with contextlib.suppress(FileNotFoundError):
            await asyncio.to_thread(tmp.unlink)
    return digest, video.frames


async def audio_plan(job: Job) -> tuple[AudioTrack, ...]:
    """Return the job's stored audio tracks, their files under this host's copy of the composition."""
    if "audio" not in job.params:
        log.warning("[job=%s] planned by an older renderd without an audio plan: assembled without sound", job.id)
        return ()
    comp = await asyncio.to_thread(load_composition, job.params.get("prepared") or job.composition)
    return await asyncio.to_thread(plan_from_json, job.params["audio"], comp.root)
