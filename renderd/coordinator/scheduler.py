"""Hand chunks to host slots as they free up, follow the agents, verify chunks, assemble jobs.

Chunks are claimed from the store one at a time when a slot is free (not pre-assigned), so a
fast host simply takes more chunks. Every state change is committed to the store before it is
acted upon; store writes run under ``asyncio.shield`` so a cancellation never loses one.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import shutil
import statistics
import time
from dataclasses import dataclass, field
from fractions import Fraction
from pathlib import Path
from typing import Any

from renderd.assignment import Assignment
from renderd.composition import Overrides
from renderd.config import DaemonConfig, HostConfig, Inventory
from renderd.coordinator.hostcheck import check_host
from renderd.coordinator.models import AttemptOutcome, Chunk, Claim, Job, JobState
from renderd.coordinator.ssh import HostUnavailable
from renderd.coordinator.store import Store
from renderd.coordinator.transport import AgentFailed, Transport
from renderd.coordinator.transports import make_transport
from renderd.encode import concat_videos, probe_video, sha256_file_async
from renderd.errors import RenderdError
from renderd.frames import Fps, FrameRange
from renderd.hyperframes.audio import add_composition_audio

log = logging.getLogger(__name__)

IDLE_POLL_S = 2.0
UNUSABLE = ("drained", "quarantined")
# A chunk running this many times longer than the job's chunks have taken so far (and at least
# SPECULATE_MIN_S) gets a speculative copy on an idle host once the queue is empty.
SPECULATE_FACTOR = 1.5
SPECULATE_MIN_S = 5.0
CANCEL_WAIT_S = 30.0  # agents get their stdin closed, then signals after a grace period


class ContextLog(logging.LoggerAdapter[logging.Logger]):
    """Prefix every message with a context such as ``[host=r3 job=j-.. chunk=4]``."""

    def __init__(self, logger: logging.Logger, context: str) -> None:
        super().__init__(logger, {})
        self.context = context

    def process(self, msg: Any, kwargs: Any) -> tuple[Any, Any]:
        return f"{self.context} {msg}", kwargs


@dataclass
class HostRuntime:
    """A host as the scheduler sees it now: its transport and the chunks it is running."""

    config: HostConfig
    transport: Transport
    running: dict[tuple[str, int], asyncio.Task[None]] = field(default_factory=dict)
    speculative: dict[tuple[str, int], asyncio.Task[None]] = field(default_factory=dict)
    retired: bool = False  # removed from the inventory by a reload: finish, take nothing new

    @property
    def free_slots(self) -> int:
        if self.retired or not self.config.enabled:
            return 0
        return self.config.slots - len(self.running) - len(self.speculative)


@dataclass(frozen=True, slots=True)
class InFlight:
    """A chunk being rendered: where, since when, how many frames."""

    host: str
    started: float
    frames: int


@dataclass
class JobProgress:
    """Live, in-memory progress of a job (the store keeps the durable part)."""

    frames_done: dict[int, int] = field(default_factory=dict)
    hosts: dict[int, str] = field(default_factory=dict)
    changed: asyncio.Event = field(default_factory=asyncio.Event)

    def touch(self) -> None:
        self.changed.set()


class Scheduler:
    """Run the job queue over the inventory's hosts."""

    def __init__(self, store: Store, config: DaemonConfig, inventory: Inventory) -> None:
        self.store = store
        self.config = config
        self.hosts: dict[str, HostRuntime] = {}
        self.progress: dict[str, JobProgress] = {}
        self._wake = asyncio.Event()
        self._claiming = True
        self._assembling: dict[str, asyncio.Task[None]] = {}
        self._staging: dict[tuple[str, str], asyncio.Task[str]] = {}
        self._inflight: dict[tuple[str, int], InFlight] = {}
        self._frame_seconds: dict[str, list[float]] = {}  # per job: seconds per frame of verified chunks
        self._background: set[asyncio.Task[None]] = set()
        self._probing: dict[str, asyncio.Task[None]] = {}  # quarantined hosts being re-probed
        self.apply_inventory(inventory)

    # -- configuration -----------------------------------------------------------------

    def apply_inventory(self, inventory: Inventory) -> None:
        """Take a (re)loaded inventory: new hosts join, removed ones finish and retire."""
        names = {h.name for h in inventory.hosts}
        for h in inventory.hosts:
            current = self.hosts.get(h.name)
            if current is None or current.config != h:
                running = current.running if current else {}
                self.hosts[h.name] = HostRuntime(h, make_transport(h, self.config), running)
                if current is not None:
                    # The old connection may still serve running chunks: close it once they are done.
                    self._spawn(self._close_when_idle(current))
        for name, rt in self.hosts.items():
            if name not in names:
                rt.retired = True
        self.wake()

    def _spawn(self, coro: Any) -> None:
        task = asyncio.get_running_loop().create_task(coro)
        self._background.add(task)
        task.add_done_callback(self._background.discard)

    async def _close_when_idle(self, rt: HostRuntime) -> None:
        pending = [*rt.running.values(), *rt.speculative.values()]
        if pending:
            await asyncio.wait(pending)
        await rt.transport.close()

    def total_slots(self) -> int:
        """Return the slots of every enabled, current host."""
        return sum(rt.config.slots for rt in self.hosts.values() if rt.config.enabled and not rt.retired)

    def wake(self) -> None:
        """Look for work now (a job arrived, a slot freed up)."""
        self._wake.set()

    def job_progress(self, job_id: str) -> JobProgress:
        """Return the live progress record of a job."""
        return self.progress.setdefault(job_id, JobProgress())

    # -- main loop ---------------------------------------------------------------------

    async def run(self, stop: asyncio.Event) -> None:
        """Fill free slots until ``stop`` is set."""
        await self._resume_assembly()
        while not stop.is_set():
            self._wake.clear()
            await self._fill_slots()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._wake.wait(), IDLE_POLL_S)

    async def _resume_assembly(self) -> None:
        """After a restart: jobs whose chunks were all verified still need their output."""
        for job in await self.store.list_jobs(states=[JobState.RUNNING], limit=10_000):
            if await self.store.job_all_verified(job.id):
                self._spawn_assembly(job.id)

    async def _fill_slots(self) -> None:
        if not self._claiming:
            return
        usable = []
        for name, rt in list(self.hosts.items()):
            state = await self.store.get_host(name)
            if not rt.config.enabled or rt.retired or (state is not None and state.state.value in UNUSABLE):
                continue
            if state is not None and state.quarantined_until is not None:
                # Its quarantine has run out: the host gets work again only once the probe passes.
                self._reprobe(rt)
                continue
            usable.append(name)
        # A chunk that failed on a host is retried elsewhere while there is an elsewhere.
        avoid = len(usable) > 1
        for name in usable:
            rt = self.hosts[name]
            while rt.free_slots > 0 and self._claiming:
                claim = await asyncio.shield(self.store.claim_chunk(name, avoid_own_failures=avoid))
                if claim is None:
                    await self._maybe_speculate(rt)
                    break
                key = (claim.chunk.job_id, claim.chunk.index)
                rt.running[key] = asyncio.create_task(self._run_claim(rt, claim), name=f"chunk-{key}")

    # -- quarantined hosts ---------------------------------------------------------------

    def _reprobe(self, rt: HostRuntime) -> None:
        name = rt.config.name
        if name not in self._probing:
            task = asyncio.get_running_loop().create_task(self._probe_host(rt), name=f"reprobe-{name}")
            self._probing[name] = task
            task.add_done_callback(lambda _t: self._probing.pop(name, None))

    async def _probe_host(self, rt: HostRuntime) -> None:
        """Probe a host whose quarantine ran out (as `hosts check` does): back in service, or a longer quarantine."""
        name = rt.config.name
        # With the self-test frame: the cheap probe passes a host whose install cannot render
        # (it would be back only to fail chunks again); one frame per quarantine period is cheap.
        report = await check_host(rt.transport, name, self.config, render=True)
        problems, reachable = report.problems, report.reachable
        if not reachable:
            await rt.transport.close()
        if not problems:
            log.info("[host=%s] re-probe passed: back in service", name)
            await asyncio.shield(self.store.record_host_success(name))
            self.wake()
            return
        why = "; ".join(problems)
        # The failure count keeps growing: once it passes the quarantine threshold, each failed
        # probe doubles the wait for the next (a host quarantined by its start-up probe, below
        # the threshold, waits the plain backoff until then).
        before = await self.store.get_host(name)
        failures = before.consecutive_failures if before else 0
        after = max(1, min(self.config.scheduling.host_failure_quarantine, failures + 1))
        state = await asyncio.shield(
            self.store.record_host_failure(
                name, f"re-probe failed: {why}", reachable=reachable,
                quarantine_after=after, backoff_s=self.config.scheduling.quarantine_backoff,
            )
        )  # fmt: skip
        wait = (state.quarantined_until or 0) - time.time()
        log.warning("[host=%s] re-probe failed: %s; next probe in %.0f s", name, why, max(0.0, wait))

    # -- stragglers ----------------------------------------------------------------------

    def _expected_seconds(self, job_id: str, frames: int) -> float | None:
        """How long a chunk of ``frames`` should take, from this job's verified chunks so far."""
        samples = self._frame_seconds.get(job_id)
        if not samples:
            return None
        return statistics.median(samples) * frames

    async def _maybe_speculate(self, rt: HostRuntime) -> None:
        """The queue is empty and ``rt`` is idle: copy the worst straggler onto it, if there is one."""
        now = time.monotonic()
        worst: tuple[float, tuple[str, int]] | None = None
        for key, info in self._inflight.items():
            if info.host == rt.config.name or any(key in h.speculative for h in self.hosts.values()):
                continue
            expected = self._expected_seconds(key[0], info.frames)
            if expected is None:
                continue
            late = (now - info.started) / max(expected, 1e-6)
            if (
                now - info.started >= SPECULATE_MIN_S
                and late >= SPECULATE_FACTOR
                and (worst is None or late > worst[0])
            ):
                worst = (late, key)
        if worst is None:
            return
        job_id, index = worst[1]
        attempt = await asyncio.shield(self.store.start_speculative_attempt(job_id, index, rt.config.name))
        if attempt is None:
            return
        log.info(
            "[host=%s job=%s chunk=%d] speculative copy: the chunk runs %.1fx longer than expected",
            rt.config.name, job_id, index, worst[0],
        )  # fmt: skip
        rt.speculative[(job_id, index)] = asyncio.create_task(
            self._run_speculative(rt, job_id, index, attempt.id), name=f"spec-{job_id}-{index}"
        )

    async def _run_speculative(self, rt: HostRuntime, job_id: str, index: int, attempt_id: int) -> None:
        clog = ContextLog(log, f"[host={rt.config.name} job={job_id} chunk={index} speculative]")
        try:
            job = await self.store.get_job(job_id)
            chunk = next((c for c in await self.store.get_chunks(job_id) if c.index == index), None)
            assert job is not None and chunk is not None
            output, sha, frames, fps = await self._render(rt, job, chunk, attempt_id, self.job_progress(job_id))
            won = await asyncio.shield(
                self.store.mark_speculative_verified(
                    job_id, index, attempt_id, output_path=str(output), sha256=sha, frames=frames, fps=fps
                )
            )
            if won is None:
                clog.info("finished second; discarded")
                return
            clog.info("won the race (%d frames, %.1f fps)", frames, fps)
            await asyncio.shield(self.store.record_host_success(rt.config.name, fps))
            self._chunk_won(job_id, index, frames, fps, speculative=True)
            if await self.store.job_all_verified(job_id):
                self._spawn_assembly(job_id)
        except asyncio.CancelledError:
            with contextlib.suppress(Exception):
                await asyncio.shield(
                    self.store.end_attempt(attempt_id, AttemptOutcome.CANCELLED, "the other copy finished first")
                )
            raise
        except (AgentFailed, RenderdError) as exc:
            clog.warning("speculative copy failed: %s", exc)
            await asyncio.shield(self.store.end_attempt(attempt_id, AttemptOutcome.FAILED, str(exc)))
        finally:
            rt.speculative.pop((job_id, index), None)
            self.wake()

    # -- one chunk -----------------------------------------------------------------------

    def _local_chunk_path(self, job_id: str, index: int, attempt_id: int) -> Path:
        return self.config.state_dir / "jobs" / job_id / f"chunk-{index:05d}-a{attempt_id}.mp4"

    async def _staged(self, rt: HostRuntime, job: Job) -> str:
        """Return the composition's path on the host, syncing it once per job and host."""
        key = (rt.config.name, job.id)
        task = self._staging.get(key)
        if task is None or (task.done() and (task.cancelled() or task.exception() is not None)):
            # A prepared copy (remote assets localised at submission) is what hosts render.
            comp = Path(job.params.get("prepared") or job.composition)
            task = asyncio.create_task(rt.transport.stage_composition(job.id, comp))
            self._staging[key] = task
        return await asyncio.shield(task)

    async def _run_claim(self, rt: HostRuntime, claim: Claim) -> None:
        chunk, attempt = claim.chunk, claim.attempt
        key = (chunk.job_id, chunk.index)
        clog = ContextLog(log, f"[host={rt.config.name} job={chunk.job_id} chunk={chunk.index}]")
        progress = self.job_progress(chunk.job_id)
        progress.hosts[chunk.index] = rt.config.name
        started = time.monotonic()
        try:
            job = await self.store.get_job(chunk.job_id)
            assert job is not None
            await asyncio.shield(self.store.mark_chunk_rendering(job.id, chunk.index, attempt.id))
            self._inflight[key] = InFlight(rt.config.name, started, chunk.end - chunk.start)
            output, sha, frames, fps = await self._render(rt, job, chunk, attempt.id, progress)
            await asyncio.shield(self.store.mark_chunk_fetched(job.id, chunk.index, attempt.id))
            verified = await asyncio.shield(
                self.store.mark_chunk_verified(
                    job.id, chunk.index, attempt.id, output_path=str(output), sha256=sha, frames=frames, fps=fps
                )
            )
            if verified is not None:
                self._chunk_won(job.id, chunk.index, frames, fps, speculative=False)
            await asyncio.shield(self.store.record_host_success(rt.config.name, fps))
            clog.info("chunk verified (%d frames, %.1f fps)", frames, fps)
            if verified is not None and await self.store.job_all_verified(job.id):
                self._spawn_assembly(job.id)
        except asyncio.CancelledError:
            # Shutdown or cancel: a cancelled job's attempts are already closed in the store;
            # otherwise give the chunk back without counting it as a failure.
            with contextlib.suppress(Exception):
                await asyncio.shield(
                    self.store.mark_chunk_lost(chunk.job_id, chunk.index, attempt.id, "daemon stopped the chunk")
                )
            raise
        except HostUnavailable as exc:
            # The host, not the chunk, is at fault: requeue without counting an attempt.
            clog.warning("host unavailable: %s", exc)
            await asyncio.shield(self.store.mark_chunk_lost(chunk.job_id, chunk.index, attempt.id, str(exc)))
            await asyncio.shield(
                self.store.record_host_failure(
                    rt.config.name, str(exc), reachable=False,
                    quarantine_after=self.config.scheduling.host_failure_quarantine,
                    backoff_s=self.config.scheduling.quarantine_backoff,
                )
            )  # fmt: skip
            await rt.transport.close()
            progress.touch()
        except (AgentFailed, RenderdError) as exc:
            retry = exc.retryable if isinstance(exc, AgentFailed) else True
            clog.warning("chunk failed: %s", exc)
            failure = await asyncio.shield(
                self.store.mark_chunk_failed(
                    chunk.job_id, chunk.index, attempt.id, str(exc), retry=retry,
                    max_attempts=self.config.scheduling.max_attempts,
                )
            )  # fmt: skip
            if retry:
                await asyncio.shield(
                    self.store.record_host_failure(
                        rt.config.name, str(exc),
                        quarantine_after=self.config.scheduling.host_failure_quarantine,
                        backoff_s=self.config.scheduling.quarantine_backoff,
                    )
                )  # fmt: skip
            if failure is not None:
                for other in failure.stopped:
                    self.cancel_chunk(other.chunk.job_id, other.chunk.index)
                if failure.job_failed:
                    await self._cleanup_job_dir(chunk.job_id)
            progress.touch()
        finally:
            rt.running.pop(key, None)
            self._inflight.pop(key, None)
            self.wake()

    async def _render(
        self, rt: HostRuntime, job: Job, chunk: Chunk, attempt_id: int, progress: JobProgress
    ) -> tuple[Path, str, int, float]:
        """Stage, run the agent, fetch and verify one attempt; return (local file, sha256, frames, fps)."""
        started = time.monotonic()
        marks: dict[str, float] = {}
        comp = await self._staged(rt, job)
        marks["staged"] = time.monotonic()
        remote_out, remote_work = rt.transport.chunk_paths(job.id, chunk.index, attempt_id)
        output = self._local_chunk_path(job.id, chunk.index, attempt_id)
        output.parent.mkdir(parents=True, exist_ok=True)
        assignment = self._assignment(job, chunk, rt.config, comp, remote_out, remote_work)

        def on_event(event: dict[str, Any]) -> None:
            kind = event.get("event")
            if kind == "started":
                marks["agent ready"] = time.monotonic()
            elif kind == "progress":
                marks.setdefault("first frame", time.monotonic())
                done = int(event.get("frames_done", 0))
                progress.frames_done[chunk.index] = max(done, progress.frames_done.get(chunk.index, 0))
                progress.touch()

        done = await rt.transport.run_chunk(assignment, on_event, timeout=self.config.timeouts.chunk)
        marks["agent done"] = time.monotonic()
        await rt.transport.fetch(remote_out, output)
        marks["fetched"] = time.monotonic()
        frames = await self._verify_chunk(output, done, chunk.end - chunk.start)
        marks["verified"] = time.monotonic()
        # Where a chunk's time goes (seconds since the previous mark), for tuning the distributed path.
        steps, last = [], started
        for name, t in sorted(marks.items(), key=lambda kv: kv[1]):
            steps.append(f"{name} +{t - last:.2f}")
            last = t
        log.info("[host=%s job=%s chunk=%d] timing: %s", rt.config.name, job.id, chunk.index, ", ".join(steps))
        return output, str(done["sha256"]), frames, frames / max(1e-6, time.monotonic() - started)

    def _chunk_won(self, job_id: str, index: int, frames: int, fps: float, *, speculative: bool) -> None:
        """A chunk is verified: record its speed, stop the other copy of it, update progress."""
        self._frame_seconds.setdefault(job_id, []).append(1.0 / max(fps, 1e-6))
        progress = self.job_progress(job_id)
        progress.frames_done[index] = frames
        progress.touch()
        for rt in self.hosts.values():
            other = rt.speculative.get((job_id, index)) if not speculative else rt.running.get((job_id, index))
            if other is not None and other is not asyncio.current_task():
                other.cancel()

    def _assignment(self, job: Job, chunk: Chunk, host: HostConfig, comp: str, output: str, work: str) -> Assignment:
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
            format=str(p.get("format") or "jpeg"),
            quality=int(p.get("quality") or 90),
            crf=int(p["crf"]) if p.get("crf") is not None else 18,
            preset=str(p.get("preset") or "veryfast"),
            workers=p.get("workers") or host.workers,
            ready_timeout_s=self.config.timeouts.ready,
        )

    async def _verify_chunk(self, output: Path, done: dict[str, Any], expected: int) -> int:
        if not output.is_file():
            raise RenderdError(f"agent reported {output} but it does not exist")
        info = await probe_video(output)
        if info.frames != expected:
            raise RenderdError(f"chunk {output.name} has {info.frames} frames, expected {expected}")
        digest = await sha256_file_async(output)
        if digest != done.get("sha256"):
            raise RenderdError(f"chunk {output.name} checksum mismatch")
        return info.frames

    def cancel_chunk(self, job_id: str, index: int) -> None:
        """Stop the task running a chunk, if any."""
        for rt in self.hosts.values():
            task = rt.running.get((job_id, index))
            if task is not None:
                task.cancel()

    async def cancel_job(self, job_id: str) -> int:
        """Stop every running chunk and the assembly of a job, then remove its files.

        Returns how many tasks were stopped. Waits (bounded) for the agents to exit so that
        nothing writes into the job directory after it is removed.
        """
        tasks = [
            t
            for rt in self.hosts.values()
            for (jid, _i), t in [*rt.running.items(), *rt.speculative.items()]
            if jid == job_id
        ]
        assembling = self._assembling.get(job_id)
        if assembling is not None:
            tasks.append(assembling)
        for t in tasks:
            t.cancel()
        if tasks:
            await asyncio.wait(tasks, timeout=CANCEL_WAIT_S)
        await self._cleanup_job_dir(job_id)
        self.job_progress(job_id).touch()
        return len(tasks)

    # -- assembly ------------------------------------------------------------------------

    def _spawn_assembly(self, job_id: str) -> None:
        if job_id not in self._assembling:
            self._assembling[job_id] = asyncio.create_task(self._assemble(job_id), name=f"assemble-{job_id}")

    async def _assemble(self, job_id: str) -> None:
        try:
            job = await asyncio.shield(self.store.mark_job_assembling(job_id))
            if job is None:
                return
            chunks = sorted(await self.store.get_chunks(job_id), key=lambda c: c.index)
            parts = [Path(c.output_path or "") for c in chunks]
            out = Path(job.output)
            job_span = FrameRange(job.start_frame, job.end_frame)
            tmp = out.with_name(f".{out.name}.renderd-{job_id}.partial.mp4")
            try:
                async with asyncio.timeout(self.config.timeouts.assemble):
                    video = await concat_videos(parts, tmp)
                    if video.frames != job.frames:
                        raise RenderdError(f"assembled video has {video.frames} frames, expected {job.frames}")
                    # The soundtrack is mixed once over the job's frames, after concatenation.
                    await add_composition_audio(Path(job.composition), _job_overrides(job), job_span, tmp)
                digest = await sha256_file_async(tmp)
                os.replace(tmp, out)
            finally:
                with contextlib.suppress(FileNotFoundError):
                    tmp.unlink()
            await asyncio.shield(self.store.mark_job_done(job_id, digest))
            log.info("[job=%s] done: %s (%d frames)", job_id, out, video.frames)
            await self._cleanup_job_dir(job_id)
        except asyncio.CancelledError:
            raise
        except (RenderdError, OSError) as exc:
            log.error("[job=%s] assembly failed: %s", job_id, exc)
            await asyncio.shield(self.store.mark_job_failed(job_id, f"assembly failed: {exc}"))
        finally:
            self._assembling.pop(job_id, None)
            self.job_progress(job_id).touch()

    async def _cleanup_job_dir(self, job_id: str) -> None:
        """Remove the job's files here and on every host that staged it."""
        hosts = [name for (name, jid) in list(self._staging) if jid == job_id]
        for name in hosts:
            task = self._staging.pop((name, job_id))
            task.cancel()
            rt = self.hosts.get(name)
            if rt is not None:
                try:
                    await rt.transport.cleanup_job(job_id)
                except (RenderdError, OSError) as exc:
                    log.warning("[host=%s job=%s] could not clean up: %s", name, job_id, exc)
        await asyncio.to_thread(shutil.rmtree, self.config.state_dir / "jobs" / job_id, True)

    # -- shutdown ------------------------------------------------------------------------

    async def close(self) -> None:
        """Stop re-probes and close every host's connection (after drain)."""
        probes = list(self._probing.values())
        for task in probes:
            task.cancel()
        if probes:
            await asyncio.wait(probes, timeout=10)
        await asyncio.gather(*(rt.transport.close() for rt in self.hosts.values()), return_exceptions=True)

    def stop_claiming(self) -> None:
        """Take no new chunks (graceful shutdown)."""
        self._claiming = False

    def running_tasks(self) -> list[asyncio.Task[None]]:
        """Return every chunk and assembly task in flight."""
        tasks = [t for rt in self.hosts.values() for t in [*rt.running.values(), *rt.speculative.values()]]
        return tasks + list(self._assembling.values())

    async def drain(self, budget_s: float) -> int:
        """Let in-flight work finish within ``budget_s``; cancel the rest; return how many were cancelled."""
        tasks = self.running_tasks()
        if tasks:
            _, pending = await asyncio.wait(tasks, timeout=budget_s)
        else:
            pending = set()
        for t in pending:
            t.cancel()
        if pending:
            await asyncio.wait(pending, timeout=30)
        return len(pending)


def _job_overrides(job: Job) -> Overrides:
    """Return the metadata the job was planned with, to load its composition the same way."""
    p = job.params
    return Overrides(
        width=int(p["width"]), height=int(p["height"]), fps=Fps.parse(p["fps"]), duration=Fraction(p["duration"])
    )
