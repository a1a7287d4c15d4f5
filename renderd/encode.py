"""ffmpeg boundary: frames -> chunk part, parts -> output, audio mux, ffprobe checks.

Every video part is encoded so that parts join with the concat demuxer WITHOUT re-encoding
(renderd.formats has the table): H.264/H.265 and VP9 with a closed GOP of a fixed length, the
first frame a keyframe, no B-frames, headers repeated; ProRes and FFV1 are intra-only. Tags
are bt709 limited range, and mp4/mov parts get a track timescale that is a multiple of the fps
numerator so every frame lasts a whole number of ticks (exact at 30000/1001). A png-sequence
part is a tar of PNG files named by absolute frame index; a GIF is encoded once, at assembly,
from lossless FFV1 parts with one palette for the whole range.

Outputs are written to a hidden temp name next to the target, probed and verified, and only
then renamed over the target: a failed, timed-out or cancelled run leaves no output file.
All subprocesses go through :func:`renderd.procs.run`.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import json
import os
import re
import secrets
import shutil
import tarfile
from collections.abc import Awaitable, Callable, Iterator, Sequence
from dataclasses import dataclass
from fractions import Fraction
from pathlib import Path
from typing import Any

from renderd import procs
from renderd.errors import EncodeError, ProcessFailed
from renderd.formats import Delivery
from renderd.frames import FRAME_EXTENSIONS, Fps, find_missing_frame_ranges, frame_file_name
from renderd.settings import DEFAULTS, OUTPUT_FORMATS
from renderd.settings import problem as settings_problem

PROBE_TIMEOUT_S = 60.0
PROBE_CONCURRENCY = 8
AUDIO_RATE = 48000
AUDIO_CHANNELS = 2
AUDIO_BITRATE = "192k"
# x264 preset names, as --preset takes them, to libvpx-vp9 speeds (0 slowest; over 5 is realtime).
_VP9_SPEED = {"ultrafast": 8, "superfast": 7, "veryfast": 6, "faster": 5, "fast": 4, "medium": 3, "slow": 2}
_BT709 = ["-colorspace", "bt709", "-color_primaries", "bt709", "-color_trc", "bt709", "-color_range", "tv"]
# MPEG's 90 kHz clock; the track timescale is the multiple of the fps numerator nearest below it.
_TIMESCALE_TARGET = 90000
_FFMPEG = ("ffmpeg", "-hide_banner", "-nostdin", "-loglevel", "error", "-y")


@dataclass(frozen=True, slots=True)
class EncodeSettings:
    """How chunk frames are encoded; every chunk of one job must use the same settings."""

    format: str = "mp4"  # renderd.formats: what the parts are made for
    codec: str = DEFAULTS.codec  # mp4: h264 or h265
    transparent: bool = DEFAULTS.transparent  # keep alpha where the format has it
    crf: int = DEFAULTS.crf
    preset: str = DEFAULTS.preset
    gop: int | None = None  # keyframe interval in frames; None = fps rounded (about 1 s)
    threads: int = 0  # 0 = ffmpeg decides

    def __post_init__(self) -> None:
        if self.format not in OUTPUT_FORMATS:
            raise EncodeError(f"format {self.format!r} is not one of {', '.join(OUTPUT_FORMATS)}")
        if self.codec not in ("h264", "h265"):
            raise EncodeError(f"codec {self.codec!r} is not supported (h264 or h265)")
        for name in ("crf", "preset"):
            if (why := settings_problem(name, getattr(self, name))) is not None:
                raise EncodeError(why)
        if self.gop is not None and (not _is_int(self.gop) or self.gop < 1):
            raise EncodeError(f"gop must be a whole number of frames >= 1, got {self.gop!r}")
        if not _is_int(self.threads) or self.threads < 0:
            raise EncodeError(f"threads must be a whole number >= 0, got {self.threads!r}")

    @property
    def delivery(self) -> Delivery:
        """Return the output format these parts are for."""
        return Delivery(self.format, self.codec, self.transparent)

    @property
    def pix_fmt(self) -> str:
        """Return the pixel format of the encoded parts."""
        alpha = self.delivery.keeps_alpha
        return {
            "mp4": "yuv420p",
            "webm": "yuva420p" if alpha else "yuv420p",
            "mov": "yuva444p10le" if alpha else "yuv422p10le",
            "gif": "bgr0",
            "png-sequence": "rgba" if alpha else "rgb24",
        }[self.format]

    def holds_size(self, width: int, height: int) -> bool:
        """Return whether the parts' pixel format can hold frames of this size as they are.

        4:2:0 halves chroma in both directions (4:2:2 across), so odd sizes cannot be encoded as
        they are.
        """
        pix = self.pix_fmt
        return not (("420" in pix and (width % 2 or height % 2)) or ("422" in pix and width % 2))

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
    frames_dir: Path | None,
    out_path: Path,
    *,
    fps: Fps,
    frame_count: int,
    ext: str,
    settings: EncodeSettings,
    first_index: int = 0,
) -> list[str]:
    """Return the ffmpeg command that encodes local frames ``[0, frame_count)`` into ``out_path``.

    ``frames_dir`` None reads the frames' files, concatenated, from standard input instead
    (encode_stream.py), decoded as the files would be.
    For a png-sequence ``out_path`` is a directory that receives files named by absolute index
    (``first_index`` is the absolute index of local frame 0).
    """
    if frames_dir is None:
        decoder = "mjpeg" if ext == "jpg" else "png"
        source = ["-f", "image2pipe", "-framerate", str(fps), "-c:v", decoder, "-i", "pipe:0"]
    else:
        # image2 expands printf patterns in the whole path, so a literal % in the directory is doubled.
        pattern = str(frames_dir.absolute()).replace("%", "%%") + "/frame_%06d." + ext
        source = ["-f", "image2", "-framerate", str(fps), "-start_number", "0", "-i", pattern]
    head = [
        *_FFMPEG,
        # Any undecodable frame must fail the encode: without -xerror ffmpeg logs it and carries on.
        "-xerror",
        *source,
        "-frames:v", str(frame_count),
        "-an",
    ]  # fmt: skip
    pix = settings.pix_fmt
    if settings.format == "png-sequence":
        target = str(out_path.absolute()).replace("%", "%%") + "/frame_%06d.png"
        return [*head, "-vf", f"format={pix}", "-c:v", "png", "-pix_fmt", pix,
                "-start_number", str(first_index), "-f", "image2", target]  # fmt: skip
    if settings.format == "gif":
        # Lossless RGB parts; the palette is chosen at assembly over every frame.
        return [*head, "-vf", f"format={pix}", "-c:v", "ffv1", "-level", "3", "-g", "1", "-pix_fmt", pix,
                "-threads:v", str(settings.threads), "-f", "matroska", str(out_path.absolute())]  # fmt: skip
    gop = settings.gop_for(fps)
    keyframes = ["-g", str(gop), "-keyint_min", str(gop), "-force_key_frames", f"expr:eq(mod(n,{gop}),0)"]
    # RGB (PNG) and full-range bt601 (JPEG) inputs both land in limited-range bt709; alpha passes.
    convert = ["-vf", f"scale=out_color_matrix=bt709:out_range=tv,format={pix}", "-pix_fmt", pix]
    threads = ["-threads:v", str(settings.threads)]
    out = str(out_path.absolute())
    if settings.format == "webm":
        speed = _VP9_SPEED.get(settings.preset, 1 if settings.preset == "slower" else 0)
        alpha = settings.delivery.keeps_alpha
        return [
            *head, *convert,
            "-c:v", "libvpx-vp9",
            "-crf", str(settings.crf), "-b:v", "0",
            "-deadline", "realtime" if speed > 5 else "good", "-cpu-used", str(speed),
            "-row-mt", "1",
            # libvpx cannot encode alpha with alternate reference frames.
            *(["-auto-alt-ref", "0"] if alpha else []),
            *threads, *keyframes, *_BT709,
            "-f", "webm", out,
        ]  # fmt: skip
    timescale = track_timescale(fps)
    # mvhd duration in the same clock: the concat demuxer offsets each part by it.
    clocks = ["-video_track_timescale", str(timescale), "-movie_timescale", str(timescale)]
    if settings.format == "mov":
        alpha = settings.delivery.keeps_alpha
        # prores_ks writes each frame's own colour properties, not -colorspace and co.: without
        # setparams a PNG-fed part was untagged and a JPEG-fed one tagged bt470bg (BT.601).
        tags = "setparams=range=tv:color_primaries=bt709:color_trc=bt709:colorspace=bt709"
        return [
            *head, "-vf", f"{convert[1]},{tags}", *convert[2:],
            "-c:v", "prores_ks",
            # 4: ProRes 4444 (alpha), 3: ProRes 422 HQ.
            "-profile:v", "4" if alpha else "3",
            *(["-alpha_bits", "16"] if alpha else []),
            "-vendor", "apl0",
            *threads, *_BT709, *clocks,
            "-f", "mov", out,
        ]  # fmt: skip
    if settings.codec == "h265":
        codec = [
            "-c:v", "libx265", "-preset", settings.preset, "-crf", str(settings.crf),
            "-x265-params",
            f"keyint={gop}:min-keyint={gop}:scenecut=0:open-gop=0:bframes=0:repeat-headers=1:log-level=error",
            # QuickTime and browsers play HEVC in mp4 only under this sample entry.
            "-tag:v", "hvc1",
        ]  # fmt: skip
    else:
        codec = [
            "-c:v", "libx264", "-preset", settings.preset, "-crf", str(settings.crf),
            "-sc_threshold", "0", "-bf", "0",
            "-x264-params", "scenecut=0:open-gop=0:repeat-headers=1",
        ]  # fmt: skip
    return [*head, *convert, *codec, *threads, *keyframes, *_BT709, *clocks,
            "-movflags", "+faststart", "-f", "mp4", out]  # fmt: skip


async def encode_frames(
    frames_dir: Path,
    out_path: Path,
    *,
    fps: Fps,
    frame_count: int,
    ext: str,
    settings: EncodeSettings,
    timeout: float | None = None,
    first_index: int = 0,
) -> VideoInfo:
    """Encode local frames ``frame_000000.<ext>``.. into one verified part of ``settings.format``.

    ``first_index`` is the absolute index of local frame 0 (png-sequence parts are named by it).
    """
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
    # We fail rather than pad: padding would silently change the size the composition declared
    # and every chunk (and the final video) must agree on it.
    pix = settings.pix_fmt
    if not settings.holds_size(first.width, first.height):
        raise EncodeError(
            f"{frames_dir}: frames are {first.width}x{first.height}; {pix} needs an even "
            f"{'width and height' if '420' in pix else 'width'}"
        )
    if settings.format == "png-sequence":
        return await _encode_png_part(frames_dir, out_path, fps, frame_count, ext, settings, first_index, timeout)

    def argv(tmp: Path) -> list[str]:
        return build_encode_argv(frames_dir, tmp, fps=fps, frame_count=frame_count, ext=ext, settings=settings)

    async def check(tmp: Path) -> VideoInfo:
        info = await probe_video(tmp)
        _check(info, str(out_path), frames=frame_count, width=first.width, height=first.height, fps=fps)
        return info

    return await _write_atomically(out_path, argv, check, timeout, f"encoding {frames_dir}")


async def _encode_png_part(
    frames_dir: Path,
    out_path: Path,
    fps: Fps,
    frame_count: int,
    ext: str,
    settings: EncodeSettings,
    first_index: int,
    timeout: float | None,
) -> VideoInfo:
    """Write the PNG files of one png-sequence part (absolute names) and pack them in a tar.

    Chromium's own PNG frames go into the tar as they are when they already have the part's pixel
    format (8-bit RGB, or RGBA for alpha), which they do unless the frames are JPEG: re-encoding
    1080p PNG files costs about a quarter of the capture's CPU time (measured 40 ms a frame).
    """
    out_path.parent.mkdir(parents=True, exist_ok=True)
    names = [frame_file_name(first_index + i, "png") for i in range(frame_count)]
    local = [frames_dir / frame_file_name(i, ext) for i in range(frame_count)]
    want = _PNG_RGBA if settings.delivery.keeps_alpha else _PNG_RGB
    if ext == "png" and await asyncio.to_thread(_all_png_of_type, local, want):
        info = await probe_video(local[0])
        await _write_atomically_with(
            out_path, lambda tmp: pack_png_part(list(zip(local, names, strict=True)), tmp), f"packing {frames_dir}"
        )
        return _png_part_info(frame_count, info, fps)
    staging = out_path.with_name(f".{out_path.name}.{secrets.token_hex(4)}.d")
    staging.mkdir()
    try:
        argv = build_encode_argv(
            frames_dir, staging, fps=fps, frame_count=frame_count, ext=ext, settings=settings, first_index=first_index
        )
        try:
            await procs.run(argv, timeout=timeout)
        except ProcessFailed as exc:
            raise EncodeError(f"writing PNG files of {frames_dir} failed: {_last_line(exc.stderr_tail)}") from exc
        info = await probe_video(staging / names[0])
        members = [(staging / n, n) for n in names]
        await _write_atomically_with(out_path, lambda tmp: pack_png_part(members, tmp), f"packing {frames_dir}")
        return _png_part_info(frame_count, info, fps)
    finally:
        await asyncio.to_thread(shutil.rmtree, staging, True)


# PNG IHDR colour types: 2 truecolour (RGB), 6 truecolour with alpha (RGBA).
_PNG_RGB, _PNG_RGBA = 2, 6


def _all_png_of_type(paths: Sequence[Path], colour_type: int) -> bool:
    """Return whether every file is an 8-bit PNG of ``colour_type`` (reads 26 bytes of each; blocking)."""
    for path in paths:
        with path.open("rb") as f:
            head = f.read(26)
        if len(head) < 26 or head[:8] != b"\x89PNG\r\n\x1a\n" or head[12:16] != b"IHDR":
            return False
        if head[24] != 8 or head[25] != colour_type:
            return False
    return True


def _png_part_info(frames: int, first: VideoInfo, fps: Fps) -> VideoInfo:
    return VideoInfo(
        frames=frames,
        width=first.width,
        height=first.height,
        fps=fps.fraction,
        duration=Fraction(frames * fps.den, fps.num),
        codec="png",
        pix_fmt=first.pix_fmt,
    )


def pack_png_part(members: Sequence[tuple[Path, str]], out: Path) -> None:
    """Write ``(file, name)`` pairs into the tar ``out`` under those names, byte-reproducibly (blocking).

    Every member is a plain file with mode 0644, owner 0 and mtime 0, in the order given, so the
    same PNG files always give the same tar (and sha256) on any host.
    """
    with tarfile.open(out, "w", format=tarfile.USTAR_FORMAT) as tar:
        for path, name in members:
            st = path.stat()
            member = tarfile.TarInfo(name)
            member.size, member.mode, member.mtime = st.st_size, 0o644, 0
            with path.open("rb") as f:
                tar.addfile(member, f)


_PNG_NAME = re.compile(r"frame_(\d{6,})\.png")


def png_part_frames(path: Path) -> list[int]:
    """Return the absolute frame indices in a png-sequence part, in order (blocking).

    Raises EncodeError unless every member is a plain file named ``frame_NNNNNN.png``.
    """
    return _read_png_part(path, None)


def _read_png_part(path: Path, into: Path | None) -> list[int]:
    """Check the members of a png-sequence part, extract them into ``into`` if given; return their indices."""
    unreadable = f"{path} is not a readable png-sequence part"
    try:
        tar = tarfile.open(path, "r:")
    except (OSError, tarfile.TarError) as exc:
        raise EncodeError(f"{unreadable}: {exc}") from exc
    with tar:
        try:
            members = tar.getmembers()
        except (OSError, tarfile.TarError) as exc:
            raise EncodeError(f"{unreadable}: {exc}") from exc
        indices = []
        for m in members:
            match = _PNG_NAME.fullmatch(m.name)
            if not m.isfile() or match is None:
                raise EncodeError(f"{path}: member {m.name!r} is not a frame_NNNNNN.png file")
            indices.append(int(match.group(1)))
        if into is not None:
            # Names were checked above (no paths); the data filter refuses anything else anyway.
            tar.extractall(into, filter="data")
    return indices


def extract_png_parts(parts: Sequence[Path], into: Path, expected: range) -> None:
    """Extract png-sequence parts into the directory ``into`` and check they hold ``expected`` (blocking)."""
    seen: list[int] = []
    for part in parts:
        seen.extend(_read_png_part(part, into))
    if sorted(seen) != list(expected):
        raise EncodeError(
            f"the parts hold {len(seen)} frames, expected {len(expected)} ({expected.start}..{expected.stop - 1})"
        )


async def concat_videos(
    parts: Sequence[Path], out_path: Path, *, container: str = "mp4", timeout: float | None = None
) -> VideoInfo:
    """Join chunk videos with the concat demuxer (stream copy) and verify the frame total.

    ``container``: the ffmpeg muxer of the parts and the result (mp4, mov, webm or matroska).
    """
    out_path = Path(out_path)
    paths = _concat_paths(parts, out_path)
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

    def argv(tmp: Path) -> list[str]:
        return [
            *_FFMPEG,
            "-f", "concat", "-safe", "0",
            "-i", str(list_path.absolute()),
            "-map", "0:v:0",
            "-c", "copy",
            *_container_options(container, first),
            "-f", container,
            str(tmp.absolute()),
        ]  # fmt: skip

    async def check(tmp: Path) -> VideoInfo:
        info = await probe_video(tmp)
        _check(info, str(out_path), frames=total, width=first.width, height=first.height, fps=fps)
        return info

    with _concat_list(paths, out_path) as list_path:
        return await _write_atomically(out_path, argv, check, timeout, f"joining {len(paths)} parts")


async def mux_audio(
    video: Path,
    audio: Path,
    out_path: Path,
    *,
    frames: int,
    fps: Fps,
    timeout: float | None = None,
) -> VideoInfo:
    """Copy ``video`` and add ``audio`` as 48 kHz stereo, padded/trimmed to ``frames/fps``.

    The container follows ``out_path``'s extension: AAC in .mp4/.mov, Opus in .webm.
    """
    container, codec = _AUDIO_CONTAINERS.get(Path(out_path).suffix.lower(), (None, None))
    if container is None or codec is None:
        raise EncodeError(f"{out_path}: no audio in this format (only .mp4, .mov and .webm carry sound)")
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
            "-c:a", codec,
            "-b:a", AUDIO_BITRATE,
            "-ar", str(AUDIO_RATE),
            "-ac", str(AUDIO_CHANNELS),
            *_container_options(container, src),
            "-f", container,
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


async def encode_gif(
    parts: Sequence[Path], out_path: Path, *, frames: int, fps: Fps, timeout: float | None = None
) -> VideoInfo:
    """Encode lossless parts into one GIF whose palette is generated over every frame.

    One palette for the whole range (palettegen over the joined stream, then paletteuse), so the
    colours cannot change at a chunk seam. GIF delays are whole hundredths of a second, so
    the frame count is checked exactly and the duration to within a hundredth per frame.
    """
    out_path = Path(out_path)
    paths = _concat_paths(parts, out_path)

    def argv(tmp: Path) -> list[str]:
        return [
            *_FFMPEG,
            "-f", "concat", "-safe", "0",
            "-i", str(list_path.absolute()),
            "-filter_complex",
            "[0:v]split[a][b];[a]palettegen=stats_mode=full[p];[b][p]paletteuse=dither=sierra2_4a",
            "-loop", "0",
            "-f", "gif",
            str(tmp.absolute()),
        ]  # fmt: skip

    async def check(tmp: Path) -> VideoInfo:
        info = await probe_video(tmp)
        want = Fraction(frames * fps.den, fps.num)
        if info.frames != frames:
            raise EncodeError(f"{out_path}: expected {frames} frames, found {info.frames}")
        if abs(Fraction(info.duration) - want) > Fraction(frames, 100) + Fraction(1, 50):
            raise EncodeError(f"{out_path}: expected {float(want):.2f} s, found {float(info.duration):.2f} s")
        return info

    with _concat_list(paths, out_path) as list_path:
        return await _write_atomically(out_path, argv, check, timeout, f"encoding the GIF of {len(paths)} parts")


_AUDIO_CONTAINERS = {
    ".mp4": ("mp4", "aac"),
    ".m4v": ("mp4", "aac"),
    ".mov": ("mov", "aac"),
    ".webm": ("webm", "libopus"),
}


def _container_options(container: str, src: VideoInfo) -> list[str]:
    """Return the muxer options that keep ``src``'s frame timing exact in ``container``."""
    if container in ("mp4", "mov"):
        faststart = ["-movflags", "+faststart"]
        return [*_exact_timestamps(src), *faststart]
    return []


