"""Video frames for the page: extracted with ffmpeg at the render fps, served on the private origin.

HyperFrames renders a <video> from frames its producer extracts with ffmpeg at the output
rate, swapped into the page per frame; renderd does the same so that a captured frame never
depends on when Chrome's decoder delivers a picture. Each render extracts only the source
frames its own frame range shows (a chunk on a render host extracts its slice with -ss), into
directories keyed by the source file's sha256, the fps and the media start: renders that share
a cache directory share frames, and a frame file's name is its index on that source grid.

Frame ``k`` of a clip is the source at ``media_start + k / fps``; composition time ``t`` shows
frame ``floor((t - start) * rate * fps + 1e-9)`` while ``start <= t <= end``, holding the last
frame once the source has ended and wrapping for ``loop`` (HyperFrames' FrameLookupTable).
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import math
import os
import shutil
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from renderd import procs
from renderd.errors import CompositionError, ProcessFailed, first_error
from renderd.frames import Fps, FrameRange, frame_time
from renderd.hyperframes.media import SourceInfo, VideoClip

URL_PREFIX = "/__renderd/media/"
PLAN_PATH = URL_PREFIX + "plan.json"
JPEG_QSCALE = "2"  # HyperFrames' default extraction quality (95) in ffmpeg's qscale
# Codecs that may carry alpha are extracted as PNG, as HyperFrames does.
_ALPHA_CODECS = {"vp8", "vp9", "prores", "png", "qtrle"}
# The seek lands this far before the first wanted time: the source frame on screen then may
# have started up to this long before it (-ss drops every frame that starts before the seek).
_SEEK_MARGIN_S = 1.0
_EXTRACT_CONCURRENCY = 2
_EMPTY_PLAN = b'{"videos":[]}'


@dataclass(frozen=True, slots=True)
class _Need:
    """The frames of one cache entry a render shows."""

    key: str
    clip: VideoClip
    ext: str
    lo: int
    hi: int


def frame_index(clip: VideoClip, t: float, fps: float) -> int | None:
    """Return the frame ``clip`` shows at composition time ``t`` before holding/clamping, or None.

    The same arithmetic in the same IEEE doubles as media_shim.js, so both sides agree on
    every frame.
    """
    if not (clip.start <= t <= clip.end):
        return None
    local = t - clip.start
    period = clip.loop_duration
    if clip.loop and period > 0 and local >= period:
        local = math.fmod(local, period)
    k = math.floor(local * clip.rate * fps + 1e-9)
    return k if k >= 0 else None


class MediaFrames:
    """Extracted frames of one render's videos and the plan the page reads them by."""

    def __init__(self) -> None:
        self._plan = _EMPTY_PLAN
        self._dirs: dict[str, Path] = {}
        # Per cache entry, the frame indices the current render extracted (first, last): a
        # request past them gets the nearest (the source's held last frame, mostly).
        self._bounds: dict[str, tuple[int, int]] = {}

    @property
    def plan(self) -> dict[str, Any]:
        """The plan as the page reads it (for tests and logs)."""
        result: dict[str, Any] = json.loads(self._plan)
        return result

    async def prepare(self, clips: tuple[VideoClip, ...], span: FrameRange, fps: Fps, cache_dir: Path) -> None:
        """Extract the frames ``clips`` show in ``span`` into ``cache_dir`` and publish the plan."""
        rate = float(fps.fraction)
        times = [float(frame_time(i, fps)) for i in range(span.start, span.end)]
        needs: list[_Need] = []
        entries: list[dict[str, Any]] = []
        for clip in clips:
            ks = [k for k in (frame_index(clip, t, rate) for t in times) if k is not None]
            ext = "png" if (clip.source.video_codec or "") in _ALPHA_CODECS else "jpg"
            colours = f"{clip.source.video_matrix}{clip.source.video_range}"
            key = f"{await _file_digest(clip.path)}-{fps.num}_{fps.den}-{clip.media_start!r}-{colours}-{ext}"
            entry: dict[str, Any] = {
                "index": clip.index,
                "url": clip.url,
                "element": clip.element,
                "start": clip.start,
                "end": clip.end,
                "rate": clip.rate,
                "fps": rate,
                "loop": clip.loop,
                "loopDuration": clip.loop_duration,
                "urlPrefix": f"{URL_PREFIX}{key}/",
                "ext": ext,
            }
            entries.append(entry)
            if ks:
                needs.append(_Need(key, clip, ext, min(ks), max(ks)))
        cache_dir.mkdir(parents=True, exist_ok=True)
        # One extraction per cache entry, over the union of what its clips need.
        merged: dict[str, _Need] = {}
        for n in needs:
            m = merged.get(n.key)
            merged[n.key] = n if m is None else _Need(n.key, m.clip, n.ext, min(m.lo, n.lo), max(m.hi, n.hi))
        sem = asyncio.Semaphore(_EXTRACT_CONCURRENCY)

        async def one(n: _Need) -> tuple[str, int]:
            async with sem:
                return n.key, await _ensure_frames(cache_dir / n.key, n, fps)

        try:
            async with asyncio.TaskGroup() as tg:
                tasks = [tg.create_task(one(n)) for n in merged.values()]
        except BaseExceptionGroup as group:
            raise first_error(group) from None
        for task in tasks:
            key, last = task.result()
            self._bounds[key] = (min(merged[key].lo, last), last)
        for entry in entries:
            key = entry["urlPrefix"][len(URL_PREFIX) : -1]
            self._dirs[key] = cache_dir / key
        self._plan = json.dumps({"videos": entries}).encode()

    def serve(self, path: str) -> tuple[bytes, str] | None:
        """Return (body, content type) for a request path under URL_PREFIX, or None (not ours)."""
        if path == PLAN_PATH:
            return self._plan, "application/json"
        rest = path[len(URL_PREFIX) :]
        key, _, name = rest.partition("/")
        directory = self._dirs.get(key)
        stem, _, ext = name.partition(".")
        bounds = self._bounds.get(key)
        if directory is None or bounds is None or not stem.isdigit() or ext not in ("jpg", "png"):
            return None
        k = max(bounds[0], min(int(stem), bounds[1]))
        try:
            body = (directory / f"{k:06d}.{ext}").read_bytes()
        except OSError:
            return None
        return body, "image/png" if ext == "png" else "image/jpeg"


