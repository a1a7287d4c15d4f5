"""renderd as installed, not as checked out: a non-editable venv outside the checkout, run from there.

Every other test runs the editable checkout, which finds any file under renderd/ whether the wheel
ships it or not. Here one venv per session is made the way operators make it: as root by
``scripts/install-service --root R --prefix R/opt/renderd`` (the unit, config and directories
under a scratch root R, the renderd user on this machine), otherwise (not root) a venv with the
wheel of tests/conftest.py ``pip install``ed into it. Its ``renderd`` then runs with PYTHONPATH
cleared, from a directory outside the checkout:

- ``renderd render`` of examples/hyperframes-gsap (a copy), against the checkout's render of it;
- ``renderd hosts install`` onto a throwaway sshd host (it packs the installed renderd into a
  wheel: there is no checkout to build from), then a daemon from the venv fans a job out to it;
- the daemon started as systemd would start the installed unit (see ``test_the_service_...``).
"""

from __future__ import annotations

import contextlib
import grp
import hashlib
import json
import os
import pwd
import re
import shlex
import shutil
import signal
import socket
import subprocess
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
from conftest import EXAMPLES, FIXTURES, ROOT, decode_index, run_renderd
from daemonctl import Daemon
from sshhosts import TestHosts
from videotools import decode_frames, ffprobe

pytestmark = pytest.mark.browser

IS_ROOT = os.geteuid() == 0
SYSTEM_PATH = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"  # systemd's default PATH
INSTALL_TIMEOUT_S = 900


@dataclass(frozen=True)
class Installed:
    """A renderd venv installed outside the checkout."""

    root: Path  # scratch root; with install-service also holds etc/, var/lib/, srv/
    venv: Path
    by_install_service: bool

    @property
    def renderd(self) -> Path:
        return self.venv / "bin" / "renderd"

    def env(self, **extra: str) -> dict[str, str]:
        """The environment a user of the venv has: nothing that points into the checkout."""
        drop = ("PYTHONPATH", "PYTHONHOME", "VIRTUAL_ENV", "RENDERD_SOCKET", "PYTHONSTARTUP")
        env = {k: v for k, v in os.environ.items() if k not in drop}
        env["PATH"] = f"{self.venv / 'bin'}:{SYSTEM_PATH}"
        return {**env, **extra}

    def run(self, *args: str | os.PathLike[str], cwd: Path, timeout: float = 300) -> subprocess.CompletedProcess[str]:
        """Run the venv's renderd from ``cwd``."""
        argv = [str(self.renderd), *map(str, args)]
        return subprocess.run(argv, cwd=cwd, env=self.env(), capture_output=True, text=True, timeout=timeout)


def _user_exists(name: str) -> bool:
    try:
        pwd.getpwnam(name)
        return True
    except KeyError:
        return False


@pytest.fixture(scope="session")
def installed(renderd_wheel: Path) -> Iterator[Installed]:
    # Not under pytest's 0700 tmp: the renderd user must reach the venv and the directories.
    root = Path(tempfile.mkdtemp(prefix="rdi-", dir="/tmp"))
    os.chmod(root, 0o755)
    had_user = _user_exists("renderd")
    try:
        clean = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "VIRTUAL_ENV")}
        clean["PATH"] = SYSTEM_PATH
        if IS_ROOT:
            venv = root / "opt" / "renderd" / "venv"
            argv = [ROOT / "scripts" / "install-service", "--root", root, "--prefix", venv.parent, "--no-start"]
        else:
            venv = root / "venv"
            subprocess.run(["python3", "-m", "venv", venv], check=True, env=clean, timeout=300)
            argv = [venv / "bin" / "python", "-m", "pip", "install", "-q", renderd_wheel]
        r = subprocess.run(argv, cwd=root, env=clean, capture_output=True, text=True, timeout=INSTALL_TIMEOUT_S)
        assert r.returncode == 0, r.stdout + r.stderr
        yield Installed(root, venv, IS_ROOT)
    finally:
        shutil.rmtree(root, ignore_errors=True)
        if IS_ROOT and not had_user and _user_exists("renderd"):
            subprocess.run(["userdel", "renderd"], check=False, capture_output=True, timeout=60)
            with contextlib.suppress(KeyError):
                grp.getgrnam("renderd")
                subprocess.run(["groupdel", "renderd"], check=False, capture_output=True, timeout=60)


