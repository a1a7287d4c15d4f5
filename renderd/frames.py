"""Pure frame math: rates, frame times, ranges, worker distribution, missing frames, chunk plans.

Nothing here touches a browser or a subprocess; the engine, the agent and the coordinator all
build on these functions, so their contracts are pinned by tests (see docs/design.md).

Conventions:
- frame ``i`` is ABSOLUTE (0-based over the whole composition) and shows time ``i / fps``;
- a range is half-open ``[start, end)`` of absolute frames;
- inside a chunk's frames directory files are LOCAL: ``frame_{i - offset:06d}.{ext}``.
"""

from __future__ import annotations

import math
import os
import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from fractions import Fraction
from pathlib import Path

from renderd.errors import FrameRangeError

FRAME_EXTENSIONS = ("jpg", "png")
MAX_FPS = 240
# A browser start costs about as much as rendering a handful of frames; fewer frames than this
# per worker and an extra worker slows the chunk down instead of speeding it up.
MIN_FRAMES_PER_WORKER = 12
MAX_AUTO_WORKERS = 16
# Measured: one 1080p Chromium worker (browser, renderer, compositor) peaks well under this.
MEMORY_PER_WORKER = 1 << 30

# Common decimal spellings of NTSC rates, which people type but mean the exact fraction.
_NTSC = {
    "23.976": Fraction(24000, 1001),
    "23.98": Fraction(24000, 1001),
    "29.97": Fraction(30000, 1001),
    "47.952": Fraction(48000, 1001),
    "59.94": Fraction(60000, 1001),
    "119.88": Fraction(120000, 1001),
}


