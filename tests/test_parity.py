"""The parity harness (scripts/parity.py, scripts/compare-peer) on videos made here with the real ffmpeg.

The videos are lossless H.264 (qp 0) of ffmpeg's testsrc2, so frames that are the same picture
decode to the same pixels and only the frames a test changes can differ. The end-to-end run of the
HyperFrames CLI needs npm and is opt-in: RENDERD_PEER=1.
"""

from __future__ import annotations

import json
import math
import os
import subprocess
import sys
from fractions import Fraction
from pathlib import Path
from typing import Any

import pytest
from parity import (
    ParityError,
    compare_videos,
    format_db,
    mse_from_psnr,
    parse_psnr_stats,
    parse_ssim_stats,
    psnr_from_mse,
    summarize,
)

from tests.conftest import EXAMPLES, FIXTURES, ROOT, decode_index, run_renderd
from tests.videotools import decode_frames, pixel, stream

W, H = 160, 120
BOX = (40, 30, 60, 40)  # x, y, w, h of the box drawn into frame 7 only
COMPARE_PEER = ROOT / "scripts" / "compare-peer"


def make_video(
    path: Path,
    *,
    frames: int = 12,
    vf: str = "",
    yuv: str = "bt709:tv",
    tag: str = "",
    pix_fmt: str = "yuv420p",
    size: str = f"{W}x{H}",
) -> Path:
    """Encode ``frames`` frames of testsrc2 at 10 fps, lossless, converted to YUV with ``yuv`` (matrix:range).

    The file is tagged with ``tag`` (matrix:range), by default the truth.
    """
    matrix, rng = yuv.split(":")
    chain = [
        f for f in (vf, f"scale=out_color_matrix={matrix}:out_range={rng}:flags=neighbor", f"format={pix_fmt}") if f
    ]
    matrix, rng = (tag or yuv).split(":")
    tags = {"bt709": ("bt709", "bt709"), "bt601": ("smpte170m", "bt470bg")}[matrix]
    subprocess.run(
        ["ffmpeg", "-hide_banner", "-loglevel", "error", "-y", "-f", "lavfi",
         "-i", f"testsrc2=size={size}:rate=10", "-frames:v", str(frames), "-vf", ",".join(chain),
         "-c:v", "libx264", "-qp", "0", "-preset", "ultrafast",
         "-colorspace", tags[1], "-color_primaries", "bt709", "-color_trc", "bt709", "-color_range", rng, str(path)],
        check=True, capture_output=True, timeout=60,
    )  # fmt: skip
    return path


