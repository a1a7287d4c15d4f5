"""`renderd hosts install`: put this very renderd on render hosts, so agent and coordinator match.

A wheel is built from the running renderd's source tree (or, for a renderd installed from a
wheel, packed again from its installed files: :mod:`renderd.coordinator.wheelpack`), copied to each host
with rsync and installed into ``<work_dir>/venv``. System packages the agent needs are checked and listed;
they are installed only when asked (``--system-packages``, needs root on the host).
"""

from __future__ import annotations

import asyncio
import sys
import tempfile
from dataclasses import dataclass, field
from pathlib import Path

import renderd
from renderd import procs
from renderd.config import DaemonConfig, HostConfig, Inventory
from renderd.coordinator.ssh import SshTransport
from renderd.coordinator.wheelpack import copy_sources, repack_installed
from renderd.errors import RenderdError

# The headless shell is optional for rendering (auto falls back to Chromium screenshots) but is
# the faster capture path, so an install brings it along.
SYSTEM_TOOLS = {
    "chromium": "chromium",
    "chromium-headless-shell": "chromium-headless-shell",
    "ffmpeg": "ffmpeg",
    "ffprobe": "ffmpeg",
    "rsync": "rsync",
}
INSTALL_TIMEOUT_S = 900.0


@dataclass(frozen=True, slots=True)
class InstallReport:
    """What installing on one host did."""

    name: str
    ok: bool
    agent_command: list[str] = field(default_factory=list)
    missing_packages: list[str] = field(default_factory=list)
    error: str | None = None


def source_tree() -> Path:
    """Return the source checkout of the running renderd (where its pyproject.toml is)."""
    root = Path(renderd.__file__).resolve().parent.parent
    if not (root / "pyproject.toml").is_file():
        raise RenderdError(
            f"renderd at {root} was not installed from a source checkout; run `renderd hosts install` from one"
        )
    return root


async def build_wheel(out_dir: Path) -> Path:
    """Build a wheel of the running renderd into ``out_dir`` and return its path."""
    if not (Path(renderd.__file__).resolve().parent.parent / "pyproject.toml").is_file():
        return await asyncio.to_thread(repack_installed, out_dir)
    src = await asyncio.to_thread(copy_sources, source_tree(), out_dir / "src")
    await procs.run(
        [sys.executable, "-m", "pip", "wheel", "--no-deps", "-q", "-w", str(out_dir), str(src)],
        timeout=INSTALL_TIMEOUT_S,
    )  # fmt: skip
    wheels = sorted(out_dir.glob("renderd-*.whl"))
    if not wheels:
        raise RenderdError("building the renderd wheel produced no file")
    return wheels[-1]


async def install_on(host: HostConfig, config: DaemonConfig, wheel: Path, *, system_packages: bool) -> InstallReport:
    """Install ``wheel`` into the host's venv and report what is missing there."""
    t = SshTransport(host, config.timeouts)
    work = str(host.work_dir)
    venv = f"{work}/venv"
    try:
        missing = await _missing_packages(t)
        if missing and system_packages:
            await t.run(["apt-get", "install", "-y", "-q", *missing], timeout=INSTALL_TIMEOUT_S)
            missing = await _missing_packages(t)
        await t.run(["mkdir", "-p", f"{work}/dist"])
        await t.rsync(str(wheel), t.remote(f"{work}/dist/{wheel.name}"))
        await t.run(["sh", "-c", '[ -x "$1/bin/python" ] || python3 -m venv "$1"', "sh", venv], timeout=300)
        await t.run(
            [f"{venv}/bin/python", "-m", "pip", "install", "-q", "--force-reinstall", "--no-deps",
             f"{work}/dist/{wheel.name}"],
            timeout=INSTALL_TIMEOUT_S,
        )  # fmt: skip
        # Dependencies once (a no-op when they are already there).
        await t.run([f"{venv}/bin/python", "-m", "pip", "install", "-q", f"{work}/dist/{wheel.name}"], timeout=900)
        command = [f"{venv}/bin/renderd", "agent"]
        await t.run([*command, "--probe"])
        return InstallReport(host.name, not missing, command, missing)
    except RenderdError as exc:
        return InstallReport(host.name, False, error=str(exc))
    finally:
        await t.close()


async def _missing_packages(t: SshTransport) -> list[str]:
    script = 'for c in "$@"; do command -v "$c" >/dev/null 2>&1 || echo "$c"; done'
    result = await t.run(["sh", "-c", script, "sh", *SYSTEM_TOOLS])
    absent = str(result.stdout or "").split()
    return sorted({SYSTEM_TOOLS[c] for c in absent if c in SYSTEM_TOOLS})


async def install_hosts(
    config: DaemonConfig, inventory: Inventory, names: list[str], *, system_packages: bool
) -> list[InstallReport]:
    """Build one wheel and install it on the named SSH hosts (all when ``names`` is empty)."""
    unknown = sorted(set(names) - {h.name for h in inventory.hosts})
    if unknown:
        raise RenderdError(f"no host(s) {', '.join(unknown)} in {inventory.path}")
    hosts = [h for h in inventory.hosts if (not names or h.name in names) and not h.is_local]
    with tempfile.TemporaryDirectory(prefix="renderd-wheel-") as tmp:
        wheel = await build_wheel(Path(tmp))
        return list(
            await asyncio.gather(*(install_on(h, config, wheel, system_packages=system_packages) for h in hosts))
        )
