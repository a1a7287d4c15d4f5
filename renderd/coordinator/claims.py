"""Claiming chunks and running their attempts: stage, run the agent, fetch, verify, record.

Whatever ends an attempt, it ends in the store: verified, failed (counted, requeued up to
``max_attempts``), lost (the host went away; requeued, not counted) or, when the daemon stops
it, lost as well. Any exception is one of these, a bug included (failed, with its traceback in
the log). A store write that fails while recording the end (a locked or full disk) is queued in
``SchedulerContext.unsettled`` and retried before the next claim, so no chunk stays "rendering"
with nothing running it. The chunk's slot is free as soon as its task ends.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import shutil
from collections.abc import Awaitable, Callable, Collection
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import asyncssh

from renderd.assignment import Assignment
from renderd.capture_cost import positive_int
from renderd.config import HostConfig
from renderd.coordinator.hosts import HostRegistry, HostRuntime, SchedulerContext
from renderd.coordinator.models import Chunk, ChunkState, Claim, Job
from renderd.coordinator.tasks import Kind
from renderd.coordinator.transport import Transport
from renderd.encode import png_part_frames, probe_video, sha256_file_async
from renderd.errors import AgentFailed, HostUnavailable, RenderdError, StoreError
from renderd.formats import Delivery
from renderd.settings import NAMES, RenderSettings

log = logging.getLogger(__name__)

StoreStep = Callable[[], Awaitable[None]]


class ContextLog(logging.LoggerAdapter[logging.Logger]):
    """Prefix every message with a context such as ``[host=r3 job=j-.. chunk=4]``."""

    def __init__(self, logger: logging.Logger, context: str) -> None:
        super().__init__(logger, {})
        self.context = context

    def process(self, msg: Any, kwargs: Any) -> tuple[Any, Any]:
        return f"{self.context} {msg}", kwargs


@dataclass(frozen=True, slots=True)
class InFlight:
    """A chunk being rendered: where, since when, how many frames."""

    host: str
    started: float
    frames: int
    require: frozenset[str] = frozenset()  # the job's required host labels: a copy must run on a carrier


@dataclass
class JobProgress:
    """Live, in-memory progress of a job (the store keeps the durable part)."""

    frames_done: dict[int, int] = field(default_factory=dict)
    hosts: dict[int, str] = field(default_factory=dict)
    changed: asyncio.Event = field(default_factory=asyncio.Event)
    # Bumped by every touch: a reader that must not clear ``changed`` (the dashboard) compares it.
    version: int = 0

    def touch(self) -> None:
        self.version += 1
        self.changed.set()


def is_host_loss(exc: BaseException) -> bool:
    """Whether ``exc`` means the host (its link), not the chunk, is at fault."""
    return isinstance(exc, HostUnavailable | asyncssh.Error | ConnectionError)


class Claims:
    """Claim chunks for free slots and run each attempt to a recorded end."""

    def __init__(self, ctx: SchedulerContext, hosts: HostRegistry, on_all_verified: Callable[[str], None]) -> None:
        self.ctx = ctx
        self.hosts = hosts
        self._on_all_verified = on_all_verified
        self.progress: dict[str, JobProgress] = {}
        self.inflight: dict[tuple[str, int], InFlight] = {}
        self.frame_seconds: dict[str, list[float]] = {}  # per job: seconds per frame of verified chunks
        # The composition synced to a host, per (host, job): the transport it went through and the task.
        self._staging: dict[tuple[str, str], tuple[Transport, asyncio.Task[str]]] = {}
        self._settings: dict[str, RenderSettings] = {}  # per job, parsed from its params once
        # What an agent of a job gets, per (job, host's workers): built (and validated) once, not per chunk.
        self._agent_settings: dict[tuple[str, int | None], RenderSettings] = {}
        self._job_dirs: set[str] = set()  # jobs whose directory in the state dir exists

    def job_progress(self, job_id: str) -> JobProgress:
        """Return the live progress record of a job."""
        return self.progress.setdefault(job_id, JobProgress())

    # -- store writes that must not be lost --------------------------------------------------

    async def settle(self, step: StoreStep, what: str) -> None:
        """Run a store step now; if the store fails, queue it to be retried before the next claim."""
        try:
            await asyncio.shield(step())
        except StoreError as exc:
            log.warning("%s: the store failed (%s); will retry", what, exc)
            self.ctx.unsettled.append(step)

    async def settle_pending(self) -> bool:
        """Retry the queued store steps in order; return True when none is left."""
        while self.ctx.unsettled:
            step = self.ctx.unsettled[0]
            try:
                await asyncio.shield(step())
            except StoreError as exc:
                log.warning("the store still fails (%s); %d write(s) wait", exc, len(self.ctx.unsettled))
                return False
            except Exception:  # a step that can never succeed must not block every claim
                log.exception("a queued store write failed for good; dropped")
            self.ctx.unsettled.pop(0)
        return True

    # -- claiming ----------------------------------------------------------------------------

    async def claim(self, rt: HostRuntime, *, avoid_own_failures: bool) -> Claim | None:
        """Claim the next pending chunk for ``rt`` and start its attempt; None if nothing is pending."""
        name = rt.config.name
        # Claimed and marked rendering in one transaction: the task below starts it at once.
        claim = await asyncio.shield(
            self.ctx.store.claim_chunk(
                name, avoid_own_failures=avoid_own_failures, labels=self.ctx.labels(rt.config), start=True
            )
        )
        if claim is not None:
            chunk = claim.chunk
            self.ctx.tasks.spawn(self.run_claim(rt, claim), Kind.CHUNK, host=name, job=chunk.job_id, index=chunk.index)
        return claim

    async def run_claim(self, rt: HostRuntime, claim: Claim) -> None:
        """Run one claimed attempt to its recorded end."""
        # The transport and config of the claim: a reload may replace the host's while it runs.
        transport, host = rt.transport, rt.config
        chunk, attempt = claim.chunk, claim.attempt
        store, key = self.ctx.store, (chunk.job_id, chunk.index)
        clog = ContextLog(log, f"[host={host.name} job={chunk.job_id} chunk={chunk.index}]")
        progress = self.job_progress(chunk.job_id)
        progress.hosts[chunk.index] = host.name
        requeued = True  # unless it ends verified or stale: then only this host's slot freed up
        try:
            job = claim.job or await store.get_job(chunk.job_id)
            if job is None:
                raise RenderdError(f"job {chunk.job_id} is not in the store")
            started = chunk.state is ChunkState.RENDERING  # claimed with start=True
            if not started and await asyncio.shield(store.mark_chunk_rendering(*key, attempt.id)) is None:
                clog.info("the attempt no longer holds the chunk (cancelled); not started")
                requeued = False
                return
            self.inflight[key] = InFlight(
                host.name, asyncio.get_running_loop().time(), chunk.end - chunk.start, job_requires(job)
            )
            output, sha, frames, fps = await self.render(transport, host, job, chunk, attempt.id, progress)
            # Not awaited: a fetched chunk that a crash forgets is requeued like a rendering one
            # (both are in flight), and the write joins the batch of the verification below.
            write_behind(store.mark_chunk_fetched(job.id, chunk.index, attempt.id), clog.context)
            verify = store.mark_chunk_verified(
                job.id, chunk.index, attempt.id, output_path=str(output), sha256=sha, frames=frames, fps=fps
            )
            verified = await self.record_verified(verify, host.name, job.id, fps)
            clog.info("chunk verified (%d frames, %.1f fps)", frames, fps)
            requeued = False
            if verified is not None:
                self.ctx.outcomes.verified(host.name, frames / max(fps, 1e-6))
                self.chunk_won(job.id, chunk.index, frames, fps, speculative=False)
        except asyncio.CancelledError:
            # Shutdown or cancel: a cancelled job's attempts are already closed in the store;
            # otherwise give the chunk back without counting it as a failure.
            lost = _lost(store, chunk, attempt.id, "daemon stopped the chunk")
            with contextlib.suppress(Exception):
                await self.settle(lost, f"[job={chunk.job_id} chunk={chunk.index}] requeue")
            raise
        except Exception as exc:  # noqa: BLE001 - every way an attempt can end is recorded below
            await self._attempt_failed(transport, host, claim, exc, clog)
        finally:
            self.inflight.pop(key, None)
            progress.touch()
            # A chunk back in the queue may go to any idle host; a freed slot concerns this one.
            if requeued:
                self.ctx.wake()
            else:
                self.ctx.wake_host(host.name)

    async def _attempt_failed(
        self, transport: Transport, host: HostConfig, claim: Claim, exc: Exception, clog: ContextLog
    ) -> None:
        chunk, attempt_id, store = claim.chunk, claim.attempt.id, self.ctx.store
        what = f"[host={host.name} job={chunk.job_id} chunk={chunk.index}]"
        if is_host_loss(exc):
            # The host, not the chunk, is at fault: requeue without counting an attempt.
            why = str(exc) if isinstance(exc, HostUnavailable) else f"host {host.name}: connection lost: {_why(exc)}"
            clog.warning("host unavailable: %s", why)
            self.ctx.outcomes.lost(host.name)
            await self.settle(_lost(store, chunk, attempt_id, why), f"{what} requeue")
            await self.hosts.record_failure(host.name, why, reachable=False)
            with contextlib.suppress(Exception):
                await transport.close()
            return
        if isinstance(exc, RenderdError):
            retry, why = (exc.retryable if isinstance(exc, AgentFailed) else True), str(exc)
            clog.warning("chunk failed: %s", why)
            host_at_fault = retry
        else:
            # A bug or an unforeseen error (a full disk here, a malformed event): the attempt
            # fails and counts, so a chunk that always hits it ends its job instead of looping.
            retry, why, host_at_fault = True, f"{type(exc).__name__}: {exc}", False
            clog.error("chunk failed unexpectedly: %s", why, exc_info=exc)
        self.ctx.outcomes.failed(host.name)
        max_attempts = self.ctx.config.scheduling.max_attempts

        async def failed() -> None:
            failure = await store.mark_chunk_failed(
                chunk.job_id, chunk.index, attempt_id, why, retry=retry, max_attempts=max_attempts
            )
            if failure is not None:
                for other in failure.stopped:
                    self.cancel_chunk(other.chunk.job_id, other.chunk.index)
                if failure.job_failed:
                    # Its verified chunks stay for `renderd retry`; retention removes them in the end.
                    chunks = await store.get_chunks(chunk.job_id)
                    kept = {c.output_path for c in chunks if c.state.value == "verified" and c.output_path}
                    await self.cleanup_job_dir(chunk.job_id, keep_files=kept)
            self.job_progress(chunk.job_id).touch()

        await self.settle(failed, f"{what} record the failure")
        if host_at_fault:
            await self.hosts.record_failure(host.name, why)

    async def record_verified(
        self, verify: asyncio.Future[Chunk | None], host: str, job_id: str, fps: float
    ) -> Chunk | None:
        """Await ``verify`` (a just-made verification call); count the host's speed; assemble the job if complete.

        The speed and the completeness check are asked at once, so they join the verification's
        batch: one store round trip and one transaction for all three. The host's speed counts
        even when the verification came too late (the other copy won): it did render the chunk.
        Returns what ``verify`` returns; raises what it raises.
        """
        store = self.ctx.store
        success = store.record_host_success(host, fps)
        complete = store.job_all_verified(job_id)

        def assemble_if_complete(fut: asyncio.Future[bool]) -> None:
            # A callback, not code after the await below: it runs even if the caller is
            # cancelled meanwhile. ``verify`` ran first in the batch, so it is settled.
            if fut.cancelled() or fut.exception() is not None or not fut.result():
                return
            if not verify.cancelled() and verify.exception() is None and verify.result() is not None:
                self._on_all_verified(job_id)

        complete.add_done_callback(assemble_if_complete)
        both = asyncio.gather(verify, success, complete, return_exceptions=True)
        verified, counted, all_in = await asyncio.shield(both)
        if isinstance(verified, BaseException):
            raise verified
        if isinstance(counted, BaseException):
            log.warning("[host=%s] could not record its speed: %s", host, counted)
        if verified is not None and isinstance(all_in, BaseException):

            async def maybe_assemble() -> None:
                if await store.job_all_verified(job_id):
                    self._on_all_verified(job_id)

            await self.settle(maybe_assemble, f"[job={job_id}] check for assembly")
        return verified

    # -- one attempt ---------------------------------------------------------------------------

    def local_chunk_path(self, job_id: str, index: int, attempt_id: int, ext: str = "mp4") -> Path:
        """Where a fetched chunk lives in the state dir."""
        return self.ctx.config.state_dir / "jobs" / job_id / f"chunk-{index:05d}-a{attempt_id}.{ext}"

    async def _staged(self, transport: Transport, host: str, job: Job) -> str:
        """Return the composition's path on the host, syncing it once per job and transport."""
        key = (host, job.id)
        entry = self._staging.get(key)
        if entry is not None:
            staged_by, task = entry
            failed = task.done() and (task.cancelled() or task.exception() is not None)
            if staged_by is not transport or failed:
                entry = None
        if entry is None:
            # A prepared copy (remote assets localised at submission) is what hosts render.
            comp = Path(job.params.get("prepared") or job.composition)
            task = self.ctx.tasks.spawn(
                transport.stage_composition(job.id, comp), Kind.STAGE, host=host, job=job.id, quiet=True
            )
            self._staging[key] = (transport, task)
        else:
            task = entry[1]
        return await asyncio.shield(task)

    async def render(
        self, transport: Transport, host: HostConfig, job: Job, chunk: Chunk, attempt_id: int, progress: JobProgress
    ) -> tuple[Path, str, int, float]:
        """Stage, run the agent, fetch and verify one attempt; return (local file, sha256, frames, fps)."""
        # The loop's clock (monotonic in the daemon): a simulation on virtual time sees its own speeds.
        clock = asyncio.get_running_loop().time
        started = clock()
        marks: dict[str, float] = {}
        comp = await self._staged(transport, host.name, job)
        marks["staged"] = clock()
        settings = self._job_settings(job)
        ext = _delivery(settings).part_ext
        remote_out, remote_work = transport.chunk_paths(job.id, chunk.index, attempt_id, ext)
        output = self.local_chunk_path(job.id, chunk.index, attempt_id, ext)
        if job.id not in self._job_dirs:  # once per job, not a thread hop per chunk
            await asyncio.to_thread(output.parent.mkdir, parents=True, exist_ok=True)
            self._job_dirs.add(job.id)
        assignment = self._assignment(job, settings, chunk, host, comp, remote_out, remote_work)

        def on_event(event: dict[str, Any]) -> None:
            kind = event.get("event")
            if kind == "started":
                marks["agent ready"] = clock()
            elif kind == "progress":
                marks.setdefault("first frame", clock())
                try:
                    done = int(event.get("frames_done", 0))
                except (TypeError, ValueError):  # progress is advisory: a malformed one is skipped
                    log.debug("[host=%s] malformed progress event: %r", host.name, event)
                    return
                progress.frames_done[chunk.index] = max(done, progress.frames_done.get(chunk.index, 0))
                progress.touch()

        done = await transport.run_chunk(assignment, on_event, timeout=self.ctx.config.timeouts.chunk)
        marks["agent done"] = clock()
        await transport.fetch(remote_out, output)
        marks["fetched"] = clock()
        frames = await _verify_chunk(output, done, chunk.end - chunk.start)
        marks["verified"] = clock()
        # Where a chunk's time goes (seconds since the previous mark), for tuning the distributed path.
        steps, last = [], started
        for name, t in sorted(marks.items(), key=lambda kv: kv[1]):
            steps.append(f"{name} +{t - last:.2f}")
            last = t
        log.info("[host=%s job=%s chunk=%d] timing: %s", host.name, job.id, chunk.index, ", ".join(steps))
        return output, str(done["sha256"]), frames, frames / max(1e-6, clock() - started)

    def chunk_won(self, job_id: str, index: int, frames: int, fps: float, *, speculative: bool) -> None:
        """A chunk is verified: record its speed, stop the other copy of it, update progress."""
        self.frame_seconds.setdefault(job_id, []).append(1.0 / max(fps, 1e-6))
        progress = self.job_progress(job_id)
        progress.frames_done[index] = frames
        progress.touch()
        other = Kind.CHUNK if speculative else Kind.SPECULATIVE
        for task in self.ctx.tasks.find(other, job=job_id, index=index):
            if task is not asyncio.current_task():
                task.cancel()

    def _job_settings(self, job: Job) -> RenderSettings:
        """Return the job's render settings, parsed once per job (they are fixed at submission)."""
        settings = self._settings.get(job.id)
        if settings is None:
            settings = self._settings[job.id] = job_settings(job)
        return settings

    def _assignment(
        self, job: Job, settings: RenderSettings, chunk: Chunk, host: HostConfig, comp: str, output: str, work: str
    ) -> Assignment:
        p = job.params
        return Assignment(
            job_id=job.id,
            chunk_index=chunk.index,
            composition=comp,
            start=chunk.start,
            end=chunk.end,
            total_frames=job.total_frames,
            fps=str(p["fps"]),
            width=int(p["width"]),
            height=int(p["height"]),
            duration=str(p["duration"]),
            output=output,
            work_dir=work,
            settings=self._settings_for_agent(job.id, settings, host.workers or planned_workers(job, host.name)),
        )

    def _settings_for_agent(self, job_id: str, settings: RenderSettings, workers: int | None) -> RenderSettings:
        key = (job_id, workers)
        agent = self._agent_settings.get(key)
        if agent is None:
            # The job is split already: the agent splits its chunk as it sees fit. A job's auto
            # workers are the host's own setting, else auto.
            agent = self._agent_settings[key] = replace(settings, chunks=None, workers=settings.workers or workers)
        return agent

    def cancel_chunk(self, job_id: str, index: int) -> None:
        """Stop the task running a chunk, if any."""
        for task in self.ctx.tasks.find(Kind.CHUNK, job=job_id, index=index):
            task.cancel()

    async def cleanup_job_dir(self, job_id: str, *, keep: bool = False, keep_files: Collection[str] = ()) -> None:
        """Remove the job's files here and on every host that staged it (``keep``: leave them, --keep-frames).

        ``keep_files``: local files of the job's directory that stay (a failed job's verified chunks).
        """
        keys = [k for k in self._staging if k[1] == job_id]
        self._settings.pop(job_id, None)
        for built in [k for k in self._agent_settings if k[0] == job_id]:
            del self._agent_settings[built]
        self._job_dirs.discard(job_id)
        if keep:
            log.info(
                "[job=%s] --keep-frames: the job's directories stay on %s", job_id, ", ".join(k[0] for k in keys) or "-"
            )
        for key in keys:
            transport, task = self._staging.pop(key)
            task.cancel()
            if keep:
                continue
            try:
                await transport.cleanup_job(job_id)
            except Exception as exc:  # noqa: BLE001 - leftovers on a host are logged, not fatal
                log.warning("[host=%s job=%s] could not clean up: %s", key[0], job_id, _why(exc))
        if not keep:
            await asyncio.to_thread(_remove_dir, self.ctx.config.state_dir / "jobs" / job_id, keep_files)


