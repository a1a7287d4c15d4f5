"""Throwaway render hosts: real ``sshd`` processes on loopback addresses (test-only, synchronous).

Host ``h{i}`` is an ``sshd -D`` listening on ``127.0.0.{10+i}`` at a free port of its own, with its
own host key. Keys, ``known_hosts`` and a renderd inventory (``hosts.toml``) are generated under a
root directory at run time; none is ever committed. Faults are injected for real:

- :meth:`TestHosts.stop` ends a host's listener: new connections are refused, but sessions already
  open survive, because each connection is served by its own sshd child;
- :meth:`TestHosts.kill_sessions` SIGKILLs those children, which drops every open connection;
- :meth:`TestHosts.session_commands` returns the processes run over SSH (an agent), to kill them;
- :meth:`TestHosts.corrupt_known_host` puts a wrong key for a host into ``known_hosts``;
- ``behind={"h2": "h1"}`` starts h2's sshd inside namespaced h1's namespace on a loopback address
  there: only h1's sshd can reach it, so the inventory routes h2 through ``jump_host`` h1 (which
  logs its direct-tcpip forwards at DEBUG1);
- :meth:`TestHosts.link_down` / :meth:`TestHosts.link_up` cut and restore the network link of a host
  started in a network namespace (``netns=``): its own namespace, reached over a veth pair, where
  a dropped link leaves open connections hanging, as a real partition does.

A namespaced host ``hN`` is ``ip netns`` ``rdt<pid>hN`` with a veth pair ``rv<pid>-N`` (this side,
``10.231.<pid % 256>.<4N+1>/30``) and its peer inside (``.4N+2``, where sshd listens on port
2222). It needs root (CAP_NET_ADMIN); :func:`netns_available` says whether it works here.

``scripts/testhosts`` is the command-line front end of :class:`TestHosts`.
"""

from __future__ import annotations

import contextlib
import json
import os
import pwd
import shlex
import shutil
import socket
import subprocess
import time
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from types import TracebackType

import psutil

LAST_OCTET_BASE = 10  # h1 listens on 127.0.0.11
MAX_HOSTS = 200
READY_TIMEOUT_S = 10.0
STOP_TIMEOUT_S = 5.0
PORT_ATTEMPTS = 5
LOG_TAIL_BYTES = 2000
PRIVSEP_DIR = Path("/run/sshd")
NETNS_PORT = 2222  # a namespace has ports of its own; not 22, whose known_hosts entries look different
IP = shutil.which("ip", path=f"{os.environ.get('PATH', os.defpath)}:/usr/sbin:/sbin") or "/usr/sbin/ip"
# sshd re-executes itself for every connection, which needs an absolute path.
SSHD = shutil.which("sshd", path=f"{os.environ.get('PATH', os.defpath)}:/usr/sbin:/usr/local/sbin") or "/usr/sbin/sshd"


class TestHostsError(RuntimeError):
    """A test host's sshd did not start or stop; carries the host name and the tail of its log."""

    __test__ = False

    def __init__(self, message: str, *, host: str, log_tail: str = "") -> None:
        super().__init__(f"{message}\n--- sshd log tail ---\n{log_tail}" if log_tail.strip() else message)
        self.host = host
        self.log_tail = log_tail


@dataclass(frozen=True, slots=True)
class Host:
    """Where one test host lives: its address and port, and its files under the root directory."""

    name: str
    address: str
    port: int
    dir: Path
    netns: str | None = None  # the network namespace its sshd runs in
    veth: str | None = None  # this side of its veth pair (its peer in the namespace is eth0)

    @property
    def config(self) -> Path:
        return self.dir / "sshd_config"

    @property
    def host_key(self) -> Path:
        return self.dir / "ssh_host_ed25519_key"

    @property
    def log(self) -> Path:
        return self.dir / "sshd.log"

    @property
    def pid_file(self) -> Path:
        return self.dir / "sshd.pid"

    @property
    def work_dir(self) -> Path:
        return self.dir / "work"


