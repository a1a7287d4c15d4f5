"""Load a composition from disk and settle its metadata (size, fps, duration, frame count).

Metadata comes from three places, strongest first: the user's overrides (CLI flags), what the
page says about itself once loaded (``window.__renderd`` hook, or the HyperFrames root's data
attributes and registered timeline), and finally the end of its CSS/Web animations. The page
side is read by the engine (``renderd.engine.page``); this module only validates and merges.
"""

from __future__ import annotations

import logging
import math
import re
from dataclasses import dataclass, field
from fractions import Fraction
from pathlib import Path
from typing import Any

from renderd.errors import CompositionError, FrameRangeError
from renderd.frames import Fps, total_frames_for

MAX_DIMENSION = 8192
MAX_DURATION_S = 6 * 3600
DEFAULT_FPS = Fps(30)
# Scanned to decide whether the page needs a GL context (SwiftShader) or can run with
# --disable-gpu, which captures plain DOM several times faster.
_GL_PATTERN = re.compile(rb"webgl|WebGLRenderer|experimental-webgl|THREE\.|pixi|regl", re.IGNORECASE)
_SCANNED_SUFFIXES = {".html", ".htm", ".js", ".mjs"}
_SCAN_LIMIT = 8 << 20
# Where a duration can come from, strongest first: the root's data-duration (or the hook's), the
# timeline (for HyperFrames projects the runtime's own duration), the end of the last
# sub-composition, the end of the CSS/Web animations.
_DURATION_SOURCES = ("duration", "timelineDuration", "subCompositionsEnd", "animationsEnd")

log = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True)
class Composition:
    """A composition on disk: its root directory and entry HTML file."""

    root: Path
    entry: Path

    @property
    def entry_relative(self) -> str:
        """Return the entry file's path relative to the root, with forward slashes."""
        return self.entry.relative_to(self.root).as_posix()

    def uses_webgl(self) -> bool:
        """Guess whether the composition draws with WebGL (needs a GL-capable browser)."""
        budget = _SCAN_LIMIT
        for path in sorted(self.root.rglob("*")):
            if path.suffix.lower() not in _SCANNED_SUFFIXES or not path.is_file():
                continue
            try:
                data = path.read_bytes()[:budget]
            except OSError:
                continue
            budget -= len(data)
            if _GL_PATTERN.search(data):
                return True
            if budget <= 0:
                break
        return False


def load_composition(path: str | Path) -> Composition:
    """Resolve ``path`` (a directory holding index.html, or an .html file) to a Composition."""
    p = Path(path).expanduser()
    if not p.exists():
        raise CompositionError(f"composition {str(p)!r} does not exist", path=str(p))
    p = p.resolve()
    if p.is_dir():
        entry = p / "index.html"
        if not entry.is_file():
            raise CompositionError(f"composition directory {str(p)!r} has no index.html", path=str(p))
        return Composition(p, entry)
    if p.suffix.lower() not in (".html", ".htm"):
        raise CompositionError(f"composition {str(p)!r} is not a directory or an .html file", path=str(p))
    return Composition(p.parent, p)


@dataclass(frozen=True, slots=True)
class Overrides:
    """Metadata given by the user; None means "take it from the composition"."""

    width: int | None = None
    height: int | None = None
    fps: Fps | None = None
    duration: Fraction | None = None


@dataclass(frozen=True, slots=True)
class CompositionInfo:
    """Validated metadata of a loaded composition."""

    kind: str
    width: int
    height: int
    fps: Fps
    duration: Fraction
    total_frames: int
    composition_id: str | None = None
    notes: tuple[str, ...] = field(default=())

    def to_dict(self) -> dict[str, Any]:
        """Return a JSON-friendly dict."""
        return {
            "kind": self.kind,
            "width": self.width,
            "height": self.height,
            "fps": str(self.fps),
            "duration": float(self.duration),
            "total_frames": self.total_frames,
            "composition_id": self.composition_id,
        }


