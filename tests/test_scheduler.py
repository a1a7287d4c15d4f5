"""The scheduler's bookkeeping under faults, driven in-process: a real Scheduler/Coordinator in the
test's event loop, real SQLite store files, and for SSH an asyncssh server on port 0 whose
processes script what an agent prints.

The only fakes are the injected faults themselves: a LocalTransport subclass whose agent run
raises or hangs, a second SQLite connection that holds the write lock, a server that drops the
connection or prints a malformed event.
"""

from __future__ import annotations

import asyncio
import os
import sqlite3
import sys
from collections.abc import AsyncIterator, Callable
from pathlib import Path, PurePosixPath
from typing import Any

import asyncssh
import pytest
from conftest import FIXTURES, RENDERD
from daemonctl import request_as

from renderd.assignment import Assignment
from renderd.config import DaemonConfig, HostConfig, Inventory, SchedulingPolicy, Timeouts
from renderd.coordinator.daemon import Coordinator
from renderd.coordinator.models import JobState, NewJob
from renderd.coordinator.scheduler import Scheduler
from renderd.coordinator.store import Store
from renderd.coordinator.transport import AgentFailed, EventSink, LocalTransport
from renderd.errors import StoreError

AGENT = (sys.executable, "-m", "renderd", "agent")
PARAMS = {"fps": "30/1", "width": 320, "height": 240, "duration": "4", "format": "jpeg", "workers": 1}


def daemon_config(root: Path, **scheduling: Any) -> DaemonConfig:
    policy = SchedulingPolicy(**{"max_attempts": 2, "host_failure_quarantine": 0, **scheduling})
    return DaemonConfig(
        socket=root / "renderd.sock",
        state_dir=root / "state",
        hosts_file=root / "hosts.toml",
        scheduling=policy,
        timeouts=Timeouts(connect=5, chunk=60, shutdown=5),
        watchdog=False,
    )


def local_host(name: str, slots: int = 1, **kw: Any) -> HostConfig:
    return HostConfig(**{"name": name, "address": "local", "slots": slots, "workers": 1, "agent_command": AGENT, **kw})


def inventory(root: Path, *hosts: HostConfig) -> Inventory:
    return Inventory(tuple(hosts), root / "hosts.toml")


async def new_job(store: Store, chunks: list[tuple[int, int]], composition: Path | None = None) -> str:
    comp = composition or FIXTURES / "frame-index-hook"
    end = chunks[-1][1]
    spec = NewJob(str(comp), str(store.path.parent.parent / "out.mp4"), PARAMS, 120, 0, end, submitted_by_uid=0)
    return (await store.create_job(spec, chunks)).id


async def until(
    check: Callable[[], Any], what: str, timeout: float = 20, *, run: asyncio.Task[None] | None = None
) -> Any:
    """Poll ``check`` (a coroutine function) until it returns something truthy."""
    deadline = asyncio.get_running_loop().time() + timeout
    while True:
        value = await check()
        if value:
            return value
        if run is not None and run.done():
            raise AssertionError(f"the scheduler loop ended ({run.exception()!r}) before {what}")
        assert asyncio.get_running_loop().time() < deadline, f"timed out waiting for {what}"
        await asyncio.sleep(0.1)


class Faulty(LocalTransport):
    """A local host whose agent run raises ``fault`` (or hangs, when ``fault`` is None), after ``real`` real runs."""

    def __init__(self, name: str, jobs_dir: Path, fault: Callable[[], BaseException] | None, real: int = 0) -> None:
        super().__init__(name, jobs_dir, AGENT)
        self.fault = fault
        self.real = real
        self.calls = 0

    async def run_chunk(self, assignment: Assignment, on_event: EventSink, *, timeout: float) -> dict[str, Any]:
        self.calls += 1
        if self.calls <= self.real:
            return await super().run_chunk(assignment, on_event, timeout=timeout)
        if self.fault is None:
            await asyncio.Event().wait()
        assert self.fault is not None
        raise self.fault()


