"""Speculative copies: a straggling chunk gets a second attempt on an idle host; the first verified wins.

A chunk running ``SPECULATE_FACTOR`` times longer than the job's chunks have taken so far (and
at least ``SPECULATE_MIN_S``) gets a copy once the queue is empty. The copy holds a slot of its
host like a claimed chunk; it ends in the store as verified, cancelled or failed, whatever
stops it.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import statistics

from renderd.coordinator.claims import Claims, ContextLog, StoreStep
from renderd.coordinator.hosts import HostRuntime, SchedulerContext
from renderd.coordinator.models import AttemptOutcome
from renderd.coordinator.tasks import Kind
from renderd.errors import RenderdError

log = logging.getLogger(__name__)

SPECULATE_FACTOR = 1.5
SPECULATE_MIN_S = 5.0


class Speculator:
    """Start and run speculative copies of straggling chunks."""

    def __init__(self, ctx: SchedulerContext, claims: Claims) -> None:
        self.ctx = ctx
        self.claims = claims
        self._medians: dict[str, tuple[int, float]] = {}  # per job: (samples seen, their median)

    def expected_seconds(self, job_id: str, frames: int) -> float | None:
        """How long a chunk of ``frames`` should take, from this job's verified chunks so far."""
        samples = self.claims.frame_seconds.get(job_id)
        if not samples:
            return None
        # The median is kept until the job has new samples: every idle round asks, per straggler.
        cached = self._medians.get(job_id)
        if cached is None or cached[0] != len(samples):
            cached = self._medians[job_id] = (len(samples), statistics.median(samples))
        return cached[1] * frames

    def stragglers(self) -> list[tuple[float, tuple[str, int], str, frozenset[str]]]:
        """Return the in-flight chunks late enough for a copy, worst first.

        Each as (how late, chunk, its host, the labels its job requires).
        """
        now = asyncio.get_running_loop().time()  # the clock InFlight.started was read from
        late = []
        for key, info in self.claims.inflight.items():
            if now - info.started < SPECULATE_MIN_S:
                continue
            if self.ctx.tasks.find(Kind.SPECULATIVE, job=key[0], index=key[1]):
                continue
            expected = self.expected_seconds(key[0], info.frames)
            if expected is None:
                continue
            ratio = (now - info.started) / max(expected, 1e-6)
            if ratio >= SPECULATE_FACTOR:
                late.append((ratio, key, info.host, info.require))
        late.sort(key=lambda item: item[0], reverse=True)
        return late

    async def speculate(self, idle: list[HostRuntime]) -> None:
        """The queue is empty and ``idle`` hosts have free slots: each copies the worst straggler not its own.

        The stragglers are ranked once for all the idle hosts, not once per host.
        """
        late = self.stragglers() if idle else []
        for rt in idle:
            if not late:
                return
            # Not its own chunk, and only a job whose labels this host carries.
            labels = set(self.ctx.labels(rt.config))
            pick = next((item for item in late if item[2] != rt.config.name and item[3] <= labels), None)
            if pick is None:
                continue
            late.remove(pick)
            await self._start(rt, pick[1], pick[0])

    async def maybe_speculate(self, rt: HostRuntime) -> None:
        """The queue is empty and ``rt`` is idle: copy the worst straggler onto it, if there is one."""
        await self.speculate([rt])

    async def _start(self, rt: HostRuntime, key: tuple[str, int], late: float) -> None:
        job_id, index = key
        name = rt.config.name
        attempt = await asyncio.shield(self.ctx.store.start_speculative_attempt(job_id, index, name))
        if attempt is None:
            return
        log.info(
            "[host=%s job=%s chunk=%d] speculative copy: the chunk runs %.1fx longer than expected",
            name, job_id, index, late,
        )  # fmt: skip
        self.ctx.outcomes.speculative(name)
        self.ctx.tasks.spawn(
            self._run(rt, job_id, index, attempt.id), Kind.SPECULATIVE, host=name, job=job_id, index=index
        )

    async def _run(self, rt: HostRuntime, job_id: str, index: int, attempt_id: int) -> None:
        transport, host, store = rt.transport, rt.config, self.ctx.store
        clog = ContextLog(log, f"[host={host.name} job={job_id} chunk={index} speculative]")

        def ended(outcome: AttemptOutcome, why: str) -> StoreStep:
            async def step() -> None:
                await store.end_attempt(attempt_id, outcome, why)

            return step

        try:
            job = await store.get_job(job_id)
            chunk = next((c for c in await store.get_chunks(job_id) if c.index == index), None)
            if job is None or chunk is None:
                raise RenderdError(f"chunk {index} of job {job_id} is not in the store")
            progress = self.claims.job_progress(job_id)
            output, sha, frames, fps = await self.claims.render(transport, host, job, chunk, attempt_id, progress)
            verify = store.mark_speculative_verified(
                job_id, index, attempt_id, output_path=str(output), sha256=sha, frames=frames, fps=fps
            )
            won = await self.claims.record_verified(verify, host.name, job_id, fps)
            if won is None:
                clog.info("finished second; discarded")
                return
            clog.info("won the race (%d frames, %.1f fps)", frames, fps)
            self.ctx.outcomes.verified(host.name, frames / max(fps, 1e-6), speculative=True)
            self.claims.chunk_won(job_id, index, frames, fps, speculative=True)
        except asyncio.CancelledError:
            with contextlib.suppress(Exception):
                await self.claims.settle(ended(AttemptOutcome.CANCELLED, "the other copy finished first"), clog.context)
            raise
        except Exception as exc:  # noqa: BLE001 - the copy's attempt ends failed, whatever stopped it
            if isinstance(exc, RenderdError):
                clog.warning("speculative copy failed: %s", exc)
            else:
                clog.error("speculative copy failed unexpectedly: %s", exc, exc_info=exc)
            why = str(exc) if isinstance(exc, RenderdError) else f"{type(exc).__name__}: {exc}"
            self.ctx.outcomes.failed(host.name)
            await self.claims.settle(ended(AttemptOutcome.FAILED, why), clog.context)
        finally:
            self.ctx.wake_host(host.name)  # a copy never requeues its chunk: only this slot freed up
