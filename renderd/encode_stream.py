"""Encoding frames while they are captured: each worker's share of a chunk piped into its own ffmpeg.

A capture worker takes a contiguous run of a chunk's frames and captures them in order
(frames.distribute_frames), so an encoder per run can be fed each frame as soon as it is on
disk: the encode runs beside the capture instead of after it, and when the last frame is
captured only the encoder's last few frames are left to do. The file-based encoder
(encode.encode_frames) started only once a whole chunk was captured, and the last chunk's
encode was a serial tail of the render (about 2 s of 60 frames at 1080p on 2 cores).

The frames are read back from the files the engine wrote (they stay the truth: a frame
captured again, or a chunk that must be encoded again, comes from them) and sent in the
same bytes, decoded by the same decoder as the file path, so a streamed part has the pixels a
file-encoded one has. Whoever runs the encoders decides when a streamed part cannot be kept
(the frames it was fed changed afterwards) and encodes the chunk from its files instead.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import secrets
from pathlib import Path

from renderd import procs
from renderd.encode import EncodeSettings, VideoInfo, build_encode_argv, verify_video
from renderd.errors import EncodeError
from renderd.frames import Fps, FrameRange, distribute_frames, frame_file_name

# ffmpeg's standard error is read while it runs (a full pipe would stall it); this much is kept.
STDERR_KEEP = 4000


def can_stream(settings: EncodeSettings, width: int, height: int) -> bool:
    """Return whether parts of ``settings`` can be encoded from piped frames of this size.

    A png-sequence part is a tar of the frame files, not an encode; an odd size that the pixel
    format cannot hold is left to the file encoder, which refuses it with the reason.
    """
    return settings.format != "png-sequence" and settings.holds_size(width, height)


class FrameBoard:
    """The frames of one chunk that are on disk, for the encoders waiting for them in order."""

    def __init__(self) -> None:
        self._done: set[int] = set()
        self._waiting: dict[int, asyncio.Future[None]] = {}
        self._all = False

    def frame_done(self, i: int) -> None:
        """Absolute frame ``i``'s file is complete."""
        self._done.add(i)
        waiter = self._waiting.pop(i, None)
        if waiter is not None and not waiter.done():
            waiter.set_result(None)

    def all_done(self) -> None:
        """Every frame of the chunk is on disk (the capture returned): nobody waits any more."""
        self._all = True
        for waiter in self._waiting.values():
            if not waiter.done():
                waiter.set_result(None)
        self._waiting.clear()

    async def wait(self, i: int) -> None:
        """Return once frame ``i`` is on disk.

        No timeout here: the capture that writes the frames has its own per frame, and the
        encoders are cancelled when it fails.
        """
        if self._all or i in self._done:
            return
        waiter = self._waiting.get(i)
        if waiter is None:
            waiter = self._waiting[i] = asyncio.get_running_loop().create_future()
        await waiter


