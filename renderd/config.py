"""The daemon config (``renderd.toml``) and the host inventory (``hosts.toml``) as typed objects.

Both files are read once at the edge (the CLI, or a SIGHUP reload) into frozen dataclasses that
are passed down; nothing here reads the environment. Loading checks every value and reports all
problems of a file at once in a :class:`~renderd.errors.ConfigError`, each as
``<file>:<line>: <key path>: <reason>``. The shipped examples (``config/renderd.toml``,
``hosts.example.toml``) document every key.
"""

from __future__ import annotations

import dataclasses
import grp
import ipaddress
import math
import os
import re
import shlex
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field, fields
from pathlib import Path, PurePosixPath
from typing import Any
from urllib.parse import urlsplit

from renderd.capture_cost import CALIBRATE_MIN_FRAMES
from renderd.config_locate import (
    Check,
    Invalid,
    KeyPath,
    Problems,
    as_table,
    boolean,
    int_in,
    list_of,
    matching,
    nonempty_str,
    one_of,
    read_table,
    read_toml,
    show,
    type_name,
    unknown_key,
    want,
)
from renderd.errors import ConfigError
from renderd.netguard import AddressPolicy, check_entry, is_loopback_name
from renderd.settings import DEFAULTS

LOG_LEVELS = ("debug", "info", "warning", "error")
HOST_KEY_POLICIES = ("strict", "accept-new")
# `address = "local"`: run the agent as a subprocess of the daemon, without SSH.
LOCAL_ADDRESS = "local"
DEFAULT_HOSTS_FILE = Path("/etc/renderd/hosts.toml")
# sockaddr_un.sun_path holds 108 bytes on Linux, one of them the terminating NUL.
MAX_SOCKET_PATH_BYTES = 107

_HOST_NAME = re.compile(r"[A-Za-z0-9._-]+")
# A host label, as in `labels = [...]` and `renderd submit --require`.
LABEL = re.compile(r"[A-Za-z0-9._-]+")
LABEL_WHAT = "a label (letters, digits, '.', '_', '-')"
_USER = re.compile(r"[A-Za-z0-9._][A-Za-z0-9._-]*\$?")
_DURATION = re.compile(r"\s*(\d+(?:\.\d+)?)\s*(ms|s|m|h|d)\s*")
_UNIT_SECONDS = {"ms": 0.001, "s": 1.0, "m": 60.0, "h": 3600.0, "d": 86400.0}


@dataclass(frozen=True, slots=True)
class SchedulingPolicy:
    """How jobs are cut into chunks and how failures are retried (``[scheduling]``)."""

    target_chunk_seconds: float = 20.0  # seconds of render work per chunk
    min_chunk_frames: int = 30
    max_chunk_frames: int = 900
    # Jobs of at least this many frames get a capture probe with their describe, and their chunks
    # sized from its measured cost (0: every job).
    calibrate_min_frames: int = CALIBRATE_MIN_FRAMES
    max_attempts: int = 3  # per chunk
    host_failure_quarantine: int = 3  # chunk failures on a host before it is quarantined
    quarantine_backoff: float = 60.0  # seconds a quarantined host waits before a new try


@dataclass(frozen=True, slots=True)
class Timeouts:
    """Time budgets, in seconds, at the daemon's named boundaries (``[timeouts]``)."""

    connect: float = 10.0  # SSH connect + authentication
    chunk: float = 1800.0  # one agent run for one chunk
    encode: float = 600.0  # one ffmpeg run
    assemble: float = 600.0  # concat + audio mux of a finished job
    shutdown: float = 60.0  # drain of in-flight chunks on stop
    # A composition page becoming ready, for jobs submitted without --ready-timeout.
    ready: float = DEFAULTS.ready_timeout
    keepalive: float = 15.0  # SSH keepalive interval; a host silent for 3 in a row is dropped


@dataclass(frozen=True, slots=True)
class WebConfig:
    """The dashboard and ``/metrics`` listener (``[web]``); no table, no listener."""

    host: str = "127.0.0.1"
    port: int = 8470
    # The bearer token of the action endpoints lives in this file; None: every action is refused.
    token_file: Path | None = None

    @property
    def loopback(self) -> bool:
        """Whether only this machine can reach the listener."""
        return is_loopback_name(self.host)


