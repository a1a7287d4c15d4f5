"""Job hooks: tell URLs and commands that a job ended, without ever holding up the scheduler.

When a job reaches ``done``, its ``on_done`` hooks run; ``failed`` or ``cancelled`` (the job
ended without its output, whoever stopped it) runs its ``on_failed`` hooks. The hooks of a job
are those of ``[hooks]`` in the daemon config plus the job's own ``submit --notify`` targets
(those run on both). A URL is POSTed the job's JSON (:func:`payload`); a command gets the same
JSON on stdin and ``RENDERD_JOB_ID``/``RENDERD_JOB_STATE``/``RENDERD_HOOK`` in its environment,
runs as the daemon's user without a shell, from ``/``. Each delivery is tried up to
``[hooks] attempts`` times, ``backoff`` seconds before the second try and twice as long before
each further one; every failed try is logged.

The scheduler never waits for a hook: :class:`HookDispatcher` follows the job event log on its own
(it reads new events every second) and runs each delivery as its own task. Its bookkeeping is in
that log too, so `renderd logs JOB` shows it: ``hook_queued`` when a delivery is taken on, then
``hook_delivered`` or ``hook_failed``. At start, every queued delivery without an outcome (the
daemon stopped or crashed first) is delivered again: a hook may run twice, never silently not at
all, except for a job that ended in the second before a crash (before its ``hook_queued``).

Who may set what: ``[hooks]`` is the operator's. A submitter's ``--notify`` may be a command only
when the submitter is root or the daemon's own user (anyone else would run code as the daemon);
URLs are accepted from anyone, but a job whose submitter is not one of those is POSTed only to
public addresses or what ``[prepare] allow`` names, checked where the connection is made
(:mod:`renderd.netguard`), and redirects are not followed.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import json
import logging
import os
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlsplit

import httpx

from renderd import __version__, procs
from renderd.config import DaemonConfig, HookTarget, parse_hook_target
from renderd.coordinator.models import Event, Job
from renderd.coordinator.protocol import BAD_INPUT, FORBIDDEN
from renderd.coordinator.store import Store
from renderd.errors import AddressRefused, ControlError, RenderdError, StoreError
from renderd.netguard import literal_address

log = logging.getLogger(__name__)

POLL_S = 1.0  # how often the event log is read for jobs that ended
PAGE = 500
MAX_CONCURRENT = 4  # deliveries in flight at once (commands are processes)
MAX_JOB_TARGETS = 8
MAX_TARGET_CHARS = 2000
# The job state an event ends a job in -> the hook it runs.
HOOK_OF = {"done": "on_done", "failed": "on_failed", "cancelled": "on_failed"}


def privileged(uid: int) -> bool:
    """Whether a submitter with ``uid`` may set command hooks and URLs to any address."""
    return uid in (0, os.getuid())


def job_targets(values: object, uid: int, config: DaemonConfig) -> list[str]:
    """Check a submission's ``notify`` targets for the submitter ``uid``; return them, or raise ControlError."""
    if values is None:
        return []
    if not isinstance(values, list) or not all(isinstance(v, str) for v in values):
        raise ControlError(BAD_INPUT, "notify must be a list of URLs or commands")
    if len(values) > MAX_JOB_TARGETS:
        raise ControlError(BAD_INPUT, f"at most {MAX_JOB_TARGETS} --notify targets per job, got {len(values)}")
    for text in values:
        if len(text) > MAX_TARGET_CHARS:
            raise ControlError(BAD_INPUT, f"--notify {text[:40]!r}...: longer than {MAX_TARGET_CHARS} characters")
        try:
            target = parse_hook_target(text)
        except ValueError as exc:
            raise ControlError(BAD_INPUT, f"--notify: {exc}") from None
        if privileged(uid):
            continue
        if not target.is_url:
            raise ControlError(
                FORBIDDEN,
                f"--notify {text!r}: uid {uid} may not run a command as the daemon's user; "
                "give an http(s) URL, or ask the operator for a [hooks] command",
            )
        host = urlsplit(text).hostname or ""
        ip = literal_address(host)
        if ip is not None and (reason := config.prepare_allow.refusal(host, ip)) is not None:
            raise ControlError(FORBIDDEN, f"--notify {shown(target)}: {reason} (see [prepare] allow)")
    return list(values)


def shown(target: HookTarget) -> str:
    """Return the target as logs show it: a URL's scheme and host (its path may hold a token), a command's program."""
    if target.is_url:
        parts = urlsplit(target.text)
        return f"{parts.scheme}://{parts.netloc.rpartition('@')[2]}/..."
    return target.argv[0]


def target_id(target: HookTarget) -> str:
    """Return a stable short id of the target, so events can name it without its text."""
    return hashlib.sha256(target.text.encode()).hexdigest()[:16]


