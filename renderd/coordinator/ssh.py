"""Render hosts over SSH: a pooled asyncssh connection per host, agents as remote commands, rsync for files.

Host keys are checked strictly against the inventory's known_hosts; an unknown or changed key
refuses the host. Commands are argument lists joined with ``shlex.join``, so no string from a
job reaches a remote shell unquoted. Files move with rsync over the system ssh client, with the
same identity and known_hosts.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import json
import logging
import os
import shlex
from pathlib import Path
from typing import Any

import asyncssh

from renderd import procs
from renderd.assignment import Assignment
from renderd.config import HostConfig, Timeouts
from renderd.coordinator.transport import CANCEL_GRACE_S, AgentFailed, EventSink, follow_agent
from renderd.errors import ProcessFailed, RenderdError

log = logging.getLogger(__name__)

KEEPALIVE_S = 15
KEEPALIVE_MAX = 3
RSYNC_TIMEOUT_S = 600.0


class HostUnavailable(AgentFailed):
    """The host could not be reached or refused us (the chunk goes elsewhere)."""


def composition_digest(root: Path) -> str:
    """Return a content hash of every file under ``root`` (names and bytes)."""
    h = hashlib.sha256()
    for path in sorted(p for p in root.rglob("*") if p.is_file()):
        rel = path.relative_to(root).as_posix().encode()
        h.update(len(rel).to_bytes(4, "big") + rel)
        with path.open("rb") as f:
            for block in iter(lambda: f.read(1 << 20), b""):
                h.update(block)
        h.update(b"\0")
    return h.hexdigest()[:32]


class SshTransport:
    """Run agents on one SSH host."""

    def __init__(self, host: HostConfig, timeouts: Timeouts) -> None:
        self.name = host.name
        self.host = host
        self.timeouts = timeouts
        self._conn: asyncssh.SSHClientConnection | None = None
        self._lock = asyncio.Lock()
        self.work = host.work_dir

    # -- connection ------------------------------------------------------------------------

    def _known(self) -> bool:
        """Whether the known_hosts file has any key for this host."""
        h = self.host
        if h.known_hosts is None or not h.known_hosts.exists():
            return False
        trusted, *_ = asyncssh.read_known_hosts(str(h.known_hosts)).match(h.address, h.address, h.port)
        return bool(trusted)

    def _options(self, *, record_new_key: bool = False) -> dict[str, Any]:
        h = self.host
        if h.known_hosts is None:
            raise HostUnavailable(f"host {h.name}: no known_hosts file set; refusing to trust its key", host=h.name)
        return {
            "port": h.port,
            "username": h.user,
            "client_keys": [str(h.identity_file)] if h.identity_file else (),
            # accept-new: a host with no key on file is trusted once and its key recorded; a
            # changed key is refused exactly as in strict mode.
            "known_hosts": None if record_new_key else str(h.known_hosts),
            "keepalive_interval": KEEPALIVE_S,
            "keepalive_count_max": KEEPALIVE_MAX,
            "connect_timeout": self.timeouts.connect,
            "agent_path": None,
        }

    async def connection(self) -> asyncssh.SSHClientConnection:
        """Return the pooled connection, (re)connecting when needed."""
        async with self._lock:
            if self._conn is not None and not self._conn.is_closed():
                return self._conn
            try:
                async with asyncio.timeout(self.timeouts.connect + 5):
                    tunnel = None
                    if self.host.jump_host:
                        tunnel = await asyncssh.connect(self.host.jump_host, **self._options())
                    record = self.host.host_key_policy == "accept-new" and not self._known()
                    self._conn = await asyncssh.connect(
                        self.host.address, tunnel=tunnel, **self._options(record_new_key=record)
                    )
                    if record:
                        self._record_host_key(self._conn)
            except asyncssh.HostKeyNotVerifiable as exc:
                raise HostUnavailable(
                    f"host {self.name}: host key not trusted ({exc.reason}); check {self.host.known_hosts}",
                    host=self.name,
                ) from None
            except asyncssh.PermissionDenied:
                raise HostUnavailable(f"host {self.name}: SSH authentication failed", host=self.name) from None
            except (OSError, TimeoutError, asyncssh.Error) as exc:
                raise HostUnavailable(f"host {self.name}: cannot connect: {_why(exc)}", host=self.name) from None
            return self._conn

    def _record_host_key(self, conn: asyncssh.SSHClientConnection) -> None:
        h = self.host
        key = conn.get_server_host_key()
        if key is None or h.known_hosts is None:
            return
        name = h.address if h.port == 22 else f"[{h.address}]:{h.port}"
        line = f"{name} {key.export_public_key('openssh').decode().strip()}\n"
        with open(h.known_hosts, "a", encoding="ascii") as f:
            f.write(line)
        log.warning("host %s: recorded its new host key in %s (host_key_policy = accept-new)", h.name, h.known_hosts)

    async def close(self) -> None:
        """Close the pooled connection."""
        if self._conn is not None:
            conn, self._conn = self._conn, None
            conn.close()
            with contextlib.suppress(Exception):
                await asyncio.wait_for(conn.wait_closed(), 5)

    async def run(self, argv: list[str], *, timeout: float = 60) -> asyncssh.SSHCompletedProcess:
        """Run a short command on the host; raise RenderdError if it fails."""
        conn = await self.connection()
        try:
            result = await asyncio.wait_for(conn.run(shlex.join(argv), check=False), timeout)
        except (OSError, TimeoutError, asyncssh.Error) as exc:
            raise HostUnavailable(f"host {self.name}: {argv[0]} failed: {_why(exc)}", host=self.name) from None
        if result.exit_status != 0:
            err = str(result.stderr or "").strip().splitlines()
            raise RenderdError(f"host {self.name}: {argv[0]} exited {result.exit_status}: {err[-1] if err else ''}")
        return result

    async def probe(self) -> dict[str, Any]:
        """Run the agent's probe on the host."""
        result = await self.run([*self.host.agent_command, "--probe", "--work-dir", str(self.work)])
        try:
            data: dict[str, Any] = json.loads(str(result.stdout))
        except ValueError:
            raise RenderdError(f"host {self.name}: the agent's probe did not print JSON") from None
        return data

    # -- files -----------------------------------------------------------------------------

    def _rsh(self) -> str:
        h = self.host
        argv = ["ssh", "-p", str(h.port), "-o", "BatchMode=yes", "-o", f"ConnectTimeout={int(self.timeouts.connect)}"]
        if h.identity_file:
            argv += ["-i", str(h.identity_file), "-o", "IdentitiesOnly=yes"]
        if h.host_key_policy == "strict" and h.known_hosts:
            argv += ["-o", f"UserKnownHostsFile={h.known_hosts}", "-o", "StrictHostKeyChecking=yes"]
        if h.jump_host:
            argv += ["-J", h.jump_host]
        return shlex.join(argv)

    def remote(self, path: str) -> str:
        user = f"{self.host.user}@" if self.host.user else ""
        addr = f"[{self.host.address}]" if ":" in self.host.address else self.host.address
        return f"{user}{addr}:{path}"

    async def rsync(self, *args: str) -> None:
        try:
            await procs.run(["rsync", "-a", "-e", self._rsh(), *args], timeout=RSYNC_TIMEOUT_S)
        except ProcessFailed as exc:
            why = exc.stderr_tail.strip()[-300:]
            raise HostUnavailable(f"host {self.name}: rsync failed: {why}", host=self.name) from None

    async def stage_composition(self, job_id: str, composition: Path) -> str:
        """Sync the composition into the host's content-addressed cache (skipped when already there)."""
        root = composition if composition.is_dir() else composition.parent
        entry = "" if composition.is_dir() else composition.name
        digest = await asyncio.to_thread(composition_digest, root)
        target = f"{self.work}/cache/{digest}"
        check = await (await self.connection()).run(shlex.join(["test", "-d", target]), check=False)
        if check.exit_status != 0:
            partial = f"{target}.partial-{job_id}"
            await self.run(["mkdir", "-p", f"{self.work}/cache"])
            await self.rsync("--delete", f"{root}/", self.remote(f"{partial}/"))
            # Publish atomically: a half-copied composition is never used.
            await self.run(["sh", "-c", 'mv -T "$1" "$2" 2>/dev/null || rm -rf "$1"', "sh", partial, target])
        return f"{target}/{entry}" if entry else target

    def chunk_paths(self, job_id: str, index: int, attempt_id: int) -> tuple[str, str]:
        """Chunk outputs and frames live under the host's work dir, per job."""
        job_dir = f"{self.work}/jobs/{job_id}"
        return f"{job_dir}/chunk-{index:05d}-a{attempt_id}.mp4", f"{job_dir}/work-{index}-a{attempt_id}"

    async def fetch(self, remote_path: str, local_path: Path) -> None:
        """Copy a chunk back (to a temp name, then rename)."""
        tmp = local_path.with_name(f".{local_path.name}.fetch")
        await self.rsync(self.remote(remote_path), str(tmp))
        os.replace(tmp, local_path)

    async def cleanup_job(self, job_id: str) -> None:
        """Remove the job's directory on the host."""
        await self.run(["rm", "-rf", f"{self.work}/jobs/{job_id}"])

    # -- agents ----------------------------------------------------------------------------

    async def run_chunk(self, assignment: Assignment, on_event: EventSink, *, timeout: float) -> dict[str, Any]:
        """Run the agent on the host; closing its stdin (or losing the link) makes it stop."""
        conn = await self.connection()
        command = shlex.join([*self.host.agent_command, "--watch-stdin"])
        try:
            proc = await conn.create_process(command, encoding=None)
        except (OSError, asyncssh.Error) as exc:
            raise HostUnavailable(f"host {self.name}: cannot start the agent: {_why(exc)}", host=self.name) from None

        async def stop() -> None:
            with contextlib.suppress(Exception):
                proc.stdin.write_eof()
            try:
                await asyncio.wait_for(proc.wait_closed(), CANCEL_GRACE_S)
            except (TimeoutError, asyncssh.Error, OSError):
                with contextlib.suppress(Exception):
                    proc.kill()
                proc.close()

        async def wait() -> int | None:
            completed = await proc.wait()
            return completed.exit_status

        try:
            return await follow_agent(
                self.name, assignment, on_event, timeout,
                stdin=proc.stdin, stdout=proc.stdout, stderr=proc.stderr, wait=wait, stop=stop,
            )  # fmt: skip
        except (asyncssh.Error, ConnectionError, BrokenPipeError) as exc:
            raise HostUnavailable(f"host {self.name}: connection lost: {_why(exc)}", host=self.name) from None


def _why(exc: BaseException) -> str:
    text = str(exc).strip()
    return text.splitlines()[0] if text else type(exc).__name__
