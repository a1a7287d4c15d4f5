"""The scheduler's view of the render hosts: their transports, inventory reloads, quarantine re-probes.

A host's tasks are owned by the task registry under the host's name, so a reload that changes a
host's configuration keeps them counted against its slots and cancellable; the transport they
started on is closed once they are done. A host removed by a reload finishes what it runs and
takes nothing new; added back, it gets a fresh transport and work again.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from renderd.capture_cost import SlotShare, positive_int
from renderd.config import DaemonConfig, HostConfig, Inventory
from renderd.coordinator.hostcheck import capabilities, check_host
from renderd.coordinator.outcomes import ChunkOutcomes
from renderd.coordinator.store import Store
from renderd.coordinator.tasks import SLOT_KINDS, Kind, TaskRegistry
from renderd.coordinator.transport import Transport
from renderd.coordinator.transports import make_transport
from renderd.errors import HostUnavailable, StoreError

log = logging.getLogger(__name__)

UNUSABLE = ("drained", "quarantined")
CLOSE_WAIT_S = 10.0


@dataclass
class SchedulerContext:
    """What the scheduler's parts share: the store, the current config, the task owner, the wake-up."""

    store: Store
    config: DaemonConfig
    tasks: TaskRegistry = field(default_factory=TaskRegistry)
    wake_event: asyncio.Event = field(default_factory=asyncio.Event)
    # Store writes that failed (a locked or full disk) and are retried before the next claim:
    # an attempt that ended here is never left "rendering" there.
    unsettled: list[Callable[[], Any]] = field(default_factory=list)
    outcomes: ChunkOutcomes = field(default_factory=ChunkOutcomes)  # counted for /metrics
    # What the next scheduling round looks at: every host, or only these (their slots freed up).
    # A finished chunk wakes its own host, not a round over the whole farm.
    full_round: bool = True
    woken_hosts: set[str] = field(default_factory=set)
    # Capability labels of each host from its last passed probe (hostcheck.capabilities).
    caps: dict[str, frozenset[str]] = field(default_factory=dict)
    # Each host's CPUs from its last passed probe: the planner shares them among its slots.
    cores: dict[str, int] = field(default_factory=dict)

    def probed(self, name: str, facts: dict[str, Any]) -> None:
        """Keep what a passed probe of host ``name`` said that claims and the planner use."""
        self.caps[name] = capabilities(facts)
        if (cpus := positive_int(facts.get("cpus"))) is not None:
            self.cores[name] = cpus

    def labels(self, host: HostConfig) -> tuple[str, ...]:
        """Return ``host``'s inventory labels and its probed capabilities (what claims match jobs by)."""
        return (*host.labels, *sorted(self.caps.get(host.name, ())))

    def wake(self) -> None:
        """Look for work for every host now (a job arrived, a chunk was requeued, the hosts changed)."""
        self.full_round = True
        self.wake_event.set()

    def wake_host(self, name: str) -> None:
        """Look for work for ``name`` now (one of its slots freed up)."""
        self.woken_hosts.add(name)
        self.wake_event.set()

    def next_round(self) -> set[str] | None:
        """Take what the next round looks at: None for every host, else the woken hosts."""
        hosts = None if self.full_round else self.woken_hosts
        self.full_round, self.woken_hosts = False, set()
        return hosts


@dataclass
class HostRuntime:
    """A host as the scheduler sees it now: its config, its transport and (via the registry) its tasks."""

    config: HostConfig
    transport: Transport
    tasks: TaskRegistry
    retired: bool = False  # removed from the inventory by a reload: finish, take nothing new

    @property
    def running(self) -> dict[tuple[str, int], asyncio.Task[Any]]:
        """The claimed chunks running on the host, by (job, chunk index)."""
        return self._by_chunk(Kind.CHUNK)

    @property
    def speculative(self) -> dict[tuple[str, int], asyncio.Task[Any]]:
        """The speculative copies running on the host, by (job, chunk index)."""
        return self._by_chunk(Kind.SPECULATIVE)

    def _by_chunk(self, kind: Kind) -> dict[tuple[str, int], asyncio.Task[Any]]:
        out = {}
        for t in self.tasks.find(kind, host=self.config.name):
            info = self.tasks.info(t)
            if info is not None and info.job is not None and info.index is not None:
                out[(info.job, info.index)] = t
        return out

    @property
    def free_slots(self) -> int:
        """Slots not taken by a chunk or a speculative copy (none when retired or disabled)."""
        if self.retired or not self.config.enabled:
            return 0
        return self.config.slots - self.tasks.count(SLOT_KINDS, self.config.name)


