"""Frames piped to their encoders while they are captured (renderd/encode_stream.py, render.py).

Real Chromium and ffmpeg. Renders are lossless H.264 (--crf 0) so that a part encoded from piped
frames and a chunk encoded from its files decode to the same pixels whatever the part
boundaries: every comparison below is exact.
"""

from __future__ import annotations

import asyncio
import random
from pathlib import Path
from typing import Any

import pytest
from conftest import FIXTURES
from videotools import decode_frames, index_colour, pixel, write_index_frames

import renderd.engine.retry as retry_mod
from renderd.encode import EncodeSettings, encode_frames
from renderd.encode_stream import FrameBoard, StreamedPart, can_stream, part_spans
from renderd.engine import CaptureSettings
from renderd.errors import EncodeError
from renderd.events import ChunkDone, Event
from renderd.frames import Fps, FrameRange, WorkerTask
from renderd.render import RenderRequest, render_local

COMP = FIXTURES / "hf-static-skip"  # 160x120, 90 frames: still, moving, fading, a cut
W, H = 160, 120
LOSSLESS = EncodeSettings(crf=0)


def _render(out: Path, **kw: Any) -> tuple[list[bytes], list[ChunkDone]]:
    """Render COMP to a lossless mp4 in this process; return its decoded frames and chunk_done events."""
    capture = kw.pop("capture", {})
    events: list[Event] = []
    req = RenderRequest(composition=COMP, output=out, capture=CaptureSettings(**capture), encode=LOSSLESS, **kw)
    asyncio.run(render_local(req, events.append))
    frames = decode_frames(out, W, H)
    assert len(frames) == 90
    return frames, [e for e in events if isinstance(e, ChunkDone)]


def _parts(events: list[ChunkDone]) -> list[tuple[int, int, int]]:
    return sorted((e.index, e.start, e.end) for e in events)


def test_each_workers_run_is_its_own_part_and_equals_the_file_encoded_chunk(tmp_path: Path) -> None:
    streamed, parts = _render(tmp_path / "s.mp4", workers=2, chunks=2)
    # Two chunks, each encoded as its workers' runs while they were captured (the file-based
    # encoder made one part per chunk, after it): the even split's two runs, and where a worker
    # that ran out took frames from the other (the still frames draw faster), more.
    spans = _parts(parts)
    for index, chunk in enumerate((range(0, 45), range(45, 90))):
        mine = [(a, b) for i, a, b in spans if i == index]
        assert len(mine) >= 2 and mine[0][0] == chunk.start and mine[-1][1] == chunk.stop, spans
        assert all(b == a for (_, b), (a, _) in zip(mine, mine[1:], strict=False)), spans
        assert (chunk.start + 23) in [a for a, _ in mine], spans
    # The same frames encoded from files, one chunk, one worker: the pixels must not differ.
    sequential, parts = _render(tmp_path / "f.mp4", workers=1, chunks=1)
    assert _parts(parts) == [(0, 0, 90)]
    assert [i for i in range(90) if streamed[i] != sequential[i]] == []
    assert streamed[25] != streamed[35], "the moving section moves"


def test_a_chunk_whose_reused_frames_were_captured_again_is_encoded_from_its_files(tmp_path: Path) -> None:
    # A wrong proof of stillness (the test hook takes every frame for static): the pixel check
    # catches it in the moving section, the reused frames are captured again, and the parts
    # already fed those frames must not be kept.
    off, _ = _render(tmp_path / "off.mp4", workers=2, chunks=1, capture={"skip_static": False})
    wrong, parts = _render(tmp_path / "wrong.mp4", workers=2, chunks=1, capture={"fault_force_static": True})
    assert _parts(parts) == [(0, 0, 90)], "the chunk was encoded again from its files, as one part"
    assert [i for i in range(90) if wrong[i] != off[i]] == []


def test_a_failed_streamed_encode_falls_back_to_the_chunk_files(tmp_path: Path, monkeypatch: Any) -> None:
    real = StreamedPart.run

    async def failing(self: StreamedPart, flush_timeout: float) -> Any:
        if self.start > self.chunk_start:
            await self.board.wait(self.start)
            raise EncodeError("encoder died (test)")
        return await real(self, flush_timeout)

    monkeypatch.setattr(StreamedPart, "run", failing)
    frames, parts = _render(tmp_path / "x.mp4", workers=2, chunks=3)
    assert _parts(parts) == [(0, 0, 30), (1, 30, 60), (2, 60, 90)]
    monkeypatch.setattr(StreamedPart, "run", real)
    good, _ = _render(tmp_path / "g.mp4", workers=2, chunks=3)
    assert frames == good


