"""The chunk assignment the coordinator sends to an agent: one JSON object on the agent's stdin.

Validated here, at the agent's edge, so that the agent and engine can trust it.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field, fields
from fractions import Fraction
from typing import Any

from renderd import PROTOCOL_VERSION
from renderd.errors import AssignmentError as AssignmentError
from renderd.frames import Fps, FrameRange
from renderd.settings import RenderSettings

MAX_ASSIGNMENT_BYTES = 1 << 20


@dataclass(frozen=True, slots=True)
class Assignment:
    """One chunk of one job for one agent: absolute frames ``[start, end)``."""

    job_id: str
    chunk_index: int
    composition: str  # path on the agent's host: a directory with index.html, or an .html file
    start: int
    end: int
    total_frames: int  # as planned by the coordinator; the agent checks the page agrees
    fps: str  # exact, e.g. "30000/1001"
    width: int
    height: int
    duration: str  # exact seconds, e.g. "10" or "1001/100"
    output: str  # chunk video path on the agent's host
    work_dir: str  # where frames go (removed after encode unless keep_frames)
    protocol: int = PROTOCOL_VERSION
    # The job's render settings; ``settings.chunks`` splits this chunk inside the agent (the
    # coordinator already split the job, so it sends auto).
    settings: RenderSettings = field(default_factory=RenderSettings)

    def to_json(self) -> str:
        """Return the assignment as one line of JSON."""
        data = {f.name: getattr(self, f.name) for f in fields(self)}
        data["settings"] = self.settings.to_dict()
        return json.dumps(data, separators=(",", ":"))

    @property
    def frame_range(self) -> FrameRange:
        """Return the chunk's absolute frame range."""
        return FrameRange(self.start, self.end)

    @classmethod
    def from_json(cls, text: str | bytes) -> Assignment:
        """Parse and validate an assignment; raise AssignmentError naming the bad field."""
        if len(text) > MAX_ASSIGNMENT_BYTES:
            raise AssignmentError(f"assignment is larger than {MAX_ASSIGNMENT_BYTES} bytes")
        try:
            data = json.loads(text)
        except (ValueError, UnicodeDecodeError) as exc:
            raise AssignmentError(f"assignment is not valid JSON: {exc}") from None
        if not isinstance(data, dict):
            raise AssignmentError("assignment must be a JSON object")
        return cls.from_dict(data)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Assignment:
        """Validate a decoded assignment."""
        # First, so that an assignment of another version is named as such, not as unknown fields.
        protocol = data.get("protocol", PROTOCOL_VERSION)
        if protocol != PROTOCOL_VERSION:
            raise AssignmentError(
                f"assignment uses protocol {protocol!r}, this agent speaks {PROTOCOL_VERSION}; "
                "run `renderd hosts install` to match versions"
            )
        known = {f.name: f for f in fields(cls)}
        unknown = sorted(set(data) - set(known))
        if unknown:
            raise AssignmentError(f"assignment has unknown field(s): {', '.join(unknown)}")
        missing = [n for n in _REQUIRED if n not in data]
        if missing:
            raise AssignmentError(f"assignment is missing field(s): {', '.join(missing)}")
        plain = {name: value for name, value in data.items() if name != "settings"}
        for name, value in plain.items():
            _check_type(name, value, _TYPES[name])
        given = data.get("settings", {})
        if not isinstance(given, dict):
            raise AssignmentError("assignment field 'settings' must be an object")
        a = cls(**plain, settings=RenderSettings.from_dict(given))
        Fps.parse(a.fps)
        _fraction("duration", a.duration)
        FrameRange(a.start, a.end).check_within(a.total_frames)
        for name in ("width", "height", "total_frames"):
            if getattr(a, name) <= 0:
                raise AssignmentError(f"assignment field {name!r} must be positive")
        return a


_REQUIRED = ("job_id chunk_index composition start end total_frames fps width height duration output work_dir").split()
_TYPES: dict[str, tuple[type, ...]] = {
    "job_id": (str,),
    "chunk_index": (int,),
    "composition": (str,),
    "start": (int,),
    "end": (int,),
    "total_frames": (int,),
    "fps": (str,),
    "width": (int,),
    "height": (int,),
    "duration": (str,),
    "output": (str,),
    "work_dir": (str,),
    "protocol": (int,),
}


def _check_type(name: str, value: Any, types: tuple[type, ...]) -> None:
    if isinstance(value, bool) and bool not in types:
        raise AssignmentError(f"assignment field {name!r} has the wrong type (bool)")
    if not isinstance(value, types):
        want = " or ".join("null" if t is type(None) else t.__name__ for t in types)
        raise AssignmentError(f"assignment field {name!r} must be {want}, got {type(value).__name__}")


def _fraction(name: str, text: str) -> Fraction:
    try:
        return Fraction(text)
    except (ValueError, ZeroDivisionError):
        raise AssignmentError(f"assignment field {name!r} is not an exact number: {text!r}") from None
