"""Tell systemd about the daemon's state: the ``sd_notify`` protocol over a datagram socket.

The protocol is one ``AF_UNIX``/``SOCK_DGRAM`` datagram of newline-separated ``KEY=VALUE``
assignments sent to ``$NOTIFY_SOCKET`` (a path, or an abstract name written with a leading ``@``).
It is written here by hand rather than taken from PyPI: the pure-Python packages there
(``sdnotify``, last released 2017; ``sd-notify``, 2020) are unmaintained and have no watchdog
handling, and the others (``systemd-python``, ``cysystemd``) bind libsystemd, which needs a C
toolchain and ``libsystemd-dev`` to build, for what is forty lines of socket code.

Only the CLI reads the environment (:meth:`Notifier.from_environ`); everything below takes the
values as arguments. Every method is a no-op when there is no socket (not started by systemd), and
no send error is ever raised: a daemon must not die because its supervisor's socket went away.
"""

from __future__ import annotations

import asyncio
import logging
import os
import socket
import time
from collections.abc import Mapping
from dataclasses import dataclass

__all__ = ["ENVIRONMENT_KEYS", "Notifier"]

log = logging.getLogger(__name__)

#: The variables :meth:`Notifier.from_environ` reads; the CLI may drop them from the environment
#: afterwards so that child processes (Chromium, ffmpeg, ssh) do not inherit them.
ENVIRONMENT_KEYS = ("NOTIFY_SOCKET", "WATCHDOG_USEC", "WATCHDOG_PID")


@dataclass(frozen=True, slots=True)
class Notifier:
    """Send readiness, status and watchdog messages to systemd's notification socket."""

    notify_socket: str | None = None
    watchdog_usec: int | None = None

    @classmethod
    def from_environ(cls, environ: Mapping[str, str], *, pid: int | None = None) -> Notifier:
        """Build a notifier from systemd's variables in ``environ`` (``pid`` defaults to ours).

        The watchdog is off when ``WATCHDOG_USEC`` is absent, not a positive integer, or when
        ``WATCHDOG_PID`` names another process (the variables were inherited, not meant for us).
        """
        notify_socket = environ.get("NOTIFY_SOCKET") or None
        if notify_socket is not None and not notify_socket.startswith(("/", "@")):
            log.debug("ignoring NOTIFY_SOCKET=%r: neither a path nor an abstract '@' name", notify_socket)
            notify_socket = None
        watchdog_usec = _positive_int(environ.get("WATCHDOG_USEC"))
        watchdog_pid = environ.get("WATCHDOG_PID")
        if watchdog_usec is not None and watchdog_pid:
            own = os.getpid() if pid is None else pid
            if _positive_int(watchdog_pid) != own:
                log.debug("watchdog is for pid %s, not %d: disabled", watchdog_pid, own)
                watchdog_usec = None
        return cls(notify_socket=notify_socket, watchdog_usec=watchdog_usec)

    @property
    def enabled(self) -> bool:
        """Whether there is a socket to send to."""
        return bool(self.notify_socket)

    def notify(self, *assignments: str) -> bool:
        """Send ``KEY=VALUE`` assignments in one datagram; return whether it was sent."""
        if not self.notify_socket or not assignments:
            return False
        address = self.notify_socket
        if address.startswith("@"):
            address = "\0" + address[1:]
        try:
            with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as sock:
                # Non-blocking: a full socket buffer drops one message rather than stalling the loop.
                sock.setblocking(False)
                sock.sendto("\n".join(assignments).encode(), address)
        except OSError as exc:
            log.debug("sd_notify %s to %r failed: %s", assignments, self.notify_socket, exc)
            return False
        return True

    def ready(self) -> bool:
        """Report that start-up (or a reload) is complete: ``READY=1``."""
        return self.notify("READY=1")

    def status(self, text: str) -> bool:
        """Set the one-line status that ``systemctl status`` shows."""
        return self.notify("STATUS=" + " ".join(text.splitlines()))

    def stopping(self) -> bool:
        """Report that a graceful shutdown has begun: ``STOPPING=1``."""
        return self.notify("STOPPING=1")

    def reloading(self) -> bool:
        """Report that a reload has begun; send :meth:`ready` when it is done.

        ``MONOTONIC_USEC`` is what ``Type=notify-reload`` (systemd 253+) requires; older managers
        and plain ``Type=notify`` ignore it.
        """
        return self.notify("RELOADING=1", f"MONOTONIC_USEC={time.monotonic_ns() // 1000}")

    def watchdog(self) -> bool:
        """Ping the service watchdog: ``WATCHDOG=1``."""
        return self.notify("WATCHDOG=1")

    def watchdog_interval(self) -> float | None:
        """Return how often to ping, in seconds (half of ``WATCHDOG_USEC``), or None when off."""
        if not self.notify_socket or not self.watchdog_usec:
            return None
        return self.watchdog_usec / 2_000_000

    async def run_watchdog(self, stop_event: asyncio.Event) -> None:
        """Ping the watchdog every :meth:`watchdog_interval` until ``stop_event`` is set."""
        interval = self.watchdog_interval()
        if interval is None:
            return
        while not stop_event.is_set():
            self.watchdog()
            try:
                await asyncio.wait_for(stop_event.wait(), interval)
            except TimeoutError:
                pass


def _positive_int(value: str | None) -> int | None:
    """Return ``value`` as a positive integer, or None if it is missing or not one."""
    try:
        number = int(value) if value is not None else 0
    except ValueError:
        return None
    return number if number > 0 else None
