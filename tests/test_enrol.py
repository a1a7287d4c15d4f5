"""Fleet ergonomics: `hosts add` against a real sshd, `hosts install` writing agent_command into the inventory."""

from __future__ import annotations

import os
import subprocess
import sys
import sysconfig
from collections.abc import Iterator
from pathlib import Path

import pytest
from conftest import renderd_cmd, run_renderd
from sshhosts import TestHosts
from users import ROOT, ThrowawayUser, system_python

from renderd.config import load_inventory
from renderd.coordinator.enrol import record_agent_command

AGENT = [sys.executable, "-m", "renderd", "agent"]
FLEET = """\
# Our render fleet. Comments and layout must survive every edit.
[defaults]
user = "{user}"                  # the SSH user
identity_file = "{identity}"
slots = 1

[[hosts]]
name = "local"
address = "local"    # this machine

# more hosts below
"""


@pytest.fixture
def hosts(short_tmp: Path) -> Iterator[TestHosts]:
    with TestHosts(short_tmp / "ssh", 2, agent_command=AGENT) as th:
        yield th


def _fleet(root: Path, hosts: TestHosts) -> tuple[Path, Path]:
    """A daemon config and an inventory of our own (not the one TestHosts wrote), in ``root/fleet``."""
    fleet = root / "fleet"
    fleet.mkdir()
    inventory = fleet / "hosts.toml"
    inventory.write_text(FLEET.format(user=hosts.user, identity=hosts.identity_file))
    config = fleet / "renderd.toml"
    config.write_text(
        f'[daemon]\nsocket = "{fleet / "s.sock"}"\nstate_dir = "{fleet / "state"}"\nhosts_file = "hosts.toml"\n'
    )
    return config, inventory


def _public(hosts: TestHosts, name: str) -> str:
    key = hosts.host(name).host_key
    return key.with_name(key.name + ".pub").read_text()


def _ssh_keygen_fingerprint(public_key: Path) -> str:
    out = subprocess.run(["ssh-keygen", "-lf", str(public_key)], capture_output=True, text=True, check=True).stdout
    return out.split()[1]  # "256 SHA256:... comment (ED25519)"


def test_hosts_add_shows_the_key_like_ssh_records_it_and_enrols_the_host(short_tmp: Path, hosts: TestHosts) -> None:
    config, inventory = _fleet(short_tmp, hosts)
    before = inventory.read_text()
    h1 = hosts.host("h1")
    expected = _ssh_keygen_fingerprint(h1.host_key.with_name(h1.host_key.name + ".pub"))
    add = ["hosts", "add", "h1", h1.address, "--port", str(h1.port), "--labels", "gpu,fonts", "--config", config]

    # Not a terminal and no --yes: the key is shown, nothing is trusted or written.
    r = subprocess.run(renderd_cmd(*add), capture_output=True, text=True, stdin=subprocess.DEVNULL, timeout=60)
    assert r.returncode == 1
    assert r.stdout == f"h1 ({h1.address} port {h1.port}): ED25519 key fingerprint is {expected}\n"
    assert r.stderr.startswith("renderd: error: not added: compare the fingerprint") and r.stderr.count("\n") == 1
    assert inventory.read_text() == before and not (inventory.parent / "known_hosts").exists()

    # On a terminal, "n" declines.
    primary, secondary = os.openpty()
    with subprocess.Popen(renderd_cmd(*add), stdin=secondary, stdout=subprocess.PIPE, stderr=subprocess.PIPE) as p:
        os.close(secondary)
        os.write(primary, b"n\n")
        out, err = p.communicate(timeout=60)
    os.close(primary)
    assert p.returncode == 1 and expected in out.decode() and b"not added" in err
    assert inventory.read_text() == before

    r = run_renderd(*add, "--yes", timeout=60)
    assert r.returncode == 0, r.stderr
    assert r.stdout.splitlines()[0] == f"h1 ({h1.address} port {h1.port}): ED25519 key fingerprint is {expected}"
    known_hosts = inventory.parent / "known_hosts"
    public = " ".join(h1.host_key.with_name(h1.host_key.name + ".pub").read_text().split()[:2])
    assert known_hosts.read_text() == f"[{h1.address}]:{h1.port} {public}\n"
    # The inventory kept its comments, got one entry, and loads.
    text = inventory.read_text()
    assert text.startswith(before.rstrip("\n")) and "# this machine" in text
    h = load_inventory(inventory).get("h1")
    assert h is not None and (h.address, h.port, h.labels) == (h1.address, h1.port, ("gpu", "fonts"))
    assert h.known_hosts == known_hosts and h.user == hosts.user
    # The recorded key is the one real ssh trusts, strictly.
    ssh = [
        "ssh", "-F", "/dev/null", "-i", str(hosts.identity_file), "-p", str(h1.port), "-o", "IdentitiesOnly=yes",
        "-o", f"UserKnownHostsFile={known_hosts}", "-o", "GlobalKnownHostsFile=/dev/null",
        "-o", "StrictHostKeyChecking=yes", "-o", "BatchMode=yes", f"{hosts.user}@{h1.address}", "true",
    ]  # fmt: skip
    assert subprocess.run(ssh, capture_output=True, text=True, timeout=30).returncode == 0

    # A second host goes to the same known_hosts; a taken name is refused in one line, before connecting.
    h2 = hosts.host("h2")
    r = run_renderd("hosts", "add", "h2", h2.address, "--port", str(h2.port), "--config", config, "--yes")
    assert r.returncode == 0, r.stderr
    assert len(known_hosts.read_text().splitlines()) == 2
    assert [h.name for h in load_inventory(inventory).hosts] == ["local", "h1", "h2"]
    r = run_renderd("hosts", "add", "h1", "10.9.9.9", "--config", config, "--yes")
    assert r.returncode != 0
    line = next(i for i, s in enumerate(inventory.read_text().splitlines(), 1) if s == 'name = "h1"')
    assert r.stderr == f"renderd: error: {inventory}:{line}: a host named 'h1' is already in the inventory\n"
    r = run_renderd("hosts", "add", "h3", h1.address, "--labels", "gpu/x", "--config", config, "--yes")
    assert r.returncode != 0
    assert r.stderr == "renderd: error: hosts add: --labels: 'gpu/x' is not a label (letters, digits, '.', '_', '-')\n"


