"""Render hosts over SSH: a pooled asyncssh connection per host, agents as remote commands, rsync for files.

Host keys are checked strictly against the inventory's known_hosts; an unknown or changed key
refuses the host. Commands are argument lists joined with ``shlex.join``, so no string from a
job reaches a remote shell unquoted. Files move with rsync over the system ssh client, with the
same identity and known_hosts.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import os
import shlex
from collections import deque
from pathlib import Path
from typing import Any

import asyncssh

from renderd import procs
from renderd.assignment import Assignment
from renderd.config import HostConfig, Timeouts
from renderd.confine import tree_digest
from renderd.coordinator.transport import (
    CANCEL_GRACE_S,
    STDERR_LINES,
    AgentFailed,
    EventSink,
    collect_stderr,
    describe_result,
    follow_agent,
)
from renderd.describe import DescribeRequest
from renderd.errors import HostUnavailable, ProcessFailed, RenderdError
from renderd.errors import NoServe as _NoServe

log = logging.getLogger(__name__)

KEEPALIVE_MAX = 3
RSYNC_TIMEOUT_S = 600.0


class SshTransport:
    """Run agents on one SSH host."""

    def __init__(self, host: HostConfig, timeouts: Timeouts) -> None:
        self.name = host.name
        self.host = host
        self.timeouts = timeouts
        self._conn: asyncssh.SSHClientConnection | None = None
        self._tunnel: asyncssh.SSHClientConnection | None = None  # to the jump host, if any
        self._lock = asyncio.Lock()
        self.work = host.work_dir
        # Serving agents between chunks, per job: the next chunk of the job reuses their browsers.
        self._idle: dict[str, list[ServedAgent]] = {}
        # Serving agents of jobs that ended (``spare_agents``, at most one per slot): another job's
        # first chunks start on them without an SSH exec, a Python start or a Playwright driver
        # start. Confinement holds: their engine (browsers, pages) was for the job they served, a
        # new job gets a fresh one (engine/warm.py), and an idle agent closes its browsers after a
        # minute (agent.py). Every job runs as the host's one SSH user in any case.
        self._spare: list[ServedAgent] = []
        self._spare_limit = min(host.spare_agents, host.slots)
        self._serve = host.warm_agents
        self._sftp = True  # until the host turns out to have no SFTP subsystem

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
            "keepalive_interval": self.timeouts.keepalive,
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
                        tunnel = await self._connect_jump()
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

    async def _connect_jump(self) -> asyncssh.SSHClientConnection:
        """Connect to the jump host with this host's identity and known_hosts (strict)."""
        user, address, port = parse_target(self.host.jump_host or "")
        options = {**self._options(), "port": port, "username": user or self.host.user}
        if self._tunnel is not None:
            self._tunnel.close()
        try:
            self._tunnel = await asyncssh.connect(address, **options)
        except asyncssh.HostKeyNotVerifiable as exc:
            raise HostUnavailable(
                f"host {self.name}: jump host {address} key not trusted ({exc.reason}); check {self.host.known_hosts}",
                host=self.name,
            ) from None
        except (OSError, TimeoutError, asyncssh.Error) as exc:
            raise HostUnavailable(
                f"host {self.name}: cannot reach jump host {address}: {_why(exc)}", host=self.name
            ) from None
        return self._tunnel

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
        """Stop the idle agents and close the pooled connection."""
        await self._stop_idle()
        for conn in (self._conn, self._tunnel):
            if conn is not None:
                conn.close()
                with contextlib.suppress(Exception):
                    await asyncio.wait_for(conn.wait_closed(), 5)
        self._conn = self._tunnel = None

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

    async def describe(self, request: DescribeRequest, *, timeout: float) -> dict[str, Any]:
        """Run the agent's describe on the host (the request on stdin, one JSON line back)."""
        conn = await self.connection()
        command = shlex.join([*self.host.agent_command, "--describe"])
        try:
            result = await asyncio.wait_for(conn.run(command, input=request.to_json() + "\n", check=False), timeout)
        except TimeoutError:
            raise AgentFailed(f"host {self.name}: describe timed out after {timeout:.0f} s", host=self.name) from None
        except (OSError, asyncssh.Error) as exc:
            raise HostUnavailable(f"host {self.name}: describe failed: {_why(exc)}", host=self.name) from None
        return describe_result(self.name, result.exit_status, str(result.stdout or ""), str(result.stderr or ""))

    # -- files -----------------------------------------------------------------------------

    def _ssh_argv(self, port: int) -> list[str]:
        """The system ssh client with this host's identity, known_hosts and timeouts."""
        h = self.host
        keepalive = max(1, round(self.timeouts.keepalive))
        argv = ["ssh", "-p", str(port), "-o", "BatchMode=yes", "-o", f"ConnectTimeout={int(self.timeouts.connect)}"]
        argv += ["-o", f"ServerAliveInterval={keepalive}", "-o", f"ServerAliveCountMax={KEEPALIVE_MAX}"]
        if h.identity_file:
            argv += ["-i", str(h.identity_file), "-o", "IdentitiesOnly=yes"]
        if h.known_hosts:
            # The same file and policy as the asyncssh connection (which has recorded a new key
            # under accept-new by the time rsync runs); ssh's default file would not know the host.
            strict = "yes" if h.host_key_policy == "strict" else "accept-new"
            argv += ["-o", f"UserKnownHostsFile={h.known_hosts}", "-o", f"StrictHostKeyChecking={strict}"]
        return argv

    def _rsh(self) -> str:
        argv = self._ssh_argv(self.host.port)
        if self.host.jump_host:
            # Not `-J`: ssh would reach the jump host with its default identity and known_hosts.
            user, address, port = parse_target(self.host.jump_host)
            user = user or self.host.user
            jump = [*self._ssh_argv(port), "-W", "%h:%p", f"{user}@{address}" if user else address]
            argv += ["-o", f"ProxyCommand={shlex.join(jump)}"]
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
        digest = (await asyncio.to_thread(tree_digest, root.resolve()))[:32]
        target = f"{self.work}/cache/{digest}"
        check = await (await self.connection()).run(shlex.join(["test", "-d", target]), check=False)
        if check.exit_status != 0:
            partial = f"{target}.partial-{job_id}"
            await self.run(["mkdir", "-p", f"{self.work}/cache"])
            # --safe-links: a symlink leading out of the composition is not copied (its target
            # on the host is not the composition's to read); specials are not copied either.
            await self.rsync(
                "--delete", "--safe-links", "--no-devices", "--no-specials", f"{root}/", self.remote(f"{partial}/")
            )
            # Publish atomically: a half-copied composition is never used.
            await self.run(["sh", "-c", 'mv -T "$1" "$2" 2>/dev/null || rm -rf "$1"', "sh", partial, target])
        return f"{target}/{entry}" if entry else target

    def chunk_paths(self, job_id: str, index: int, attempt_id: int, ext: str = "mp4") -> tuple[str, str]:
        """Chunk outputs and frames live under the host's work dir, per job."""
        job_dir = f"{self.work}/jobs/{job_id}"
        return f"{job_dir}/chunk-{index:05d}-a{attempt_id}.{ext}", f"{job_dir}/work-{index}-a{attempt_id}"

    async def fetch(self, remote_path: str, local_path: Path) -> None:
        """Copy a chunk back (to a temp name, then rename).

        Over SFTP on the pooled connection: measured ~0.05 s for a 6 MB chunk against ~0.5 s
        for rsync, which opens a new SSH connection each time. A host without the SFTP
        subsystem gets rsync.
        """
        tmp = local_path.with_name(f".{local_path.name}.fetch")
        if self._sftp:
            try:
                conn = await self.connection()
                async with asyncio.timeout(RSYNC_TIMEOUT_S):
                    async with conn.start_sftp_client() as sftp:
                        await sftp.get(remote_path, str(tmp))
                os.replace(tmp, local_path)
                return
            except asyncssh.ChannelOpenError as exc:
                if self._conn is None or self._conn.is_closed():  # the link, not the subsystem
                    raise HostUnavailable(f"host {self.name}: connection lost: {_why(exc)}", host=self.name) from None
                log.warning("host %s: no SFTP (%s); fetching chunks with rsync", self.name, _why(exc))
                self._sftp = False
            except (OSError, TimeoutError, asyncssh.Error) as exc:
                with contextlib.suppress(OSError):
                    tmp.unlink()
                raise HostUnavailable(
                    f"host {self.name}: fetching {remote_path} failed: {_why(exc)}", host=self.name
                ) from None
        await self.rsync(self.remote(remote_path), str(tmp))
        os.replace(tmp, local_path)

    async def cleanup_job(self, job_id: str) -> None:
        """Stop the job's idle agents (or keep them as spares), and remove its directory on the host."""
        agents = self._idle.pop(job_id, [])
        keep = [a for a in agents if a.usable(self._conn)][: max(0, self._spare_limit - len(self._spare))]
        self._spare.extend(keep)
        await asyncio.gather(*(a.stop() for a in agents if a not in keep), return_exceptions=True)
        await self.run(["rm", "-rf", f"{self.work}/jobs/{job_id}"])

    # -- agents ----------------------------------------------------------------------------

    async def run_chunk(self, assignment: Assignment, on_event: EventSink, *, timeout: float) -> dict[str, Any]:
        """Run the chunk on a warm serving agent of its job (started if none is idle).

        A host whose agent has no ``--serve`` (an older install) falls back to one agent per chunk.
        """
        if self._serve:
            try:
                return await self._run_served(assignment, on_event, timeout)
            except _NoServe:
                log.warning("host %s: the agent has no --serve; starting one agent per chunk", self.name)
                self._serve = False
        return await self._run_once(assignment, on_event, timeout)

    async def _start_agent(self, argv: list[str]) -> asyncssh.SSHClientProcess[bytes]:
        conn = await self.connection()
        try:
            return await conn.create_process(shlex.join(argv), encoding=None)
        except (OSError, asyncssh.Error) as exc:
            raise HostUnavailable(f"host {self.name}: cannot start the agent: {_why(exc)}", host=self.name) from None

    async def _run_served(self, assignment: Assignment, on_event: EventSink, timeout: float) -> dict[str, Any]:
        agent = None
        for idle in (self._idle.get(assignment.job_id, []), self._spare):
            while idle and agent is None:
                candidate = idle.pop()
                if candidate.usable(self._conn):
                    agent = candidate
                else:
                    await candidate.stop()
        fresh = agent is None
        if agent is None:
            agent = ServedAgent(await self._start_agent([*self.host.agent_command, "--serve"]), self._conn)
        proc = agent.proc
        try:
            done = await follow_agent(
                self.name, assignment, on_event, timeout,
                stdin=proc.stdin, stdout=proc.stdout, stderr=agent.tail, wait=agent.exit_status, stop=agent.stop,
                served=True,
            )  # fmt: skip
        except (AgentFailed, asyncssh.Error, ConnectionError, BrokenPipeError) as exc:
            await agent.stop()
            if fresh and agent.lacks_serve():
                raise _NoServe from None
            if isinstance(exc, AgentFailed):
                raise
            raise HostUnavailable(f"host {self.name}: connection lost: {_why(exc)}", host=self.name) from None
        except BaseException:
            await agent.stop()
            raise
        self._idle.setdefault(assignment.job_id, []).append(agent)
        return done

    async def _stop_idle(self) -> None:
        """Stop every idle agent, of running jobs and spare: their browsers exit."""
        agents = [a for j in list(self._idle) for a in self._idle.pop(j, [])]
        agents += self._spare
        self._spare = []
        await asyncio.gather(*(a.stop() for a in agents), return_exceptions=True)

    async def _run_once(self, assignment: Assignment, on_event: EventSink, timeout: float) -> dict[str, Any]:
        """Run one agent for one chunk; closing its stdin (or losing the link) makes it stop."""
        proc = await self._start_agent([*self.host.agent_command, "--watch-stdin"])
        agent = ServedAgent(proc, self._conn)

        async def wait() -> int | None:
            completed = await proc.wait()
            return completed.exit_status

        try:
            return await follow_agent(
                self.name, assignment, on_event, timeout,
                stdin=proc.stdin, stdout=proc.stdout, stderr=agent.tail, wait=wait, stop=agent.stop,
            )  # fmt: skip
        except (asyncssh.Error, ConnectionError, BrokenPipeError) as exc:
            raise HostUnavailable(f"host {self.name}: connection lost: {_why(exc)}", host=self.name) from None
        finally:
            await agent.stop()


