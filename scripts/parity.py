"""Frame-by-frame comparison of two videos: per-frame PSNR and SSIM, counts, worst-frame images.

Used by ``scripts/compare-peer`` to hold renderd's output against the HyperFrames CLI's, but it
knows nothing about either tool: it compares any two videos of the same size.

How the comparison is made consistent: each video is decoded and converted to planar RGB
(``gbrp``) by ffmpeg's ``scale`` with the input colour matrix and range named explicitly from
that file's own tags, so a file stored as bt601 full range and one stored as bt709 limited range
with the same picture compare as (nearly) equal, and a real difference in how the two tools
convert RGB to YUV shows as what it does to the picture. Untagged files are decoded as bt709
limited range, what renderd and HyperFrames both write, rather than swscale's bt601 fallback,
and the result records whether the tags were there. Reading one file with the other's matrix
costs ~20 dB (tests/test_parity.py measures it). Chroma is upsampled the same way
(``accurate_rnd+full_chroma_int``) on both sides. Frames are paired by index, not timestamp
(``settb=1/1000,setpts=N`` on both), so a different time base or start offset cannot shift the pairing; the
frame counts and durations are checked separately with ffprobe.

PSNR is ffmpeg's ``psnr`` filter over R, G and B (peak 255); the per-frame value comes from its
stats file (``psnr_avg``, ``inf`` for identical frames) and the mean is the PSNR of the mean MSE
over all frames (as ffmpeg's own "average" line), so one identical frame does not make it
infinite. SSIM is ffmpeg's ``ssim`` filter's ``All`` value per frame (1.0 = identical).

Either side may also be a directory of numbered PNG frames (``frame_000000.png`` ... or starting
at 1), compared losslessly; PNGs with an alpha channel are flattened over white, the canvas
Chrome paints behind a page without a background.

With ``alpha=True`` the transparency is compared instead of flattened: each side is decoded to
RGBA (VP9 through the ``libvpx-vp9`` decoder, the only one that reads a WebM's alpha; ProRes 4444
and PNG alpha by ffmpeg's own decoders; an opaque side gets alpha 255) into a lossless FFV1 copy,
then two PSNRs are taken per frame: of the colour premultiplied by alpha (R, G, B; what the frame
shows composited over black, so the undefined colour under fully transparent pixels does not
count and half-transparent edges count by their coverage) and of the alpha plane alone. SSIM
is of the premultiplied colour. The worst colour frame and the worst alpha frame each get images.
"""

from __future__ import annotations

import asyncio
import json
import math
import re
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field, replace
from fractions import Fraction
from pathlib import Path

from renderd import procs
from renderd.encode import probe_video
from renderd.errors import ProcessFailed, RenderdError

PEAK = 255.0
FFMPEG_TIMEOUT_S = 1800.0
PROBE_TIMEOUT_S = 60.0
DIFF_GAIN = 8  # the absolute difference is multiplied by this in the diff image, so 1-level errors show

# ffprobe colour tags -> names ffmpeg's scale filter accepts for in_color_matrix / in_range.
_MATRIX = {
    "bt709": "bt709",
    "bt470bg": "bt601",
    "smpte170m": "bt601",
    "bt601": "bt601",
    "fcc": "fcc",
    "smpte240m": "smpte240m",
    "bt2020nc": "bt2020",
    "bt2020c": "bt2020",
}
_RANGE = {"tv": "tv", "mpeg": "tv", "limited": "tv", "pc": "pc", "jpeg": "pc", "full": "pc"}
_FRAME_FILE = re.compile(r"frame_(\d{6})\.png")
_RGB_FORMATS = re.compile(r"^(rgb|bgr|gbr|argb|abgr|rgba|bgra|gray|pal8|ya8|monob|monow)")


class ParityError(RenderdError):
    """Two videos that cannot be compared (different sizes, unreadable, no frames)."""