class Running:
    """A Scheduler running in the test's loop; stopped, drained and closed on exit."""

    def __init__(self, store: Store, config: DaemonConfig, inv: Inventory) -> None:
        self.sched = Scheduler(store, config, inv)
        self.stop = asyncio.Event()
        self.task: asyncio.Task[None] | None = None

    async def __aenter__(self) -> Running:
        return self

    def start(self) -> asyncio.Task[None]:
        self.task = asyncio.create_task(self.sched.run(self.stop))
        return self.task

    async def __aexit__(self, *exc: object) -> None:
        self.stop.set()
        self.sched.stop_claiming()
        await self.sched.drain(5)
        await self.sched.close()
        if self.task is not None:
            await asyncio.wait([self.task], timeout=5)
            if self.task.done() and not self.task.cancelled():
                self.task.exception()  # retrieved: the test asserts on the loop itself


@pytest.fixture
async def store(tmp_path: Path) -> AsyncIterator[Store]:
    s = await Store.open(tmp_path / "state" / "renderd.db", max_attempts=2, busy_timeout_s=0.05)
    yield s
    await s.close()


async def job_state(store: Store, job_id: str) -> JobState:
    job = await store.get_job(job_id)
    assert job is not None
    return job.state


def in_flight(chunks: list[Any]) -> list[Any]:
    return [c for c in chunks if c.state.value in ("assigned", "rendering", "fetched")]


# -- any exception in a chunk task ends the attempt and frees the slot -------------------------


@pytest.mark.parametrize(
    "fault",
    [lambda: OSError(28, "No space left on device"), lambda: KeyError("frames_done"), lambda: ValueError("bad event")],
    ids=["OSError", "KeyError", "ValueError"],
)
async def test_unexpected_exception_fails_the_attempt_and_frees_the_slot(
    tmp_path: Path, store: Store, fault: Callable[[], BaseException]
) -> None:
    config = daemon_config(tmp_path)
    async with Running(store, config, inventory(tmp_path, local_host("h1"))) as r:
        r.sched.hosts["h1"].transport = transport = Faulty("h1", config.state_dir / "jobs", fault)
        job_id = await new_job(store, [(0, 10)])
        run = r.start()

        async def failed() -> bool:
            return await job_state(store, job_id) == JobState.FAILED

        await until(failed, "the job to fail after max_attempts", run=run)
        assert transport.calls == 2  # requeued once, then the job failed
        attempts = await store.get_attempts(job_id)
        assert [a.outcome.value for a in attempts] == ["failed", "failed"]
        assert all(type(fault()).__name__ in (a.error or "") for a in attempts), [a.error for a in attempts]
        assert not in_flight(await store.get_chunks(job_id))
        await until(lambda: _true(not r.sched.running_tasks()), "the slot to free up")
        assert r.sched.hosts["h1"].free_slots == 1
        assert not run.done()


async def test_store_locked_while_a_failure_is_recorded(tmp_path: Path, store: Store) -> None:
    """A store write that fails (another process holds the write lock) is retried, not lost."""
    config = daemon_config(tmp_path)
    db_path = store.path
    holders: list[sqlite3.Connection] = []

    class LockThenFail(Faulty):
        async def run_chunk(self, assignment: Assignment, on_event: EventSink, *, timeout: float) -> dict[str, Any]:
            self.calls += 1
            holder = sqlite3.connect(db_path, isolation_level=None)
            holder.execute("BEGIN EXCLUSIVE")
            holders.append(holder)
            asyncio.get_running_loop().call_later(1.0, holder.rollback)
            raise AgentFailed("agent crashed", host=self.name)

    async with Running(store, config, inventory(tmp_path, local_host("h1"))) as r:
        r.sched.hosts["h1"].transport = transport = LockThenFail("h1", config.state_dir / "jobs", None)
        job_id = await new_job(store, [(0, 10)])
        run = r.start()

        async def failed() -> bool:
            return await job_state(store, job_id) == JobState.FAILED

        await until(failed, "the job to fail once the lock is gone", timeout=30, run=run)
        assert transport.calls == 2
        attempts = await store.get_attempts(job_id)
        assert [a.outcome.value for a in attempts] == ["failed", "failed"]
        assert not in_flight(await store.get_chunks(job_id))
        await until(lambda: _true(not r.sched.running_tasks()), "the slot to free up")
        assert not run.done()
    for h in holders:
        h.close()


