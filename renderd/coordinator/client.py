"""A small blocking client for the control socket (the CLI's side; no event loop needed)."""

from __future__ import annotations

import json
import socket
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from renderd.coordinator.protocol import MAX_LINE_BYTES
from renderd.errors import DaemonError, RenderdError

CONNECT_TIMEOUT_S = 5.0
REPLY_TIMEOUT_S = 120.0  # submit probes the composition in a browser before answering


class Client:
    """One connection to the daemon's control socket."""

    def __init__(self, path: Path, *, timeout: float = REPLY_TIMEOUT_S) -> None:
        self.path = path
        self._sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        self._sock.settimeout(CONNECT_TIMEOUT_S)
        try:
            self._sock.connect(str(path))
        except FileNotFoundError:
            self._sock.close()
            raise RenderdError(f"no renderd daemon socket at {path} (is the daemon running?)") from None
        except PermissionError:
            self._sock.close()
            raise RenderdError(f"permission denied on {path}: ask to be added to the renderd group") from None
        except (ConnectionRefusedError, TimeoutError, OSError) as exc:
            self._sock.close()
            raise RenderdError(f"cannot connect to the daemon at {path}: {exc}") from None
        self._sock.settimeout(timeout)
        self._file = self._sock.makefile("rb")

    def close(self) -> None:
        """Close the connection."""
        self._file.close()
        self._sock.close()

    def __enter__(self) -> Client:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def send(self, op: str, **fields: Any) -> None:
        """Send one request (a daemon that refused us may already have closed: its answer is read next)."""
        try:
            self._sock.sendall(json.dumps({"op": op, **fields}).encode() + b"\n")
        except (BrokenPipeError, ConnectionResetError):
            pass

    def read(self) -> dict[str, Any]:
        """Read one reply line; raise DaemonError for an error reply."""
        try:
            line = self._file.readline(MAX_LINE_BYTES * 16)
        except TimeoutError:
            raise RenderdError("the daemon did not answer in time") from None
        except OSError as exc:
            raise RenderdError(f"lost the connection to the daemon: {exc.strerror or exc}") from None
        if not line:
            raise RenderdError("the daemon closed the connection")
        reply: dict[str, Any] = json.loads(line)
        if not reply.get("ok"):
            err = reply.get("error") or {}
            raise DaemonError(str(err.get("code", "error")), str(err.get("message", "request failed")))
        return reply

    def request(self, op: str, **fields: Any) -> dict[str, Any]:
        """Send a request and return its reply."""
        self.send(op, **fields)
        return self.read()

    def stream(self, op: str, **fields: Any) -> Iterator[dict[str, Any]]:
        """Send a streaming request (watch) and yield its events until the final one."""
        self._sock.settimeout(None)
        self.send(op, **fields)
        while True:
            event = self.read()["event"]
            yield event
            if event.get("final"):
                return
