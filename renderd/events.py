"""Progress events of a render: what `--json` prints and what the agent streams to the coordinator.

Every event serialises to one JSON object with an ``"event"`` key naming its kind.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field
from typing import Any, ClassVar


@dataclass(frozen=True, slots=True)
class Event:
    """Base of all render events."""

    kind: ClassVar[str] = "event"

    def to_dict(self) -> dict[str, Any]:
        """Return the event as a JSON-friendly dict with its ``event`` name first."""
        return {"event": self.kind, **asdict(self)}

    def to_json(self) -> str:
        """Return the event as one line of JSON."""
        return json.dumps(self.to_dict(), separators=(",", ":"), sort_keys=False)


@dataclass(frozen=True, slots=True)
class Started(Event):
    """The composition is loaded and the frames to render are known."""

    kind: ClassVar[str] = "started"
    composition: str
    width: int
    height: int
    fps: str
    start: int
    end: int
    frames: int
    chunks: int
    workers: int
    gl: bool
    # How frames are captured: "beginframe" (chromium-headless-shell) or "screenshot" (Chromium).
    capture: str = "screenshot"


@dataclass(frozen=True, slots=True)
class Progress(Event):
    """Frames captured so far (sent at most a few times per second)."""

    kind: ClassVar[str] = "progress"
    frames_done: int
    frames: int
    fps: float
    eta_s: float | None
    workers: int
    retries: int
    chunks_done: int = 0
    frames_skipped: int = 0  # of frames_done: static frames written from the frame before's bytes


@dataclass(frozen=True, slots=True)
class Retry(Event):
    """Missing frames are being captured again."""

    kind: ClassVar[str] = "retry"
    attempt: int
    frames: int
    workers: int
    reason: str
    ranges: list[tuple[int, int]] = field(default_factory=list)


@dataclass(frozen=True, slots=True)
class ChunkDone(Event):
    """A chunk's frames are encoded into a verified video segment."""

    kind: ClassVar[str] = "chunk_done"
    index: int
    start: int
    end: int
    path: str
    frames: int
    sha256: str


@dataclass(frozen=True, slots=True)
class Done(Event):
    """The output file is complete and verified."""

    kind: ClassVar[str] = "done"
    output: str
    frames: int
    width: int
    height: int
    fps: str
    duration_s: float
    elapsed_s: float
    sha256: str
    frames_dir: str | None = None
    # Static frames (--no-skip-static): reused without a capture; captured anyway to compare (all
    # matched but the mismatches, after which the chunk's reused frames were captured again).
    frames_skipped: int = 0
    frames_verified: int = 0
    skip_mismatches: int = 0


@dataclass(frozen=True, slots=True)
class Error(Event):
    """The render failed (or was cancelled); nothing was left at the output path."""

    kind: ClassVar[str] = "error"
    message: str
    code: str = "error"
