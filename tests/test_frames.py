"""Contract tests for renderd.frames (design.md, section "Frame math")."""

from __future__ import annotations

import io
import tempfile
from fractions import Fraction
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from PIL import Image

from renderd.errors import FrameRangeError, RenderdError
from renderd.frames import (
    MAX_AUTO_WORKERS,
    MEMORY_PER_WORKER,
    MIN_FRAMES_PER_WORKER,
    Fps,
    FrameRange,
    PrimePlan,
    WorkerTask,
    build_missing_frame_retry_batches,
    choose_worker_count,
    chunk_range,
    distribute_frames,
    find_missing_frame_ranges,
    frame_file_name,
    frame_time,
    is_complete_frame_file,
    parse_frame_range,
    plan_chunks,
    prime_plan,
    total_frames_for,
)

GIB = 1 << 30


def _image_bytes(fmt: str) -> bytes:
    buf = io.BytesIO()
    Image.new("RGB", (4, 4), (200, 30, 30)).save(buf, format=fmt)
    return buf.getvalue()


JPEG = _image_bytes("JPEG")
PNG = _image_bytes("PNG")
# Valid header, end marker missing: what a capture killed mid-write leaves behind.
JPEG_TRUNCATED = JPEG[:-20]
PNG_TRUNCATED = PNG[:-12]  # the whole IEND chunk cut off


def _write_frames(root: Path, local_indices, data: bytes = JPEG, ext: str = "jpg") -> None:
    for i in local_indices:
        (root / frame_file_name(i, ext)).write_bytes(data)


def _one_line_error(excinfo: pytest.ExceptionInfo, *numbers: object) -> str:
    msg = str(excinfo.value)
    assert msg, "error message must not be empty"
    assert "\n" not in msg, f"error message must be one line: {msg!r}"
    for n in numbers:
        assert str(n) in msg, f"{n!r} not named in {msg!r}"
    return msg


def _covered(tasks) -> list[int]:
    out: list[int] = []
    for t in tasks:
        out.extend(range(t.start, t.end))
    return out


def test_image_fixtures_are_what_we_think():
    assert JPEG.startswith(b"\xff\xd8") and JPEG.endswith(b"\xff\xd9")
    assert PNG.startswith(b"\x89PNG\r\n\x1a\n") and PNG[-12:][4:8] == b"IEND"
    assert JPEG_TRUNCATED.startswith(b"\xff\xd8") and not JPEG_TRUNCATED.endswith(b"\xff\xd9")
    assert b"IEND" not in PNG_TRUNCATED


# --------------------------------------------------------------------------------------------
# Fps
# --------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("value", "num", "den"),
    [
        (30, 30, 1),
        ("30", 30, 1),
        (" 30 ", 30, 1),
        (24, 24, 1),
        (60, 60, 1),
        ("29.97", 30000, 1001),
        (29.97, 30000, 1001),
        ("30000/1001", 30000, 1001),
        ("30000 / 1001", 30000, 1001),
        ("23.976", 24000, 1001),
        (23.976, 24000, 1001),
        ("23.98", 24000, 1001),
        ("59.94", 60000, 1001),
        (59.94, 60000, 1001),
        ("119.88", 120000, 1001),
        (Fraction(30000, 1001), 30000, 1001),
        (Fraction(25), 25, 1),
        ("60/2", 30, 1),
        ("25.0", 25, 1),
        (30.0, 30, 1),
        ("12.5", 25, 2),
        (240, 240, 1),
        ("240", 240, 1),
    ],
)
def test_fps_parse_accepts(value, num, den):
    fps = Fps.parse(value)
    assert (fps.num, fps.den) == (num, den)
    assert fps.fraction == Fraction(num, den)


@pytest.mark.parametrize(
    "value",
    [
        0,
        -1,
        "0",
        "-1",
        "-30",
        "abc",
        "",
        "30/0",
        "0/1001",
        241,
        "241",
        "240.5",
        1000,
        True,
        False,
        "nan",
        "inf",
        float("nan"),
        float("inf"),
        "30/1001/2",
        "30fps",
    ],
)
def test_fps_parse_rejects(value):
    with pytest.raises(FrameRangeError) as excinfo:
        Fps.parse(value)
    _one_line_error(excinfo)


def test_fps_errors_are_renderd_errors():
    with pytest.raises(RenderdError):
        Fps.parse("abc")
    # FrameRangeError is also a ValueError so generic callers can catch it.
    with pytest.raises(ValueError):
        Fps.parse("abc")