_digests: dict[tuple[str, int, int], str] = {}


async def _file_digest(path: Path) -> str:
    """Return the first 16 hex digits of the file's sha256 (memoised by path, size and mtime)."""
    st = path.stat()
    memo = (str(path), st.st_size, st.st_mtime_ns)
    if memo not in _digests:

        def digest() -> str:
            with path.open("rb") as f:
                return hashlib.file_digest(f, "sha256").hexdigest()[:16]

        _digests[memo] = await asyncio.to_thread(digest)
    return _digests[memo]


async def _ensure_frames(directory: Path, need: _Need, fps: Fps) -> int:
    """Make frames ``need.lo..need.hi`` exist in ``directory``; return the last index that exists.

    Past the end of the source there are no frames: the last one is held (its index returned).
    """
    name = "{:06d}." + need.ext

    def scan() -> list[int]:
        directory.mkdir(parents=True, exist_ok=True)
        return [k for k in range(need.lo, need.hi + 1) if not (directory / name.format(k)).is_file()]

    missing = await asyncio.to_thread(scan)
    if not missing:
        return need.hi
    a, b = missing[0], missing[-1]
    n = await _extract(directory, need, fps, a, b - a + 1)
    if n == b - a + 1:
        return need.hi
    if n > 0:
        return a + n - 1
    # The whole range lies past the source's end: find its last frame to hold.
    existing = await asyncio.to_thread(
        lambda: [int(p.name[:6]) for p in directory.glob("*." + need.ext) if p.name[:6].isdigit()]
    )
    if existing and max(existing) < a:
        return max(existing)
    clip = need.clip
    estimate = math.floor((clip.source.duration - clip.media_start) * float(fps.fraction))
    back = max(0, min(a, estimate) - 2 * math.ceil(float(fps.fraction)))
    n = await _extract(directory, need, fps, back, a - back)
    if n == 0:
        raise CompositionError(f"{clip.element}: no frames could be decoded from {clip.path.name}")
    return back + n - 1