# -- SSH: an in-process asyncssh server scripts what the "agent" does -------------------------


Script = Callable[[asyncssh.SSHServerProcess[bytes]], Any]


class SshHost:
    """An asyncssh server on 127.0.0.1:0; ``script`` plays the agent for ``renderd agent`` commands."""

    def __init__(
        self, root: Path, script: Script, *, drop_staging: bool = False, refuse_sessions: bool = False
    ) -> None:
        self.root = root
        self.drop_staging = drop_staging
        self.refuse_sessions = refuse_sessions
        self.script = script
        self.connections: set[asyncssh.SSHServerConnection] = set()
        self.commands: list[str] = []
        self.server: asyncssh.SSHAcceptor | None = None

    async def __aenter__(self) -> SshHost:
        host_key = asyncssh.generate_private_key("ssh-ed25519")
        client_key = asyncssh.generate_private_key("ssh-ed25519")
        self.identity = self.root / "id_test"
        client_key.write_private_key(str(self.identity))
        os.chmod(self.identity, 0o600)
        outer = self

        class Server(asyncssh.SSHServer):
            def connection_made(self, conn: asyncssh.SSHServerConnection) -> None:
                self.conn = conn
                outer.connections.add(conn)

            def connection_lost(self, exc: Exception | None) -> None:
                outer.connections.discard(self.conn)

        self.server = await asyncssh.listen(
            "127.0.0.1", 0, server_factory=Server, server_host_keys=[host_key],
            authorized_client_keys=asyncssh.import_authorized_keys(client_key.export_public_key().decode()),
            process_factory=None if self.refuse_sessions else self._process, encoding=None,
        )  # fmt: skip
        self.port = self.server.sockets[0].getsockname()[1]
        self.known_hosts = self.root / "known_hosts"
        self.known_hosts.write_text(f"[127.0.0.1]:{self.port} {host_key.export_public_key().decode()}")
        return self

    async def __aexit__(self, *exc: object) -> None:
        assert self.server is not None
        self.server.close()
        await self.server.wait_closed()

    async def _process(self, process: asyncssh.SSHServerProcess[bytes]) -> None:
        command = process.command or ""
        self.commands.append(command)
        if command.startswith("renderd agent"):
            await self.script(process)
        elif command.startswith("test -d") and self.drop_staging:
            process.get_extra_info("connection").abort()
        else:
            process.exit(0)  # test -d (the composition is "cached"), mkdir, rm

    def host(self, name: str = "r1") -> HostConfig:
        return HostConfig(
            name=name, address="127.0.0.1", port=self.port, user="renderd", identity_file=self.identity,
            known_hosts=self.known_hosts, work_dir=PurePosixPath("/nonexistent/renderd"),
        )  # fmt: skip


async def malformed_progress(process: asyncssh.SSHServerProcess[bytes]) -> None:
    await process.stdin.readline()
    process.stdout.write(b'{"event": "started"}\n{"event": "progress", "frames_done": null}\n')
    process.stdout.write(b'{"event": "progress"}\n["not", "an", "event"]\n')
    await asyncio.sleep(0.2)
    process.exit(1)


async def drop_connection(process: asyncssh.SSHServerProcess[bytes]) -> None:
    process.get_extra_info("connection").abort()


async def hang(process: asyncssh.SSHServerProcess[bytes]) -> None:
    await asyncio.sleep(3600)


