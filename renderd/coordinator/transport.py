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
from collections.abc import Callable, Sequence
from typing import Any, Protocol

from renderd import procs
from renderd.assignment import Assignment
from renderd.errors import RenderdError

log = logging.getLogger(__name__)

CANCEL_GRACE_S = 15.0
STDERR_LINES = 20

EventSink = Callable[[dict[str, Any]], None]


class AgentFailed(RenderdError):
    """The agent exited without a verified chunk."""

    def __init__(self, message: str, *, host: str, retryable: bool = True) -> None:
        super().__init__(message)
        self.host = host
        self.retryable = retryable


class Transport(Protocol):
    """Runs agents on one host."""

    name: str

    async def run_chunk(self, assignment: Assignment, on_event: EventSink, *, timeout: float) -> dict[str, Any]:
        """Run the agent for ``assignment``; return its ``done`` event or raise AgentFailed."""
        ...


def default_local_agent_command() -> list[str]:
    """Return the agent command for the local host: this very Python and renderd."""
    return [sys.executable, "-m", "renderd", "agent"]


class LocalTransport:
    """Run agents as subprocesses of the daemon."""

    def __init__(self, name: str, agent_command: Sequence[str] | None = None) -> None:
        self.name = name
        self._command = list(agent_command) if agent_command else default_local_agent_command()

    async def run_chunk(self, assignment: Assignment, on_event: EventSink, *, timeout: float) -> dict[str, Any]:
        """Run the agent; cancel it (stdin closed, then signals) if we are cancelled or time out."""
        proc = await procs.spawn([*self._command, "--watch-stdin"])
        assert proc.stdin is not None and proc.stdout is not None and proc.stderr is not None
        stderr_tail: deque[str] = deque(maxlen=STDERR_LINES)
        stderr_task = asyncio.create_task(_collect(proc.stderr, stderr_tail))
        done: dict[str, Any] | None = None
        error: dict[str, Any] | None = None
        try:
            proc.stdin.write(assignment.to_json().encode() + b"\n")
            await proc.stdin.drain()
            async with asyncio.timeout(timeout):
                async for raw in proc.stdout:
                    event = _parse(raw)
                    if event is None:
                        continue
                    if event.get("event") == "done":
                        done = event
                    elif event.get("event") == "error":
                        error = event
                    on_event(event)
                await proc.wait()
        except TimeoutError:
            await self._stop(proc)
            raise AgentFailed(f"chunk timed out after {timeout:.0f} s", host=self.name) from None
        except BaseException:
            await self._stop(proc)
            raise
        finally:
            with contextlib.suppress(Exception):
                await asyncio.wait_for(stderr_task, 5)
        if proc.returncode == 0 and done is not None:
            return done
        if error is not None:
            # A composition problem fails the same way on every host: do not retry it elsewhere.
            retryable = error.get("code") not in ("CompositionError", "CompositionTimeout", "AssignmentError")
            raise AgentFailed(str(error.get("message")), host=self.name, retryable=retryable)
        tail = stderr_tail[-1] if stderr_tail else "no output"
        raise AgentFailed(f"agent exited with status {proc.returncode}: {tail}", host=self.name)

    async def _stop(self, proc: asyncio.subprocess.Process) -> None:
        """Close stdin so the agent cancels itself; signal its group if it does not exit in time."""
        if proc.stdin is not None:
            with contextlib.suppress(Exception):
                proc.stdin.close()
        try:
            await asyncio.wait_for(asyncio.shield(proc.wait()), CANCEL_GRACE_S)
        except TimeoutError:
            await procs.terminate(proc)


def _parse(raw: bytes) -> dict[str, Any] | None:
    try:
        event = json.loads(raw)
    except ValueError:
        log.debug("agent printed a non-JSON line: %r", raw[:200])
        return None
    return event if isinstance(event, dict) else None


async def _collect(stream: asyncio.StreamReader, tail: deque[str]) -> None:
    async for raw in stream:
        line = raw.decode(errors="replace").rstrip()
        if line:
            tail.append(line)
            log.debug("agent: %s", line)