@dataclass(frozen=True, slots=True)
class VideoSummary:
    """What ffprobe says about one side of a comparison."""

    path: str
    frames: int
    duration: float
    width: int
    height: int
    fps: str
    pix_fmt: str
    color_matrix: str  # the matrix the comparison decoded with (from the tags, or the default)
    color_range: str
    tagged: bool  # False when the file carried no matrix/range tags and defaults were assumed
    input_args: tuple[str, ...] = ()  # ffmpeg options before ``-i path`` (frame rate of a PNG sequence)
    codec: str = ""  # ffprobe's codec_name ("png" for a frame directory)


@dataclass(frozen=True, slots=True)
class FrameScore:
    """Scores of one frame pair; ``index`` counts from 0."""

    index: int
    psnr: float  # dB, math.inf for identical frames (premultiplied colour when alpha is compared)
    ssim: float
    alpha_psnr: float | None = None  # dB of the alpha plane, when alpha is compared


@dataclass(frozen=True, slots=True)
class Stats:
    """Summary of the per-frame scores."""

    compared: int
    min_psnr: float
    mean_psnr: float
    min_ssim: float
    mean_ssim: float
    worst: int  # index of the frame with the lowest PSNR (lowest SSIM on ties), -1 if none


@dataclass(frozen=True, slots=True)
class AlphaStats:
    """Summary of the per-frame alpha-plane PSNRs."""

    compared: int
    min_psnr: float
    mean_psnr: float  # PSNR of the mean MSE, as for colour
    worst: int  # index of the frame with the lowest alpha PSNR, -1 if none


@dataclass(slots=True)
class Comparison:
    """The result of :func:`compare_videos`: both sides, per-frame scores, summary, images."""

    a: VideoSummary
    b: VideoSummary
    frames: list[FrameScore]
    stats: Stats
    images: dict[str, str] = field(default_factory=dict)  # role -> path of the worst-frame PNGs
    alpha: AlphaStats | None = None  # when alpha was compared (FrameScore.alpha_psnr is then set)

    @property
    def frames_match(self) -> bool:
        """True when both videos have the same number of frames."""
        return self.a.frames == self.b.frames

    @property
    def duration_match(self) -> bool:
        """True when the durations agree within half a frame of the first video."""
        fps = float(Fraction(self.a.fps)) if self.a.fps not in ("", "0/0") else 0.0
        tolerance = 0.5 / fps if fps > 0 else 0.001
        return abs(self.a.duration - self.b.duration) <= tolerance + 1e-9

    def to_json(self) -> dict[str, object]:
        """Return a JSON-ready dict (``inf`` PSNR written as the string "inf")."""
        doc: dict[str, object] = {
            "a": asdict(self.a),
            "b": asdict(self.b),
            "frames_match": self.frames_match,
            "duration_match": self.duration_match,
            "stats": {k: _json_number(v) for k, v in asdict(self.stats).items()},
            "images": dict(self.images),
            "frames": [
                {"index": f.index, "psnr": _json_number(f.psnr), "ssim": f.ssim}
                | ({} if f.alpha_psnr is None else {"alpha_psnr": _json_number(f.alpha_psnr)})
                for f in self.frames
            ],
        }
        if self.alpha is not None:
            doc["alpha_stats"] = {k: _json_number(v) for k, v in asdict(self.alpha).items()}
        return doc


def psnr_from_mse(mse: float, peak: float = PEAK) -> float:
    """Return the PSNR in dB of a mean squared error, ``inf`` for 0."""
    return math.inf if mse <= 0 else 10.0 * math.log10(peak * peak / mse)


def mse_from_psnr(psnr: float, peak: float = PEAK) -> float:
    """Return the mean squared error that gives ``psnr`` dB (0 for ``inf``)."""
    return 0.0 if math.isinf(psnr) else peak * peak / 10.0 ** (psnr / 10.0)


def parse_psnr_stats(text: str) -> list[float]:
    """Return the per-frame ``psnr_avg`` values (dB, ``inf`` allowed) of an ffmpeg psnr stats file.

    Lines look like ``n:1 mse_avg:1.05 ... psnr_avg:47.93 psnr_r:...``; ``n`` counts from 1 and
    the result is ordered by it. Raises ValueError on a line without ``n`` or ``psnr_avg``.
    """
    return _parse_stats(text, "psnr_avg")