async def test_ssh_agent_prints_malformed_events(tmp_path: Path, store: Store) -> None:
    async with SshHost(tmp_path, malformed_progress) as ssh:
        config = daemon_config(tmp_path)
        async with Running(store, config, inventory(tmp_path, ssh.host())) as r:
            job_id = await new_job(store, [(0, 10)])
            run = r.start()

            async def failed() -> bool:
                return await job_state(store, job_id) == JobState.FAILED

            await until(failed, "the job to fail", run=run)
            attempts = await store.get_attempts(job_id)
            assert [a.outcome.value for a in attempts] == ["failed", "failed"]
            assert not in_flight(await store.get_chunks(job_id))
            await until(lambda: _true(not r.sched.running_tasks()), "the slot to free up")
            assert not run.done()


async def test_ssh_connection_dropped_mid_chunk_requeues_it(tmp_path: Path, store: Store) -> None:
    """The server drops the connection while the composition is staged: the chunk is lost (not failed), requeued.

    A regression guard: the code before the scheduler split handled this one already.
    """
    async with SshHost(tmp_path, drop_connection, drop_staging=True) as ssh:
        config = daemon_config(tmp_path, host_failure_quarantine=1)
        async with Running(store, config, inventory(tmp_path, ssh.host())) as r:
            job_id = await new_job(store, [(0, 10)])
            run = r.start()

            async def lost() -> bool:
                attempts = await store.get_attempts(job_id)
                return bool(attempts) and attempts[0].outcome.value == "lost"

            await until(lost, "the attempt to end lost", run=run)
            chunks = await store.get_chunks(job_id)
            assert [c.state.value for c in chunks] == ["pending"]
            host = await store.get_host("r1")
            assert host is not None and host.state.value == "quarantined"
            await until(lambda: _true(not r.sched.running_tasks()), "the slot to free up")
            assert r.sched.hosts["r1"].free_slots == 1
            assert not run.done()


async def test_ssh_sessions_refused_requeues_the_chunk(tmp_path: Path, store: Store) -> None:
    """The host refuses session channels (sshd's MaxSessions reached): the chunk is lost (not failed), requeued."""
    async with SshHost(tmp_path, hang, refuse_sessions=True) as ssh:
        config = daemon_config(tmp_path, host_failure_quarantine=1)
        async with Running(store, config, inventory(tmp_path, ssh.host())) as r:
            job_id = await new_job(store, [(0, 10)])
            run = r.start()

            async def lost() -> bool:
                attempts = await store.get_attempts(job_id)
                return bool(attempts) and attempts[0].outcome.value == "lost"

            await until(lost, "the attempt to end lost", run=run)
            chunks = await store.get_chunks(job_id)
            assert [c.state.value for c in chunks] == ["pending"]
            host = await store.get_host("r1")
            assert host is not None and host.state.value == "quarantined"
            await until(lambda: _true(not r.sched.running_tasks()), "the slot to free up")
            assert r.sched.hosts["r1"].free_slots == 1
            assert not run.done()


async def _true(value: bool) -> bool:
    return value


# -- inventory reloads ------------------------------------------------------------------------


async def test_host_removed_and_added_back_gets_work_again(tmp_path: Path, store: Store) -> None:
    config = daemon_config(tmp_path)
    h1 = local_host("h1")
    async with Running(store, config, inventory(tmp_path, h1)) as r:
        r.start()
        r.sched.apply_inventory(inventory(tmp_path, local_host("other")))
        r.sched.apply_inventory(inventory(tmp_path, h1))
        r.sched.hosts["h1"].transport = transport = Faulty("h1", config.state_dir / "jobs", None)
        r.sched.hosts["other"].transport = Faulty("other", config.state_dir / "jobs", None)
        job_id = await new_job(store, [(0, 10), (10, 20)])
        r.sched.wake()

        async def claimed_on_h1() -> bool:
            return any(a.host == "h1" for a in await store.get_attempts(job_id))

        await until(claimed_on_h1, "a chunk to be claimed on the re-added host", timeout=10)
        assert transport.calls == 1
        assert r.sched.hosts["h1"].free_slots == 0


