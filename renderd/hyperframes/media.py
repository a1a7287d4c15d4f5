"""The media of a HyperFrames composition: which <video>/<audio> play when, from which file.

The page says where each element sits on the timeline (the HyperFrames runtime resolves
relative and nested starts; see ``renderd/engine/media_shim.js``); this module checks that the
files exist inside the composition, reads their streams with ffprobe and turns the page's
description into the two things a render needs: video clips whose frames are extracted and
shown per frame, and audio tracks mixed once over the timeline. Timing rules are HyperFrames'
own (videoFrameExtractor.ts, audioMixer.ts, the producer's media collection):

- start: the runtime's resolved start; end: ``data-duration``, else ``data-end``, else the
  source's natural length after ``data-media-start`` at the playback rate; never past the end
  of the sub-composition slot the element sits in.
- ``data-media-start`` (or ``data-playback-start``): offset into the source, seconds.
- ``data-playback-rate``: 0.1 to 5, default 1. ``data-volume``: 0 to +12 dB, default 1.
- audio: every ``<audio>`` that is not muted; a ``<video>``'s own audio when the file has an
  audio stream, the element is not muted and ``data-has-audio`` is not "false" (HyperFrames'
  compiler defaults it to "true" for an unmuted video).
"""

from __future__ import annotations

import asyncio
import json
import math
from dataclasses import dataclass
from fractions import Fraction
from pathlib import Path
from typing import Any
from urllib.parse import unquote, urlsplit

from renderd import procs
from renderd.composition import Composition
from renderd.confine import inside, regular_inside
from renderd.errors import CompositionError, ProcessFailed, first_error
from renderd.hyperframes.project import HyperFramesProject, read_project

MIN_RATE, MAX_RATE = 0.1, 5.0
MAX_GAIN = 10 ** (12 / 20)
PROBE_TIMEOUT_S = 60.0


@dataclass(frozen=True, slots=True)
class SourceInfo:
    """What ffprobe says about a media file."""

    video_duration: float | None  # seconds of the first video stream, None without one
    audio_duration: float | None  # seconds of the first audio stream, None without one
    audio_channels: int
    video_codec: str | None
    # How the browser would turn the video's YUV into RGB (see yuv_matrix): swscale's
    # in_color_matrix name and whether the samples are full range.
    video_matrix: str = "bt601"
    video_full_range: bool = False
    # Where media time 0 sits in the file's timestamps and the video time base's tick, in
    # seconds: frame extraction compares timestamps with render times (media_frames._frame_grid).
    video_start: float = 0.0
    video_tick: float = 0.001

    @property
    def video_range(self) -> str:
        """The video's sample range as ffmpeg names it: "pc" (full) or "tv" (limited)."""
        return "pc" if self.video_full_range else "tv"

    @property
    def duration(self) -> float:
        """The playable length: the video stream's, else the audio stream's."""
        return self.video_duration or self.audio_duration or 0.0


@dataclass(frozen=True, slots=True)
class VideoClip:
    """A <video> whose pictures are shown from extracted frames."""

    index: int  # position among the page's video/audio elements (document order)
    element: str  # for messages, e.g. '<video id="intro"> in composition "main"'
    path: Path
    source: SourceInfo
    start: float
    end: float
    media_start: float
    rate: float
    loop: bool
    url: str = ""  # the source URL the page gave (every page must show the same element)

    @property
    def loop_duration(self) -> float:
        """Seconds of timeline one pass through the source lasts (HyperFrames' loop period)."""
        return max(0.0, (self.source.duration - self.media_start)) / self.rate


@dataclass(frozen=True, slots=True)
class AudioTrack:
    """One source of sound on the timeline: play ``path`` from ``media_start`` at ``start``."""

    element: str
    path: Path
    start: float
    end: float
    media_start: float
    rate: float
    volume: float
    channels: int


@dataclass(frozen=True, slots=True)
class MediaPlan:
    """Everything a render does with a composition's media."""

    videos: tuple[VideoClip, ...] = ()
    audio: tuple[AudioTrack, ...] = ()


def _number(value: Any) -> float | None:
    if value is None or isinstance(value, bool):
        return None
    try:
        f = float(value)
    except (TypeError, ValueError):
        return None
    return f if math.isfinite(f) else None


