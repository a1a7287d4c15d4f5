"""Run Chromium with no network at all: an empty network namespace made by util-linux ``unshare``.

Compositions are untrusted. Playwright talks to Chromium over pipes and the page's files are
served by request interception, so a render browser needs no network; request routing only sees
HTTP(S) fetches, though, so WebSocket, WebRTC, DNS and the like would otherwise reach whatever
listens on the host (127.0.0.1 included). Chromium is therefore started by a small wrapper that
execs ``unshare ... --net -- chromium``: the new network namespace has only a loopback device
that is down, so every connection fails inside the kernel, whatever the protocol.

Where the kernel allows it, the namespace is made inside a new user namespace in which Chromium
runs as a non-zero uid, which also lets Chromium keep its own sandbox even when renderd runs as
root (Chromium refuses to sandbox itself as uid 0; its namespace sandbox nests user namespaces).
Detection runs once per process. Where no namespace can be made, renderd logs one warning and
renders unconfined, unless ``RENDERD_CONFINEMENT=require`` is set: then it refuses to start Chromium.
"""

from __future__ import annotations

import atexit
import contextlib
import logging
import os
import shlex
import shutil
import subprocess
import tempfile
import threading
from dataclasses import dataclass
from pathlib import Path

from renderd.errors import BrowserError

log = logging.getLogger(__name__)

POLICY_ENV = "RENDERD_CONFINEMENT"
POLICIES = ("auto", "require")
# The uid/gid Chromium has inside its user namespace when renderd runs as root. Any non-zero id
# does; 65534 is "nobody" by convention. It maps back to root outside, but without capabilities.
INNER_ID_FOR_ROOT = 65534
_PROBE_TIMEOUT_S = 10.0


@dataclass(frozen=True, slots=True)
class Confinement:
    """How this host confines Chromium (see :func:`detect`)."""

    method: str  # "userns+netns", "netns" or "none"
    prefix: tuple[str, ...]  # argv run before Chromium's own (empty: none)
    sandbox: bool  # whether Chromium's own sandbox can stay on
    problem: str = ""  # what is missing and why, for the warning and `hosts check`

    @property
    def network_isolated(self) -> bool:
        """True when Chromium gets an empty network namespace."""
        return bool(self.prefix)

    def facts(self) -> dict[str, object]:
        """Return this confinement as JSON-able facts (`agent --probe`, `hosts check`)."""
        return {
            "network": "none" if self.network_isolated else "HOST NETWORK",
            "method": self.method,
            "chromium_sandbox": self.sandbox,
            "problem": self.problem or None,
        }


def policy() -> str:
    """Return the confinement policy from ``RENDERD_CONFINEMENT`` ("auto" unless set)."""
    value = os.environ.get(POLICY_ENV, "").strip().lower() or "auto"
    return value if value in POLICIES else "auto"


def _runs(argv: list[str]) -> str:
    """Run ``argv``; return "" when it exited 0, else its first line of stderr (or exit status)."""
    try:
        done = subprocess.run(argv, capture_output=True, text=True, timeout=_PROBE_TIMEOUT_S, stdin=subprocess.DEVNULL)
    except (OSError, subprocess.TimeoutExpired) as exc:
        return str(exc) or type(exc).__name__
    if done.returncode == 0:
        return ""
    lines = done.stderr.strip().splitlines()
    return lines[0] if lines else f"exit status {done.returncode}"


def _candidates(unshare: str, root: bool) -> list[tuple[str, tuple[str, ...], bool]]:
    """Return (method, prefix, sandbox) from the most to the least confined."""
    mapping = (
        (f"--map-user={INNER_ID_FOR_ROOT}", f"--map-group={INNER_ID_FOR_ROOT}") if root else ("--map-current-user",)
    )
    found: list[tuple[str, tuple[str, ...], bool]] = [
        ("userns+netns", (unshare, "--user", *mapping, "--net", "--"), True)
    ]
    if root:
        found.append(("netns", (unshare, "--net", "--"), False))
    else:
        # util-linux before 2.38 has no --map-current-user; Chromium then sees uid 0 and must
        # run without its own sandbox, but still has no network.
        found.append(("userns+netns", (unshare, "--user", "--map-root-user", "--net", "--"), False))
    return found


