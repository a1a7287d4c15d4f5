"""`renderd still`: one frame of a composition as a PNG or JPEG image, the pixels a render makes.

A still has no capture path of its own. It is a png-sequence render of the one-frame range
``[N, N+1)`` by renderd.render.render_local (same engine, seek, capture and PNG encode as every
render), whose only file ``frame_%06d.png`` is then moved to the output (.png) or converted to
JPEG by ffmpeg (.jpg, .jpeg). So frame N of a still and frame N of any render with the same
settings are the same pixels by construction, and `--transparent` keeps alpha in a PNG exactly
as a png-sequence does.

The frame is given as an absolute index N, or as a time T in seconds: the frame on screen at T,
``N = floor(T * fps)`` (frame N shows ``[N/fps, (N+1)/fps)``). That fps and the frame count N
is checked against are the composition's as the engine probes it (after the --fps and --duration
overrides), so the engine is probed first, in a renderd.engine.warm.WarmEngines, and the render
then takes that warm engine: the browser the probe started captures the frame, no second one
starts. Everything is written in a private temp directory next to the output and renamed onto
it only when complete (renderd.outputs.install_output).
"""

from __future__ import annotations

import asyncio
import logging
import math
import shutil
import tempfile
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, replace
from fractions import Fraction
from pathlib import Path
from typing import Any

from renderd.composition import CompositionInfo, Overrides, load_composition
from renderd.encode import sha256_file_async
from renderd.engine import EngineOptions
from renderd.engine.warm import WarmEngines
from renderd.errors import FrameRangeError, OutputError, SettingsError
from renderd.events import ChunkDone, Done, Event
from renderd.frames import Fps, frame_file_name
from renderd.outdir import make_output_dir
from renderd.outputs import check_render_paths, install_output
from renderd.procs import run
from renderd.render import RenderRequest, render_local
from renderd.settings import DEFAULTS, RenderSettings

log = logging.getLogger(__name__)

# What a still is written as, by the output's extension.
IMAGE_FORMATS = {".png": "png", ".jpg": "jpeg", ".jpeg": "jpeg"}
JPEG_QSCALE = 2  # ffmpeg -q:v for mjpeg: 2 is the best quality worth having (1 only grows the file)
CONVERT_TIMEOUT_S = 60.0


@dataclass(frozen=True, slots=True)
class StillResult:
    """What a finished still produced."""

    output: Path
    frame: int
    width: int
    height: int
    info: CompositionInfo
    sha256: str


def image_format(output: Path, *, transparent: bool = False) -> str:
    """Return "png" or "jpeg" by the extension of ``output``; SettingsError for anything else.

    ``transparent`` (alpha kept) needs a PNG: JPEG has no alpha.
    """
    suffix = output.suffix.lower()
    fmt = IMAGE_FORMATS.get(suffix)
    if fmt is None:
        got = f"ends in {suffix}" if suffix else "has no extension"
        raise SettingsError(f"output {output} {got}: a still is written as .png, .jpg or .jpeg")
    if transparent and fmt == "jpeg":
        raise SettingsError(f"output {output}: --transparent needs a .png output (JPEG has no alpha)")
    return fmt


def frame_at(seconds: Fraction, fps: Fps) -> int:
    """Return the absolute frame on screen at ``seconds``: ``floor(seconds * fps)``, exact."""
    if seconds < 0:
        raise FrameRangeError(f"time {seconds} s is negative")
    return math.floor(seconds * fps.fraction)


def check_frame(frame: int, info: CompositionInfo, *, seconds: Fraction | None = None) -> None:
    """Raise FrameRangeError unless ``frame`` is a frame of the composition, naming the valid range."""
    if 0 <= frame < info.total_frames:
        return
    which = f"frame {frame}" if seconds is None else f"time {_seconds_text(seconds)} s is frame {frame}, which"
    raise FrameRangeError(
        f"{which} is not in the composition: frames 0 to {info.total_frames - 1} "
        f"({info.total_frames} frames, {_seconds_text(info.duration)} s at {info.fps} fps)"
    )