def _rate(value: Any) -> float:
    r = _number(value)
    return max(MIN_RATE, min(MAX_RATE, r)) if r is not None and r > 0 else 1.0


def _volume(value: Any) -> float:
    v = _number(value)
    return 1.0 if v is None else max(0.0, min(MAX_GAIN, v))


def source_path(root: Path, origin: str, url: str) -> Path | None:
    """Map a page URL on the composition's ``origin`` to a path under ``root`` (existing or not)."""
    parts = urlsplit(url)
    if f"{parts.scheme}://{parts.netloc}" != origin:
        return None
    return inside(root, root / unquote(parts.path).lstrip("/"))


# ffprobe's color_space names -> swscale's in_color_matrix names.
_MATRICES = {
    "bt709": "bt709",
    "smpte170m": "smpte170m",
    "bt470bg": "bt470",
    "fcc": "fcc",
    "smpte240m": "smpte240m",
    "bt2020nc": "bt2020",
    "bt2020c": "bt2020",
}


def yuv_matrix(color_space: str | None, height: int) -> str:
    """The YUV->RGB matrix Chromium uses for a video stream, as a swscale name.

    A tagged matrix wins; an untagged stream is BT.709 from 720 lines up and BT.601 below,
    which is what Chromium shows (measured: 1024x718 decodes as BT.601, 1024x720 and 400x1920
    as BT.709) and what HyperFrames' renders show.
    """
    tagged = _MATRICES.get(color_space or "")
    if tagged:
        return tagged
    return "bt709" if height >= 720 else "bt601"


async def probe_source(path: Path) -> SourceInfo:
    """Read stream durations, audio channels, the video codec and its colours of ``path`` with ffprobe."""
    argv = [
        "ffprobe", "-hide_banner", "-loglevel", "error",
        "-show_entries",
        "stream=codec_type,codec_name,duration,channels,height,pix_fmt,color_space,color_range,start_time,time_base"
        ":format=duration,start_time",
        "-of", "json", str(path),
    ]  # fmt: skip
    done = await procs.run(argv, timeout=PROBE_TIMEOUT_S)
    data = json.loads(done.stdout or b"{}")
    streams = data.get("streams") or []
    fmt = data.get("format") or {}
    fmt_duration = _number(fmt.get("duration"))
    video = next((s for s in streams if s.get("codec_type") == "video"), None)
    audio = next((s for s in streams if s.get("codec_type") == "audio"), None)

    def duration(s: dict[str, Any] | None) -> float | None:
        if s is None:
            return None
        d = _number(s.get("duration"))
        return d if d and d > 0 else fmt_duration

    return SourceInfo(
        video_duration=duration(video),
        audio_duration=duration(audio),
        audio_channels=int(audio.get("channels") or 2) if audio else 0,
        video_codec=str(video.get("codec_name")) if video else None,
        video_matrix=yuv_matrix(video.get("color_space"), int(video.get("height") or 0)) if video else "bt601",
        # yuvj* formats (MJPEG and friends) are full range whatever the tag says.
        video_full_range=video is not None
        and (video.get("color_range") == "pc" or str(video.get("pix_fmt") or "").startswith("yuvj")),
        video_start=_start(fmt, video) if video else 0.0,
        video_tick=_tick(video.get("time_base")) if video else 0.001,
    )


def _start(fmt: dict[str, Any], video: dict[str, Any]) -> float:
    """Where media time 0 is in the file's timestamps: the file's start, as ffmpeg's -ss counts.

    Not below 0: an MP4 whose audio starts early (encoder priming in an edit list) still shows
    its video from 0. MPEG-TS files commonly start at 1.4 s or later.
    """
    start = _number(fmt.get("start_time"))
    if start is None:
        start = _number(video.get("start_time"))
    return max(0.0, start or 0.0)


def _tick(time_base: object) -> float:
    """Seconds per timestamp unit of a stream (ffprobe's "1/90000"); a millisecond if unreadable."""
    try:
        tick = float(Fraction(str(time_base)))
    except (ValueError, ZeroDivisionError):
        return 0.001
    return tick if 0 < tick <= 0.1 else 0.001


