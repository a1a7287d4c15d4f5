"""`renderd still`: one frame as an image, the same pixels as that frame of a render.

The fixture draws its frame index k as 8 squares (see tests/fixtures/frame-index-gsap/index.html):
square b at x = 40*b .. 40*b+39, white when bit b of k is set, black otherwise, grey elsewhere.
"""

from __future__ import annotations

import json
from fractions import Fraction
from pathlib import Path

import pytest
from conftest import FIXTURES, decode_index, json_events, run_renderd
from PIL import Image

from renderd.errors import FrameRangeError, SettingsError
from renderd.frames import Fps
from renderd.still import frame_at, image_format

COMP = FIXTURES / "frame-index-gsap"
FRAME = 37  # 0b00100101: squares 0, 2 and 5 white


def rgb(path: Path) -> tuple[tuple[int, int], bytes]:
    with Image.open(path) as im:
        return im.size, im.convert("RGB").tobytes()


@pytest.fixture(scope="module")
def frame37(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """`renderd still --frame 37` as a PNG."""
    tmp = tmp_path_factory.mktemp("still")
    out = tmp / "s.png"
    r = run_renderd("still", COMP, "--frame", FRAME, "-o", out, "--no-prepare")
    assert r.returncode == 0, r.stderr
    assert r.stdout == f"renderd: wrote {out} (frame {FRAME}, 320x240)\n"
    assert sorted(p.name for p in tmp.iterdir()) == ["s.png"], "temp files left behind"
    return out


@pytest.mark.browser
def test_still_is_the_frame_of_a_render(frame37: Path, tmp_path: Path) -> None:
    seq = tmp_path / "seq"
    r = run_renderd("render", COMP, "--frames", "30:45", "-o", f"{seq}/", "--no-prepare", "--workers", "1")
    assert r.returncode == 0, r.stderr
    with Image.open(frame37) as im:
        assert (im.format, im.mode) == ("PNG", "RGB")
    size, still = rgb(frame37)
    assert (size, still) == rgb(seq / f"frame_{FRAME:06d}.png"), "the still differs from frame 37 of the render"
    # And it is frame 37 of the fixture's picture, not just the same wrong one twice.
    width = size[0]
    assert decode_index(still, width) == FRAME
    assert decode_index(still, width, row_y=180) == FRAME
    at = lambda x, y: still[(y * width + x) * 3 : (y * width + x) * 3 + 3]  # noqa: E731
    for b in range(8):
        want = b"\xff\xff\xff" if FRAME >> b & 1 else b"\x00\x00\x00"
        assert at(40 * b + 20, 120) == want, f"square {b} of row A"
    assert at(20, 20) == b"\x80\x80\x80"


@pytest.mark.browser
def test_time_picks_the_frame_on_screen(frame37: Path, tmp_path: Path) -> None:
    out = tmp_path / "t.png"
    # 1.25 s at 30 fps is frame 37.5: frame 37 is on screen (floor). With --transparent, as a
    # png-sequence does, the PNG keeps an alpha channel (this page is opaque: the same colours).
    r = run_renderd("still", COMP, "--time", "1.25", "-o", out, "--no-prepare", "--transparent")
    assert r.returncode == 0, r.stderr
    assert r.stdout == f"renderd: wrote {out} (frame {FRAME}, 320x240)\n"
    with Image.open(out) as im:
        assert im.mode == "RGBA"
    assert rgb(out) == rgb(frame37)


@pytest.mark.browser
def test_jpeg_output_is_close_to_the_png(frame37: Path, tmp_path: Path) -> None:
    out = tmp_path / "s.jpg"
    r = run_renderd("still", COMP, "--frame", FRAME, "-o", out, "--no-prepare", "--json")
    assert r.returncode == 0, r.stderr
    events = json_events(r.stdout)
    assert [e["event"] for e in events][0] == "started" and events[0]["start"] == FRAME
    done = events[-1]
    assert done["event"] == "done" and done["output"] == str(out) and done["frames"] == 1
    assert "chunk_done" not in {e["event"] for e in events}, "events naming the render's temp files"
    with Image.open(out) as im:
        assert (im.format, im.mode, im.size) == ("JPEG", "RGB", (320, 240))
    size, jpeg = rgb(out)
    _, png = rgb(frame37)
    diffs = [abs(a - b) for a, b in zip(jpeg, png, strict=True)]
    assert sum(diffs) / len(diffs) < 2, "mean error"
    assert sorted(diffs)[int(len(diffs) * 0.99)] < 16, "99th percentile error"
    assert decode_index(jpeg, size[0]) == FRAME
    assert sorted(p.name for p in tmp_path.iterdir()) == ["s.jpg"]


@pytest.mark.browser
def test_frame_out_of_range_writes_nothing(tmp_path: Path) -> None:
    for args in (["--frame", "120"], ["--time", "4"]):
        r = run_renderd("still", COMP, *args, "-o", tmp_path / "x.png", "--no-prepare")
        assert r.returncode == 2, r.stderr
        (line,) = r.stderr.splitlines()
        assert line.startswith("renderd: error: ")
        assert "frame 120" in line and "frames 0 to 119" in line, line
        assert list(tmp_path.iterdir()) == []
    r = run_renderd("still", COMP, "--frame", "500", "-o", tmp_path / "x.png", "--no-prepare", "--json")
    assert r.returncode == 2
    (event,) = [json.loads(line) for line in r.stdout.splitlines()]
    assert event["event"] == "error" and event["code"] == "FrameRangeError"
    assert list(tmp_path.iterdir()) == []


@pytest.mark.parametrize(
    ("args", "said"),
    [
        (["--frame", "1", "-o", "x.gif"], "output {tmp}/x.gif ends in .gif: a still is written as .png, .jpg or .jpeg"),
        (["--frame", "1", "-o", "x"], "output {tmp}/x has no extension"),
        (["--frame", "1", "-o", "x.jpg", "--transparent"], "--transparent needs a .png output"),
        (["-o", "x.png"], "one of the arguments --frame --time is required"),
        (["--frame", "1", "--time", "1", "-o", "x.png"], "not allowed with argument --frame"),
        (["--frame", "-1", "-o", "x.png"], "--frame must be 0 or more"),
        (["--time", "soon", "-o", "x.png"], "--time must be seconds as a decimal or a fraction"),
    ],
)
def test_bad_arguments_are_refused_before_any_browser(args: list[str], said: str, tmp_path: Path) -> None:
    args = [str(tmp_path / a) if a.startswith("x") else a for a in args]
    r = run_renderd("still", COMP, *args, "--no-prepare", timeout=60)
    assert r.returncode == 2, r.stderr
    (line,) = r.stderr.splitlines()
    assert line.startswith("renderd: error: ") and said.format(tmp=tmp_path) in line, line
    assert list(tmp_path.iterdir()) == []


def test_frame_at_rounds_down_exactly() -> None:
    assert frame_at(Fraction("1.25"), Fps(30)) == 37
    assert frame_at(Fraction(0), Fps(30)) == 0
    assert frame_at(Fraction(1, 30), Fps(30)) == 1  # frame 1 starts at 1/30 s
    assert frame_at(Fraction("1.001"), Fps(30000, 1001)) == 30  # exact: no 29.999999
    with pytest.raises(FrameRangeError):
        frame_at(Fraction(-1, 2), Fps(30))


def test_image_format_by_extension() -> None:
    assert image_format(Path("a.PNG")) == "png"
    assert image_format(Path("a.jpg")) == image_format(Path("a.jpeg")) == "jpeg"
    assert image_format(Path("a.png"), transparent=True) == "png"
    for bad in ("a.webp", "a", "a.mp4"):
        with pytest.raises(SettingsError):
            image_format(Path(bad))
    with pytest.raises(SettingsError, match="JPEG has no alpha"):
        image_format(Path("a.jpg"), transparent=True)
