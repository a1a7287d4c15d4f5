"""The daemon's client commands start light: they import the socket client, not the renderer.

`renderd submit` is typed by a person waiting for a job id, and its cost is mostly Python start
and imports. Each command here runs as a real process (against a real daemon for the commands
that talk to it) with `PYTHONPROFILEIMPORTTIME=1`, and the modules it imported are read from that
report: what is asserted is which modules never load, not how long anything took.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import pytest
from conftest import FIXTURES, run_renderd
from daemonctl import Daemon

# What a client command never needs: the browser, the progress bar, the network fetcher, process
# tools, the event loop (and ssl with it), SSH, TOML, and renderd's renderer, preparer, composition
# loader, config and coordinator internals.
HEAVY_PACKAGES = ("playwright", "rich", "httpx", "psutil", "asyncio", "asyncssh", "ssl", "tomllib", "aiofiles")
HEAVY_RENDERD = (
    "renderd.engine",
    "renderd.render",
    "renderd.prepare",
    "renderd.agent",
    "renderd.encode",
    "renderd.composition",
    "renderd.config",
    "renderd.assignment",
    "renderd.events",
    "renderd.outputs",
    "renderd.cli.local",
    "renderd.cli.display",
    "renderd.coordinator.daemon",
    "renderd.coordinator.scheduler",
)


def _imported(stderr: str) -> set[str]:
    """Module names from a `-X importtime` report ("import time: self | cumulative | name")."""
    names = set()
    for line in stderr.splitlines():
        if line.startswith("import time:") and "|" in line:
            name = line.rsplit("|", 1)[1].strip()
            if name != "imported package":
                names.add(name)
    return names


def _heavy(names: set[str]) -> list[str]:
    return sorted(
        n
        for n in names
        if n.split(".")[0] in HEAVY_PACKAGES or any(n == h or n.startswith(h + ".") for h in HEAVY_RENDERD)
    )


def _run_profiled(*args: str | Path) -> tuple[int, str, set[str]]:
    r = run_renderd(*args, env={"PYTHONPROFILEIMPORTTIME": "1"}, timeout=180)
    report = [line for line in r.stderr.splitlines() if line.startswith("import time:")]
    assert report, r.stderr  # the report is what this test reads
    said = "\n".join(line for line in r.stderr.splitlines() if not line.startswith("import time:"))
    return r.returncode, said, _imported(r.stderr)


@pytest.mark.parametrize(
    "command", ["submit", "status", "list", "watch", "cancel", "logs", "hosts", "drain", "undrain", "reload"]
)
def test_client_command_parsers_import_nothing_heavy(command: str) -> None:
    code, said, names = _run_profiled(command, "--help")
    assert code == 0, said
    assert "renderd.cli.control" in names  # the report covers renderd's own imports
    assert _heavy(names) == []


def test_version_imports_nothing_heavy() -> None:
    code, said, names = _run_profiled("--version")
    assert code == 0, said
    assert _heavy(names) == []


@pytest.fixture
def drained_daemon(short_tmp: Path) -> Iterator[tuple[Daemon, Path, str]]:
    """A daemon that described hf-static once (the describe is cached), its only host drained, the job cancelled."""
    d = Daemon(short_tmp, slots=1)
    d.start()
    try:
        r = d.ctl("submit", FIXTURES / "hf-static", "-o", short_tmp / "first.mp4", "--json")
        assert r.returncode == 0, r.stderr + d.log.read_text()[-3000:]
        job = json.loads(r.stdout)["job"]["id"]
        assert d.ctl("drain", "local").returncode == 0
        assert d.ctl("cancel", job).returncode == 0
        yield d, short_tmp, job
    finally:
        d.stop()


@pytest.mark.browser
def test_client_commands_against_a_daemon_import_nothing_heavy(drained_daemon: tuple[Daemon, Path, str]) -> None:
    d, tmp, first = drained_daemon
    sock = str(d.socket)
    comp = FIXTURES / "hf-static"
    code, said, names = _run_profiled("submit", comp, "-o", tmp / "again.mp4", "--json", "--socket", sock)
    assert code == 0, said
    assert _heavy(names) == [], "renderd submit"
    assert "renderd.coordinator.client" in names
    code, said, names = _run_profiled("submit", comp, "-o", tmp / "plain.mp4", "--label", "x", "--socket", sock)
    assert code == 0, said
    assert _heavy(names) == [], "renderd submit (plain output)"
    job = d.json("list")["jobs"][0]["id"]
    runs = [
        ("status", job),
        ("status",),
        ("list",),
        ("logs", job),
        ("hosts",),
        ("drain", "local"),
        ("reload",),
        ("cancel", job),
    ]
    for args in runs:
        code, said, names = _run_profiled(*args, "--socket", sock)
        assert code == 0, f"{args}: {said}"
        assert _heavy(names) == [], args
    # A cancelled job: watch prints its end and exits non-zero, still without the progress bar.
    code, said, names = _run_profiled("watch", first, "--socket", sock)
    assert code == 1
    assert said.strip().splitlines()[-1] == f"renderd: error: job {first} cancelled: cancelled", said
    assert _heavy(names) == []
    # A daemon error with --json is printed as a JSON error event, still without the renderer.
    code, said, names = _run_profiled("status", "no-such-job", "--json", "--socket", sock)
    assert code == 1
    assert said.startswith("renderd: error:"), said
    assert _heavy(names) == ["renderd.events"]