async def resolve_media(root: Path, origin: str, described: list[dict[str, Any]], where: str) -> MediaPlan:
    """Turn the page's media description into clips and tracks; raise for missing or bad files.

    ``where`` is the entry file (relative) for messages; a file that is missing, outside the
    composition or unreadable is a CompositionError naming the file and the element.
    """
    entries: list[tuple[dict[str, Any], Path]] = []
    first_use: dict[Path, str] = {}
    for d in described:
        url = str(d.get("url") or "")
        if not url:
            continue  # an element without a source shows and plays nothing
        element = str(d.get("element") or f"<{d.get('tag')}>")
        shown = str(d.get("src") or url)
        path = source_path(root, origin, url)
        if path is None:
            raise CompositionError(
                f"{where}: media {shown!r} of {element} is not a file of the composition "
                "(remote media must be downloaded into the composition first)",
                path=where,
            )
        if regular_inside(root, path) is None:
            # ffprobe and ffmpeg only ever get regular files of the root (a FIFO would block them).
            rel = path.relative_to(root).as_posix()
            what = "is not a regular file" if path.exists() else "does not exist"
            raise CompositionError(f"{where}: media file {rel!r} of {element} {what}", path=where)
        first_use.setdefault(path, element)
        entries.append((d, path))
    try:
        async with asyncio.TaskGroup() as tg:
            probes = {p: tg.create_task(_probe_or_fail(p, root, e, where)) for p, e in first_use.items()}
    except BaseExceptionGroup as group:
        raise first_error(group) from None
    videos: list[VideoClip] = []
    audio: list[AudioTrack] = []
    for d, path in entries:
        info = probes[path].result()
        element = str(d.get("element") or "")
        start = _number(d.get("start")) or 0.0
        media_start = max(0.0, _number(d.get("mediaStart")) or 0.0)
        rate = _rate(d.get("playbackRate"))
        end = _number(d.get("end"))
        if end is None or end <= start:
            end = start + max(0.0, info.duration - media_start) / rate
        limit = _number(d.get("limit"))
        if limit is not None:
            end = min(end, limit)
        if end <= start:
            continue
        tag = d.get("tag")
        if tag == "video" and info.video_duration is not None:
            if media_start >= info.video_duration:
                rel = path.relative_to(root).as_posix()
                raise CompositionError(
                    f"{where}: data-media-start {media_start:g} s of {element} is past the end of "
                    f"{rel!r} ({info.video_duration:g} s)",
                    path=where,
                )
            videos.append(
                VideoClip(
                    int(d["index"]),
                    element,
                    path,
                    info,
                    start,
                    end,
                    media_start,
                    rate,
                    bool(d.get("loop")),
                    url=str(d["url"]),
                )  # fmt: skip
            )
        if _plays_audio(d, info) and media_start < (info.audio_duration or 0.0):
            audio.append(
                AudioTrack(element, path, start, end, media_start, rate, _volume(d.get("volume")), info.audio_channels)
            )
    return MediaPlan(tuple(videos), tuple(audio))


def _plays_audio(d: dict[str, Any], info: SourceInfo) -> bool:
    if info.audio_duration is None or d.get("muted"):
        return False
    if d.get("tag") == "audio":
        return True
    return str(d.get("hasAudio") or "").strip().lower() != "false"


async def _probe_or_fail(path: Path, root: Path, element: str, where: str) -> SourceInfo:
    try:
        info = await probe_source(path)
    except (ProcessFailed, ValueError) as exc:
        rel = path.relative_to(root).as_posix()
        raise CompositionError(f"{where}: media file {rel!r} of {element} is not readable media: {exc}") from None
    if info.video_duration is None and info.audio_duration is None:
        rel = path.relative_to(root).as_posix()
        raise CompositionError(f"{where}: media file {rel!r} of {element} has no video or audio stream", path=where)
    return info


def has_media(comp: Composition) -> bool:
    """Return whether ``comp`` is a HyperFrames project with <video>/<audio> in its files.

    A cheap static scan, so that compositions without media never pay for reading it from the
    page (media created by scripts at run time is not seen).
    """
    return project_has_media(read_project(comp.entry))


def project_has_media(project: HyperFramesProject | None) -> bool:
    """Return whether an already scanned project has <video>/<audio> in its files (see has_media)."""
    if project is None:
        return False
    return any(m.tag in ("video", "audio") for scan in (project.entry, *project.sub_files.values()) for m in scan.media)
