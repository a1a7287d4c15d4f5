"""Daemon config and host inventory: the shipped examples, every problem at once, line numbers."""

from __future__ import annotations

import dataclasses
import grp
import os
import tomllib
from collections.abc import Callable
from pathlib import Path, PurePosixPath

import pytest

from renderd.config import (
    DEFAULT_HOSTS_FILE,
    DaemonConfig,
    HooksConfig,
    HostConfig,
    SchedulingPolicy,
    Timeouts,
    check_config,
    load_daemon_config,
    load_inventory,
    parse_duration,
)
from renderd.config_locate import SourceMap, format_key_path
from renderd.errors import ConfigError, RenderdError

ROOT = Path(__file__).resolve().parent.parent
EXAMPLE_CONFIG = ROOT / "config" / "renderd.toml"
EXAMPLE_HOSTS = ROOT / "hosts.example.toml"


def write(path: Path, text: str) -> Path:
    """Write ``text`` (line 1 is its first line) and return ``path``."""
    path.write_text(text, encoding="utf-8")
    return path


def problems_of(path: Path, load: Callable[[Path], object] = load_inventory) -> list[str]:
    """Return the problems ``load`` raises for ``path`` (it must raise)."""
    with pytest.raises(ConfigError) as info:
        load(path)
    return info.value.problems


@pytest.fixture
def deployed(tmp_path: Path) -> Path:
    """The shipped examples laid out as in /etc/renderd, with the key files moved into tmp."""
    current_group = grp.getgrgid(os.getgid()).gr_name
    text = EXAMPLE_CONFIG.read_text()
    assert 'allowed_groups = ["renderd"]' in text
    write(tmp_path / "renderd.toml", text.replace('"renderd"]', f'"{current_group}"]'))
    hosts = EXAMPLE_HOSTS.read_text()
    assert hosts.count("/var/lib/renderd/.ssh/") == 4
    write(tmp_path / "hosts.toml", hosts.replace("/var/lib/renderd/.ssh/", f"{tmp_path}/ssh/"))
    (tmp_path / "ssh").mkdir()
    write(tmp_path / "ssh" / "id_ed25519", "not a real key\n")
    write(tmp_path / "ssh" / "known_hosts", "")
    return tmp_path


# --- the shipped examples ------------------------------------------------------------------------


def test_shipped_examples_pass_check(deployed: Path) -> None:
    assert check_config(deployed / "renderd.toml") == []


def test_shipped_daemon_config_loads_with_documented_defaults() -> None:
    config = load_daemon_config(EXAMPLE_CONFIG)
    # The example writes every default out, so it must equal the built-in defaults.
    assert dataclasses.replace(config, hosts_file=DEFAULT_HOSTS_FILE, allowed_groups=()) == DaemonConfig()
    assert config.hosts_file == EXAMPLE_CONFIG.parent / "hosts.toml"
    assert config.allowed_groups == ("renderd",)
    assert config.timeouts.chunk == 1800.0
    assert config.scheduling.quarantine_backoff == 60.0


def test_shipped_inventory_loads(deployed: Path) -> None:
    inv = load_inventory(deployed / "hosts.toml")
    assert [h.name for h in inv.hosts] == ["local", "render-1", "render-2.example.net"]
    local, r1, r2 = inv.hosts
    assert local.is_local and not r1.is_local and not r2.is_local
    assert local.workers == 4 and r1.workers is None
    assert r1.identity_file == deployed / "ssh" / "id_ed25519"
    assert r1.agent_command == ("/srv/renderd/venv/bin/renderd", "agent")
    assert r1.work_dir == PurePosixPath("/srv/renderd") and r1.slots == 2
    # render-2 takes the rest from [defaults].
    assert r2.user == "renderd" and r2.known_hosts == deployed / "ssh" / "known_hosts"
    assert r2.jump_host == "renderd@bastion.example.net:22"
    assert r2.work_dir == PurePosixPath("/var/tmp/renderd") and r2.host_key_policy == "strict"
    assert inv.enabled_hosts() == inv.hosts
    assert inv.get("render-1") is r1 and inv.get("nope") is None
    with pytest.raises(dataclasses.FrozenInstanceError):
        r1.slots = 3  # type: ignore[misc]


