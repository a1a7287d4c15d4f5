"""`renderd hosts check`: connect to every host and judge whether it can render.

Two steps per host: the agent's ``--probe`` (versions, tools, free disk), then, when that
passes, a one-frame render of the built-in self-test composition (renderd/selftest) through
the host's own agent command and transport, exactly as a chunk: stage, run, fetch. The frame is
decoded here with ffmpeg and compared with the pixels it must have. A host whose install cannot
render HyperFrames (a missing runtime or font file, say) is reported with the agent's own error.
"""

from __future__ import annotations

import asyncio
import hashlib
import secrets
import shutil
import time
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import asyncssh

from renderd import PROTOCOL_VERSION, procs, selftest
from renderd.assignment import Assignment
from renderd.config import DaemonConfig, Inventory
from renderd.coordinator.transport import Transport
from renderd.coordinator.transports import make_transport
from renderd.errors import HostUnavailable, RenderdError
from renderd.settings import RenderSettings

MIN_FREE_DISK = 2 << 30
# Beyond the page's ready timeout: a browser start, one frame, one encode, the copy back.
SELFTEST_EXTRA_S = 120.0
DECODE_TIMEOUT_S = 60.0


@dataclass(frozen=True, slots=True)
class HostReport:
    """The outcome of probing one host."""

    name: str
    ok: bool
    problems: list[str] = field(default_factory=list)
    facts: dict[str, Any] = field(default_factory=dict)
    reachable: bool = True
    selftest_s: float | None = None  # how long the self-test frame took, when it passed


def judge(name: str, facts: dict[str, Any]) -> HostReport:
    """Return a report listing what keeps the host from rendering, by the probe's facts alone."""
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


# What a host can do beyond its inventory labels, as a label only the probe gives (no inventory or
# --require label can contain "="): jobs capturing through BeginFrame require it.
HEADLESS_SHELL_LABEL = "browser=headless-shell"


# The build of each browser, as "chromium=156.0.8078.114" / "headless-shell=156.0.8078.114": a
# job is pinned to one build (submit.choose_browser), so its chunks never mix two builds' pixels.
BUILD_LABEL_KEYS = {"chromium": "chromium_version", "headless-shell": "headless_shell_version"}


def version_number(version: object) -> str | None:
    """Return the number in what ``chromium --version`` printed ("Chromium 156.0.1 built on ..." -> "156.0.1")."""
    return next((w for w in str(version or "").split() if w[:1].isdigit()), None)


def build_label(browser: str, version: str) -> str:
    """Return the capability label of ``browser`` at ``version`` (a version number)."""
    return f"{browser}={version}"


def capabilities(facts: dict[str, Any]) -> frozenset[str]:
    """Return the capability labels a host's probe facts show: the shell, and each browser's build."""
    caps = {HEADLESS_SHELL_LABEL} if facts.get("headless_shell") else set()
    for browser, key in BUILD_LABEL_KEYS.items():
        if (number := version_number(facts.get(key))) is not None:
            caps.add(build_label(browser, number))
    return frozenset(caps)


def mixed_builds(reports: list[HostReport]) -> str | None:
    """Say so when the usable hosts run different Chromium builds, else None.

    A build draws the pixels (text rasterisation differs between builds), and a job's chunks go to
    any usable host: one job could then mix slightly different renderings.
    """
    for key, what in (("chromium_version", "Chromium"), ("headless_shell_version", "headless shell")):
        builds: dict[str, list[str]] = {}
        for r in reports:
            build = r.facts.get(key)
            if r.ok and isinstance(build, str):
                builds.setdefault(build, []).append(r.name)
        if len(builds) < 2:
            continue
        listed = "; ".join(f"{build}: {', '.join(names)}" for build, names in sorted(builds.items()))
        return (
            f"the hosts run {len(builds)} different {what} builds ({listed}); chunks of one job may draw "
            "text differently: install the same build on every host"
        )
    return None


