"""Output formats of `renderd render`: what ffprobe and the decoded pixels say, in 1 chunk and in 3.

Each format renders 12 frames of a small fixture with ``--chunks 1`` and ``--chunks 3``:

* frame-index-gsap (320x240) draws frame k as 8 squares, white where bit b of k is set, so the
  decoded frames say which frame is where (conftest.decode_index);
* hf-history (160x120) for alpha: an opaque green box on the left half, only the page background
  (cleared by ``--transparent``) on the right, and a black slider on row y = 110 that moves from
  frame 15 on (x = 2 * (k - 15)), so frame order shows there too.

Lossless and intra-only outputs (mov, png-sequence, gif, and mp4/webm at ``--crf 0``) decode to
the same frames however they were chunked; lossy H.264/H.265/VP9 chunks change where the keyframes
are and how rate control spends bits, so those are compared by PSNR (measured: over 60 dB).
"""

from __future__ import annotations

import hashlib
import re
import shutil
import subprocess
from collections.abc import Callable
from dataclasses import dataclass
from fractions import Fraction
from pathlib import Path
from typing import Any

import pytest
from conftest import FIXTURES, decode_index, json_events, run_renderd
from videotools import close, ffprobe

pytestmark = pytest.mark.browser

INDEX = FIXTURES / "frame-index-gsap"
HISTORY = FIXTURES / "hf-history"
GREY = (128, 128, 128)
GREEN = (0, 255, 0)
FPS = 30
# Lowest per-frame PSNR (dB) between the 1- and 3-chunk outputs of a lossy format. A frame shifted
# by one (one 40x40 square flipped) is ~17 dB; chunking itself measured 60 dB and up.
MIN_PSNR = 45.0
COMMON = ("--workers", "1", "--no-prepare")


@dataclass(frozen=True)
class Case:
    """One output format as rendered here, and what its output must probe as."""

    fixture: Path
    out: str  # output name; ending in "/" for a directory
    args: tuple[str, ...]
    frames: tuple[int, int]
    codec: str
    pix_fmts: tuple[str, ...] = ()  # what ffprobe may report (empty: not checked)
    profile: str | None = None
    decoded_pix_fmt: str | None = None  # what libvpx-vp9 decodes a webm to
    exact: bool = True  # 1- and 3-chunk outputs decode to identical frames
    tagged: bool = True  # bt709 limited-range colour tags on the stream

    @property
    def size(self) -> tuple[int, int]:
        return (320, 240) if self.fixture == INDEX else (160, 120)

    @property
    def alpha(self) -> bool:
        return "--transparent" in self.args

    @property
    def sequence(self) -> bool:
        return self.codec == "png"

    @property
    def count(self) -> int:
        return self.frames[1] - self.frames[0]


CASES: dict[str, Case] = {
    "mp4": Case(INDEX, "out.mp4", (), (0, 12), "h264", ("yuv420p",), exact=False),
    "mp4-h265": Case(INDEX, "out.mp4", ("--codec", "h265"), (0, 12), "hevc", ("yuv420p",), exact=False),
    "webm": Case(INDEX, "out.webm", (), (0, 12), "vp9", ("yuv420p",), decoded_pix_fmt="yuv420p", exact=False),
    # ffprobe names VP9 with alpha yuv420p and tags it alpha_mode=1; libvpx-vp9 decodes it as yuva420p.
    "webm-alpha": Case(
        HISTORY, "out.webm", ("--transparent",), (10, 22), "vp9", ("yuv420p",), decoded_pix_fmt="yuva420p", exact=False
    ),
    "mov": Case(INDEX, "out.mov", (), (0, 12), "prores", ("yuv422p10le",), profile="HQ"),
    # ProRes 4444 is encoded at 10 bits; ffmpeg's decoder (5.x) reports its output, 12 bits.
    "mov-alpha": Case(
        HISTORY, "out.mov", ("--transparent",), (10, 22), "prores", ("yuva444p10le", "yuva444p12le"), profile="4444"
    ),
    "png-sequence": Case(INDEX, "seq/", (), (17, 29), "png", ("rgb24",), tagged=False),
    "png-sequence-alpha": Case(
        HISTORY, "seq", ("--format", "png-sequence", "--transparent"), (10, 22), "png", ("rgba",), tagged=False
    ),
    "gif": Case(INDEX, "out.gif", (), (0, 12), "gif", tagged=False),
    # At --crf 0 H.264 and VP9 are lossless: chunking then changes no decoded frame at all.
    "mp4-crf0": Case(INDEX, "out.mp4", ("--crf", "0"), (0, 12), "h264", ("yuv420p",)),
    "webm-crf0": Case(INDEX, "out.webm", ("--crf", "0"), (0, 12), "vp9", ("yuv420p",), decoded_pix_fmt="yuv420p"),
}
FORMATS = [n for n in CASES if not n.endswith("-crf0")]