async def test_removed_host_connection_is_closed(tmp_path: Path, store: Store) -> None:
    async with SshHost(tmp_path, hang) as ssh:
        config = daemon_config(tmp_path)
        async with Running(store, config, inventory(tmp_path, ssh.host())) as r:
            r.start()
            await r.sched.hosts["r1"].transport.connection()  # type: ignore[attr-defined]
            await until(lambda: _true(len(ssh.connections) == 1), "the connection to be up")
            r.sched.apply_inventory(inventory(tmp_path))
            await until(lambda: _true(not ssh.connections), "the removed host's connection to close", timeout=10)


@pytest.mark.browser
async def test_changed_host_keeps_speculative_copy_cancellable(tmp_path: Path, store: Store) -> None:
    """A host's config changes while it runs a speculative copy: the copy is still counted and cancelled."""
    config = daemon_config(tmp_path)
    fast, slow = local_host("fast"), local_host("slow")
    async with Running(store, config, inventory(tmp_path, fast, slow)) as r:
        jobs_dir = config.state_dir / "jobs"
        # "slow" hangs on its chunk (a straggler); "fast" renders chunk 0 for real, then hangs on its copy.
        r.sched.hosts["slow"].transport = Faulty("slow", jobs_dir, None)
        r.sched.hosts["fast"].transport = fast_t = Faulty("fast", jobs_dir, None, real=1)
        job_id = await new_job(store, [(0, 15), (15, 30)])
        # Chunk 0 goes to "fast" (claimed first), chunk 1 to "slow".
        run = r.start()

        async def speculating() -> bool:
            return fast_t.calls == 2

        await until(speculating, "a speculative copy on the fast host", timeout=120, run=run)
        assert len(r.sched.running_tasks()) == 2
        r.sched.apply_inventory(inventory(tmp_path, local_host("fast", workers=2), slow))
        assert len(r.sched.running_tasks()) == 2
        assert r.sched.hosts["fast"].free_slots == 0
        await store.cancel_job(job_id)
        assert await r.sched.cancel_job(job_id) == 2
        assert r.sched.running_tasks() == []
        outcomes = sorted(a.outcome.value for a in await store.get_attempts(job_id))
        assert "running" not in outcomes, outcomes


async def test_speculative_copies_go_only_to_hosts_with_the_jobs_labels(tmp_path: Path, store: Store) -> None:
    """An idle host without the job's labels never gets a copy of its straggler; a carrier does."""
    config = daemon_config(tmp_path)
    plain, fast, slow = local_host("plain"), local_host("fast", labels=("gpu",)), local_host("slow", labels=("gpu",))
    async with Running(store, config, inventory(tmp_path, plain, fast, slow)) as r:
        jobs_dir = config.state_dir / "jobs"
        # "plain" is idle first in every round; it would hang on anything it got.
        r.sched.hosts["plain"].transport = plain_t = Faulty("plain", jobs_dir, None)
        r.sched.hosts["slow"].transport = Faulty("slow", jobs_dir, None)
        r.sched.hosts["fast"].transport = fast_t = Faulty("fast", jobs_dir, None, real=1)
        spec = NewJob(
            str(FIXTURES / "frame-index-hook"), str(tmp_path / "out.mp4"), {**PARAMS, "require": ["gpu"]},
            120, 0, 30, submitted_by_uid=0,
        )  # fmt: skip
        job_id = (await store.create_job(spec, [(0, 15), (15, 30)])).id
        run = r.start()

        async def speculating() -> bool:
            return fast_t.calls == 2 or plain_t.calls > 0

        await until(speculating, "a speculative copy", timeout=120, run=run)
        assert (plain_t.calls, fast_t.calls) == (0, 2)
        assert {a.host for a in await store.get_attempts(job_id)} == {"fast", "slow"}
        await store.cancel_job(job_id)
        await r.sched.cancel_job(job_id)