async def check_host(transport: Transport, name: str, config: DaemonConfig, *, render: bool) -> HostReport:
    """Probe one host and, with ``render``, render the self-test frame on it.

    Never raises for the host's faults: they are the report's problems. The transport stays open.
    """
    try:
        facts = await asyncio.wait_for(transport.probe(), config.timeouts.connect + 60)
    except (RenderdError, OSError, TimeoutError, ValueError) as exc:
        return HostReport(name, False, [str(exc) or type(exc).__name__], reachable=not isinstance(exc, HostUnavailable))
    report = judge(name, facts)
    if not report.ok or not render:
        return report
    started = time.monotonic()
    try:
        problems = await render_selftest(transport, config)
    except HostUnavailable as exc:
        return replace(report, ok=False, problems=[str(exc)], reachable=False)
    except (RenderdError, OSError, TimeoutError, asyncssh.Error) as exc:
        problems = [f"self-test render failed: {str(exc) or type(exc).__name__}"]
    if problems:
        return replace(report, ok=False, problems=problems)
    return replace(report, selftest_s=round(time.monotonic() - started, 2))


async def render_selftest(transport: Transport, config: DaemonConfig) -> list[str]:
    """Render the self-test frame on the host as a one-frame chunk; return what is wrong with it.

    The chunk comes back where a job's chunks do (the state dir's jobs/, in a directory of its
    own, removed afterwards). Raises AgentFailed (the agent's own error message) when the agent
    cannot render it.
    """
    if not await asyncio.to_thread((selftest.COMPOSITION / "index.html").is_file):
        return [f"this renderd lacks its self-test composition ({selftest.COMPOSITION}); reinstall renderd"]
    job_id = f"hostcheck-{secrets.token_hex(4)}"
    job_dir = config.state_dir / "jobs" / job_id
    local = job_dir / "selftest.mp4"
    remote_out, remote_work = transport.chunk_paths(job_id, 0, 0)
    try:
        await asyncio.to_thread(job_dir.mkdir, parents=True, exist_ok=True)
    except OSError as exc:
        return [f"cannot write the self-test chunk on this machine: {exc}"]
    try:
        comp = await transport.stage_composition(job_id, selftest.COMPOSITION)
        assignment = Assignment(
            job_id=job_id, chunk_index=0, composition=comp,
            start=selftest.FRAME, end=selftest.FRAME + 1, total_frames=selftest.TOTAL_FRAMES,
            fps=str(selftest.FPS), width=selftest.WIDTH, height=selftest.HEIGHT, duration=str(selftest.DURATION),
            output=remote_out, work_dir=remote_work,
            settings=RenderSettings(
                format="mp4", frame_format="png", workers=1, chunks=1, ready_timeout=config.timeouts.ready
            ),
        )  # fmt: skip
        timeout = config.timeouts.ready + SELFTEST_EXTRA_S
        done = await transport.run_chunk(assignment, lambda _event: None, timeout=timeout)
        await transport.fetch(remote_out, local)
        if await asyncio.to_thread(_sha256, local) != done.get("sha256"):
            return ["self-test chunk checksum mismatch after fetching it"]
        result = await procs.run(
            ["ffmpeg", "-hide_banner", "-nostdin", "-loglevel", "error", "-i", str(local),
             "-map", "0:v:0", "-f", "rawvideo", "-pix_fmt", "rgb24", "-"],
            timeout=DECODE_TIMEOUT_S,
        )  # fmt: skip
        return selftest.judge_frame(result.stdout)
    finally:
        try:
            await transport.cleanup_job(job_id)
        except RenderdError:
            pass  # a leftover self-test dir on the host is harmless; the check's outcome stands
        # A local transport leaves the job directory to its owner (for a local host it is where
        # the agent wrote): that is us here.
        await asyncio.to_thread(shutil.rmtree, job_dir, True)


def _sha256(path: Path) -> str:
    h = hashlib.sha256()
    with path.open("rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


async def check_hosts(
    config: DaemonConfig, inventory: Inventory, names: list[str], *, render: bool = True
) -> list[HostReport]:
    """Check the named hosts (all when ``names`` is empty) concurrently; ``render``: with the self-test frame."""
    hosts = [h for h in inventory.hosts if not names or h.name in names]
    unknown = sorted(set(names) - {h.name for h in inventory.hosts})
    if unknown:
        raise RenderdError(f"no host(s) {', '.join(unknown)} in {inventory.path}")

    async def one(h: Any) -> HostReport:
        transport = make_transport(h, config)
        try:
            return await check_host(transport, h.name, config, render=render)
        finally:
            await transport.close()

    return list(await asyncio.gather(*(one(h) for h in hosts)))
