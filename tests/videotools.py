"""Test helpers for looking inside videos with the real ffmpeg/ffprobe (synchronous, test-only).

Frames whose colour encodes their index let a test tell, after decoding, which source frame
ended up at which position (see :func:`index_colour` and :func:`write_index_frames`).
"""

from __future__ import annotations

import json
import subprocess
from fractions import Fraction
from pathlib import Path
from typing import Any

RGB = tuple[int, int, int]


def decode_frames(path: Path, width: int, height: int) -> list[bytes]:
    """Decode every frame of ``path`` (no dropping or duplicating) to raw RGB24 bytes."""
    out = subprocess.run(
        ["ffmpeg", "-hide_banner", "-nostdin", "-loglevel", "error", "-i", str(path),
         "-map", "0:v:0", "-fps_mode", "passthrough", "-f", "rawvideo", "-pix_fmt", "rgb24", "-"],
        check=True, capture_output=True, timeout=120,
    ).stdout  # fmt: skip
    size = width * height * 3
    if len(out) % size:
        raise AssertionError(f"{path}: decoded {len(out)} bytes, not a multiple of {width}x{height}x3")
    return [out[i : i + size] for i in range(0, len(out), size)]


def pixel(frame: bytes, width: int, x: int, y: int) -> RGB:
    """Return the (r, g, b) of pixel (x, y) in a raw RGB24 frame ``width`` pixels wide."""
    i = (y * width + x) * 3
    return frame[i], frame[i + 1], frame[i + 2]


def close(a: RGB, b: RGB, tolerance: int = 12) -> bool:
    """Return True when every channel of ``a`` is within ``tolerance`` of ``b``."""
    return all(abs(p - q) <= tolerance for p, q in zip(a, b, strict=True))


def ffprobe(path: Path, *args: str) -> dict[str, Any]:
    """Run ffprobe with ``args`` on ``path`` and return its JSON output."""
    out = subprocess.run(
        ["ffprobe", "-hide_banner", "-loglevel", "error", *args, "-of", "json", str(path)],
        check=True, capture_output=True, timeout=60,
    ).stdout  # fmt: skip
    result: dict[str, Any] = json.loads(out)
    return result


def packets(path: Path) -> list[tuple[int, int, bool]]:
    """Return ``(pts, duration, keyframe)`` of every video packet, in the stream's time base."""
    data = ffprobe(path, "-select_streams", "v:0", "-show_entries", "packet=pts,duration,flags")
    return [(int(p["pts"]), int(p["duration"]), "K" in p["flags"]) for p in data["packets"]]


def frame_types(path: Path) -> list[tuple[bool, str]]:
    """Return ``(key_frame, pict_type)`` of every decoded video frame."""
    data = ffprobe(path, "-select_streams", "v:0", "-show_entries", "frame=key_frame,pict_type")
    return [(f["key_frame"] == 1, f["pict_type"]) for f in data["frames"]]


def stream(path: Path, kind: str = "video") -> dict[str, Any]:
    """Return ffprobe's description of the first ``kind`` ("video"/"audio") stream of ``path``."""
    data = ffprobe(path, "-show_streams")
    return next(s for s in data["streams"] if s["codec_type"] == kind)


def stream_duration(path: Path, kind: str = "video") -> Fraction:
    """Return the exact duration (duration_ts * time_base) of the first ``kind`` stream."""
    s = stream(path, kind)
    return int(s["duration_ts"]) * Fraction(s["time_base"])


def index_colour(k: int) -> RGB:
    """Return the colour of frame ``k``: neighbours differ by ~100 in every channel, no clipping."""
    return (28 + (k * 97) % 200, 28 + (k * 53 + 80) % 200, 28 + (k * 151 + 160) % 200)


def write_index_frames(directory: Path, count: int, *, ext: str = "png", size: str = "64x48", start: int = 0) -> Path:
    """Write solid frames ``start..start+count`` coloured by :func:`index_colour` with LOCAL names."""
    directory.mkdir(parents=True, exist_ok=True)
    colour = [f"28+mod((N+{start})*{a}+{b},200)" for a, b in ((97, 0), (53, 80), (151, 160))]
    quality = ["-q:v", "2"] if ext == "jpg" else []
    pattern = str(directory).replace("%", "%%") + f"/frame_%06d.{ext}"
    subprocess.run(
        ["ffmpeg", "-hide_banner", "-nostdin", "-loglevel", "error",
         "-f", "lavfi", "-i", f"color=c=black:size={size}:rate=30,format=rgb24,"
         f"geq=r='{colour[0]}':g='{colour[1]}':b='{colour[2]}'",
         "-frames:v", str(count), *quality, "-start_number", "0", pattern],
        check=True, capture_output=True, timeout=60,
    )  # fmt: skip
    return directory