def test_examples_show_every_key() -> None:
    config = tomllib.loads(EXAMPLE_CONFIG.read_text())
    assert set(config["daemon"]) == {f.name for f in dataclasses.fields(DaemonConfig)} - {
        "scheduling",
        "timeouts",
        "source",
        "prepare_allow",  # shown as [prepare] allow
        "web",  # the [web] table, shown commented out (tests/test_web.py parses it)
        "hooks",
        "keep_finished",  # shown as [retention] keep_finished
    }
    assert config["prepare"] == {"allow": []}
    assert set(config["hooks"]) == {f.name for f in dataclasses.fields(HooksConfig)}
    assert set(config["retention"]) == {"keep_finished"}
    assert set(config["scheduling"]) == {f.name for f in dataclasses.fields(SchedulingPolicy)}
    assert set(config["timeouts"]) == {f.name for f in dataclasses.fields(Timeouts)}
    hosts = tomllib.loads(EXAMPLE_HOSTS.read_text())
    shown = set(hosts["defaults"]) | set(hosts["hosts"][1]) | set(hosts["hosts"][2])
    assert shown == {f.name for f in dataclasses.fields(HostConfig)}


# --- every problem at once, with its line ----------------------------------------------------------

BROKEN_INVENTORY = """\
[defaults]
slot = 2
workers = 0
name = "x"

[[hosts]]
name = "r1"
address = "10.0.0.1"
port = true
identity_file = "missing_key"

[[hosts]]
name = "r1"
address = "10.0.0.2"
work_dir = "relative/dir"
labels = ["gpu", 3]

[[hosts]]
address = "10.0.0.3"
slots = "4"
host_key_policy = "accept_new"

[[hosts]]
name = "bad name"
address = "-oProxyCommand=x"
enabled = "yes"
agent_command = []
"""


def test_broken_inventory_reports_every_problem_with_its_line(tmp_path: Path) -> None:
    path = write(tmp_path / "hosts.toml", BROKEN_INVENTORY)
    with pytest.raises(ConfigError) as info:
        load_inventory(path)
    f = str(path)
    assert info.value.problems == [
        f"{f}:2: defaults.slot: unknown key 'slot' (did you mean 'slots'?)",
        f'{f}:3: defaults.workers: must be "auto" or an integer >= 1, got 0',
        f"{f}:4: defaults.name: 'name' cannot have a default; set it in each [[hosts]]",
        f"{f}:9: hosts[0].port: expected an integer, got a boolean (true)",
        f"{f}:10: hosts[0].identity_file: file not found: {tmp_path / 'missing_key'}",
        f"{f}:13: hosts[1].name: duplicate host name 'r1' (first defined at line 7)",
        f"{f}:15: hosts[1].work_dir: must be an absolute path on the host, got 'relative/dir'",
        f"{f}:16: hosts[1].labels[1]: expected a string, got an integer (3)",
        f"{f}:18: hosts[2]: missing required key 'name'",
        f"{f}:20: hosts[2].slots: expected an integer, got a string ('4')",
        f"{f}:21: hosts[2].host_key_policy: must be one of 'strict', 'accept-new', got 'accept_new'",
        f"{f}:24: hosts[3].name: 'bad name' is not a host name (letters, digits, '.', '_', '-')",
        f"{f}:25: hosts[3].address: '-oProxyCommand=x' is not a host name or address"
        " (no spaces, must not start with '-')",
        f"{f}:26: hosts[3].enabled: expected true or false, got a string ('yes')",
        f"{f}:27: hosts[3].agent_command: must not be empty",
    ]
    assert str(info.value) == f"{f}: 15 problems"
    assert isinstance(info.value, RenderdError) and info.value.exit_code == 2


BROKEN_DAEMON = """\
[daemon]
socket = "run/renderd.sock"
state_dir = "/var/lib/renderd"
log_level = "verbose"
allowed_uids = [0, -1]
allowed_groups = [true]
watchdog = 1
sockett = "x"

[scheduling]
min_chunk_frames = 100
max_chunk_frames = 50
target_chunk_seconds = 0

[timeouts]
chunk = "0s"
connect = "ten seconds"

[logging]
level = "debug"
"""