def test_parts_follow_frames_one_worker_takes_from_another(tmp_path: Path, monkeypatch: Any) -> None:
    # The first pass starts unevenly (worker 0 gets 2 frames, worker 1 the rest): worker 0 runs
    # out and takes the far half of worker 1's frames, again and again; each part then ends
    # where another worker's frames begin, and the frames are those of an even split.
    def uneven(total: int, workers: int, work_dir: Path, start: int = 0) -> list[WorkerTask]:
        return [
            WorkerTask(0, start, start + 2, start, work_dir),
            WorkerTask(1, start + 2, start + total, start, work_dir),
        ]

    even, even_parts = _render(tmp_path / "even.mp4", workers=2, chunks=1)
    assert _parts(even_parts) == [(0, 0, 45), (0, 45, 90)]
    monkeypatch.setattr(retry_mod, "distribute_frames", uneven)
    stolen, parts = _render(tmp_path / "stolen.mp4", workers=2, chunks=1)
    spans = _parts(parts)
    assert len(spans) > 2, spans
    assert [b for _i, _a, b in spans[:-1]] == [a for _i, a, _b in spans[1:]] and spans[-1][2] == 90, spans
    assert [i for i in range(90) if stolen[i] != even[i]] == []
    # Without work stealing (a bench switch) worker 0 stops after its 2 frames: 2 parts only.
    _, parts = _render(tmp_path / "kept.mp4", workers=2, chunks=1, capture={"work_stealing": False})
    assert _parts(parts) == [(0, 0, 45), (0, 45, 90)]


def test_a_part_is_cut_only_where_it_was_not_fed_yet(tmp_path: Path) -> None:
    frames = write_index_frames(tmp_path / "frames", 20, ext="jpg")

    async def run() -> None:
        board = FrameBoard()
        part = StreamedPart(
            board, frames, 0, FrameRange(0, 20), tmp_path / "p.mp4",
            fps=Fps(30, 1), size=(64, 48), ext="jpg", settings=LOSSLESS,
        )  # fmt: skip
        task = asyncio.create_task(part.run(flush_timeout=60))
        for i in range(5):
            board.frame_done(i)
        while part.span != FrameRange(0, 20) or part._next < 5:
            await asyncio.sleep(0.01)
        assert not part.cut(3), "frame 3 was fed already"
        assert not part.cut(0) and not part.cut(25)
        assert part.cut(12) and part.span == FrameRange(0, 12)
        board.all_done()
        info = await asyncio.wait_for(task, 60)
        assert info.frames == 12

    asyncio.run(run())
    assert len(decode_frames(tmp_path / "p.mp4", 64, 48)) == 12


def test_a_part_feeds_frames_in_order_whenever_they_complete(tmp_path: Path) -> None:
    frames = write_index_frames(tmp_path / "frames", 40, ext="jpg")
    fps = Fps(30, 1)
    span = FrameRange(110, 140)  # absolute; local 10..39 of a chunk starting at 100

    async def run() -> None:
        board = FrameBoard()
        part = StreamedPart(
            board, frames, 100, span, tmp_path / "p.mp4", fps=fps, size=(64, 48), ext="jpg", settings=LOSSLESS
        )
        task = asyncio.create_task(part.run(flush_timeout=60))
        order = list(range(100, 140))
        random.Random(7).shuffle(order)
        for i in order:
            board.frame_done(i)
            await asyncio.sleep(0)
        info = await asyncio.wait_for(task, 60)
        assert info.frames == 30
        await encode_frames(frames, tmp_path / "all.mp4", fps=fps, frame_count=40, ext="jpg", settings=LOSSLESS)

    asyncio.run(run())
    piped = decode_frames(tmp_path / "p.mp4", 64, 48)
    whole = decode_frames(tmp_path / "all.mp4", 64, 48)
    assert piped == whole[10:]
    assert all(abs(a - b) <= 6 for a, b in zip(pixel(piped[0], 64, 32, 24), index_colour(10), strict=True))


def test_a_part_names_the_frame_it_cannot_read_and_leaves_no_file(tmp_path: Path) -> None:
    frames = write_index_frames(tmp_path / "frames", 5, ext="jpg")
    (frames / "frame_000003.jpg").unlink()

    async def run() -> None:
        board = FrameBoard()
        board.all_done()
        part = StreamedPart(
            board, frames, 0, FrameRange(0, 5), tmp_path / "p.mp4",
            fps=Fps(30, 1), size=(64, 48), ext="jpg", settings=LOSSLESS,
        )  # fmt: skip
        await part.run(flush_timeout=60)

    with pytest.raises(EncodeError, match=r"cannot read frame 3 .*frame_000003\.jpg"):
        asyncio.run(run())
    assert sorted(p.name for p in tmp_path.iterdir()) == ["frames"]


def test_what_streams_and_how_runs_are_split() -> None:
    assert can_stream(EncodeSettings(), 1920, 1080)
    assert not can_stream(EncodeSettings(format="png-sequence"), 1920, 1080)
    assert not can_stream(EncodeSettings(), 1921, 1080), "odd sizes go to the file encoder, which says why"
    assert part_spans(FrameRange(10, 17), 2) == [FrameRange(10, 14), FrameRange(14, 17)]
    assert part_spans(FrameRange(0, 2), 4) == [FrameRange(0, 1), FrameRange(1, 2)]