class ServedAgent:
    """An agent process on a host, its stderr tail collected for as long as it runs."""

    def __init__(self, proc: asyncssh.SSHClientProcess[bytes], conn: asyncssh.SSHClientConnection | None) -> None:
        self.proc = proc
        self.conn = conn
        self.tail: deque[str] = deque(maxlen=STDERR_LINES)
        self._stderr = asyncio.create_task(collect_stderr(proc.stderr, self.tail))

    def usable(self, conn: asyncssh.SSHClientConnection | None) -> bool:
        """Whether the agent still runs on the current connection."""
        proc = self.proc
        alive = proc.returncode is None and not proc.is_closing() and not proc.stdout.at_eof()
        return self.conn is conn and conn is not None and not conn.is_closed() and alive

    def lacks_serve(self) -> bool:
        """Whether the agent refused ``--serve`` as an unknown option (an older renderd)."""
        return self.proc.exit_status == 2 and any("--serve" in line for line in self.tail)

    async def exit_status(self) -> int | None:
        """Wait for the agent to exit; return its status."""
        completed = await self.proc.wait()
        return completed.exit_status

    async def stop(self) -> None:
        """Close the agent's stdin (it cancels and cleans up); kill it after a grace period."""
        proc = self.proc
        with contextlib.suppress(Exception):
            proc.stdin.write_eof()
        try:
            await asyncio.wait_for(proc.wait_closed(), CANCEL_GRACE_S)
        except (TimeoutError, asyncssh.Error, OSError):
            with contextlib.suppress(Exception):
                proc.kill()
            proc.close()
        with contextlib.suppress(Exception):
            await asyncio.wait_for(self._stderr, 5)


def parse_target(target: str) -> tuple[str | None, str, int]:
    """Split ``[user@]host[:port]`` (an IPv6 host in brackets) into (user, host, port)."""
    user, _, rest = target.rpartition("@")
    port = 22
    if rest.startswith("["):
        host, _, tail = rest[1:].partition("]")
        if tail.startswith(":") and tail[1:].isdigit():
            port = int(tail[1:])
    elif rest.count(":") == 1 and rest.split(":")[1].isdigit():
        host, port = rest.split(":")[0], int(rest.split(":")[1])
    else:
        host = rest
    return user or None, host, port


def _why(exc: BaseException) -> str:
    text = str(exc).strip()
    return text.splitlines()[0] if text else type(exc).__name__