def test_broken_daemon_config_reports_every_problem_with_its_line(tmp_path: Path) -> None:
    path = write(tmp_path / "renderd.toml", BROKEN_DAEMON)
    f = str(path)
    assert problems_of(path, load_daemon_config) == [
        f"{f}:2: daemon.socket: must be an absolute path, got 'run/renderd.sock'",
        f"{f}:4: daemon.log_level: must be one of 'debug', 'info', 'warning', 'error', got 'verbose'",
        f"{f}:5: daemon.allowed_uids[1]: must be 0..4294967294, got -1",
        f"{f}:6: daemon.allowed_groups[0]: expected a group name or a numeric gid, got a boolean (true)",
        f"{f}:7: daemon.watchdog: expected true or false, got an integer (1)",
        f"{f}:8: daemon.sockett: unknown key 'sockett' (did you mean 'socket'?)",
        f"{f}:12: scheduling.max_chunk_frames: must be >= min_chunk_frames (100)",
        f"{f}:13: scheduling.target_chunk_seconds: must be a number > 0, got 0",
        f"{f}:16: timeouts.chunk: must be longer than 0, got '0s'",
        f'{f}:17: timeouts.connect: expected a duration like "250ms", "30s", "5m" or "2h", got \'ten seconds\'',
        f"{f}:19: logging: unknown table 'logging'",
    ]


def test_socket_path_too_long_for_a_unix_socket(tmp_path: Path) -> None:
    path = write(tmp_path / "renderd.toml", f'[daemon]\nsocket = "/{"s" * 120}"\n')
    assert problems_of(path, load_daemon_config) == [f"{path}:2: daemon.socket: path is longer than 107 bytes"]


def test_empty_daemon_config_means_defaults(tmp_path: Path) -> None:
    config = load_daemon_config(write(tmp_path / "renderd.toml", ""))
    assert config == DaemonConfig()
    assert config.socket == Path("/run/renderd/renderd.sock") and config.log_level == "info"


# --- single problems -----------------------------------------------------------------------------


def test_syntax_error_names_file_and_line(tmp_path: Path) -> None:
    path = write(tmp_path / "hosts.toml", '[[hosts]]\nname = "a"\naddress = \n')
    [problem] = problems_of(path)
    assert problem.startswith(f"{path}:3: TOML syntax error: ")
    assert "line 3" in problem


def test_bool_is_not_an_int(tmp_path: Path) -> None:
    path = write(tmp_path / "hosts.toml", '[[hosts]]\nname = "a"\naddress = "local"\nslots = true\n')
    assert problems_of(path) == [f"{path}:4: hosts[0].slots: expected an integer, got a boolean (true)"]


@pytest.mark.parametrize(
    ("line", "reason"),
    [
        ("port = 0", "must be 1..65535, got 0"),
        ("port = 65536", "must be 1..65535, got 65536"),
        ("port = 22.0", "expected an integer, got a float (22.0)"),
        ("slots = 0", "must be >= 1, got 0"),
        ('workers = "many"', "must be \"auto\" or an integer >= 1, got 'many'"),
        ('work_dir = "/"', "must not be '/'; give renderd a directory of its own"),
        ('user = "bad user"', "'bad user' is not a user name"),
        ('labels = "gpu"', "expected an array, got a string ('gpu')"),
        ('labels = ["a b"]', "'a b' is not a label (letters, digits, '.', '_', '-')"),
        ('labels = ["fonts/cjk"]', "'fonts/cjk' is not a label (letters, digits, '.', '_', '-')"),
        ('identity_file = "~/.ssh/id"', "'~/.ssh/id': '~' is not expanded; write the absolute path"),
        ("enabled = 1", "expected true or false, got an integer (1)"),
    ],
)
def test_wrong_types_and_ranges(tmp_path: Path, line: str, reason: str) -> None:
    path = write(tmp_path / "hosts.toml", f'[[hosts]]\nname = "a"\naddress = "h"\n{line}\n')
    key = line.split(" =")[0]
    [problem] = problems_of(path)
    assert problem.startswith(f"{path}:4: hosts[0].{key}")
    assert problem.endswith(f": {reason}")


def test_duplicate_host_names_name_both_lines(tmp_path: Path) -> None:
    path = write(
        tmp_path / "hosts.toml",
        '[[hosts]]\nname = "a"\naddress = "h1"\n\n[[hosts]]\naddress = "h2"\nname = "a"\n',
    )
    assert problems_of(path) == [f"{path}:7: hosts[1].name: duplicate host name 'a' (first defined at line 2)"]


def test_unknown_key_suggests_the_closest(tmp_path: Path) -> None:
    path = write(
        tmp_path / "hosts.toml",
        '[[hosts]]\nname = "a"\naddress = "h"\nidentityfile = "k"\nfrobnicate = 1\n[host]\n',
    )
    assert problems_of(path) == [
        f"{path}:4: hosts[0].identityfile: unknown key 'identityfile' (did you mean 'identity_file'?)",
        f"{path}:5: hosts[0].frobnicate: unknown key 'frobnicate'",
        f"{path}:6: host: unknown table 'host' (did you mean 'hosts'?)",
    ]


