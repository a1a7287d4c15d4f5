"""systemd integration: the sd_notify client, the unit, the sysusers/tmpfiles snippets, install-service.

The unit is checked by the real ``systemd-analyze verify`` and the snippets by the real
``systemd-sysusers``/``systemd-tmpfiles`` run against a scratch root (Debian package ``systemd``,
which scripts/setup installs); sd_notify messages are read from a real datagram socket.
"""

from __future__ import annotations

import asyncio
import logging
import os
import re
import shlex
import shutil
import socket
import stat
import subprocess
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
from conftest import RENDERD, ROOT

from renderd.coordinator.sdnotify import Notifier

SYSTEMD = ROOT / "systemd"
UNIT = SYSTEMD / "renderd.service"
SYSUSERS = SYSTEMD / "renderd.sysusers"
TMPFILES = SYSTEMD / "renderd.tmpfiles"
INSTALL_SERVICE = ROOT / "scripts" / "install-service"
UNIT_EXEC = "/opt/renderd/venv/bin/renderd"
NO_SYSTEMD_ANALYZE = "systemd-analyze is not installed (Debian package 'systemd'; scripts/setup installs it)"


# --- sd_notify ---------------------------------------------------------------------------------


@pytest.fixture
def receiver(tmp_path: Path) -> Iterator[tuple[str, socket.socket]]:
    """Yield a bound AF_UNIX datagram socket standing in for systemd's notify socket."""
    path = str(tmp_path / "notify.sock")
    with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as sock:
        sock.bind(path)
        yield path, sock


def received(sock: socket.socket) -> list[str]:
    """Return every datagram already queued on ``sock``, decoded."""
    sock.setblocking(False)
    messages = []
    while True:
        try:
            messages.append(sock.recv(4096).decode())
        except BlockingIOError:
            return messages


def test_messages_are_sent_as_exact_datagrams(receiver: tuple[str, socket.socket]) -> None:
    path, sock = receiver
    notifier = Notifier(notify_socket=path, watchdog_usec=None)
    assert notifier.enabled
    assert notifier.ready()
    assert notifier.status("listening on /run/renderd/renderd.sock")
    assert notifier.status("two\nlines")
    assert notifier.watchdog()
    assert notifier.stopping()
    assert received(sock) == [
        "READY=1",
        "STATUS=listening on /run/renderd/renderd.sock",
        "STATUS=two lines",
        "WATCHDOG=1",
        "STOPPING=1",
    ]


def test_reloading_carries_the_monotonic_clock(receiver: tuple[str, socket.socket]) -> None:
    path, sock = receiver
    before = time.monotonic_ns() // 1000
    assert Notifier(notify_socket=path).reloading()
    after = time.monotonic_ns() // 1000
    [message] = received(sock)
    first, second = message.split("\n")
    assert first == "RELOADING=1"
    key, _, usec = second.partition("=")
    assert key == "MONOTONIC_USEC"
    assert before <= int(usec) <= after


def test_abstract_socket() -> None:
    name = f"renderd-test-{uuid.uuid4().hex}"
    with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as sock:
        sock.bind("\0" + name)
        assert Notifier(notify_socket="@" + name).ready()
        assert received(sock) == ["READY=1"]


async def test_without_a_socket_everything_is_a_no_op() -> None:
    notifier = Notifier(notify_socket=None, watchdog_usec=60_000_000)
    assert not notifier.enabled
    assert not notifier.ready()
    assert not notifier.status("x")
    assert not notifier.stopping()
    assert not notifier.reloading()
    assert not notifier.watchdog()
    assert notifier.watchdog_interval() is None
    # Returns at once although the stop event is never set.
    await asyncio.wait_for(notifier.run_watchdog(asyncio.Event()), 1)