def payload(job: Job, state: str, hook: str) -> dict[str, Any]:
    """Return the JSON a hook gets: a summary of the job at its end, and the job record itself."""
    record = job.to_dict()
    record["params"] = {k: v for k, v in job.params.items() if k != "notify"}  # other targets' URLs stay private
    render_s = job.finished_at - job.started_at if job.finished_at and job.started_at else None
    return {
        "hook": hook,
        "id": job.id,
        "state": state,
        "output": job.output,
        "error": job.error,
        "label": job.label,
        "frames": job.frames,
        "output_sha256": job.output_sha256,
        "timings": {
            "created_at": job.created_at,
            "started_at": job.started_at,
            "finished_at": job.finished_at,
            "render_s": render_s,
        },
        "job": record,
    }


@dataclass(frozen=True, slots=True)
class Delivery:
    """One hook to run for one end of one job."""

    job_id: str
    hook: str  # "on_done" or "on_failed"
    state: str  # the state the job ended in
    target: HookTarget
    source: str  # "config" ([hooks]) or "job" (--notify)
    finish: int  # the id of the event that ended the job
    trusted: bool  # the operator's, or a privileged submitter's: any address, commands allowed

    @property
    def key(self) -> str:
        """Identify the delivery across restarts (the same job may end again after `renderd retry`)."""
        return f"{self.finish}:{self.source}:{target_id(self.target)}"

    def context(self) -> str:
        """Return the log prefix of the delivery."""
        return f"[job={self.job_id} hook={self.hook} target={shown(self.target)}]"