@dataclass(frozen=True, slots=True)
class HookTarget:
    """Where a job hook goes: an http(s) URL (POSTed the job's JSON) or a command (the JSON on stdin)."""

    text: str
    argv: tuple[str, ...] = ()  # empty for a URL

    @property
    def is_url(self) -> bool:
        """Whether the target is an http(s) URL rather than a command."""
        return not self.argv


def parse_hook_target(text: str) -> HookTarget:
    """Return the target ``text`` names; raise ValueError saying why it is neither a URL nor a command.

    ``http://`` and ``https://`` make a URL; anything else is a command line split as a POSIX
    shell would split words (no shell runs it: no pipes, variables or globs).
    """
    if not text.strip() or "\0" in text:
        raise ValueError("a hook must be an http(s) URL or a command, got an empty string")
    if text.lower().startswith(("http://", "https://")):
        if not urlsplit(text).hostname:
            raise ValueError(f"{text!r} is not a URL with a host")
        return HookTarget(text)
    try:
        argv = tuple(shlex.split(text))
    except ValueError as exc:
        raise ValueError(f"{text!r} is not a command line: {exc}") from None
    if "://" in argv[0]:
        raise ValueError(f"{text!r}: only http:// and https:// URLs are hooks")
    return HookTarget(text, argv)


@dataclass(frozen=True, slots=True)
class HooksConfig:
    """Hooks run when a job ends (``[hooks]``), besides the job's own ``submit --notify`` targets."""

    on_done: tuple[HookTarget, ...] = ()
    on_failed: tuple[HookTarget, ...] = ()  # a failed or cancelled job
    attempts: int = 5  # deliveries per hook before it is recorded as failed
    timeout: float = 30.0  # one HTTP request or command run
    backoff: float = 1.0  # seconds before the second attempt; doubled for each further one


@dataclass(frozen=True, slots=True)
class DaemonConfig:
    """Everything ``renderd daemon`` is configured with (``renderd.toml``)."""

    socket: Path = Path("/run/renderd/renderd.sock")
    state_dir: Path = Path("/var/lib/renderd")
    hosts_file: Path = DEFAULT_HOSTS_FILE
    log_level: str = "info"
    allowed_uids: tuple[int, ...] = ()
    allowed_groups: tuple[str | int, ...] = ()  # names, or ints for numeric gids
    scheduling: SchedulingPolicy = field(default_factory=SchedulingPolicy)
    timeouts: Timeouts = field(default_factory=Timeouts)
    watchdog: bool = True
    # Non-public networks and host names prepare may fetch from at submit ([prepare] allow).
    prepare_allow: AddressPolicy = field(default_factory=AddressPolicy)
    web: WebConfig | None = None
    hooks: HooksConfig = field(default_factory=HooksConfig)
    # Finished jobs older than this (by finished_at) are pruned with their files; 0 keeps them.
    keep_finished: float = 0.0
    source: Path | None = field(default=None, compare=False)

    def allowed_gids(self) -> tuple[int, ...]:
        """Resolve ``allowed_groups`` to gids now; raise ConfigError naming unknown groups."""
        gids, unknown = _resolve_groups(self.allowed_groups)
        if unknown:
            file = str(self.source) if self.source else "config"
            raise ConfigError(file, [f"{file}: daemon.allowed_groups: unknown group {n!r}" for _, n in unknown])
        return gids