@pytest.fixture
def work(installed: Installed) -> Iterator[Path]:
    """A scratch directory outside the checkout, readable by all."""
    path = Path(tempfile.mkdtemp(prefix="rdw-", dir="/tmp"))
    os.chmod(path, 0o755)
    yield path
    shutil.rmtree(path, ignore_errors=True)


def _frame_hashes(path: Path, width: int, height: int) -> list[str]:
    return [hashlib.sha256(f).hexdigest() for f in decode_frames(path, width, height)]


def _frame_count(path: Path) -> int:
    data = ffprobe(path, "-count_frames", "-select_streams", "v:0", "-show_entries", "stream=nb_read_frames")
    return int(data["streams"][0]["nb_read_frames"])


def _psnr_per_frame(a: Path, b: Path) -> list[float]:
    """PSNR (dB) of every frame of ``a`` against ``b``, by ffmpeg; inf for identical frames."""
    out = subprocess.run(
        ["ffmpeg", "-hide_banner", "-nostdin", "-i", str(a), "-i", str(b), "-lavfi", "psnr=stats_file=-",
         "-f", "null", "-"],
        check=True, capture_output=True, text=True, timeout=300,
    ).stdout  # fmt: skip
    return [float(m) for m in re.findall(r"psnr_avg:(\S+)", out)]


def test_the_installed_renderd_is_the_venvs_not_the_checkouts(installed: Installed, work: Path) -> None:
    r = subprocess.run(
        [installed.venv / "bin" / "python", "-c", "import renderd, sys; print(renderd.__file__); print(sys.path)"],
        cwd=work, env=installed.env(), capture_output=True, text=True, timeout=60,
    )  # fmt: skip
    assert r.returncode == 0, r.stderr
    module = Path(r.stdout.splitlines()[0]).resolve()
    assert module.is_relative_to(installed.venv.resolve()), module
    assert str(ROOT) not in r.stdout, r.stdout
    # Not editable: no .pth or finder that points back at a source tree.
    site = module.parent.parent
    assert not [p for p in site.glob("*.pth") if str(ROOT) in p.read_text()]


def test_the_installed_renderd_renders_a_hyperframes_page(installed: Installed, work: Path) -> None:
    comp = shutil.copytree(EXAMPLES / "hyperframes-gsap", work / "hyperframes-gsap")
    r = installed.run("render", "hyperframes-gsap", "-o", "out.mp4", cwd=work)
    assert r.returncode == 0, r.stdout + r.stderr
    assert _frame_count(work / "out.mp4") == 120
    reference = work / "reference.mp4"
    r = run_renderd("render", comp, "-o", reference)
    assert r.returncode == 0, r.stderr
    # Same engine, same settings; the example's gradients may dither by a bit between runs.
    psnr = _psnr_per_frame(work / "out.mp4", reference)
    assert len(psnr) == 120
    assert min(psnr) > 45, sorted(psnr)[:5]


class InstalledDaemon(Daemon):
    """tests/daemonctl.py's Daemon, run from the installed venv in a directory outside the checkout."""

    def __init__(self, installed: Installed, root: Path, hosts_file: Path) -> None:
        self.installed = installed
        super().__init__(root, hosts_file=hosts_file)

    def start(self, socket_mode: str = "0660") -> None:
        with self.log.open("ab") as log:
            self.proc = subprocess.Popen(
                [self.installed.renderd, "daemon", "--config", self.config, "--socket-mode", socket_mode],
                cwd=self.root, env=self.installed.env(), stdout=log, stderr=log,
            )  # fmt: skip
        deadline = time.monotonic() + 30
        while self.ctl("list").returncode != 0:
            assert self.proc.poll() is None, self.log.read_text()
            assert time.monotonic() < deadline, self.log.read_text()
            time.sleep(0.2)

    def ctl(self, *args: str | os.PathLike[str], timeout: float = 180) -> subprocess.CompletedProcess[str]:
        return self.installed.run(*args, "--socket", self.socket, cwd=self.root, timeout=timeout)


