"""The exception tree every renderd module raises, all in this module.

    RenderdError                 base: a message meant for a person, one line
    ├── FrameRangeError          a frame range, fps or chunk plan that cannot be right
    ├── CompositionError         a composition that cannot be loaded or has bad metadata
    │   └── CompositionTimeout   the page never became ready
    ├── CaptureError             frames that could not be captured after every retry
    ├── ServeError               renderd could not answer a page's request (its own files missing)
    ├── BrowserError             Chromium could not be launched or died unrecoverably
    ├── RuntimeMissing           the vendored HyperFrames runtime is absent or altered
    ├── ProcessFailed            a subprocess (ffmpeg, ffprobe, rsync) exited non-zero
    ├── EncodeError              an encoded file that does not match what was asked
    ├── OutputError              an output path renderd must not write (see renderd.outputs)
    ├── SettingsError            a render setting out of range, named by its option
    ├── PrepareError             remote URLs that could not be localised (``problems``)
    ├── ConfigError              a daemon config or inventory with problems (``problems``)
    ├── StoreError               the job store cannot be opened, read or written
    ├── AssignmentError          an agent's assignment that is not valid
    ├── DescribeRequestError     an agent's describe request that is not valid
    ├── AgentFailed              an agent ended without a verified result (``host``, ``retryable``)
    │   └── HostUnavailable      the host could not be reached (the chunk goes elsewhere)
    ├── StateDirLocked           another daemon holds the state dir
    ├── ControlError             a control request the daemon refuses (``code``)
    └── DaemonError              the daemon's error reply, as the client sees it (``code``)

Internal signals, caught inside the module family that raises them and never shown as such:
``PageBroken`` (a worker must reopen its page), ``Refused`` and ``AssetTooLarge`` (a composition
file the page may not have), ``FetchFailed`` and ``NpmFailed`` (one URL of a prepare),
``AddressRefused`` (a connection prepare must not make), ``Invalid`` (one config value),
``NoServe`` (a host's agent predates ``--serve``).

Dependency errors (Playwright, asyncssh, OSError from subprocess spawning) are translated into
these at the boundary module that calls the dependency, with ``raise ... from exc``. Only the
CLI turns them into exit codes and printed lines.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

# A key path inside a TOML document, e.g. ("hosts", 2, "address").
KeyPath = tuple[str | int, ...]


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


class ControlError(RenderdError):
    """A request the daemon refuses, with a machine-readable code."""

    def __init__(self, code: str, message: str) -> None:
        super().__init__(message)
        self.code = code


class DaemonError(RenderdError):
    """The daemon answered a request with an error."""

    def __init__(self, code: str, message: str) -> None:
        super().__init__(message)
        self.code = code


class AgentFailed(RenderdError):
    """The agent exited without a verified chunk."""

    def __init__(self, message: str, *, host: str, retryable: bool = True) -> None:
        super().__init__(message)
        self.host = host
        self.retryable = retryable


class HostUnavailable(AgentFailed):
    """The host could not be reached or refused us (the chunk goes elsewhere)."""


class NoServe(Exception):
    """The host's agent does not know ``--serve``."""


class AssignmentError(RenderdError):
    """An assignment that is not valid JSON or misses / mistypes a field."""

    exit_code = 2


class RuntimeMissing(RenderdError):
    """The vendored runtime is absent or does not match its recorded checksum."""


class PageBroken(Exception):
    """The page crashed, closed or stopped answering; the worker must reopen it."""

    def __init__(self, reason: str, *, timeout: bool = False) -> None:
        super().__init__(reason)
        self.timeout = timeout


class FetchFailed(Exception):
    """A URL could not be fetched; the message is one line saying why."""


@dataclass(frozen=True, slots=True)
class Problem:
    """A remote URL that could not be localised, and where it is referenced."""

    where: str  # a file relative to the composition root, or the URL of a remote stylesheet
    line: int
    url: str
    reason: str

    def __str__(self) -> str:
        return f"{self.where}:{self.line}: {self.url}: {self.reason}"


class PrepareError(RenderdError):
    """Remote URLs that could not be localised; ``problems`` has one entry per reference."""

    exit_code = 2

    def __init__(self, problems: list[Problem] | None = None, message: str | None = None) -> None:
        self.problems = sorted(problems or [], key=lambda p: (p.where, p.line, p.url))
        if message is None:
            n = len({p.url for p in self.problems})
            lines = "\n".join(f"  {p}" for p in self.problems)
            message = (
                f"{n} remote URL{'' if n == 1 else 's'} could not be localised "
                f"(fetch them once with network, or pre-fill the npm cache):\n{lines}"
            )
        super().__init__(message)


class NpmFailed(Exception):
    """The package or the file in it could not be had; the message says why, in one line."""


class Invalid(Exception):
    """Raised by a value check: ``reason`` for a person, ``sub`` refines the key path."""

    def __init__(self, reason: str, sub: KeyPath = ()) -> None:
        super().__init__(reason)
        self.reason = reason
        self.sub = sub  # e.g. (1,) for the second element of a list


class SettingsError(RenderdError):
    """A render setting with the wrong type or a value out of its range, named by its option."""

    exit_code = 2


class DescribeRequestError(RenderdError):
    """A describe request that is not valid JSON or misses / mistypes a field."""

    exit_code = 2


class Refused(Exception):
    """A composition file that must not be read: outside the root, not a regular file, or missing."""

    def __init__(self, path: Path, reason: str) -> None:
        super().__init__(f"{path}: {reason}")
        self.path = path
        self.reason = reason


class AssetTooLarge(Exception):
    """A composition file over the operator's asset size limit."""

    def __init__(self, path: Path, size: int, limit: int) -> None:
        super().__init__(
            f"{path}: asset is {size / (1 << 20):.0f} MiB, "
            f"over the limit of {limit / (1 << 20):.0f} MiB (--max-asset-size)"
        )
        self.path = path
        self.size = size
        self.limit = limit


class ServeError(RenderdError):
    """renderd could not answer one of the page's requests (its own runtime or font files, say).

    A fault of this installation, not of the composition: another host may well render it.
    """


class StateDirLocked(RenderdError):
    """Another daemon holds the state dir."""


class AddressRefused(Exception):
    """A connection prepare must not make; the message names the host and the address.

    ``url`` is the request that was refused, set where the request is known (a redirect hop).
    """

    def __init__(self, reason: str, url: str | None = None) -> None:
        super().__init__(reason)
        self.url = url


def first_error(group: BaseExceptionGroup[BaseException]) -> BaseException:
    """Return the exception a person should see from a TaskGroup's group: the first RenderdError, else the first."""
    leaves: list[BaseException] = []

    def walk(g: BaseExceptionGroup[BaseException]) -> None:
        for e in g.exceptions:
            walk(e) if isinstance(e, BaseExceptionGroup) else leaves.append(e)

    walk(group)
    return next((e for e in leaves if isinstance(e, RenderdError)), leaves[0])