@dataclass(frozen=True, slots=True)
class HostConfig:
    """One render host of the inventory (a ``[[hosts]]`` entry merged over ``[defaults]``)."""

    name: str
    address: str  # a DNS name or IP, or "local" for a subprocess agent without SSH
    port: int = 22
    user: str | None = None  # None: the daemon's own user
    identity_file: Path | None = None
    known_hosts: Path | None = None
    slots: int = 1  # chunks rendered on the host at the same time
    workers: int | None = None  # capture workers per chunk; None = auto
    work_dir: PurePosixPath = PurePosixPath("/var/tmp/renderd")
    labels: tuple[str, ...] = ()
    agent_command: tuple[str, ...] = ("renderd", "agent")
    enabled: bool = True
    jump_host: str | None = None
    host_key_policy: str = "strict"
    # Keep a serving agent (its browsers) per slot between the chunks of a job; false: one agent per chunk.
    warm_agents: bool = True
    # Serving agents kept after a job ends (at most one per slot), for other jobs' chunks: a new
    # job's first chunk then needs no SSH exec, Python start or Playwright driver start. An idle
    # agent closes its browsers after a minute; 0 stops a job's agents with it.
    spare_agents: int = 0

    @property
    def is_local(self) -> bool:
        """Whether the agent runs as a local subprocess instead of over SSH."""
        return self.address == LOCAL_ADDRESS


@dataclass(frozen=True, slots=True)
class Inventory:
    """The render hosts, in file order, and the file they came from."""

    hosts: tuple[HostConfig, ...]
    path: Path

    def enabled_hosts(self) -> tuple[HostConfig, ...]:
        """Return the hosts that may be given work."""
        return tuple(h for h in self.hosts if h.enabled)

    def get(self, name: str) -> HostConfig | None:
        """Return the host called ``name``, or None."""
        return next((h for h in self.hosts if h.name == name), None)


def parse_duration(value: object) -> float:
    """Return seconds for ``"250ms"``, ``"30s"``, ``"5m"``, ``"2h"``, ``"7d"`` or a plain number; raise ValueError."""
    if isinstance(value, bool) or not isinstance(value, int | float | str):
        raise ValueError(f'expected a duration like "30s" or a number of seconds, got {type_name(value)}')
    if isinstance(value, str):
        m = _DURATION.fullmatch(value)
        if not m:
            raise ValueError(f'expected a duration like "250ms", "30s", "5m" or "2h", got {value!r}')
        seconds = float(m.group(1)) * _UNIT_SECONDS[m.group(2)]
    else:
        seconds = float(value)
    if not math.isfinite(seconds) or seconds < 0:
        raise ValueError(f"a duration must be a finite number of seconds >= 0, got {show(value)}")
    return seconds


# --- value checkers: each returns the typed value or raises Invalid with a reason ---------------


def _positive_number(value: object) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise Invalid(f"expected a number, got {type_name(value)} ({show(value)})")
    if not math.isfinite(value) or value <= 0:
        raise Invalid(f"must be a number > 0, got {value!r}")
    return float(value)


def _duration(*, positive: bool) -> Check:
    def check(value: object) -> float:
        try:
            seconds = parse_duration(value)
        except ValueError as exc:
            raise Invalid(str(exc)) from None
        if positive and seconds <= 0:
            raise Invalid(f"must be longer than 0, got {value!r}")
        return seconds

    return check


def _ssh_target(value: object) -> str:
    v: str = want(value, str, "a string")
    # A leading '-' would be read as an option by ssh/rsync command lines.
    if not v or v.startswith("-") or any(c.isspace() or not c.isprintable() for c in v):
        raise Invalid(f"{v!r} is not a host name or address (no spaces, must not start with '-')")
    return v


def _path(value: object) -> Path:
    v: str = want(value, str, "a path string")
    if not v or "\0" in v:
        raise Invalid("must be a non-empty path")
    if v.startswith("~"):
        raise Invalid(f"{v!r}: '~' is not expanded; write the absolute path")
    return Path(v)


def _remote_dir(value: object) -> PurePosixPath:
    v: str = want(value, str, "a path string")
    p = PurePosixPath(v)
    if not p.is_absolute() or "\0" in v:
        raise Invalid(f"must be an absolute path on the host, got {v!r}")
    if p == PurePosixPath("/"):
        raise Invalid("must not be '/'; give renderd a directory of its own")
    return p


def _workers(value: object) -> int | None:
    if value == "auto":
        return None
    if isinstance(value, int) and not isinstance(value, bool) and value >= 1:
        return value
    raise Invalid(f'must be "auto" or an integer >= 1, got {show(value)}')


def _group(value: object) -> str | int:
    if isinstance(value, str) and value.isdigit():
        return int(value)
    if isinstance(value, int) and not isinstance(value, bool) and value >= 0:
        return value
    if isinstance(value, str) and value:
        return value
    raise Invalid(f"expected a group name or a numeric gid, got {type_name(value)} ({show(value)})")


