"""<video> frames keep the colours the browser shows: the source's YUV matrix and range are honoured.

Each video here is one flat colour, encoded with a given matrix and range and tagged (or not).
Chromium decodes a tagged stream with its tag and an untagged one as BT.709 from 720 lines up,
BT.601 below; so every video must come out as the colour it was encoded from. ffmpeg's default
reads everything as BT.601, which put the BT.709 videos' green ~15 levels low.
"""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest
from conftest import run_renderd
from videotools import RGB, decode_frames, pixel

from renderd.hyperframes.media import yuv_matrix

pytestmark = pytest.mark.browser

COLOUR: RGB = (106, 64, 192)
W, H = 400, 100
# name -> (size, swscale matrix and range used to encode, ffmpeg tags on the stream)
VIDEOS: dict[str, tuple[str, str, str, list[str]]] = {
    "tagged709": ("1280x720", "bt709", "tv", ["-colorspace", "bt709", "-color_primaries", "bt709"]),
    "untagged720": ("1280x720", "bt709", "tv", []),
    "untagged360": ("640x360", "bt601", "tv", []),
    "full709": ("1280x720", "bt709", "pc", ["-colorspace", "bt709", "-color_range", "pc"]),
}  # fmt: skip

PAGE = """<!doctype html>
<html><head><style>
  html, body {{ margin: 0; width: {w}px; height: {h}px; overflow: hidden; background: #000; }}
  video {{ position: absolute; top: 0; width: 100px; height: 100px; object-fit: fill; }}
</style></head><body>
  <div id="root" data-composition-id="main" data-start="0" data-duration="0.2"
       data-width="{w}" data-height="{h}" data-fps="30">
{videos}
  </div>
</body></html>
"""


def make_video(path: Path, size: str, matrix: str, rng: str, tags: list[str]) -> None:
    r, g, b = COLOUR
    subprocess.run(
        ["ffmpeg", "-hide_banner", "-nostdin", "-loglevel", "error", "-y",
         "-f", "lavfi", "-i", f"color=c=0x{r:02x}{g:02x}{b:02x}:size={size}:rate=30:duration=1",
         "-vf", f"scale=out_color_matrix={matrix}:out_range={rng}:flags=accurate_rnd,format=yuv420p",
         *tags, "-c:v", "libx264", "-crf", "1", "-pix_fmt", "yuv420p", str(path)],
        check=True, timeout=120,
    )  # fmt: skip


@pytest.fixture(scope="module")
def frame(tmp_path_factory: pytest.TempPathFactory) -> bytes:
    root = tmp_path_factory.mktemp("colour")
    tags = []
    for k, (name, (size, matrix, rng, extra)) in enumerate(VIDEOS.items()):
        make_video(root / f"{name}.mp4", size, matrix, rng, extra)
        tags.append(
            f'    <video id="{name}" src="{name}.mp4" style="left: {100 * k}px" data-start="0" '
            f'data-duration="0.2" data-track-index="{k}" muted playsinline></video>'
        )
    (root / "index.html").write_text(PAGE.format(w=W, h=H, videos="\n".join(tags)))
    out = tmp_path_factory.mktemp("colour-out") / "out.mp4"
    r = run_renderd("render", root, "-o", out, "--frame-format", "png", "--workers", "1")
    assert r.returncode == 0, r.stderr
    frames = decode_frames(out, W, H)
    assert len(frames) == 6
    return frames[3]


@pytest.mark.parametrize("k, name", list(enumerate(VIDEOS)))
def test_video_shows_the_colour_it_was_encoded_from(frame: bytes, k: int, name: str) -> None:
    got = pixel(frame, W, 100 * k + 50, 50)
    # JPEG frames and 4:2:0 chroma cost a level or two; the BT.601 misreading cost 15 in green.
    assert all(abs(a - b) <= 4 for a, b in zip(got, COLOUR, strict=True)), (name, got, COLOUR)


def test_untagged_matrix_follows_chromium_by_height() -> None:
    assert yuv_matrix(None, 718) == "bt601"
    assert yuv_matrix("unknown", 720) == "bt709"
    assert yuv_matrix("bt709", 360) == "bt709"
    assert yuv_matrix("smpte170m", 1080) == "smpte170m"
    assert yuv_matrix("bt2020nc", 2160) == "bt2020"