# -- the daemon: reload probe, access policy --------------------------------------------------


def write_config(root: Path, extra: str = "") -> Path:
    path = root / "renderd.toml"
    path.write_text(
        f'[daemon]\nsocket = "{root / "renderd.sock"}"\nstate_dir = "{root / "state"}"\n'
        f'hosts_file = "{root / "hosts.toml"}"\nwatchdog = false\n{extra}'
    )
    return path


def write_hosts(root: Path, *hosts: HostConfig) -> None:
    lines = []
    for h in hosts:
        lines.append(f'[[hosts]]\nname = "{h.name}"\naddress = "{h.address}"\nslots = {h.slots}\n')
        if not h.is_local:
            lines.append(
                f'port = {h.port}\nuser = "{h.user}"\nidentity_file = "{h.identity_file}"\n'
                f'known_hosts = "{h.known_hosts}"\nwork_dir = "{h.work_dir}"\n'
            )
    (root / "hosts.toml").write_text("".join(lines))


async def test_reload_probe_is_awaited_at_shutdown(short_tmp: Path) -> None:
    async with SshHost(short_tmp, hang) as ssh:
        from renderd.config import load_daemon_config, load_inventory

        path = write_config(short_tmp)
        write_hosts(short_tmp, ssh.host())
        coord = Coordinator(load_daemon_config(path), load_inventory(short_tmp / "hosts.toml"), config_path=path)
        await coord.startup()
        try:
            await coord.reload()
            await until(lambda: _true(any(c.startswith("renderd agent") for c in ssh.commands)), "the probe to start")
        finally:
            await coord.shutdown()
        left = [t for t in asyncio.all_tasks() if t.get_name() == "probe" and not t.done()]
        assert left == []


async def _list_as_nobody(socket_path: Path) -> dict[str, Any]:
    import pwd

    nobody = pwd.getpwnam("nobody")
    return await asyncio.to_thread(request_as, nobody.pw_uid, nobody.pw_gid, socket_path, b'{"op": "list"}\n')


@pytest.mark.skipif(os.getuid() != 0, reason="runs a client as another user")
async def test_reload_applies_allowed_uids_and_groups(short_tmp: Path) -> None:
    import grp
    import pwd

    from renderd.config import load_daemon_config, load_inventory
    from renderd.errors import ConfigError

    nobody = pwd.getpwnam("nobody")
    path = write_config(short_tmp)
    write_hosts(short_tmp, local_host("h1"))
    coord = Coordinator(
        load_daemon_config(path), load_inventory(short_tmp / "hosts.toml"), config_path=path, socket_mode=0o666
    )
    await coord.startup()
    try:
        sock_path = short_tmp / "renderd.sock"
        reply = await _list_as_nobody(sock_path)
        assert not reply["ok"] and f"uid {nobody.pw_uid} is not allowed" in reply["error"]["message"]
        write_config(short_tmp, f"allowed_uids = [{nobody.pw_uid}]\n")
        await coord.reload()
        assert (await _list_as_nobody(sock_path))["ok"]
        # By group: nobody's primary group, named.
        group = grp.getgrgid(nobody.pw_gid).gr_name
        write_config(short_tmp, f'allowed_groups = ["{group}"]\n')
        await coord.reload()
        assert (await _list_as_nobody(sock_path))["ok"]
        write_config(short_tmp, "allowed_uids = [4242]\n")
        await coord.reload()
        assert not (await _list_as_nobody(sock_path))["ok"]
        # An unknown group refuses the reload, as `renderd config check` reports it; the old policy stays.
        write_config(short_tmp, f'allowed_uids = [{nobody.pw_uid}]\nallowed_groups = ["no-such-group-zz"]\n')
        with pytest.raises(ConfigError) as info:
            await coord.reload()
        assert "unknown group 'no-such-group-zz'" in "; ".join(info.value.problems)
        assert not (await _list_as_nobody(sock_path))["ok"]
    finally:
        await coord.shutdown()


