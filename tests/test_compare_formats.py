"""The RGBA comparison of scripts/parity.py (compare-peer --format webm|mov|png-sequence) on files made here.

The reference is an RGBA PNG sequence of smooth colour ramps with an alpha ramp (opaque left
third, alpha rising with x across the rest); the WebM (VP9 yuva420p) and MOV (ProRes 4444) are
encoded from it, so they carry the same alpha, and a changed copy alters the alpha of one frame.
"""

from __future__ import annotations

import math
import shutil
import subprocess
from fractions import Fraction
from pathlib import Path

import pytest
from compare_peer import judge, parse_args
from parity import compare_videos, probe, summarize_alpha

W, H, FRAMES = 96, 64, 6
FPS = Fraction(10)
# Smooth colour (so 4:2:0 chroma costs little) that changes with the frame number N.
RAMP = f"color=black:size={W}x{H}:rate={FPS},format=rgba,geq=r='2*X':g='3*Y':b='100+20*N':a='if(lt(X,32),255,4*(X-32))'"


def ffmpeg(*args: str) -> None:
    subprocess.run(
        ["ffmpeg", "-hide_banner", "-loglevel", "error", "-y", *args], check=True, capture_output=True, timeout=120
    )


@pytest.fixture(scope="module")
def media(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    d = tmp_path_factory.mktemp("formats")
    seq = d / "seq"  # renderd's naming: frame_000000.png ...
    seq.mkdir()
    ffmpeg("-f", "lavfi", "-i", RAMP, "-frames:v", str(FRAMES), "-start_number", "0", str(seq / "frame_%06d.png"))
    # HyperFrames' naming starts at frame_000001.png; frame 3 (0-based) loses the alpha of a box.
    hf = d / "hf"
    hf.mkdir()
    for i in range(FRAMES):
        shutil.copy(seq / f"frame_{i:06d}.png", hf / f"frame_{i + 1:06d}.png")
    ffmpeg("-i", str(seq / "frame_000003.png"), "-vf", "geq=r='r(X,Y)':g='g(X,Y)':b='b(X,Y)':"
           "a='if(between(X,60,80)*between(Y,10,30),0,alpha(X,Y))'", str(hf / "frame_000004.png"))  # fmt: skip
    common = ["-framerate", str(FPS), "-start_number", "0", "-i", str(seq / "frame_%06d.png")]
    bt709 = ["-colorspace", "bt709", "-color_primaries", "bt709", "-color_trc", "bt709", "-color_range", "tv"]
    webm, mov, opaque = d / "ramp.webm", d / "ramp.mov", d / "opaque.webm"
    vp9 = ["-c:v", "libvpx-vp9", "-crf", "0", "-b:v", "0", "-deadline", "good", "-cpu-used", "4", "-auto-alt-ref", "0"]
    to_yuv = "scale=out_color_matrix=bt709:out_range=tv"
    ffmpeg(*common, "-vf", f"{to_yuv},format=yuva420p", *vp9, "-pix_fmt", "yuva420p", *bt709, str(webm))
    ffmpeg(*common, "-vf", f"{to_yuv},format=yuva444p10le", "-c:v", "prores_ks", "-profile:v", "4",
           "-alpha_bits", "16", "-pix_fmt", "yuva444p10le", *bt709, str(mov))  # fmt: skip
    ffmpeg(*common, "-vf", f"{to_yuv},format=yuv420p", *vp9, "-pix_fmt", "yuv420p", *bt709, str(opaque))
    # As HyperFrames writes WebM: converted with swscale's default BT.601 matrix, no colour tags.
    untagged = d / "untagged601.webm"
    ffmpeg(*common, "-vf", "scale=out_color_matrix=bt601:out_range=tv,format=yuva420p", *vp9, str(untagged))
    return {"seq": seq, "hf": hf, "webm": webm, "mov": mov, "opaque": opaque, "untagged601": untagged}


def test_summarize_alpha_takes_the_lowest_frame_and_the_psnr_of_the_mean_mse() -> None:
    stats = summarize_alpha([math.inf, 30.0, 20.0, 20.0])
    assert (stats.compared, stats.min_psnr, stats.worst) == (4, 20.0, 2)
    assert 20.0 < stats.mean_psnr < 30.0
    assert summarize_alpha([math.inf]).mean_psnr == math.inf
    assert summarize_alpha([]).worst == -1


async def test_vp9_alpha_is_decoded_not_dropped(media: dict[str, Path], tmp_path: Path) -> None:
    # ffmpeg's native VP9 decoder gives yuv420p (alpha 255 everywhere): the ramp would score ~6 dB.
    assert (await probe(media["webm"])).pix_fmt == "yuva420p"
    result = await compare_videos(media["webm"], media["seq"], tmp_path, fps=FPS, alpha=True)
    assert result.alpha is not None and result.frames_match and result.alpha.compared == FRAMES
    assert result.alpha.min_psnr >= 40, result.alpha
    assert result.stats.min_psnr >= 40, result.stats


async def test_prores_4444_alpha_matches_the_png_frames(media: dict[str, Path], tmp_path: Path) -> None:
    result = await compare_videos(media["mov"], media["seq"], tmp_path, fps=FPS, alpha=True, images=False)
    assert result.alpha is not None and result.alpha.min_psnr >= 40 and result.stats.min_psnr >= 40


async def test_sequences_pair_by_order_and_the_changed_alpha_is_found(media: dict[str, Path], tmp_path: Path) -> None:
    result = await compare_videos(media["seq"], media["hf"], tmp_path, fps=FPS, alpha=True)
    assert result.alpha is not None and result.alpha.worst == 3
    assert [f.index for f in result.frames if f.alpha_psnr != math.inf] == [3]
    # The box was transparent black over a half-transparent ramp: the premultiplied colour differs too.
    assert [f.index for f in result.frames if f.psnr != math.inf] == [3]
    assert Path(result.images["alpha-side-by-side"]).is_file() and Path(result.images["side-by-side"]).is_file()
    problems = judge(result, 40.0)
    assert len(problems) == 2 and problems[1].startswith("min alpha PSNR") and "at frame 3" in problems[1]
    assert judge(result, 40.0, unstable=[3]) == []
    doc = result.to_json()
    assert doc["alpha_stats"]["worst"] == 3 and doc["frames"][0]["alpha_psnr"] == "inf"  # type: ignore[index]


async def test_an_opaque_render_fails_on_alpha(media: dict[str, Path], tmp_path: Path) -> None:
    result = await compare_videos(media["opaque"], media["webm"], tmp_path, alpha=True, images=False)
    assert result.alpha is not None and result.alpha.min_psnr < 15


async def test_untagged_files_are_read_with_the_matrix_given(media: dict[str, Path], tmp_path: Path) -> None:
    assert not (await probe(media["untagged601"])).tagged
    as709 = await compare_videos(media["untagged601"], media["seq"], tmp_path / "709", fps=FPS, alpha=True)
    as601 = await compare_videos(
        media["untagged601"], media["seq"], tmp_path / "601", fps=FPS, alpha=True, untagged_matrix="bt601"
    )
    assert as601.a.color_matrix == "bt601" and as601.stats.min_psnr >= 40, as601.stats
    assert as709.stats.min_psnr < as601.stats.min_psnr - 10, (as709.stats, as601.stats)
    assert as709.alpha is not None and as709.alpha.min_psnr >= 40  # the matrix does not touch alpha


def test_format_options_are_checked() -> None:
    with pytest.raises(SystemExit):
        parse_args(["comp", "--transparent"])  # mp4 has no alpha
    with pytest.raises(SystemExit):
        parse_args(["comp", "--frames", "--format", "webm"])
    with pytest.raises(SystemExit):
        parse_args(["--videos", "a", "b", "--format", "mov"])
    args = parse_args(["comp", "--format", "png-sequence", "--transparent"])
    assert (args.format, args.transparent, args.untagged_matrix) == ("png-sequence", True, "bt709")
