"""ffmpeg boundary: frames -> chunk video, chunk concat, audio mux, ffprobe checks.

Every chunk is encoded so that chunks join with the concat demuxer WITHOUT re-encoding:
H.264 with a closed GOP of a fixed length, the first frame a keyframe, no B-frames, SPS/PPS
repeated, yuv420p with bt709 tags, and a track timescale that is a multiple of the fps
numerator so every frame lasts a whole number of ticks (exact at 30000/1001).

Outputs are written to a hidden temp name next to the target, probed and verified, and only
then renamed over the target: a failed, timed-out or cancelled run leaves no output file.
All subprocesses go through :func:`renderd.procs.run`.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import os
import secrets
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from fractions import Fraction
from pathlib import Path
from typing import Any

from renderd import procs
from renderd.errors import EncodeError, ProcessFailed
from renderd.frames import FRAME_EXTENSIONS, Fps, find_missing_frame_ranges, frame_file_name
from renderd.settings import DEFAULTS
from renderd.settings import problem as settings_problem

PROBE_TIMEOUT_S = 60.0
PROBE_CONCURRENCY = 8
AUDIO_RATE = 48000
AUDIO_CHANNELS = 2
AUDIO_BITRATE = "192k"
# MPEG's 90 kHz clock; the track timescale is the multiple of the fps numerator nearest below it.
_TIMESCALE_TARGET = 90000
_FFMPEG = ("ffmpeg", "-hide_banner", "-nostdin", "-loglevel", "error", "-y")


@dataclass(frozen=True, slots=True)
class EncodeSettings:
    """How chunk frames are encoded; every chunk of one job must use the same settings."""

    codec: str = "libx264"
    crf: int = DEFAULTS.crf
    preset: str = DEFAULTS.preset
    pix_fmt: str = "yuv420p"
    gop: int | None = None  # keyframe interval in frames; None = fps rounded (about 1 s)
    threads: int = 0  # 0 = ffmpeg decides

    def __post_init__(self) -> None:
        if self.codec != "libx264":
            raise EncodeError(f"codec {self.codec!r} is not supported (only libx264)")
        if self.pix_fmt != "yuv420p":
            raise EncodeError(f"pixel format {self.pix_fmt!r} is not supported (only yuv420p)")
        for name in ("crf", "preset"):
            if (why := settings_problem(name, getattr(self, name))) is not None:
                raise EncodeError(why)
        if self.gop is not None and (not _is_int(self.gop) or self.gop < 1):
            raise EncodeError(f"gop must be a whole number of frames >= 1, got {self.gop!r}")
        if not _is_int(self.threads) or self.threads < 0:
            raise EncodeError(f"threads must be a whole number >= 0, got {self.threads!r}")

    def gop_for(self, fps: Fps) -> int:
        """Return the keyframe interval in frames at ``fps``."""
        return self.gop if self.gop is not None else max(1, round(fps.fraction))


@dataclass(frozen=True, slots=True)
class VideoInfo:
    """What ffprobe reports about a video file (first video stream, first audio stream)."""

    frames: int
    width: int
    height: int
    fps: Fraction  # r_frame_rate
    duration: Fraction | float  # exact (duration_ts * time_base) when ffprobe reports it
    codec: str
    pix_fmt: str
    time_base: Fraction | None = None
    audio_codec: str | None = None
    audio_duration: float | None = None


def track_timescale(fps: Fps) -> int:
    """Return an mp4 track timescale in which one frame at ``fps`` lasts a whole number of ticks."""
    return fps.num * max(1, _TIMESCALE_TARGET // fps.num)


def build_encode_argv(
    frames_dir: Path, out_path: Path, *, fps: Fps, frame_count: int, ext: str, settings: EncodeSettings
) -> list[str]:
    """Return the ffmpeg command that encodes local frames ``[0, frame_count)`` into ``out_path``."""
    gop = settings.gop_for(fps)
    timescale = track_timescale(fps)
    # image2 expands printf patterns in the whole path, so a literal % in the directory is doubled.
    pattern = str(frames_dir.absolute()).replace("%", "%%") + "/frame_%06d." + ext
    return [
        *_FFMPEG,
        # Any undecodable frame must fail the encode: without -xerror ffmpeg logs it and carries on.
        "-xerror",
        "-f", "image2",
        "-framerate", str(fps),
        "-start_number", "0",
        "-i", pattern,
        "-frames:v", str(frame_count),
        "-an",
        # RGB (PNG) and full-range bt601 (JPEG) inputs both land in limited-range bt709.
        "-vf", f"scale=out_color_matrix=bt709:out_range=tv,format={settings.pix_fmt}",
        "-c:v", settings.codec,
        "-preset", settings.preset,
        "-crf", str(settings.crf),
        "-pix_fmt", settings.pix_fmt,
        "-threads:v", str(settings.threads),
        "-g", str(gop),
        "-keyint_min", str(gop),
        "-sc_threshold", "0",
        "-force_key_frames", f"expr:eq(mod(n,{gop}),0)",
        "-bf", "0",
        "-x264-params", "scenecut=0:open-gop=0:repeat-headers=1",
        "-colorspace", "bt709",
        "-color_primaries", "bt709",
        "-color_trc", "bt709",
        "-color_range", "tv",
        "-video_track_timescale", str(timescale),
        # mvhd duration in the same clock: the concat demuxer offsets each part by it.
        "-movie_timescale", str(timescale),
        "-movflags", "+faststart",
        "-f", "mp4",
        str(out_path.absolute()),
    ]  # fmt: skip


async def encode_frames(
    frames_dir: Path,
    out_path: Path,
    *,
    fps: Fps,
    frame_count: int,
    ext: str,
    settings: EncodeSettings,
    timeout: float | None = None,
) -> VideoInfo:
    """Encode local frames ``frame_000000.<ext>``.. into a concat-ready H.264 mp4 and verify it."""
    frames_dir, out_path = Path(frames_dir), Path(out_path)
    if not _is_int(frame_count) or frame_count <= 0:
        raise EncodeError(f"frame count must be a whole number >= 1, got {frame_count!r}")
    if ext not in FRAME_EXTENSIONS:
        raise EncodeError(f"frame extension {ext!r} is not one of {', '.join(FRAME_EXTENSIONS)}")
    if not frames_dir.is_dir():
        raise EncodeError(f"frames directory {frames_dir} does not exist")
    missing = await asyncio.to_thread(find_missing_frame_ranges, frames_dir, frame_count, ext)
    if missing:
        count = sum(b - a for a, b in missing)
        shown = ", ".join(f"[{a}, {b})" for a, b in missing[:5]) + (", ..." if len(missing) > 5 else "")
        raise EncodeError(f"{frames_dir}: {count} of {frame_count} .{ext} frames missing or incomplete: {shown}")
    first = await probe_video(frames_dir / frame_file_name(0, ext))
    if first.width <= 0 or first.height <= 0:
        raise EncodeError(f"{frames_dir / frame_file_name(0, ext)}: cannot read the frame size")
    # yuv420p halves chroma in both directions, so odd sizes cannot be encoded as they are. We
    # fail rather than pad: padding would silently change the size the composition declared and
    # every chunk (and the final video) must agree on it.
    if first.width % 2 or first.height % 2:
        raise EncodeError(
            f"{frames_dir}: frames are {first.width}x{first.height}; yuv420p needs an even width and height"
        )

    def argv(tmp: Path) -> list[str]:
        return build_encode_argv(frames_dir, tmp, fps=fps, frame_count=frame_count, ext=ext, settings=settings)

    async def check(tmp: Path) -> VideoInfo:
        info = await probe_video(tmp)
        _check(info, str(out_path), frames=frame_count, width=first.width, height=first.height, fps=fps)
        return info

    return await _write_atomically(out_path, argv, check, timeout, f"encoding {frames_dir}")


async def concat_videos(parts: Sequence[Path], out_path: Path, *, timeout: float | None = None) -> VideoInfo:
    """Join chunk videos with the concat demuxer (stream copy) and verify the frame total."""
    out_path = Path(out_path)
    paths = [Path(p).absolute() for p in parts]
    if not paths:
        raise EncodeError(f"{out_path}: no parts to concatenate")
    for p in paths:
        if "\n" in str(p) or "\r" in str(p):
            raise EncodeError(f"part path {str(p)!r} contains a line break, which concat lists cannot hold")
    infos = await _probe_all(paths)
    first = infos[0]
    for p, info in zip(paths, infos, strict=True):
        same = (info.width, info.height, info.fps, info.codec, info.pix_fmt, info.time_base)
        want = (first.width, first.height, first.fps, first.codec, first.pix_fmt, first.time_base)
        if same != want:
            raise EncodeError(
                f"{p}: {info.codec} {info.width}x{info.height} {info.pix_fmt} at {info.fps} fps "
                f"does not match {paths[0].name} ({first.codec} {first.width}x{first.height} "
                f"{first.pix_fmt} at {first.fps} fps); parts cannot be joined without re-encoding"
            )
    total = sum(i.frames for i in infos)
    fps = Fps(first.fps.numerator, first.fps.denominator) if first.fps > 0 else None
    list_path = out_path.with_name(f".{out_path.name}.{secrets.token_hex(4)}.concat.txt")
    lines = "".join(f"file '{_concat_quote(str(p))}'\n" for p in paths)

    def argv(tmp: Path) -> list[str]:
        return [
            *_FFMPEG,
            "-f", "concat", "-safe", "0",
            "-i", str(list_path.absolute()),
            "-map", "0:v:0",
            "-c", "copy",
            *_exact_timestamps(first),
            "-movflags", "+faststart",
            "-f", "mp4",
            str(tmp.absolute()),
        ]  # fmt: skip

    async def check(tmp: Path) -> VideoInfo:
        info = await probe_video(tmp)
        _check(info, str(out_path), frames=total, width=first.width, height=first.height, fps=fps)
        return info

    out_path.parent.mkdir(parents=True, exist_ok=True)
    try:
        list_path.write_text(lines, encoding="utf-8")
        return await _write_atomically(out_path, argv, check, timeout, f"joining {len(paths)} parts")
    finally:
        list_path.unlink(missing_ok=True)


async def mux_audio(
    video: Path,
    audio: Path,
    out_path: Path,
    *,
    frames: int,
    fps: Fps,
    timeout: float | None = None,
) -> VideoInfo:
    """Copy ``video`` and add ``audio`` as 48 kHz stereo AAC, padded/trimmed to ``frames/fps``."""
    video, audio, out_path = Path(video), Path(audio), Path(out_path)
    for p in (video, audio):
        if not p.is_file():
            raise EncodeError(f"{p} does not exist or is not a file")
    # Trim by sample count so the length is exact; aresample first so the count is at 48 kHz.
    samples = round(Fraction(frames * fps.den * AUDIO_RATE, fps.num))
    src = await probe_video(video)

    def argv(tmp: Path) -> list[str]:
        return [
            *_FFMPEG,
            "-i", str(video.absolute()),
            "-i", str(audio.absolute()),
            "-map", "0:v:0",
            "-map", "1:a:0",
            "-c:v", "copy",
            "-af", f"aresample={AUDIO_RATE},apad,atrim=end_sample={samples}",
            "-c:a", "aac",
            "-b:a", AUDIO_BITRATE,
            "-ar", str(AUDIO_RATE),
            "-ac", str(AUDIO_CHANNELS),
            *_exact_timestamps(src),
            "-movflags", "+faststart",
            "-f", "mp4",
            str(tmp.absolute()),
        ]  # fmt: skip

    async def check(tmp: Path) -> VideoInfo:
        info = await probe_video(tmp)
        _check(info, str(out_path), frames=frames, fps=fps)
        if info.audio_codec is None:
            raise EncodeError(f"{out_path}: no audio stream after muxing {audio}")
        return info

    return await _write_atomically(out_path, argv, check, timeout, f"muxing {audio} into {video}")


async def probe_video(path: Path) -> VideoInfo:
    """Return frame count (packets, no decoding), size, rate and codec of ``path``."""
    path = Path(path)
    if not path.is_file():
        raise EncodeError(f"{path} does not exist or is not a file")
    argv = [
        "ffprobe", "-hide_banner", "-loglevel", "error",
        "-count_packets",
        "-show_entries",
        "stream=codec_type,codec_name,width,height,pix_fmt,r_frame_rate,time_base,duration_ts,"
        "duration,nb_read_packets:format=duration",
        "-of", "json",
        str(path.absolute()),
    ]  # fmt: skip
    try:
        done = await procs.run(argv, timeout=PROBE_TIMEOUT_S)
        data = json.loads(done.stdout)
    except ProcessFailed as exc:
        raise EncodeError(f"{path} is not a readable video: {_last_line(exc.stderr_tail)}") from exc
    except ValueError as exc:
        raise EncodeError(f"{path}: ffprobe output is not JSON ({exc})") from exc
    return _video_info(path, data)


async def verify_video(
    path: Path,
    *,
    frames: int,
    width: int | None = None,
    height: int | None = None,
    fps: Fps | None = None,
) -> VideoInfo:
    """Probe ``path`` and raise EncodeError unless it has the given frames, size and rate."""
    info = await probe_video(path)
    _check(info, str(path), frames=frames, width=width, height=height, fps=fps)
    return info


def sha256_file(path: Path) -> str:
    """Return the hex SHA-256 of the file at ``path``, read in blocks."""
    with Path(path).open("rb") as f:
        return hashlib.file_digest(f, "sha256").hexdigest()


async def sha256_file_async(path: Path) -> str:
    """Return :func:`sha256_file` computed in a worker thread."""
    return await asyncio.to_thread(sha256_file, path)


def _check(
    info: VideoInfo,
    label: str,
    *,
    frames: int,
    width: int | None = None,
    height: int | None = None,
    fps: Fps | None = None,
) -> None:
    problems = []
    if info.frames != frames:
        problems.append(f"expected {frames} frames, found {info.frames}")
    if (width is not None and info.width != width) or (height is not None and info.height != height):
        problems.append(f"expected {width or info.width}x{height or info.height}, found {info.width}x{info.height}")
    if fps is not None:
        if info.fps != fps.fraction:
            problems.append(f"expected {fps} fps, found {_rate(info.fps)}")
        want = Fraction(frames * fps.den, fps.num)
        if abs(Fraction(info.duration) - want) > Fraction(fps.den, 2 * fps.num):
            problems.append(f"expected {float(want):.6f} s, found {float(info.duration):.6f} s")
    if problems:
        raise EncodeError(f"{label}: " + "; ".join(problems))


def _video_info(path: Path, data: dict[str, Any]) -> VideoInfo:
    streams = data.get("streams") or []
    video = next((s for s in streams if s.get("codec_type") == "video"), None)
    if video is None:
        raise EncodeError(f"{path} has no video stream")
    audio = next((s for s in streams if s.get("codec_type") == "audio"), None)
    time_base = _fraction(video.get("time_base"))
    duration: Fraction | float
    if time_base and str(video.get("duration_ts", "")).isdigit():
        duration = int(video["duration_ts"]) * time_base
    else:
        duration = _float(video.get("duration")) or _float((data.get("format") or {}).get("duration"))
    return VideoInfo(
        frames=int(video.get("nb_read_packets") or 0),
        width=int(video.get("width") or 0),
        height=int(video.get("height") or 0),
        fps=_fraction(video.get("r_frame_rate")) or Fraction(0),
        duration=duration,
        codec=str(video.get("codec_name", "")),
        pix_fmt=str(video.get("pix_fmt", "")),
        time_base=time_base,
        audio_codec=str(audio["codec_name"]) if audio and audio.get("codec_name") else None,
        audio_duration=_float(audio.get("duration")) if audio else None,
    )


async def _write_atomically(
    out_path: Path,
    argv: Callable[[Path], list[str]],
    check: Callable[[Path], Awaitable[VideoInfo]],
    timeout: float | None,
    action: str,
) -> VideoInfo:
    """Run ffmpeg into a temp file beside ``out_path``, verify it, then rename it into place."""
    out_path.parent.mkdir(parents=True, exist_ok=True)
    tmp = out_path.with_name(f".{out_path.name}.{secrets.token_hex(4)}.part")
    try:
        try:
            await procs.run(argv(tmp), timeout=timeout)
        except ProcessFailed as exc:
            reason = _last_line(exc.stderr_tail)
            if exc.returncode is None:
                reason = f"ffmpeg {reason}"
            raise EncodeError(f"{action} to {out_path} failed: {reason}") from exc
        info = await check(tmp)
        try:
            os.replace(tmp, out_path)
        except OSError as exc:
            raise EncodeError(f"cannot move the result into {out_path}: {exc.strerror}") from exc
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    return info


def _exact_timestamps(src: VideoInfo) -> list[str]:
    """Return output options that make every frame of ``src``'s rate last exactly one frame.

    The concat demuxer offsets each part by its duration in microseconds, which is not exact at
    30000/1001 and drifts by a tick after enough parts; setts rewrites each packet's time from
    its index instead. Only when a frame is a whole number of ticks in the part's time base.
    """
    if not src.time_base or src.fps <= 0:
        return []
    ticks = 1 / (src.fps * src.time_base)
    if ticks.denominator != 1:
        return []
    scale = str(src.time_base.denominator) if src.time_base.numerator == 1 else None
    return [
        "-bsf:v", f"setts=ts=N*{ticks.numerator}:duration={ticks.numerator}",
        *(["-video_track_timescale", scale, "-movie_timescale", scale] if scale else []),
    ]  # fmt: skip


async def _probe_all(paths: Sequence[Path]) -> list[VideoInfo]:
    sem = asyncio.Semaphore(PROBE_CONCURRENCY)

    async def one(p: Path) -> VideoInfo:
        async with sem:
            return await probe_video(p)

    try:
        async with asyncio.TaskGroup() as tg:
            tasks = [tg.create_task(one(p)) for p in paths]
    except ExceptionGroup as group:
        raise group.exceptions[0] from None
    return [t.result() for t in tasks]


def _concat_quote(path: str) -> str:
    # Concat list syntax: inside single quotes nothing is special but the quote itself, so a
    # quote is written as: close quote, backslash-escaped quote, reopen quote.
    return path.replace("'", "'\\''")


def _last_line(text: str) -> str:
    lines = [ln.strip() for ln in text.strip().splitlines() if ln.strip()]
    return lines[-1] if lines else "no output"


def _fraction(value: object) -> Fraction | None:
    try:
        f = Fraction(str(value))
    except (ValueError, ZeroDivisionError):
        return None
    return f if f > 0 else None


def _float(value: object) -> float:
    try:
        return float(str(value))
    except ValueError:
        return 0.0


def _rate(f: Fraction) -> str:
    return str(f.numerator) if f.denominator == 1 else f"{f.numerator}/{f.denominator}"


def _is_int(v: object) -> bool:
    return isinstance(v, int) and not isinstance(v, bool)