def test_fps_reduces_and_compares_by_value():
    fps = Fps(60, 2)
    assert (fps.num, fps.den) == (30, 1)
    assert fps == Fps(30) == Fps.parse("60/2") == Fps.parse(30)
    assert Fps(60000, 2002) == Fps(30000, 1001)
    assert str(Fps(30)) == "30"
    assert str(Fps(30000, 1001)) == "30000/1001"


def test_fps_parse_passes_fps_through():
    fps = Fps(30000, 1001)
    assert Fps.parse(fps) is fps


@pytest.mark.parametrize(("num", "den"), [(30.0, 1), (30, 1.0), (True, 1), (30, True), (0, 1), (30, 0), (-30, -1)])
def test_fps_constructor_rejects(num, den):
    with pytest.raises(FrameRangeError):
        Fps(num, den)


def test_fps_is_frozen():
    fps = Fps(30)
    with pytest.raises(AttributeError):
        fps.num = 25  # type: ignore[misc]


# --------------------------------------------------------------------------------------------
# frame_time
# --------------------------------------------------------------------------------------------


def test_frame_time_is_exact():
    ntsc = Fps(30000, 1001)
    t = frame_time(30, ntsc)
    assert isinstance(t, Fraction)
    assert t == Fraction(1001, 1000)
    assert frame_time(0, ntsc) == 0
    assert frame_time(1, ntsc) == Fraction(1001, 30000)
    assert frame_time(30, Fps(30)) == 1
    assert frame_time(45, Fps(30)) == Fraction(3, 2)
    # No float accumulation: a large frame index is still exact.
    assert frame_time(30000 * 3600, ntsc) == 1001 * 3600


@given(i=st.integers(0, 10**9), num=st.integers(1, 240_000), den=st.integers(1, 1001))
def test_frame_time_property(i, num, den):
    if Fraction(num, den) > 240:
        return
    fps = Fps(num, den)
    t = frame_time(i, fps)
    assert isinstance(t, Fraction)
    assert t * fps.fraction == i


@pytest.mark.parametrize("bad", [-1, -100, 1.0, 1.5, True, "3", None])
def test_frame_time_rejects(bad):
    with pytest.raises(FrameRangeError) as excinfo:
        frame_time(bad, Fps(30))
    _one_line_error(excinfo)


# --------------------------------------------------------------------------------------------
# total_frames_for
# --------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("duration", "fps", "expected"),
    [
        (10, Fps(30), 300),
        (Fraction(10), Fps(30), 300),
        (10.0, Fps(30), 300),
        (10, Fps(30000, 1001), 300),  # 299.7 -> 300
        (10.0, Fps.parse("29.97"), 300),
        (Fraction(1001, 100), Fps(30000, 1001), 300),  # exactly 300
        (1.01, Fps(30), 31),  # 30.3 -> ceil
        (Fraction(101, 100), Fps(30), 31),
        (0.1 * 3, Fps(30), 9),  # 9.0000000000001 rounds to 9, not up to 10
        (Fraction(10) + Fraction(1, 100_000), Fps(30), 300),  # within 1e-3 of a frame
        # 773.001 frames: 1e-3 from 773 counts as within (HyperFrames' message-thread-reveal block)
        (Fraction("25.7667"), Fps(30), 773),
        (Fraction("25.7668"), Fps(30), 774),  # 773.004 -> ceil
        (Fraction(1, 60), Fps(30), 1),  # half a frame still shows one frame
        (Fraction(1, 100_000), Fps(30), 1),  # never zero frames
        (1, Fps(24), 24),
        (60, Fps(60000, 1001), 3597),  # 3596.4 -> ceil
    ],
)
def test_total_frames_for(duration, fps, expected):
    n = total_frames_for(duration, fps)
    assert n == expected
    assert type(n) is int


@pytest.mark.parametrize("bad", [0, 0.0, -1, -0.5, Fraction(-1, 3), float("nan"), float("inf")])
def test_total_frames_for_rejects(bad):
    with pytest.raises(FrameRangeError) as excinfo:
        total_frames_for(bad, Fps(30))
    _one_line_error(excinfo)


@given(frames=st.integers(1, 10**6), num=st.integers(1, 240), den=st.sampled_from([1, 1001]))
def test_total_frames_for_whole_frames_round_trip(frames, num, den):
    if den == 1001:
        num *= 1000
    fps = Fps(num, den)
    assert total_frames_for(frame_time(frames, fps), fps) == frames


# --------------------------------------------------------------------------------------------
# FrameRange / chunk_range / parse_frame_range
# --------------------------------------------------------------------------------------------