def resolve_info(comp: Composition, described: dict[str, Any], overrides: Overrides) -> CompositionInfo:
    """Merge what the page described with the user's overrides and validate the result."""
    where = comp.entry_relative
    kind = str(described.get("kind") or "clock")
    duration_given = overrides.duration is not None or any(described.get(k) not in (None, 0) for k in _DURATION_SOURCES)
    missing = [
        name
        for name, given in (
            ("width", overrides.width is not None or described.get("width") is not None),
            ("height", overrides.height is not None or described.get("height") is not None),
            ("duration", duration_given),
        )
        if not given
    ]
    if missing:
        raise CompositionError(
            f"{where}: no {', '.join(missing)} found (set data-{'/data-'.join(missing)} on the root element "
            f"or in the window.__renderd hook, or pass {' '.join('--' + m for m in missing)})",
            path=where,
        )
    width = overrides.width if overrides.width is not None else _dimension(described.get("width"), "width", where)
    height = overrides.height if overrides.height is not None else _dimension(described.get("height"), "height", where)
    for name, v in (("width", width), ("height", height)):
        _check_dimension(name, v, where)
    _warn_if_resized(where, described, width, height)
    fps = overrides.fps or _fps(described.get("fps"), where)
    duration = overrides.duration if overrides.duration is not None else _duration(described, where)
    if duration <= 0 or duration > MAX_DURATION_S:
        raise CompositionError(
            f"{where}: duration {float(duration):g} s is out of range (0, {MAX_DURATION_S}]", path=where
        )
    try:
        total = total_frames_for(duration, fps)
    except FrameRangeError as exc:
        raise CompositionError(f"{where}: {exc}", path=where) from None
    return CompositionInfo(kind, width, height, fps, duration, total, described.get("compositionId"))


def _warn_if_resized(where: str, described: dict[str, Any], width: int, height: int) -> None:
    """Say once what a --width/--height other than the composition's own size does (it does not scale)."""
    try:
        own = (int(float(described["width"])), int(float(described["height"])))
    except (KeyError, TypeError, ValueError):
        return
    if own != (width, height):
        log.warning(
            "%s: the composition is %dx%d; at %dx%d its page is laid out in a %dx%d viewport, not scaled "
            "(to draw it larger, keep its size and give --scale, e.g. --scale %g)",
            where, *own, width, height, width, height, round(width / own[0], 3) if own[0] else 1,
        )  # fmt: skip


def _dimension(value: Any, name: str, where: str) -> int:
    if value is None:
        raise CompositionError(
            f"{where}: no {name} found (set data-{name} on the root element, the hook's {name}, or pass --{name})",
            path=where,
        )
    try:
        f = float(value)
    except (TypeError, ValueError):
        raise CompositionError(f"{where}: {name} {value!r} is not a number", path=where) from None
    if not math.isfinite(f) or f != int(f):
        raise CompositionError(f"{where}: {name} {value!r} is not a whole number of pixels", path=where)
    return int(f)


def _check_dimension(name: str, v: int, where: str) -> None:
    if v <= 0 or v > MAX_DIMENSION:
        raise CompositionError(f"{where}: {name} {v} is out of range (1..{MAX_DIMENSION} px)", path=where)
    if v % 2:
        # H.264 in yuv420p needs even dimensions; padding silently would change the picture.
        raise CompositionError(f"{where}: {name} {v} is odd; H.264 (yuv420p) needs even sizes", path=where)


def _fps(value: Any, where: str) -> Fps:
    if value in (None, ""):
        return DEFAULT_FPS
    try:
        return Fps.parse(value)
    except FrameRangeError as exc:
        raise CompositionError(f"{where}: {exc}", path=where) from None


def _duration(described: dict[str, Any], where: str) -> Fraction:
    for key in _DURATION_SOURCES:
        v = described.get(key)
        if v is None:
            continue
        try:
            d = Fraction(str(v))
        except (ValueError, ZeroDivisionError):
            raise CompositionError(f"{where}: duration {v!r} is not a number", path=where) from None
        if d != 0 or key == "duration":
            return d
    raise CompositionError(
        f"{where}: no duration found (no data-duration, hook duration, registered timeline or "
        "CSS/Web animation); pass --duration SECONDS",
        path=where,
    )