_DAEMON_KEYS: dict[str, Check] = {
    "socket": _path,
    "state_dir": _path,
    "hosts_file": _path,
    "log_level": one_of(*LOG_LEVELS),
    "allowed_uids": list_of(int_in(0, 2**32 - 2)),
    "allowed_groups": list_of(_group),
    "watchdog": boolean,
}
_SCHEDULING_KEYS: dict[str, Check] = {
    "target_chunk_seconds": _positive_number,
    "min_chunk_frames": int_in(1),
    "max_chunk_frames": int_in(1),
    "calibrate_min_frames": int_in(0),
    "max_attempts": int_in(1),
    "host_failure_quarantine": int_in(1),
    "quarantine_backoff": _duration(positive=False),
}
_TIMEOUT_KEYS: dict[str, Check] = {f.name: _duration(positive=True) for f in fields(Timeouts)}


def _allow_entry(value: object) -> str:
    v: str = want(value, str, "a string")
    try:
        return check_entry(v)
    except ValueError as exc:
        raise Invalid(str(exc)) from None


_PREPARE_KEYS: dict[str, Check] = {"allow": list_of(_allow_entry)}


def _listen(value: object) -> tuple[str, int]:
    v: str = want(value, str, 'a "host:port" string')
    host, sep, port = v.rpartition(":")
    host = host[1:-1] if host.startswith("[") and host.endswith("]") else host
    if not sep or not host or not port.isdigit() or not 0 <= int(port) <= 65535:
        raise Invalid(f'expected "host:port" such as "127.0.0.1:8470" (port 0: any free port), got {v!r}')
    if host != "localhost":
        try:
            ipaddress.ip_address(host)
        except ValueError:
            raise Invalid(f"{host!r} is not an IP address or 'localhost'") from None
    return host, int(port)


_WEB_KEYS: dict[str, Check] = {"listen": _listen, "token_file": _path}


def _hook(value: object) -> HookTarget:
    v: str = want(value, str, "a string (a URL or a command)")
    try:
        return parse_hook_target(v)
    except ValueError as exc:
        raise Invalid(str(exc)) from None


_HOOKS_KEYS: dict[str, Check] = {
    "on_done": list_of(_hook),
    "on_failed": list_of(_hook),
    "attempts": int_in(1, 100),
    "timeout": _duration(positive=True),
    "backoff": _duration(positive=False),
}
_RETENTION_KEYS: dict[str, Check] = {"keep_finished": _duration(positive=False)}
_HOST_KEYS: dict[str, Check] = {
    "name": matching(_HOST_NAME, "a host name (letters, digits, '.', '_', '-')"),
    "address": _ssh_target,
    "port": int_in(1, 65535),
    "user": matching(_USER, "a user name"),
    "identity_file": _path,
    "known_hosts": _path,
    "slots": int_in(1),
    "workers": _workers,
    "work_dir": _remote_dir,
    "labels": list_of(matching(LABEL, LABEL_WHAT)),
    "agent_command": list_of(nonempty_str, nonempty=True),
    "enabled": boolean,
    "jump_host": _ssh_target,
    "host_key_policy": one_of(*HOST_KEY_POLICIES),
    "warm_agents": boolean,
    "spare_agents": int_in(0),
}
_PER_HOST_ONLY = ("name", "address")


def check_host_value(key: str, value: object) -> Any:
    """Check one ``[[hosts]]`` value as loading the inventory does; raise Invalid with the reason."""
    return _HOST_KEYS[key](value)


def _resolve_groups(groups: Iterable[str | int]) -> tuple[tuple[int, ...], list[tuple[int, str]]]:
    gids: list[int] = []
    unknown: list[tuple[int, str]] = []
    for i, g in enumerate(groups):
        if isinstance(g, int):
            gids.append(g)
            continue
        try:
            gids.append(grp.getgrnam(g).gr_gid)
        except KeyError:
            unknown.append((i, g))
    return tuple(gids), unknown


# --- the daemon config -------------------------------------------------------------------------