def parse_ssim_stats(text: str) -> list[float]:
    """Return the per-frame ``All`` values of an ffmpeg ssim stats file.

    Lines look like ``n:1 Y:0.997 U:0.996 V:0.997 All:0.997098 (25.37)`` (``R``/``G``/``B`` for
    RGB input); ordered by ``n``. Raises ValueError on a line without ``n`` or ``All``.
    """
    return _parse_stats(text, "All")


def summarize(psnr: Sequence[float], ssim: Sequence[float]) -> tuple[list[FrameScore], Stats]:
    """Pair per-frame PSNR and SSIM (by index) and summarise them; the worst frame is lowest PSNR."""
    if len(psnr) != len(ssim):
        raise ValueError(f"{len(psnr)} PSNR values but {len(ssim)} SSIM values")
    frames = [FrameScore(i, p, s) for i, (p, s) in enumerate(zip(psnr, ssim, strict=True))]
    if not frames:
        return frames, Stats(0, math.nan, math.nan, math.nan, math.nan, -1)
    worst = min(frames, key=lambda f: (f.psnr, f.ssim, f.index))
    mean_mse = sum(mse_from_psnr(f.psnr) for f in frames) / len(frames)
    return frames, Stats(
        compared=len(frames),
        min_psnr=worst.psnr,
        mean_psnr=psnr_from_mse(mean_mse),
        min_ssim=min(f.ssim for f in frames),
        mean_ssim=sum(f.ssim for f in frames) / len(frames),
        worst=worst.index,
    )


def summarize_alpha(psnr: Sequence[float]) -> AlphaStats:
    """Summarise per-frame alpha PSNRs: lowest (first on ties) and the PSNR of the mean MSE."""
    if not psnr:
        return AlphaStats(0, math.nan, math.nan, -1)
    worst = min(range(len(psnr)), key=lambda i: (psnr[i], i))
    mean_mse = sum(mse_from_psnr(p) for p in psnr) / len(psnr)
    return AlphaStats(len(psnr), psnr[worst], psnr_from_mse(mean_mse), worst)


async def probe(path: Path, untagged_matrix: str = "bt709") -> VideoSummary:
    """Return frames, duration, size, rate and the colour decode settings of ``path``.

    A YUV file without a matrix tag is read with ``untagged_matrix`` (bt709 by default: what
    renderd and HyperFrames' MP4s are; HyperFrames' WebM is untagged BT.601, docs/parity.md).

    A VP9 stream is decoded with ``libvpx-vp9`` (in ``input_args``): ffmpeg's native VP9 decoder
    drops a WebM's alpha. A VP9 stream tagged ``alpha_mode=1`` is reported as ``yuva420p`` (ffprobe
    says yuv420p, the colour planes' format).
    """
    try:
        info = await probe_video(Path(path))
        done = await procs.run(
            ["ffprobe", "-hide_banner", "-loglevel", "error", "-select_streams", "v:0",
             "-show_entries", "stream=color_space,color_range:stream_tags", "-of", "json",
             str(Path(path).absolute())],
            timeout=PROBE_TIMEOUT_S,
        )  # fmt: skip
    except RenderdError as exc:
        raise ParityError(str(exc)) from exc
    streams = json.loads(done.stdout).get("streams") or [{}]
    space, rng = str(streams[0].get("color_space", "")), str(streams[0].get("color_range", ""))
    tags = {str(k).lower(): str(v) for k, v in (streams[0].get("tags") or {}).items()}
    matrix, colour_range = _MATRIX.get(space), _RANGE.get(rng)
    vp9 = info.codec == "vp9"
    pix_fmt = "yuva420p" if vp9 and tags.get("alpha_mode") == "1" and info.pix_fmt == "yuv420p" else info.pix_fmt
    return VideoSummary(
        path=str(path),
        frames=info.frames,
        duration=float(info.duration),
        width=info.width,
        height=info.height,
        fps=f"{info.fps.numerator}/{info.fps.denominator}",
        pix_fmt=pix_fmt,
        # Untagged YUV: assume what both renderd and HyperFrames write (bt709, limited range).
        color_matrix=matrix or untagged_matrix,
        color_range=colour_range or ("pc" if _RGB_FORMATS.match(info.pix_fmt) else "tv"),
        tagged=matrix is not None and colour_range is not None,
        input_args=("-c:v", "libvpx-vp9") if vp9 else (),
        codec=info.codec,
    )


