"""`renderd hosts check`: connect to every host and judge whether it can render."""

from __future__ import annotations

import asyncio
from dataclasses import dataclass, field
from typing import Any

from renderd import PROTOCOL_VERSION
from renderd.config import DaemonConfig, Inventory
from renderd.coordinator.transports import make_transport
from renderd.errors import RenderdError

MIN_FREE_DISK = 2 << 30


@dataclass(frozen=True, slots=True)
class HostReport:
    """The outcome of probing one host."""

    name: str
    ok: bool
    problems: list[str] = field(default_factory=list)
    facts: dict[str, Any] = field(default_factory=dict)


def judge(name: str, facts: dict[str, Any]) -> HostReport:
    """Return a report listing what keeps the host from rendering."""
    problems = []
    if facts.get("protocol") != PROTOCOL_VERSION:
        problems.append(
            f"agent speaks protocol {facts.get('protocol')}, coordinator {PROTOCOL_VERSION} "
            "(run `renderd hosts install`)"
        )
    for tool in ("chromium", "ffmpeg", "ffprobe"):
        if not facts.get(tool):
            problems.append(f"{tool} is not installed")
    disk = facts.get("disk_free")
    if isinstance(disk, int) and disk < MIN_FREE_DISK:
        problems.append(f"only {disk >> 20} MiB free in the work dir")
    return HostReport(name, not problems, problems, facts)


async def check_hosts(config: DaemonConfig, inventory: Inventory, names: list[str]) -> list[HostReport]:
    """Probe the named hosts (all when ``names`` is empty) concurrently."""
    hosts = [h for h in inventory.hosts if not names or h.name in names]
    unknown = sorted(set(names) - {h.name for h in inventory.hosts})
    if unknown:
        raise RenderdError(f"no host(s) {', '.join(unknown)} in {inventory.path}")

    async def one(h: Any) -> HostReport:
        transport = make_transport(h, config)
        try:
            facts = await asyncio.wait_for(transport.probe(), config.timeouts.connect + 60)
        except (RenderdError, OSError, TimeoutError, ValueError) as exc:
            return HostReport(h.name, False, [str(exc) or type(exc).__name__])
        finally:
            await transport.close()
        return judge(h.name, facts)

    return list(await asyncio.gather(*(one(h) for h in hosts)))