_DAEMON_TABLES = {
    "daemon": _DAEMON_KEYS,
    "scheduling": _SCHEDULING_KEYS,
    "timeouts": _TIMEOUT_KEYS,
    "prepare": _PREPARE_KEYS,
    "web": _WEB_KEYS,
    "hooks": _HOOKS_KEYS,
    "retention": _RETENTION_KEYS,
}


def _parse_daemon(path: Path) -> tuple[DaemonConfig | None, Problems, dict[str, Any]]:
    doc, problems = read_toml(path, "daemon config file")
    if doc is None:
        return None, problems, {}
    values: dict[str, dict[str, Any]] = {name: {} for name in _DAEMON_TABLES}
    for name, raw in doc.items():
        if name not in _DAEMON_TABLES:
            problems.add((name,), unknown_key(name, _DAEMON_TABLES, "table"))
            continue
        values[name] = read_table(as_table(raw, (name,), problems), _DAEMON_TABLES[name], (name,), problems)
    daemon, sched = values["daemon"], values["scheduling"]
    for key in ("socket", "state_dir"):
        if key in daemon and not daemon[key].is_absolute():
            problems.add(("daemon", key), f"must be an absolute path, got '{daemon.pop(key)}'")
    sock = daemon.get("socket")
    if sock is not None and len(os.fsencode(sock)) > MAX_SOCKET_PATH_BYTES:
        problems.add(("daemon", "socket"), f"path is longer than {MAX_SOCKET_PATH_BYTES} bytes")
    if "hosts_file" in daemon:
        daemon["hosts_file"] = path.parent.absolute() / daemon["hosts_file"]
    limits = dataclasses.replace(SchedulingPolicy(), **sched)
    if limits.max_chunk_frames < (lo := limits.min_chunk_frames):
        problems.add(("scheduling", "max_chunk_frames"), f"must be >= min_chunk_frames ({lo})")
    web = _web_config(doc, values["web"], path, problems)
    if problems:
        return None, problems, daemon
    config = DaemonConfig(
        **daemon,
        scheduling=SchedulingPolicy(**sched),
        timeouts=Timeouts(**values["timeouts"]),
        prepare_allow=AddressPolicy.parse(values["prepare"].get("allow", ())),
        web=web,
        hooks=HooksConfig(**values["hooks"]),
        keep_finished=values["retention"].get("keep_finished", 0.0),
        source=path,
    )
    return config, problems, daemon


def _web_config(doc: Mapping[str, Any], web: dict[str, Any], path: Path, problems: Problems) -> WebConfig | None:
    """The ``[web]`` table: no table, no listener; a listener other hosts can reach needs a token."""
    if "web" not in doc:
        return None
    if "listen" not in web and ("web", "listen") not in problems.paths:
        problems.add(("web",), "missing required key 'listen' (such as \"127.0.0.1:8470\")")
        return None
    host, port = web.get("listen", ("127.0.0.1", 8470))
    token = web.get("token_file")
    if token is not None:
        token = path.parent.absolute() / token
    if not is_loopback_name(host) and token is None:
        # The page and /metrics show job paths and host names: beyond this machine only with a token.
        problems.add(("web", "listen"), f"{host} is not a loopback address: set web.token_file too")
    return WebConfig(host=host, port=port, token_file=token)


def load_daemon_config(path: Path) -> DaemonConfig:
    """Load and check ``renderd.toml``; raise ConfigError listing every problem."""
    config, problems, _ = _parse_daemon(path)
    if config is None:
        raise ConfigError(str(path), problems.lines())
    return config


# --- the host inventory ------------------------------------------------------------------------


def _file_problem(path: Path) -> str | None:
    if not path.exists():
        return f"file not found: {path}"
    if not path.is_file():
        return f"not a regular file: {path}"
    if not os.access(path, os.R_OK):
        return f"not readable by this user: {path}"
    return None


