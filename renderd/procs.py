"""The one place renderd starts subprocesses (ffmpeg, ffprobe, rsync, the local agent).

Every child runs in its own session (process group) so that cancelling it also stops whatever
it spawned; cancellation sends SIGTERM to the group, then SIGKILL after a grace period.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

from renderd.errors import ProcessFailed, RenderdError

TERM_GRACE_S = 3.0
STDERR_TAIL = 4000


@dataclass(frozen=True, slots=True)
class Completed:
    """What a finished subprocess left behind."""

    argv: list[str]
    returncode: int
    stdout: bytes
    stderr: bytes


async def run(
    argv: Sequence[str],
    *,
    timeout: float | None,
    stdin: bytes | None = None,
    check: bool = True,
    cwd: str | os.PathLike[str] | None = None,
    env: Mapping[str, str] | None = None,
) -> Completed:
    """Run ``argv`` to completion and return its output.

    Raises ProcessFailed on a non-zero exit (when ``check``), and on timeout after killing the
    process group. Cancellation kills the group too and re-raises.
    """
    argv = [str(a) for a in argv]
    try:
        proc = await asyncio.create_subprocess_exec(
            *argv,
            stdin=asyncio.subprocess.PIPE if stdin is not None else asyncio.subprocess.DEVNULL,
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.PIPE,
            start_new_session=True,
            cwd=cwd,
            env=env,
        )
    except FileNotFoundError:
        raise RenderdError(f"{argv[0]} is not installed (not found on PATH)") from None
    except OSError as exc:
        raise RenderdError(f"cannot start {argv[0]}: {exc.strerror}") from exc
    try:
        out, err = await asyncio.wait_for(proc.communicate(stdin), timeout)
    except TimeoutError:
        await terminate(proc)
        raise ProcessFailed(argv, None, f"timed out after {timeout:.0f} s") from None
    except BaseException:
        await terminate(proc)
        raise
    assert proc.returncode is not None
    if check and proc.returncode != 0:
        raise ProcessFailed(argv, proc.returncode, err.decode(errors="replace")[-STDERR_TAIL:])
    return Completed(argv, proc.returncode, out, err)


async def spawn(argv: Sequence[str], *, cwd: str | os.PathLike[str] | None = None) -> asyncio.subprocess.Process:
    """Start ``argv`` with pipes on stdin/stdout/stderr in its own process group.

    The caller owns the process: it must ``terminate()`` it on cancellation.
    """
    argv = [str(a) for a in argv]
    try:
        return await asyncio.create_subprocess_exec(
            *argv,
            stdin=asyncio.subprocess.PIPE,
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.PIPE,
            start_new_session=True,
            cwd=cwd,
            limit=1 << 20,
        )
    except FileNotFoundError:
        raise RenderdError(f"{argv[0]} is not installed (not found on PATH)") from None
    except OSError as exc:
        raise RenderdError(f"cannot start {argv[0]}: {exc.strerror}") from exc


async def terminate(proc: asyncio.subprocess.Process, grace: float = TERM_GRACE_S) -> None:
    """Stop ``proc`` and its process group: SIGTERM, then SIGKILL after ``grace`` seconds."""
    if proc.returncode is not None:
        return
    _signal_group(proc.pid, signal.SIGTERM)
    try:
        await asyncio.wait_for(asyncio.shield(proc.wait()), grace)
    except TimeoutError:
        _signal_group(proc.pid, signal.SIGKILL)
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(asyncio.shield(proc.wait()), grace)


def _signal_group(pid: int, sig: int) -> None:
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(pid, sig)