def generate_key(path: Path, comment: str) -> str:
    """Write a new ed25519 key pair at ``path`` (replacing one there); return ``"ssh-ed25519 AAAA..."``."""
    path.unlink(missing_ok=True)
    path.with_name(path.name + ".pub").unlink(missing_ok=True)
    subprocess.run(
        ["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-C", comment, "-f", str(path)],
        check=True, stdin=subprocess.DEVNULL, capture_output=True, timeout=30,
    )  # fmt: skip
    kind, blob = path.with_name(path.name + ".pub").read_text().split()[:2]
    return f"{kind} {blob}"


def _ip(*args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
    return subprocess.run([IP, *args], check=check, capture_output=True, text=True, timeout=30)


def netns_available() -> str | None:
    """Return None if network namespaces with veth pairs can be made here, else why not."""
    name = f"rdtprobe{os.getpid()}"
    try:
        made = _ip("netns", "add", name, check=False)
        if made.returncode != 0:
            return f"ip netns add: {made.stderr.strip() or made.returncode}"
        veth = f"rvp{os.getpid() % 100000}"
        link = _ip("link", "add", veth, "type", "veth", "peer", "name", veth + "b", "netns", name, check=False)
        _ip("link", "del", veth, check=False)
        if link.returncode != 0:
            return f"ip link add veth: {link.stderr.strip() or link.returncode}"
        return None
    except (OSError, subprocess.SubprocessError) as exc:
        return f"ip: {exc}"
    finally:
        with contextlib.suppress(OSError, subprocess.SubprocessError):
            _ip("netns", "del", name, check=False)


def _make_netns(host: Host, index: int) -> Host:
    """Create the namespace and veth pair named in ``host``; return the host at its address in there."""
    assert host.netns and host.veth
    net = f"10.231.{os.getpid() % 256}"
    outside, inside = f"{net}.{4 * index + 1}", f"{net}.{4 * index + 2}"
    _ip("netns", "add", host.netns)
    _ip("link", "add", host.veth, "type", "veth", "peer", "name", "eth0", "netns", host.netns)
    _ip("addr", "add", f"{outside}/30", "dev", host.veth)
    _ip("link", "set", host.veth, "up")
    _ip("-n", host.netns, "addr", "add", f"{inside}/30", "dev", "eth0")
    _ip("-n", host.netns, "link", "set", "eth0", "up")
    _ip("-n", host.netns, "link", "set", "lo", "up")
    return replace(host, address=inside)


def _remove_netns(host: Host) -> None:
    # Deleting the namespace's last reference takes its end of the veth pair, and so the pair, along.
    if host.netns:
        _ip("netns", "del", host.netns, check=False)
    if host.veth:
        _ip("link", "del", host.veth, check=False)


def free_port(address: str) -> int:
    """Return a TCP port that is free on ``address`` right now (the OS picks it)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind((address, 0))
        port: int = s.getsockname()[1]
        return port


def sshd_config(host: Host, authorized_keys: Path, log_level: str = "ERROR", sftp: bool = True) -> str:
    """Return the sshd_config of ``host``: key-only root login, nothing read from /etc/ssh."""
    return f"""\
# Generated by tests/sshhosts.py for throwaway test host {host.name}.
ListenAddress {host.address}:{host.port}
AddressFamily inet
HostKey {host.host_key}
PidFile {host.pid_file}
AuthorizedKeysFile {authorized_keys}
PermitRootLogin prohibit-password
PubkeyAuthentication yes
PasswordAuthentication no
KbdInteractiveAuthentication no
UsePAM no
StrictModes no
PermitUserRC no
PrintMotd no
PrintLastLog no
X11Forwarding no
UseDNS no
MaxStartups 100
MaxSessions 50
LogLevel {log_level}
{"Subsystem sftp internal-sftp" if sftp else "# no SFTP subsystem"}
# The login shell reads ~/.bashrc even for commands (Debian's bash does, under sshd). A developer's
# or CI's rc file (pyenv rehash, say) can then stall or serialise every session: give the
# sessions a home of their own, with empty rc files.
SetEnv HOME={host.dir / "home"}
"""


def _toml_value(value: object) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int):
        return str(value)
    if isinstance(value, str | Path):
        # A JSON string (non-ASCII kept as is) is a valid TOML basic string.
        return json.dumps(str(value), ensure_ascii=False)
    if isinstance(value, list | tuple):
        return "[" + ", ".join(_toml_value(v) for v in value) + "]"
    raise TypeError(f"cannot write {type(value).__name__} {value!r} to the inventory")


def _log_tail(path: Path, since: int = 0) -> str:
    try:
        with path.open("rb") as f:
            f.seek(max(since, f.seek(0, os.SEEK_END) - LOG_TAIL_BYTES))
            return f.read().decode(errors="replace")
    except OSError as exc:
        return f"(cannot read {path}: {exc.strerror})"


def _is_sshd(proc: psutil.Process) -> bool:
    # "sshd" in OpenSSH < 9.8; "sshd-session" / "sshd-auth" serve connections in newer ones.
    with contextlib.suppress(psutil.Error):
        return proc.name().startswith("sshd")
    return False


def is_alive(proc: psutil.Process) -> bool:
    """Return whether ``proc`` still runs; a zombie does not (init may take a while to reap it)."""
    try:
        return proc.is_running() and proc.status() != psutil.STATUS_ZOMBIE
    except psutil.Error:
        return False


def _kill_and_wait(procs: Sequence[psutil.Process]) -> None:
    for p in procs:
        with contextlib.suppress(psutil.Error):
            p.kill()
    deadline = time.monotonic() + STOP_TIMEOUT_S
    while (procs := [p for p in procs if is_alive(p)]) and time.monotonic() < deadline:
        time.sleep(0.01)


class TestHosts:
    """Start ``count`` throwaway sshd hosts under ``root``; stop them all on :meth:`close` or ``with`` exit.

    The constructor generates the keys, starts every sshd, waits until each listens, and writes
    ``root/known_hosts`` and the inventory ``root/hosts.toml``. If any of that fails, whatever was
    started is stopped again before the error propagates.
    """

    __test__ = False  # a helper, not a pytest test class

    def __init__(
        self,
        root: Path,
        count: int,
        *,
        agent_command: Sequence[str],
        slots: int = 1,
        workers: int = 1,
        netns: Sequence[str] = (),
        behind: Mapping[str, str] | None = None,
    ) -> None:
        if not 1 <= count <= MAX_HOSTS:
            raise ValueError(f"count must be 1..{MAX_HOSTS}, got {count}")
        self.root = Path(root).resolve()
        # sshd_config takes a value up to the first space and expands '%' in AuthorizedKeysFile.
        if any(c.isspace() or c in '"%' for c in str(self.root)):
            raise ValueError(f"root must not contain spaces, quotes or '%': {self.root}")
        self.agent_command = list(agent_command)
        self.slots = slots
        self.workers = workers
        self.user = pwd.getpwuid(os.getuid()).pw_name
        self.identity_file = self.root / "id_ed25519"
        self.authorized_keys = self.root / "authorized_keys"
        self.known_hosts = self.root / "known_hosts"
        self.inventory = self.root / "hosts.toml"
        self._hosts: dict[str, Host] = {}
        self._host_keys: dict[str, str] = {}  # the key each host really has
        self._known: dict[str, str] = {}  # the key known_hosts says it has
        self._listeners: dict[str, subprocess.Popen[bytes]] = {}
        self._log_start: dict[str, int] = {}
        # Session processes of a stopped listener are no longer its children: remember them.
        self._orphans: dict[str, list[psutil.Process]] = {}
        self._netns = set(netns)  # hosts to start in a network namespace of their own
        self.without_sftp: set[str] = set()  # hosts whose sshd, at its next start, has no SFTP subsystem
        # host -> jump host: its sshd listens inside the jump host's namespace, on a loopback
        # address there, so nothing but the jump host's sshd (a direct-tcpip forward) reaches it.
        self._behind = dict(behind or {})
        for name, jump in self._behind.items():
            if jump not in self._netns or name in self._netns or not jump < name:
                raise ValueError(f"behind: {name} needs a namespaced jump host listed before it, got {jump}")
        self._closed = False
        try:
            self._setup(count)
        except BaseException:
            self.close()
            raise

    # -- lifecycle ----------------------------------------------------------------------------

    def _setup(self, count: int) -> None:
        _ensure_privsep_dir()
        self.root.mkdir(parents=True, exist_ok=True)
        user_key = generate_key(self.identity_file, "renderd-testhosts-user")
        self.authorized_keys.write_text(user_key + "\n")
        for i in range(1, count + 1):
            name, address = f"h{i}", f"127.0.0.{LAST_OCTET_BASE + i}"
            if name in self._behind:
                jump = self._hosts[self._behind[name]]
                host = Host(name, address, NETNS_PORT + i, self.root / "hosts" / name, jump.netns)
            elif name in self._netns:
                tag = os.getpid() % 100000
                host = Host(name, address, NETNS_PORT, self.root / "hosts" / name, f"rdt{tag}{name}", f"rv{tag}-{i}")
                # Registered before it is made, so that close() removes a half-made namespace too.
                self._hosts[name] = host
                host = _make_netns(host, i)
            else:
                host = Host(name, address, free_port(address), self.root / "hosts" / name)
            host.work_dir.mkdir(parents=True, exist_ok=True)
            (host.dir / "home").mkdir(exist_ok=True)
            for rc in (".bashrc", ".profile"):
                (host.dir / "home" / rc).write_text("")
            self._host_keys[name] = self._known[name] = generate_key(host.host_key, f"renderd-testhosts-{name}")
            self._hosts[name] = host
        # Start all listeners first, then wait: the sshd start-ups overlap.
        for name in self._hosts:
            self._spawn(name)
        for name in self._hosts:
            self._wait_listening_retrying(name)
        self._write_known_hosts()
        self.write_inventory()

    def close(self) -> None:
        """Stop every sshd (listeners, connection children) and the commands they run; safe to repeat."""
        if self._closed:
            return
        self._closed = True
        for name in self._hosts:
            self.stop(name)
            _kill_and_wait(self._session_tree(name))
            self._orphans.pop(name, None)
        for host in self._hosts.values():
            _remove_netns(host)

    def __enter__(self) -> TestHosts:
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.close()

    # -- hosts ----------------------------------------------------------------------------------

    @property
    def names(self) -> list[str]:
        """Return the host names, ``h1`` .. ``hN``."""
        return list(self._hosts)

    def host(self, name: str) -> Host:
        """Return the address, port and files of host ``name``."""
        try:
            return self._hosts[name]
        except KeyError:
            raise KeyError(f"no test host {name!r}; hosts are {', '.join(self._hosts)}") from None

    def __iter__(self) -> Iterator[Host]:
        return iter(self._hosts.values())

    def is_running(self, name: str) -> bool:
        """Return whether host ``name``'s listener is up."""
        proc = self._listeners.get(name)
        return proc is not None and proc.poll() is None

    def listener_pid(self, name: str) -> int | None:
        """Return the pid of host ``name``'s listening sshd, or None when it is stopped."""
        return self._listeners[name].pid if self.is_running(name) else None

    # -- faults ---------------------------------------------------------------------------------

    def stop(self, name: str) -> None:
        """SIGTERM host ``name``'s listener and wait for it; open sessions keep running."""
        self.host(name)
        proc = self._listeners.pop(name, None)
        if proc is None:
            return
        self._orphans[name] = self._session_tree(name, proc)
        proc.terminate()
        try:
            proc.wait(STOP_TIMEOUT_S)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()

    def start(self, name: str) -> None:
        """Start host ``name``'s listener again, on the same address and port; no-op when running."""
        if self._closed:
            raise RuntimeError("these test hosts are closed")
        self.host(name)
        if self.is_running(name):
            return
        self._spawn(name)
        self._wait_listening(name)

    def kill_sessions(self, name: str) -> int:
        """SIGKILL every sshd serving a connection to host ``name``; return how many were killed.

        Works whether or not the listener is running. The commands those sessions ran get EOF on
        their stdin but are not killed (see :meth:`session_commands`).
        """
        self.host(name)
        tree = self._session_tree(name)
        # Their commands are re-parented to init when the sshds die: remember them for close().
        self._orphans[name] = tree
        sshds = [p for p in tree if _is_sshd(p)]
        _kill_and_wait(sshds)
        return len(sshds)

    def session_commands(self, name: str) -> list[psutil.Process]:
        """Return the running processes that sessions on host ``name`` started (an agent, a shell)."""
        self.host(name)
        return [p for p in self._session_tree(name) if not _is_sshd(p)]

    def link_down(self, name: str) -> None:
        """Drop the network link of namespaced host ``name``: open connections hang, new ones fail."""
        # The namespace's end goes down: this end loses its carrier but keeps its route, so
        # packets are dropped here instead of following the default route off the machine.
        _ip("-n", self._netns_of(name), "link", "set", "eth0", "down")

    def link_up(self, name: str) -> None:
        """Bring the link of namespaced host ``name`` back (and its route with it)."""
        _ip("-n", self._netns_of(name), "link", "set", "eth0", "up")

    def _netns_of(self, name: str) -> str:
        host = self.host(name)
        if host.netns is None:
            raise ValueError(f"test host {name} is not in a network namespace (pass netns=[{name!r}])")
        return host.netns

    def corrupt_known_host(self, name: str) -> None:
        """Make ``known_hosts`` list a different, freshly generated key for host ``name``."""
        host = self.host(name)
        self._known[name] = generate_key(host.dir / "wrong_host_key", f"renderd-testhosts-wrong-{name}")
        self._write_known_hosts()

    def restore_known_host(self, name: str) -> None:
        """Put host ``name``'s real key back into ``known_hosts``."""
        self.host(name)
        self._known[name] = self._host_keys[name]
        self._write_known_hosts()

    # -- clients --------------------------------------------------------------------------------

    def jump_target(self, name: str) -> str:
        """Return ``user@address:port`` of host ``name``, as an inventory's ``jump_host``."""
        host = self.host(name)
        return f"{self.user}@{host.address}:{host.port}"

    def ssh_options(self, name: str) -> list[str]:
        """Return ssh options for host ``name``: this key only, strict host keys, no prompts, no ~/.ssh/config."""
        host = self.host(name)
        return [
            "-F", "/dev/null",
            "-i", str(self.identity_file),
            "-p", str(host.port),
            "-o", "IdentitiesOnly=yes",
            "-o", f"UserKnownHostsFile={self.known_hosts}",
            "-o", "GlobalKnownHostsFile=/dev/null",
            "-o", "StrictHostKeyChecking=yes",
            "-o", "BatchMode=yes",
            "-o", "ConnectTimeout=5",
        ]  # fmt: skip

    def ssh_argv(self, name: str) -> list[str]:
        """Return an ``ssh`` command line for host ``name``; append the remote command."""
        return ["ssh", *self.ssh_options(name), f"{self.user}@{self.host(name).address}"]

    def rsync_rsh(self, name: str) -> str:
        """Return the ``rsync -e`` value for host ``name`` (target it as ``user@address:path``)."""
        return shlex.join(["ssh", *self.ssh_options(name)])

    def rsync_target(self, name: str, path: str | Path) -> str:
        """Return ``user@address:path`` for rsync on host ``name``."""
        return f"{self.user}@{self.host(name).address}:{path}"

    def write_inventory(
        self, path: Path | None = None, *, overrides: Mapping[str, Mapping[str, object]] | None = None
    ) -> Path:
        """Write a renderd inventory of every host (every key spelled out) and return its path.

        ``overrides`` maps a host name to keys that replace its generated ones, e.g.
        ``{"h2": {"enabled": False}}``; a value of None drops the key.
        """
        path = self.inventory if path is None else path
        overrides = overrides or {}
        for name in overrides:
            self.host(name)
        blocks = ["# Generated by tests/sshhosts.py: throwaway test hosts on loopback addresses.\n"]
        for host in self:
            entry: dict[str, object] = {
                "name": host.name,
                "address": host.address,
                "port": host.port,
                "user": self.user,
                "identity_file": self.identity_file,
                "known_hosts": self.known_hosts,
                "host_key_policy": "strict",
                "slots": self.slots,
                "workers": self.workers,
                "work_dir": host.work_dir,
                "agent_command": self.agent_command,
                "enabled": True,
                **({"jump_host": self.jump_target(self._behind[host.name])} if host.name in self._behind else {}),
                **overrides.get(host.name, {}),
            }
            lines = [f"{k} = {_toml_value(v)}" for k, v in entry.items() if v is not None]
            blocks.append("[[hosts]]\n" + "\n".join(lines) + "\n")
        path.write_text("\n".join(blocks))
        return path

    # -- internals ------------------------------------------------------------------------------

    def _spawn(self, name: str) -> None:
        host = self._hosts[name]
        # A jump host logs at DEBUG1, where sshd records each direct-tcpip forward it opens.
        level = "DEBUG1" if name in self._behind.values() else "ERROR"
        host.config.write_text(sshd_config(host, self.authorized_keys, level, sftp=name not in self.without_sftp))
        with host.log.open("ab") as log:
            self._log_start[name] = log.tell()
            # `ip netns exec` execs sshd in the namespace: the pid stays sshd's.
            prefix = [IP, "netns", "exec", host.netns] if host.netns else []
            self._listeners[name] = subprocess.Popen(
                [*prefix, SSHD, "-D", "-e", "-f", str(host.config)],
                stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT, start_new_session=True,
            )  # fmt: skip

    def _wait_listening_retrying(self, name: str) -> None:
        # The port was free when picked but something may have bound it since: pick another.
        for attempt in range(PORT_ATTEMPTS):
            try:
                self._wait_listening(name)
                return
            except TestHostsError as exc:
                if "Address already in use" not in exc.log_tail or attempt == PORT_ATTEMPTS - 1:
                    raise
            host = self._hosts[name]
            self._hosts[name] = replace(host, port=free_port(host.address))
            self._spawn(name)

    def _wait_listening(self, name: str) -> None:
        host, proc = self._hosts[name], self._listeners[name]
        deadline = time.monotonic() + READY_TIMEOUT_S
        while True:
            if proc.poll() is not None:
                del self._listeners[name]
                tail = _log_tail(host.log, self._log_start[name])
                raise TestHostsError(f"sshd of {name} exited with {proc.returncode}", host=name, log_tail=tail)
            if _listens(proc.pid, host.address, host.port) if host.netns is None else _listens_in_ns(proc.pid, host):
                return
            if time.monotonic() > deadline:
                tail = _log_tail(host.log, self._log_start[name])
                self.stop(name)
                raise TestHostsError(
                    f"sshd of {name} is not listening on {host.address}:{host.port} after {READY_TIMEOUT_S:g}s",
                    host=name,
                    log_tail=tail,
                )
            time.sleep(0.01)

    def _session_tree(self, name: str, listener: subprocess.Popen[bytes] | None = None) -> list[psutil.Process]:
        """Return the live processes below host ``name``'s listener and below its remembered sessions."""
        listener = listener or self._listeners.get(name)
        roots: list[psutil.Process] = list(self._orphans.get(name, ()))
        if listener is not None and listener.poll() is None:
            with contextlib.suppress(psutil.Error):
                roots.append(psutil.Process(listener.pid))
        found: dict[int, psutil.Process] = {}
        for root in roots:
            if not is_alive(root):  # a dead process has no children left: init adopted them
                continue
            with contextlib.suppress(psutil.Error):
                if listener is None or root.pid != listener.pid:
                    found[root.pid] = root
                for child in root.children(recursive=True):
                    found.setdefault(child.pid, child)
        return [p for p in found.values() if is_alive(p)]

    def _write_known_hosts(self) -> None:
        lines = [f"[{h.address}]:{h.port} {self._known[h.name]}\n" for h in self]
        tmp = self.known_hosts.with_name(self.known_hosts.name + ".tmp")
        tmp.write_text("".join(lines))
        os.replace(tmp, self.known_hosts)


def _listens(pid: int, address: str, port: int) -> bool:
    try:
        conns = psutil.Process(pid).net_connections(kind="tcp4")
    except psutil.Error:
        return False
    return any(c.status == psutil.CONN_LISTEN and c.laddr == (address, port) for c in conns)


def _listens_in_ns(pid: int, host: Host) -> bool:
    # psutil sees this namespace's sockets only; /proc/PID/net/tcp lists those of PID's namespace.
    want = f"{socket.inet_aton(host.address)[::-1].hex().upper()}:{host.port:04X}"
    try:
        lines = Path(f"/proc/{pid}/net/tcp").read_text().splitlines()[1:]
    except OSError:
        return False
    return any(f[1] == want and f[3] == "0A" for f in (line.split() for line in lines))  # 0A: LISTEN


def _ensure_privsep_dir() -> None:
    # sshd refuses to start without its privilege separation directory (systemd makes it at boot).
    if not PRIVSEP_DIR.is_dir():
        PRIVSEP_DIR.mkdir(mode=0o755, parents=True, exist_ok=True)
        PRIVSEP_DIR.chmod(0o755)
