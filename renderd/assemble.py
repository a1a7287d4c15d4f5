"""Parts to output: the last, ffmpeg-only step of every render, in the format it delivers.

`renderd render` and the daemon both end here (:func:`assemble`), and an agent that rendered a
chunk in several local parts joins them into the one part it hands back (:func:`join_parts`).
No browser: the daemon runs this, and the soundtrack comes from an audio plan of files.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import logging
import shutil
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from renderd.encode import (
    VideoInfo,
    concat_videos,
    encode_gif,
    extract_png_parts,
    pack_png_part,
    probe_video,
    sha256_file,
)
from renderd.errors import RenderdError
from renderd.formats import Delivery
from renderd.frames import Fps, FrameRange, frame_file_name
from renderd.hyperframes.audio import add_planned_audio
from renderd.hyperframes.media import AudioTrack
from renderd.outputs import Owner, install_output, install_output_dir

log = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True)
class Assembled:
    """What the output holds once it is in place."""

    frames: int
    width: int
    height: int
    duration_s: float
    sha256: str  # of the file; for a png-sequence, of its names and files (sequence_digest)


async def assemble(
    parts: Sequence[Path],
    work: Path,
    out: Path,
    *,
    delivery: Delivery,
    span: FrameRange,
    fps: Fps,
    size: tuple[int, int] | None = None,
    audio: Sequence[AudioTrack] = (),
    owner: Owner | None = None,
) -> Assembled:
    """Make ``out`` from the verified ``parts`` of ``span`` and move it into place (atomically).

    Everything is written inside ``work``, a directory only renderd writes, then renamed to
    ``out`` (see renderd.outputs). ``size``: the frame size the parts must have, when known.
    ``audio`` is mixed in where the format carries sound.
    """
    if audio and delivery.audio_codec is None:
        log.warning("%s carries no sound: the composition's audio is left out", delivery.format)
    if delivery.is_sequence:
        return await _assemble_sequence(parts, work, out, span, fps, size, owner)
    tmp = work / f"output.partial.{'gif' if delivery.format == 'gif' else delivery.part_ext}"
    try:
        if delivery.format == "gif":
            video = await encode_gif(parts, tmp, frames=len(span), fps=fps)
        else:
            video = await concat_videos(parts, tmp, container=delivery.container)
            if audio and delivery.audio_codec is not None:
                video = await add_planned_audio(audio, span, fps, tmp) or video
        _check_assembled(video.frames, video.width, video.height, span, size)
        digest = await asyncio.to_thread(sha256_file, tmp)
        await asyncio.to_thread(install_output, tmp, out, owner)
        return Assembled(video.frames, video.width, video.height, float(video.duration), digest)
    finally:
        with contextlib.suppress(FileNotFoundError):
            await asyncio.to_thread(tmp.unlink)


async def join_parts(parts: Sequence[Path], out: Path, *, delivery: Delivery, span: FrameRange) -> VideoInfo:
    """Join local ``parts`` into the one part ``out`` of ``span`` (an agent's chunk), without re-encoding."""
    if delivery.is_sequence:
        staging = out.with_name(f".{out.name}.d")
        try:
            await asyncio.to_thread(_fresh_dir, staging)
            await asyncio.to_thread(extract_png_parts, parts, staging, range(span.start, span.end))
            names = [frame_file_name(i, "png") for i in range(span.start, span.end)]
            first = await probe_video(staging / names[0])
            await asyncio.to_thread(pack_png_part, [(staging / n, n) for n in names], out)
            return VideoInfo(
                frames=len(span),
                width=first.width,
                height=first.height,
                fps=first.fps,
                duration=0.0,
                codec="png",
                pix_fmt=first.pix_fmt,
            )
        finally:
            await asyncio.to_thread(shutil.rmtree, staging, True)
    return await concat_videos(parts, out, container=delivery.container)


def sequence_digest(directory: Path) -> str:
    """Return the SHA-256 over a png-sequence's file names and file hashes, in name order (blocking)."""
    h = hashlib.sha256()
    for path in sorted(directory.iterdir()):
        h.update(f"{path.name}\0{sha256_file(path)}\n".encode())
    return h.hexdigest()


async def _assemble_sequence(
    parts: Sequence[Path],
    work: Path,
    out: Path,
    span: FrameRange,
    fps: Fps,
    size: tuple[int, int] | None,
    owner: Owner | None,
) -> Assembled:
    staging = work / "output.partial.d"
    try:
        await asyncio.to_thread(_fresh_dir, staging)
        await asyncio.to_thread(extract_png_parts, parts, staging, range(span.start, span.end))
        first = await probe_video(staging / frame_file_name(span.start, "png"))
        _check_assembled(len(span), first.width, first.height, span, size)
        digest = await asyncio.to_thread(sequence_digest, staging)
        await asyncio.to_thread(install_output_dir, staging, out, owner)
        return Assembled(len(span), first.width, first.height, len(span) * fps.den / fps.num, digest)
    finally:
        await asyncio.to_thread(shutil.rmtree, staging, True)


def _check_assembled(frames: int, width: int, height: int, span: FrameRange, size: tuple[int, int] | None) -> None:
    if frames != len(span) or (size is not None and (width, height) != size):
        want = f"{len(span)} at {size[0]}x{size[1]}" if size else str(len(span))
        raise RenderdError(f"assembled output has {frames} frames at {width}x{height}, expected {want}")


def _fresh_dir(path: Path) -> None:
    shutil.rmtree(path, ignore_errors=True)
    path.mkdir(parents=True)
