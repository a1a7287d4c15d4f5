"""`renderd hosts check` renders a self-test frame through each host's real agent and judges its pixels.

Hosts are the local one and throwaway sshd hosts (tests/sshhosts.py). A broken install is made
for real: a copy of the renderd package without its vendored HyperFrames fonts, put in front of
the agent's import path, as a wheel missing those files would be installed.
"""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from conftest import run_renderd
from daemonctl import Daemon
from sshhosts import TestHosts

import renderd
from renderd import selftest
from renderd.coordinator.hostcheck import HostReport, mixed_builds

pytestmark = pytest.mark.browser

AGENT = [sys.executable, "-m", "renderd", "agent"]
LOCAL = '\n[[hosts]]\nname = "local"\naddress = "local"\nslots = 1\nworkers = 1\nagent_command = {command}\n'


@pytest.fixture
def hosts(short_tmp: Path) -> Iterator[TestHosts]:
    with TestHosts(short_tmp / "ssh", 1, agent_command=AGENT) as th:
        yield th


def _inventory(root: Path, hosts: TestHosts, *, local: list[str] | None = None, h1: list[str] | None = None) -> Path:
    """An inventory of h1 (over SSH) and, with ``local``, a local host running that agent command."""
    path = hosts.write_inventory(root / "check-hosts.toml", overrides={"h1": {"agent_command": h1 or AGENT}})
    if local is not None:
        path.write_text(path.read_text() + LOCAL.format(command=json.dumps(local)))
    return path


def _check(root: Path, inventory: Path, *names: str, text: bool = False) -> tuple[int, Any]:
    """Run `hosts check` (``--json`` unless ``text``); return its exit status and reports (or stdout)."""
    config = Daemon(root, hosts_file=inventory).config
    r = run_renderd("hosts", "check", *names, "--config", config, *([] if text else ["--json"]), timeout=240)
    assert "Traceback" not in r.stderr, r.stderr
    if text:
        return r.returncode, r.stdout
    return r.returncode, {h["name"]: h for h in json.loads(r.stdout)["hosts"]}


def _without_fonts(root: Path) -> Path:
    """A copy of the renderd package without its vendored fonts; return the dir to put on PYTHONPATH."""
    overlay = root / "broken-install"
    shutil.copytree(Path(renderd.__file__).parent, overlay / "renderd", ignore=shutil.ignore_patterns("__pycache__"))
    shutil.rmtree(overlay / "renderd" / "engine" / "vendor" / "hyperframes" / "fonts")
    return overlay


def test_healthy_local_and_ssh_hosts_pass_with_the_self_test_frame(short_tmp: Path, hosts: TestHosts) -> None:
    inventory = _inventory(short_tmp, hosts, local=AGENT)
    code, reports = _check(short_tmp, inventory)
    assert code == 0, reports
    for name in ("local", "h1"):
        assert reports[name]["ok"] and reports[name]["problems"] == [], reports[name]
        # The frame was really rendered and judged, not just the probe read.
        assert isinstance(reports[name]["selftest_s"], float), reports[name]
        # The browser build is reported: it decides how text is drawn.
        assert reports[name]["facts"]["chromium_version"] == CHROMIUM_VERSION, reports[name]["facts"]
    # Nothing is left behind: not on the host, not in the coordinator's state dir.
    assert not list((hosts.host("h1").work_dir / "jobs").glob("hostcheck-*"))
    assert not list((short_tmp / "state" / "jobs").glob("hostcheck-*"))


def test_a_host_whose_install_lacks_the_fonts_is_unavailable_with_the_agents_error(
    short_tmp: Path, hosts: TestHosts
) -> None:
    overlay = _without_fonts(short_tmp)
    broken = ["env", f"PYTHONPATH={overlay}", *AGENT]
    inventory = _inventory(short_tmp, hosts, h1=broken)
    code, reports = _check(short_tmp, inventory, "h1")
    assert code == 1
    h1 = reports["h1"]
    assert not h1["ok"], h1
    # The cheap probe still passes: it is the render that finds the broken install.
    assert h1["facts"]["protocol"] == renderd.PROTOCOL_VERSION and h1["facts"]["chromium"], h1
    (problem,) = h1["problems"]
    assert "FileNotFoundError" in problem and "fonts.json" in problem, problem
    assert "did not finish loading" not in problem and "never became ready" not in problem, problem
    # What a person reads: the host, UNAVAILABLE, and the agent's own error under it.
    code, text = _check(short_tmp, inventory, "h1", text=True)
    assert code == 1
    lines = text.splitlines()
    assert lines[0].split()[:2] == ["h1", "UNAVAILABLE"], text
    assert f"renderd {renderd.__version__}, {CHROMIUM_VERSION}, " in lines[0], text
    assert (
        lines[1].strip().startswith("self-test render failed: index.html: cannot serve /index.html: FileNotFoundError")
    )