async def _write_atomically_with(out_path: Path, write: Callable[[Path], None], action: str) -> None:
    """Run the blocking ``write(tmp)`` in a thread into a temp file beside ``out_path``, then rename it."""
    out_path.parent.mkdir(parents=True, exist_ok=True)
    tmp = out_path.with_name(f".{out_path.name}.{secrets.token_hex(4)}.part")
    try:
        try:
            await asyncio.to_thread(write, tmp)
        except OSError as exc:
            raise EncodeError(f"{action} to {out_path} failed: {exc.strerror or exc}") from exc
        os.replace(tmp, out_path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


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


def _concat_paths(parts: Sequence[Path], out_path: Path) -> list[Path]:
    """Return ``parts`` as absolute paths a concat list can hold; EncodeError for none or a line break."""
    paths = [Path(p).absolute() for p in parts]
    if not paths:
        raise EncodeError(f"{out_path}: no parts to join")
    for p in paths:
        if "\n" in str(p) or "\r" in str(p):
            raise EncodeError(f"part path {str(p)!r} contains a line break, which concat lists cannot hold")
    return paths


@contextlib.contextmanager
def _concat_list(paths: Sequence[Path], out_path: Path) -> Iterator[Path]:
    """Write the concat demuxer's list of ``paths`` beside ``out_path``; remove it afterwards."""
    out_path.parent.mkdir(parents=True, exist_ok=True)
    list_path = out_path.with_name(f".{out_path.name}.{secrets.token_hex(4)}.concat.txt")
    try:
        list_path.write_text("".join(f"file '{_concat_quote(str(p))}'\n" for p in paths), encoding="utf-8")
        yield list_path
    finally:
        list_path.unlink(missing_ok=True)


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