async def probe_sequence(directory: Path, fps: Fraction) -> VideoSummary:
    """Describe a directory of ``frame_NNNNNN.png`` files numbered without gaps, shown at ``fps``."""
    numbers = sorted(int(m[1]) for p in Path(directory).iterdir() if (m := _FRAME_FILE.fullmatch(p.name)))
    if not numbers:
        raise ParityError(f"{directory} has no frame_NNNNNN.png files")
    if numbers[-1] - numbers[0] + 1 != len(numbers):
        missing = sorted(set(range(numbers[0], numbers[-1] + 1)) - set(numbers))
        raise ParityError(f"{directory}: frames {missing[:5]} are missing from the sequence")
    first = Path(directory) / f"frame_{numbers[0]:06d}.png"
    try:
        done = await procs.run(
            ["ffprobe", "-hide_banner", "-loglevel", "error", "-show_entries", "stream=width,height,pix_fmt",
             "-of", "json", str(first.absolute())],
            timeout=PROBE_TIMEOUT_S,
        )  # fmt: skip
    except RenderdError as exc:
        raise ParityError(f"{first} is not a readable image: {exc}") from exc
    info = (json.loads(done.stdout).get("streams") or [{}])[0]
    return VideoSummary(
        path=str(Path(directory).absolute() / "frame_%06d.png"),
        frames=len(numbers),
        duration=float(len(numbers) / fps),
        width=int(info.get("width") or 0),
        height=int(info.get("height") or 0),
        fps=f"{fps.numerator}/{fps.denominator}",
        pix_fmt=str(info.get("pix_fmt", "")),
        color_matrix="bt709",  # unused for RGB
        color_range="pc",
        tagged=True,
        input_args=("-framerate", f"{fps.numerator}/{fps.denominator}", "-start_number", str(numbers[0])),
        codec="png",
    )


async def probe_input(path: Path, fps: Fraction | None = None, untagged_matrix: str = "bt709") -> VideoSummary:
    """Describe a video file, or a PNG frame directory (which needs ``fps``)."""
    if Path(path).is_dir():
        if fps is None:
            raise ParityError(f"{path} is a directory of frames; its frame rate must be given")
        return await probe_sequence(Path(path), fps)
    return await probe(Path(path), untagged_matrix)


def to_rgb_filter(video: VideoSummary) -> str:
    """Return the filter chain that turns ``video``'s decoded frames into index-stamped gbrp."""
    return (
        f"settb=1/1000,setpts=N,scale=in_color_matrix={video.color_matrix}:in_range={video.color_range}"
        ":flags=bicubic+accurate_rnd+full_chroma_int,format=gbrp"
    )


async def flatten(video: VideoSummary, target: Path, timeout: float = FFMPEG_TIMEOUT_S) -> VideoSummary:
    """Write ``video`` as opaque lossless RGB (FFV1 gbrp in ``target``), alpha composited over white.

    PNG sequences need this pass: the decoder gives each file its own pixel format (HyperFrames
    writes RGBA only for frames that have transparency), and by default ffmpeg rebuilds the
    filter graph on every change, which restarts ``setpts=N`` on one side only and pairs the
    wrong frames. The comparison then reads one uniform stream.
    """
    graph = (
        f"color=c=white:s={video.width}x{video.height}:r={video.fps}[bg];"
        f"[0:v]scale=in_color_matrix={video.color_matrix}:in_range={video.color_range},format=rgba[fg];"
        "[bg][fg]overlay=shortest=1:format=rgb,format=gbrp"
    )
    # -reinit_filter 0 keeps one graph for the whole input, its scale filter converting each frame
    # from whatever format it arrives in (a rebuilt graph emits a stray extra frame).
    argv = ["-reinit_filter", "0", *video.input_args, "-i", video.path, "-filter_complex", graph]
    argv += ["-frames:v", str(video.frames), "-c:v", "ffv1", str(target)]
    await _ffmpeg(argv, timeout, f"flattening {video.path}")
    flat = await probe(target)
    if flat.frames != video.frames:
        raise ParityError(f"flattening {video.path} gave {flat.frames} frames, not {video.frames}")
    return replace(flat, duration=video.duration, fps=video.fps)


