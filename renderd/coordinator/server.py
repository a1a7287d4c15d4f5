"""The control socket: a Unix stream server that checks each peer's credentials (SO_PEERCRED).

A peer whose uid is not allowed gets one refusal line and the connection is closed before any
request is read. A bad request gets an error line; the connection and the daemon stay up.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import pwd
import socket
import struct
from collections.abc import AsyncIterator, Awaitable, Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path

from renderd.coordinator import protocol
from renderd.coordinator.protocol import Request
from renderd.errors import ControlError, RenderdError

log = logging.getLogger(__name__)

# A client that connected and sends no request line within this is dropped: a stuck or hostile
# client must not hold a connection (and its task) forever. A reply being streamed (watch) is not
# a read, so a long watch is never cut by it.
READ_TIMEOUT_S = 30.0


@dataclass(frozen=True, slots=True)
class Peer:
    """The process at the other end of a control connection."""

    pid: int
    uid: int
    gid: int


@dataclass(frozen=True, slots=True)
class AccessPolicy:
    """Who may talk to the daemon: root, the daemon's own user, listed uids, members of listed gids."""

    uids: frozenset[int] = frozenset()
    gids: frozenset[int] = frozenset()
    daemon_uid: int = field(default_factory=os.getuid)

    def allows(self, peer: Peer) -> bool:
        """Return True when ``peer`` may send requests."""
        if peer.uid in (0, self.daemon_uid) or peer.uid in self.uids or peer.gid in self.gids:
            return True
        return bool(self.gids & set(_groups_of(peer.uid)))


def _groups_of(uid: int) -> Iterable[int]:
    try:
        pw = pwd.getpwuid(uid)
    except KeyError:
        return ()
    try:
        return os.getgrouplist(pw.pw_name, pw.pw_gid)
    except OSError:
        return (pw.pw_gid,)


Reply = bytes | AsyncIterator[bytes]
Handler = Callable[[Request, Peer], Awaitable[Reply]]


def peer_of(sock: socket.socket) -> Peer:
    """Return the credentials of the process connected to a Unix socket."""
    creds = sock.getsockopt(socket.SOL_SOCKET, socket.SO_PEERCRED, struct.calcsize("3i"))
    pid, uid, gid = struct.unpack("3i", creds)
    return Peer(pid, uid, gid)


class ControlServer:
    """Serve control requests on a Unix socket."""

    def __init__(
        self,
        path: Path,
        handler: Handler,
        access: AccessPolicy,
        *,
        mode: int = 0o660,
        read_timeout: float = READ_TIMEOUT_S,
    ) -> None:
        """``read_timeout``: how long a connection may wait before sending its next request line."""
        self.path = path
        self._read_timeout = read_timeout
        self._handler = handler
        self._access = access
        self._mode = mode
        self._server: asyncio.Server | None = None
        self._clients: set[asyncio.Task[None]] = set()

    async def start(self) -> None:
        """Bind and listen; refuse to steal a socket another live daemon is serving."""
        self.path.parent.mkdir(parents=True, exist_ok=True)
        if self.path.exists() or self.path.is_symlink():
            if await _is_live(self.path):
                raise RenderdError(f"another daemon is already listening on {self.path}")
            self.path.unlink()
        self._server = await asyncio.start_unix_server(
            self._on_client, path=str(self.path), limit=protocol.MAX_LINE_BYTES + 1
        )
        os.chmod(self.path, self._mode)

    @property
    def access(self) -> AccessPolicy:
        """Who may talk to the daemon now."""
        return self._access

    def set_access(self, access: AccessPolicy) -> None:
        """Apply a new policy (a reload): it decides every connection accepted from now on."""
        self._access = access

    def stop_accepting(self) -> None:
        """Stop taking new connections (running ones continue)."""
        if self._server is not None:
            self._server.close()

    async def close(self) -> None:
        """Stop listening, drop connected clients and remove the socket file."""
        self.stop_accepting()
        for t in list(self._clients):
            t.cancel()
        if self._clients:
            await asyncio.wait(self._clients, timeout=5)
        if self._server is not None:
            with contextlib.suppress(Exception):
                await asyncio.wait_for(self._server.wait_closed(), 5)
            self._server = None
        with contextlib.suppress(FileNotFoundError):
            self.path.unlink()

    async def _on_client(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        task = asyncio.current_task()
        assert task is not None
        self._clients.add(task)
        try:
            await self._serve_client(reader, writer)
        except (ConnectionError, asyncio.IncompleteReadError, TimeoutError):
            pass
        except asyncio.CancelledError:
            pass
        except Exception:  # a bug in a handler must not take the daemon down
            log.exception("control connection failed")
        finally:
            self._clients.discard(task)
            writer.close()
            with contextlib.suppress(Exception):
                await asyncio.wait_for(writer.wait_closed(), 2)

    async def _serve_client(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        sock = writer.get_extra_info("socket")
        peer = peer_of(sock)
        if not self._access.allows(peer):
            log.warning("refused control connection from uid %d (pid %d)", peer.uid, peer.pid)
            writer.write(protocol.error(protocol.FORBIDDEN, f"uid {peer.uid} is not allowed to use renderd"))
            await writer.drain()
            return
        while True:
            try:
                line = await asyncio.wait_for(reader.readline(), self._read_timeout)
            except ValueError:
                # Longer than the stream limit: answer, then drop the connection (we cannot resync).
                writer.write(protocol.error(protocol.TOO_LARGE, "request line too long"))
                await writer.drain()
                return
            if not line:
                return
            if not line.strip():
                continue
            await self._answer(line, peer, writer)

    async def _answer(self, line: bytes, peer: Peer, writer: asyncio.StreamWriter) -> None:
        try:
            request = protocol.parse_request(line)
            reply = await self._handler(request, peer)
        except ControlError as exc:
            reply = protocol.error(exc.code, str(exc))
        except RenderdError as exc:
            reply = protocol.error(protocol.BAD_INPUT, str(exc))
        except Exception as exc:
            log.exception("handler failed")
            reply = protocol.error(protocol.INTERNAL, f"internal error: {type(exc).__name__}")
        if isinstance(reply, bytes):
            writer.write(reply)
            await writer.drain()
            return
        async for chunk in reply:
            writer.write(chunk)
            await writer.drain()


async def _is_live(path: Path) -> bool:
    try:
        _, w = await asyncio.wait_for(asyncio.open_unix_connection(str(path)), 2)
    except (OSError, TimeoutError):
        return False
    w.close()
    return True
