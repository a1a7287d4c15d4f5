"""Hand chunks to host slots as they free up, follow the agents, verify chunks, assemble jobs.

Chunks are claimed from the store one at a time when a slot is free (not pre-assigned), so a
fast host simply takes more chunks. Every state change is committed to the store before it is
acted upon (``fetched``, which nothing acts upon, commits with the verification that follows it);
store writes run under ``asyncio.shield`` so a cancellation never loses one.

This is the facade over the parts, one concern each: :mod:`.hosts` (the hosts, inventory
reloads, quarantine re-probes), :mod:`.claims` (claiming chunks, running attempts, in-flight
bookkeeping), :mod:`.speculation` (copies of stragglers), :mod:`.assembly` (the output file),
and :mod:`.tasks` (the one owner of every task they start).
"""

from __future__ import annotations

import asyncio
import logging

from renderd.capture_cost import SlotShare
from renderd.config import DaemonConfig, Inventory
from renderd.coordinator.assembly import assemble_output
from renderd.coordinator.claims import Claims, JobProgress, job_settings
from renderd.coordinator.hosts import HostRegistry, HostRuntime, SchedulerContext
from renderd.coordinator.models import JobState
from renderd.coordinator.speculation import Speculator
from renderd.coordinator.store import Store
from renderd.coordinator.tasks import WORK_KINDS, Kind
from renderd.errors import RenderdError, StoreError

__all__ = ["HostRuntime", "JobProgress", "Scheduler"]

log = logging.getLogger(__name__)

IDLE_POLL_S = 2.0
CANCEL_WAIT_S = 30.0  # agents get their stdin closed, then signals after a grace period