def test_missing_required_keys_point_at_the_table_header(tmp_path: Path) -> None:
    path = write(tmp_path / "hosts.toml", '[[hosts]]\nname = "a"\naddress = "h"\n\n[[hosts]]\nslots = 2\n')
    assert problems_of(path) == [
        f"{path}:5: hosts[1]: missing required key 'name'",
        f"{path}:5: hosts[1]: missing required key 'address'",
    ]


def test_inventory_without_hosts(tmp_path: Path) -> None:
    path = write(tmp_path / "hosts.toml", "[defaults]\nslots = 2\n")
    assert problems_of(path) == [f"{path}: no [[hosts]] entries; the inventory needs at least one host"]
    path = write(tmp_path / "hosts.toml", "[hosts]\nname = 'a'\n")
    assert problems_of(path) == [f"{path}:1: hosts: expected [[hosts]] entries, got a table"]


def test_missing_inventory_file_is_named(tmp_path: Path) -> None:
    path = tmp_path / "nope.toml"
    assert problems_of(path) == [f"{path}: host inventory file not found"]


def test_defaults_and_overrides_merge(tmp_path: Path) -> None:
    path = write(
        tmp_path / "hosts.toml",
        '[defaults]\nslots = 3\nlabels = ["x"]\nenabled = false\n\n'
        '[[hosts]]\nname = "a"\naddress = "h"\n\n'
        '[[hosts]]\nname = "b"\naddress = "h"\nslots = 1\nenabled = true\n',
    )
    a, b = load_inventory(path).hosts
    assert (a.slots, a.labels, a.enabled) == (3, ("x",), False)
    assert (b.slots, b.labels, b.enabled) == (1, ("x",), True)
    assert load_inventory(path).enabled_hosts() == (b,)
    assert a.port == 22 and a.agent_command == ("renderd", "agent") and a.identity_file is None


def test_key_files_are_checked_for_ssh_hosts_only_and_once(tmp_path: Path) -> None:
    path = write(
        tmp_path / "hosts.toml",
        '[defaults]\nidentity_file = "keys/id"\n\n'
        '[[hosts]]\nname = "l"\naddress = "local"\n\n'
        '[[hosts]]\nname = "a"\naddress = "h1"\n\n[[hosts]]\nname = "b"\naddress = "h2"\n',
    )
    assert problems_of(path) == [f"{path}:2: defaults.identity_file: file not found: {tmp_path / 'keys/id'}"]
    (tmp_path / "keys").mkdir()
    write(tmp_path / "keys" / "id", "k")
    assert load_inventory(path).hosts[1].identity_file == tmp_path / "keys" / "id"


def test_key_file_that_is_a_directory(tmp_path: Path) -> None:
    path = write(tmp_path / "hosts.toml", '[[hosts]]\nname = "a"\naddress = "h"\nidentity_file = "."\n')
    assert problems_of(path) == [f"{path}:4: hosts[0].identity_file: not a regular file: {tmp_path}"]


@pytest.mark.skipif(os.geteuid() == 0, reason="root reads any file")
def test_unreadable_key_file(tmp_path: Path) -> None:
    key = write(tmp_path / "id", "k")
    key.chmod(0)
    path = write(tmp_path / "hosts.toml", f'[[hosts]]\nname = "a"\naddress = "h"\nknown_hosts = "{key}"\n')
    assert problems_of(path) == [f"{path}:4: hosts[0].known_hosts: not readable by this user: {key}"]


# --- durations -----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("value", "seconds"),
    [("250ms", 0.25), ("30s", 30.0), ("5m", 300.0), ("2h", 7200.0), ("7d", 604800.0), ("1.5s", 1.5), (" 10s ", 10.0)]
    + [(10, 10.0), (0.5, 0.5), (0, 0.0)],
)
def test_durations(value: object, seconds: float) -> None:
    assert parse_duration(value) == seconds


@pytest.mark.parametrize("value", ["30", "5 min", "-1s", "1h30m", "", True, -3, [], float("nan"), float("inf")])
def test_bad_durations(value: object) -> None:
    with pytest.raises(ValueError):
        parse_duration(value)


def test_durations_are_normalised_at_load(tmp_path: Path) -> None:
    path = write(
        tmp_path / "renderd.toml",
        '[timeouts]\nconnect = "250ms"\nchunk = 90\n[scheduling]\nquarantine_backoff = "2h"\n',
    )
    config = load_daemon_config(path)
    assert config.timeouts.connect == 0.25 and config.timeouts.chunk == 90.0
    assert config.scheduling.quarantine_backoff == 7200.0
    assert config.timeouts.shutdown == 60.0