@dataclass(frozen=True)
class Rendered:
    path: Path  # the output file or directory
    done: dict[str, Any]  # the "done" event
    case: Case


@pytest.fixture(scope="module")
def render(tmp_path_factory: pytest.TempPathFactory) -> Callable[[str, int], Rendered]:
    """Render a case with N chunks (once per module) and return where it is."""
    made: dict[tuple[str, int], Rendered] = {}

    def get(name: str, chunks: int) -> Rendered:
        if (name, chunks) not in made:
            case = CASES[name]
            where = tmp_path_factory.mktemp(f"{name}-{chunks}")
            out = where / case.out.rstrip("/")
            given = f"{out}/" if case.out.endswith("/") else str(out)
            a, b = case.frames
            r = run_renderd(
                "render", case.fixture, "-o", given, *case.args, "--frames", f"{a}:{b}",
                "--chunks", str(chunks), *COMMON, "--json",
            )  # fmt: skip
            assert r.returncode == 0, r.stderr
            done = next(e for e in json_events(r.stdout) if e["event"] == "done")
            assert sorted(p.name for p in where.iterdir()) == [out.name], "leftovers beside the output"
            made[name, chunks] = Rendered(out, done, case)
        return made[name, chunks]

    return get


# ---- looking inside outputs ---------------------------------------------------------------------


def _ffmpeg(*args: str | Path) -> bytes:
    argv = ["ffmpeg", "-hide_banner", "-nostdin", "-loglevel", "error", *map(str, args)]
    return subprocess.run(argv, check=True, capture_output=True, timeout=120).stdout


def _decoder(r: Rendered) -> list[str]:
    """Input options that decode ``r`` with its alpha (ffmpeg's own VP9 decoder drops it)."""
    return ["-c:v", "libvpx-vp9"] if r.case.codec == "vp9" else []


def _input(r: Rendered) -> list[str]:
    """ffmpeg input options reading every frame of ``r`` (a png-sequence by its absolute names)."""
    if r.case.sequence:
        pattern = str(r.path / "frame_%06d.png")
        return ["-framerate", str(FPS), "-start_number", str(r.case.frames[0]), "-i", pattern]
    return [*_decoder(r), "-i", str(r.path)]


def decoded(r: Rendered, pix_fmt: str) -> list[bytes]:
    """Every frame of ``r`` as raw ``pix_fmt`` (rgb24 or rgba) bytes."""
    out = _ffmpeg(*_input(r), "-map", "0:v:0", "-fps_mode", "passthrough", "-f", "rawvideo", "-pix_fmt", pix_fmt, "-")
    w, h = r.case.size
    size = w * h * {"rgb24": 3, "rgba": 4}[pix_fmt]
    assert len(out) % size == 0, f"{r.path}: {len(out)} bytes is not a whole number of {w}x{h} {pix_fmt} frames"
    return [out[i : i + size] for i in range(0, len(out), size)]


def rgb24(image: Path) -> bytes:
    """The pixels of one image file as raw RGB24."""
    return _ffmpeg("-i", image, "-f", "rawvideo", "-pix_fmt", "rgb24", "-")


def frame_md5s(r: Rendered) -> list[str]:
    """The MD5 of every decoded frame, in the decoder's own pixel format."""
    text = _ffmpeg(*_input(r), "-map", "0:v:0", "-fps_mode", "passthrough", "-f", "framemd5", "-").decode()
    return [line.rsplit(",", 1)[1].strip() for line in text.splitlines() if line and not line.startswith("#")]


