"""Run an agent for one chunk and follow its JSON-line events.

`LocalTransport` runs `renderd agent --watch-stdin` as a subprocess of the daemon; the SSH
transport (a later issue) runs the same command on a render host behind the same interface.
The assignment goes in as the first line of stdin, which then stays open: closing it (or the
daemon dying) makes the agent cancel itself and clean up.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import sys
from collections import deque
from collections.abc import AsyncIterable, Awaitable, Callable, Sequence
from pathlib import Path
from typing import Any, Protocol

from renderd import procs
from renderd.assignment import Assignment
from renderd.describe import DescribeRequest
from renderd.errors import AgentFailed as AgentFailed
from renderd.errors import CompositionError, ProcessFailed

log = logging.getLogger(__name__)

CANCEL_GRACE_S = 15.0
STDERR_LINES = 20

EventSink = Callable[[dict[str, Any]], None]


class Transport(Protocol):
    """Runs agents on one host and moves files to and from it."""

    name: str

    async def stage_composition(self, job_id: str, composition: Path) -> str:
        """Make the composition available on the host; return its path there (once per job)."""
        ...

    def chunk_paths(self, job_id: str, index: int, attempt_id: int, ext: str = "mp4") -> tuple[str, str]:
        """Return (chunk output path, work dir) on the host for one attempt; ``ext``: the part's extension."""
        ...

    async def run_chunk(self, assignment: Assignment, on_event: EventSink, *, timeout: float) -> dict[str, Any]:
        """Run the agent for ``assignment``; return its ``done`` event or raise AgentFailed."""
        ...

    async def fetch(self, remote_path: str, local_path: Path) -> None:
        """Bring a chunk file from the host to ``local_path``."""
        ...

    async def cleanup_job(self, job_id: str) -> None:
        """Remove the job's files from the host."""
        ...

    async def close(self) -> None:
        """Release connections."""
        ...

    async def probe(self) -> dict[str, Any]:
        """Run `renderd agent --probe` on the host and return what it reports."""
        ...

    async def describe(self, request: DescribeRequest, *, timeout: float) -> dict[str, Any]:
        """Run `renderd agent --describe` on the host; return its ``described`` event.

        ``request.composition`` is a path on the host (from ``stage_composition``). Raises
        CompositionError with the page's own message when the composition is broken, and
        AgentFailed when the host could not describe it (another host may).
        """
        ...


def default_local_agent_command() -> list[str]:
    """Return the agent command for the local host: this very Python and renderd."""
    return [sys.executable, "-m", "renderd", "agent"]


class LocalTransport:
    """Run agents as subprocesses of the daemon; chunk files are written straight into the state dir."""

    def __init__(self, name: str, jobs_dir: Path, agent_command: Sequence[str] | None = None) -> None:
        self.name = name
        self._jobs_dir = jobs_dir
        self._command = list(agent_command) if agent_command else default_local_agent_command()

    async def stage_composition(self, job_id: str, composition: Path) -> str:
        """The agent reads the composition where it is."""
        return str(composition)

    def chunk_paths(self, job_id: str, index: int, attempt_id: int, ext: str = "mp4") -> tuple[str, str]:
        """Write chunks into the job's directory in the state dir."""
        job_dir = self._jobs_dir / job_id
        return str(job_dir / f"chunk-{index:05d}-a{attempt_id}.{ext}"), str(job_dir / "work")

    async def fetch(self, remote_path: str, local_path: Path) -> None:
        """Nothing to move: the chunk is already local (it must be where the scheduler expects it)."""
        if Path(remote_path) != local_path:
            await asyncio.to_thread(Path(remote_path).replace, local_path)

    async def cleanup_job(self, job_id: str) -> None:
        """The scheduler removes the job's directory itself."""

    async def close(self) -> None:
        """No connections to close."""

    async def probe(self) -> dict[str, Any]:
        """Run the local agent's probe."""
        done = await procs.run([*self._command, "--probe", "--work-dir", str(self._jobs_dir)], timeout=60)
        result: dict[str, Any] = json.loads(done.stdout)
        return result

    async def describe(self, request: DescribeRequest, *, timeout: float) -> dict[str, Any]:
        """Run the local agent's describe (its browser is the agent's child, never the daemon's)."""
        try:
            done = await procs.run(
                [*self._command, "--describe"], stdin=request.to_json().encode() + b"\n", timeout=timeout, check=False
            )
        except ProcessFailed as exc:  # only a timeout: check=False
            raise AgentFailed(f"host {self.name}: describe {exc.stderr_tail}", host=self.name) from None
        return describe_result(self.name, done.returncode, done.stdout, done.stderr.decode(errors="replace"))

    async def run_chunk(self, assignment: Assignment, on_event: EventSink, *, timeout: float) -> dict[str, Any]:
        """Run the agent; cancel it (stdin closed, then signals) if we are cancelled or time out."""
        proc = await procs.spawn([*self._command, "--watch-stdin"])
        assert proc.stdin is not None and proc.stdout is not None and proc.stderr is not None
        stdin = proc.stdin

        async def stop() -> None:
            # Closing stdin makes the agent cancel itself; signal its group if it does not exit in time.
            with contextlib.suppress(Exception):
                stdin.close()
            try:
                await asyncio.wait_for(asyncio.shield(proc.wait()), CANCEL_GRACE_S)
            except TimeoutError:
                await procs.terminate(proc)

        return await follow_agent(
            self.name, assignment, on_event, timeout,
            stdin=stdin, stdout=proc.stdout, stderr=proc.stderr, wait=proc.wait, stop=stop,
        )  # fmt: skip


