"""`renderd daemon`: the coordinator's lifecycle and its control-socket operations.

``run()`` = ``startup()`` -> ``serve()`` -> ``shutdown()``. Signal handlers only set flags:
SIGTERM/SIGINT request a graceful stop (no new chunks, in-flight chunks get the shutdown budget,
the rest are handed back to the queue), SIGHUP reloads config and inventory (a broken new
config is logged and the old one kept).
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import logging
import signal
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import TYPE_CHECKING, Any

from renderd import PROTOCOL_VERSION, __version__
from renderd.config import DaemonConfig, Inventory, load_daemon_config, load_inventory
from renderd.coordinator import protocol
from renderd.coordinator.describe import DescribeHost, Describer
from renderd.coordinator.hooks import HookDispatcher
from renderd.coordinator.hostcheck import capabilities, check_hosts, mixed_builds
from renderd.coordinator.hosts import UNUSABLE
from renderd.coordinator.jobview import chunk_state, number_attempts, pace
from renderd.coordinator.models import Job, JobState
from renderd.coordinator.protocol import INVALID_STATE, NOT_FOUND, SHUTTING_DOWN, Request
from renderd.coordinator.retention import Pruner
from renderd.coordinator.scheduler import Scheduler
from renderd.coordinator.sdnotify import Notifier
from renderd.coordinator.server import AccessPolicy, ControlServer, Peer, Reply
from renderd.coordinator.statelock import StateLock
from renderd.coordinator.store import Store
from renderd.coordinator.submit import PrepareScans, plan_submission, waiting_reason
from renderd.errors import ConfigError, ControlError

if TYPE_CHECKING:
    from renderd.coordinator.web import WebServer

log = logging.getLogger(__name__)

WATCH_INTERVAL_S = 1.0
PROBE_STOP_WAIT_S = 10.0
HOOK_DRAIN_S = 10.0  # hooks still running at shutdown then are delivered again at the next start


class Coordinator:
    """The daemon: store, scheduler and control server, with a managed lifecycle."""

    def __init__(
        self,
        config: DaemonConfig,
        inventory: Inventory,
        *,
        config_path: Path | None = None,
        notifier: Notifier | None = None,
        socket_mode: int = 0o660,
    ) -> None:
        self.config = config
        self.inventory = inventory
        self._config_path = config_path
        self._notifier = notifier or Notifier(None, None)
        self._socket_mode = socket_mode
        self._stop = asyncio.Event()
        self._reload_requested = asyncio.Event()
        self.store: Store | None = None
        self.scheduler: Scheduler | None = None
        self.server: ControlServer | None = None
        self._probe_task: asyncio.Task[None] | None = None  # the probe of the latest reload
        self._lock: StateLock | None = None
        self.web: WebServer | None = None  # the dashboard and /metrics ([web]), if configured
        self.hooks: HookDispatcher | None = None
        self.pruner: Pruner | None = None
        # Submitted compositions are loaded by agents on hosts (never a browser here), results cached.
        self.describer = Describer()
        self.prepare_scans = PrepareScans(self.describer.digester)

    # -- lifecycle -----------------------------------------------------------------------

    async def run(self, *, install_signal_handlers: bool = True) -> None:
        """Start, serve until asked to stop, then shut down gracefully."""
        if install_signal_handlers:
            loop = asyncio.get_running_loop()
            loop.add_signal_handler(signal.SIGTERM, self.request_stop)
            loop.add_signal_handler(signal.SIGINT, self.request_stop)
            loop.add_signal_handler(signal.SIGHUP, self._reload_requested.set)
        await self.startup()
        try:
            await self.serve()
        finally:
            await self.shutdown()

    def request_stop(self) -> None:
        """Ask for a graceful stop (what SIGTERM does)."""
        self._stop.set()

    async def startup(self) -> None:
        """Lock the state dir, open the store, recover in-flight work, listen, and tell systemd we are ready.

        A second daemon on the same state dir stops at the lock, before recovery could touch
        the first one's chunks.
        """
        self._lock = await asyncio.to_thread(StateLock.acquire, self.config.state_dir)
        try:
            await self._open()
        except BaseException:
            if self.store is not None:
                await self.store.close()
            self._lock.release()
            raise

    async def _open(self) -> None:
        access = await self._access_policy(self.config)
        self.store = await Store.open(
            self.config.state_dir / "renderd.db", max_attempts=self.config.scheduling.max_attempts
        )
        report = await self.store.recover()
        if report.chunks_requeued or report.jobs_reassembling:
            log.info(
                "recovered after restart: %d chunk(s) requeued, %d job(s) to reassemble",
                report.chunks_requeued,
                report.jobs_reassembling,
            )
        for host in self.inventory.hosts:
            await self.store.upsert_host(host.name)
        self.scheduler = Scheduler(self.store, self.config, self.inventory)
        self.hooks = HookDispatcher(self.store, self.config)
        await self.hooks.start()
        self.pruner = Pruner(self.store, self.config)
        self.server = ControlServer(self.config.socket, self.handle, access, mode=self._socket_mode)
        await self.server.start()
        log.info("listening on %s with %d host(s)", self.config.socket, len(self.inventory.hosts))
        try:
            await self._start_web()
        except BaseException:
            await self.server.close()
            raise
        self._notifier.ready()
        self._notifier.status(f"serving {len(self.inventory.hosts)} host(s)")

    async def _start_web(self) -> None:
        """Serve the dashboard and /metrics when ``[web]`` asks for them (aiohttp loads only then)."""
        if self.config.web is None:
            return
        assert self.store is not None and self.scheduler is not None
        from renderd.coordinator.metrics import FarmMetrics
        from renderd.coordinator.web import WebServer

        metrics = FarmMetrics()
        self.scheduler.ctx.outcomes = metrics
        web = WebServer(
            self.config.web,
            store=self.store,
            scheduler=self.scheduler,
            handle=self.handle,
            summary=self._summary,
            hosts=self._hosts,
            metrics=metrics,
            source=self.config.source,
        )
        await web.start()
        self.web = web

    @staticmethod
    async def _access_policy(config: DaemonConfig) -> AccessPolicy:
        """The control socket's policy for ``config``; an unknown group is a ConfigError, as in `config check`."""
        gids = await asyncio.to_thread(config.allowed_gids)  # NSS lookups may block
        return AccessPolicy(frozenset(config.allowed_uids), frozenset(gids))

    async def serve(self) -> None:
        """Run the scheduler, the watchdog and reloads until a stop is requested."""
        assert self.scheduler is not None
        async with asyncio.TaskGroup() as tg:
            tg.create_task(self.scheduler.run(self._stop), name="scheduler")
            if self.config.watchdog:
                tg.create_task(self._notifier.run_watchdog(self._stop), name="watchdog")
            tg.create_task(self._reload_loop(), name="reload")
            tg.create_task(self._status_loop(), name="status")
            tg.create_task(self.probe_hosts(), name="probe")
            if self.hooks is not None and self.pruner is not None:
                tg.create_task(self.hooks.run(self._stop), name="hooks")
                tg.create_task(self.pruner.run(self._stop), name="retention")

    async def probe_hosts(self) -> None:
        """Check every host once (at start and after a reload); a host that fails is quarantined.

        The probe only, no self-test frame: start-up stays quick. A host whose install cannot
        render fails its first chunks, is quarantined, and its re-probe renders (scheduler).
        """
        assert self.store is not None
        reports = await check_hosts(self.config, self.inventory, [], render=False)
        for r in reports:
            if r.ok:
                if self.scheduler is not None:
                    self.scheduler.ctx.caps[r.name] = capabilities(r.facts)
                await self.store.upsert_host(r.name, reachable=True)
                continue
            why = "; ".join(r.problems)
            log.warning("[host=%s] unavailable: %s", r.name, why)
            await self.store.record_host_failure(
                r.name,
                why,
                quarantine_after=1,
                backoff_s=self.config.scheduling.quarantine_backoff,
                reachable=False,
            )
        ready = sum(r.ok for r in reports)
        log.info("host probe done: %d of %d host(s) ready", ready, len(reports))
        if (mixed := mixed_builds(reports)) is not None:
            log.warning("%s", mixed)
        if self.scheduler is not None:
            self.scheduler.wake()

    async def _reload_loop(self) -> None:
        while not self._stop.is_set():
            waiter = asyncio.create_task(self._reload_requested.wait())
            stopper = asyncio.create_task(self._stop.wait())
            await asyncio.wait({waiter, stopper}, return_when=asyncio.FIRST_COMPLETED)
            waiter.cancel()
            stopper.cancel()
            if self._reload_requested.is_set() and not self._stop.is_set():
                self._reload_requested.clear()
                with contextlib.suppress(ConfigError):  # logged by reload(); the old config stays
                    await self.reload()

    async def _status_loop(self) -> None:
        while not self._stop.is_set():
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._stop.wait(), 10)
            if self.scheduler is not None:
                running = len(self.scheduler.running_tasks())
                self._notifier.status(f"{running} chunk(s) running on {len(self.inventory.hosts)} host(s)")

    async def reload(self) -> str:
        """Reload config and inventory; keep the old ones if the new ones are invalid."""
        self._notifier.reloading()
        try:
            if self._config_path is not None:
                config = await asyncio.to_thread(load_daemon_config, self._config_path)
            else:
                config = self.config
            inventory = await asyncio.to_thread(load_inventory, config.hosts_file)
            access = await self._access_policy(config)
        except ConfigError as exc:
            problems = "; ".join(exc.problems[:5])
            log.error("reload refused, keeping the running configuration: %s: %s", exc, problems)
            self._notifier.ready()
            raise
        changed_fixed = [k for k in ("socket", "state_dir") if getattr(config, k) != getattr(self.config, k)]
        if changed_fixed:
            log.warning("reload: %s change(s) need a restart; kept the old value(s)", ", ".join(changed_fixed))
            config = dataclasses.replace(config, socket=self.config.socket, state_dir=self.config.state_dir)
        self.config = config
        self.inventory = inventory
        assert self.scheduler is not None and self.store is not None and self.server is not None
        self.server.set_access(access)
        if self.web is not None and config.web is not None:
            await self.web.reload(config.web)
        elif (self.web is None) != (config.web is None):
            log.warning("reload: adding or removing [web] needs a restart")
        self.scheduler.config = config
        if self.hooks is not None and self.pruner is not None:
            self.hooks.config = self.pruner.config = config
        self.scheduler.apply_inventory(inventory)
        for host in inventory.hosts:
            await self.store.upsert_host(host.name)
        log.info("reloaded: %d host(s)", len(inventory.hosts))
        await self._log_waiting_jobs()
        # The new inventory's probe supersedes one still running from an earlier reload.
        await self._stop_probe()
        self._probe_task = asyncio.create_task(self.probe_hosts(), name="probe")
        self._probe_task.add_done_callback(_log_probe_failure)
        self._notifier.ready()
        return f"reloaded: {len(inventory.hosts)} host(s)"

    async def _log_waiting_jobs(self) -> None:
        """Warn about unfinished jobs that no host of the (new) inventory may take: they stay queued."""
        assert self.store is not None
        for job in await self.store.list_jobs(states=[JobState.QUEUED, JobState.RUNNING], limit=10_000):
            waits = waiting_reason(job.params.get("require") or (), self.inventory, caps=self._caps())
            if waits:
                log.warning("[job=%s] waits until a host carries its labels: %s", job.id, waits)

    async def _stop_probe(self) -> None:
        task, self._probe_task = self._probe_task, None
        if task is not None and not task.done():
            task.cancel()
            await asyncio.wait([task], timeout=PROBE_STOP_WAIT_S)

    async def shutdown(self) -> None:
        """Stop accepting, drain in-flight chunks within the budget, hand back the rest, close."""
        self._notifier.stopping()
        if self.server is not None:
            self.server.stop_accepting()
        if self.scheduler is not None:
            self.scheduler.stop_claiming()
            cancelled = await self.scheduler.drain(self.config.timeouts.shutdown)
            if cancelled:
                log.warning("shutdown: %d chunk(s) did not finish in time and were requeued", cancelled)
            await self.scheduler.close()
        await self._drain_hooks()
        await self._stop_probe()
        if self.web is not None:
            await self.web.stop()
        if self.server is not None:
            await self.server.close()
        if self.store is not None:
            await self.store.close()
        if self._lock is not None:
            self._lock.release()
        log.info("stopped")

    async def _drain_hooks(self) -> None:
        """Queue the hooks of jobs that ended in the drain; unfinished deliveries wait for the next start."""
        if self.hooks is None or self.store is None:
            return
        with contextlib.suppress(Exception):  # a failing store must not stop the shutdown
            await self.hooks.scan()
        left = await self.hooks.drain(HOOK_DRAIN_S)
        if left:
            log.warning("shutdown: %d hook delivery(ies) unfinished; delivered again at the next start", left)

    # -- control operations ----------------------------------------------------------------

    async def handle(self, request: Request, peer: Peer) -> Reply:
        """Answer one control request."""
        assert self.store is not None and self.scheduler is not None
        f = request.fields
        op = request.op
        if op == "version":
            return protocol.ok(version=__version__, protocol=PROTOCOL_VERSION)
        if op == "submit":
            if self._stop.is_set():
                raise ControlError(SHUTTING_DOWN, "the daemon is shutting down")
            speeds = [h.speed_fps for h in await self.store.list_hosts() if h.speed_fps]
            describe_hosts = await self._describe_hosts()
            job_spec, chunks = await plan_submission(
                f,
                peer,
                self.config,
                self.describer,
                describe_hosts,
                self.prepare_scans,
                slots=self.scheduler.total_slots(),
                slot_fps=sum(speeds) / len(speeds) if speeds else None,
                inventory=self.inventory,
                caps=self._caps(),
                shares=self.scheduler.slot_shares(),
            )
            job = await asyncio.shield(self.store.create_job(job_spec, chunks))
            log.info("[job=%s] submitted by uid %d: %s (%d chunks)", job.id, peer.uid, job.output, len(chunks))
            self.scheduler.wake()
            return protocol.ok(job=job.to_dict(), chunks=len(chunks), **self._waits(job, describe_hosts))
        if op == "status":
            return protocol.ok(**await self._status(f["job"]))
        if op == "list":
            jobs = await self.store.list_jobs(limit=f.get("limit") or 100)
            return protocol.ok(jobs=[await self._summary(j) for j in jobs])
        if op == "watch":
            await self._job(f["job"])
            return self._watch(f["job"])
        job_ops = {"cancel": self._cancel, "retry": self._retry}
        if op in job_ops:
            return await job_ops[op](f["job"])
        if op == "logs":
            await self._job(f["job"])
            events = await self.store.get_events(f["job"], limit=10_000)
            return protocol.ok(events=[e.to_dict() for e in events])
        if op == "hosts":
            return protocol.ok(hosts=await self._hosts())
        if op in ("drain", "undrain"):
            if self.inventory.get(f["host"]) is None:
                raise ControlError(NOT_FOUND, f"no host {f['host']!r} in the inventory")
            state = await self.store.set_drained(f["host"], op == "drain")
            self.scheduler.wake()
            return protocol.ok(host=state.to_dict())
        if op == "reload":
            try:
                return protocol.ok(message=await self.reload())
            except ConfigError as exc:
                raise ControlError(protocol.BAD_INPUT, f"{exc}: {'; '.join(exc.problems[:5])}") from None
        raise ControlError(protocol.UNKNOWN_OP, f"unknown op {op!r}")

    def _waits(self, job: Job, usable: list[DescribeHost]) -> dict[str, str]:
        """A submit reply's warning when no host that may take the new job takes work now.

        The job is accepted all the same: a drained or quarantined carrier may come back.
        """
        waits = waiting_reason(
            job.params.get("require") or (), self.inventory, {h.name for h in usable}, caps=self._caps()
        )
        if waits is None:
            return {}
        log.warning("[job=%s] waits: %s", job.id, waits)
        return {"warning": f"the job waits: {waits}"}

    async def _describe_hosts(self) -> list[DescribeHost]:
        """Hosts a submission may be described on, best first: local ones, then inventory order.

        Drained, quarantined, disabled and retired hosts are left out.
        """
        assert self.store is not None and self.scheduler is not None
        states = {h.name: h.state.value for h in await self.store.list_hosts()}
        usable = [
            DescribeHost(rt.config.name, rt.transport, rt.config.is_local, self.scheduler.ctx.labels(rt.config))
            for rt in self.scheduler.hosts.values()
            if rt.config.enabled and not rt.retired and states.get(rt.config.name) not in UNUSABLE
        ]
        return sorted(usable, key=lambda h: not h.local)

    def _caps(self) -> dict[str, frozenset[str]]:
        """Each host's probed capability labels (none known before the scheduler exists)."""
        return self.scheduler.ctx.caps if self.scheduler is not None else {}

    async def _job(self, job_id: str) -> Job:
        assert self.store is not None
        job = await self.store.get_job(job_id)
        if job is None:
            raise ControlError(NOT_FOUND, f"no job {job_id!r}")
        return job

    async def _summary(self, job: Job) -> dict[str, Any]:
        assert self.scheduler is not None and self.store is not None
        chunks = await self.store.get_chunks(job.id)
        progress = self.scheduler.job_progress(job.id)
        verified = [c for c in chunks if c.state.value == "verified"]
        done = sum(c.end - c.start for c in verified) + sum(
            n for i, n in progress.frames_done.items() if i not in {c.index for c in verified}
        )
        frames_done = min(done, job.frames)
        return {
            **job.to_dict(),
            "frames": job.frames,
            "frames_done": frames_done,
            "chunks_total": len(chunks),
            "chunks_verified": len(verified),
            **pace(
                state=job.state.value,
                started_at=job.started_at,
                finished_at=job.finished_at,
                frames_done=frames_done,
                frames=job.frames,
                now=time.time(),
            ).to_dict(),
        }

    async def _status(self, job_id: str) -> dict[str, Any]:
        assert self.store is not None
        job = await self._job(job_id)
        waits = None
        if not job.state.finished and job.params.get("require"):
            usable = {h.name for h in await self._describe_hosts()}
            waits = waiting_reason(job.params["require"], self.inventory, usable, caps=self._caps())
        chunks = [c.to_dict() for c in await self.store.get_chunks(job_id)]
        return {
            "job": {**await self._summary(job), "waiting": waits},
            "chunks": [{**c, "state": chunk_state(c["state"], job.state.value)} for c in chunks],
            "attempts": number_attempts([a.to_dict() for a in await self.store.get_attempts(job_id)]),
        }

    async def _watch(self, job_id: str) -> AsyncIterator[bytes]:
        assert self.scheduler is not None and self.store is not None
        progress = self.scheduler.job_progress(job_id)
        while True:
            progress.changed.clear()
            job = await self._job(job_id)
            summary = await self._summary(job)
            running = {i: h for i, h in progress.hosts.items()}
            final = job.state.finished
            yield protocol.ok(event={**summary, "hosts": running, "final": final, "ts": time.time()})
            if final:
                return
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(progress.changed.wait(), WATCH_INTERVAL_S)

    async def _cancel(self, job_id: str) -> bytes:
        assert self.store is not None and self.scheduler is not None
        await self._job(job_id)
        stopped = await asyncio.shield(self.store.cancel_job(job_id))
        if stopped is None:
            job = await self._job(job_id)
            raise ControlError(protocol.INVALID_STATE, f"job {job_id} is already {job.state.value}")
        n = await self.scheduler.cancel_job(job_id)
        log.info("[job=%s] cancelled (%d task(s) stopped)", job_id, n)
        return protocol.ok(job=(await self._job(job_id)).to_dict(), stopped=n)

    async def _retry(self, job_id: str) -> bytes:
        """Requeue a failed job's unverified chunks; its verified chunks are kept, not rendered again."""
        assert self.store is not None and self.scheduler is not None
        job = await self._job(job_id)
        if job.state is not JobState.FAILED:
            raise ControlError(INVALID_STATE, f"job {job_id} is {job.state.value}; only a failed job can be retried")
        for c in await self.store.get_chunks(job_id):
            if c.state.value == "verified" and not await asyncio.to_thread(Path(c.output_path or "").is_file):
                why = f"the file of its verified chunk {c.index} is gone; submit it again"
                raise ControlError(INVALID_STATE, f"job {job_id} cannot be retried: {why}")
        result = await asyncio.shield(self.store.retry_job(job_id))
        if result is None:
            job = await self._job(job_id)
            raise ControlError(INVALID_STATE, f"job {job_id} is {job.state.value}; only a failed job can be retried")
        job, requeued = result
        if not requeued:
            self.scheduler.assemble_if_ready(job_id)
        log.info("[job=%s] retried: %d chunk(s) requeued", job_id, requeued)
        self.scheduler.wake()
        return protocol.ok(job=job.to_dict(), requeued=requeued)

    async def _hosts(self) -> list[dict[str, Any]]:
        assert self.store is not None and self.scheduler is not None
        states = {h.name: h for h in await self.store.list_hosts()}
        out = []
        for h in self.inventory.hosts:
            rt = self.scheduler.hosts.get(h.name)
            st = states.get(h.name)
            out.append(
                {
                    "name": h.name,
                    "address": h.address,
                    "enabled": h.enabled,
                    "slots": h.slots,
                    "slots_in_use": len(rt.running) if rt else 0,
                    "state": st.state.value if st else "unknown",
                    "speed_fps": st.speed_fps if st else None,
                    "consecutive_failures": st.consecutive_failures if st else 0,
                    "quarantined_until": st.quarantined_until if st else None,
                    "last_error": st.last_error if st else None,
                }
            )
        return out


def _log_probe_failure(task: asyncio.Task[None]) -> None:
    if not task.cancelled() and task.exception() is not None:
        log.error("host probe after reload failed", exc_info=task.exception())