async def to_rgba(video: VideoSummary, target: Path, timeout: float = FFMPEG_TIMEOUT_S) -> VideoSummary:
    """Write ``video`` as lossless RGBA (FFV1 bgra in ``target``), alpha kept (255 where it has none).

    Like :func:`flatten`, one filter graph for the whole input (``-reinit_filter 0``) so PNG files
    of mixed pixel formats stay one stream; VP9 is read by ``libvpx-vp9`` (``video.input_args``).
    """
    convert = (
        f"scale=in_color_matrix={video.color_matrix}:in_range={video.color_range}"
        ":flags=bicubic+accurate_rnd+full_chroma_int,format=bgra"
    )
    argv = ["-reinit_filter", "0", *video.input_args, "-i", video.path, "-vf", convert]
    argv += ["-frames:v", str(video.frames), "-c:v", "ffv1", "-pix_fmt", "bgra", str(target)]
    await _ffmpeg(argv, timeout, f"decoding {video.path} to RGBA")
    rgba = await probe(target)
    if rgba.frames != video.frames:
        raise ParityError(f"decoding {video.path} to RGBA gave {rgba.frames} frames, not {video.frames}")
    return replace(rgba, duration=video.duration, fps=video.fps)


def premultiplied_filter(video: VideoSummary) -> str:
    """Return the filter chain that turns RGBA frames into index-stamped gbrp premultiplied by alpha."""
    return f"{to_rgb_filter(video).removesuffix(',format=gbrp')},format=gbrap,premultiply=inplace=1,format=gbrp"


def alpha_filter(video: VideoSummary) -> str:
    """Return the filter chain that turns RGBA frames into their index-stamped alpha plane (gray)."""
    return "settb=1/1000,setpts=N,format=gbrap,alphaextract"


async def compare_videos(
    a: Path,
    b: Path,
    out_dir: Path,
    *,
    images: bool = True,
    fps: Fraction | None = None,
    alpha: bool = False,
    untagged_matrix: str = "bt709",
    timeout: float = FFMPEG_TIMEOUT_S,
) -> Comparison:
    """Compare ``a`` and ``b`` frame by frame; write stats files (and worst-frame images) to ``out_dir``.

    ``a`` and ``b`` are video files or PNG frame directories (then ``fps`` gives their rate).
    Only the frames both have are scored (the common prefix); a count mismatch shows in
    ``Comparison.frames_match``. Raises ParityError when the sizes differ or nothing decodes.
    With ``alpha``, colour is compared premultiplied and alpha on its own (module docstring).
    YUV files without a matrix tag are read with ``untagged_matrix``.
    """
    out_dir.mkdir(parents=True, exist_ok=True)
    sa, sb = await asyncio.gather(probe_input(a, fps, untagged_matrix), probe_input(b, fps, untagged_matrix))
    if (sa.width, sa.height) != (sb.width, sb.height):
        raise ParityError(f"{b} is {sb.width}x{sb.height} but {a} is {sa.width}x{sa.height}; cannot compare")
    if alpha:
        return await _compare_rgba(sa, sb, out_dir, images=images, timeout=timeout)
    psnr_log, ssim_log = out_dir / "psnr.log", out_dir / "ssim.log"
    for log in (psnr_log, ssim_log):
        log.unlink(missing_ok=True)
    # Frame directories and inputs with alpha are compared through an opaque lossless copy.
    fa, fb = [
        await flatten(v, out_dir / f"{side}-flat.mkv", timeout) if v.input_args or _has_alpha(v.pix_fmt) else v
        for side, v in (("a", sa), ("b", sb))
    ]
    graph = (
        f"[0:v]{to_rgb_filter(fa)}[a];[1:v]{to_rgb_filter(fb)},split[b1][b2];"
        f"[a][b1]psnr=stats_file={_filter_path(psnr_log)}:shortest=1[ap];"
        f"[ap][b2]ssim=stats_file={_filter_path(ssim_log)}:shortest=1"
    )
    inputs = [*fa.input_args, "-i", fa.path, *fb.input_args, "-i", fb.path]
    await _ffmpeg([*inputs, "-filter_complex", graph, "-f", "null", "-"], timeout, f"comparing {a} with {b}")
    try:
        psnr = parse_psnr_stats(psnr_log.read_text()) if psnr_log.exists() else []
        ssim = parse_ssim_stats(ssim_log.read_text()) if ssim_log.exists() else []
        frames, stats = summarize(psnr, ssim)
    except ValueError as exc:
        raise ParityError(f"unreadable ffmpeg stats in {out_dir}: {exc}") from exc
    if not frames:
        raise ParityError(f"no frames could be compared between {a} and {b}")
    result = Comparison(sa, sb, frames, stats)
    if images:
        result.images = await write_frame_images(fa, fb, stats.worst, out_dir, prefix="worst", timeout=timeout)
    return result


