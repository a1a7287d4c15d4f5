"""Editing the host inventory for `renderd hosts install` and `renderd hosts add`.

The inventory is a file people write and comment, so it is edited with tomlkit, which keeps
comments, order and formatting: `hosts install` sets one host's ``agent_command`` in place, `hosts
add` appends one ``[[hosts]]`` entry after the host's SSH key has been shown and confirmed. Every
edit is checked with :func:`~renderd.config.load_inventory` before it stays; a file this user may
not write is left alone and the line to add is printed instead.
"""

from __future__ import annotations

import asyncio
import json
import os
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import asyncssh
import tomlkit
from tomlkit.items import AoT, Table

from renderd.config import LABEL, LABEL_WHAT, LOCAL_ADDRESS, HostConfig, check_host_value, load_inventory
from renderd.config_locate import Invalid
from renderd.errors import ConfigError, RenderdError

DEFAULT_AGENT_COMMAND = list(HostConfig(name="-", address="-").agent_command)
KNOWN_HOSTS_NAME = "known_hosts"  # beside the inventory, when the inventory names none


def _read(path: Path) -> tuple[str, tomlkit.TOMLDocument]:
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as exc:
        raise RenderdError(f"{path}: cannot read the inventory: {exc.strerror or exc}") from None
    try:
        return text, tomlkit.parse(text)
    except tomlkit.exceptions.ParseError as exc:
        raise RenderdError(f"{path}: not valid TOML: {exc}") from None


def _hosts(doc: tomlkit.TOMLDocument) -> list[Table]:
    hosts = doc.get("hosts")
    return [t for t in hosts if isinstance(t, Table)] if isinstance(hosts, AoT) else []


def _name_line(text: str, name: str) -> int | None:
    """The line of ``name = "<name>"`` in the inventory text (1-based), for messages."""
    pattern = re.compile(r"\s*name\s*=\s*[\"']" + re.escape(name) + r"[\"']")
    return next((i for i, line in enumerate(text.splitlines(), 1) if pattern.match(line)), None)


def _write_checked(path: Path, old: str, new: str) -> None:
    """Write ``new`` over the inventory in place (its owner, mode and inode stay); undo it if it does not load."""
    with open(path, "r+", encoding="utf-8") as f:
        f.write(new)
        f.truncate()
    try:
        load_inventory(path)
    except ConfigError as exc:
        path.write_text(old, encoding="utf-8")
        raise RenderdError(f"{path}: the edit would not load ({'; '.join(exc.problems[:3])}); left unchanged") from None


def _insert_last(table: Table, key: str, value: Any) -> None:
    """Add ``key`` after the table's last key, before the comments and blank lines that end it."""
    body = table.value.body
    last = max((i for i, (k, _) in enumerate(body) if k is not None), default=len(body) - 1)
    if last + 1 < len(body):
        table.value._insert_at(last + 1, key, tomlkit.item(value))
    else:
        table[key] = value


def record_agent_command(path: Path, name: str, command: list[str]) -> str:
    """Set ``agent_command`` of host ``name`` in the inventory at ``path``; return what was done, one line.

    A file this user cannot write is not touched: the line says exactly what to add where.
    """
    text, doc = _read(path)
    table = next((t for t in _hosts(doc) if t.get("name") == name), None)
    if table is None:
        return f"{path}: no [[hosts]] entry named {name!r}; add agent_command = {json.dumps(command)} to it"
    defaults = doc.get("defaults")
    inherited = defaults.get("agent_command") if isinstance(defaults, Table) else None
    current = table.get("agent_command", inherited if inherited is not None else DEFAULT_AGENT_COMMAND)
    if list(current) == command:
        return f"{path}: agent_command of {name} already is {json.dumps(command)}"
    had = "agent_command" in table
    if had:
        table["agent_command"] = command
    else:
        _insert_last(table, "agent_command", command)
    line = _name_line(text, name)
    where = f"{path}:{line}" if line else str(path)
    verb = "set" if had else "add"
    instruction = f'{where}: [[hosts]] name = "{name}": {verb} agent_command = {json.dumps(command)}'
    if not os.access(path, os.W_OK):
        return f"{instruction} (this user cannot write the file), then `renderd reload`"
    try:
        _write_checked(path, text, tomlkit.dumps(doc))
    except OSError as exc:
        return f"{instruction} (cannot write the file: {exc.strerror or exc}), then `renderd reload`"
    return f"{where}: agent_command of {name} set to {json.dumps(command)}; `renderd reload` to use it"


# --- hosts add -------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class NewHost:
    """What `hosts add` enrols: a checked name, address, port, user and labels."""

    name: str
    address: str
    port: int = 22
    user: str | None = None
    labels: tuple[str, ...] = ()

    @property
    def is_local(self) -> bool:
        """Whether the host is the daemon's own machine (no SSH, no key)."""
        return self.address == LOCAL_ADDRESS


def check_new_host(name: str, address: str, port: int | None, user: str | None, labels: str | None) -> NewHost:
    """Check `hosts add` arguments with the inventory's own rules; raise RenderdError naming the bad one."""
    values: dict[str, Any] = {"name": name, "address": address}
    if port is not None:
        values["port"] = port
    if user is not None:
        values["user"] = user
    for key, value in values.items():
        try:
            values[key] = check_host_value(key, value)
        except Invalid as exc:
            raise RenderdError(f"hosts add: {key}: {exc}") from None
    wanted = [label for label in (labels or "").split(",") if label]
    for label in wanted:
        if not LABEL.fullmatch(label):
            raise RenderdError(f"hosts add: --labels: {label!r} is not {LABEL_WHAT}")
    return NewHost(**values, labels=tuple(dict.fromkeys(wanted)))