def job_settings(job: Job) -> RenderSettings:
    """Return the render settings a job was submitted with (a job of an older renderd: what it kept)."""
    return RenderSettings.from_dict({k: v for k, v in job.params.items() if k in NAMES and v is not None})


def job_requires(job: Job) -> frozenset[str]:
    """Return the host labels ``job`` was submitted to require (``--require``)."""
    return frozenset(str(label) for label in job.params.get("require") or ())


def job_delivery(job: Job) -> Delivery:
    """Return the output format of ``job`` (mp4 for a job submitted before formats existed)."""
    return _delivery(job_settings(job))


def _delivery(settings: RenderSettings) -> Delivery:
    return Delivery("mp4" if settings.format == "auto" else settings.format, settings.codec, settings.transparent)


def _remove_dir(path: Path, keep_files: Collection[str]) -> None:
    """Remove ``path`` with everything in it but ``keep_files`` (blocking)."""
    if not keep_files:
        shutil.rmtree(path, ignore_errors=True)
        return
    keep = {Path(f) for f in keep_files}
    with contextlib.suppress(FileNotFoundError):
        for entry in path.iterdir():
            if entry in keep:
                continue
            if entry.is_dir() and not entry.is_symlink():
                shutil.rmtree(entry, ignore_errors=True)
            else:
                entry.unlink(missing_ok=True)