def test_a_host_that_renders_wrong_pixels_is_reported(short_tmp: Path, hosts: TestHosts) -> None:
    # An agent whose page draws the label in a system font and the red block blue: the
    # composition it is handed is swapped for a tampered copy, the agent itself is real.
    tampered = short_tmp / "tampered"
    shutil.copytree(selftest.COMPOSITION, tampered)
    html = (tampered / "index.html").read_text()
    html = html.replace("font-family: Helvetica, sans-serif", "font-family: NotAFont, sans-serif")
    html = html.replace(
        "#still { left: 0; top: 0; background: #ff0000; }", "#still { left: 0; top: 0; background: #0000ff; }"
    )
    (tampered / "index.html").write_text(html)
    wrapper = short_tmp / "tamper-agent.py"
    wrapper.write_text(
        "import json, os, subprocess, sys, threading\n"
        f"agent = subprocess.Popen({AGENT!r} + sys.argv[1:], stdin=subprocess.PIPE)\n"
        "def forward():\n"
        "    for line in sys.stdin.buffer:\n"
        "        a = json.loads(line)\n"
        f"        a['composition'] = {str(tampered)!r}\n"
        "        agent.stdin.write(json.dumps(a).encode() + b'\\n')\n"
        "        agent.stdin.flush()\n"
        "    agent.stdin.close()\n"
        "threading.Thread(target=forward, daemon=True).start()\n"
        "os._exit(agent.wait())  # not sys.exit: the reader thread holds stdin\n"
    )
    inventory = _inventory(short_tmp, hosts, local=[sys.executable, str(wrapper)])
    code, reports = _check(short_tmp, inventory, "local")
    assert code == 1
    problems = reports["local"]["problems"]
    assert any("the static red block" in p and "expected rgb(255, 0, 0)" in p for p in problems), problems
    assert any("text drawn in the wrong font" in p for p in problems), problems
    assert len(problems) == 2, problems


def test_a_render_with_a_missing_font_table_fails_with_that_error_not_a_ready_timeout(short_tmp: Path) -> None:
    overlay = _without_fonts(short_tmp)
    r = run_renderd(
        "render", selftest.COMPOSITION, "-o", short_tmp / "out.mp4", "--frames", "15:16", "--workers", "1",
        "--ready-timeout", "20",
        env={"PYTHONPATH": str(overlay)},
    )  # fmt: skip
    assert r.returncode == 1, r.stderr
    last = r.stderr.strip().splitlines()[-1]
    assert last.startswith("renderd: error: index.html: cannot serve /index.html: FileNotFoundError"), r.stderr
    assert "fonts.json" in last, last
    assert not (short_tmp / "out.mp4").exists()
    assert "Traceback" not in r.stderr, r.stderr


def _host_view(d: Daemon, name: str) -> dict[str, Any]:
    view: dict[str, Any] = next(h for h in d.json("hosts")["hosts"] if h["name"] == name)
    return view


def test_the_quarantine_re_probe_renders_and_keeps_a_broken_host_out(short_tmp: Path, hosts: TestHosts) -> None:
    # h1 passes the start-up probe (probe only) but cannot render HyperFrames: its chunks fail,
    # it is quarantined, and its re-probe, which renders the self-test frame, keeps it out.
    overlay = _without_fonts(short_tmp)
    inventory = _inventory(short_tmp, hosts, local=AGENT, h1=["env", f"PYTHONPATH={overlay}", *AGENT])
    scheduling = '[scheduling]\nquarantine_backoff = "1s"\nhost_failure_quarantine = 1\n'
    d = Daemon(short_tmp, hosts_file=inventory, timeouts='ready = "10s"\n' + scheduling)
    d.start()
    try:
        out = short_tmp / "job.mp4"
        r = d.ctl("submit", selftest.COMPOSITION, "-o", out, "--chunks", "3", "--wait", timeout=300)
        assert r.returncode == 0, r.stderr
        status = d.json("status", d.json("list")["jobs"][0]["id"])
        on_h1 = [a for a in status["attempts"] if a["host"] == "h1"]
        assert on_h1 and all(a["outcome"] != "verified" for a in on_h1), status["attempts"]
        assert any("FileNotFoundError" in (a["error"] or "") for a in on_h1), on_h1
        deadline = time.monotonic() + 120
        while not (_host_view(d, "h1")["last_error"] or "").startswith("re-probe failed"):
            assert time.monotonic() < deadline, _host_view(d, "h1")
            time.sleep(0.3)
        view = _host_view(d, "h1")
        assert "self-test render failed" in view["last_error"] and "fonts.json" in view["last_error"], view
        # Out of service until a re-probe passes: only that clears quarantined_until (its 1 s
        # backoff may have run out by now, so the view's state alone would race).
        assert view["quarantined_until"] is not None, view
        assert "re-probe passed" not in d.log.read_text()
    finally:
        d.stop()


CHROMIUM_VERSION = subprocess.run(
    ["/usr/bin/chromium", "--version"], capture_output=True, text=True, check=True
).stdout.strip()


def test_hosts_on_different_chromium_builds_are_named_in_one_warning() -> None:
    def report(name: str, build: str | None, ok: bool = True) -> HostReport:
        return HostReport(name, ok, [], {"chromium_version": build} if build else {})

    same = [report("a", "Chromium 156.0.8078.73"), report("b", "Chromium 156.0.8078.73"), report("c", None)]
    assert mixed_builds(same) is None
    # A host that cannot render does not count: it gets no chunks.
    assert mixed_builds([*same, report("d", "Chromium 150.0.1.1", ok=False)]) is None
    mixed = mixed_builds([*same, report("d", "Chromium 150.0.1.1")])
    assert mixed == (
        "the hosts run 2 different Chromium builds (Chromium 150.0.1.1: d; Chromium 156.0.8078.73: a, b); "
        "chunks of one job may draw text differently: install the same build on every host"
    )