def test_hosts_install_from_the_venv_then_a_fan_out_job_matches_a_local_render(
    installed: Installed, work: Path
) -> None:
    with TestHosts(work / "ssh", 1, agent_command=["false"], slots=2) as hosts:
        d = InstalledDaemon(installed, work, hosts.inventory)
        r = installed.run("hosts", "install", "h1", "--config", d.config, "--json", cwd=work, timeout=INSTALL_TIMEOUT_S)
        assert r.returncode == 0, r.stdout + r.stderr
        (report,) = json.loads(r.stdout)["hosts"]
        command = report["agent_command"]
        assert command == [str(hosts.host("h1").work_dir / "venv" / "bin" / "renderd"), "agent"], report
        # What went to the host is the installed renderd, data files and all.
        host_fonts = list(
            (hosts.host("h1").work_dir / "venv").glob(
                "lib/python3*/site-packages/renderd/engine/vendor/hyperframes/fonts/fonts.json"
            )
        )
        assert len(host_fonts) == 1, host_fonts
        hosts.write_inventory(overrides={"h1": {"agent_command": command}})
        d.start()
        try:
            comp = shutil.copytree(FIXTURES / "frame-index-gsap", work / "frame-index-gsap")
            out = work / "fanned.mp4"
            r = d.ctl(
                "submit", comp, "-o", out, "--frames", "0:60", "--chunks", "3", "--frame-format", "png", "--wait",
                timeout=300,
            )  # fmt: skip
            assert r.returncode == 0, r.stdout + r.stderr + d.log.read_text()[-3000:]
            job = d.json("list")["jobs"][0]["id"]
            attempts = d.json("status", job)["attempts"]
            assert {a["host"] for a in attempts} == {"h1"}, attempts
            assert sorted(a["chunk_index"] for a in attempts if a["outcome"] == "verified") == [0, 1, 2], attempts
        finally:
            d.stop()
    local = work / "local.mp4"
    r = installed.run(
        "render",
        comp,
        "-o",
        local,
        "--frames",
        "0:60",
        "--chunks",
        "3",
        "--frame-format",
        "png",
        "--workers",
        "1",
        cwd=work,
    )
    assert r.returncode == 0, r.stderr
    # Gradient-free fixture, same chunk boundaries and PNG frames: identical decoded frames.
    assert _frame_hashes(out, 320, 240) == _frame_hashes(local, 320, 240)
    assert [decode_index(f, 320) for f in decode_frames(out, 320, 240)] == list(range(60))


# --- the service, as systemd would start the installed unit -------------------------------------


def _unit(path: Path) -> dict[str, str]:
    """The [Service] settings of a unit file (last assignment wins, as in systemd)."""
    settings: dict[str, str] = {}
    section = ""
    for line in path.read_text().splitlines():
        line = line.strip()
        if line.startswith("["):
            section = line
        elif section == "[Service]" and "=" in line and not line.startswith("#"):
            key, value = line.split("=", 1)
            settings[key.strip()] = value.strip()
    return settings


def _receive(sock: socket.socket, want: str, timeout: float) -> list[str]:
    """Read sd_notify datagrams until one holds ``want``; return every assignment read."""
    seen: list[str] = []
    deadline = time.monotonic() + timeout
    while want not in seen:
        left = deadline - time.monotonic()
        assert left > 0, f"no {want} from the daemon; got {seen}"
        sock.settimeout(left)
        seen += sock.recv(4096).decode().splitlines()
    return seen