def test_frame_range_basics():
    r = chunk_range(10, 20, 100)
    assert (r.start, r.end) == (10, 20)
    assert len(r) == 10
    assert str(r) == "[10, 20)"
    assert r == FrameRange(10, 20)
    assert chunk_range(0, 100, 100) == FrameRange(0, 100)
    assert chunk_range(99, 100, 100) == FrameRange(99, 100)
    assert FrameRange(3, 4).check_within(4) == FrameRange(3, 4)


@pytest.mark.parametrize(
    ("start", "end", "total", "named"),
    [
        (1.5, 10, 100, ["1.5"]),
        (0, 10.5, 100, ["10.5"]),
        (0.0, 10, 100, ["0.0"]),
        (-1, 10, 100, ["-1", "10"]),
        (5, 5, 100, ["5"]),
        (10, 5, 100, ["10", "5"]),
        (90, 101, 100, ["90", "101", "100"]),
        (100, 101, 100, ["100", "101"]),
        (0, 500, 100, ["500", "100"]),
        (True, 10, 100, ["True"]),
        ("1", 10, 100, ["'1'"]),
        (None, 10, 100, ["None"]),
    ],
)
def test_chunk_range_rejects_with_one_line_message(start, end, total, named):
    with pytest.raises(FrameRangeError) as excinfo:
        chunk_range(start, end, total)
    _one_line_error(excinfo, *named)


def test_frame_range_is_not_silently_rounded():
    with pytest.raises(FrameRangeError, match="1.5"):
        FrameRange(1.5, 3)  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("10:20", (10, 20)),
        (":20", (0, 20)),
        ("10:", (10, 100)),
        (":", (0, 100)),
        (" 10 : 20 ", (10, 20)),
        ("0:100", (0, 100)),
        ("99:100", (99, 100)),
    ],
)
def test_parse_frame_range(text, expected):
    r = parse_frame_range(text, 100)
    assert (r.start, r.end) == expected


@pytest.mark.parametrize(
    ("text", "named"),
    [
        ("a:b", ["a:b"]),
        ("10", ["10"]),
        ("10-20", ["10-20"]),
        ("1.5:3", ["1.5:3"]),
        ("", []),
        ("5:500", ["5", "500", "100"]),
        ("100:", ["100"]),
        ("20:10", ["20", "10"]),
        ("5:5", ["5"]),
        ("-5:10", ["-5"]),
        ("0:101", ["101", "100"]),
        ("1:2:3", ["1:2:3"]),
    ],
)
def test_parse_frame_range_rejects(text, named):
    with pytest.raises(FrameRangeError) as excinfo:
        parse_frame_range(text, 100)
    _one_line_error(excinfo, *named)


@given(total=st.integers(1, 10_000), data=st.data())
def test_parse_frame_range_round_trip(total, data):
    start = data.draw(st.integers(0, total - 1))
    end = data.draw(st.integers(start + 1, total))
    assert parse_frame_range(f"{start}:{end}", total) == FrameRange(start, end)
    assert parse_frame_range(str(FrameRange(start, end))[1:-1].replace(", ", ":"), total) == FrameRange(start, end)


# --------------------------------------------------------------------------------------------
# distribute_frames
# --------------------------------------------------------------------------------------------


def test_distribute_frames_with_range_start(tmp_path):
    tasks = distribute_frames(100, 4, tmp_path, 50)
    assert [(t.start, t.end) for t in tasks] == [(50, 75), (75, 100), (100, 125), (125, 150)]
    assert all(t.output_frame_offset == 50 for t in tasks)
    assert all(t.work_dir == tmp_path for t in tasks)
    assert all(t.attempt == 0 for t in tasks)
    assert [t.worker_id for t in tasks] == [0, 1, 2, 3]
    assert _covered(tasks) == list(range(50, 150))
    # Local file names start at 0 for the chunk's first frame.
    assert tasks[0].local_index(50) == 0
    assert tasks[3].local_index(149) == 99


def test_distribute_frames_single_host_contract(tmp_path):
    tasks = distribute_frames(100, 4, str(tmp_path))
    assert [(t.start, t.end) for t in tasks] == [(0, 25), (25, 50), (50, 75), (75, 100)]
    assert all(t.output_frame_offset == 0 for t in tasks)
    assert all(isinstance(t.work_dir, Path) for t in tasks)


def test_distribute_frames_uneven(tmp_path):
    tasks = distribute_frames(10, 4, tmp_path)
    assert [len(t) for t in tasks] == [3, 3, 3, 1]
    assert [(t.start, t.end) for t in tasks] == [(0, 3), (3, 6), (6, 9), (9, 10)]


