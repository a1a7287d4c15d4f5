"""Prometheus metrics of one coordinator, served at ``/metrics`` on the web listener.

Counters and the chunk duration histogram are fed by the scheduler as attempts end (see
:class:`~renderd.coordinator.outcomes.ChunkOutcomes`); gauges are read from the store at scrape
time. Each coordinator has its own registry, never the process-global one, so two daemons in one
process (tests) do not collide.
"""

from __future__ import annotations

import asyncio
import os
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from prometheus_client import CollectorRegistry, Counter, Histogram, generate_latest
from prometheus_client.core import GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

from renderd.coordinator.models import JobState
from renderd.coordinator.outcomes import ChunkOutcomes
from renderd.coordinator.store import Store

CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"
# Chunks are sized for ~20 s of render work (scheduling.target_chunk_seconds), bounded by timeouts.chunk.
DURATION_BUCKETS = (1, 2, 5, 10, 20, 30, 60, 120, 300, 600, 1800, float("inf"))


@dataclass
class _Scrape:
    """What the gauges show, read from the store just before a scrape."""

    jobs: dict[str, int] = field(default_factory=dict)
    queue_depth: int = 0
    host_fps: dict[str, float] = field(default_factory=dict)
    quarantined: int = 0
    store_bytes: int = 0
    streams: int = 0


class _Gauges(Collector):
    def __init__(self) -> None:
        self.now = _Scrape()

    def collect(self) -> Iterator[Metric]:
        jobs = GaugeMetricFamily("renderd_jobs", "Jobs in the store by state", labels=["state"])
        for state in JobState:
            jobs.add_metric([state.value], self.now.jobs.get(state.value, 0))
        yield jobs
        yield GaugeMetricFamily("renderd_queue_depth", "Chunks waiting for a host", value=self.now.queue_depth)
        fps = GaugeMetricFamily(
            "renderd_host_fps", "Frames per second of a host (moving average of its verified chunks)", labels=["host"]
        )
        for host, value in sorted(self.now.host_fps.items()):
            fps.add_metric([host], value)
        yield fps
        yield GaugeMetricFamily("renderd_hosts_quarantined", "Hosts in quarantine", value=self.now.quarantined)
        yield GaugeMetricFamily(
            "renderd_store_bytes", "Size of the job store on disk, with its WAL", value=self.now.store_bytes
        )
        yield GaugeMetricFamily("renderd_web_streams", "Dashboard pages following live", value=self.now.streams)


class FarmMetrics(ChunkOutcomes):
    """The coordinator's metrics: chunk outcome counters, a duration histogram, gauges from the store."""

    def __init__(self) -> None:
        self.registry = CollectorRegistry(auto_describe=True)
        r = self.registry
        self.rendered = Counter("renderd_chunks_rendered", "Chunks verified, by host", ["host"], registry=r)
        self.failed_ = Counter("renderd_chunks_failed", "Chunk attempts that failed, by host", ["host"], registry=r)
        self.lost_ = Counter("renderd_chunks_lost", "Chunk attempts lost with their host", ["host"], registry=r)
        self.speculative_ = Counter(
            "renderd_chunks_speculative", "Speculative copies of straggling chunks started", ["host"], registry=r
        )
        self.duration = Histogram(
            "renderd_chunk_duration_seconds",
            "Seconds from start to verification of a kept chunk",
            buckets=DURATION_BUCKETS,
            registry=r,
        )
        self._gauges = _Gauges()
        r.register(self._gauges)

    # -- ChunkOutcomes -----------------------------------------------------------------------

    def verified(self, host: str, seconds: float, *, speculative: bool = False) -> None:
        """Count a kept chunk and its duration."""
        self.rendered.labels(host).inc()
        self.duration.observe(seconds)

    def failed(self, host: str) -> None:
        """Count a failed attempt."""
        self.failed_.labels(host).inc()

    def lost(self, host: str) -> None:
        """Count an attempt lost with its host."""
        self.lost_.labels(host).inc()

    def speculative(self, host: str) -> None:
        """Count a speculative copy."""
        self.speculative_.labels(host).inc()

    # -- scraping ----------------------------------------------------------------------------

    async def scrape(self, store: Store, hosts: list[dict[str, Any]], *, streams: int = 0) -> bytes:
        """Read the gauges from ``store`` and the daemon's host list; return the exposition text."""
        jobs, pending = await store.counts()
        now = _Scrape(
            jobs=jobs,
            queue_depth=pending,
            host_fps={h["name"]: float(h["speed_fps"]) for h in hosts if h.get("speed_fps")},
            quarantined=sum(h.get("state") == "quarantined" for h in hosts),
            store_bytes=await asyncio.to_thread(_store_bytes, store.path),
            streams=streams,
        )
        self._gauges.now = now
        return generate_latest(self.registry)


def _store_bytes(db: Path) -> int:
    total = 0
    for suffix in ("", "-wal", "-shm"):
        try:
            total += os.stat(f"{db}{suffix}").st_size
        except FileNotFoundError:
            continue
    return total