def write_behind(write: asyncio.Future[Any], context: str) -> None:
    """Leave a store write to commit in its batch unawaited; a failure is logged, not raised.

    Only for writes whose loss a restart repairs anyway (recovery requeues in-flight chunks).
    """

    def done(fut: asyncio.Future[Any]) -> None:
        if not fut.cancelled() and fut.exception() is not None:
            log.warning("%s a store write failed: %s", context, fut.exception())

    write.add_done_callback(done)


def _lost(store: Any, chunk: Chunk, attempt_id: int, why: str) -> StoreStep:
    async def step() -> None:
        await store.mark_chunk_lost(chunk.job_id, chunk.index, attempt_id, why)

    return step


async def _verify_chunk(output: Path, done: dict[str, Any], expected: int) -> int:
    if not await asyncio.to_thread(output.is_file):
        raise RenderdError(f"agent reported {output} but it does not exist")
    if output.suffix == ".tar":
        frames = len(await asyncio.to_thread(png_part_frames, output))
    else:
        frames = (await probe_video(output)).frames
    if frames != expected:
        raise RenderdError(f"chunk {output.name} has {frames} frames, expected {expected}")
    digest = await sha256_file_async(output)
    if digest != done.get("sha256"):
        raise RenderdError(f"chunk {output.name} checksum mismatch")
    return frames


def _why(exc: BaseException) -> str:
    text = str(exc).strip()
    return text.splitlines()[0] if text else type(exc).__name__


def planned_workers(job: Job, host: str) -> int | None:
    """Return the workers per chunk the job's capture probe chose for ``host`` (None: not measured, or a newer host).

    Chosen with the host's cores shared among its slots, where an agent on its own would count
    every core of the host as its own.
    """
    hosts = job.params.get("calibration", {}).get("hosts", {})
    return positive_int(hosts.get(host, {}).get("workers")) if isinstance(hosts, dict) else None