# -- one daemon per state dir; a foreign store file is refused --------------------------------


async def test_second_daemon_on_the_same_state_dir_touches_nothing(short_tmp: Path) -> None:
    from renderd.config import load_daemon_config, load_inventory

    path = write_config(short_tmp)
    write_hosts(short_tmp, local_host("h1"))
    coord = Coordinator(load_daemon_config(path), load_inventory(short_tmp / "hosts.toml"), config_path=path)
    await coord.startup()
    try:
        assert coord.store is not None
        job_id = await new_job(coord.store, [(0, 10), (10, 20)])
        claim = await coord.store.claim_chunk("h1")
        assert claim is not None
        await coord.store.mark_chunk_rendering(job_id, 0, claim.attempt.id)
        before = (await coord.store.get_chunks(job_id), await coord.store.get_attempts(job_id))
        events = len(await coord.store.get_events(job_id))
        # Another daemon on the same state dir, on another socket.
        other = short_tmp / "other.toml"
        other.write_text(path.read_text().replace("renderd.sock", "other.sock"))
        proc = await asyncio.create_subprocess_exec(
            str(RENDERD), "daemon", "--config", str(other),
            stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE,
        )  # fmt: skip
        out, err = await asyncio.wait_for(proc.communicate(), 60)
        lines = err.decode().strip().splitlines()
        assert proc.returncode != 0
        assert len(lines) == 1 and str(os.getpid()) in lines[0], lines
        assert lines[0].startswith("renderd: error:")
        after = (await coord.store.get_chunks(job_id), await coord.store.get_attempts(job_id))
        assert after == before
        assert len(await coord.store.get_events(job_id)) == events
        assert not (short_tmp / "other.sock").exists()
    finally:
        await coord.shutdown()


def _foreign_sqlite(path: Path) -> None:
    db = sqlite3.connect(path)
    db.execute("CREATE TABLE notes (body TEXT)")
    db.execute("INSERT INTO notes VALUES ('not renderd')")
    db.commit()
    db.close()


@pytest.mark.parametrize(
    "make",
    [
        lambda p: p.write_bytes(b""),
        lambda p: p.write_text("this is a text file, not a database\n" * 10),
        _foreign_sqlite,
    ],
    ids=["zero-length", "text", "foreign-sqlite"],
)
async def test_foreign_store_file_is_refused(tmp_path: Path, make: Callable[[Path], None]) -> None:
    path = tmp_path / "renderd.db"
    make(path)
    before = path.read_bytes()
    with pytest.raises(StoreError) as info:
        s = await Store.open(path)
        await s.close()
    assert str(path) in str(info.value) and "\n" not in str(info.value)
    assert path.read_bytes() == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["renderd.db"]


async def test_daemon_refuses_a_zero_length_store_in_one_line(short_tmp: Path) -> None:
    path = write_config(short_tmp)
    write_hosts(short_tmp, local_host("h1"))
    (short_tmp / "state").mkdir()
    db = short_tmp / "state" / "renderd.db"
    db.write_bytes(b"")
    proc = await asyncio.create_subprocess_exec(
        str(RENDERD), "daemon", "--config", str(path), stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE
    )
    _, err = await asyncio.wait_for(proc.communicate(), 60)
    lines = err.decode().strip().splitlines()
    assert proc.returncode != 0
    assert len(lines) == 1 and lines[0].startswith("renderd: error:") and str(db) in lines[0], lines
    assert db.stat().st_size == 0
    assert not (short_tmp / "renderd.sock").exists()


async def test_fresh_store_is_created(tmp_path: Path) -> None:
    path = tmp_path / "state" / "renderd.db"
    async with await Store.open(path) as s:
        assert await s.list_jobs() == []
    async with await Store.open(path) as s:  # and opened again as renderd's
        assert await s.list_jobs() == []