def psnrs(a: Rendered, b: Rendered) -> list[float]:
    """Per-frame PSNR (dB, all planes and alpha) of ``b`` against ``a``."""
    graph = "[0:v]format=rgba[a];[1:v]format=rgba[b];[a][b]psnr=stats_file=-"
    text = _ffmpeg(*_input(a), *_input(b), "-lavfi", graph, "-f", "null", "-").decode()
    return [float(m) for m in re.findall(r"psnr_avg:(\S+)", text)]


def decoded_pix_fmt(r: Rendered) -> str:
    """The pixel format ffmpeg decodes ``r`` to with the decoder _input chooses."""
    nut = _ffmpeg(*_input(r), "-map", "0:v:0", "-frames:v", "1", "-c:v", "rawvideo", "-f", "nut", "-")
    data = subprocess.run(
        ["ffprobe", "-v", "error", "-show_entries", "stream=pix_fmt", "-of", "csv=p=0", "-"],
        input=nut, check=True, capture_output=True, timeout=60,
    ).stdout  # fmt: skip
    return data.decode().strip()


def px(frame: bytes, width: int, x: int, y: int, n: int) -> tuple[int, ...]:
    i = (y * width + x) * n
    return tuple(frame[i : i + n])


def slider_x(frame: bytes, width: int) -> int | None:
    """Left edge of hf-history's black slider on row y = 110 (opaque dark pixels only)."""
    xs = [x for x in range(width) if (p := px(frame, width, x, 110, 4))[3] > 200 and max(p[:3]) < 60]
    return xs[0] if xs else None


def file_hashes(directory: Path) -> dict[str, str]:
    return {p.name: hashlib.sha256(p.read_bytes()).hexdigest() for p in sorted(directory.iterdir())}


def _stream(path: Path, *args: str) -> dict[str, Any]:
    data = ffprobe(path, "-select_streams", "v:0", *args, "-show_entries", "stream:stream_tags:format=duration")
    stream: dict[str, Any] = data["streams"][0]
    stream["format_duration"] = data.get("format", {}).get("duration")
    return stream


# ---- every format, 1 and 3 chunks ---------------------------------------------------------------


@pytest.mark.parametrize("chunks", [1, 3])
@pytest.mark.parametrize("name", FORMATS)
def test_output_probes_as_its_codec_and_pixel_format_with_every_frame(render, name: str, chunks: int) -> None:
    r = render(name, chunks)
    case = r.case
    w, h = case.size
    want = Fraction(case.count, FPS)
    assert (r.done["frames"], r.done["width"], r.done["height"]) == (case.count, w, h), r.done
    assert abs(r.done["duration_s"] - float(want)) <= 0.02, r.done
    if case.sequence:
        a, b = case.frames
        # Named by absolute frame index, however the range was chunked.
        assert sorted(p.name for p in r.path.iterdir()) == [f"frame_{i:06d}.png" for i in range(a, b)]
        for png in sorted(r.path.iterdir()):
            s = _stream(png)
            assert (s["codec_name"], s["pix_fmt"], s["width"], s["height"]) == ("png", case.pix_fmts[0], w, h), png
        return
    s = _stream(r.path, "-count_frames")
    assert s["codec_name"] == case.codec
    if case.pix_fmts:
        assert s["pix_fmt"] in case.pix_fmts
    if case.profile:
        assert s["profile"] == case.profile
    assert (s["width"], s["height"]) == (w, h)
    assert int(s["nb_read_frames"]) == case.count
    if case.codec == "gif":
        # GIF delays are whole hundredths: 12 frames of 1/30 s are 3 or 4 hundredths each.
        assert abs(float(s["format_duration"]) - float(want)) <= 0.02, s
    else:
        assert Fraction(s["r_frame_rate"]) == FPS
        if s.get("duration_ts") is not None:  # mp4, mov: exact, in the track's clock
            assert int(s["duration_ts"]) * Fraction(s["time_base"]) == want, s
        else:  # webm: milliseconds
            assert abs(Fraction(s["format_duration"]) - want) <= Fraction(1, 1000), s
    if case.tagged:
        tags = (s.get("color_space"), s.get("color_primaries"), s.get("color_transfer"), s.get("color_range"))
        assert tags == ("bt709", "bt709", "bt709", "tv"), f"{r.path}: colour tags {tags}"
    if case.codec == "vp9":
        alpha_mode = {k.lower(): v for k, v in s.get("tags", {}).items()}.get("alpha_mode")
        assert alpha_mode == ("1" if case.alpha else None)
        assert decoded_pix_fmt(r) == case.decoded_pix_fmt