class HostRegistry:
    """The hosts of the current inventory (and removed ones still finishing their chunks)."""

    def __init__(self, ctx: SchedulerContext) -> None:
        self.ctx = ctx
        self.hosts: dict[str, HostRuntime] = {}
        self._current: set[str] = set()  # enabled hosts of the inventory in force

    def apply_inventory(self, inventory: Inventory) -> None:
        """Take a (re)loaded inventory: new hosts join, changed ones get a new transport, removed ones retire."""
        names = {h.name for h in inventory.hosts}
        for h in inventory.hosts:
            current = self.hosts.get(h.name)
            if current is not None and current.config == h and not current.retired:
                continue
            self.hosts[h.name] = HostRuntime(h, make_transport(h, self.ctx.config), self.ctx.tasks)
            if current is not None and not current.retired:  # a retired one's transport is closing already
                self._retire_transport(h.name, current.transport)
        for name, rt in self.hosts.items():
            if name not in names and not rt.retired:
                rt.retired = True
                self._retire_transport(name, rt.transport)
        self._current = {n for n, rt in self.hosts.items() if rt.config.enabled and not rt.retired}
        self.ctx.wake()

    def _retire_transport(self, name: str, transport: Transport) -> None:
        """Close a transport that is no longer the host's, once the chunks started on it are done."""
        tasks = self.ctx.tasks
        for probe in tasks.find(Kind.PROBE, host=name):
            probe.cancel()  # it probes through the old transport; the next round probes the new one
        pending = tasks.find({*SLOT_KINDS, Kind.STAGE, Kind.PROBE}, host=name)
        budget = self.ctx.config.timeouts.chunk + CLOSE_WAIT_S
        tasks.spawn(_close_when_idle(transport, pending, budget), Kind.CLOSE, host=name)

    def total_slots(self) -> int:
        """Return the slots of every enabled, current host."""
        return sum(rt.config.slots for rt in self.hosts.values() if rt.config.enabled and not rt.retired)

    def slot_shares(self) -> list[SlotShare]:
        """Return every enabled, current host's slots, probed cores and workers (what the planner sizes chunks for)."""
        return [
            SlotShare(rt.config.name, rt.config.slots, self.ctx.cores.get(rt.config.name), rt.config.workers)
            for rt in self.hosts.values()
            if rt.config.enabled and not rt.retired
        ]

    async def usable(self, only: set[str] | None = None) -> tuple[list[HostRuntime], int]:
        """Return the hosts (of ``only``, if given) that may take chunks now, and how many there are in all.

        Starts re-probes of hosts whose quarantine ran out.
        """
        out = []
        # One store call a round: the hosts not listed here are in service.
        states = {h.name: h for h in await self.ctx.store.list_hosts_out_of_service()}
        in_service = len(self._current) - sum(1 for name in states if name in self._current)
        names = list(self.hosts) if only is None else sorted(n for n in only if n in self.hosts)
        for name in names:
            rt = self.hosts[name]
            if not rt.config.enabled or rt.retired:
                continue
            state = states.get(name)
            if state is not None and state.state.value in UNUSABLE:
                continue
            if state is not None and state.quarantined_until is not None:
                # Its quarantine has run out: the host gets work again only once the probe passes.
                if not self.ctx.tasks.find(Kind.PROBE, host=name):
                    self.ctx.tasks.spawn(self._probe_host(rt), Kind.PROBE, host=name)
                continue
            out.append(rt)
        return out, in_service

    async def _probe_host(self, rt: HostRuntime) -> None:
        """Probe a host whose quarantine ran out (as `hosts check` does): back in service, or a longer quarantine."""
        name, store, policy = rt.config.name, self.ctx.store, self.ctx.config.scheduling
        # With the self-test frame: the cheap probe passes a host whose install cannot render
        # (it would be back only to fail chunks again); one frame per quarantine period is cheap.
        try:
            report = await check_host(rt.transport, name, self.ctx.config, render=True)
            problems, reachable = report.problems, report.reachable
        except asyncio.CancelledError:
            raise
        except Exception as exc:  # noqa: BLE001 - whatever the probe raises, the host stays out
            problems, reachable = [str(exc) or type(exc).__name__], not isinstance(exc, HostUnavailable)
        if not reachable:
            with contextlib.suppress(Exception):
                await rt.transport.close()
        if not problems:
            self.ctx.probed(name, report.facts)
            log.info("[host=%s] re-probe passed: back in service", name)
            await asyncio.shield(store.record_host_success(name))
            self.ctx.wake()
            return
        why = "; ".join(problems)
        # The failure count keeps growing: once it passes the quarantine threshold, each failed
        # probe doubles the wait for the next (a host quarantined by its start-up probe, below
        # the threshold, waits the plain backoff until then).
        before = await store.get_host(name)
        failures = before.consecutive_failures if before else 0
        after = max(1, min(policy.host_failure_quarantine, failures + 1))
        state = await asyncio.shield(
            store.record_host_failure(
                name, f"re-probe failed: {why}", reachable=reachable,
                quarantine_after=after, backoff_s=policy.quarantine_backoff,
            )
        )  # fmt: skip
        wait = (state.quarantined_until or 0) - time.time()
        log.warning("[host=%s] re-probe failed: %s; next probe in %.0f s", name, why, max(0.0, wait))

    async def record_failure(self, name: str, error: str, *, reachable: bool = True) -> None:
        """Count a failure against the host (quarantined from the configured number in a row)."""
        policy = self.ctx.config.scheduling
        try:
            await asyncio.shield(
                self.ctx.store.record_host_failure(
                    name, error, reachable=reachable,
                    quarantine_after=policy.host_failure_quarantine, backoff_s=policy.quarantine_backoff,
                )
            )  # fmt: skip
        except StoreError as exc:  # health bookkeeping only: the chunk itself is settled elsewhere
            log.warning("[host=%s] could not record its failure: %s", name, exc)

    async def close(self) -> None:
        """Stop re-probes and close every host's connection (after drain)."""
        tasks = self.ctx.tasks
        await tasks.cancel(tasks.find(Kind.PROBE), timeout=CLOSE_WAIT_S)
        await asyncio.gather(*(rt.transport.close() for rt in self.hosts.values()), return_exceptions=True)
        closing = tasks.find(Kind.CLOSE)
        if closing:
            await asyncio.wait(closing, timeout=CLOSE_WAIT_S)


async def _close_when_idle(transport: Transport, pending: list[asyncio.Task[Any]], budget: float) -> None:
    if pending:
        await asyncio.wait(pending, timeout=budget)
    await transport.close()
