"""`renderd agent --describe`: load a composition once on a render host and say what it is.

The coordinator never runs a browser (it holds the job store and the fleet's SSH identities);
it asks an agent instead, through the same transport as chunks. The request is one JSON object
on stdin (``DescribeRequest``), the answer one JSON line on stdout: a ``described`` event with
the metadata the job is planned with and the audio plan its assembly mixes (paths relative to
the composition root), or the agent's usual ``error`` event carrying the page's own message.

The request/result shapes are plain JSON and importable without the engine; ``describe()``
itself imports the engine lazily, so the coordinator can use this module's types.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import tempfile
from dataclasses import asdict, dataclass, field, fields
from fractions import Fraction
from pathlib import Path
from typing import Any

from renderd import PROTOCOL_VERSION, __version__
from renderd.composition import Composition, Overrides, load_composition
from renderd.errors import DescribeRequestError
from renderd.frames import Fps, FrameRange
from renderd.settings import RenderSettings

MAX_REQUEST_BYTES = 1 << 16
# With video, the probe's span: frames extracted for it and captured (about 2 s at 30 fps).
VIDEO_PROBE_FRAMES = 60

log = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True)
class DescribeRequest:
    """What to describe: a composition path on the agent's host and the overrides it is planned with."""

    composition: str
    width: int | None = None
    height: int | None = None
    fps: str | None = None  # exact, e.g. "30000/1001"
    duration: str | None = None  # exact seconds
    # The job's render settings (gl, chromium, ready timeout matter here), checked as chunks' are.
    settings: RenderSettings = field(default_factory=RenderSettings)
    # Run the capture probe too when the composition has at least this many frames (None: never):
    # the coordinator sizes the job's chunks from what it measures.
    calibrate_min_frames: int | None = None
    protocol: int = PROTOCOL_VERSION

    def to_json(self) -> str:
        """Return the request as one line of JSON."""
        data = asdict(self)
        data["settings"] = self.settings.to_dict()
        if self.calibrate_min_frames is None:
            # Unmeasured describes stay readable by agents from before the field (same protocol).
            del data["calibrate_min_frames"]
        return json.dumps(data, separators=(",", ":"))

    @classmethod
    def from_json(cls, text: str | bytes) -> DescribeRequest:
        """Parse and validate a request; raise DescribeRequestError naming the bad field."""
        if len(text) > MAX_REQUEST_BYTES:
            raise DescribeRequestError(f"describe request is larger than {MAX_REQUEST_BYTES} bytes")
        try:
            data = json.loads(text)
        except (ValueError, UnicodeDecodeError) as exc:
            raise DescribeRequestError(f"describe request is not valid JSON: {exc}") from None
        if not isinstance(data, dict):
            raise DescribeRequestError("describe request must be a JSON object")
        known = {f.name for f in fields(cls)}
        unknown = sorted(set(data) - known)
        if unknown:
            raise DescribeRequestError(f"describe request has unknown field(s): {', '.join(unknown)}")
        if not isinstance(data.get("composition"), str):
            raise DescribeRequestError("describe request: composition must be a string")
        for name, types in _TYPES.items():
            value = data.get(name)
            if value is not None and (isinstance(value, bool) or not isinstance(value, types)):
                raise DescribeRequestError(f"describe request: {name} has the wrong type")
        given = data.pop("settings", {})
        if not isinstance(given, dict):
            raise DescribeRequestError("describe request: settings must be an object")
        req = cls(**data, settings=RenderSettings.from_dict(given))
        if req.protocol != PROTOCOL_VERSION:
            raise DescribeRequestError(
                f"describe request uses protocol {req.protocol}, this agent speaks {PROTOCOL_VERSION}; "
                "run `renderd hosts install` to match versions"
            )
        req.overrides()
        return req

    def overrides(self) -> Overrides:
        """Return the request's overrides; raise DescribeRequestError for a bad fps or duration."""
        try:
            fps = Fps.parse(self.fps) if self.fps else None
            duration = Fraction(self.duration) if self.duration else None
        except (ValueError, ZeroDivisionError):
            raise DescribeRequestError(
                f"describe request: bad fps {self.fps!r} or duration {self.duration!r}"
            ) from None
        return Overrides(width=self.width, height=self.height, fps=fps, duration=duration)