class StreamedPart:
    """One encoder fed absolute frames ``[start, end)`` of a chunk in order, each once it is on disk.

    Frames are the chunk's LOCAL files (local 0 is ``chunk_start``). The end can be moved
    earlier (``cut``) while the frames there are not fed yet: the capture gave them to another
    worker, whose run becomes a part of its own.
    """

    def __init__(
        self,
        board: FrameBoard,
        frames_dir: Path,
        chunk_start: int,
        span: FrameRange,
        out_path: Path,
        *,
        fps: Fps,
        size: tuple[int, int],
        ext: str,
        settings: EncodeSettings,
    ) -> None:
        self.board = board
        self.frames_dir = frames_dir
        self.chunk_start = chunk_start
        self.start = span.start
        self.end = span.end
        self.out_path = out_path
        self.fps = fps
        self.size = size
        self.ext = ext
        self.settings = settings
        self._next = span.start  # the next frame to feed

    @property
    def span(self) -> FrameRange:
        """Return the frames this part holds (so far: ``cut`` may shorten it)."""
        return FrameRange(self.start, self.end)

    def cut(self, at: int) -> bool:
        """End the part before absolute frame ``at``; False if ``at`` is not inside it or was fed already."""
        if not self._next <= at < self.end or at <= self.start:
            return False
        self.end = at
        return True

    async def run(self, flush_timeout: float) -> VideoInfo:
        """Feed and encode the part; return the verified video, moved to ``out_path``.

        ``flush_timeout`` bounds the time from the last frame fed to the verified part. The part
        appears at ``out_path`` only when ffprobe agrees with what was fed (frames, size, rate).
        """
        out_path = self.out_path
        tmp = out_path.with_name(f".{out_path.name}.{secrets.token_hex(4)}.part")
        argv = build_encode_argv(
            None, tmp, fps=self.fps, frame_count=len(self.span), ext=self.ext, settings=self.settings
        )
        out_path.parent.mkdir(parents=True, exist_ok=True)
        proc = await procs.spawn(argv)
        assert proc.stdin is not None and proc.stderr is not None
        stderr = asyncio.create_task(_read_tail(proc.stderr), name=f"renderd-encode-stderr-{self.start}")
        try:
            await self._feed(proc.stdin)
            try:
                async with asyncio.timeout(flush_timeout):
                    await proc.wait()
                    tail = await stderr
            except TimeoutError:
                raise EncodeError(
                    f"encoding frames {self.start}-{self.end - 1} to {out_path} took over {flush_timeout:.0f} s "
                    "after the last frame"
                ) from None
            if proc.returncode != 0:
                last = tail.strip().splitlines()[-1] if tail.strip() else f"ffmpeg exited with {proc.returncode}"
                raise EncodeError(f"encoding frames {self.start}-{self.end - 1} to {out_path} failed: {last}")
            w, h = self.size
            info = await verify_video(tmp, frames=len(self.span), width=w, height=h, fps=self.fps)
            try:
                os.replace(tmp, out_path)
            except OSError as exc:
                raise EncodeError(f"cannot move the result into {out_path}: {exc.strerror}") from exc
            return info
        except BaseException:
            await asyncio.shield(_stop(proc, stderr))
            tmp.unlink(missing_ok=True)
            raise

    async def _feed(self, stdin: asyncio.StreamWriter) -> None:
        """Write each frame's file to ffmpeg once it is on disk, then close its input."""
        try:
            while self._next < self.end:
                i = self._next
                await self.board.wait(i)
                if i >= self.end:
                    break  # cut while waiting
                path = self.frames_dir / frame_file_name(i - self.chunk_start, self.ext)
                try:
                    data = await asyncio.to_thread(path.read_bytes)
                except OSError as exc:
                    raise EncodeError(f"cannot read frame {i} ({path}) to encode: {exc.strerror or exc}") from None
                if i >= self.end:
                    break
                self._next = i + 1
                stdin.write(data)
                await stdin.drain()
            stdin.close()
        except (BrokenPipeError, ConnectionResetError):
            pass  # ffmpeg stopped reading: it failed, and says why on standard error


async def _read_tail(stream: asyncio.StreamReader) -> str:
    kept = b""
    while chunk := await stream.read(65536):
        kept = (kept + chunk)[-STDERR_KEEP:]
    return kept.decode(errors="replace")


async def _stop(proc: asyncio.subprocess.Process, stderr: asyncio.Task[str]) -> None:
    await procs.terminate(proc)
    stderr.cancel()
    with contextlib.suppress(asyncio.CancelledError, Exception):
        await stderr


def part_spans(chunk: FrameRange, workers: int) -> list[FrameRange]:
    """Return the runs of ``chunk`` the capture workers take, one part each."""
    tasks = distribute_frames(len(chunk), max(1, min(workers, len(chunk))), ".", chunk.start)
    return [FrameRange(t.start, t.end) for t in tasks]
