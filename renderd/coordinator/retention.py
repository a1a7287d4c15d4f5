"""Job retention: forget finished jobs older than ``[retention] keep_finished``, with their files.

A pruned job leaves the store (its chunks, attempts and events go with it) and its working
files leave the state directory: ``jobs/<id>/`` (chunk files, kept after a failure so that
`renderd retry` need not render verified chunks again) and its prepared copy under
``cache/prepared/`` when no job left in the store uses that copy. The job's output belongs to
its submitter and is never touched. Rows go first, then files: a crash in between leaves
files behind, never a job whose files are gone.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import shutil
import time
from pathlib import Path

from renderd.config import DaemonConfig
from renderd.coordinator.models import Job
from renderd.coordinator.store import Store
from renderd.errors import StoreError

log = logging.getLogger(__name__)

PRUNE_EVERY_S = 3600.0
ALL_JOBS = 1_000_000


class Pruner:
    """Prune old finished jobs at start and every hour."""

    def __init__(self, store: Store, config: DaemonConfig) -> None:
        self.store = store
        self.config = config  # replaced on reload

    async def run(self, stop: asyncio.Event) -> None:
        """Prune now, then every :data:`PRUNE_EVERY_S` until ``stop`` is set."""
        while not stop.is_set():
            try:
                await self.prune()
            except StoreError as exc:
                log.warning("retention: the job store failed (%s); next try in an hour", exc)
            except Exception:
                log.exception("retention: pruning failed; next try in an hour")
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), PRUNE_EVERY_S)

    async def prune(self, now: float | None = None) -> list[str]:
        """Delete the finished jobs older than ``keep_finished`` and their files; return their ids."""
        keep = self.config.keep_finished
        if keep <= 0:
            return []
        cutoff = (time.time() if now is None else now) - keep
        pruned: list[Job] = []
        for job in await self.store.finished_before(cutoff):
            if await self.store.delete_finished_job(job.id):  # False: retried meanwhile
                pruned.append(job)
        if not pruned:
            return []
        in_use = {j.params.get("prepared") for j in await self.store.list_jobs(limit=ALL_JOBS)}
        for job in pruned:
            await asyncio.to_thread(remove_job_files, self.config.state_dir, job, in_use)
        log.info("retention: pruned %d job(s) finished more than %.0f s ago", len(pruned), keep)
        return [j.id for j in pruned]


def remove_job_files(state_dir: Path, job: Job, prepared_in_use: set[object]) -> None:
    """Remove the job's directory and its prepared copy (unless another job uses it) from ``state_dir`` (blocking)."""
    shutil.rmtree(state_dir / "jobs" / job.id, ignore_errors=True)
    prepared = job.params.get("prepared")
    if not isinstance(prepared, str):
        return
    copies = (state_dir / "cache" / "prepared").resolve()
    entry = Path(prepared).resolve()
    # The copy is the directory right under cache/prepared that holds the entry; one elsewhere
    # ($RENDERD_CACHE_DIR) is not the daemon's to remove.
    if copies in entry.parents:
        top = copies / entry.relative_to(copies).parts[0]
        if not any(isinstance(p, str) and Path(p).resolve().is_relative_to(top) for p in prepared_in_use):
            shutil.rmtree(top, ignore_errors=True)
