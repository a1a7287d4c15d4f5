"""Render a composition to a video on this machine: the embedded default (no daemon, no SSH).

The frames are rendered in chunks with the same engine and chunk encoder the agents use; the
chunk videos are concatenated without re-encoding. While one chunk is captured, the previous
one is encoded, so ffmpeg works in the shadow of capture instead of after it.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import math
import shutil
import tempfile
import time
from collections.abc import AsyncIterator, Callable, Hashable, Mapping
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

from renderd.assemble import Assembled, assemble, join_parts
from renderd.composition import Composition, CompositionInfo, Overrides, load_composition
from renderd.confine import MIB
from renderd.encode import EncodeSettings, encode_frames, sha256_file_async
from renderd.engine import CaptureSettings, Engine, EngineOptions, RetryNotice, StaticStats
from renderd.engine.warm import WarmEngines
from renderd.errors import RenderdError, first_error
from renderd.events import ChunkDone, Done, Event, Retry, Started
from renderd.formats import Delivery
from renderd.frames import Fps, FrameRange, parse_frame_range, plan_chunks
from renderd.outdir import make_output_dir
from renderd.outputs import check_render_paths, check_replaceable, install_output
from renderd.progress import ProgressTracker
from renderd.settings import DEFAULTS, RenderSettings

log = logging.getLogger(__name__)

# Joining parts into the output (concat, the GIF's one encode, the soundtrack): this long at most.
ASSEMBLE_TIMEOUT_S = 120.0
ASSEMBLE_TIMEOUT_PER_FRAME_S = 0.25
# Chunks of about this many frames keep the serial tail (the last chunk's encode) short
# while the per-chunk costs (an ffmpeg start, a worker-imbalance tail) stay small.
AUTO_CHUNK_FRAMES = 60
ENCODE_TIMEOUT_PER_FRAME_S = 2.0


@dataclass(frozen=True, slots=True)
class RenderRequest:
    """Everything `renderd render` needs, validated at the CLI edge."""

    composition: Path
    output: Path
    overrides: Overrides = field(default_factory=Overrides)
    frames: str | None = None  # "A:B" absolute range, None = whole composition
    chunks: int | None = DEFAULTS.chunks  # None = auto
    workers: int | None = DEFAULTS.workers  # None = auto
    capture: CaptureSettings = field(default_factory=CaptureSettings)
    encode: EncodeSettings = field(default_factory=EncodeSettings)
    keep_frames: bool = DEFAULTS.keep_frames
    work_dir: Path | None = None
    chromium: str | None = DEFAULTS.chromium
    browser: str = DEFAULTS.browser
    gl: str = DEFAULTS.gl
    # Set by the agent: the frame count the coordinator planned with; a page that disagrees
    # (another version of the composition on this host) must not produce a chunk.
    expect_total_frames: int | None = None
    # Mix the composition's audio into the output. Off for the agent: its chunk is one part of
    # a video the coordinator gives one soundtrack after concatenation.
    audio: bool = True
    # Where extracted video frames are kept (content-addressed); None = inside the temp work dir.
    media_dir: Path | None = None
    # Write one part of the format (an agent's chunk: a .tar for png-sequence, lossless .mkv for
    # gif) instead of the delivered output.
    as_part: bool = False

    @classmethod
    def from_settings(
        cls, settings: RenderSettings, *, faults: Mapping[str, Any] | None = None, **where: Any
    ) -> RenderRequest:
        """Return the request that renders with ``settings``; ``where``: composition, output, frames, paths.

        ``faults`` are the engine's test hooks (CaptureSettings.fault_*).
        """
        return cls(
            chunks=settings.chunks,
            workers=settings.workers,
            capture=CaptureSettings(
                fmt=settings.capture_format,
                quality=settings.quality,
                transparent=settings.transparent,
                scale=settings.scale,
                frame_timeout_s=settings.frame_timeout,
                ready_timeout_s=settings.ready_timeout,
                max_asset_bytes=settings.max_asset_size * MIB,
                skip_static=settings.skip_static,
                **(faults or {}),
            ),
            encode=EncodeSettings(
                # Unresolved (an assignment from a coordinator that predates formats): what it meant then.
                format="mp4" if settings.format == "auto" else settings.format,
                codec=settings.codec,
                transparent=settings.transparent,
                crf=settings.crf,
                preset=settings.preset,
            ),
            keep_frames=settings.keep_frames,
            chromium=settings.chromium,
            browser=settings.browser,
            gl=settings.gl,
            **where,
        )


@dataclass(frozen=True, slots=True)
class RenderResult:
    """What a finished render produced."""

    output: Path
    made: Assembled
    info: CompositionInfo
    frames: FrameRange
    frames_dir: Path | None
    static: StaticStats = field(default_factory=StaticStats)  # frames reused, not captured (--no-skip-static)


def auto_chunk_count(frames: int) -> int:
    """Return the default number of chunks for a local render of ``frames`` frames."""
    return max(1, math.ceil(frames / AUTO_CHUNK_FRAMES))


async def render_local(
    req: RenderRequest,
    emit: Callable[[Event], None],
    *,
    warm: WarmEngines | None = None,
    warm_key: Hashable = None,
) -> RenderResult:
    """Render ``req.composition`` to ``req.output``; the output appears only when complete.

    With ``warm`` (a serving agent) the engine is taken from it and left running for the next
    request with the same ``warm_key``; it is dropped if this render fails.
    """
    started_at = time.monotonic()
    comp = load_composition(req.composition)
    await asyncio.to_thread(check_render_paths, comp.root, req.output, req.work_dir)
    # Only the directory is resolved: the rename at the end replaces whatever entry is at the
    # output path (a symlink included) instead of writing to where it points.
    given = req.output.expanduser()
    out = given.parent.resolve() / given.name
    delivery = req.encode.delivery
    await asyncio.to_thread(make_output_dir, out)
    if out.is_dir() and (req.as_part or not delivery.is_sequence):
        raise RenderdError(f"output {str(out)!r} is a directory; give a file name such as out.{delivery.part_ext}")
    if delivery.is_sequence and not req.as_part:
        # Checked again when the sequence is moved there; here so a refusal costs no render.
        await asyncio.to_thread(check_replaceable, out, None, sequence=True)
    work_root = Path(req.work_dir or out.parent).expanduser().resolve()
    work_root.mkdir(parents=True, exist_ok=True)
    work = Path(tempfile.mkdtemp(prefix=".renderd-", dir=work_root))
    keep = False
    options = EngineOptions(
        capture=req.capture, chromium=req.chromium, browser=req.browser, gl=req.gl, workers=req.workers
    )
    try:
        async with _probed_engine(comp, options, req.overrides, warm, warm_key) as (engine, info):
            if req.expect_total_frames is not None and info.total_frames != req.expect_total_frames:
                raise RenderdError(
                    f"{comp.entry}: composition has {info.total_frames} frames here, "
                    f"but the job was planned with {req.expect_total_frames}"
                )
            span = parse_frame_range(req.frames, info.total_frames) if req.frames else FrameRange(0, info.total_frames)
            chunks = plan_chunks(len(span), chunks=req.chunks or auto_chunk_count(len(span)), range_start=span.start)
            await engine.prepare_media(span, req.media_dir or work / "media")
            workers = await engine.auto_worker_count(span, max(len(c) for c in chunks))
            emit(
                Started(
                    composition=str(comp.entry),
                    # The frames' size: the composition's, times --scale.
                    width=round(info.width * req.capture.scale),
                    height=round(info.height * req.capture.scale),
                    fps=str(info.fps),
                    start=span.start,
                    end=span.end,
                    frames=len(span),
                    chunks=len(chunks),
                    workers=workers,
                    gl=engine.gl,
                    capture="beginframe" if engine.begin_frame else "screenshot",
                )
            )
            tracker = ProgressTracker(len(span), emit)
            tracker.workers = workers
            engine.begin_render()
            await engine.warm_up(workers)
            parts = await _capture_and_encode(engine, chunks, work, workers, req, tracker, emit)
            static = replace(engine.static_stats)
        size = (round(info.width * req.capture.scale), round(info.height * req.capture.scale))
        limit = ASSEMBLE_TIMEOUT_S + ASSEMBLE_TIMEOUT_PER_FRAME_S * len(span)
        try:
            async with asyncio.timeout(limit):
                if req.as_part:
                    made = await _join_as_part(parts, work, out, delivery, span, info.fps)
                else:
                    audio = engine.media.audio if req.audio else ()
                    made = await assemble(
                        parts, work, out, delivery=delivery, span=span, fps=info.fps, size=size, audio=audio
                    )
        except TimeoutError:
            raise RenderdError(f"joining {len(parts)} part(s) into {out} took over {limit:.0f} s") from None
        keep = req.keep_frames
        digest = made.sha256
        frames_dir = work if keep else None
        emit(
            Done(
                output=str(out),
                frames=made.frames,
                width=made.width,
                height=made.height,
                fps=str(info.fps),
                duration_s=made.duration_s,
                elapsed_s=round(time.monotonic() - started_at, 3),
                sha256=digest,
                frames_dir=str(frames_dir) if frames_dir else None,
                frames_skipped=static.skipped,
                frames_verified=static.verified,
                skip_mismatches=static.mismatches,
            )
        )
        return RenderResult(out, made, info, span, frames_dir, static)
    finally:
        if not keep:
            await asyncio.shield(asyncio.to_thread(shutil.rmtree, work, True))


@contextlib.asynccontextmanager
async def _probed_engine(
    comp: Composition, options: EngineOptions, overrides: Overrides, warm: WarmEngines | None, warm_key: Hashable
) -> AsyncIterator[tuple[Engine, CompositionInfo]]:
    """Yield a probed engine: a fresh one closed on exit, or the warm one (dropped on error)."""
    if warm is None:
        async with Engine(comp, options) as engine:
            yield engine, await engine.probe(overrides)
        return
    engine, info = await warm.acquire((warm_key, comp.entry, options, overrides), comp, options, overrides)
    try:
        yield engine, info
    except BaseException:
        await asyncio.shield(warm.release())
        raise


async def _capture_and_encode(
    engine: Engine,
    chunks: list[FrameRange],
    work: Path,
    workers: int,
    req: RenderRequest,
    tracker: ProgressTracker,
    emit: Callable[[Event], None],
) -> list[Path]:
    """Capture chunk k+1 while chunk k encodes; return the chunk videos in order."""
    info = engine.info
    assert info is not None
    ext = req.capture.ext
    parts: list[Path] = []

    def on_retry(n: RetryNotice) -> None:
        tracker.retries += 1
        tracker.workers = n.workers
        emit(Retry(attempt=n.attempt, frames=n.frames, workers=n.workers, reason=n.reason, ranges=n.ranges))

    def on_frame(i: int) -> None:
        tracker.skipped = engine.static_stats.skipped
        tracker.frame_done(i)

    part_ext = req.encode.delivery.part_ext

    async def encode(index: int, chunk: FrameRange, frames_dir: Path) -> None:
        path = work / f"chunk-{index:04d}.{part_ext}"
        video = await encode_frames(
            frames_dir,
            path,
            fps=info.fps,
            frame_count=len(chunk),
            ext=ext,
            settings=req.encode,
            timeout=60 + ENCODE_TIMEOUT_PER_FRAME_S * len(chunk),
            first_index=chunk.start,
        )
        digest = await sha256_file_async(path)
        if not req.keep_frames:
            # Frames are the bulk of the disk use (PNG at 1080p: ~3 MB each); the chunk is safe now.
            await asyncio.to_thread(shutil.rmtree, frames_dir, True)
        tracker.chunks_done += 1
        emit(
            ChunkDone(
                index=index,
                start=chunk.start,
                end=chunk.end,
                path=str(path),
                frames=video.frames,
                sha256=digest,
            )
        )

    try:
        async with asyncio.TaskGroup() as tg:
            pending: asyncio.Task[None] | None = None
            for index, chunk in enumerate(chunks):
                frames_dir = work / f"chunk-{index:04d}-{chunk.start}-{chunk.end}"
                outcome = await engine.capture_chunk(
                    chunk, frames_dir, min(workers, len(chunk)), on_frame=on_frame, on_retry=on_retry
                )
                # Halved workers after timeouts stay halved for the chunks that follow.
                workers = outcome.final_workers
                if pending is not None:
                    await pending
                pending = tg.create_task(encode(index, chunk, frames_dir))
                parts.append(work / f"chunk-{index:04d}.{part_ext}")
    except BaseExceptionGroup as group:
        raise first_error(group) from None
    tracker.emit_now()
    return parts


async def _join_as_part(
    parts: list[Path], work: Path, out: Path, delivery: Delivery, span: FrameRange, fps: Fps
) -> Assembled:
    """Join the local parts into the one part an agent hands back, moved to ``out``."""
    tmp = work / f"output.partial.{delivery.part_ext}"
    try:
        video = await join_parts(parts, tmp, delivery=delivery, span=span)
        digest = await sha256_file_async(tmp)
        await asyncio.to_thread(install_output, tmp, out)
        return Assembled(video.frames, video.width, video.height, len(span) * fps.den / fps.num, digest)
    finally:
        with contextlib.suppress(FileNotFoundError):
            tmp.unlink()