def detect(unshare: str | None = None) -> Confinement:
    """Find the strongest confinement this host allows, by trying it (blocking: run off the loop).

    A candidate counts only if a process really starts inside it; the sandboxed variant also
    needs a nested user namespace, which is what Chromium's namespace sandbox creates.
    """
    exe = unshare or shutil.which("unshare")
    if exe is None:
        return Confinement("none", (), False, "util-linux 'unshare' is not installed")
    problems = []
    for method, prefix, sandbox in _candidates(exe, os.geteuid() == 0):
        error = _runs([*prefix, "true"])
        if error:
            problems.append(f"{shlex.join(prefix[:-1])}: {error}")
            continue
        if sandbox:
            nested = _runs([*prefix, exe, "--user", "--", "true"])
            if nested:
                problems.append(f"no nested user namespace for Chromium's sandbox: {nested}")
                sandbox = False
        return Confinement(method, prefix, sandbox, "; ".join(problems) if not sandbox else "")
    return Confinement("none", (), False, "no network namespace can be made: " + "; ".join(problems))


_lock = threading.Lock()
_detected: Confinement | None = None
_wrappers: dict[tuple[str, tuple[str, ...]], str] = {}
_wrapper_dir: str | None = None


def _warn(found: Confinement) -> None:
    if not found.network_isolated:
        log.warning(
            "Chromium runs WITH THE HOST'S NETWORK: compositions can reach local services (%s); "
            "set %s=require to refuse to render instead",
            found.problem,
            POLICY_ENV,
        )
    elif not found.sandbox:
        log.warning("Chromium runs without its own sandbox (%s); it has no network", found.problem)


def host_confinement(*, warn: bool = True) -> Confinement:
    """Return this process's confinement, detected on first use; warns once when it is weak.

    ``warn=False`` is for a caller that refuses to go on unconfined and says so itself.
    """
    global _detected
    with _lock:
        if _detected is None:
            _detected = detect()
            if warn:
                _warn(_detected)
        return _detected


def _remove_wrappers() -> None:
    if _wrapper_dir is not None:
        shutil.rmtree(_wrapper_dir, ignore_errors=True)


def _executable_dir() -> str | None:
    """Return a writable directory whose mount allows executing files, or None.

    Hardened hosts mount /tmp (and /run, /dev/shm) noexec; the wrapper must be executable.
    """
    candidates = [tempfile.gettempdir(), os.environ.get("XDG_RUNTIME_DIR")]
    with contextlib.suppress(RuntimeError):  # no home directory at all
        candidates.append(str(Path.home() / ".cache"))
    for c in candidates:
        if not c:
            continue
        with contextlib.suppress(OSError):
            Path(c).mkdir(parents=True, exist_ok=True)
            if os.access(c, os.W_OK | os.X_OK) and not os.statvfs(c).f_flag & os.ST_NOEXEC:
                return c
    return None


def confined_executable(chromium: str, confinement: Confinement) -> str:
    """Return an executable that starts ``chromium`` inside ``confinement`` (blocking file I/O).

    Playwright launches a browser by path only, so the namespace comes from a two-line shell
    script that execs unshare, which execs Chromium: one process, whose pid Playwright watches.
    """
    global _wrapper_dir
    if not confinement.prefix:
        return chromium
    key = (chromium, confinement.prefix)
    with _lock:
        found = _wrappers.get(key)
        if found is not None and Path(found).exists():
            return found
        if _wrapper_dir is None:
            atexit.register(_remove_wrappers)
        if _wrapper_dir is None or not Path(_wrapper_dir).is_dir():
            parent = _executable_dir()
            if parent is None:
                raise BrowserError(
                    "no directory allows executing Chromium's network-namespace wrapper (the temp "
                    "directory, $XDG_RUNTIME_DIR and ~/.cache are noexec or read-only): set TMPDIR to one that does"
                )
            _wrapper_dir = tempfile.mkdtemp(prefix="renderd-chromium-", dir=parent)
        path = Path(_wrapper_dir) / f"chromium-{len(_wrappers)}"
        path.write_text(f'#!/bin/sh\nexec {shlex.join([*confinement.prefix, chromium])} "$@"\n')
        path.chmod(0o700)
        _wrappers[key] = str(path)
        return str(path)