@pytest.mark.parametrize("chunks", [1, 3])
@pytest.mark.parametrize("name", [n for n in FORMATS if CASES[n].fixture == INDEX])
def test_decoded_frames_are_the_rendered_frames_in_order(render, name: str, chunks: int) -> None:
    r = render(name, chunks)
    w, _ = r.case.size
    frames = decoded(r, "rgb24")
    got = [(decode_index(f, w, 120), decode_index(f, w, 180)) for f in frames]
    assert got == [(k, k) for k in range(*r.case.frames)]
    assert all(close(px(f, w, 20, 20, 3), GREY) for f in frames), "the page's grey is not grey"


@pytest.mark.parametrize("chunks", [1, 3])
@pytest.mark.parametrize("name", [n for n in FORMATS if CASES[n].alpha])
def test_transparent_output_keeps_alpha_where_the_page_was_cleared(render, name: str, chunks: int) -> None:
    """Alpha 0 over the cleared page background, 255 on the opaque box; a few levels off where lossy."""
    r = render(name, chunks)
    w, _ = r.case.size
    frames = decoded(r, "rgba")
    assert len(frames) == r.case.count
    box = [px(f, w, 40, 60, 4) for f in frames]
    page = [px(f, w, 120, 60, 4) for f in frames]
    wrong_box = [(k, p) for k, p in enumerate(box) if p[3] < 252 or not close(p[:3], GREEN)]
    wrong_page = [(k, p) for k, p in enumerate(page) if p[3] > 3]
    assert wrong_box == [], f"the green box is not opaque green (frame, rgba): {wrong_box}"
    assert wrong_page == [], f"the page background is not transparent (frame, rgba): {wrong_page}"
    got = [slider_x(f, w) for f in frames]
    want = [max(0, 2 * (k - 15)) for k in range(*r.case.frames)]
    assert all(g is not None and abs(g - x) <= 1 for g, x in zip(got, want, strict=True)), (got, want)


@pytest.mark.parametrize("name", [*FORMATS, "mp4-crf0", "webm-crf0"])
def test_1_and_3_chunks_decode_to_the_same_frames(render, name: str) -> None:
    one, three = render(name, 1), render(name, 3)
    case = one.case
    if case.exact:
        assert frame_md5s(three) == frame_md5s(one)
        assert len(frame_md5s(one)) == case.count
    else:
        per_frame = psnrs(one, three)
        assert len(per_frame) == case.count
        low = min(per_frame)
        assert low >= MIN_PSNR, f"a frame of the 3-chunk output is {low:.1f} dB from the 1-chunk one"
    if case.sequence:
        assert file_hashes(three.path) == file_hashes(one.path)
    if case.codec == "gif":
        # One palette for the whole range: the seams cannot change a colour, nor a byte.
        assert three.path.read_bytes() == one.path.read_bytes()


# ---- png-sequence -------------------------------------------------------------------------------


def test_png_sequence_pixels_match_the_fixtures_pixel_map(render) -> None:
    """Frame 17 = bits 0 and 4: squares 0 and 4 white, the rest black, on both rows; grey elsewhere."""
    r = render("png-sequence", 3)
    frame = rgb24(r.path / "frame_000017.png")
    for y in (120, 180):
        row = [px(frame, 320, 40 * b + 20, y, 3) for b in range(8)]
        assert row == [(255, 255, 255) if b in (0, 4) else (0, 0, 0) for b in range(8)], (y, row)
    assert px(frame, 320, 20, 20, 3) == GREY
    assert px(frame, 320, 300, 230, 3) == GREY