@pytest.mark.skipif(not IS_ROOT, reason="install-service and the renderd user need root")
def test_the_service_as_installed_by_install_service_renders_a_submitted_job(installed: Installed) -> None:
    """Start the installed unit's ExecStart= the way systemd would, without systemd as PID 1.

    Emulated from the unit: User=/Group= (setpriv, with the user's groups), NoNewPrivileges=,
    an empty CapabilityBoundingSet=, UMask=, RuntimeDirectory= (made 0750 for the user),
    the notify socket (Type=notify: READY=1 before a client is let in, STOPPING=1 on SIGTERM),
    WATCHDOG_USEC from WatchdogSec=, HOME of the user, systemd's PATH, and SIGTERM for a stop.
    The scratch root R stands for /: the / paths in the command line and in the installed config
    are mapped below R (systemd would need no mapping). Not covered: the sandbox
    (ProtectSystem=, ProtectHome=, PrivateTmp=, ReadWritePaths=), Restart=, the watchdog firing,
    ExecReload=, the journal, systemd-sysusers/-tmpfiles themselves (tests/test_systemd.py).
    """
    r = installed.root
    unit = _unit(r / "etc" / "systemd" / "system" / "renderd.service")
    assert unit["Type"] == "notify" and unit["User"] == "renderd" and unit["RuntimeDirectory"] == "renderd"
    mapping = {p: str(r) + p for p in ("/etc/renderd", "/var/lib/renderd", "/srv/renderd", "/run/renderd")}

    def mapped(text: str) -> str:
        for old, new in mapping.items():
            text = re.sub(rf"(?<![\w/]){re.escape(old)}(?=/|\"|$|\s)", new, text)
        return text

    argv = [mapped(a) for a in shlex.split(unit["ExecStart"])]
    assert argv[0] == str(installed.renderd), argv
    config = r / "etc" / "renderd" / "renderd.toml"
    config.write_text(mapped(config.read_text()))
    # The operator's inventory: the example's hosts are placeholders; this machine renders.
    (r / "etc" / "renderd" / "hosts.toml").write_text('[[hosts]]\nname = "local"\naddress = "local"\nslots = 2\n')
    check = installed.run("config", "check", "--config", config, cwd=r)
    assert check.returncode == 0, check.stdout + check.stderr
    user = pwd.getpwnam(unit["User"])
    run_dir = Path(mapping["/run/renderd"])
    run_dir.mkdir(mode=0o750, parents=True)
    os.chown(run_dir, user.pw_uid, grp.getgrnam(unit["Group"]).gr_gid)
    notify_path = r / "notify.sock"
    with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as notify:
        notify.bind(str(notify_path))
        os.chmod(notify_path, 0o666)
        env = {
            "PATH": SYSTEM_PATH, "LANG": "C.UTF-8", "HOME": mapped(user.pw_dir), "USER": user.pw_name,
            "LOGNAME": user.pw_name, "SHELL": user.pw_shell, "NOTIFY_SOCKET": str(notify_path),
            "WATCHDOG_USEC": str(int(unit["WatchdogSec"]) * 1_000_000),
        }  # fmt: skip
        log = (r / "daemon.log").open("wb")
        proc = subprocess.Popen(
            ["setpriv", f"--reuid={user.pw_uid}", f"--regid={unit['Group']}", "--init-groups", "--no-new-privs",
             "--bounding-set=-all", "--", *argv],
            cwd="/", env=env, umask=int(unit["UMask"], 8), stdout=log, stderr=log, stdin=subprocess.DEVNULL,
        )  # fmt: skip
        try:
            _receive(notify, "READY=1", 60)
            socket_path = Path(mapping["/run/renderd"]) / "renderd.sock"
            assert socket_path.is_socket()
            comp = shutil.copytree(FIXTURES / "frame-index-gsap", Path(mapping["/srv/renderd"]) / "comp")
            out = Path(mapping["/srv/renderd"]) / "out.mp4"
            sub = installed.run(
                "submit", comp, "-o", out, "--frames", "0:60", "--socket", socket_path, "--wait", cwd=r, timeout=300
            )
            assert sub.returncode == 0, sub.stdout + sub.stderr + (r / "daemon.log").read_text()[-3000:]
            assert [decode_index(f, 320) for f in decode_frames(out, 320, 240)] == list(range(60))
            st = out.stat()
            assert st.st_uid == user.pw_uid and st.st_mode & 0o777 == 0o640, (st.st_uid, oct(st.st_mode))
            assert any(Path(mapping["/var/lib/renderd"]).iterdir()), "no job store in the state directory"
            proc.send_signal(signal.SIGTERM)
            _receive(notify, "STOPPING=1", 30)
            assert proc.wait(timeout=int(unit["TimeoutStopSec"])) == 0, (r / "daemon.log").read_text()[-3000:]
        finally:
            if proc.poll() is None:
                proc.kill()
                proc.wait(timeout=30)
            log.close()
