"""Assembly of a job whose chunks are all verified: join, verify, the soundtrack, move into place.

:func:`assemble_output` is the whole file-producing step, with no scheduler state, so the
scheduler only marks the job assembling before and done or failed after. It runs no browser:
renderd.assemble joins the parts with ffmpeg in the job's format, and the soundtrack is mixed
from the plan an agent read at submission.
"""

from __future__ import annotations

import asyncio
import logging
from pathlib import Path

from renderd.assemble import assemble
from renderd.composition import load_composition
from renderd.coordinator.claims import job_delivery, job_settings
from renderd.coordinator.models import Chunk, Job
from renderd.frames import Fps, FrameRange
from renderd.hyperframes.audio import plan_from_json
from renderd.hyperframes.media import AudioTrack
from renderd.outputs import Owner

log = logging.getLogger(__name__)


async def assemble_output(job: Job, chunks: list[Chunk], work_dir: Path, timeout: float) -> tuple[str, int]:
    """Join the verified chunks into the job's output (atomically); return (sha256, frames).

    ``work_dir`` is the job's own directory, which only the daemon writes: the output is made
    there and renamed into place for its submitter (see :func:`renderd.outputs.install_output`).
    """
    parts = [Path(c.output_path or "") for c in sorted(chunks, key=lambda c: c.index)]
    await asyncio.to_thread(work_dir.mkdir, parents=True, exist_ok=True)
    scale = job_settings(job).scale
    size = (round(int(job.params["width"]) * scale), round(int(job.params["height"]) * scale))
    owner = await asyncio.to_thread(Owner.of_uid, job.submitted_by_uid)
    async with asyncio.timeout(timeout):
        made = await assemble(
            parts,
            work_dir,
            Path(job.output),
            delivery=job_delivery(job),
            span=FrameRange(job.start_frame, job.end_frame),
            fps=Fps.parse(job.params["fps"]),
            size=size,
            # The soundtrack is mixed once over the job's frames, after joining.
            audio=await audio_plan(job),
            owner=owner,
        )
    return made.sha256, made.frames


async def audio_plan(job: Job) -> tuple[AudioTrack, ...]:
    """Return the job's stored audio tracks, their files under this host's copy of the composition."""
    if "audio" not in job.params:
        log.warning("[job=%s] planned by an older renderd without an audio plan: assembled without sound", job.id)
        return ()
    comp = await asyncio.to_thread(load_composition, job.params.get("prepared") or job.composition)
    return await asyncio.to_thread(plan_from_json, job.params["audio"], comp.root)