async def fetch_host_key(host: NewHost, timeout: float) -> asyncssh.SSHKey:
    """Return the key ``host``'s SSH server presents (no authentication is attempted)."""
    try:
        key = await asyncio.wait_for(asyncssh.get_server_host_key(host.address, host.port), timeout)
    except TimeoutError:
        where = f"{host.address}:{host.port}"
        raise RenderdError(f"host {host.name}: {where} did not answer within {timeout:g} s") from None
    except (OSError, asyncssh.Error) as exc:
        why = exc.strerror if isinstance(exc, OSError) and exc.strerror else str(exc)
        raise RenderdError(f"host {host.name}: cannot reach {host.address}:{host.port}: {why}") from None
    if key is None:
        raise RenderdError(f"host {host.name}: {host.address}:{host.port} presented no host key")
    return key


def fingerprint(key: asyncssh.SSHKey) -> str:
    """``SHA256:...``, as ssh and ssh-keygen -l print it."""
    return str(key.get_fingerprint("sha256"))


def key_type(key: asyncssh.SSHKey) -> str:
    """The key type as ssh names it in its prompt: ED25519, RSA, ECDSA."""
    algorithm = key.get_algorithm()
    return {"ssh-ed25519": "ED25519", "ssh-rsa": "RSA", "ssh-dss": "DSA"}.get(
        algorithm, "ECDSA" if algorithm.startswith("ecdsa") else algorithm
    )


@dataclass(frozen=True, slots=True)
class Plan:
    """Where `hosts add` writes: the inventory, the known_hosts file, and whether the entry must name it."""

    inventory: Path
    known_hosts: Path
    known_hosts_value: str | None  # set in the new entry (as written), or None: [defaults] has it


def plan_add(inventory: Path, host: NewHost) -> Plan:
    """Check that ``host`` may be added to ``inventory`` (no such name yet) and choose its known_hosts file.

    The known_hosts of ``[defaults]``; else the one the last ``[[hosts]]`` entry names; else
    ``known_hosts`` beside the inventory.
    """
    if not inventory.exists():
        return Plan(inventory, inventory.parent / KNOWN_HOSTS_NAME, KNOWN_HOSTS_NAME)
    text, doc = _read(inventory)
    if any(t.get("name") == host.name for t in _hosts(doc)):
        line = _name_line(text, host.name)
        raise RenderdError(f"{inventory}:{line or '?'}: a host named {host.name!r} is already in the inventory")
    defaults = doc.get("defaults")
    base = inventory.parent.absolute()
    if isinstance(defaults, Table) and isinstance(defaults.get("known_hosts"), str):
        return Plan(inventory, base / str(defaults["known_hosts"]), None)
    named = [str(t["known_hosts"]) for t in _hosts(doc) if isinstance(t.get("known_hosts"), str)]
    value = named[-1] if named else KNOWN_HOSTS_NAME
    return Plan(inventory, base / value, value)


def _host_pattern(host: NewHost) -> str:
    return host.address if host.port == 22 else f"[{host.address}]:{host.port}"


def trust_key(known_hosts: Path, host: NewHost, key: asyncssh.SSHKey) -> bool:
    """Append ``key`` for ``host`` to ``known_hosts``; False if it is there already.

    A different key already recorded for the host is an error: replacing it is the operator's call.
    """
    if known_hosts.exists():
        trusted, *_ = asyncssh.read_known_hosts(str(known_hosts)).match(host.address, host.address, host.port)
        if any(k.public_data == key.public_data for k in trusted):
            return False
        if trusted:
            raise RenderdError(
                f"{known_hosts} has a different key for {_host_pattern(host)}; if the host was reinstalled, "
                f"remove it (ssh-keygen -R '{_host_pattern(host)}' -f {known_hosts}) and add the host again"
            )
    kind, blob = key.export_public_key("openssh").decode().split()[:2]
    try:
        old = known_hosts.read_bytes() if known_hosts.exists() else b""
        with open(known_hosts, "a", encoding="ascii") as f:
            f.write(("\n" if old and not old.endswith(b"\n") else "") + f"{_host_pattern(host)} {kind} {blob}\n")
    except OSError as exc:
        raise RenderdError(f"{known_hosts}: cannot record the host key: {exc.strerror or exc}") from None
    return True


def append_host(plan: Plan, host: NewHost) -> None:
    """Append ``host`` as a ``[[hosts]]`` entry at the end of the inventory (created if missing)."""
    entry = tomlkit.table()
    entry["name"] = host.name
    entry["address"] = host.address
    if host.port != 22:
        entry["port"] = host.port
    if host.user is not None:
        entry["user"] = host.user
    if plan.known_hosts_value is not None and not host.is_local:
        entry["known_hosts"] = plan.known_hosts_value
    if host.labels:
        entry["labels"] = list(host.labels)
    block = tomlkit.document()
    block.add(tomlkit.comment("Added by `renderd hosts add`; [defaults] gives it every other key."))
    aot = tomlkit.aot()
    aot.append(entry)
    block["hosts"] = aot
    if not plan.inventory.exists():
        plan.inventory.write_text(tomlkit.dumps(block), encoding="utf-8")
        try:
            load_inventory(plan.inventory)
        except ConfigError as exc:
            plan.inventory.unlink()
            raise RenderdError(f"{plan.inventory}: the new inventory would not load: {exc.problems[0]}") from None
        return
    text, _ = _read(plan.inventory)
    _write_checked(plan.inventory, text, text.rstrip("\n") + "\n\n" + tomlkit.dumps(block))