def test_send_errors_are_logged_not_raised(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    notifier = Notifier(notify_socket=str(tmp_path / "gone.sock"))
    with caplog.at_level(logging.DEBUG, logger="renderd.coordinator.sdnotify"):
        assert not notifier.ready()
    assert "READY=1" in caplog.text and "gone.sock" in caplog.text


@pytest.mark.parametrize(
    ("environ", "expected"),
    [
        ({}, Notifier(None, None)),
        ({"NOTIFY_SOCKET": ""}, Notifier(None, None)),
        ({"NOTIFY_SOCKET": "/run/systemd/notify"}, Notifier("/run/systemd/notify", None)),
        ({"NOTIFY_SOCKET": "@sd-notify"}, Notifier("@sd-notify", None)),
        ({"NOTIFY_SOCKET": "relative/notify"}, Notifier(None, None)),
        ({"NOTIFY_SOCKET": "/n", "WATCHDOG_USEC": "60000000"}, Notifier("/n", 60_000_000)),
        (
            {"NOTIFY_SOCKET": "/n", "WATCHDOG_USEC": "60000000", "WATCHDOG_PID": "4242"},
            Notifier("/n", 60_000_000),
        ),
        ({"NOTIFY_SOCKET": "/n", "WATCHDOG_USEC": "60000000", "WATCHDOG_PID": "4243"}, Notifier("/n", None)),
        ({"NOTIFY_SOCKET": "/n", "WATCHDOG_USEC": "60000000", "WATCHDOG_PID": "x"}, Notifier("/n", None)),
        ({"NOTIFY_SOCKET": "/n", "WATCHDOG_USEC": "0"}, Notifier("/n", None)),
        ({"NOTIFY_SOCKET": "/n", "WATCHDOG_USEC": "-5"}, Notifier("/n", None)),
        ({"NOTIFY_SOCKET": "/n", "WATCHDOG_USEC": "soon"}, Notifier("/n", None)),
    ],
)
def test_from_environ(environ: dict[str, str], expected: Notifier) -> None:
    assert Notifier.from_environ(environ, pid=4242) == expected


def test_from_environ_defaults_to_our_own_pid() -> None:
    environ = {"NOTIFY_SOCKET": "/n", "WATCHDOG_USEC": "2000000"}
    assert Notifier.from_environ({**environ, "WATCHDOG_PID": str(os.getpid())}).watchdog_usec == 2_000_000
    assert Notifier.from_environ({**environ, "WATCHDOG_PID": str(os.getpid() + 1)}).watchdog_usec is None


def test_watchdog_interval_is_half_the_timeout() -> None:
    assert Notifier("/n", 60_000_000).watchdog_interval() == 30.0
    assert Notifier("/n", 1_000).watchdog_interval() == 0.0005
    assert Notifier("/n", None).watchdog_interval() is None


async def test_run_watchdog_pings_until_stopped(receiver: tuple[str, socket.socket]) -> None:
    path, sock = receiver
    stop = asyncio.Event()
    async with asyncio.timeout(5), asyncio.TaskGroup() as tg:
        tg.create_task(Notifier(path, 40_000).run_watchdog(stop))  # a ping every 20 ms
        await asyncio.sleep(0.2)
        stop.set()
    pings = received(sock)
    assert len(pings) >= 3
    assert set(pings) == {"WATCHDOG=1"}


async def test_run_watchdog_stops_without_waiting_out_the_interval(
    receiver: tuple[str, socket.socket],
) -> None:
    path, sock = receiver
    stop = asyncio.Event()
    started = time.monotonic()
    async with asyncio.TaskGroup() as tg:
        tg.create_task(Notifier(path, 60_000_000).run_watchdog(stop))
        await asyncio.sleep(0.05)
        stop.set()
    assert time.monotonic() - started < 5
    assert received(sock) == ["WATCHDOG=1"]


# --- the unit ----------------------------------------------------------------------------------


def unit_settings(text: str) -> dict[str, dict[str, list[str]]]:
    """Parse a unit file into section -> key -> values (keys may repeat)."""
    sections: dict[str, dict[str, list[str]]] = {}
    current: dict[str, list[str]] = {}
    for raw in text.splitlines():
        line = raw.strip()
        if not line or line.startswith(("#", ";")):
            continue
        if line.startswith("["):
            current = sections.setdefault(line.strip("[]"), {})
            continue
        key, sep, value = line.partition("=")
        assert sep, f"not a setting: {raw!r}"
        current.setdefault(key.strip(), []).append(value.strip())
    return sections


def verify(unit: Path) -> list[str]:
    """Run ``systemd-analyze verify`` on ``unit``; return its complaints about renderd's unit.

    verify also loads the units ours names (network-online.target, multi-user.target) and their
    dependencies; lines about those host units are not ours and are dropped. Unknown keys and bad
    values exit 0 with a line on stderr, hence the check on stderr and not only the exit code.
    """
    analyze = shutil.which("systemd-analyze")
    assert analyze is not None
    result = subprocess.run([analyze, "verify", "--man=no", str(unit)], capture_output=True, text=True, timeout=60)
    ours = [line for line in result.stderr.splitlines() if "renderd" in line]
    if result.returncode != 0 and not ours:
        ours = result.stderr.splitlines() or [f"exit status {result.returncode}"]
    return ours


def runnable_copy(tmp_path: Path, extra: str = "") -> Path:
    """Copy the unit into ``tmp_path`` with ExecStart pointing at an executable that exists here.

    verify rejects an ExecStart binary that is missing, and /opt/renderd/venv only exists on a
    host where scripts/install-service ran.
    """
    exe = str(RENDERD) if RENDERD.exists() else "/bin/true"
    text = UNIT.read_text()
    assert f"ExecStart={UNIT_EXEC} " in text
    copy = tmp_path / "renderd.service"
    copy.write_text(text.replace(f"ExecStart={UNIT_EXEC} ", f"ExecStart={exe} ") + extra)
    return copy


@pytest.mark.skipif(shutil.which("systemd-analyze") is None, reason=NO_SYSTEMD_ANALYZE)
def test_unit_passes_systemd_analyze_verify(tmp_path: Path) -> None:
    assert verify(runnable_copy(tmp_path)) == []


@pytest.mark.skipif(shutil.which("systemd-analyze") is None, reason=NO_SYSTEMD_ANALYZE)
def test_verify_catches_bad_settings(tmp_path: Path) -> None:
    """The check above would see a typo: unknown keys and bad values only show on stderr."""
    complaints = verify(runnable_copy(tmp_path, "\n[Service]\nProtectHome=maybe\nNoSuchSetting=1\n"))
    assert any("NoSuchSetting" in line for line in complaints), complaints
    assert any("maybe" in line for line in complaints), complaints


def test_unit_keeps_its_contract() -> None:
    settings = unit_settings(UNIT.read_text())
    service = {key: values[-1] for key, values in settings["Service"].items()}
    expected = {
        "Type": "notify",
        "NotifyAccess": "main",
        "ExecStart": f"{UNIT_EXEC} daemon --config /etc/renderd/renderd.toml",
        "ExecReload": "/bin/kill -HUP $MAINPID",
        "User": "renderd",
        "Group": "renderd",
        "RuntimeDirectory": "renderd",
        "RuntimeDirectoryMode": "0750",
        "StateDirectory": "renderd",
        "WatchdogSec": "60",
        "Restart": "on-failure",
        "TimeoutStopSec": "120",
        "KillMode": "mixed",
        "UMask": "0027",
        "NoNewPrivileges": "yes",
        "ProtectSystem": "strict",
        "PrivateTmp": "yes",
        "ProtectHome": "read-only",
        # Chromium's confinement: unshare --user --net, and its own sandbox's user/PID/net namespaces.
        "RestrictNamespaces": "user pid net",
        "RestrictAddressFamilies": "AF_UNIX AF_INET AF_INET6 AF_NETLINK",
        "SystemCallArchitectures": "native",
        "ProtectProc": "invisible",
        "DevicePolicy": "closed",
        "DeviceAllow": "char-drm rw",
    }
    assert {key: service.get(key) for key in expected} == expected
    # Chromium's V8 JIT needs writable+executable memory.
    assert "MemoryDenyWriteExecute" not in service
    assert settings["Install"]["WantedBy"] == ["multi-user.target"]


# systemd-analyze's exposure score of the unit before Chromium's confinement (issue 17).
EXPOSURE_BEFORE = 4.2


@pytest.mark.skipif(shutil.which("systemd-analyze") is None, reason=NO_SYSTEMD_ANALYZE)
def test_exposure_score_is_lower_than_before(tmp_path: Path) -> None:
    """The unit's sandbox, as systemd itself scores it (lower is better; 10 is no sandbox)."""
    result = subprocess.run(
        ["systemd-analyze", "security", "--offline=true", "--no-pager", str(runnable_copy(tmp_path))],
        capture_output=True,
        text=True,
        timeout=60,
    )
    found = re.search(r"Overall exposure level for renderd.service: ([0-9.]+)", result.stdout)
    assert found, result.stdout + result.stderr
    score = float(found.group(1))
    print(f"systemd-analyze security exposure: {score} (was {EXPOSURE_BEFORE})")
    assert score < EXPOSURE_BEFORE


def test_read_write_paths_are_created_by_tmpfiles() -> None:
    service = unit_settings(UNIT.read_text())["Service"]
    writable = {path.lstrip("-") for value in service["ReadWritePaths"] for path in value.split()}
    created = {fields[1] for fields in snippet_lines(TMPFILES) if fields[0] == "d"}
    assert writable and writable <= created
    # PrivateTmp= hides the host's /tmp and /var/tmp: a writable path there would never be seen.
    assert not any(path.startswith(("/tmp/", "/var/tmp/")) for path in writable)


# --- sysusers and tmpfiles ---------------------------------------------------------------------


def snippet_lines(path: Path) -> list[list[str]]:
    """Split the non-comment lines of a sysusers.d/tmpfiles.d snippet into fields."""
    return [shlex.split(line) for line in path.read_text().splitlines() if line.strip() and line[0] != "#"]


def test_snippets_parse() -> None:
    assert snippet_lines(SYSUSERS) == [["u", "renderd", "-", "renderd render coordinator", "/var/lib/renderd"]]
    for kind, path, mode, user, group, age in snippet_lines(TMPFILES):
        assert kind == "d" and path.startswith("/") and age == "-"
        assert int(mode, 8) <= 0o7777 and user and group


@pytest.mark.skipif(
    shutil.which("systemd-sysusers") is None or shutil.which("systemd-tmpfiles") is None,
    reason="systemd-sysusers/systemd-tmpfiles are not installed (Debian package 'systemd')",
)
@pytest.mark.skipif(os.geteuid() != 0, reason="systemd-tmpfiles can only chown to renderd as root")
def test_snippets_apply_to_a_scratch_root(tmp_path: Path) -> None:
    """Create the user and directories in ``tmp_path`` with the real tools, never in this host's /etc."""
    root = tmp_path / "root"
    (root / "etc").mkdir(parents=True)
    for tool, args, snippet in [
        ("systemd-sysusers", [], SYSUSERS),
        ("systemd-tmpfiles", ["--create"], TMPFILES),
    ]:
        result = subprocess.run(
            [tool, f"--root={root}", *args, "-"],
            input=snippet.read_text(),
            capture_output=True,
            text=True,
            timeout=60,
        )
        # systemd-sysusers reports each account it creates; anything else is a complaint.
        complaints = [line for line in result.stderr.splitlines() if not line.startswith("Creating ")]
        assert (result.returncode, complaints) == (0, []), tool
    passwd = {line.split(":")[0]: line.split(":") for line in (root / "etc/passwd").read_text().splitlines()}
    group = {line.split(":")[0]: line.split(":") for line in (root / "etc/group").read_text().splitlines()}
    user = passwd["renderd"]
    assert user[4:] == ["renderd render coordinator", "/var/lib/renderd", "/usr/sbin/nologin"]
    assert user[3] == group["renderd"][2]
    uid, gid = int(user[2]), int(user[3])
    for _, path, mode, owner, grp, _ in snippet_lines(TMPFILES):
        st = (root / path.lstrip("/")).stat()
        assert stat.S_ISDIR(st.st_mode)
        assert stat.S_IMODE(st.st_mode) == int(mode, 8), path
        assert st.st_uid == (0 if owner == "root" else uid), path
        assert st.st_gid == (0 if grp == "root" else gid), path


# --- scripts/install-service -------------------------------------------------------------------

TOUCHED = [
    "/etc/systemd/system/renderd.service",
    "/etc/sysusers.d/renderd.conf",
    "/etc/tmpfiles.d/renderd.conf",
    "/etc/renderd",
    "/etc/passwd",
    "/srv/renderd",
    "/var/lib/renderd",
]


def snapshot() -> dict[str, int | None]:
    """Return the modification time of every path install-service writes (None: absent)."""
    return {path: os.stat(path).st_mtime_ns if os.path.exists(path) else None for path in TOUCHED}


def run_install_service(*args: str) -> subprocess.CompletedProcess[str]:
    """Run scripts/install-service with ``args`` and the default interpreter."""
    env = {**os.environ, "PYTHON": "python3"}
    return subprocess.run([str(INSTALL_SERVICE), *args], capture_output=True, text=True, timeout=60, env=env, cwd="/")


def test_install_service_dry_run_prints_the_steps_and_changes_nothing(tmp_path: Path) -> None:
    prefix = tmp_path / "prefix"
    before = snapshot()
    result = run_install_service("--dry-run", "--prefix", str(prefix))
    assert result.returncode == 0, result.stderr
    assert snapshot() == before
    assert not prefix.exists()
    steps = [line for line in result.stdout.splitlines() if line.startswith("+ ")]
    venv = prefix / "venv"
    expected = [
        f"+ python3 -m venv {venv}",
        f"+ install -D -m 0644 {SYSUSERS} /etc/sysusers.d/renderd.conf",
        f"+ install -D -m 0644 {TMPFILES} /etc/tmpfiles.d/renderd.conf",
        f"+ install -D -m 0644 {UNIT} /etc/systemd/system/renderd.service",
    ]
    for step in expected:
        assert step in steps, result.stdout
    # Built from a copy of the sources, so that a stale build/ in the checkout cannot reach the venv.
    copy = next(step for step in steps if step.startswith(f"+ cp -a {ROOT}/pyproject.toml "))
    src = copy.split()[-1].rstrip("/")
    assert f"+ {venv}/bin/python -m pip install --quiet --disable-pip-version-check --upgrade {src}" in steps
    assert not Path(src).exists()
    rewrite = next(step for step in steps if step.startswith("+ sed -i "))
    assert f"ExecStart={venv}/" in rewrite and rewrite.endswith(" /etc/systemd/system/renderd.service")
    # Non-editable: the service must not follow edits in the checkout.
    assert not any(" -e " in step or "--editable" in step for step in steps)
    assert any("useradd" in step or "systemd-sysusers" in step for step in steps)
    if Path("/run/systemd/system").is_dir():
        assert "+ systemctl daemon-reload" in steps
    else:
        assert not any("systemctl" in step for step in steps)
        assert "not running as PID 1" in result.stdout


def test_install_service_default_prefix_keeps_the_unit_as_is(tmp_path: Path) -> None:
    result = run_install_service("--dry-run", "--no-start")
    assert result.returncode == 0, result.stderr
    assert "+ python3 -m venv /opt/renderd/venv" in result.stdout or "/opt/renderd/venv exists" in result.stdout
    assert "+ sed " not in result.stdout
    assert "+ systemctl enable" not in result.stdout and "+ systemctl restart" not in result.stdout


@pytest.mark.parametrize("args", [["--prefix", "relative/dir"], ["--prefix", "/opt/with space"], ["--bogus"]])
def test_install_service_rejects_bad_arguments(args: list[str]) -> None:
    result = run_install_service("--dry-run", *args)
    assert result.returncode == 2
    assert result.stderr.startswith("install-service: ")
