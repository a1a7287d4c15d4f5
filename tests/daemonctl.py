"""A real `renderd daemon` process for tests, with its own config, state dir and socket."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import time
from pathlib import Path
from typing import Any

from conftest import renderd_cmd, run_renderd

HOSTS = """
[[hosts]]
name = "local"
address = "local"
slots = {slots}
workers = 1
"""


class Daemon:
    """A renderd daemon process with its own config, state dir and socket."""

    def __init__(self, root: Path, slots: int = 2, hosts_file: Path | None = None, timeouts: str = "") -> None:
        """``timeouts``: extra TOML lines for ``[timeouts]``; further tables may follow them."""
        self.root = root
        self.socket = root / "renderd.sock"
        self.config = root / "renderd.toml"
        self.hosts = hosts_file or root / "hosts.toml"
        self.log = root / "daemon.log"
        self.proc: subprocess.Popen[bytes] | None = None
        self.config.write_text(
            f'[daemon]\nsocket = "{self.socket}"\nstate_dir = "{root / "state"}"\nhosts_file = "{self.hosts}"\n'
            f'log_level = "info"\nwatchdog = false\n[timeouts]\nshutdown = "5s"\n{timeouts}'
        )
        if hosts_file is None:
            self.hosts.write_text(HOSTS.format(slots=slots))

    def allow_uids(self, *uids: int) -> None:
        """Let ``uids`` use the control socket besides root (start with ``socket_mode="0666"``)."""
        text = self.config.read_text()
        self.config.write_text(text.replace("[daemon]\n", f"[daemon]\nallowed_uids = {list(uids)}\n", 1))

    def start(self, socket_mode: str = "0660", env: dict[str, str] | None = None) -> None:
        """``env``: variables added to the daemon's environment."""
        log = self.log.open("ab")
        self.proc = subprocess.Popen(
            renderd_cmd("daemon", "--config", self.config, "--socket-mode", socket_mode),
            stdout=log,
            stderr=log,
            env={**os.environ, **(env or {})},
        )
        log.close()
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            if self.ctl("list").returncode == 0:
                return
            assert self.proc.poll() is None, self.log.read_text()
            time.sleep(0.2)
        raise AssertionError("daemon did not start: " + self.log.read_text())

    def ctl(self, *args: str | os.PathLike[str], timeout: float = 180) -> subprocess.CompletedProcess[str]:
        """Run a client command against this daemon."""
        return run_renderd(*args, "--socket", self.socket, timeout=timeout)

    def json(self, *args: str | os.PathLike[str]) -> Any:
        r = self.ctl(*args, "--json")
        assert r.returncode == 0, r.stderr
        return json.loads(r.stdout)

    def kill(self, sig: int = signal.SIGKILL) -> None:
        assert self.proc is not None
        self.proc.send_signal(sig)
        self.proc.wait(timeout=60)

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.kill(signal.SIGTERM)


def wait_state(d: Daemon, job: str, states: tuple[str, ...], timeout: float = 240) -> dict[str, Any]:
    """Poll `renderd status` until the job is in one of ``states``."""
    deadline = time.monotonic() + timeout
    while True:
        status: dict[str, Any] = d.json("status", job)
        if status["job"]["state"] in states:
            return status
        assert time.monotonic() < deadline, f"job {job} never reached {states}: {status['job']}"
        time.sleep(0.3)


_CLIENT = """
import json, socket, sys
try:
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as s:
        s.settimeout(float(sys.argv[3]))
        s.connect(sys.argv[1])
        try:
            s.sendall(sys.argv[2].encode())
        except (BrokenPipeError, ConnectionResetError):
            pass
        sys.stdout.buffer.write(s.makefile("rb").readline())
except BaseException as exc:
    print(json.dumps({"child_error": repr(exc)}))
"""


def request_as(uid: int, gid: int, path: Path, line: bytes, *, timeout: float = 60) -> dict[str, Any]:
    """Send one control request as ``uid`` and return the reply (``child_error``: the client failed).

    The child execs the system Python (the venv may be unreadable to ``uid``). It must exec, not
    just fork: a forked copy of this process would hold the pipes of a subprocess the daemon is
    starting in another thread at that moment, and the daemon's event loop would wait for them.
    """
    r = subprocess.run(
        ["/usr/bin/python3", "-c", _CLIENT, str(path), line.decode(), str(timeout)],
        user=uid, group=gid, extra_groups=[], capture_output=True, timeout=timeout + 30, cwd="/",
    )  # fmt: skip
    result: dict[str, Any] = json.loads(r.stdout or b'{"child_error": "no output"}')
    return result