class HookDispatcher:
    """Follow the job event log and deliver the hooks of every job that ends; every delivery is an owned task."""

    def __init__(self, store: Store, config: DaemonConfig) -> None:
        self.store = store
        self.config = config  # replaced on reload: new deliveries use the new [hooks]
        self._cursor: int | None = None
        self._tasks: set[asyncio.Task[None]] = set()
        self._slots = asyncio.Semaphore(MAX_CONCURRENT)

    async def start(self) -> None:
        """Start after the events already in the log; deliver again what an earlier run left unsettled."""
        self._cursor = await self.store.last_event_id()
        for event in await self.store.unsettled_hooks():
            await self._redeliver(event)

    async def run(self, stop: asyncio.Event) -> None:
        """Read new events each second until ``stop`` is set; a failing store delays hooks, never ends the loop."""
        if self._cursor is None:
            await self.start()
        while not stop.is_set():
            try:
                await self.scan()
            except StoreError as exc:
                log.warning("hooks: the job store failed (%s); retrying in %.0f s", exc, POLL_S)
            except Exception:
                log.exception("hooks: reading the event log failed; retrying in %.0f s", POLL_S)
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), POLL_S)

    async def scan(self) -> None:
        """Queue the hooks of the jobs that ended since the last scan."""
        if self._cursor is None:
            await self.start()
        assert self._cursor is not None
        while True:
            events = await self.store.get_events(after_id=self._cursor, limit=PAGE)
            for event in events:
                hook = HOOK_OF.get(event.kind)
                if hook is not None:
                    await self._job_ended(event, hook)
                self._cursor = event.id
            if len(events) < PAGE:
                return

    def pending(self) -> int:
        """Return how many deliveries are in flight (waiting, sending or backing off)."""
        return sum(not t.done() for t in self._tasks)

    async def drain(self, budget_s: float) -> int:
        """Let deliveries finish within ``budget_s``; cancel the rest (redone at the next start); return how many."""
        tasks = [t for t in self._tasks if not t.done()]
        if not tasks:
            return 0
        _, pending = await asyncio.wait(tasks, timeout=budget_s)
        for t in pending:
            t.cancel()
        if pending:
            await asyncio.wait(pending, timeout=5)
        return len(pending)

    # -- queueing ---------------------------------------------------------------------------

    def _targets(self, job: Job, hook: str) -> list[tuple[HookTarget, str, bool]]:
        configured = self.config.hooks.on_done if hook == "on_done" else self.config.hooks.on_failed
        own = privileged(job.submitted_by_uid)
        out = [(t, "config", True) for t in configured]
        for text in job.params.get("notify") or []:
            try:
                out.append((parse_hook_target(text), "job", own))
            except ValueError as exc:  # checked at submit; a job of another renderd version
                log.warning("[job=%s] --notify %r skipped: %s", job.id, text, exc)
        return out

    async def _job_ended(self, event: Event, hook: str) -> None:
        job = await self.store.get_job(event.job_id)
        if job is None:
            return
        for target, source, trusted in self._targets(job, hook):
            d = Delivery(job.id, hook, event.kind, target, source, event.id, trusted)
            info = {"key": d.key, "hook": hook, "state": d.state, "source": source, "finish": event.id}
            await asyncio.shield(self.store.add_event(job.id, "hook_queued", {**info, "target": shown(target)}))
            self._spawn(d, job)

    async def _redeliver(self, queued: Event) -> None:
        data = queued.data
        job = await self.store.get_job(queued.job_id)
        if job is None:
            return
        hook, key = str(data.get("hook")), str(data.get("key"))
        for target, source, trusted in self._targets(job, hook):
            d = Delivery(job.id, hook, str(data.get("state")), target, source, int(data.get("finish", 0)), trusted)
            if d.key == key:
                log.info("%s delivering again: the daemon stopped before it was settled", d.context())
                self._spawn(d, job)
                return
        why = "the hook is no longer configured"
        await self._record(job.id, "hook_failed", {"key": key, "hook": hook, "error": why, "attempts": 0})

    def _spawn(self, d: Delivery, job: Job) -> None:
        task = asyncio.get_running_loop().create_task(self._deliver(d, job), name=f"hook-{job.id}-{d.key}")
        self._tasks.add(task)
        task.add_done_callback(self._done)

    def _done(self, task: asyncio.Task[None]) -> None:
        self._tasks.discard(task)
        if not task.cancelled() and (exc := task.exception()) is not None:
            log.error("hook task %s failed unexpectedly", task.get_name(), exc_info=exc)

    # -- delivering -------------------------------------------------------------------------

    async def _deliver(self, d: Delivery, job: Job) -> None:
        body = json.dumps(payload(job, d.state, d.hook), sort_keys=True).encode()
        hooks = self.config.hooks
        error, tries = "not tried", 0
        for tries in range(1, hooks.attempts + 1):
            async with self._slots:
                error, final = await self._send(d, body)
            if not error:
                log.info("%s delivered (attempt %d)", d.context(), tries)
                await self._record(d.job_id, "hook_delivered", {"key": d.key, "hook": d.hook, "attempts": tries})
                return
            log.warning("%s attempt %d of %d failed: %s", d.context(), tries, hooks.attempts, error)
            if final or tries == hooks.attempts:
                break
            await asyncio.sleep(hooks.backoff * 2 ** (tries - 1))
        log.error("%s gave up after %d attempt(s): %s", d.context(), tries, error)
        info = {"key": d.key, "hook": d.hook, "target": shown(d.target), "attempts": tries, "error": error}
        await self._record(d.job_id, "hook_failed", info)

    async def _record(self, job_id: str, kind: str, data: dict[str, Any]) -> None:
        try:
            await asyncio.shield(self.store.add_event(job_id, kind, data))
        except StoreError as exc:  # the job was pruned meanwhile, or the disk is full: the log line stays
            log.warning("[job=%s] could not record %s: %s", job_id, kind, exc)

    async def _send(self, d: Delivery, body: bytes) -> tuple[str, bool]:
        """Try the delivery once; return ("", _) on success, else (why, whether retrying is pointless)."""
        timeout = self.config.hooks.timeout
        if d.target.is_url:
            return await self._post(d, body, timeout)
        env = {**os.environ, "RENDERD_JOB_ID": d.job_id, "RENDERD_JOB_STATE": d.state, "RENDERD_HOOK": d.hook}
        try:
            await procs.run(d.target.argv, timeout=timeout, stdin=body, env=env, cwd="/")
        except RenderdError as exc:
            return str(exc), False
        return "", False

    async def _post(self, d: Delivery, body: bytes, timeout: float) -> tuple[str, bool]:
        headers = {
            "Content-Type": "application/json",
            "User-Agent": f"renderd/{__version__}",
            "X-Renderd-Job": d.job_id,
            "X-Renderd-Hook": d.hook,
        }
        client = self._client(d, timeout)
        try:
            async with client, asyncio.timeout(timeout):
                resp = await client.post(d.target.text, content=body, headers=headers)
        except TimeoutError:
            return f"no answer within {timeout:g} s", False
        except AddressRefused as exc:
            return f"refused: {exc} (see [prepare] allow)", True
        except httpx.HTTPError as exc:
            return (str(exc).strip() or type(exc).__name__).splitlines()[0], False
        if not 200 <= resp.status_code < 300:
            return f"HTTP {resp.status_code} {resp.reason_phrase}".strip(), False
        return "", False

    def _client(self, d: Delivery, timeout: float) -> httpx.AsyncClient:
        if d.trusted:
            return httpx.AsyncClient(timeout=timeout, follow_redirects=False)
        from renderd.prepare.fetch import GuardedClient  # the guard of untrusted URLs; prepare's own

        return GuardedClient(self.config.prepare_allow, timeout=timeout, follow_redirects=False)