def test_distribute_frames_more_workers_than_frames(tmp_path):
    tasks = distribute_frames(3, 8, tmp_path, 7)
    assert [(t.start, t.end) for t in tasks] == [(7, 8), (8, 9), (9, 10)]
    assert all(len(t) > 0 for t in tasks)
    # Ceil sizing can leave trailing workers empty; they are dropped, not given empty tasks.
    tasks = distribute_frames(5, 4, tmp_path)
    assert [len(t) for t in tasks] == [2, 2, 1]


def test_distribute_frames_one_worker(tmp_path):
    tasks = distribute_frames(7, 1, tmp_path, 3)
    assert [(t.start, t.end, t.output_frame_offset) for t in tasks] == [(3, 10, 3)]


def test_distribute_frames_is_exact_for_huge_counts(tmp_path):
    total = 2**53 + 1  # float division would lose the last frame
    tasks = distribute_frames(total, 1, tmp_path)
    assert [(t.start, t.end) for t in tasks] == [(0, total)]
    tasks = distribute_frames(total, 3, tmp_path)
    assert tasks[0].start == 0 and tasks[-1].end == total
    assert all(a.end == b.start for a, b in zip(tasks, tasks[1:], strict=False))


@pytest.mark.parametrize(
    ("total", "workers", "range_start"),
    [
        (0, 4, 0),
        (-1, 4, 0),
        (10, 0, 0),
        (10, -2, 0),
        (10.0, 4, 0),
        (10, 4.0, 0),
        (10, 4, 0.0),
        (10, 4, -1),
        (True, 4, 0),
        (10, True, 0),
    ],
)
def test_distribute_frames_rejects(tmp_path, total, workers, range_start):
    with pytest.raises(FrameRangeError) as excinfo:
        distribute_frames(total, workers, tmp_path, range_start)
    _one_line_error(excinfo)


