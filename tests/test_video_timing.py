"""A <video> whose frame rate is not the render's shows the source frame on screen at each time.

Output frame k at composition time t shows the last source frame whose timestamp is not after
t (what a browser shows for currentTime = t, and what HyperFrames' renders show). Each source
here is a grey ramp, frame j at level 3 j, so a decoded pixel says which frame is shown; the
sources differ in rate and container: 24 fps MP4, 25 fps Matroska (millisecond timestamps) and
24 fps MPEG-TS that starts at 1.4 s. ffmpeg's default nearest-slot resampling showed the 24 fps
frames up to half a frame early (output frame 1 showed source frame 1, not 0).
"""

from __future__ import annotations

import math
import subprocess
from fractions import Fraction
from pathlib import Path

import pytest
from conftest import run_renderd

pytestmark = pytest.mark.browser

SIZE, FPS, FRAMES = 64, 30, 30
# name -> (source rate, container extension, extra ffmpeg output options)
SOURCES: dict[str, tuple[int, str, list[str]]] = {
    "mp4-24": (24, "mp4", []),
    "mkv-25": (25, "mkv", []),
    "ts-24": (24, "ts", ["-output_ts_offset", "1.4"]),
}

PAGE = """<!doctype html>
<html><head><style>
  html, body {{ margin: 0; width: {w}px; height: {h}px; overflow: hidden; background: #000; }}
  video {{ position: absolute; top: 0; width: {s}px; height: {s}px; }}
</style></head><body>
  <div id="root" data-composition-id="main" data-start="0" data-duration="1"
       data-width="{w}" data-height="{h}" data-fps="{fps}">
{videos}
  </div>
</body></html>
"""


def make_ramp(path: Path, rate: int, extra: list[str]) -> None:
    subprocess.run(
        ["ffmpeg", "-hide_banner", "-nostdin", "-loglevel", "error", "-y",
         "-f", "lavfi", "-i", f"color=c=black:size={SIZE}x{SIZE}:rate={rate},format=gray,geq=lum='N*3'",
         "-frames:v", str(2 * rate), "-c:v", "libx264", "-crf", "0", "-pix_fmt", "yuv444p", "-g", "12",
         *extra, str(path)],
        check=True, timeout=120,
    )  # fmt: skip


@pytest.fixture(scope="module")
def shown(tmp_path_factory: pytest.TempPathFactory) -> dict[str, list[int]]:
    """Which source frame each video shows in each output frame."""
    root = tmp_path_factory.mktemp("timing")
    tags = []
    for k, (name, (rate, ext, extra)) in enumerate(SOURCES.items()):
        make_ramp(root / f"{name}.{ext}", rate, extra)
        tags.append(
            f'    <video id="v{k}" src="{name}.{ext}" style="left: {SIZE * k}px" data-start="0" '
            f'data-duration="1" data-track-index="{k}" muted playsinline></video>'
        )
    w = SIZE * len(SOURCES)
    (root / "index.html").write_text(PAGE.format(w=w, h=SIZE, s=SIZE, fps=FPS, videos="\n".join(tags)))
    out = root / "out.mkv"
    # Three chunks on two workers: chunk starts (frames 10 and 20) fall between source frames.
    r = run_renderd("render", root, "-o", out, "--format", "png", "--workers", "2", "--chunks", "3")
    assert r.returncode == 0, r.stderr
    raw = subprocess.run(
        ["ffmpeg", "-v", "error", "-i", str(out), "-f", "rawvideo", "-pix_fmt", "gray", "-"],
        check=True, capture_output=True, timeout=120,
    ).stdout  # fmt: skip
    frames = [raw[i : i + w * SIZE] for i in range(0, len(raw), w * SIZE)]
    assert len(frames) == FRAMES
    return {
        name: [round(f[(SIZE // 2) * w + SIZE * k + SIZE // 2] / 3) for f in frames] for k, name in enumerate(SOURCES)
    }


@pytest.mark.parametrize("name", list(SOURCES))
def test_each_output_frame_shows_the_source_frame_on_screen_then(shown: dict[str, list[int]], name: str) -> None:
    rate = SOURCES[name][0]
    expected = [math.floor(Fraction(k, FPS) * rate) for k in range(FRAMES)]
    assert shown[name] == expected
