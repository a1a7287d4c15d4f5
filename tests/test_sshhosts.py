"""The throwaway sshd hosts of tests/sshhosts.py, driven by the real ssh, rsync and asyncssh clients."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path, PurePosixPath

import asyncssh
import psutil
import pytest
import sshhosts
from sshhosts import TestHosts, TestHostsError, is_alive

from renderd.config import load_inventory

ROOT = Path(__file__).resolve().parent.parent
AGENT = [sys.executable, "-m", "renderd", "agent"]


@pytest.fixture(scope="module")
def hosts(tmp_path_factory: pytest.TempPathFactory) -> Iterator[TestHosts]:
    with TestHosts(tmp_path_factory.mktemp("sshhosts"), 3, agent_command=AGENT) as hosts:
        yield hosts


def ssh(hosts: TestHosts, name: str, command: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([*hosts.ssh_argv(name), command], capture_output=True, text=True, timeout=20)


def sshd_processes_under(root: Path) -> list[str]:
    found = []
    for p in psutil.process_iter(["name", "cmdline"]):
        cmdline = " ".join(p.info["cmdline"] or ())
        if (p.info["name"] or "").startswith("sshd") and str(root) in cmdline:
            found.append(f"{p.pid}: {cmdline}")
    return found


def test_inventory_is_a_valid_renderd_inventory(hosts: TestHosts) -> None:
    inventory = load_inventory(hosts.inventory)
    assert [h.name for h in inventory.hosts] == ["h1", "h2", "h3"]
    for config, host in zip(inventory.hosts, hosts, strict=True):
        assert (config.address, config.port) == (host.address, host.port)
        assert config.address == f"127.0.0.{10 + int(host.name[1:])}"
        assert config.user == "root"
        assert config.identity_file == hosts.identity_file
        assert config.known_hosts == hosts.known_hosts
        assert config.host_key_policy == "strict"
        assert config.work_dir == PurePosixPath(host.work_dir)
        assert host.work_dir.is_dir()
        assert config.agent_command == tuple(AGENT)
        assert config.enabled
    assert len({h.port for h in hosts}) == 3


def test_inventory_overrides(hosts: TestHosts, tmp_path: Path) -> None:
    path = hosts.write_inventory(tmp_path / "hosts.toml", overrides={"h2": {"enabled": False, "slots": 3}})
    inventory = load_inventory(path)
    assert [h.name for h in inventory.enabled_hosts()] == ["h1", "h3"]
    h2 = inventory.get("h2")
    assert h2 is not None and h2.slots == 3


def test_ssh_runs_commands_on_every_host(hosts: TestHosts) -> None:
    for host in hosts:
        assert ssh(hosts, host.name, "true").returncode == 0
        result = ssh(hosts, host.name, "echo $SSH_CONNECTION")
        assert result.returncode == 0, result.stderr
        # client address, client port, server address, server port
        assert result.stdout.split()[2:] == [host.address, str(host.port)]


def test_known_hosts_lists_each_host_with_its_port(hosts: TestHosts) -> None:
    lines = hosts.known_hosts.read_text().splitlines()
    assert [line.split()[0] for line in lines] == [f"[{h.address}]:{h.port}" for h in hosts]
    assert all(line.split()[1] == "ssh-ed25519" for line in lines)


def test_rsync_copies_into_the_work_dir(hosts: TestHosts, tmp_path: Path) -> None:
    src = tmp_path / "src"
    (src / "sub").mkdir(parents=True)
    (src / "a.txt").write_text("alpha\n")
    (src / "sub" / "b.bin").write_bytes(bytes(range(256)))
    dest = hosts.host("h2").work_dir / "copy"
    result = subprocess.run(
        ["rsync", "-a", "-e", hosts.rsync_rsh("h2"), f"{src}/", hosts.rsync_target("h2", f"{dest}/")],
        capture_output=True, text=True, timeout=20,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    assert (dest / "a.txt").read_text() == "alpha\n"
    assert (dest / "sub" / "b.bin").read_bytes() == bytes(range(256))


def test_a_wrong_host_key_is_refused(hosts: TestHosts) -> None:
    hosts.corrupt_known_host("h1")
    try:
        result = ssh(hosts, "h1", "true")
        assert result.returncode == 255
        assert "Host key verification failed" in result.stderr
        assert ssh(hosts, "h2", "true").returncode == 0
    finally:
        hosts.restore_known_host("h1")
    assert ssh(hosts, "h1", "true").returncode == 0


def test_stop_refuses_connections_and_start_brings_the_host_back(hosts: TestHosts) -> None:
    port = hosts.host("h3").port
    hosts.stop("h3")
    try:
        assert not hosts.is_running("h3")
        result = ssh(hosts, "h3", "true")
        assert result.returncode == 255
        assert "Connection refused" in result.stderr
    finally:
        hosts.start("h3")
    assert hosts.is_running("h3") and hosts.host("h3").port == port
    assert ssh(hosts, "h3", "true").returncode == 0


def open_session(hosts: TestHosts, name: str) -> subprocess.Popen[bytes]:
    """Start `cat` on the host over ssh and wait until it runs there."""
    proc = subprocess.Popen([*hosts.ssh_argv(name), "exec cat"], stdin=subprocess.PIPE, stdout=subprocess.PIPE)
    assert proc.stdin is not None and proc.stdout is not None
    proc.stdin.write(b"ping\n")
    proc.stdin.flush()
    assert proc.stdout.readline() == b"ping\n"
    return proc


def end_session(proc: subprocess.Popen[bytes]) -> None:
    proc.kill()
    proc.communicate(timeout=10)


def test_open_sessions_survive_stop_until_kill_sessions(hosts: TestHosts) -> None:
    session = open_session(hosts, "h1")
    try:
        hosts.stop("h1")
        assert session.poll() is None
        assert [p.name() for p in hosts.session_commands("h1")] == ["cat"]
        assert hosts.kill_sessions("h1") >= 1
        assert session.wait(10) == 255  # the connection dropped
        assert hosts.kill_sessions("h1") == 0
    finally:
        end_session(session)
        hosts.start("h1")
    assert ssh(hosts, "h1", "true").returncode == 0


def test_killing_a_session_command_ends_the_client(hosts: TestHosts) -> None:
    session = open_session(hosts, "h2")
    try:
        [cat] = hosts.session_commands("h2")
        cat.kill()
        assert session.wait(10) != 0
    finally:
        end_session(session)
    assert hosts.session_commands("h2") == []


async def test_asyncssh_connects_with_the_inventory_files(hosts: TestHosts) -> None:
    host = hosts.host("h2")
    options = {
        "port": host.port,
        "username": "root",
        "client_keys": [str(hosts.identity_file)],
        "known_hosts": str(hosts.known_hosts),
        "agent_path": None,
    }
    async with asyncssh.connect(host.address, **options) as conn:
        result = await conn.run("echo ok", check=True)
    assert result.stdout == "ok\n"
    hosts.corrupt_known_host("h2")
    try:
        with pytest.raises(asyncssh.HostKeyNotVerifiable):
            await asyncssh.connect(host.address, **options)
    finally:
        hosts.restore_known_host("h2")


def test_close_leaves_no_sshd_and_no_session_command(tmp_path: Path) -> None:
    hosts = TestHosts(tmp_path, 1, agent_command=AGENT)
    session = open_session(hosts, "h1")
    [cat] = hosts.session_commands("h1")
    assert sshd_processes_under(tmp_path)
    hosts.close()
    hosts.close()
    try:
        assert sshd_processes_under(tmp_path) == []
        assert not is_alive(cat)
        assert session.wait(10) == 255
    finally:
        end_session(session)
    assert not hosts.host("h1").pid_file.exists()


def test_cli_serves_until_sigterm(tmp_path: Path) -> None:
    proc = subprocess.Popen(
        [str(ROOT / "scripts" / "testhosts"), "start", "2", "--dir", str(tmp_path)],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )  # fmt: skip
    try:
        assert proc.stdout is not None
        inventory = load_inventory(Path(proc.stdout.readline().strip()))
        assert [h.name for h in inventory.hosts] == ["h1", "h2"]
        h2 = inventory.hosts[1]
        argv = [
            "ssh", "-F", "/dev/null", "-i", str(h2.identity_file), "-p", str(h2.port),
            "-o", f"UserKnownHostsFile={h2.known_hosts}", "-o", "StrictHostKeyChecking=yes", "-o", "BatchMode=yes",
            f"{h2.user}@{h2.address}", "echo $SSH_CONNECTION",
        ]  # fmt: skip
        result = subprocess.run(argv, capture_output=True, text=True, timeout=20)
        assert result.stdout.split()[2:] == [h2.address, str(h2.port)], result.stderr
        os.kill(proc.pid, signal.SIGTERM)
        assert proc.wait(10) == 0
    finally:
        proc.kill()
        proc.communicate()
    assert sshd_processes_under(tmp_path) == []


@pytest.fixture
def taken_port(monkeypatch: pytest.MonkeyPatch) -> Iterator[int]:
    """Hold a port on h1's address and make it the first one free_port() hands out."""
    with socket.socket() as s:
        s.bind(("127.0.0.11", 0))
        s.listen()
        port = s.getsockname()[1]
        ports = iter([port])
        real = sshhosts.free_port
        monkeypatch.setattr(sshhosts, "free_port", lambda address: next(ports, None) or real(address))
        yield port


def test_a_port_taken_since_it_was_picked_is_replaced(tmp_path: Path, taken_port: int) -> None:
    with TestHosts(tmp_path, 1, agent_command=AGENT) as hosts:
        assert hosts.host("h1").port != taken_port
        assert f":{hosts.host('h1').port} " in hosts.known_hosts.read_text()
        assert load_inventory(hosts.inventory).hosts[0].port == hosts.host("h1").port


def test_an_sshd_that_cannot_start_is_reported_with_its_log(
    tmp_path: Path, taken_port: int, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(sshhosts, "PORT_ATTEMPTS", 1)
    with pytest.raises(TestHostsError) as caught:
        TestHosts(tmp_path, 2, agent_command=AGENT)
    assert caught.value.host == "h1"
    assert "Address already in use" in caught.value.log_tail
    assert "Address already in use" in str(caught.value)
    assert sshd_processes_under(tmp_path) == []