_TYPES: dict[str, tuple[type, ...]] = {
    "width": (int,),
    "height": (int,),
    "fps": (str,),
    "duration": (str,),
    "calibrate_min_frames": (int,),
    "protocol": (int,),
}


async def describe(req: DescribeRequest) -> dict[str, Any]:
    """Load the composition once in a browser and return the ``described`` event (a JSON object).

    Raises CompositionError (with the page's own message) when the page does not load, is not
    ready in time, or its metadata or media are invalid.
    """
    # The engine (and playwright) only here: importing this module must stay cheap and browserless.
    from playwright.async_api import async_playwright

    from renderd.engine import read_info, read_media
    from renderd.engine.browser import BrowserOptions, launch_browser
    from renderd.engine.calibrate import cpu_count
    from renderd.engine.page import CompositionPage
    from renderd.hyperframes.audio import plan_to_json
    from renderd.hyperframes.media import MediaPlan, project_has_media

    comp = await asyncio.to_thread(load_composition, req.composition)
    chosen = req.settings
    gl = chosen.gl == "on" or (chosen.gl == "auto" and await asyncio.to_thread(comp.uses_webgl))
    media = MediaPlan()
    keeps_all_history = False

    async def on_ready(page: CompositionPage, _info: object) -> None:
        nonlocal media, keeps_all_history
        keeps_all_history = page.keeps_all_history
        if project_has_media(page.project):
            media = await read_media(page, comp)

    async with async_playwright() as pw:
        browser = await launch_browser(pw, BrowserOptions(executable=chosen.chromium, gl=gl))
        try:
            info, _ = await read_info(browser, comp, req.overrides(), chosen.ready_timeout, on_ready=on_ready)
        finally:
            with contextlib.suppress(Exception):
                await asyncio.wait_for(browser.close(), 10)
    cost = None
    if req.calibrate_min_frames is not None and info.total_frames >= req.calibrate_min_frames:
        cost = await measure_cost(comp, req)
    return {
        "event": "described",
        "version": __version__,
        "kind": info.kind,
        "width": info.width,
        "height": info.height,
        "fps": str(info.fps),
        "duration": str(info.duration),
        "total_frames": info.total_frames,
        "composition_id": info.composition_id,
        "notes": list(info.notes),
        "gl": gl,
        "keeps_all_history": keeps_all_history,
        "videos": len(media.videos),
        "audio": plan_to_json(media.audio, comp.root),
        # One worker's capture cost (renderd.capture_cost.CaptureCost), or null: not asked for,
        # too short, or the probe failed. The cores it was measured with: the planner's default
        # for hosts whose own are not known yet.
        "capture": cost,
        "cpus": cpu_count(),
    }


async def measure_cost(comp: Composition, req: DescribeRequest) -> dict[str, Any] | None:
    """Load ``comp`` for capture as an agent would and return what one worker's frames cost; None if the probe fails.

    The span probed is the whole composition, except with video, whose frames are extracted for
    what is probed: then a short stretch a quarter in.
    """
    from renderd.engine import Engine, EngineOptions
    from renderd.render import capture_settings

    s = req.settings
    options = EngineOptions(capture=capture_settings(s), chromium=s.chromium, browser=s.browser, gl=s.gl, workers=None)
    try:
        async with Engine(comp, options) as engine:
            info = await engine.probe(req.overrides())
            total = info.total_frames
            span = FrameRange(0, total)
            if engine.media.videos and not engine.keeps_all_history:
                start = min(total // 4, max(0, total - VIDEO_PROBE_FRAMES))
                span = FrameRange(start, min(total, start + VIDEO_PROBE_FRAMES))
            with tempfile.TemporaryDirectory(prefix="renderd-describe-media-") as media:
                await engine.prepare_media(span, Path(media))
                calibration = await engine.calibrate(span)
    except Exception as exc:  # noqa: BLE001 - the job is then planned without it, as before
        log.warning("%s: capture probe failed (%s); the job is planned without it", comp.entry_relative, exc)
        return None
    log.info("%s: %s", comp.entry_relative, calibration.describe())
    return calibration.cost.to_dict()


def read_request(stream: Any) -> DescribeRequest:
    """Read one request from a binary stream (the agent's stdin)."""
    return DescribeRequest.from_json(stream.read(MAX_REQUEST_BYTES + 1))
