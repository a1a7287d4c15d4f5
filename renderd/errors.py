"""The exception tree every renderd module raises.

    RenderdError                 base: a message meant for a person, one line
    ├── FrameRangeError          a frame range, fps or chunk plan that cannot be right
    ├── CompositionError         a composition that cannot be loaded or has bad metadata
    │   └── CompositionTimeout   the page never became ready
    ├── CaptureError             frames that could not be captured after every retry
    ├── BrowserError             Chromium could not be launched or died unrecoverably
    ├── ProcessFailed            a subprocess (ffmpeg, ffprobe, rsync) exited non-zero
    ├── EncodeError              an encoded file that does not match what was asked
    └── OutputError              an output path renderd must not write (see renderd.outputs)

Dependency errors (Playwright, OSError from subprocess spawning) are translated into these at
the boundary module that calls the dependency, with ``raise ... from exc``. Only the CLI turns
them into exit codes and printed lines.
"""

from __future__ import annotations

from collections.abc import Sequence


class RenderdError(Exception):
    """Base for every error renderd reports to a person."""

    exit_code = 1


class FrameRangeError(RenderdError, ValueError):
    """A frame range, rate or chunk plan that violates the frame contract."""

    exit_code = 2


class CompositionError(RenderdError):
    """A composition that cannot be loaded, or whose metadata is unusable."""

    exit_code = 2

    def __init__(self, message: str, *, path: str | None = None) -> None:
        super().__init__(message)
        self.path = path


class CompositionTimeout(CompositionError):
    """The composition page did not become ready in time."""


class BrowserError(RenderdError):
    """Chromium could not be started, or died in a way retries cannot fix."""


class CaptureError(RenderdError):
    """Frames still missing after the bounded number of capture attempts."""

    def __init__(self, message: str, *, frames: Sequence[tuple[int, int]] = ()) -> None:
        super().__init__(message)
        self.frames = list(frames)


class ProcessFailed(RenderdError):
    """A subprocess exited with a non-zero status."""

    def __init__(self, argv: Sequence[str], returncode: int | None, stderr_tail: str) -> None:
        name = argv[0] if argv else "?"
        last = stderr_tail.strip().splitlines()[-1] if stderr_tail.strip() else "no output"
        super().__init__(f"{name} exited with status {returncode}: {last}")
        self.argv = list(argv)
        self.returncode = returncode
        self.stderr_tail = stderr_tail


class EncodeError(RenderdError):
    """An encoded video that does not match the frames, size or rate asked for."""


class OutputError(RenderdError):
    """An output, work directory or prepared copy that would overwrite what renderd must not touch."""

    exit_code = 2


class StoreError(RenderdError):
    """The coordinator's job store cannot be opened, migrated, read or written as asked."""

    def __init__(
        self, message: str, *, path: str | None = None, job: str | None = None, chunk: int | None = None
    ) -> None:
        super().__init__(message)
        self.path = path
        self.job = job
        self.chunk = chunk


class ConfigError(RenderdError):
    """A daemon config or host inventory with problems; ``problems`` holds one line for each."""

    exit_code = 2

    def __init__(self, file: str, problems: Sequence[str]) -> None:
        n = len(problems)
        super().__init__(f"{file}: {n} problem{'' if n == 1 else 's'}")
        self.file = file
        self.problems = list(problems)


def first_error(group: BaseExceptionGroup[BaseException]) -> BaseException:
    """Return the exception a person should see from a TaskGroup's group: the first RenderdError, else the first."""
    leaves: list[BaseException] = []

    def walk(g: BaseExceptionGroup[BaseException]) -> None:
        for e in g.exceptions:
            walk(e) if isinstance(e, BaseExceptionGroup) else leaves.append(e)

    walk(group)
    return next((e for e in leaves if isinstance(e, RenderdError)), leaves[0])