# Error codes of a describe that would fail the same way on every host: the submission is refused.
_COMPOSITION_CODES = ("CompositionError", "CompositionTimeout", "FrameRangeError")


def describe_result(host: str, status: int | None, stdout: bytes | str, stderr: str) -> dict[str, Any]:
    """Judge a finished `renderd agent --describe`: return its ``described`` event or raise.

    CompositionError (the page's own message) for a broken composition; AgentFailed otherwise
    (an agent too old to know ``--describe``, a crash, output that is not the protocol).
    """
    text = stdout.decode(errors="replace") if isinstance(stdout, bytes) else stdout
    lines = [ln for ln in text.splitlines() if ln.strip()]
    event = _parse(lines[-1].encode()) if lines else None
    if event is not None and event.get("event") == "described" and status == 0:
        return event
    if event is not None and event.get("event") == "error":
        message = str(event.get("message"))
        if event.get("code") in _COMPOSITION_CODES:
            raise CompositionError(message)
        raise AgentFailed(f"host {host}: describe failed: {message}", host=host)
    tail = [ln for ln in stderr.splitlines() if ln.strip()]
    if any("--describe" in ln for ln in tail):
        raise AgentFailed(f"host {host}: its renderd has no `agent --describe`; run `renderd hosts install`", host=host)
    why = tail[-1] if tail else "no output"
    raise AgentFailed(f"host {host}: describe exited with status {status}: {why}", host=host)


class _Writer(Protocol):
    def write(self, data: bytes) -> None: ...

    async def drain(self) -> None: ...


async def follow_agent(
    host: str,
    assignment: Assignment,
    on_event: EventSink,
    timeout: float,
    *,
    stdin: _Writer,
    stdout: AsyncIterable[bytes],
    stderr: AsyncIterable[bytes] | deque[str],
    wait: Callable[[], Awaitable[int | None]],
    stop: Callable[[], Awaitable[None]],
    served: bool = False,
) -> dict[str, Any]:
    """Send the assignment, relay the agent's events, and judge how it ended.

    Returns the ``done`` event; raises AgentFailed otherwise. On timeout or cancellation the
    agent is stopped with ``stop()`` before this returns. A ``served`` agent (``--serve``) stays
    up after its chunk: the chunk ends with its ``done`` or ``error`` event, not with the process,
    and ``stderr`` is then the tail its session collects.
    """
    if isinstance(stderr, deque):
        stderr_tail, stderr_task = stderr, None
    else:
        stderr_tail = deque(maxlen=STDERR_LINES)
        stderr_task = asyncio.create_task(_collect(stderr, stderr_tail))
    done: dict[str, Any] | None = None
    error: dict[str, Any] | None = None
    status: int | None = None
    try:
        stdin.write(assignment.to_json().encode() + b"\n")
        await stdin.drain()
        async with asyncio.timeout(timeout):
            async for raw in stdout:
                event = _parse(raw)
                if event is None:
                    continue
                if event.get("event") == "done":
                    done = event
                elif event.get("event") == "error":
                    error = event
                on_event(event)
                if served and (done is not None or error is not None):
                    break
            if not served or (done is None and error is None):
                status = await wait()
            elif done is not None:
                status = 0
    except TimeoutError:
        await stop()
        raise AgentFailed(f"chunk timed out after {timeout:.0f} s", host=host) from None
    except BaseException:
        await stop()
        raise
    finally:
        if stderr_task is not None:
            with contextlib.suppress(Exception):
                await asyncio.wait_for(stderr_task, 5)
    if status == 0 and done is not None:
        return done
    if error is not None:
        # A composition problem fails the same way on every host: do not retry it elsewhere.
        retryable = error.get("code") not in ("CompositionError", "CompositionTimeout", "AssignmentError")
        raise AgentFailed(str(error.get("message")), host=host, retryable=retryable)
    tail = stderr_tail[-1] if stderr_tail else "no output"
    raise AgentFailed(f"agent exited with status {status}: {tail}", host=host)


def _parse(raw: bytes) -> dict[str, Any] | None:
    try:
        event = json.loads(raw)
    except ValueError:
        log.debug("agent printed a non-JSON line: %r", raw[:200])
        return None
    return event if isinstance(event, dict) else None


async def collect_stderr(stream: AsyncIterable[bytes], tail: deque[str]) -> None:
    """Keep the last lines of an agent's stderr in ``tail`` (and log them at debug level)."""
    await _collect(stream, tail)


async def _collect(stream: AsyncIterable[bytes], tail: deque[str]) -> None:
    async for raw in stream:
        line = raw.decode(errors="replace").rstrip()
        if line:
            tail.append(line)
            log.debug("agent: %s", line)