def _parse_host(
    i: int, raw: object, defaults: Mapping[str, Any], problems: Problems, base: Path, checked: set[KeyPath]
) -> HostConfig | None:
    where: KeyPath = ("hosts", i)
    table = as_table(raw, where, problems)
    values = read_table(table, _HOST_KEYS, where, problems)
    for key in _PER_HOST_ONLY:
        if key not in table:
            problems.add(where, f"missing required key {key!r}")
    merged = {**defaults, **values}
    for key in ("identity_file", "known_hosts"):
        if merged.get(key) is None:
            continue
        merged[key] = base / merged[key]
        # A value inherited from [defaults] is reported once, where it is written.
        source = where + (key,) if key in values else ("defaults", key)
        if merged.get("address") != LOCAL_ADDRESS and source not in checked:
            checked.add(source)
            reason = _file_problem(merged[key])
            if reason:
                problems.add(source, reason)
    if not all(key in values for key in _PER_HOST_ONLY):
        return None
    return HostConfig(**merged)


def _parse_inventory(path: Path) -> tuple[Inventory | None, Problems]:
    doc, problems = read_toml(path, "host inventory file")
    if doc is None:
        return None, problems
    for key in [k for k in doc if k not in ("defaults", "hosts")]:
        problems.add((key,), unknown_key(key, ("defaults", "hosts"), "table"))
    defaults_table = as_table(doc.get("defaults", {}), ("defaults",), problems)
    for key in _PER_HOST_ONLY:
        if key in defaults_table:
            problems.add(("defaults", key), f"{key!r} cannot have a default; set it in each [[hosts]]")
    default_checks = {k: c for k, c in _HOST_KEYS.items() if k not in _PER_HOST_ONLY}
    defaults = read_table(
        {k: v for k, v in defaults_table.items() if k not in _PER_HOST_ONLY},
        default_checks,
        ("defaults",),
        problems,
    )
    raw_hosts = doc.get("hosts", [])
    if not isinstance(raw_hosts, list):
        problems.add(("hosts",), f"expected [[hosts]] entries, got {type_name(raw_hosts)}")
        raw_hosts = []
    elif not raw_hosts:
        problems.add((), "no [[hosts]] entries; the inventory needs at least one host")
    base = path.parent.absolute()
    hosts: list[HostConfig] = []
    first_seen: dict[str, int] = {}
    checked: set[KeyPath] = set()
    for i, raw in enumerate(raw_hosts):
        host = _parse_host(i, raw, defaults, problems, base, checked)
        if host is None:
            continue
        if host.name in first_seen:
            j = first_seen[host.name]
            first_line = problems.source.line_of(("hosts", j, "name")) if problems.source else None
            at = f"line {first_line}" if first_line else f"hosts[{j}]"
            problems.add(("hosts", i, "name"), f"duplicate host name {host.name!r} (first defined at {at})")
            continue
        first_seen[host.name] = i
        hosts.append(host)
    if problems:
        return None, problems
    return Inventory(hosts=tuple(hosts), path=path), problems


def load_inventory(path: Path) -> Inventory:
    """Load and check a host inventory (``hosts.toml``); raise ConfigError listing every problem."""
    inventory, problems = _parse_inventory(path)
    if inventory is None:
        raise ConfigError(str(path), problems.lines())
    return inventory


def check_config(config_path: Path, hosts_path: Path | None = None) -> list[str]:
    """Return every problem of the daemon config and its host inventory; empty means valid.

    ``hosts_path`` defaults to the config's ``daemon.hosts_file``. Unlike loading, this also
    resolves ``allowed_groups`` against this machine's group database.
    """
    _, problems, daemon = _parse_daemon(config_path)
    for i, name in _resolve_groups(daemon.get("allowed_groups", ()))[1]:
        problems.add(("daemon", "allowed_groups", i), f"unknown group {name!r}")
    if hosts_path is None:
        # No inventory check when the config cannot say where the inventory is.
        if problems.source is None or ("daemon", "hosts_file") in problems.paths:
            return problems.lines()
        hosts_path = daemon.get("hosts_file", DEFAULT_HOSTS_FILE)
        if not hosts_path.exists():
            default = "" if "hosts_file" in daemon else " (the default; set daemon.hosts_file)"
            problems.add(("daemon", "hosts_file"), f"host inventory file not found: {hosts_path}{default}")
            return problems.lines()
    return problems.lines() + _parse_inventory(hosts_path)[1].lines()