def test_rendering_into_an_earlier_sequence_replaces_it(render, tmp_path: Path) -> None:
    seq = tmp_path / "seq"
    shutil.copytree(render("png-sequence", 1).path, seq)
    r = run_renderd("render", INDEX, "-o", f"{seq}/", "--frames", "3:5", *COMMON)
    assert r.returncode == 0, r.stderr
    assert sorted(p.name for p in seq.iterdir()) == ["frame_000003.png", "frame_000004.png"]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["seq"]
    got = [decode_index(rgb24(seq / f"frame_{k:06d}.png"), 320) for k in (3, 4)]
    assert got == [3, 4]


def test_a_directory_holding_another_file_is_refused_and_kept(tmp_path: Path) -> None:
    seq = tmp_path / "seq"
    seq.mkdir()
    (seq / "notes.txt").write_text("mine\n")
    r = run_renderd("render", INDEX, "-o", f"{seq}/", "--frames", "0:2", *COMMON)
    assert r.returncode == 2, r.stderr
    errors = [line for line in r.stderr.splitlines() if line.startswith("renderd: error:")]
    assert len(errors) == 1 and "'notes.txt'" in errors[0] and str(seq) in errors[0], r.stderr
    assert r.stderr.strip().splitlines()[-1] == errors[0]
    assert sorted(p.name for p in seq.iterdir()) == ["notes.txt"]
    assert (seq / "notes.txt").read_text() == "mine\n"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["seq"], "leftovers beside the output"


# ---- refused names ------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("output", "args", "says"),
    [
        ("x.avi", (), "renderd does not make .avi files"),
        ("x.mp4", ("--format", "webm"), "ends in .mp4, but --format is webm"),
        ("x", (), "no extension"),
        ("x.mp4", ("--transparent",), "--transparent needs an output with alpha"),
        ("x.webm", ("--codec", "h265"), "--codec h265 is for mp4 outputs, not webm"),
    ],
)
def test_an_output_name_the_format_does_not_fit_is_refused(
    tmp_path: Path, output: str, args: tuple[str, ...], says: str
) -> None:
    r = run_renderd("render", INDEX, "-o", tmp_path / output, *args, "--frames", "0:2", *COMMON)
    assert r.returncode == 2, r.stderr
    lines = r.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("renderd: error: ") and says in lines[0], r.stderr
    assert list(tmp_path.iterdir()) == []


# ---- size ---------------------------------------------------------------------------------------


def test_scale_2_draws_the_composition_at_twice_its_size(render, tmp_path: Path) -> None:
    """Every pixel of the 640x480 frame is the 320x240 frame's pixel at half its coordinates."""
    r = run_renderd("render", INDEX, "-o", f"{tmp_path}/seq/", "--scale", "2", "--frames", "17:18", *COMMON)
    assert r.returncode == 0, r.stderr
    assert "--scale" not in r.stderr
    big_png = tmp_path / "seq" / "frame_000017.png"
    s = _stream(big_png)
    assert (s["width"], s["height"]) == (640, 480)
    big = rgb24(big_png)
    small = rgb24(render("png-sequence", 1).path / "frame_000017.png")
    # Square b of row A at x = 80*b .. 80*b+79, y = 200 .. 279: white for bits 0 and 4 of 17.
    assert [px(big, 640, 80 * b + 40, 240, 3) for b in range(8)] == [
        (255, 255, 255) if b in (0, 4) else (0, 0, 0) for b in range(8)
    ]
    off = [(x, y) for y in range(480) for x in range(640) if px(big, 640, x, y, 3) != px(small, 320, x // 2, y // 2, 3)]
    assert off == [], f"{len(off)} pixels differ from the doubled 320x240 frame, first {off[:5]}"


def test_a_larger_width_and_height_without_scale_warns_once(tmp_path: Path) -> None:
    out = tmp_path / "out.mp4"
    r = run_renderd("render", INDEX, "-o", out, "--width", "640", "--height", "480", "--frames", "0:1", *COMMON)
    assert r.returncode == 0, r.stderr
    mentions = [line for line in r.stderr.splitlines() if "--scale" in line]
    assert len(mentions) == 1 and "warning" in mentions[0].lower(), r.stderr
    s = _stream(out)
    assert (s["width"], s["height"]) == (640, 480)