async def _compare_rgba(
    sa: VideoSummary, sb: VideoSummary, out_dir: Path, *, images: bool, timeout: float
) -> Comparison:
    """Score premultiplied colour (PSNR, SSIM) and alpha (PSNR) of two probed inputs of one size."""
    logs = {name: out_dir / f"{name}.log" for name in ("psnr", "ssim", "alpha-psnr")}
    for log in logs.values():
        log.unlink(missing_ok=True)
    ra, rb = await asyncio.gather(
        to_rgba(sa, out_dir / "a-rgba.mkv", timeout), to_rgba(sb, out_dir / "b-rgba.mkv", timeout)
    )
    graph = (
        f"[0:v]split[a0][a1];[a0]{premultiplied_filter(ra)}[ac];[a1]{alpha_filter(ra)}[aa];"
        f"[1:v]split[b0][b1];[b0]{premultiplied_filter(rb)},split[bc1][bc2];[b1]{alpha_filter(rb)}[ba];"
        f"[ac][bc1]psnr=stats_file={_filter_path(logs['psnr'])}:shortest=1[acp];"
        f"[acp][bc2]ssim=stats_file={_filter_path(logs['ssim'])}:shortest=1[colour];"
        f"[aa][ba]psnr=stats_file={_filter_path(logs['alpha-psnr'])}:shortest=1[alpha]"
    )
    argv = ["-i", ra.path, "-i", rb.path, "-filter_complex", graph]
    argv += ["-map", "[colour]", "-f", "null", "-", "-map", "[alpha]", "-f", "null", "-"]
    await _ffmpeg(argv, timeout, f"comparing {sa.path} with {sb.path} (RGBA)")
    try:
        psnr, ssim, alpha = (
            parse_psnr_stats(logs["psnr"].read_text()) if logs["psnr"].exists() else [],
            parse_ssim_stats(logs["ssim"].read_text()) if logs["ssim"].exists() else [],
            parse_psnr_stats(logs["alpha-psnr"].read_text()) if logs["alpha-psnr"].exists() else [],
        )
        frames, stats = summarize(psnr, ssim)
    except ValueError as exc:
        raise ParityError(f"unreadable ffmpeg stats in {out_dir}: {exc}") from exc
    if not frames:
        raise ParityError(f"no frames could be compared between {sa.path} and {sb.path}")
    if len(alpha) != len(frames):
        raise ParityError(f"{len(alpha)} alpha PSNR values but {len(frames)} colour ones in {out_dir}")
    frames = [replace(f, alpha_psnr=p) for f, p in zip(frames, alpha, strict=True)]
    result = Comparison(sa, sb, frames, stats, alpha=summarize_alpha(alpha))
    if images:
        result.images = await write_frame_images(
            ra, rb, stats.worst, out_dir, prefix="worst", view=premultiplied_filter, timeout=timeout
        )
        if result.alpha is not None and not math.isinf(result.alpha.min_psnr):
            alpha_images = await write_frame_images(
                ra, rb, result.alpha.worst, out_dir, prefix="worst-alpha", view=alpha_filter, timeout=timeout
            )
            result.images |= {f"alpha-{role}": path for role, path in alpha_images.items()}
    return result


