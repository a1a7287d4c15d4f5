"""Show render events to a person (rich progress bar on a TTY, plain lines otherwise) or a script (JSON)."""

from __future__ import annotations

import sys
import time
from typing import TextIO

from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TaskID, TextColumn, TimeElapsedColumn

from renderd.cli.timefmt import eta_text
from renderd.events import ChunkDone, Done, Event, Retry, Started
from renderd.events import Progress as ProgressEvent

PLAIN_INTERVAL_S = 2.0


# How the Started line names the capture path.
_CAPTURE_NAMES = {"beginframe": "BeginFrame capture (headless shell)", "screenshot": "screenshot capture (Chromium)"}


class JsonDisplay:
    """Print every event as one JSON line on stdout."""

    def __init__(self, out: TextIO | None = None) -> None:
        self._out = out or sys.stdout

    def __call__(self, event: Event) -> None:
        self._out.write(event.to_json() + "\n")
        self._out.flush()

    def close(self) -> None:
        """Nothing to tear down."""


class PlainDisplay:
    """Print a progress line every few seconds (for logs and pipes)."""

    def __init__(self, out: TextIO | None = None) -> None:
        self._out = out or sys.stderr
        self._last = 0.0

    def _print(self, text: str) -> None:
        self._out.write(f"renderd: {text}\n")
        self._out.flush()

    def __call__(self, event: Event) -> None:
        if isinstance(event, Started):
            self._print(
                f"rendering {event.composition}: frames {event.start}-{event.end - 1} ({event.frames}) at "
                f"{event.width}x{event.height} {event.fps} fps, {event.chunks} chunk(s), "
                f"{event.workers} worker(s), {_CAPTURE_NAMES.get(event.capture, event.capture)}"
            )
        elif isinstance(event, ProgressEvent):
            now = time.monotonic()
            if now - self._last >= PLAIN_INTERVAL_S or event.frames_done >= event.frames:
                self._last = now
                pct = 100.0 * event.frames_done / max(1, event.frames)
                self._print(
                    f"{event.frames_done}/{event.frames} frames ({pct:.0f}%) {event.fps:.1f} fps "
                    f"eta {eta_text(event.eta_s)} workers {event.workers} retries {event.retries}"
                )
        elif isinstance(event, Retry):
            self._print(
                f"retry {event.attempt}: {event.frames} frame(s) with {event.workers} worker(s): {event.reason}"
            )
        elif isinstance(event, Done):
            self._print(
                f"done: {event.output} ({event.frames} frames, {event.duration_s:.2f} s) in {event.elapsed_s:.1f} s"
            )
            if event.frames_dir:
                self._print(f"frames kept in {event.frames_dir}")

    def close(self) -> None:
        """Nothing to tear down."""


class RichDisplay:
    """A live progress bar with frames/s, ETA, workers and retries."""

    def __init__(self) -> None:
        self._console = Console(stderr=True)
        self._progress = Progress(
            TextColumn("[bold]{task.description}"),
            BarColumn(),
            MofNCompleteColumn(),
            TextColumn("{task.fields[fps]:>5.1f} fps"),
            TextColumn("eta {task.fields[eta]}"),
            TextColumn("workers {task.fields[workers]}"),
            TextColumn("retries {task.fields[retries]}"),
            TimeElapsedColumn(),
            console=self._console,
            transient=False,
        )
        self._task: TaskID | None = None

    def __call__(self, event: Event) -> None:
        p = self._progress
        if isinstance(event, Started):
            self._console.print(
                f"rendering [bold]{event.composition}[/]: frames {event.start}-{event.end - 1} at "
                f"{event.width}x{event.height} {event.fps} fps, {event.chunks} chunk(s)"
            )
            p.start()
            self._task = p.add_task(
                "capture", total=event.frames, fps=0.0, eta="--:--", workers=event.workers, retries=0
            )
        elif isinstance(event, ProgressEvent) and self._task is not None:
            p.update(
                self._task,
                completed=event.frames_done,
                fps=event.fps,
                eta=eta_text(event.eta_s),
                workers=event.workers,
                retries=event.retries,
            )
        elif isinstance(event, Retry):
            p.console.print(
                f"[yellow]retry {event.attempt}[/]: {event.frames} frame(s) with {event.workers} worker(s): "
                f"{event.reason}"
            )
        elif isinstance(event, ChunkDone) and self._task is not None:
            p.update(self._task, description=f"chunk {event.index + 1} encoded")
        elif isinstance(event, Done):
            self.close()
            self._console.print(
                f"[green]done[/]: {event.output} ({event.frames} frames, {event.duration_s:.2f} s) "
                f"in {event.elapsed_s:.1f} s"
            )
            if event.frames_dir:
                self._console.print(f"frames kept in {event.frames_dir}")

    def close(self) -> None:
        """Stop the live bar (idempotent)."""
        self._progress.stop()


Display = JsonDisplay | PlainDisplay | RichDisplay


def make_display(json_mode: bool) -> Display:
    """Pick JSON, a live bar (stderr is a TTY) or plain lines."""
    if json_mode:
        return JsonDisplay()
    if sys.stderr.isatty():
        return RichDisplay()
    return PlainDisplay()
