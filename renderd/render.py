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
from renderd.encode_stream import FrameBoard, StreamedPart, can_stream, part_spans
from renderd.engine import CaptureSettings, Engine, EngineOptions, RetryNotice, StaticStats
from renderd.engine.warm import WarmEngines
from renderd.errors import EncodeError, FrameRangeError, RenderdError, first_error
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
# Chunks encoded from their files once captured (png-sequence parts, PNG frames): about this
# many frames keep the serial tail (the last chunk's encode) and the disk used short while the
# per-chunk costs (an ffmpeg start, a worker-imbalance tail) stay small.
AUTO_CHUNK_FRAMES = 60
# Chunks of JPEG frames piped to their encoders as they are captured have no such tail: longer
# chunks save each worker's priming jump per chunk and the wait for the slower worker at each
# chunk's end. 300 JPEG frames at 1080p are about 70 MB on disk.
STREAMED_CHUNK_FRAMES = 300
ENCODE_TIMEOUT_PER_FRAME_S = 2.0
# Frames of a render whose range is open-ended, before the composition says how many it has.
WHOLE_GUESS = 1 << 30


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
            capture=capture_settings(settings, faults),
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


def capture_settings(settings: RenderSettings, faults: Mapping[str, Any] | None = None) -> CaptureSettings:
    """Return the engine's capture settings for a render with ``settings`` (``faults``: CaptureSettings.fault_*)."""
    return CaptureSettings(
        fmt=settings.capture_format,
        quality=settings.quality,
        transparent=settings.transparent,
        scale=settings.scale,
        frame_timeout_s=settings.frame_timeout,
        ready_timeout_s=settings.ready_timeout,
        max_asset_bytes=settings.max_asset_size * MIB,
        skip_static=settings.skip_static,
        **(faults or {}),
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


def auto_chunk_count(frames: int, *, streamed: bool = False) -> int:
    """Return the default number of chunks for a local render of ``frames`` frames.

    ``streamed``: JPEG frames encoded while they are captured (encode_stream.py).
    """
    return max(1, math.ceil(frames / (STREAMED_CHUNK_FRAMES if streamed else AUTO_CHUNK_FRAMES)))


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
        async with _probed_engine(comp, options, req.overrides, warm, warm_key, req.frames) as (engine, info):
            if req.expect_total_frames is not None and info.total_frames != req.expect_total_frames:
                raise RenderdError(
                    f"{comp.entry}: composition has {info.total_frames} frames here, "
                    f"but the job was planned with {req.expect_total_frames}"
                )
            span = parse_frame_range(req.frames, info.total_frames) if req.frames else FrameRange(0, info.total_frames)
            size = (round(info.width * req.capture.scale), round(info.height * req.capture.scale))
            streamed = req.capture.fmt == "jpeg" and can_stream(req.encode, *size)
            auto = auto_chunk_count(len(span), streamed=streamed)
            chunks = plan_chunks(len(span), chunks=req.chunks or auto, range_start=span.start)
            await engine.prepare_media(span, req.media_dir or work / "media")
            workers = await engine.auto_worker_count(span, max(len(c) for c in chunks))
            emit(
                Started(
                    composition=str(comp.entry),
                    # The frames' size: the composition's, times --scale.
                    width=size[0],
                    height=size[1],
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
            parts = await _capture_and_encode(engine, chunks, work, workers, req, size, tracker, emit)
            static = replace(engine.static_stats)
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
    comp: Composition,
    options: EngineOptions,
    overrides: Overrides,
    warm: WarmEngines | None,
    warm_key: Hashable,
    frames: str | None,
) -> AsyncIterator[tuple[Engine, CompositionInfo]]:
    """Yield a probed engine: a fresh one closed on exit, or the warm one (dropped on error).

    ``frames`` (the request's range, if any) sizes the workers started during the probe.
    """
    expect = _expected_frames(frames)
    if warm is None:
        async with Engine(comp, options) as engine:
            yield engine, await engine.probe(overrides, expect_frames=expect)
        return
    key = (warm_key, comp.entry, options, overrides)
    engine, info = await warm.acquire(key, comp, options, overrides, expect_frames=expect)
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
    size: tuple[int, int],
    tracker: ProgressTracker,
    emit: Callable[[Event], None],
) -> list[Path]:
    """Capture the chunks in order while their frames are encoded; return the parts in order.

    ``size``: the frames' size in pixels (the composition's times --scale).

    Each worker's run of a chunk is piped into its own encoder as it is captured
    (encode_stream.py). A chunk whose frames changed after they were fed (static frames that
    turned out not to be, captured again) or whose streamed encode failed is encoded again from
    its files, as one part, while the next chunk is captured; so is every chunk of a format
    that cannot be streamed.
    """
    encoder = _ChunkEncoder(engine, work, req, size, tracker, emit)

    def on_retry(n: RetryNotice) -> None:
        tracker.retries += 1
        tracker.workers = n.workers
        emit(Retry(attempt=n.attempt, frames=n.frames, workers=n.workers, reason=n.reason, ranges=n.ranges))

    def on_frame(i: int) -> None:
        tracker.skipped = engine.static_stats.skipped
        tracker.frame_done(i)
        encoder.board.frame_done(i)

    finished: list[asyncio.Task[list[Path]]] = []
    try:
        async with asyncio.TaskGroup() as tg:
            for index, chunk in enumerate(chunks):
                frames_dir = work / f"chunk-{index:04d}-{chunk.start}-{chunk.end}"
                frames_dir.mkdir(parents=True, exist_ok=True)
                encoder.start_chunk(tg, index, chunk, frames_dir, workers)
                stats = engine.static_stats
                before = (stats.mismatches, stats.recaptured)
                try:
                    outcome = await engine.capture_chunk(
                        chunk,
                        frames_dir,
                        min(workers, len(chunk)),
                        on_frame=on_frame,
                        on_retry=on_retry,
                        on_split=encoder.split if encoder.streaming else None,
                    )
                except BaseException:
                    for task in encoder.tasks():
                        task.cancel()
                    raise
                encoder.board.all_done()
                # Halved workers after timeouts stay halved for the chunks that follow.
                workers = outcome.final_workers
                stats = engine.static_stats
                refed = (stats.mismatches, stats.recaptured) != before
                if finished:
                    # One chunk's frames waiting to be encoded at a time: the disk holds two chunks at most.
                    await finished[-1]
                streams = encoder.tasks()
                finished.append(tg.create_task(encoder.finish(index, chunk, frames_dir, streams, refed)))
    except BaseExceptionGroup as group:
        raise first_error(group) from None
    tracker.emit_now()
    return [path for task in finished for path in task.result()]


# A streamed part's task: the verified part, or why its encoder failed.
_StreamTask = asyncio.Task["StreamedPart | EncodeError"]


class _ChunkEncoder:
    """The encoders of one render's chunks: streamed parts while capturing, or a chunk's files after."""

    def __init__(
        self,
        engine: Engine,
        work: Path,
        req: RenderRequest,
        size: tuple[int, int],
        tracker: ProgressTracker,
        emit: Callable[[Event], None],
    ) -> None:
        info = engine.info
        assert info is not None
        self.fps = info.fps
        self.size = size
        self.streaming = can_stream(req.encode, *self.size)
        self.work = work
        self.req = req
        self.ext = req.capture.ext
        self.part_ext = req.encode.delivery.part_ext
        self.tracker = tracker
        self.emit = emit
        self.board = FrameBoard()  # the frames on disk of the chunk being captured
        # The chunk being captured: its streamed parts and their tasks (splits add to them).
        self._tg: asyncio.TaskGroup | None = None
        self._index = 0
        self._chunk = FrameRange(0, 1)
        self._frames_dir = work
        self._streams: list[tuple[StreamedPart, _StreamTask]] = []

    def start_chunk(
        self, tg: asyncio.TaskGroup, index: int, chunk: FrameRange, frames_dir: Path, workers: int
    ) -> list[_StreamTask]:
        """Start one encoder per worker's run of ``chunk``, fed as its frames are captured.

        A failed encoder returns its error rather than raising it: the chunk is then encoded
        from its files (finish), and the render goes on.
        """
        self.board = FrameBoard()
        self._tg, self._index, self._chunk, self._frames_dir = tg, index, chunk, frames_dir
        self._streams = []
        if self.streaming:
            for span in part_spans(chunk, workers):
                self._start_part(span)
        return self.tasks()

    def tasks(self) -> list[_StreamTask]:
        """Return the streamed parts' tasks of the chunk being captured."""
        return [task for _part, task in self._streams]

    def split(self, at: int) -> None:
        """A worker took frames from ``at`` on: the part holding ``at`` ends there, a new one starts."""
        for part, _task in self._streams:
            old_end = part.end
            if part.cut(at):
                self._start_part(FrameRange(at, old_end))
                return

    def _start_part(self, span: FrameRange) -> None:
        assert self._tg is not None
        k = len(self._streams)
        part = StreamedPart(
            self.board,
            self._frames_dir,
            self._chunk.start,
            span,
            self.work / f"chunk-{self._index:04d}-{k}.{self.part_ext}",
            fps=self.fps,
            size=self.size,
            ext=self.ext,
            settings=self.req.encode,
        )
        task = self._tg.create_task(self._run_part(part), name=f"renderd-encode-{span}")
        self._streams.append((part, task))

    async def finish(
        self, index: int, chunk: FrameRange, frames_dir: Path, streams: list[_StreamTask], refed: bool
    ) -> list[Path]:
        """Wait for the chunk's streamed parts, or encode it from its files; then drop its frames.

        ``refed``: frames of the chunk were written again after they may have been fed.
        """
        parts: list[Path] = []
        if streams and not refed:
            results = await asyncio.gather(*streams)
            failed = [r for r in results if isinstance(r, EncodeError)]
            if failed:
                why = failed[0]
                log.warning("chunk %d: encoding while capturing failed (%s); encoding its frames again", index, why)
            else:
                done = sorted((r for r in results if isinstance(r, StreamedPart)), key=lambda part: part.start)
                for part in done:
                    await self._part_done(index, part.span, part.out_path, len(part.span))
                    parts.append(part.out_path)
        if not parts:
            for task in streams:
                task.cancel()
            ended = await asyncio.gather(*streams, return_exceptions=True)
            await asyncio.to_thread(_unlink_all, [r.out_path for r in ended if isinstance(r, StreamedPart)])
            parts = [await self._encode_files(index, chunk, frames_dir)]
        if not self.req.keep_frames:
            # Frames are the bulk of the disk use (PNG at 1080p: ~3 MB each); the chunk is safe now.
            await asyncio.to_thread(shutil.rmtree, frames_dir, True)
        self.tracker.chunks_done += 1
        return parts

    @staticmethod
    async def _run_part(part: StreamedPart) -> StreamedPart | EncodeError:
        try:
            # The flush bound is for the part as planned: a cut only shortens it.
            await part.run(flush_timeout=_encode_timeout(len(part.span)))
        except EncodeError as exc:
            return exc
        return part

    async def _encode_files(self, index: int, chunk: FrameRange, frames_dir: Path) -> Path:
        path = self.work / f"chunk-{index:04d}.{self.part_ext}"
        video = await encode_frames(
            frames_dir,
            path,
            fps=self.fps,
            frame_count=len(chunk),
            ext=self.ext,
            settings=self.req.encode,
            timeout=_encode_timeout(len(chunk)),
            first_index=chunk.start,
        )
        await self._part_done(index, chunk, path, video.frames)
        return path

    async def _part_done(self, index: int, span: FrameRange, path: Path, frames: int) -> None:
        digest = await sha256_file_async(path)
        self.emit(ChunkDone(index=index, start=span.start, end=span.end, path=str(path), frames=frames, sha256=digest))


def _expected_frames(frames: str | None) -> int:
    """Return how many frames the request's range holds, guessed before the composition is loaded.

    Without a range, or with an open end, as many as any composition has (the workers' rule
    then decides alone); a range the composition will refuse is refused after loading it.
    """
    try:
        return len(parse_frame_range(frames, WHOLE_GUESS)) if frames else WHOLE_GUESS
    except FrameRangeError:
        return WHOLE_GUESS


def _unlink_all(paths: list[Path]) -> None:
    for path in paths:
        path.unlink(missing_ok=True)


def _encode_timeout(frames: int) -> float:
    return 60 + ENCODE_TIMEOUT_PER_FRAME_S * frames


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