@dataclass(frozen=True, slots=True)
class Fps:
    """An exact frame rate ``num/den`` frames per second."""

    num: int
    den: int = 1

    def __post_init__(self) -> None:
        for name, v in (("numerator", self.num), ("denominator", self.den)):
            if not isinstance(v, int) or isinstance(v, bool):
                raise FrameRangeError(f"fps {name} must be an integer, got {v!r}")
        if self.num <= 0 or self.den <= 0:
            raise FrameRangeError(f"fps must be positive, got {self.num}/{self.den}")
        if Fraction(self.num, self.den) > MAX_FPS:
            raise FrameRangeError(f"fps {self} is above the maximum of {MAX_FPS}")
        g = math.gcd(self.num, self.den)
        if g != 1:
            object.__setattr__(self, "num", self.num // g)
            object.__setattr__(self, "den", self.den // g)

    @classmethod
    def parse(cls, value: str | int | float | Fraction | Fps) -> Fps:
        """Parse ``30``, ``"29.97"``, ``"30000/1001"`` or a Fraction into an exact rate."""
        if isinstance(value, Fps):
            return value
        if isinstance(value, bool):
            raise FrameRangeError(f"fps must be a number, got {value!r}")
        if isinstance(value, int):
            return cls(value, 1)
        if isinstance(value, Fraction):
            return cls(value.numerator, value.denominator)
        text = str(value).strip()
        if text in _NTSC:
            f = _NTSC[text]
            return cls(f.numerator, f.denominator)
        m = re.fullmatch(r"(\d+)\s*/\s*(\d+)", text)
        try:
            f = Fraction(int(m.group(1)), int(m.group(2))) if m else Fraction(text)
        except (ValueError, ZeroDivisionError):
            raise FrameRangeError(f"fps {text!r} is not a number or a fraction like 30000/1001") from None
        return cls(f.numerator, f.denominator)

    @property
    def fraction(self) -> Fraction:
        """The rate as an exact Fraction."""
        return Fraction(self.num, self.den)

    def __str__(self) -> str:
        return str(self.num) if self.den == 1 else f"{self.num}/{self.den}"


def frame_time(i: int, fps: Fps) -> Fraction:
    """Return the composition time (seconds, exact) that absolute frame ``i`` shows."""
    _require_int("frame", i)
    if i < 0:
        raise FrameRangeError(f"frame {i} is negative")
    return Fraction(i * fps.den, fps.num)


def total_frames_for(duration: Fraction | float | int, fps: Fps) -> int:
    """Return how many frames a composition of ``duration`` seconds has at ``fps``.

    Rounded as HyperFrames does: to the nearest integer when at most 1e-3 from it (so 10 s at
    29.97 is 300 frames, not 301), else up, so the last partial frame is still shown.
    """
    try:
        d = Fraction(duration) if not isinstance(duration, Fraction) else duration
    except (ValueError, OverflowError, TypeError):
        raise FrameRangeError(f"duration must be a finite number of seconds, got {duration!r}") from None
    if d <= 0:
        raise FrameRangeError(f"duration must be positive, got {float(d)} s")
    exact = d * fps.fraction
    nearest = round(exact)
    if abs(exact - nearest) <= Fraction(1, 1000):
        return max(1, int(nearest))
    return math.ceil(exact)


@dataclass(frozen=True, slots=True)
class FrameRange:
    """A validated half-open range ``[start, end)`` of absolute frames."""

    start: int
    end: int

    def __post_init__(self) -> None:
        _require_int("range start", self.start)
        _require_int("range end", self.end)
        if self.start < 0:
            raise FrameRangeError(f"frame range [{self.start}, {self.end}) starts below 0")
        if self.end <= self.start:
            raise FrameRangeError(f"frame range [{self.start}, {self.end}) is empty")

    def __len__(self) -> int:
        return self.end - self.start

    def check_within(self, total: int) -> FrameRange:
        """Return self, or raise if the range reaches past ``total`` frames."""
        if self.end > total:
            raise FrameRangeError(
                f"frame range [{self.start}, {self.end}) goes beyond the end of the composition ({total} frames)"
            )
        return self

    def __str__(self) -> str:
        return f"[{self.start}, {self.end})"


def chunk_range(start: object, end: object, total: int) -> FrameRange:
    """Validate an absolute chunk range against a composition of ``total`` frames."""
    return FrameRange(start, end).check_within(total)  # type: ignore[arg-type]


def parse_frame_range(text: str, total: int) -> FrameRange:
    """Parse ``"A:B"`` (either side may be empty: ``":B"``, ``"A:"``) into a checked range."""
    m = re.fullmatch(r"\s*(-?\d*)\s*:\s*(-?\d*)\s*", text)
    if not m:
        raise FrameRangeError(f"frame range {text!r} is not of the form START:END with whole numbers")
    start = int(m.group(1)) if m.group(1) else 0
    end = int(m.group(2)) if m.group(2) else total
    return chunk_range(start, end, total)


@dataclass(frozen=True, slots=True)
class WorkerTask:
    """Frames ``[start, end)`` (absolute) for one worker, written as local files under ``work_dir``."""

    worker_id: int
    start: int
    end: int
    output_frame_offset: int
    work_dir: Path
    attempt: int = 0

    def __len__(self) -> int:
        return self.end - self.start

    def local_index(self, i: int) -> int:
        """Return the local (file) index of absolute frame ``i``."""
        return i - self.output_frame_offset


def frame_file_name(local_index: int, ext: str) -> str:
    """Return the file name of a local frame index."""
    return f"frame_{local_index:06d}.{ext}"


def distribute_frames(
    total: int, workers: int, work_dir: str | os.PathLike[str], range_start: int = 0
) -> list[WorkerTask]:
    """Split ``[range_start, range_start + total)`` into contiguous tasks, one per worker.

    Each worker gets ``ceil(total / workers)`` frames except the last; workers that would get
    nothing are dropped. Every task writes local files (offset ``range_start``).
    """
    _require_int("frame count", total)
    _require_int("worker count", workers)
    _require_int("range start", range_start)
    if total <= 0:
        raise FrameRangeError(f"cannot distribute {total} frames")
    if workers <= 0:
        raise FrameRangeError(f"worker count must be at least 1, got {workers}")
    if range_start < 0:
        raise FrameRangeError(f"range start {range_start} is negative")
    per = -(-total // workers)  # exact ceil; float division loses frames past 2**53
    end_all = range_start + total
    tasks = []
    for w in range(workers):
        s = range_start + w * per
        e = min(s + per, end_all)
        if s >= e:
            break
        tasks.append(WorkerTask(w, s, e, range_start, Path(work_dir)))
    return tasks


@dataclass(frozen=True)
class PrimePlan:
    """How to bring a page to the state of a sequential pass before a frame it did not lead up to.

    The worker jumps to ``i - span`` (ending the CSS transitions in flight), then shows every frame
    up to ``i - 1`` uncaptured. A transition started at frame ``c`` has ended by frame
    ``c + quiet``; so once ``quiet - 1`` frames in a row after ``c`` started no transition, the
    next frame finds none in flight, in a sequential pass as after the jump, and from there on the
    page's state is the same. A timeline that moves an element with a transition every frame keeps
    a chain of transitions going for as long as it moves, so a span as long as the transition may
    not reach such a quiet stretch: the next, doubled span is tried then.
    """

    quiet: int  # frames without a new transition after which none is in flight (0: no transitions)
    spans: tuple[int, ...]  # windows to try, shortest first

    def settled(self, started: Sequence[int]) -> bool:
        """Return True when ``started`` (transitions started per primed frame) has a quiet stretch."""
        run = longest = 0
        for n in started:
            run = 0 if n else run + 1
            longest = max(longest, run)
        return longest >= self.quiet - 1


def frames_spanning(seconds: float, fps: Fps) -> int:
    """Return how many frames at ``fps`` cover ``seconds`` (rounded up; 0 for none)."""
    # Whole microseconds: 0.8 s is 24 frames at 30 fps, not 24.000000000000001.
    return math.ceil(Fraction(round(seconds * 1_000_000), 1_000_000) * fps.fraction) if seconds > 0 else 0


def prime_plan(min_frames: int, history_s: float, fps: Fps, max_s: float) -> PrimePlan:
    """Return the priming plan for a page whose longest CSS transition lasts ``history_s`` seconds.

    At least ``min_frames``; enough to cover ``history_s`` (state the page carries from one seek
    to the next), doubling up to ``max_s`` seconds while no quiet stretch was seen.
    """
    quiet, cap = frames_spanning(history_s, fps), frames_spanning(max_s, fps)
    first = max(min_frames, min(quiet, cap))
    spans = [first]
    while quiet and spans[-1] < cap:
        spans.append(min(spans[-1] * 2, cap))
    return PrimePlan(quiet, tuple(spans))


def is_complete_frame_file(path: Path) -> bool:
    """Return True when ``path`` holds a whole JPEG or PNG (truncated writes fail this)."""
    try:
        size = path.stat().st_size
        if size <= 8:
            return False
        with path.open("rb") as f:
            head = f.read(8)
            f.seek(-12, os.SEEK_END)
            tail = f.read(12)
    except OSError:
        return False
    if head.startswith(b"\xff\xd8"):
        return tail.endswith(b"\xff\xd9")
    if head == b"\x89PNG\r\n\x1a\n":
        return tail[4:8] == b"IEND"
    return False


def find_missing_frame_ranges(
    frames_dir: str | os.PathLike[str], total: int, ext: str | None = None
) -> list[tuple[int, int]]:
    """Return LOCAL half-open ranges of ``[0, total)`` whose frame files are missing or broken.

    A frame counts as present when ``frame_NNNNNN.<ext>`` (either extension if ``ext`` is None)
    exists and holds a complete image.
    """
    _require_int("frame count", total)
    root = Path(frames_dir)
    exts = (ext,) if ext else FRAME_EXTENSIONS
    missing: list[tuple[int, int]] = []
    run_start: int | None = None
    for i in range(total):
        ok = any(is_complete_frame_file(root / frame_file_name(i, e)) for e in exts)
        if not ok and run_start is None:
            run_start = i
        elif ok and run_start is not None:
            missing.append((run_start, i))
            run_start = None
    if run_start is not None:
        missing.append((run_start, total))
    return missing


def build_missing_frame_retry_batches(
    ranges: Iterable[Sequence[int]],
    workers: int,
    work_dir: str | os.PathLike[str],
    attempt: int,
    range_start: int = 0,
) -> list[WorkerTask]:
    """Turn LOCAL missing ranges into retry tasks with ABSOLUTE bounds.

    Missing frames are shared about evenly by ``workers``; a task never spans a gap between two
    ranges, so there can be more tasks than workers (the pool queues them). Every task keeps
    ``output_frame_offset = range_start`` so a retry rewrites the very file the first try missed.
    """
    _require_int("worker count", workers)
    if workers <= 0:
        raise FrameRangeError(f"worker count must be at least 1, got {workers}")
    local = [(a, b) for a, b in ranges]
    for a, b in local:
        _require_int("missing range start", a)
        _require_int("missing range end", b)
        if a < 0 or b <= a:
            raise FrameRangeError(f"missing range [{a}, {b}) is empty or negative")
    count = sum(b - a for a, b in local)
    if count == 0:
        return []
    per = -(-count // workers)
    tasks: list[WorkerTask] = []
    for a, b in local:
        s = a
        while s < b:
            e = min(s + per, b)
            tasks.append(WorkerTask(len(tasks), s + range_start, e + range_start, range_start, Path(work_dir), attempt))
            s = e
    return tasks


def plan_chunks(
    total_frames: int,
    chunks: int | None = None,
    frames_per_chunk: int | None = None,
    range_start: int = 0,
) -> list[FrameRange]:
    """Split ``[range_start, range_start + total_frames)`` into chunk ranges.

    Give exactly one of ``chunks`` (sizes then differ by at most one frame; more chunks than
    frames are reduced to one frame each) or ``frames_per_chunk`` (the last chunk may be short).
    """
    _require_int("frame count", total_frames)
    if total_frames <= 0:
        raise FrameRangeError(f"cannot plan chunks over {total_frames} frames")
    if (chunks is None) == (frames_per_chunk is None):
        raise FrameRangeError("give either a chunk count or frames per chunk, not both or neither")
    end_all = range_start + total_frames
    if chunks is not None:
        _require_int("chunk count", chunks)
        if chunks <= 0:
            raise FrameRangeError(f"chunk count must be at least 1, got {chunks}")
        n = min(chunks, total_frames)
        base, extra = divmod(total_frames, n)
        out, s = [], range_start
        for k in range(n):
            e = s + base + (1 if k < extra else 0)
            out.append(FrameRange(s, e))
            s = e
        return out
    assert frames_per_chunk is not None
    _require_int("frames per chunk", frames_per_chunk)
    if frames_per_chunk <= 0:
        raise FrameRangeError(f"frames per chunk must be at least 1, got {frames_per_chunk}")
    return [FrameRange(s, min(s + frames_per_chunk, end_all)) for s in range(range_start, end_all, frames_per_chunk)]


def choose_worker_count(
    frames: int,
    requested: int | None,
    cpu_count: int,
    available_memory: int,
    *,
    replays_gl: bool = False,
) -> int:
    """Return how many capture workers to run for a chunk of ``frames`` frames.

    An explicit ``requested`` count wins (but never more workers than frames). ``auto`` takes
    one worker per CPU (a worker is one browser whose renderer keeps about one core busy),
    bounded by available memory and by frames so that each worker gets enough frames to pay
    for its browser start. ``replays_gl`` (a WebGL page that keeps all its history, so every
    worker draws every frame before its own) makes ``auto`` one worker: software GL already
    spreads one page over all cores, and each extra worker only adds a full replay of it.
    """
    if requested is not None:
        _require_int("worker count", requested)
        if requested <= 0:
            raise FrameRangeError(f"worker count must be at least 1, got {requested}")
        return max(1, min(requested, frames))
    if replays_gl:
        return 1
    by_cpu = max(1, cpu_count)
    by_mem = max(1, available_memory // MEMORY_PER_WORKER)
    by_frames = max(1, frames // MIN_FRAMES_PER_WORKER)
    return max(1, min(by_cpu, by_mem, by_frames, MAX_AUTO_WORKERS))


def _require_int(what: str, v: object) -> None:
    if not isinstance(v, int) or isinstance(v, bool):
        raise FrameRangeError(f"{what} must be a whole number, got {v!r}")