class Scheduler:
    """Run the job queue over the inventory's hosts."""

    def __init__(self, store: Store, config: DaemonConfig, inventory: Inventory) -> None:
        self.store = store
        self.ctx = SchedulerContext(store, config)
        self.tasks = self.ctx.tasks
        self.registry = HostRegistry(self.ctx)
        self.claims = Claims(self.ctx, self.registry, self._spawn_assembly)
        self.speculation = Speculator(self.ctx, self.claims)
        self._claiming = True
        self.apply_inventory(inventory)

    # -- configuration -----------------------------------------------------------------

    @property
    def config(self) -> DaemonConfig:
        """The daemon config in force (a reload replaces it)."""
        return self.ctx.config

    @config.setter
    def config(self, config: DaemonConfig) -> None:
        self.ctx.config = config

    @property
    def hosts(self) -> dict[str, HostRuntime]:
        """The hosts by name (removed ones stay, retired, while they finish)."""
        return self.registry.hosts

    @property
    def progress(self) -> dict[str, JobProgress]:
        """Live progress per job."""
        return self.claims.progress

    def apply_inventory(self, inventory: Inventory) -> None:
        """Take a (re)loaded inventory: new hosts join, removed ones finish and retire."""
        self.registry.apply_inventory(inventory)

    def total_slots(self) -> int:
        """Return the slots of every enabled, current host."""
        return self.registry.total_slots()

    def slot_shares(self) -> list[SlotShare]:
        """Return every enabled, current host's slots, probed cores and workers."""
        return self.registry.slot_shares()

    def wake(self) -> None:
        """Look for work now (a job arrived, a slot freed up)."""
        self.ctx.wake()

    def job_progress(self, job_id: str) -> JobProgress:
        """Return the live progress record of a job."""
        return self.claims.job_progress(job_id)

    # -- main loop ---------------------------------------------------------------------

    async def run(self, stop: asyncio.Event) -> None:
        """Fill free slots until ``stop`` is set; a failing store or a bug delays work, never ends the loop."""
        resumed = False
        loop = asyncio.get_running_loop()
        last_full = loop.time()
        while not stop.is_set():
            self.ctx.wake_event.clear()
            # A busy farm wakes hosts one by one without pause: every host (idle ones looking for
            # stragglers, quarantines that ran out) still gets a round at least every IDLE_POLL_S.
            if loop.time() - last_full >= IDLE_POLL_S:
                self.ctx.full_round = True
            only = self.ctx.next_round()
            if only is None:
                last_full = loop.time()
            try:
                if not resumed:
                    await self._resume_assembly()
                    resumed = True
                await self._fill_slots(only)
            except StoreError as exc:
                self.ctx.full_round = True
                log.warning("the job store failed (%s); retrying in %.0f s", exc, IDLE_POLL_S)
            except Exception:
                self.ctx.full_round = True
                log.exception("scheduling round failed; retrying in %.0f s", IDLE_POLL_S)
            try:
                await asyncio.wait_for(self.ctx.wake_event.wait(), IDLE_POLL_S)
            except TimeoutError:
                self.ctx.full_round = True  # idle hosts look for stragglers to copy, quarantines end

    async def _resume_assembly(self) -> None:
        """After a restart: jobs whose chunks were all verified still need their output."""
        for job in await self.store.list_jobs(states=[JobState.RUNNING], limit=10_000):
            if await self.store.job_all_verified(job.id):
                self._spawn_assembly(job.id)

    async def _fill_slots(self, only: set[str] | None = None) -> None:
        """Claim chunks for the free slots of every usable host, or of those in ``only``; idle ones speculate."""
        if not self._claiming or not await self.claims.settle_pending():
            self.ctx.full_round = True
            return
        usable, in_service = await self.registry.usable(only)
        # A chunk that failed on a host is retried elsewhere while there is an elsewhere.
        avoid = in_service > 1
        idle: list[HostRuntime] = []
        # Once nothing is pending for anyone, the other hosts skip their claim (a store call
        # each: a thousand a round at the end of a large queue) and only speculate.
        drained = False
        for rt in usable:
            while rt.free_slots > 0 and self._claiming:
                if drained or await self.claims.claim(rt, avoid_own_failures=avoid) is None:
                    idle.append(rt)
                    # With ``avoid`` the host was passed over only for chunks that failed on it.
                    drained = drained or not avoid or not await self.store.has_pending_chunks()
                    break
        if idle and self._claiming:
            await self.speculation.speculate(idle)

    # -- cancellation ----------------------------------------------------------------------

    def cancel_chunk(self, job_id: str, index: int) -> None:
        """Stop the task running a chunk, if any."""
        self.claims.cancel_chunk(job_id, index)

    async def cancel_job(self, job_id: str) -> int:
        """Stop every running chunk and the assembly of a job, then remove its files.

        Returns how many tasks were stopped. Waits (bounded) for the agents to exit so that
        nothing writes into the job directory after it is removed.
        """
        n = await self.tasks.cancel(self.tasks.find(WORK_KINDS, job=job_id), timeout=CANCEL_WAIT_S)
        await self.claims.cleanup_job_dir(job_id)
        self.job_progress(job_id).touch()
        return n

    # -- assembly ------------------------------------------------------------------------

    def assemble_if_ready(self, job_id: str) -> None:
        """Assemble a running job whose chunks are all verified (a retried job whose assembly failed)."""
        self._spawn_assembly(job_id)

    def _spawn_assembly(self, job_id: str) -> None:
        if not self.tasks.find(Kind.ASSEMBLE, job=job_id):
            self.tasks.spawn(self._assemble(job_id), Kind.ASSEMBLE, job=job_id)

    async def _assemble(self, job_id: str) -> None:
        store = self.store
        try:
            job = await asyncio.shield(store.mark_job_assembling(job_id))
            if job is None:
                return
            chunks = await store.get_chunks(job_id)
            work_dir = self.config.state_dir / "jobs" / job_id
            digest, frames = await assemble_output(job, chunks, work_dir, self.config.timeouts.assemble)
            await asyncio.shield(store.mark_job_done(job_id, digest))
            log.info("[job=%s] done: %s (%d frames)", job_id, job.output, frames)
            await self.claims.cleanup_job_dir(job_id, keep=job_settings(job).keep_frames)
        except asyncio.CancelledError:
            raise
        except Exception as exc:  # noqa: BLE001 - the job ends failed, whatever stopped its assembly
            if isinstance(exc, RenderdError | OSError):
                log.error("[job=%s] assembly failed: %s", job_id, exc)
                why = f"assembly failed: {exc}"
            else:
                log.error("[job=%s] assembly failed unexpectedly: %r", job_id, exc, exc_info=exc)
                why = f"assembly failed: {type(exc).__name__}: {exc}"

            async def failed() -> None:
                await store.mark_job_failed(job_id, why)

            await self.claims.settle(failed, f"[job={job_id}] record the failed assembly")
        finally:
            self.job_progress(job_id).touch()

    # -- shutdown ------------------------------------------------------------------------

    async def close(self) -> None:
        """Stop re-probes, close every host's connection (after drain) and end the tasks left."""
        await self.registry.close()
        await self.tasks.cancel(self.tasks.find(), timeout=CANCEL_WAIT_S)

    def stop_claiming(self) -> None:
        """Take no new chunks (graceful shutdown)."""
        self._claiming = False

    def running_tasks(self) -> list[asyncio.Task[None]]:
        """Return every chunk, speculative copy and assembly task in flight."""
        return self.tasks.find(WORK_KINDS)

    async def drain(self, budget_s: float) -> int:
        """Let in-flight work finish within ``budget_s``; cancel the rest; return how many were cancelled."""
        tasks = self.running_tasks()
        pending: set[asyncio.Task[None]] = set()
        if tasks:
            _, pending = await asyncio.wait(tasks, timeout=budget_s)
        return await self.tasks.cancel(pending, timeout=CANCEL_WAIT_S)