def test_a_changed_host_key_is_not_recorded_over_the_old_one(short_tmp: Path, hosts: TestHosts) -> None:
    config, inventory = _fleet(short_tmp, hosts)
    h1 = hosts.host("h1")
    known_hosts = inventory.parent / "known_hosts"
    known_hosts.write_text(f"[{h1.address}]:{h1.port} {_public(hosts, 'h2')}")
    r = run_renderd("hosts", "add", "h1", h1.address, "--port", str(h1.port), "--config", config, "--yes")
    assert r.returncode != 0
    assert f"renderd: error: {known_hosts} has a different key for [{h1.address}]:{h1.port}" in r.stderr
    assert r.stderr.count("\n") == 1
    assert len(known_hosts.read_text().splitlines()) == 1 and "h1" not in inventory.read_text()


INSTALLED = ["/srv/renderd/venv/bin/renderd", "agent"]


def test_agent_command_is_written_into_the_inventory_in_place(tmp_path: Path) -> None:
    inventory = tmp_path / "hosts.toml"
    inventory.write_text(
        "# fleet\n[defaults]\nslots = 2   # two at once\n\n"
        '[[hosts]]\nname = "a"\naddress = "local"   # here\n\n# b is the big one\n'
        '[[hosts]]\nname = "b"\naddress = "local"\nagent_command = ["renderd", "agent"]  # old\n'
    )
    assert record_agent_command(inventory, "a", INSTALLED) == (
        f'{inventory}:6: agent_command of a set to ["/srv/renderd/venv/bin/renderd", "agent"]; '
        "`renderd reload` to use it"
    )
    assert record_agent_command(inventory, "b", INSTALLED).startswith(f"{inventory}:12: agent_command of b set")
    assert inventory.read_text() == (
        "# fleet\n[defaults]\nslots = 2   # two at once\n\n"
        '[[hosts]]\nname = "a"\naddress = "local"   # here\n'
        'agent_command = ["/srv/renderd/venv/bin/renderd", "agent"]\n\n# b is the big one\n'
        '[[hosts]]\nname = "b"\naddress = "local"\nagent_command = ["/srv/renderd/venv/bin/renderd", "agent"]  # old\n'
    )
    assert all(h.agent_command == tuple(INSTALLED) for h in load_inventory(inventory).hosts)
    again = record_agent_command(inventory, "a", INSTALLED)
    assert again == f'{inventory}: agent_command of a already is ["/srv/renderd/venv/bin/renderd", "agent"]'


def test_an_inventory_this_user_cannot_write_gets_the_exact_line_to_add(
    short_tmp: Path, throwaway_user: ThrowawayUser
) -> None:
    inventory = short_tmp / "hosts.toml"
    text = '[[hosts]]\nname = "a"\naddress = "local"\n\n[[hosts]]\nname = "x"\naddress = "10.0.0.9"\n'
    inventory.write_text(text)
    os.chmod(inventory, 0o644)  # root's; the throwaway user may read it only
    python = system_python()
    assert python is not None
    code = (
        "import sys; from pathlib import Path; from renderd.coordinator.enrol import record_agent_command; "
        "print(record_agent_command(Path(sys.argv[1]), 'x', sys.argv[2:]))"
    )
    path = f"{ROOT}{os.pathsep}{sysconfig.get_paths()['purelib']}"
    r = throwaway_user.run("env", f"PYTHONPATH={path}", python, "-c", code, inventory, *INSTALLED)
    assert r.returncode == 0, r.stderr
    assert r.stdout == (
        f'{inventory}:6: [[hosts]] name = "x": add agent_command = ["/srv/renderd/venv/bin/renderd", "agent"] '
        "(this user cannot write the file), then `renderd reload`\n"
    )
    assert inventory.read_text() == text
