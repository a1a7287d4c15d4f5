"""The host self-test: a small built-in HyperFrames composition and the pixels one frame of it must have.

`renderd hosts check` (and the scheduler's re-probe of a quarantined host) renders frame
:data:`FRAME` of ``composition/`` on a host through its agent, exactly as a chunk is rendered,
and judges the decoded frame with :func:`judge_frame`. The composition needs the HyperFrames
runtime, GSAP and the deterministic fonts, so a host whose install lacks any of them fails here
instead of failing every chunk of a real job. Plain Python on purpose: the coordinator imports
this without renderd.engine or a browser.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

COMPOSITION = Path(__file__).resolve().parent / "composition"
WIDTH, HEIGHT = 320, 180
FPS = 30
DURATION = 1
TOTAL_FRAMES = FPS * DURATION
FRAME = 15  # t = 0.5 s

RGB = tuple[int, int, int]
BACKGROUND: RGB = (0x20, 0x30, 0x40)
# Per channel, after x264 (4:2:0, CRF 18) and decoding back to RGB; the blocks are 40x40 and
# sampled well inside, where chroma subsampling does not reach.
TOLERANCE = 24
_SAMPLE = 4  # average a (2 * _SAMPLE + 1)^2 square around each point


@dataclass(frozen=True, slots=True)
class Spot:
    """A point of the frame whose colour is known, and what puts that colour there."""

    what: str
    x: int
    y: int
    rgb: RGB


SPOTS = (
    Spot("the static red block", 20, 20, (255, 0, 0)),
    Spot("the green block GSAP moves (x = 100 px at 0.5 s)", 120, 80, (0, 255, 0)),
    Spot("where the GSAP-moved block starts (empty at 0.5 s)", 20, 80, BACKGROUND),
    Spot("the yellow clip shown from 0.25 s to 0.75 s", 300, 20, (255, 255, 0)),
    Spot("the magenta clip hidden until 0.75 s", 300, 80, BACKGROUND),
    Spot("the background", 200, 20, BACKGROUND),
)
# The word "renderd", bold 40 px Helvetica, which HyperFrames draws in its embedded Inter: white
# ink in these rows ends at this column (measured; a system fallback font such as DejaVu Sans
# ends near x = 183).
TEXT_ROWS = (112, 170)
TEXT_RIGHT_EDGE = 158
TEXT_EDGE_TOLERANCE = 6
TEXT_MIN_INK = 600  # white pixels in TEXT_ROWS: well under the ~1900 the word has
_INK = 3 * 160  # r + g + b above this counts as the white text


def _mean(frame: bytes, x: int, y: int) -> RGB:
    total = [0, 0, 0]
    n = 0
    for yy in range(y - _SAMPLE, y + _SAMPLE + 1):
        for xx in range(x - _SAMPLE, x + _SAMPLE + 1):
            i = (yy * WIDTH + xx) * 3
            for c in range(3):
                total[c] += frame[i + c]
            n += 1
    return (round(total[0] / n), round(total[1] / n), round(total[2] / n))


def judge_frame(frame: bytes) -> list[str]:
    """Return what is wrong with a decoded self-test frame (raw RGB24, WIDTH x HEIGHT); empty if right."""
    if len(frame) != WIDTH * HEIGHT * 3:
        return [f"the self-test video decoded to {len(frame)} bytes, not one {WIDTH}x{HEIGHT} frame"]
    problems = []
    for s in SPOTS:
        got = _mean(frame, s.x, s.y)
        if any(abs(g - e) > TOLERANCE for g, e in zip(got, s.rgb, strict=True)):
            problems.append(f"wrong pixels at ({s.x}, {s.y}), {s.what}: rgb{got}, expected rgb{s.rgb}")
    ink_columns = []
    ink = 0
    for y in range(*TEXT_ROWS):
        for x in range(WIDTH):
            i = (y * WIDTH + x) * 3
            if frame[i] + frame[i + 1] + frame[i + 2] > _INK:
                ink += 1
                ink_columns.append(x)
    if ink < TEXT_MIN_INK:
        problems.append(f"no text drawn in rows {TEXT_ROWS[0]}-{TEXT_ROWS[1]} ({ink} white pixels)")
    elif abs(max(ink_columns) - TEXT_RIGHT_EDGE) > TEXT_EDGE_TOLERANCE:
        problems.append(
            f"text drawn in the wrong font: it ends at x = {max(ink_columns)}, expected {TEXT_RIGHT_EDGE} "
            f"(+-{TEXT_EDGE_TOLERANCE}) in Inter, HyperFrames' font for Helvetica"
        )
    return problems