def _frame_grid(source: SourceInfo, wanted: float, fps: Fps) -> str:
    """Filters that put on output frame k the source frame on screen at ``wanted + k / fps``.

    That is the last frame whose timestamp is not after that time, as a browser shows for
    ``currentTime`` (and as HyperFrames' renders show). ffmpeg's fps filter rounds to the
    nearest slot by default, which put a 24 fps source's frames up to half a frame early in a
    30 fps render. Here the timestamps move (in microseconds) so that slot 0 is ``wanted``, and
    the fps filter rounds up; half a tick of the source's time base absorbs timestamps its
    container rounded (milliseconds in Matroska/WebM). Frames before slot 0 fill slot 0.
    """
    epsilon = max(source.video_tick / 2, 1e-6)
    shift_us = round((source.video_start + wanted + epsilon) * 1_000_000)
    return f"settb=1/1000000,setpts=PTS-{shift_us},fps=fps={fps}:start_time=0:round=up"


def _colour_filter(need: _Need) -> str:
    """The conversion that gives the frames the colours Chromium shows for the video itself.

    ffmpeg's default reads every stream as BT.601 and a JPEG is decoded as BT.601 full range
    (JFIF), so an HD or BT.709 video came out with greens ~10 levels off. The source's matrix
    and range are read explicitly; JPEG frames are re-expressed in JFIF's own matrix.
    """
    source = need.clip.source
    src = f"in_color_matrix={source.video_matrix}:in_range={source.video_range}"
    if need.ext == "jpg":
        return f"scale={src}:out_color_matrix=bt601:out_range=pc:flags=accurate_rnd,format=yuvj420p"
    # ffmpeg writes a tagged source's primaries and transfer into the PNG (cHRM, gAMA), and
    # Chromium would colour-manage the frame a second time: the pixels are already display RGB.
    untag = "setparams=color_primaries=unknown:color_trc=unknown:colorspace=unknown"
    return f"scale={src}:flags=accurate_rnd,format=rgba,{untag}"


async def _extract(directory: Path, need: _Need, fps: Fps, first: int, count: int) -> int:
    """Extract frames ``first .. first+count-1`` into ``directory``; return how many the source had."""
    clip = need.clip
    wanted = clip.media_start + first * fps.den / fps.num  # media time of frame `first`
    seek = wanted - _SEEK_MARGIN_S
    tmp = Path(tempfile.mkdtemp(prefix=".extract-", dir=directory))
    try:
        argv = [
            "ffmpeg", "-hide_banner", "-nostdin", "-loglevel", "error", "-y",
            # Timestamps stay the file's own (-copyts), so the comparison below is exact rather
            # than off by -ss's rounding to the stream's time base.
            "-copyts", *(["-ss", f"{seek:.6f}"] if seek > 0 else []),
            "-i", str(clip.path),
            "-map", "0:v:0", "-an", "-sn", "-dn",
            "-vf", f"{_frame_grid(clip.source, wanted, fps)},{_colour_filter(need)}",
            "-frames:v", str(count),
            *(["-q:v", JPEG_QSCALE] if need.ext == "jpg" else ["-compression_level", "1"]),
            "-start_number", str(first),
            str(tmp / ("%06d." + need.ext)),
        ]  # fmt: skip
        try:
            await procs.run(argv, timeout=60 + 0.5 * count)
        except ProcessFailed as exc:
            raise CompositionError(f"{clip.element}: extracting frames from {clip.path.name} failed: {exc}") from None

        def publish() -> int:
            produced = sorted(tmp.iterdir())
            for p in produced:
                # Frames are deterministic, so another render writing the same name is harmless.
                os.replace(p, directory / p.name)
            return len(produced)

        return await asyncio.to_thread(publish)
    finally:
        await asyncio.to_thread(shutil.rmtree, tmp, True)