@pytest.fixture(scope="module")
def videos(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    d = tmp_path_factory.mktemp("parity")
    x, y, w, h = BOX
    return {
        "base": make_video(d / "base.mp4"),
        "copy": make_video(d / "copy.mp4"),
        "box7": make_video(d / "box7.mp4", vf=f"drawbox=x={x}:y={y}:w={w}:h={h}:color=red:t=fill:enable='eq(n,7)'"),
        "short": make_video(d / "short.mp4", frames=10),
        "base444": make_video(d / "base444.mp4", pix_fmt="yuv444p"),
        "bt601pc": make_video(d / "bt601pc.mp4", yuv="bt601:pc", pix_fmt="yuv444p"),
        "mistagged": make_video(d / "mistagged.mp4", yuv="bt601:pc", tag="bt709:tv", pix_fmt="yuv444p"),
        "small": make_video(d / "small.mp4", size="80x60"),
    }


def test_stats_files_are_parsed_in_frame_order_with_inf() -> None:
    psnr = "n:2 mse_avg:4.00 psnr_avg:42.11 psnr_r:40.0\nn:1 mse_avg:0.00 psnr_avg:inf psnr_r:inf\n"
    assert parse_psnr_stats(psnr) == [math.inf, 42.11]
    ssim = "n:1 R:0.99 G:0.98 B:0.97 All:0.980000 (16.98)\n\nn:2 Y:1.0 U:1.0 V:1.0 All:1.000000 (inf)\n"
    assert parse_ssim_stats(ssim) == [0.98, 1.0]
    with pytest.raises(ValueError, match="line 1 has no n or psnr_avg"):
        parse_psnr_stats("mse_avg:1.0\n")


def test_mean_psnr_is_the_psnr_of_the_mean_mse() -> None:
    assert psnr_from_mse(0) == math.inf
    assert mse_from_psnr(math.inf) == 0
    assert mse_from_psnr(psnr_from_mse(12.5)) == pytest.approx(12.5)
    frames, stats = summarize([math.inf, 20.0, 30.0], [1.0, 0.5, 0.9])
    assert stats.worst == 1 and stats.min_psnr == 20.0 and stats.min_ssim == 0.5
    mean_mse = (0 + mse_from_psnr(20.0) + mse_from_psnr(30.0)) / 3
    assert stats.mean_psnr == pytest.approx(psnr_from_mse(mean_mse))
    assert stats.mean_ssim == pytest.approx(0.8) and [f.index for f in frames] == [0, 1, 2]
    with pytest.raises(ValueError):
        summarize([1.0], [])


async def test_identical_videos_score_inf_on_every_frame(videos: dict[str, Path], tmp_path: Path) -> None:
    result = await compare_videos(videos["base"], videos["copy"], tmp_path, images=False)
    assert result.stats.compared == 12 and result.frames_match and result.duration_match
    assert all(f.psnr == math.inf and f.ssim == pytest.approx(1.0) for f in result.frames)
    assert result.stats.mean_psnr == math.inf


async def test_the_one_changed_frame_is_found_as_the_worst(videos: dict[str, Path], tmp_path: Path) -> None:
    result = await compare_videos(videos["base"], videos["box7"], tmp_path)
    assert result.stats.worst == 7
    assert result.frames[7].psnr < 30 and result.frames[7].ssim < 0.99
    assert [f.index for f in result.frames if f.psnr != math.inf] == [7]
    assert result.stats.min_psnr == result.frames[7].psnr and math.isfinite(result.stats.mean_psnr)

    # Images of frame 7: a, b, |a-b| x8, and all three side by side.
    images = {role: Path(p) for role, p in result.images.items()}
    assert all(p.is_file() for p in images.values())
    side = stream(images["side-by-side"])
    assert (side["width"], side["height"]) == (3 * W, H)
    (diff,) = decode_frames(images["diff"], W, H)
    (b,) = decode_frames(images["b"], W, H)
    x, y, w, h = BOX
    assert pixel(b, W, x + w // 2, y + h // 2)[0] > 200  # the red box is in b's frame 7
    assert max(pixel(diff, W, x + w // 2, y + h // 2)) == 255  # a large difference, amplified to saturation
    assert pixel(diff, W, 5, 5) == (0, 0, 0) and pixel(diff, W, W - 5, H - 5) == (0, 0, 0)


async def test_a_frame_count_mismatch_is_reported_and_the_common_frames_compared(
    videos: dict[str, Path], tmp_path: Path
) -> None:
    result = await compare_videos(videos["base"], videos["short"], tmp_path, images=False)
    assert (result.a.frames, result.b.frames) == (12, 10)
    assert not result.frames_match and not result.duration_match
    assert result.stats.compared == 10 and result.stats.min_psnr == math.inf


async def test_colour_matrix_and_range_come_from_each_files_tags(videos: dict[str, Path], tmp_path: Path) -> None:
    # The same pictures stored as bt601 full range and as bt709 limited range (4:4:4, so chroma
    # subsampling does not blur the edges differently) compare as near-equal, only 8-bit rounding
    # differs, because each side is converted to RGB with its own matrix and range...
    result = await compare_videos(videos["base444"], videos["bt601pc"], tmp_path, images=False)
    assert (result.b.color_matrix, result.b.color_range, result.b.tagged) == ("bt601", "pc", True)
    assert (result.a.color_matrix, result.a.color_range) == ("bt709", "tv")
    assert result.stats.min_psnr > 45
    # ... and the tags are what decides: the same bt601/full-range data tagged bt709/limited is far off.
    wrong = await compare_videos(videos["base444"], videos["mistagged"], tmp_path, images=False)
    assert (wrong.b.color_matrix, wrong.b.color_range) == ("bt709", "tv")
    assert wrong.stats.min_psnr < 35


async def test_different_sizes_cannot_be_compared(videos: dict[str, Path], tmp_path: Path) -> None:
    with pytest.raises(ParityError, match="is 80x60 but .* is 160x120; cannot compare"):
        await compare_videos(videos["base"], videos["small"], tmp_path)


def write_pngs(directory: Path, source: str, *, frames: int = 12, start: int = 0, vf: str = "") -> Path:
    """Write ``frames`` PNGs of the lavfi ``source`` as frame_NNNNNN.png numbered from ``start``."""
    directory.mkdir(parents=True)
    subprocess.run(
        ["ffmpeg", "-hide_banner", "-loglevel", "error", "-f", "lavfi", "-i", source, "-frames:v", str(frames),
         *(["-vf", vf] if vf else []), "-start_number", str(start), str(directory / "frame_%06d.png")],
        check=True, capture_output=True, timeout=60,
    )  # fmt: skip
    return directory


async def test_png_frame_directories_are_compared_by_index(tmp_path: Path) -> None:
    x, y, w, h = BOX
    a = write_pngs(tmp_path / "a", f"testsrc2=size={W}x{H}:rate=10")  # frame_000000 ...
    b = write_pngs(  # frame_000001 ... as HyperFrames numbers them; index 7 is frame_000008.png
        tmp_path / "b", f"testsrc2=size={W}x{H}:rate=10", start=1,
        vf=f"drawbox=x={x}:y={y}:w={w}:h={h}:color=red:t=fill:enable='eq(n,7)'",
    )  # fmt: skip
    result = await compare_videos(a, b, tmp_path / "out", fps=Fraction(10))
    assert (result.a.frames, result.b.frames, result.b.duration) == (12, 12, pytest.approx(1.2))
    assert result.a.pix_fmt == "rgb24" and result.b.input_args[-2:] == ("-start_number", "1")
    assert [f.index for f in result.frames if f.psnr != math.inf] == [7] and result.stats.worst == 7
    assert Path(result.images["diff"]).is_file()
    with pytest.raises(ParityError, match="its frame rate must be given"):
        await compare_videos(a, b, tmp_path / "out")


async def test_transparent_frames_are_flattened_over_white(tmp_path: Path) -> None:
    x, y, w, h = BOX
    inside = f"between(X,{x},{x + w - 1})*between(Y,{y},{y + h - 1})"  # the box
    rgb = f"color=c=black:size={W}x{H}:rate=10,format=rgb24"
    # A red box on white, opaque; the same box on a transparent background; the box on black.
    opaque = write_pngs(tmp_path / "opaque", rgb, frames=3, vf=f"geq=r=255:g='255-255*{inside}':b='255-255*{inside}'")
    clear = write_pngs(
        tmp_path / "clear", f"color=c=black@0:size={W}x{H}:rate=10,format=rgba", frames=3,
        vf=f"geq=r='255*{inside}':g=0:b=0:a='255*{inside}'",
    )  # fmt: skip
    black = write_pngs(tmp_path / "black", rgb, frames=3, vf=f"geq=r='255*{inside}':g=0:b=0")
    result = await compare_videos(opaque, clear, tmp_path / "out", fps=Fraction(10), images=False)
    assert result.b.pix_fmt == "rgba" and result.stats.min_psnr == math.inf
    # Not flattened, or flattened over black, the transparent background would be far from white.
    assert (await compare_videos(opaque, black, tmp_path / "out2", fps=Fraction(10), images=False)).stats.min_psnr < 10


def _png(target: Path, source: str, pix_fmt: str, vf: str | None = None) -> None:
    subprocess.run(
        ["ffmpeg", "-hide_banner", "-loglevel", "error", "-y", "-f", "lavfi", "-i", source, "-frames:v", "1",
         *(["-vf", vf] if vf else []), "-pix_fmt", pix_fmt, str(target)],
        check=True, capture_output=True, timeout=60,
    )  # fmt: skip


async def test_a_sequence_whose_pixel_format_changes_midway_is_paired_frame_by_frame(tmp_path: Path) -> None:
    """HyperFrames writes RGBA only for frames with transparency; the pairing must not slip there."""
    a = write_pngs(tmp_path / "a", f"testsrc2=size={W}x{H}:rate=10", frames=6)
    b = tmp_path / "b"
    b.mkdir()
    for n in range(5):  # the same pictures, frames 2 and 3 stored as (opaque) RGBA
        src = f"movie={a / f'frame_{n:06d}.png'}"
        _png(b / f"frame_{n:06d}.png", src, "rgba" if n in (2, 3) else "rgb24")
    # Frame 5: red at alpha 128 over white is (255, 127, 127).
    _png(a / "frame_000005.png", f"color=c=0xff7f7f:size={W}x{H}", "rgb24")
    _png(b / "frame_000005.png", f"color=c=red@0.502:size={W}x{H},format=rgba", "rgba")
    result = await compare_videos(a, b, tmp_path / "out", fps=Fraction(10), images=False)
    assert (result.a.frames, result.b.frames) == (6, 6)
    assert [f.psnr for f in result.frames[:5]] == [math.inf] * 5
    assert result.frames[5].psnr > 45


async def test_a_gap_in_a_frame_directory_is_named(tmp_path: Path) -> None:
    a = write_pngs(tmp_path / "a", f"testsrc2=size={W}x{H}:rate=10", frames=5)
    (a / "frame_000002.png").unlink()
    with pytest.raises(ParityError, match=r"frames \[2\] are missing from the sequence"):
        await compare_videos(a, a, tmp_path / "out", fps=Fraction(10))


def run_compare_peer(*args: str | Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, str(ROOT / "scripts" / "compare_peer.py"), *map(str, args)],
        capture_output=True, text=True, timeout=600, cwd=ROOT,
    )  # fmt: skip


def test_cli_exit_status_follows_the_verdict(videos: dict[str, Path], tmp_path: Path) -> None:
    same = run_compare_peer("--videos", videos["base"], videos["copy"], "--out", tmp_path / "same", "--json")
    assert same.returncode == 0, same.stderr
    doc = json.loads(same.stdout)
    assert doc["ok"] and doc["results"][0]["comparison"]["stats"]["min_psnr"] == "inf"

    box = run_compare_peer("--videos", videos["base"], videos["box7"], "--out", tmp_path / "box")
    assert box.returncode == 1
    assert "min PSNR" in box.stdout and "< 40 at frame 7" in box.stdout and "FAIL" in box.stdout
    assert (tmp_path / "box" / "videos" / "worst-side-by-side.png").is_file()
    # A threshold below the changed frame's PSNR lets it pass.
    low = run_compare_peer("--videos", videos["base"], videos["box7"], "--out", tmp_path / "low", "--min-psnr", "5")
    assert low.returncode == 0, low.stdout

    short = run_compare_peer("--videos", videos["base"], videos["short"], "--out", tmp_path / "short", "--json")
    assert short.returncode == 1
    assert "frame counts differ (12 vs 10)" in json.loads(short.stdout)["results"][0]["problems"]


def test_cli_bad_input_is_one_line_and_exit_2(tmp_path: Path) -> None:
    r = run_compare_peer("--videos", tmp_path / "nope.mp4", tmp_path / "nope2.mp4")
    assert r.returncode == 2 and r.stderr.strip() == f"compare-peer: {tmp_path / 'nope.mp4'} does not exist"
    r = run_compare_peer(tmp_path)
    assert (
        r.returncode == 2
        and r.stderr.strip() == f"compare-peer: {tmp_path} is not a composition directory (no index.html)"
    )


@pytest.mark.slow
@pytest.mark.browser
@pytest.mark.skipif(os.environ.get("RENDERD_PEER") != "1", reason="needs npm and the HyperFrames CLI: RENDERD_PEER=1")
def test_end_to_end_against_the_hyperframes_cli(tmp_path: Path) -> None:
    r = subprocess.run(
        [str(COMPARE_PEER), str(EXAMPLES / "hyperframes-gsap"), "--out", str(tmp_path), "--json"],
        capture_output=True, text=True, timeout=3600, cwd=ROOT,
    )  # fmt: skip
    doc = json.loads(r.stdout)
    (result,) = doc["results"]
    assert result["error"] is None, result["error"]
    c = result["comparison"]
    assert (c["a"]["frames"], c["b"]["frames"]) == (120, 120) and c["duration_match"]
    assert doc["versions"]["hyperframes"].startswith("hyperframes ")
    assert Path(c["images"]["side-by-side"]).is_file()
    # Same composition, same layout: structurally alike even where fonts differ (see docs/parity.md).
    assert c["stats"]["mean_ssim"] > 0.8
    assert r.returncode == (0 if result["passed"] else 1)


def compare_peer_module() -> Any:
    """Import scripts/compare_peer.py (a script, not part of the package)."""
    sys.path.insert(0, str(ROOT / "scripts"))
    try:
        import compare_peer
    finally:
        sys.path.remove(str(ROOT / "scripts"))
    return compare_peer


@pytest.mark.browser
async def test_renderd_kept_frames_are_gathered_in_absolute_order(tmp_path: Path) -> None:
    work = tmp_path / "work"
    work.mkdir()
    r = run_renderd(
        "render", FIXTURES / "frame-index-hook", "-o", tmp_path / "out.mp4", "--frames", "0:24", "--chunks", "2",
        "--frame-format", "png", "--crf", "0", "--keep-frames", "--work-dir", work,
    )  # fmt: skip
    assert r.returncode == 0, r.stderr
    frames = compare_peer_module().gather_renderd_frames(work, tmp_path / "frames")
    assert sorted(p.name for p in frames.iterdir()) == [f"frame_{i:06d}.png" for i in range(24)]
    for i in (0, 11, 12, 23):  # both sides of the chunk boundary
        (png,) = decode_frames(frames / f"frame_{i:06d}.png", 320, 240)
        assert decode_index(png, 320) == i
    # The frames against renderd's own lossless-YUV encode of them: same count, near-equal pixels.
    result = await compare_videos(frames, tmp_path / "out.mp4", tmp_path / "cmp", fps=Fraction(30), images=False)
    assert result.frames_match and result.duration_match and result.stats.min_psnr > 40


def test_a_failed_render_is_summed_up_by_the_lines_that_say_why() -> None:
    failure_reason = compare_peer_module().failure_reason
    # The shape of the HyperFrames CLI's output on a failed render (0.8.170), then our wrapper's line.
    hf = (
        b"[BrowserManager] Browser launched\n\n\xe2\x9c\x97  Render failed\n"
        b"   [FrameCapture] Composition has zero duration.\n     Runtime ready: true\n     -> Fix: add data-duration\n"
        b"   Try --docker for containerized rendering\n\npeer-hyperframes: hyperframes render failed (exit 1)\n"
    )
    assert failure_reason(hf) == "[FrameCapture] Composition has zero duration. Runtime ready: true"
    assert failure_reason(b"renderd: 10/20 frames\nrenderd: x/index.html: width 641 is odd\n") == (
        "renderd: x/index.html: width 641 is odd"
    )
    assert failure_reason(b"") == "no output"
    assert failure_reason(b"e" * 500).endswith("...") and len(failure_reason(b"e" * 500)) == 300


def test_peer_samples_extracts_a_sample_and_points_cdn_gsap_at_a_local_copy(tmp_path: Path) -> None:
    # A stand-in for the HyperFrames repository: one sample loading GSAP from jsDelivr in its
    # index.html and in a sub-composition, plus a Google Fonts link.
    repo = tmp_path / "repo"
    sample = repo / "registry" / "examples" / "demo"
    (sample / "compositions").mkdir(parents=True)
    cdn = '<script src="https://cdn.jsdelivr.net/npm/gsap@3.14.2/dist/gsap.min.js"></script>'
    font = '<link href="https://fonts.googleapis.com/css2?family=Inter" rel="stylesheet" />'
    (sample / "index.html").write_text(f"<html><head>{font}{cdn}</head><body></body></html>\n")
    (sample / "compositions" / "scene.html").write_text(f"<template>{cdn}</template>\n")
    # A producer regression test: the project sits in <test>/src and loads GSAP from cdnjs.
    test = repo / "packages" / "producer" / "tests" / "boundary" / "src"
    test.mkdir(parents=True)
    cdnjs = '<script src="https://cdnjs.cloudflare.com/ajax/libs/gsap/3.12.2/gsap.min.js"></script>'
    (test / "index.html").write_text(f"<html><head>{cdnjs}</head><body></body></html>\n")
    git = ["git", "-C", str(repo), "-c", "user.name=t", "-c", "user.email=t@t"]
    subprocess.run(["git", "init", "-q", str(repo)], check=True, timeout=30)
    subprocess.run([*git, "add", "-A"], check=True, timeout=30)
    subprocess.run([*git, "commit", "-q", "-m", "sample"], check=True, timeout=30)
    sha = subprocess.run([*git, "rev-parse", "HEAD"], check=True, capture_output=True, text=True).stdout.strip()
    gsap = EXAMPLES / "vendor" / "gsap" / "gsap.min.js"

    out = tmp_path / "out"
    cmd = [str(ROOT / "scripts" / "peer-samples"), "--repo", str(repo), "--commit", sha, "--gsap", str(gsap), str(out)]
    r = subprocess.run([*cmd, "registry/examples/demo"], capture_output=True, text=True, timeout=60)
    assert r.returncode == 0, r.stderr
    assert (out / "demo" / "gsap.min.js").read_bytes() == gsap.read_bytes()
    index = (out / "demo" / "index.html").read_text()
    assert '<script src="gsap.min.js"></script>' in index and font in index  # fonts left as they are
    assert '<script src="../gsap.min.js"></script>' in (out / "demo" / "compositions" / "scene.html").read_text()
    assert "still remote: " in r.stderr and "fonts.googleapis.com" in r.stderr
    assert (out / "HYPERFRAMES_COMMIT").read_text().strip() == sha

    r = subprocess.run([*cmd, "packages/producer/tests/boundary/src"], capture_output=True, text=True, timeout=60)
    assert r.returncode == 0, r.stderr
    assert '<script src="gsap.min.js"></script>' in (out / "boundary" / "index.html").read_text()
    assert (out / "boundary" / "gsap.min.js").read_bytes() == gsap.read_bytes()
    assert "still remote" not in r.stderr

    missing = subprocess.run([*cmd, "registry/examples/nope"], capture_output=True, text=True, timeout=60)
    assert missing.returncode == 1
    assert missing.stderr == f"peer-samples: registry/examples/nope is not in {repo} at {sha}\n"


async def test_frames_where_the_reference_disagrees_with_itself_are_not_judged(
    videos: dict[str, Path], tmp_path: Path
) -> None:
    """--peer-runs: HyperFrames rendered twice differs on frame 7 (in this stand-in), so frame 7 is not judged."""
    cp = compare_peer_module()
    result = cp.Result(name="x", source="x")
    await cp.peer_self_check(result, videos["base"], videos["box7"], tmp_path / "self", 40.0, None)
    assert result.unstable == [7] and result.peer_self_min is not None and result.peer_self_min < 30
    comparison = await compare_videos(videos["box7"], videos["base"], tmp_path / "cmp", images=False)
    assert cp.judge(comparison, 40.0) == [f"min PSNR {format_db(comparison.frames[7].psnr)} dB < 40 at frame 7"]
    assert cp.judge(comparison, 40.0, result.unstable) == []
    assert cp.frame_spans([3, 4, 5, 9, 11, 12]) == "3-5, 9, 11-12"
