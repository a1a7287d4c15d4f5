"""`renderd agent`: render chunk assignments (JSON on stdin), stream JSON-line events on stdout.

The agent is the local render with the coordinator's metadata forced on it: the same engine,
the same chunk encoder. One-shot (``--watch-stdin``): one assignment, exit status 0 only when the
chunk file is complete and verified; on failure the last stdout line is an ``error`` event.
Serving (``--serve``): one assignment per stdin line, each answered by events ending in ``done``
or ``error``, browsers kept warm between chunks of a job; end of stdin cancels the chunk in
progress and exits. Human logs go to stderr.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
from collections.abc import Callable
from fractions import Fraction
from pathlib import Path
from typing import Any

from renderd.assignment import Assignment
from renderd.composition import Overrides
from renderd.engine.warm import WarmEngines
from renderd.errors import RenderdError
from renderd.events import Error, Event
from renderd.frames import Fps
from renderd.render import RenderRequest, RenderResult, render_local

log = logging.getLogger(__name__)

# A serving agent waiting this long for its next assignment closes its browsers: a job's next
# chunk comes within seconds, and a coordinator keeps agents of ended jobs for later jobs.
IDLE_RELEASE_S = 60.0
IDLE_RELEASE_ENV = "RENDERD_AGENT_IDLE_RELEASE_S"  # another bound, in seconds (tests)


def _idle_release_s() -> float:
    raw = os.environ.get(IDLE_RELEASE_ENV, "")
    try:
        return max(0.0, float(raw)) if raw.strip() else IDLE_RELEASE_S
    except ValueError:
        return IDLE_RELEASE_S


def request_for(a: Assignment, **faults: Any) -> RenderRequest:
    """Translate an assignment into the local render request that produces its chunk."""
    return RenderRequest.from_settings(
        a.settings,
        faults=faults,
        composition=Path(a.composition),
        output=Path(a.output),
        overrides=Overrides(width=a.width, height=a.height, fps=Fps.parse(a.fps), duration=Fraction(a.duration)),
        frames=f"{a.start}:{a.end}",
        work_dir=Path(a.work_dir),
        expect_total_frames=a.total_frames,
        # The coordinator mixes the soundtrack once, after concatenation.
        audio=False,
        # Chunks sharing a work dir share extracted video frames.
        media_dir=Path(a.work_dir) / "media",
        # The chunk is one part of the job's format; the coordinator makes the output.
        as_part=True,
    )


async def run_assignment(
    a: Assignment, emit: Callable[[Event], None], *, warm: WarmEngines | None = None, **faults: Any
) -> RenderResult:
    """Render the assignment's chunk to its output path (``faults``: test hooks for the engine).

    With ``warm``, browsers stay up for the next chunk of the same job.
    """
    Path(a.output).parent.mkdir(parents=True, exist_ok=True)
    Path(a.work_dir).mkdir(parents=True, exist_ok=True)
    return await render_local(request_for(a, **faults), emit, warm=warm, warm_key=a.job_id)


async def serve(lines: asyncio.StreamReader, emit: Callable[[Event], None], **faults: Any) -> None:
    """Render one assignment per line of ``lines`` until it ends; each ends with ``done`` or ``error``.

    The coordinator sends the next line only after the previous chunk's final event. End of
    input between chunks returns; while a chunk renders, it cancels the chunk (its cleanup runs)
    and raises CancelledError.
    """
    warm = WarmEngines()
    try:
        raw = await lines.readline()
        while raw:
            try:
                a = Assignment.from_json(raw)
            except RenderdError as exc:
                emit(Error(message=str(exc), code=type(exc).__name__))
                raw = await lines.readline()
                continue
            chunk = asyncio.create_task(run_assignment(a, emit, warm=warm, **faults))
            reading = asyncio.create_task(lines.readline())
            await asyncio.wait({chunk, reading}, return_when=asyncio.FIRST_COMPLETED)
            if not chunk.done() and reading.done() and not reading.result():
                log.warning("stdin closed: the coordinator is gone; cancelling the chunk")
                chunk.cancel()
                with contextlib.suppress(asyncio.CancelledError, RenderdError):
                    await chunk
                # As a one-shot agent would: end cancelled (the CLI reports it and exits 130).
                raise asyncio.CancelledError
            try:
                await chunk
            except RenderdError as exc:
                emit(Error(message=str(exc), code=type(exc).__name__))
            except BaseException:
                reading.cancel()
                raise
            raw = await _next_line(reading, warm)
    finally:
        await asyncio.shield(warm.close())


async def _next_line(reading: asyncio.Task[bytes], warm: WarmEngines) -> bytes:
    """Wait for the next assignment; after IDLE_RELEASE_S without one, close the warm browsers.

    A job's next chunk comes at once, and finds its browsers warm. An agent the coordinator keeps
    after its job ended (for another job's chunks) holds no browsers or pages while it waits:
    the next job gets a fresh engine in any case.
    """
    wait_s = _idle_release_s()
    done, _pending = await asyncio.wait({reading}, timeout=wait_s)
    if not done:
        log.info("no assignment for %g s: closing the warm browsers", wait_s)
        await warm.release()
    return await reading


def _chromium_version(chromium: str | None) -> str | None:
    """Return what ``chromium --version`` prints (e.g. "Chromium 156.0.8078.73 built on Debian ..."), or None."""
    import subprocess

    if chromium is None:
        return None
    try:
        done = subprocess.run([chromium, "--version"], capture_output=True, text=True, timeout=30, check=False)
    except (OSError, subprocess.TimeoutExpired):
        return None
    lines = done.stdout.strip().splitlines()
    return lines[0].strip() if done.returncode == 0 and lines else None


def probe_host(work_dir: Path | None) -> dict[str, object]:
    """Describe this host for `renderd hosts check`: versions, tools, CPUs, memory, free disk."""
    import shutil

    import psutil

    from renderd import PROTOCOL_VERSION, __version__
    from renderd.engine.browser import CHROMIUM_CANDIDATES, find_chromium
    from renderd.engine.calibrate import cpu_count
    from renderd.engine.sandbox import host_confinement
    from renderd.errors import BrowserError

    def which(names: tuple[str, ...]) -> str | None:
        for n in names:
            found = n if Path(n).is_absolute() and Path(n).exists() else shutil.which(n)
            if found:
                return str(found)
        return None

    chromium = which(CHROMIUM_CANDIDATES)
    try:
        shell: str | None = find_chromium(headless_shell=True)
    except BrowserError:
        shell = None
    disk = None
    if work_dir is not None:
        target = work_dir
        while not target.exists() and target != target.parent:
            target = target.parent
        disk = shutil.disk_usage(target).free
    return {
        "version": __version__,
        "protocol": PROTOCOL_VERSION,
        "chromium": chromium,
        # The build draws the pixels: hosts on different builds may draw text differently.
        "chromium_version": _chromium_version(chromium),
        # BeginFrame capture (--browser auto/headless-shell) needs the headless shell.
        "headless_shell": shell,
        "headless_shell_version": _chromium_version(shell),
        "ffmpeg": which(("ffmpeg",)),
        "ffprobe": which(("ffprobe",)),
        "rsync": which(("rsync",)),
        # The cores this agent may run on (its affinity): what the planner shares among slots.
        "cpus": cpu_count(),
        "memory_available": psutil.virtual_memory().available,
        "disk_free": disk,
        # Whether Chromium gets no network and keeps its own sandbox here (compositions are untrusted).
        "confinement": host_confinement().facts(),
    }