async def write_frame_images(
    a: VideoSummary,
    b: VideoSummary,
    index: int,
    out_dir: Path,
    *,
    prefix: str = "frame",
    view: Callable[[VideoSummary], str] = to_rgb_filter,
    timeout: float = FFMPEG_TIMEOUT_S,
) -> dict[str, str]:
    """Write frame ``index`` of both videos, their amplified difference, and all three side by side.

    Files: ``{prefix}-a.png``, ``{prefix}-b.png``, ``{prefix}-diff.png`` (|a - b| x DIFF_GAIN per
    channel, black where equal) and ``{prefix}-side-by-side.png`` (a | b | diff). ``view`` gives
    the filter chain that makes the picture shown (RGB by default; premultiplied colour or the
    alpha plane for an RGBA comparison). Returns role -> path.
    """
    paths = {role: out_dir / f"{prefix}-{role}.png" for role in ("a", "b", "diff", "side-by-side")}
    pick = f"select=eq(n\\,{index})"
    gain = ":".join(f"{c}=min(val*{DIFF_GAIN}\\,255)" for c in "rgb")
    graph = (
        f"[0:v]{view(a)},format=gbrp,{pick},split=3[a0][a1][a2];"
        f"[1:v]{view(b)},format=gbrp,{pick},split=3[b0][b1][b2];"
        f"[a1][b1]blend=all_mode=difference,format=rgb24,lutrgb={gain},split[d0][d1];"
        f"[a2][b2][d1]hstack=inputs=3[side]"
    )
    outputs: list[str | Path] = []
    for label, role in (("a0", "a"), ("b0", "b"), ("d0", "diff"), ("side", "side-by-side")):
        outputs += ["-map", f"[{label}]", "-frames:v", "1", "-update", "1", paths[role]]
    await _ffmpeg(
        [*a.input_args, "-i", a.path, *b.input_args, "-i", b.path, "-filter_complex", graph, *outputs],
        timeout,
        f"writing frame {index} images",
    )
    missing = [str(p) for p in paths.values() if not p.is_file()]
    if missing:
        raise ParityError(f"frame {index} is in both videos but ffmpeg wrote no {', '.join(missing)}")
    return {role: str(p) for role, p in paths.items()}


def format_db(value: float) -> str:
    """Format a PSNR for a table: ``inf`` or one decimal."""
    if math.isnan(value):
        return "-"
    return "inf" if math.isinf(value) else f"{value:.1f}"


async def _ffmpeg(args: Sequence[str | Path], timeout: float, what: str) -> None:
    argv = ["ffmpeg", "-hide_banner", "-nostdin", "-loglevel", "error", "-y", *map(str, args)]
    try:
        await procs.run(argv, timeout=timeout)
    except ProcessFailed as exc:
        tail = exc.stderr_tail.strip().splitlines()
        raise ParityError(f"ffmpeg failed {what}: {tail[-1] if tail else exc}") from exc


def _parse_stats(text: str, key: str) -> list[float]:
    values: dict[int, float] = {}
    for lineno, line in enumerate(text.splitlines(), 1):
        if not line.strip():
            continue
        fields = dict(part.split(":", 1) for part in line.split() if ":" in part)
        if "n" not in fields or key not in fields:
            raise ValueError(f"line {lineno} has no n or {key}: {line.strip()[:80]!r}")
        values[int(fields["n"])] = float(fields[key])  # float() reads "inf"
    return [values[n] for n in sorted(values)]


def _filter_path(path: Path) -> str:
    # Inside a filtergraph, ':' separates options and '\' and "'" are special; quote the path.
    escaped = str(path.absolute()).replace("\\", "\\\\").replace("'", "'\\\\\\''").replace(":", "\\:")
    return f"'{escaped}'"


def _has_alpha(pix_fmt: str) -> bool:
    return pix_fmt in ("rgba", "bgra", "argb", "abgr", "ya8", "ya16be", "ya16le") or pix_fmt.startswith(
        ("rgba64", "bgra64", "gbrap", "yuva")
    )


def _json_number(v: float | int) -> float | int | str:
    if isinstance(v, float) and (math.isinf(v) or math.isnan(v)):
        return "inf" if math.isinf(v) else "nan"
    return v
