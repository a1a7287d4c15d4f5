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


def grey_frames(path: Path, pixels: int) -> list[bytes]:
    """Decode every frame of ``path`` to 8-bit grey, ``pixels`` bytes each."""
    raw = subprocess.run(
        ["ffmpeg", "-v", "error", "-i", str(path), "-f", "rawvideo", "-pix_fmt", "gray", "-"],
        check=True, capture_output=True, timeout=120,
    ).stdout  # fmt: skip
    return [raw[i : i + pixels] for i in range(0, len(raw), pixels)]


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
    out = tmp_path_factory.mktemp("timing-out") / "out.mp4"
    # Three chunks on two workers: chunk starts (frames 10 and 20) fall between source frames.
    r = run_renderd("render", root, "-o", out, "--frame-format", "png", "--workers", "2", "--chunks", "3")
    assert r.returncode == 0, r.stderr
    frames = grey_frames(out, w * SIZE)
    assert len(frames) == FRAMES
    return {
        name: [round(f[(SIZE // 2) * w + SIZE * k + SIZE // 2] / 3) for f in frames] for k, name in enumerate(SOURCES)
    }


@pytest.mark.parametrize("name", list(SOURCES))
def test_each_output_frame_shows_the_source_frame_on_screen_then(shown: dict[str, list[int]], name: str) -> None:
    rate = SOURCES[name][0]
    expected = [math.floor(Fraction(k, FPS) * rate) for k in range(FRAMES)]
    assert shown[name] == expected


GL_PAGE = """<!doctype html>
<html><head><style>
  html, body {{ margin: 0; width: {s}px; height: {s}px; overflow: hidden; background: #000; }}
  #vid {{ position: absolute; width: 4px; height: 4px; opacity: 0; z-index: -1; }}
  #gl {{ position: absolute; left: 0; top: 0; width: {s}px; height: {s}px; }}
</style></head><body>
  <div id="root" data-composition-id="main" data-start="0" data-duration="1"
       data-width="{s}" data-height="{s}" data-fps="{fps}">
    <video id="vid" class="clip" src="ramp.mp4" data-start="0" data-duration="1" data-track-index="0"
           muted playsinline></video>
    <canvas id="gl" width="{s}" height="{s}"></canvas>
    <script>
      // HyperFrames' webgl-video-texture-render-compat, reduced: a WebGL canvas uploads the
      // <video> as a texture on every hf-seek and draws it full size.
      (function () {{
        const gl = document.getElementById("gl").getContext("webgl", {{ preserveDrawingBuffer: true }});
        const sh = (type, src) => {{
          const s = gl.createShader(type);
          gl.shaderSource(s, src);
          gl.compileShader(s);
          return s;
        }};
        const prog = gl.createProgram();
        gl.attachShader(prog, sh(gl.VERTEX_SHADER,
          "attribute vec2 p; varying vec2 uv; void main(){{ uv = vec2(p.x*0.5+0.5, 0.5-p.y*0.5); " +
          "gl_Position = vec4(p,0.0,1.0); }}"));
        gl.attachShader(prog, sh(gl.FRAGMENT_SHADER,
          "precision mediump float; varying vec2 uv; uniform sampler2D tex; " +
          "void main(){{ gl_FragColor = texture2D(tex, uv); }}"));
        gl.linkProgram(prog);
        gl.useProgram(prog);
        gl.bindBuffer(gl.ARRAY_BUFFER, gl.createBuffer());
        gl.bufferData(gl.ARRAY_BUFFER, new Float32Array([-1, -1, 3, -1, -1, 3]), gl.STATIC_DRAW);
        const loc = gl.getAttribLocation(prog, "p");
        gl.enableVertexAttribArray(loc);
        gl.vertexAttribPointer(loc, 2, gl.FLOAT, false, 0, 0);
        gl.bindTexture(gl.TEXTURE_2D, gl.createTexture());
        gl.texParameteri(gl.TEXTURE_2D, gl.TEXTURE_MIN_FILTER, gl.NEAREST);
        gl.texParameteri(gl.TEXTURE_2D, gl.TEXTURE_WRAP_S, gl.CLAMP_TO_EDGE);
        gl.texParameteri(gl.TEXTURE_2D, gl.TEXTURE_WRAP_T, gl.CLAMP_TO_EDGE);
        const video = document.getElementById("vid");
        const render = () => {{
          if (video.readyState >= 2) gl.texImage2D(gl.TEXTURE_2D, 0, gl.RGBA, gl.RGBA, gl.UNSIGNED_BYTE, video);
          gl.clearColor(0, 0, 0, 1);
          gl.clear(gl.COLOR_BUFFER_BIT);
          gl.drawArrays(gl.TRIANGLES, 0, 3);
        }};
        window.addEventListener("hf-seek", render);
        render();
      }})();
    </script>
  </div>
</body></html>
"""


def test_webgl_video_texture_shows_the_frame_of_the_seek(tmp_path: Path) -> None:
    """The texture is re-uploaded after the frame image is in place (HyperFrames' __hfReseekGpu).

    Uploaded only during the runtime's seek, it held the previous output frame's picture.
    """
    comp = tmp_path / "comp"
    comp.mkdir()
    make_ramp(comp / "ramp.mp4", FPS, [])
    (comp / "index.html").write_text(GL_PAGE.format(s=SIZE, fps=FPS))
    out = tmp_path / "out.mp4"
    r = run_renderd("render", comp, "-o", out, "--frame-format", "png", "--workers", "1")
    assert r.returncode == 0, r.stderr
    frames = grey_frames(out, SIZE * SIZE)
    assert len(frames) == FRAMES
    centre = (SIZE // 2) * SIZE + SIZE // 2
    assert [round(f[centre] / 3) for f in frames] == list(range(FRAMES))