# --- groups and check_config --------------------------------------------------------------------


def test_allowed_groups_resolve_lazily(tmp_path: Path) -> None:
    group = grp.getgrgid(os.getgid())
    path = write(tmp_path / "renderd.toml", f'[daemon]\nallowed_groups = ["{group.gr_name}", 4242, "77"]\n')
    config = load_daemon_config(path)
    assert config.allowed_groups == (group.gr_name, 4242, 77)
    assert config.allowed_gids() == (group.gr_gid, 4242, 77)
    bad = load_daemon_config(write(tmp_path / "bad.toml", '[daemon]\nallowed_groups = ["no-such-group-zz"]\n'))
    with pytest.raises(ConfigError) as info:
        bad.allowed_gids()
    assert info.value.problems == [f"{tmp_path / 'bad.toml'}: daemon.allowed_groups: unknown group 'no-such-group-zz'"]


def test_check_config_reports_both_files(tmp_path: Path) -> None:
    config = write(
        tmp_path / "renderd.toml",
        '[daemon]\nlog_level = "loud"\nallowed_groups = ["no-such-group-zz"]\nhosts_file = "hosts.toml"\n',
    )
    hosts = write(tmp_path / "hosts.toml", '[[hosts]]\nname = "a"\naddress = "h"\nslot = 2\n')
    assert check_config(config) == [
        f"{config}:2: daemon.log_level: must be one of 'debug', 'info', 'warning', 'error', got 'loud'",
        f"{config}:3: daemon.allowed_groups[0]: unknown group 'no-such-group-zz'",
        f"{hosts}:4: hosts[0].slot: unknown key 'slot' (did you mean 'slots'?)",
    ]
    other = write(tmp_path / "other.toml", '[[hosts]]\nname = "a"\naddress = "h"\n')
    assert check_config(config, other) == check_config(config)[:2]


def test_check_config_names_a_missing_hosts_file(tmp_path: Path) -> None:
    config = write(tmp_path / "renderd.toml", '\n[daemon]\nhosts_file = "inventory/hosts.toml"\n')
    assert check_config(config) == [
        f"{config}:3: daemon.hosts_file: host inventory file not found: {tmp_path / 'inventory/hosts.toml'}"
    ]
    assert check_config(tmp_path / "missing.toml") == [f"{tmp_path / 'missing.toml'}: daemon config file not found"]


def test_check_config_skips_the_inventory_when_the_config_does_not_parse(tmp_path: Path) -> None:
    config = write(tmp_path / "renderd.toml", "[daemon\n")
    [problem] = check_config(config)
    assert problem.startswith(f"{config}:1: TOML syntax error")


# --- the line locator ----------------------------------------------------------------------------

TRICKY = '''\
# comment [daemon]
title = """
[hosts]
port = 1
"""
arr = [
  "x = 1",
  [1, 2],
]
[[hosts]]
name = "a"
ssh.port = 22
"quoted key" = 1
[hosts.extra]
k = 'v' # x = 2
[[hosts]]
  name = "b"
[ "odd.table" . sub ]
x = 1
'''


def test_locator_handles_multiline_values_dotted_and_quoted_keys() -> None:
    tomllib.loads(TRICKY)  # the fixture itself must be valid TOML
    lines = SourceMap.from_text(TRICKY)
    expected: dict[tuple[str | int, ...], int] = {
        ("title",): 2,
        ("arr",): 6,
        ("hosts",): 10,
        ("hosts", 0): 10,
        ("hosts", 0, "name"): 11,
        ("hosts", 0, "ssh"): 12,
        ("hosts", 0, "ssh", "port"): 12,
        ("hosts", 0, "quoted key"): 13,
        ("hosts", 0, "extra"): 14,
        ("hosts", 0, "extra", "k"): 15,
        ("hosts", 1): 16,
        ("hosts", 1, "name"): 17,
        ("odd.table", "sub"): 18,
        ("odd.table", "sub", "x"): 19,
    }
    assert {p: lines.line_of(p) for p in expected} == expected
    assert ("port",) not in lines.lines and ("x",) not in lines.lines
    assert lines.line_of(("hosts", 1, "missing")) == 16
    assert lines.line_of(("nowhere",)) is None


def test_key_paths_read_like_toml() -> None:
    assert format_key_path(("hosts", 2, "port")) == "hosts[2].port"
    assert format_key_path(("daemon", "odd key", 0)) == 'daemon."odd key"[0]'
