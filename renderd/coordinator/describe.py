"""Describe a submitted composition on a render host, and remember the answer by content.

The coordinator holds the job store and the fleet's SSH identities, so it never runs a
browser: a composition is loaded by an agent (``renderd agent --describe``) on a host reached
through the same transport as chunks, preferring a local host. The result is cached by a
digest of the composition tree as staged plus everything else that shapes the answer (entry,
overrides, render settings, renderd version), so submitting an unchanged composition again
runs no agent at all.

The tree digest has a stat fast path: a file whose (size, mtime_ns, ctime_ns, inode) is as last
seen is not read again; changed files are re-hashed. All scanning runs in a worker thread.
"""

from __future__ import annotations

import asyncio
import dataclasses
import hashlib
import json
import logging
import os
import secrets
import stat
import threading
from collections import OrderedDict
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from renderd import PROTOCOL_VERSION, __version__
from renderd.composition import Composition, Overrides
from renderd.coordinator.transport import AgentFailed, Transport
from renderd.describe import DescribeRequest
from renderd.errors import RenderdError
from renderd.settings import RenderSettings

log = logging.getLogger(__name__)

CACHE_ENTRIES = 256
DESCRIBE_TIMEOUT_S = 120.0


class TreeDigester:
    """Content digests of composition trees, re-reading only files whose stat changed."""

    def __init__(self) -> None:
        self._files: dict[str, tuple[tuple[int, int, int, int], bytes]] = {}
        self._lock = threading.Lock()  # digest() runs in worker threads

    def digest(self, root: Path) -> str:
        """Return a hash of every regular file under ``root``: relative names and contents (blocking)."""
        entries: list[tuple[str, bytes]] = []
        for dirpath, dirnames, filenames in os.walk(root):
            dirnames.sort()
            for name in filenames:
                path = os.path.join(dirpath, name)
                try:
                    st = os.stat(path)
                except OSError:
                    continue  # a dangling link or a file removed while we walk: not staged either
                if not stat.S_ISREG(st.st_mode):
                    continue
                rel = os.path.relpath(path, root).replace(os.sep, "/")
                entries.append((rel, self._file_hash(path, st)))
        h = hashlib.sha256()
        for rel, file_hash in sorted(entries):
            raw = rel.encode()
            h.update(len(raw).to_bytes(4, "big") + raw + file_hash)
        return h.hexdigest()

    def _file_hash(self, path: str, st: os.stat_result) -> bytes:
        key = (st.st_size, st.st_mtime_ns, st.st_ctime_ns, st.st_ino)
        with self._lock:
            known = self._files.get(path)
        if known is not None and known[0] == key:
            return known[1]
        h = hashlib.sha256()
        with open(path, "rb") as f:
            for block in iter(lambda: f.read(1 << 20), b""):
                h.update(block)
        digest = h.digest()
        with self._lock:
            self._files[path] = (key, digest)
        return digest


@dataclass(frozen=True, slots=True)
class DescribeHost:
    """A host a describe may run on."""

    name: str
    transport: Transport
    local: bool
    labels: tuple[str, ...] = ()


@dataclass(frozen=True, slots=True)
class Described:
    """What a describe said, where it ran (None: from the cache) and the cache key."""

    result: dict[str, Any]
    host: str | None
    key: str


class Describer:
    """Run describes on hosts and cache their results by composition digest."""

    def __init__(self, *, entries: int = CACHE_ENTRIES) -> None:
        self.digester = TreeDigester()
        self._cache: OrderedDict[str, dict[str, Any]] = OrderedDict()
        self._entries = entries
        self._running: dict[str, asyncio.Future[Described]] = {}
        self.runs = 0  # describes that ran an agent (not answered from the cache)

    def cache_key(self, comp: Composition, request: DescribeRequest) -> str:
        """Return the cache key of describing ``comp`` with ``request`` (blocking: scans the tree)."""
        settings = {**json.loads(request.to_json()), "composition": comp.entry_relative}
        # Which browser captures does not change what the page says about itself (size, fps,
        # duration, media): a job on the headless shell reuses a describe made with Chromium.
        if isinstance(settings.get("settings"), dict):
            settings["settings"].pop("browser", None)
        material = {
            "tree": self.digester.digest(comp.root),
            "request": settings,
            "version": __version__,
            "protocol": PROTOCOL_VERSION,
        }
        return hashlib.sha256(json.dumps(material, sort_keys=True).encode()).hexdigest()

    async def describe(
        self, comp: Composition, staged_path: Path, request: DescribeRequest, hosts: Sequence[DescribeHost]
    ) -> Described:
        """Return the description of ``comp`` (``staged_path`` is what hosts are given to stage).

        From the cache when the composition and settings are unchanged; else on the first of
        ``hosts`` that can run it (a host that fails for its own reasons passes to the next).
        Raises CompositionError with the page's message for a broken composition.
        """
        key = await asyncio.to_thread(self.cache_key, comp, request)
        cached = self._cache.get(key)
        if cached is not None:
            self._cache.move_to_end(key)
            return Described(cached, None, key)
        running = self._running.get(key)
        if running is not None:  # the same composition submitted twice at once: describe it once
            return await asyncio.shield(running)
        future: asyncio.Future[Described] = asyncio.get_running_loop().create_future()
        self._running[key] = future
        try:
            described = await self._run(key, staged_path, request, hosts)
            future.set_result(described)
            return described
        except BaseException as exc:
            future.set_exception(exc)
            future.exception()  # retrieved: nobody else may be waiting
            raise
        finally:
            del self._running[key]

    async def _run(
        self, key: str, staged_path: Path, request: DescribeRequest, hosts: Sequence[DescribeHost]
    ) -> Described:
        if not hosts:
            raise RenderdError("no usable host to load the composition on (all drained, quarantined or disabled)")
        problems = []
        for host in hosts:
            try:
                remote = await host.transport.stage_composition(f"describe-{secrets.token_hex(4)}", staged_path)
                req = dataclasses.replace(request, composition=remote)
                log.info("describing %s on host %s%s", staged_path, host.name, " (local)" if host.local else "")
                self.runs += 1
                result = await host.transport.describe(req, timeout=DESCRIBE_TIMEOUT_S + request.settings.ready_timeout)
            except AgentFailed as exc:
                log.warning("describe on host %s failed: %s", host.name, exc)
                problems.append(str(exc))
                continue
            self._cache[key] = result
            self._cache.move_to_end(key)
            while len(self._cache) > self._entries:
                self._cache.popitem(last=False)
            return Described(result, host.name, key)
        raise RenderdError(f"could not load the composition on any host: {'; '.join(problems)}")


def request_for(
    overrides: Overrides, settings: RenderSettings, *, calibrate_min_frames: int | None = None
) -> DescribeRequest:
    """Return the describe request for ``overrides`` (its composition path is filled in per host).

    ``calibrate_min_frames``: ask for the capture probe when the composition has that many frames.
    """
    return DescribeRequest(
        composition="",
        width=overrides.width,
        height=overrides.height,
        fps=str(overrides.fps) if overrides.fps is not None else None,
        duration=str(overrides.duration) if overrides.duration is not None else None,
        settings=settings,
        calibrate_min_frames=calibrate_min_frames,
    )