def _seconds_text(value: Fraction) -> str:
    return f"{float(value):g}"


async def render_still(
    composition: Path,
    output: Path,
    *,
    frame: int | None = None,
    seconds: Fraction | None = None,
    settings: RenderSettings = DEFAULTS,
    overrides: Overrides | None = None,
    emit: Callable[[Event], None] | None = None,
    faults: Mapping[str, Any] | None = None,
) -> StillResult:
    """Render one frame of ``composition`` to the image ``output`` (.png, .jpg or .jpeg).

    Give exactly one of ``frame`` (absolute index) or ``seconds`` (the frame on screen then,
    ``floor(seconds * fps)`` at the probed fps). From ``settings`` the capture settings count
    (transparent, scale, timeouts, chromium, gl, max asset size); the delivery is fixed: one PNG.
    ``emit`` gets the render's started/progress/retry events and a final ``done`` naming
    ``output`` (not the render's temp files). The output appears only when complete.
    """
    if (frame is None) == (seconds is None):
        raise ValueError("give either frame or seconds")
    started_at = time.monotonic()
    fmt = image_format(output, transparent=settings.transparent)
    comp = load_composition(composition)
    # As render_local: only the directory is resolved, so the rename replaces a symlink at the
    # output path instead of writing where it points.
    given = output.expanduser()
    out = given.parent.resolve() / given.name
    await asyncio.to_thread(check_render_paths, comp.root, out, None)
    await asyncio.to_thread(make_output_dir, out)
    if out.is_dir():
        raise OutputError(f"output {out} is a directory; give an image file name such as {out / 'still.png'}")
    one_png = RenderSettings.from_dict(
        {"format": "png-sequence", "frame_format": "auto", "chunks": 1, "workers": 1, "keep_frames": False},
        base=settings,
    )
    send = emit or (lambda event: None)

    def forward(event: Event) -> None:
        # Chunk and done events name the render's temp files, gone when the still is installed.
        if not isinstance(event, ChunkDone | Done):
            send(event)

    tmp = Path(tempfile.mkdtemp(prefix=".renderd-still-", dir=out.parent))
    try:
        req = RenderRequest.from_settings(
            one_png,
            faults=faults,
            composition=composition,
            output=tmp / "frames",
            overrides=overrides or Overrides(),
            audio=False,
        )
        warm = WarmEngines()
        try:
            # The key render_local acquires with: the render below reuses this probed engine.
            options = EngineOptions(capture=req.capture, chromium=req.chromium, gl=req.gl, workers=req.workers)
            _, info = await warm.acquire((None, comp.entry, options, req.overrides), comp, options, req.overrides)
            n = frame if frame is not None else frame_at(seconds or Fraction(0), info.fps)
            check_frame(n, info, seconds=seconds)
            result = await render_local(replace(req, frames=f"{n}:{n + 1}"), forward, warm=warm)
            if not warm.reused:
                log.debug("the still's render probed the composition again: its engine key differs from the probe's")
        finally:
            await asyncio.shield(warm.close())
        src = result.output / frame_file_name(n, "png")
        if fmt == "jpeg":
            jpeg = tmp / "still.jpg"
            await run(
                ["ffmpeg", "-hide_banner", "-nostdin", "-loglevel", "error", "-y", "-i", str(src),
                 "-frames:v", "1", "-q:v", str(JPEG_QSCALE), "-update", "1", str(jpeg)],
                timeout=CONVERT_TIMEOUT_S,
            )  # fmt: skip
            src = jpeg
        digest = await sha256_file_async(src)
        await asyncio.to_thread(install_output, src, out)
    finally:
        await asyncio.shield(asyncio.to_thread(shutil.rmtree, tmp, True))
    made = result.made
    send(
        Done(
            output=str(out),
            frames=1,
            width=made.width,
            height=made.height,
            fps=str(info.fps),
            duration_s=made.duration_s,
            elapsed_s=round(time.monotonic() - started_at, 3),
            sha256=digest,
        )
    )
    return StillResult(out, n, made.width, made.height, info, digest)
