"""One owner for every task the scheduler starts.

Each task is registered with what it is about (its kind, host, job and chunk), so finding,
counting and cancelling tasks is one query instead of a dict per purpose, and a host whose
configuration changes keeps its tasks: they belong to the host's name, not to a runtime object.
A task that ends with an unexpected exception is logged with its traceback at once, never left
as "exception was never retrieved".
"""

from __future__ import annotations

import asyncio
import enum
import logging
from collections.abc import Coroutine, Iterable
from dataclasses import dataclass
from typing import Any, TypeVar

log = logging.getLogger(__name__)

T = TypeVar("T")
K = TypeVar("K")


class Kind(enum.Enum):
    """What a task does."""

    CHUNK = "chunk"  # a claimed chunk on a host
    SPECULATIVE = "speculative"  # a second copy of a straggling chunk
    ASSEMBLE = "assemble"  # a finished job's concat, audio and move into place
    STAGE = "stage"  # a composition synced to a host (awaited by its chunks)
    PROBE = "probe"  # a quarantined host's re-probe
    CLOSE = "close"  # a replaced or removed host's transport, closed when its chunks are done


# The tasks that hold a host slot, and the ones a job's cancellation or a drain waits for.
SLOT_KINDS = frozenset({Kind.CHUNK, Kind.SPECULATIVE})
WORK_KINDS = frozenset({Kind.CHUNK, Kind.SPECULATIVE, Kind.ASSEMBLE})


@dataclass(frozen=True, slots=True)
class TaskInfo:
    """What a registered task is about."""

    kind: Kind
    host: str | None = None
    job: str | None = None
    index: int | None = None
    quiet: bool = False  # its awaiters handle its exception: do not log it


class TaskRegistry:
    """Every task of the scheduler, with what it is about."""

    def __init__(self) -> None:
        self._tasks: dict[asyncio.Task[Any], TaskInfo] = {}
        # Indexes, so the scheduler's per-host and per-chunk look-ups do not scan every task
        # (thousands of them on a large farm, looked up for every host in every round).
        self._by_host: dict[str, dict[asyncio.Task[Any], TaskInfo]] = {}
        self._by_chunk: dict[tuple[str, int], dict[asyncio.Task[Any], TaskInfo]] = {}

    def spawn(
        self,
        coro: Coroutine[Any, Any, T],
        kind: Kind,
        *,
        host: str | None = None,
        job: str | None = None,
        index: int | None = None,
        quiet: bool = False,
    ) -> asyncio.Task[T]:
        """Start ``coro`` as a task owned here; it leaves the registry when it ends."""
        name = "-".join(str(p) for p in (kind.value, host, job, index) if p is not None)
        task = asyncio.get_running_loop().create_task(coro, name=name)
        info = self._tasks[task] = TaskInfo(kind, host, job, index, quiet)
        if host is not None:
            self._by_host.setdefault(host, {})[task] = info
        if job is not None and index is not None:
            self._by_chunk.setdefault((job, index), {})[task] = info
        task.add_done_callback(self._done)
        return task

    def _done(self, task: asyncio.Task[Any]) -> None:
        info = self._tasks.pop(task, None)
        if info is not None:
            _unindex(self._by_host, info.host, task)
            if info.job is not None and info.index is not None:
                _unindex(self._by_chunk, (info.job, info.index), task)
        if task.cancelled() or info is None:
            return
        exc = task.exception()  # retrieved here, so asyncio never reports it as lost
        if exc is not None and not info.quiet:
            log.error("task %s failed unexpectedly", task.get_name(), exc_info=exc)

    def find(
        self,
        kinds: Iterable[Kind] | Kind | None = None,
        *,
        host: str | None = None,
        job: str | None = None,
        index: int | None = None,
    ) -> list[asyncio.Task[Any]]:
        """Return the live tasks matching every given criterion."""
        wanted = {kinds} if isinstance(kinds, Kind) else set(kinds) if kinds is not None else None
        if job is not None and index is not None:
            among = self._by_chunk.get((job, index), {})
        elif host is not None:
            among = self._by_host.get(host, {})
        else:
            among = self._tasks
        return [
            t
            for t, i in among.items()
            if (wanted is None or i.kind in wanted)
            and (host is None or i.host == host)
            and (job is None or i.job == job)
            and (index is None or i.index == index)
        ]

    def count(self, kinds: frozenset[Kind], host: str) -> int:
        """Return how many live tasks of ``kinds`` the host has."""
        return sum(1 for i in self._by_host.get(host, {}).values() if i.kind in kinds)

    def info(self, task: asyncio.Task[Any]) -> TaskInfo | None:
        """Return what ``task`` is about, if it is registered."""
        return self._tasks.get(task)

    async def cancel(self, tasks: Iterable[asyncio.Task[Any]], timeout: float) -> int:
        """Cancel ``tasks`` and wait (at most ``timeout``) for them to end; return how many there were."""
        pending = [t for t in tasks if not t.done()]
        for t in pending:
            t.cancel()
        if pending:
            await asyncio.wait(pending, timeout=timeout)
        return len(pending)


def _unindex(index: dict[K, dict[asyncio.Task[Any], TaskInfo]], key: K | None, task: asyncio.Task[Any]) -> None:
    if key is None:
        return
    tasks = index.get(key)
    if tasks is not None:
        tasks.pop(task, None)
        if not tasks:
            del index[key]