@given(total=st.integers(1, 5000), workers=st.integers(1, 64), range_start=st.integers(0, 10_000))
def test_distribute_frames_property(total, workers, range_start):
    tasks = distribute_frames(total, workers, "/w", range_start)
    assert 1 <= len(tasks) <= workers
    assert tasks[0].start == range_start
    assert tasks[-1].end == range_start + total
    for a, b in zip(tasks, tasks[1:], strict=False):
        assert a.end == b.start  # contiguous: no gap, no overlap
    assert all(t.end > t.start for t in tasks)
    assert all(t.output_frame_offset == range_start for t in tasks)
    assert _covered(tasks) == list(range(range_start, range_start + total))
    assert len({t.worker_id for t in tasks}) == len(tasks)
    # Sizes are ceil(total/workers) except for the last.
    per = -(-total // workers)
    assert all(len(t) == per for t in tasks[:-1])
    assert 1 <= len(tasks[-1]) <= per


# --------------------------------------------------------------------------------------------
# is_complete_frame_file / find_missing_frame_ranges
# --------------------------------------------------------------------------------------------


def test_is_complete_frame_file(tmp_path):
    cases = {
        "good.jpg": (JPEG, True),
        "good.png": (PNG, True),
        "trunc.jpg": (JPEG_TRUNCATED, False),
        "trunc.png": (PNG_TRUNCATED, False),
        "empty.jpg": (b"", False),
        "tiny.jpg": (b"\xff\xd8\xff\xd9", False),
        "nine.jpg": (b"\xff\xd8\x00\x00\x00\x00\x00\xff\xd9", False),
        "garbage.jpg": (b"not an image at all, really not", False),
        "header-only.png": (PNG[:8], False),
    }
    for name, (data, ok) in cases.items():
        (tmp_path / name).write_bytes(data)
        assert is_complete_frame_file(tmp_path / name) is ok, name
    assert is_complete_frame_file(tmp_path / "absent.jpg") is False
    assert is_complete_frame_file(tmp_path) is False  # a directory is not a frame


def test_find_missing_frame_ranges_gaps_and_broken_files(tmp_path):
    total = 20
    present = set(range(total)) - {0, 1, 5, 6, 7, 12, 19}
    _write_frames(tmp_path, present)
    (tmp_path / frame_file_name(10, "jpg")).write_bytes(b"")  # zero length
    (tmp_path / frame_file_name(15, "jpg")).write_bytes(JPEG_TRUNCATED)  # truncated
    assert find_missing_frame_ranges(tmp_path, total) == [
        (0, 2),
        (5, 8),
        (10, 11),
        (12, 13),
        (15, 16),
        (19, 20),
    ]
    assert find_missing_frame_ranges(str(tmp_path), total) == find_missing_frame_ranges(tmp_path, total)


def test_find_missing_frame_ranges_png_and_mixed(tmp_path):
    _write_frames(tmp_path, range(0, 4), PNG, "png")
    _write_frames(tmp_path, range(6, 8), JPEG, "jpg")
    (tmp_path / frame_file_name(4, "png")).write_bytes(PNG_TRUNCATED)
    # Either extension counts when ext is None.
    assert find_missing_frame_ranges(tmp_path, 10) == [(4, 6), (8, 10)]
    # ext filter: only that extension counts.
    assert find_missing_frame_ranges(tmp_path, 10, ext="png") == [(4, 10)]
    assert find_missing_frame_ranges(tmp_path, 10, ext="jpg") == [(0, 6), (8, 10)]


def test_find_missing_frame_ranges_broken_one_ext_good_other(tmp_path):
    (tmp_path / frame_file_name(0, "jpg")).write_bytes(JPEG_TRUNCATED)
    (tmp_path / frame_file_name(0, "png")).write_bytes(PNG)
    assert find_missing_frame_ranges(tmp_path, 1) == []
    assert find_missing_frame_ranges(tmp_path, 1, ext="jpg") == [(0, 1)]


def test_find_missing_frame_ranges_all_present(tmp_path):
    _write_frames(tmp_path, range(25))
    assert find_missing_frame_ranges(tmp_path, 25) == []
    # Frames past total are ignored; only [0, total) is walked.
    assert find_missing_frame_ranges(tmp_path, 10) == []


def test_find_missing_frame_ranges_nothing_present(tmp_path):
    assert find_missing_frame_ranges(tmp_path, 7) == [(0, 7)]
    assert find_missing_frame_ranges(tmp_path / "does-not-exist", 3) == [(0, 3)]


def test_find_missing_frame_ranges_uses_local_names(tmp_path):
    # A chunk [50, 60) writes frame_000000..frame_000009, never frame_000050.
    _write_frames(
        tmp_path,
        [t.local_index(i) for t in distribute_frames(10, 3, tmp_path, 50) for i in range(t.start, t.end)],
    )
    assert sorted(p.name for p in tmp_path.iterdir())[0] == "frame_000000.jpg"
    assert find_missing_frame_ranges(tmp_path, 10) == []


def test_find_missing_frame_ranges_rejects_float_total(tmp_path):
    with pytest.raises(FrameRangeError):
        find_missing_frame_ranges(tmp_path, 10.0)  # type: ignore[arg-type]


def test_frame_file_name():
    assert frame_file_name(0, "jpg") == "frame_000000.jpg"
    assert frame_file_name(123, "png") == "frame_000123.png"
    assert frame_file_name(1_234_567, "jpg") == "frame_1234567.jpg"


def _complement(present: set[int], total: int) -> list[tuple[int, int]]:
    out: list[tuple[int, int]] = []
    i = 0
    while i < total:
        if i in present:
            i += 1
            continue
        j = i
        while j < total and j not in present:
            j += 1
        out.append((i, j))
        i = j
    return out


@settings(max_examples=50, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    total=st.integers(1, 60),
    data=st.data(),
    fmt=st.sampled_from(["jpg", "png"]),
)
def test_find_missing_frame_ranges_round_trip(total, data, fmt):
    present = data.draw(st.sets(st.integers(0, total - 1)))
    broken = data.draw(st.sets(st.sampled_from(sorted(present)))) if present else set()
    good = JPEG if fmt == "jpg" else PNG
    bad = JPEG_TRUNCATED if fmt == "jpg" else PNG_TRUNCATED
    with tempfile.TemporaryDirectory() as d:
        root = Path(d)
        _write_frames(root, present - broken, good, fmt)
        _write_frames(root, broken, bad, fmt)
        ok = present - broken
        expected = _complement(ok, total)
        assert find_missing_frame_ranges(root, total) == expected
        assert find_missing_frame_ranges(root, total, ext=fmt) == expected
        other = "png" if fmt == "jpg" else "jpg"
        assert find_missing_frame_ranges(root, total, ext=other) == [(0, total)]


# --------------------------------------------------------------------------------------------
# build_missing_frame_retry_batches
# --------------------------------------------------------------------------------------------


def test_retry_batches_design_example(tmp_path):
    tasks = build_missing_frame_retry_batches([(0, 5), (10, 15)], 2, tmp_path, 0, 50)
    assert _covered(tasks) == list(range(50, 55)) + list(range(60, 65))
    assert [(t.start, t.end) for t in tasks] == [(50, 55), (60, 65)]
    assert all(t.output_frame_offset == 50 for t in tasks)
    assert all(t.attempt == 0 for t in tasks)
    assert all(t.work_dir == tmp_path for t in tasks)
    # A retry writes the same local file the first try would have.
    assert [t.local_index(t.start) for t in tasks] == [0, 10]
    assert [t.local_index(t.end - 1) for t in tasks] == [4, 14]


def test_retry_batches_round_trip_with_find_missing(tmp_path):
    # First try of chunk [50, 70) lost local frames 3..6 and 12.
    _write_frames(tmp_path, set(range(20)) - {3, 4, 5, 6, 12})
    missing = find_missing_frame_ranges(tmp_path, 20)
    assert missing == [(3, 7), (12, 13)]
    tasks = build_missing_frame_retry_batches(missing, 4, tmp_path, 1, 50)
    assert _covered(tasks) == [53, 54, 55, 56, 62]
    local_files = {frame_file_name(t.local_index(i), "jpg") for t in tasks for i in range(t.start, t.end)}
    assert local_files == {frame_file_name(i, "jpg") for i in (3, 4, 5, 6, 12)}
    assert all(t.attempt == 1 for t in tasks)


def test_retry_batches_uneven(tmp_path):
    tasks = build_missing_frame_retry_batches([(0, 7)], 3, tmp_path, 2)
    assert [(t.start, t.end) for t in tasks] == [(0, 3), (3, 6), (6, 7)]
    assert all(t.attempt == 2 and t.output_frame_offset == 0 for t in tasks)
    assert [t.worker_id for t in tasks] == [0, 1, 2]

    tasks = build_missing_frame_retry_batches([[2, 9]], 3, tmp_path, 1, 100)  # lists work too
    assert [(t.start, t.end) for t in tasks] == [(102, 105), (105, 108), (108, 109)]
    assert [t.local_index(t.start) for t in tasks] == [2, 5, 8]


def test_retry_batches_never_span_gaps(tmp_path):
    # 3 missing frames, 1 worker: one worker's share, but split at the gaps.
    tasks = build_missing_frame_retry_batches([(0, 1), (4, 5), (9, 10)], 1, tmp_path, 0, 10)
    assert [(t.start, t.end) for t in tasks] == [(10, 11), (14, 15), (19, 20)]
    assert [t.worker_id for t in tasks] == [0, 1, 2]


def test_retry_batches_single_worker_per_range(tmp_path):
    tasks = build_missing_frame_retry_batches([(0, 5), (10, 15)], 1, tmp_path, 0)
    assert [(t.start, t.end) for t in tasks] == [(0, 5), (10, 15)]


def test_retry_batches_empty(tmp_path):
    assert build_missing_frame_retry_batches([], 4, tmp_path, 0, 50) == []
    assert build_missing_frame_retry_batches(iter(()), 1, tmp_path, 3) == []


@pytest.mark.parametrize(
    ("ranges", "workers"),
    [
        ([(0, 5)], 0),
        ([(0, 5)], -1),
        ([(0, 5)], 2.0),
        ([(5, 5)], 2),
        ([(6, 5)], 2),
        ([(-1, 5)], 2),
        ([(1.5, 3)], 2),
        ([(0, 2.5)], 2),
    ],
)
def test_retry_batches_reject(tmp_path, ranges, workers):
    with pytest.raises(FrameRangeError) as excinfo:
        build_missing_frame_retry_batches(ranges, workers, tmp_path, 0)
    _one_line_error(excinfo)


@st.composite
def disjoint_ranges(draw, limit: int = 2000) -> list[tuple[int, int]]:
    """Sorted, disjoint, non-empty, non-adjacent half-open ranges inside [0, limit)."""
    cuts = sorted(draw(st.sets(st.integers(0, limit), max_size=40)))
    if len(cuts) % 2:
        cuts = cuts[:-1]
    return [(cuts[k], cuts[k + 1]) for k in range(0, len(cuts), 2)]


@given(
    ranges=disjoint_ranges(),
    workers=st.integers(1, 16),
    range_start=st.integers(0, 10_000),
    attempt=st.integers(0, 5),
)
def test_retry_batches_property(ranges, workers, range_start, attempt):
    tasks = build_missing_frame_retry_batches(ranges, workers, "/w", attempt, range_start)
    expected = [i + range_start for a, b in ranges for i in range(a, b)]
    covered = _covered(tasks)
    assert covered == expected  # exactly the union, in order, so no overlap and nothing extra
    assert len(set(covered)) == len(covered)
    if not ranges:
        assert tasks == []
        return
    absolute = [(a + range_start, b + range_start) for a, b in ranges]
    for t in tasks:
        assert isinstance(t, WorkerTask)
        assert t.end > t.start
        assert t.output_frame_offset == range_start
        assert t.attempt == attempt
        # No task spans a gap: it lies inside one missing range.
        assert any(a <= t.start and t.end <= b for a, b in absolute)
    # Missing frames are shared about evenly: no task is bigger than one worker's share.
    count = len(expected)
    per = -(-count // workers)
    assert all(len(t) <= per for t in tasks)
    assert len(tasks) <= workers + len(ranges)
    assert [t.worker_id for t in tasks] == list(range(len(tasks)))


# --------------------------------------------------------------------------------------------
# plan_chunks
# --------------------------------------------------------------------------------------------


def test_plan_chunks_by_count():
    chunks = plan_chunks(100, chunks=3)
    assert chunks == [FrameRange(0, 34), FrameRange(34, 67), FrameRange(67, 100)]
    assert [len(c) for c in chunks] == [34, 33, 33]


def test_plan_chunks_by_frames_per_chunk():
    chunks = plan_chunks(100, frames_per_chunk=40)
    assert chunks == [FrameRange(0, 40), FrameRange(40, 80), FrameRange(80, 100)]
    assert plan_chunks(100, frames_per_chunk=100) == [FrameRange(0, 100)]
    assert plan_chunks(100, frames_per_chunk=500) == [FrameRange(0, 100)]
    assert plan_chunks(100, frames_per_chunk=50) == [FrameRange(0, 50), FrameRange(50, 100)]


def test_plan_chunks_range_start():
    assert plan_chunks(100, chunks=4, range_start=50) == [
        FrameRange(50, 75),
        FrameRange(75, 100),
        FrameRange(100, 125),
        FrameRange(125, 150),
    ]
    assert plan_chunks(100, frames_per_chunk=40, range_start=10) == [
        FrameRange(10, 50),
        FrameRange(50, 90),
        FrameRange(90, 110),
    ]


def test_plan_chunks_more_chunks_than_frames():
    assert plan_chunks(3, chunks=10) == [FrameRange(0, 1), FrameRange(1, 2), FrameRange(2, 3)]
    assert plan_chunks(1, chunks=1) == [FrameRange(0, 1)]


@pytest.mark.parametrize(
    "kwargs",
    [
        {},
        {"chunks": 3, "frames_per_chunk": 40},
        {"chunks": 0},
        {"chunks": -1},
        {"chunks": 2.0},
        {"frames_per_chunk": 0},
        {"frames_per_chunk": -5},
        {"frames_per_chunk": 1.5},
        {"chunks": 2, "range_start": -1},
        {"chunks": 2, "range_start": 1.5},
    ],
)
def test_plan_chunks_rejects(kwargs):
    with pytest.raises(FrameRangeError) as excinfo:
        plan_chunks(100, **kwargs)
    _one_line_error(excinfo)


@pytest.mark.parametrize("total", [0, -1, 10.0])
def test_plan_chunks_rejects_bad_total(total):
    with pytest.raises(FrameRangeError):
        plan_chunks(total, chunks=2)


def _assert_exact_cover(chunks: list[FrameRange], start: int, total: int) -> None:
    assert chunks, "at least one chunk"
    assert chunks[0].start == start
    assert chunks[-1].end == start + total
    for a, b in zip(chunks, chunks[1:], strict=False):
        assert a.end == b.start
    assert all(len(c) >= 1 for c in chunks)
    assert sum(len(c) for c in chunks) == total


@given(total=st.integers(1, 5000), n=st.integers(1, 200), range_start=st.integers(0, 10_000))
def test_plan_chunks_by_count_property(total, n, range_start):
    chunks = plan_chunks(total, chunks=n, range_start=range_start)
    _assert_exact_cover(chunks, range_start, total)
    assert len(chunks) == min(n, total)
    sizes = [len(c) for c in chunks]
    assert max(sizes) - min(sizes) <= 1
    assert sizes == sorted(sizes, reverse=True)  # the bigger chunks come first


@given(total=st.integers(1, 5000), per=st.integers(1, 6000), range_start=st.integers(0, 10_000))
def test_plan_chunks_by_size_property(total, per, range_start):
    chunks = plan_chunks(total, frames_per_chunk=per, range_start=range_start)
    _assert_exact_cover(chunks, range_start, total)
    assert len(chunks) == -(-total // per)
    assert all(len(c) == per for c in chunks[:-1])
    assert 1 <= len(chunks[-1]) <= per


# --------------------------------------------------------------------------------------------
# choose_worker_count
# --------------------------------------------------------------------------------------------


def test_choose_worker_count_explicit_wins():
    assert choose_worker_count(1000, 6, cpu_count=2, available_memory=GIB) == 6
    assert choose_worker_count(1000, 1, cpu_count=64, available_memory=64 * GIB) == 1
    assert choose_worker_count(5, 6, cpu_count=2, available_memory=GIB) == 5  # capped at frames
    assert choose_worker_count(1, 6, cpu_count=32, available_memory=64 * GIB) == 1


@pytest.mark.parametrize("requested", [0, -1, 2.0, True])
def test_choose_worker_count_rejects_bad_request(requested):
    with pytest.raises(FrameRangeError):
        choose_worker_count(100, requested, cpu_count=4, available_memory=8 * GIB)


@pytest.mark.parametrize(
    ("frames", "cpu", "mem", "expected"),
    [
        (10_000, 4, 64 * GIB, 4),  # bounded by CPUs
        (10_000, 32, 3 * GIB, 3),  # bounded by memory
        (10_000, 32, 3 * GIB + GIB // 2, 3),  # memory rounds down
        (48, 32, 64 * GIB, 48 // MIN_FRAMES_PER_WORKER),  # bounded by frames
        (10_000, 64, 256 * GIB, MAX_AUTO_WORKERS),  # hard cap
        (5, 8, 16 * GIB, 1),  # too few frames for a second browser
        (10_000, 0, 16 * GIB, 1),  # unknown CPU count
        (10_000, 8, 0, 1),  # no memory information
        (10_000, 8, GIB // 2, 1),
    ],
)
def test_choose_worker_count_auto(frames, cpu, mem, expected):
    assert choose_worker_count(frames, None, cpu_count=cpu, available_memory=mem) == expected


def test_a_webgl_page_that_replays_its_history_gets_one_auto_worker_but_any_requested_count():
    assert choose_worker_count(10_000, None, cpu_count=8, available_memory=64 * GIB, replays_gl=True) == 1
    assert choose_worker_count(10_000, 3, cpu_count=8, available_memory=64 * GIB, replays_gl=True) == 3


@given(frames=st.integers(1, 100_000), cpu=st.integers(0, 256), mem=st.integers(0, 1 << 40))
def test_choose_worker_count_auto_bounds(frames, cpu, mem):
    n = choose_worker_count(frames, None, cpu_count=cpu, available_memory=mem)
    assert 1 <= n <= MAX_AUTO_WORKERS
    assert n <= max(1, cpu)
    assert n <= max(1, mem // MEMORY_PER_WORKER)
    assert n == 1 or n * MIN_FRAMES_PER_WORKER <= frames


@pytest.mark.parametrize(
    ("history_s", "fps", "want"),
    [(0.0, Fps(30), 1), (0.01, Fps(30), 1), (0.8, Fps(30), 24), (0.81, Fps(30), 25), (0.5, Fps(30000, 1001), 15),
     (10.0, Fps(30), 60), (10.0, Fps(60), 120)],
)  # fmt: skip
def test_prime_plan_first_covers_the_longest_transition_within_the_cap(history_s: float, fps: Fps, want: int) -> None:
    assert prime_plan(1, history_s, fps, max_s=2.0).spans[0] == want


def test_prime_plan_doubles_up_to_the_cap_only_for_pages_with_transitions() -> None:
    assert prime_plan(1, 0.8, Fps(30), max_s=4.0) == PrimePlan(quiet=24, spans=(24, 48, 96, 120))
    assert prime_plan(3, 0.0, Fps(30), max_s=2.0) == PrimePlan(quiet=0, spans=(3,))
    assert prime_plan(1, 5.0, Fps(30), max_s=0.0) == PrimePlan(quiet=150, spans=(1,))


@pytest.mark.parametrize(
    ("started", "settled"),
    [([], False), ([0], False), ([0, 0], True), ([1, 0, 0], True), ([0, 2, 0], False), ([1, 1, 0, 0, 1], True)],
)
def test_prime_plan_is_settled_once_transitions_started_before_have_ended(started: list[int], settled: bool) -> None:
    """quiet=3: a transition started at frame c has ended by c + 3, so two quiet frames after c suffice."""
    assert PrimePlan(quiet=3, spans=(3,)).settled(started) is settled


def test_a_page_without_transitions_or_with_one_frame_transitions_is_settled_by_any_priming() -> None:
    assert PrimePlan(quiet=0, spans=(1,)).settled([])
    assert PrimePlan(quiet=1, spans=(1,)).settled([])
