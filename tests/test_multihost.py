"""The daemon fanning chunks out to 3 throwaway sshd hosts on loopback, with real faults."""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import shutil
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import psutil
import pytest
from conftest import EXAMPLES, FIXTURES, decode_index, run_renderd
from daemonctl import Daemon, wait_state
from sshhosts import TestHosts, is_alive, netns_available
from videotools import decode_frames

from renderd import PROTOCOL_VERSION
from renderd.config import load_inventory

pytestmark = pytest.mark.browser

AGENT = [sys.executable, "-m", "renderd", "agent"]


@pytest.fixture
def root(short_tmp: Path) -> Path:
    return short_tmp


@pytest.fixture
def hosts(root: Path) -> Iterator[TestHosts]:
    with TestHosts(root / "ssh", 3, agent_command=AGENT) as th:
        yield th


@pytest.fixture
def daemon(root: Path, hosts: TestHosts) -> Iterator[Daemon]:
    d = Daemon(root, hosts_file=hosts.inventory)
    d.start()
    yield d
    d.stop()


def _attempt_hosts(status: dict[str, Any]) -> dict[str, list[str]]:
    out: dict[str, list[str]] = {}
    for a in status["attempts"]:
        out.setdefault(a["host"], []).append(a["outcome"])
    return out


def _frame_hashes(path: Path, width: int, height: int) -> list[str]:
    return [hashlib.sha256(f).hexdigest() for f in decode_frames(path, width, height)]


def _agents_on(hosts: TestHosts, name: str) -> list[psutil.Process]:
    """The agent processes the host's SSH sessions are running now."""
    out = []
    for p in hosts.session_commands(name):
        try:
            if "agent" in p.cmdline() and is_alive(p):
                out.append(p)
        except psutil.Error:
            pass
    return out


def _leftovers(hosts: TestHosts) -> list[str]:
    """Agent or Chromium processes still running for any test host."""
    left = [" ".join(p.cmdline()[:4]) for name in hosts.names for p in _agents_on(hosts, name)]
    for p in psutil.process_iter(["name", "cmdline"]):
        if "renderd agent" in " ".join(p.info["cmdline"] or []) and is_alive(p):
            left.append(" ".join(p.info["cmdline"][:4]))
    return left


def _wait_clean(hosts: TestHosts, timeout: float = 40) -> None:
    deadline = time.monotonic() + timeout
    while _leftovers(hosts) and time.monotonic() < deadline:
        time.sleep(0.3)
    assert not _leftovers(hosts), _leftovers(hosts)


def test_three_hosts_render_the_same_frames_as_a_local_render(root: Path, hosts: TestHosts, daemon: Daemon) -> None:
    out = root / "dist.mp4"
    r = daemon.ctl(
        "submit", FIXTURES / "frame-index-gsap", "-o", out, "--frames", "0:60", "--chunks", "3",
        "--frame-format", "png", "--wait",
    )  # fmt: skip
    assert r.returncode == 0, r.stderr
    local = root / "local.mp4"
    r = run_renderd(
        "render", FIXTURES / "frame-index-gsap", "-o", local, "--frames", "0:60", "--chunks", "3",
        "--frame-format", "png", "--workers", "1",
    )  # fmt: skip
    assert r.returncode == 0, r.stderr
    # Same chunk boundaries, same PNG frames, same x264 settings: identical decoded frames.
    assert _frame_hashes(out, 320, 240) == _frame_hashes(local, 320, 240)
    assert len(set(_frame_hashes(out, 320, 240))) == 60
    job = daemon.json("list")["jobs"][0]["id"]
    used = _attempt_hosts(daemon.json("status", job))
    assert len(used) >= 2, used
    assert all(o == ["verified"] * len(o) for o in used.values()), used
    # The composition was synced once per host into the content-addressed cache.
    for name in used:
        caches = list((hosts.host(name).work_dir / "cache").iterdir())
        assert len(caches) == 1, caches
        assert not (hosts.host(name).work_dir / "jobs" / job).exists(), "remote job dir not cleaned up"


def _rgba_frame_md5s(video: Path) -> list[str]:
    """Frame MD5s of ``video`` decoded to RGBA (libvpx decodes a VP9 file's alpha; ffmpeg's own drops it)."""
    decoder = ["-c:v", "libvpx-vp9"] if video.suffix == ".webm" else []
    r = subprocess.run(
        ["ffmpeg", "-v", "error", *decoder, "-i", str(video), "-pix_fmt", "rgba", "-f", "framemd5", "-"],
        capture_output=True, text=True, check=True, timeout=120,
    )  # fmt: skip
    return [line.rsplit(",", 1)[1].strip() for line in r.stdout.splitlines() if line and not line.startswith("#")]


def _tree_hashes(directory: Path) -> dict[str, str]:
    return {p.name: hashlib.sha256(p.read_bytes()).hexdigest() for p in sorted(directory.iterdir())}


def test_fan_out_webm_and_png_sequence_with_alpha_match_local_renders(
    root: Path, hosts: TestHosts, daemon: Daemon
) -> None:
    """Parts of other formats travel too: a VP9 .webm and a .tar of PNG files per chunk."""
    comp = FIXTURES / "hf-history"
    common = ["--frames", "3:33", "--chunks", "3", "--transparent"]
    webm, seq = root / "dist.webm", root / "dist-seq"
    jobs = []
    for out in (str(webm), f"{seq}/"):
        r = daemon.ctl("submit", comp, "-o", out, *common)
        assert r.returncode == 0, r.stderr
        jobs.append(r.stdout.strip())
    for job in jobs:
        final = wait_state(daemon, job, ("done", "failed"), timeout=300)
        assert final["job"]["state"] == "done", final["job"]
    local_webm, local_seq = root / "local.webm", root / "local-seq"
    for out in (str(local_webm), f"{local_seq}/"):
        r = run_renderd("render", comp, "-o", out, *common, "--workers", "1", "--no-prepare")
        assert r.returncode == 0, r.stderr
    # Same chunk boundaries, same PNG frames, same encoder settings: the same file contents.
    assert _rgba_frame_md5s(webm) == _rgba_frame_md5s(local_webm)
    assert len(_rgba_frame_md5s(webm)) == 30
    names = [f"frame_{i:06d}.png" for i in range(3, 33)]
    assert list(_tree_hashes(seq)) == names
    assert _tree_hashes(seq) == _tree_hashes(local_seq)
    # The alpha reached both: the cleared page background is transparent, the box opaque.
    webm_frame = _rgba(webm, "-c:v", "libvpx-vp9")[5 * 160 * 120 * 4 : 6 * 160 * 120 * 4]
    for frame in (webm_frame, _rgba(seq / names[5])):
        assert frame[(60 * 160 + 120) * 4 + 3] == 0
        assert frame[(60 * 160 + 40) * 4 + 3] == 255
    used = {a["host"] for job in jobs for a in daemon.json("status", job)["attempts"]}
    assert len(used) >= 2, used


def _rgba(path: Path, *decoder: str) -> bytes:
    """Every frame of ``path`` as raw RGBA bytes."""
    r = subprocess.run(
        ["ffmpeg", "-v", "error", *decoder, "-i", str(path), "-pix_fmt", "rgba", "-f", "rawvideo", "-"],
        capture_output=True, check=True, timeout=60,
    )  # fmt: skip
    return r.stdout


def test_killed_agent_and_stopped_host_are_rendered_elsewhere(root: Path, hosts: TestHosts, daemon: Daemon) -> None:
    out = root / "faults.mp4"
    r = daemon.ctl("submit", FIXTURES / "frame-index-hook", "-o", out, "--chunks", "6")
    assert r.returncode == 0, r.stderr
    job = r.stdout.strip()
    # Wait until agents run on h1 and h2, then kill h1's agent and take h2 off the network.
    deadline = time.monotonic() + 120
    while not (_agents_on(hosts, "h1") and _agents_on(hosts, "h2")):
        assert time.monotonic() < deadline, daemon.json("status", job)
        time.sleep(0.1)
    for p in _agents_on(hosts, "h1"):
        with contextlib.suppress(psutil.Error):
            p.kill()
    hosts.stop("h2")
    hosts.kill_sessions("h2")
    final = wait_state(daemon, job, ("done", "failed"), timeout=300)
    assert final["job"]["state"] == "done", final["job"]
    assert [decode_index(f, 320) for f in decode_frames(out, 320, 240)] == list(range(120))
    used = _attempt_hosts(final)
    assert any(o != "verified" for o in used.get("h1", [])), used
    assert any(o != "verified" for o in used.get("h2", [])), used
    # Every chunk ends verified exactly once, some of them on a host other than the first try.
    verified = [a for a in final["attempts"] if a["outcome"] == "verified"]
    assert sorted(a["chunk_index"] for a in verified) == list(range(6))
    hosts_view = {h["name"]: h for h in daemon.json("hosts")["hosts"]}
    assert hosts_view["h2"]["last_error"], hosts_view["h2"]
    _wait_clean(hosts)


def test_wrong_host_key_is_refused_and_reported(root: Path, hosts: TestHosts) -> None:
    hosts.corrupt_known_host("h3")
    d = Daemon(root, hosts_file=hosts.inventory)
    check = run_renderd("hosts", "check", "--config", d.config, timeout=120)
    assert check.returncode == 1
    lines = {ln.split()[0]: ln for ln in check.stdout.splitlines() if ln and not ln.startswith(" ")}
    assert "ok" in lines["h1"] and "ok" in lines["h2"]
    assert "UNAVAILABLE" in lines["h3"]
    assert "host key not trusted" in check.stdout
    d.start()
    try:
        out = root / "key.mp4"
        r = d.ctl("submit", FIXTURES / "frame-index-hook", "-o", out, "--chunks", "6", "--wait")
        assert r.returncode == 0, r.stderr
        job = d.json("list")["jobs"][0]["id"]
        used = _attempt_hosts(d.json("status", job))
        assert all(o in ("lost",) for o in used.get("h3", [])), used
        h3 = next(h for h in d.json("hosts")["hosts"] if h["name"] == "h3")
        assert "host key not trusted" in (h3["last_error"] or ""), h3
    finally:
        d.stop()


def _name(p: psutil.Process) -> str:
    try:
        return p.name()
    except psutil.Error:
        return ""


def _agent_trees(hosts: TestHosts) -> list[psutil.Process]:
    """Every agent on every host with all its descendants (Playwright driver, Chromium)."""
    procs = []
    for name in hosts.names:
        for agent in _agents_on(hosts, name):
            procs.append(agent)
            with contextlib.suppress(psutil.Error):
                procs.extend(agent.children(recursive=True))
    return procs


def test_cancel_leaves_no_agent_or_chromium_on_any_host(root: Path, hosts: TestHosts, daemon: Daemon) -> None:
    r = daemon.ctl("submit", EXAMPLES / "hyperframes-gsap", "-o", root / "c.mp4", "--chunks", "6")
    assert r.returncode == 0, r.stderr
    job = r.stdout.strip()
    deadline = time.monotonic() + 120
    while True:
        tree = _agent_trees(hosts)
        browsers = [p for p in tree if "chrom" in _name(p)]
        if len(_leftovers(hosts)) >= 2 and browsers:
            break
        assert time.monotonic() < deadline, "agents never started their browsers"
        time.sleep(0.1)
    assert daemon.ctl("cancel", job).returncode == 0
    _wait_clean(hosts)
    deadline = time.monotonic() + 30
    while any(is_alive(p) for p in tree) and time.monotonic() < deadline:
        time.sleep(0.3)
    assert not [p.pid for p in tree if is_alive(p)], [(p.pid, _name(p)) for p in tree if is_alive(p)]
    assert not (root / "c.mp4").exists()
    assert daemon.json("status", job)["job"]["state"] == "cancelled"


SLOW_DELAY_MS = 800


def test_a_slow_host_is_overtaken_by_a_speculative_copy(root: Path, hosts: TestHosts) -> None:
    slow_agent = ["env", f"RENDERD_FAULT_FRAME_DELAY_MS={SLOW_DELAY_MS}", *AGENT]
    inventory = hosts.write_inventory(root / "slow-hosts.toml", overrides={"h3": {"agent_command": slow_agent}})
    d = Daemon(root, hosts_file=inventory)
    d.start()
    try:
        out = root / "slow.mp4"
        r = d.ctl("submit", FIXTURES / "frame-index-hook", "-o", out, "--chunks", "3", "--wait")
        assert r.returncode == 0, r.stderr
        job = d.json("list")["jobs"][0]
        status = d.json("status", job["id"])
        slow_chunks = {a["chunk_index"] for a in status["attempts"] if a["host"] == "h3"}
        assert slow_chunks, status["attempts"]
        for index in slow_chunks:
            outcomes = {(a["host"], a["outcome"]) for a in status["attempts"] if a["chunk_index"] == index}
            assert ("h3", "cancelled") in outcomes, (outcomes, d.log.read_text()[-2000:])
            assert any(h != "h3" and o == "verified" for h, o in outcomes), outcomes
        # h3 alone needs at least 40 frames x 0.8 s for its chunk; the job finished well before.
        elapsed = job["finished_at"] - job["started_at"]
        assert elapsed < 40 * SLOW_DELAY_MS / 1000, elapsed
        assert [decode_index(f, 320) for f in decode_frames(out, 320, 240)] == list(range(120))
        _wait_clean(hosts)
    finally:
        d.stop()


def test_hosts_install_puts_this_renderd_on_a_host(root: Path, hosts: TestHosts) -> None:
    d = Daemon(root, hosts_file=hosts.inventory)
    r = run_renderd("hosts", "install", "h1", "--config", d.config, "--json", timeout=600)
    assert r.returncode == 0, r.stdout + r.stderr
    report = json.loads(r.stdout)["hosts"]
    assert [h["name"] for h in report] == ["h1"]
    command = report[0]["agent_command"]
    assert command == [str(hosts.host("h1").work_dir / "venv" / "bin" / "renderd"), "agent"]
    assert report[0]["missing_packages"] == []
    # The inventory now names the installed agent for h1 (and only h1).
    assert report[0]["inventory"].startswith(f"{hosts.inventory}:")
    installed = load_inventory(hosts.inventory)
    assert installed.get("h1").agent_command == tuple(command)  # type: ignore[union-attr]
    assert installed.get("h2").agent_command == tuple(AGENT)  # type: ignore[union-attr]
    # With the installed agent in the inventory, the host checks out with a matching protocol.
    (root / "d2").mkdir()
    d2 = Daemon(root / "d2", hosts_file=hosts.inventory)
    check = run_renderd("hosts", "check", "h1", "--config", d2.config, "--json", timeout=120)
    assert check.returncode == 0, check.stdout + check.stderr
    facts = json.loads(check.stdout)["hosts"][0]["facts"]
    assert facts["protocol"] == PROTOCOL_VERSION and facts["chromium"] and facts["ffmpeg"]


def test_a_host_with_a_full_disk_fails_its_chunks_and_they_go_elsewhere(root: Path, hosts: TestHosts) -> None:
    full = root / "full"
    full.mkdir()
    # Big enough to pass the start-up probe (2 GiB free), then filled up to the last ~16 KiB: the
    # composition still syncs, a few frames fill the disk.
    size = (2 << 30) + (64 << 20)
    subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={size}", "tmpfs", str(full)], check=True)
    try:
        inventory = hosts.write_inventory(root / "full-hosts.toml", overrides={"h2": {"work_dir": str(full)}})
        d = Daemon(root, hosts_file=inventory)
        d.start()
        # The start-up probe must have judged h2's free space before the disk is filled: "up" is
        # also the state of a host not probed yet.
        deadline = time.monotonic() + 60
        while "host probe done" not in d.log.read_text():
            assert time.monotonic() < deadline, d.log.read_text()[-2000:]
            time.sleep(0.2)
        assert next(h for h in d.json("hosts")["hosts"] if h["name"] == "h2")["state"] == "up", d.json("hosts")
        subprocess.run(["fallocate", "-l", str(size - (16 << 10)), str(full / "ballast")], check=True)
        try:
            out = root / "full.mp4"
            r = d.ctl("submit", FIXTURES / "frame-index-hook", "-o", out, "--chunks", "6", "--wait")
            assert r.returncode == 0, r.stderr
            job = d.json("list")["jobs"][0]["id"]
            attempts = d.json("status", job)["attempts"]
            on_h2 = [a for a in attempts if a["host"] == "h2"]
            assert on_h2 and all(a["outcome"] != "verified" for a in on_h2), on_h2
            assert any("No space left" in (a["error"] or "") for a in on_h2), on_h2
            assert [decode_index(f, 320) for f in decode_frames(out, 320, 240)] == list(range(120))
        finally:
            d.stop()
    finally:
        subprocess.run(["umount", "-l", str(full)], check=False)


def test_a_host_without_free_disk_is_not_used(root: Path, hosts: TestHosts) -> None:
    full = root / "tiny"
    full.mkdir()
    subprocess.run(["mount", "-t", "tmpfs", "-o", "size=1m", "tmpfs", str(full)], check=True)
    try:
        inventory = hosts.write_inventory(root / "tiny-hosts.toml", overrides={"h3": {"work_dir": str(full)}})
        check = run_renderd("hosts", "check", "h3", "--config", Daemon(root, hosts_file=inventory).config)
        assert check.returncode == 1 and "MiB free in the work dir" in check.stdout, check.stdout
    finally:
        subprocess.run(["umount", "-l", str(full)], check=False)


def test_accept_new_records_an_unknown_key_but_refuses_a_changed_one(root: Path, hosts: TestHosts) -> None:
    h1 = hosts.host("h1")
    prefix = f"[{h1.address}]:{h1.port} "
    real = next(ln for ln in hosts.known_hosts.read_text().splitlines() if ln.startswith(prefix))
    partial = root / "known_hosts_partial"
    partial.write_text("".join(ln + "\n" for ln in hosts.known_hosts.read_text().splitlines() if ln != real))
    overrides = {"h1": {"known_hosts": str(partial), "host_key_policy": "accept-new"}}
    d = Daemon(root, hosts_file=hosts.write_inventory(root / "accept-new.toml", overrides=overrides))
    check = run_renderd("hosts", "check", "h1", "--config", d.config)
    assert check.returncode == 0, check.stdout + check.stderr
    recorded = [ln for ln in partial.read_text().splitlines() if ln.startswith(prefix)]
    assert [r.split()[1:3] for r in recorded] == [real.split()[1:3]]
    # The key changes: accept-new refuses, as strict would.
    hosts.corrupt_known_host("h1")
    wrong = next(ln for ln in hosts.known_hosts.read_text().splitlines() if ln.startswith(prefix))
    partial.write_text(partial.read_text().replace(recorded[0], wrong))
    check = run_renderd("hosts", "check", "h1", "--config", d.config)
    assert check.returncode == 1 and "host key not trusted" in check.stdout, check.stdout


def _verified_by_host(status: dict[str, Any]) -> dict[str, int]:
    out: dict[str, int] = {}
    for a in status["attempts"]:
        if a["outcome"] == "verified":
            out[a["host"]] = out.get(a["host"], 0) + 1
    return out


def test_one_warm_agent_serves_all_chunks_of_a_job_on_its_host(root: Path, hosts: TestHosts, daemon: Daemon) -> None:
    r = daemon.ctl("submit", FIXTURES / "frame-index-hook", "-o", root / "warm.mp4", "--chunks", "9")
    assert r.returncode == 0, r.stderr
    job = r.stdout.strip()
    seen: dict[str, set[int]] = {name: set() for name in hosts.names}
    deadline = time.monotonic() + 240
    while daemon.json("status", job)["job"]["state"] not in ("done", "failed"):
        assert time.monotonic() < deadline
        for name in hosts.names:
            for p in _agents_on(hosts, name):
                with contextlib.suppress(psutil.Error):
                    assert "--serve" in p.cmdline(), p.cmdline()
                    # A child the agent is forking (ffmpeg, Chromium) carries the agent's command
                    # line until it execs; only the agent itself counts.
                    if "agent" not in p.parent().cmdline():
                        seen[name].add(p.pid)
        time.sleep(0.05)
    final = daemon.json("status", job)
    assert final["job"]["state"] == "done", final["job"]
    assert [decode_index(f, 320) for f in decode_frames(root / "warm.mp4", 320, 240)] == list(range(120))
    verified = _verified_by_host(final)
    # A host that rendered several chunks did so with one agent process (its browsers stayed up).
    busy = [name for name, n in verified.items() if n >= 2]
    assert busy, verified
    for name in busy:
        assert len(seen[name]) == 1, (name, seen[name], verified)
    # The job is over: its idle agents were stopped with it.
    _wait_clean(hosts)


def test_an_agent_without_serve_falls_back_to_one_agent_per_chunk(root: Path, hosts: TestHosts) -> None:
    # An older renderd on h1: its argparse refuses --serve, exactly as an agent without it would.
    old = [
        "sh", "-c",
        'for a in "$@"; do [ "$a" = --serve ] && { echo "renderd: error: unrecognized arguments: --serve" >&2; '
        'exit 2; }; done; exec "$0" "$@"',
        *AGENT,
    ]  # fmt: skip
    inventory = hosts.write_inventory(root / "old.toml", overrides={"h1": {"agent_command": old}})
    _job_verified_on_h1(root, inventory, root / "old.mp4", "6", "h1: the agent has no --serve")


def test_a_spare_agent_serves_the_next_job_without_its_browsers_in_between(root: Path, hosts: TestHosts) -> None:
    # h1 alone, one slot, keeping one agent after a job; its agent closes idle browsers after 1 s.
    agent = ["env", "RENDERD_AGENT_IDLE_RELEASE_S=1", *AGENT]
    only_h1 = {"h1": {"spare_agents": 1, "agent_command": agent}, "h2": {"enabled": False}, "h3": {"enabled": False}}
    inventory = hosts.write_inventory(root / "spare-hosts.toml", overrides=only_h1)
    d = Daemon(root, hosts_file=inventory)
    d.start()
    try:
        seen: set[int] = set()
        for name in ("a", "b"):
            r = d.ctl("submit", FIXTURES / "frame-index-hook", "-o", root / f"{name}.mp4", "--chunks", "2")
            assert r.returncode == 0, r.stderr
            job = r.stdout.strip()
            deadline = time.monotonic() + 240
            while d.json("status", job)["job"]["state"] not in ("done", "failed"):
                assert time.monotonic() < deadline
                for p in _agents_on(hosts, "h1"):
                    with contextlib.suppress(psutil.Error):
                        if "agent" not in p.parent().cmdline():
                            seen.add(p.pid)
                time.sleep(0.05)
            assert d.json("status", job)["job"]["state"] == "done"
            frames = decode_frames(root / f"{name}.mp4", 320, 240)
            assert [decode_index(f, 320) for f in frames] == list(range(120))
            # The job is over; its agent stays, and lets its browsers go once idle.
            deadline = time.monotonic() + 30
            while [p for p in _agent_trees(hosts) if "chrom" in _name(p)] and time.monotonic() < deadline:
                time.sleep(0.2)
            assert not [p.pid for p in _agent_trees(hosts) if "chrom" in _name(p)]
            assert [p.pid for p in _agents_on(hosts, "h1") if "agent" not in p.parent().cmdline()]
        assert len(seen) == 1, f"job b was served by job a's agent: {seen}"
    finally:
        d.stop()
    _wait_clean(hosts)


def _job_verified_on_h1(root: Path, inventory: Path, out: Path, chunks: str, logged: str) -> None:
    """Run one job: every attempt verified, some on h1, ``logged`` in the daemon log, frames right."""
    d = Daemon(root, hosts_file=inventory)
    d.start()
    try:
        r = d.ctl("submit", FIXTURES / "frame-index-hook", "-o", out, "--chunks", chunks, "--wait")
        assert r.returncode == 0, r.stderr
        status = d.json("status", d.json("list")["jobs"][0]["id"])
        assert _verified_by_host(status).get("h1"), status["attempts"]
        assert all(a["outcome"] == "verified" for a in status["attempts"]), status["attempts"]
        assert logged in d.log.read_text()
        assert [decode_index(f, 320) for f in decode_frames(out, 320, 240)] == list(range(120))
    finally:
        d.stop()


# A dropped link is noticed after 3 missed keepalives; connecting to it gives up after `connect`.
PARTITION_TIMEOUTS = 'keepalive = "1s"\nconnect = "3s"\n[scheduling]\nquarantine_backoff = "1s"\n'


def _host_view(d: Daemon, name: str) -> dict[str, Any]:
    view: dict[str, Any] = next(h for h in d.json("hosts")["hosts"] if h["name"] == name)
    return view


def _wait_host_state(d: Daemon, name: str, state: str, timeout: float = 120) -> dict[str, Any]:
    deadline = time.monotonic() + timeout
    while (view := _host_view(d, name))["state"] != state:
        assert time.monotonic() < deadline, view
        time.sleep(0.2)
    return view


def test_a_partitioned_host_loses_its_chunk_to_another_and_returns_when_the_link_does(root: Path) -> None:
    why = netns_available()
    if why is not None:
        pytest.skip(f"network namespaces are not permitted here: {why}")
    # h2 renders slowly enough that the link can be dropped in the middle of one of its chunks.
    slow = ["env", "RENDERD_FAULT_FRAME_DELAY_MS=150", *AGENT]
    with TestHosts(root / "ssh", 2, agent_command=AGENT, netns=["h2"]) as hosts:
        inventory = hosts.write_inventory(root / "ns.toml", overrides={"h2": {"agent_command": slow}})
        d = Daemon(root, hosts_file=inventory, timeouts=PARTITION_TIMEOUTS)
        d.start()
        try:
            r = d.ctl("submit", FIXTURES / "frame-index-hook", "-o", root / "p.mp4", "--chunks", "4")
            assert r.returncode == 0, r.stderr
            job = r.stdout.strip()
            deadline = time.monotonic() + 120
            while not any(a["host"] == "h2" and a["outcome"] == "running" for a in d.json("status", job)["attempts"]):
                assert time.monotonic() < deadline, d.json("status", job)
                time.sleep(0.1)
            time.sleep(1.0)  # into the chunk: the agent is rendering frames
            hosts.link_down("h2")
            final = wait_state(d, job, ("done", "failed"), timeout=300)
            assert final["job"]["state"] == "done", final["job"]
            assert [decode_index(f, 320) for f in decode_frames(root / "p.mp4", 320, 240)] == list(range(120))
            lost = [a for a in final["attempts"] if a["host"] == "h2" and a["outcome"] == "lost"]
            assert lost, final["attempts"]
            for a in lost:
                redone = [b for b in final["attempts"] if b["chunk_index"] == a["chunk_index"]]
                assert any(b["host"] == "h1" and b["outcome"] == "verified" for b in redone), redone
            verified = sorted(a["chunk_index"] for a in final["attempts"] if a["outcome"] == "verified")
            assert verified == list(range(4)), final["attempts"]
            assert _host_view(d, "h2")["last_error"], _host_view(d, "h2")
            # The link comes back: the host is re-probed into service and takes chunks again.
            hosts.link_up("h2")
            deadline = time.monotonic() + 120
            while _host_view(d, "h2")["quarantined_until"] is not None:  # until a re-probe passes
                assert time.monotonic() < deadline, _host_view(d, "h2")
                time.sleep(0.2)
            r = d.ctl("submit", FIXTURES / "frame-index-hook", "-o", root / "p2.mp4", "--chunks", "4", "--wait")
            assert r.returncode == 0, r.stderr
            second = d.json("status", d.json("list")["jobs"][0]["id"])
            # h2 rendered a chunk again: verified, or overtaken by a speculative copy on fast h1
            # (h2 still renders slowly); never lost to the old link.
            on_h2 = [a["outcome"] for a in second["attempts"] if a["host"] == "h2"]
            assert on_h2 and set(on_h2) <= {"verified", "cancelled"}, second["attempts"]
            assert [decode_index(f, 320) for f in decode_frames(root / "p2.mp4", 320, 240)] == list(range(120))
        finally:
            d.stop()
    assert not [ns for ns in _netns_list() if ns.startswith(f"rdt{os.getpid() % 100000}")]


def _netns_list() -> list[str]:
    out = subprocess.run(["ip", "netns", "list"], capture_output=True, text=True, check=False).stdout
    return [line.split()[0] for line in out.splitlines() if line.strip()]


def test_a_host_behind_a_jump_host_is_reached_through_it(root: Path) -> None:
    why = netns_available()
    if why is not None:
        pytest.skip(f"network namespaces are not permitted here: {why}")
    # h2's sshd listens on a loopback address inside h1's namespace: only h1's sshd can reach it.
    with TestHosts(root / "ssh", 2, agent_command=AGENT, netns=["h1"], behind={"h2": "h1"}) as hosts:
        h2 = hosts.host("h2")
        direct = subprocess.run([*hosts.ssh_argv("h2"), "true"], capture_output=True, text=True, timeout=60)
        assert direct.returncode == 255 and "refused" in direct.stderr, direct.stderr
        d = Daemon(root, hosts_file=hosts.inventory)
        d.start()
        try:
            r = d.ctl("submit", FIXTURES / "frame-index-hook", "-o", root / "j.mp4", "--chunks", "4", "--wait")
            assert r.returncode == 0, r.stderr
            status = d.json("status", d.json("list")["jobs"][0]["id"])
            assert _verified_by_host(status).get("h2"), status["attempts"]
            assert [decode_index(f, 320) for f in decode_frames(root / "j.mp4", 320, 240)] == list(range(120))
        finally:
            d.stop()
        # h1's sshd opened the forwards to h2 (the agent's SSH session and rsync both came that way).
        forwards = [
            ln for ln in hosts.host("h1").log.read_text().splitlines()
            if "server_request_direct_tcpip" in ln and f"target {h2.address} port {h2.port}" in ln
        ]  # fmt: skip
        assert len(forwards) >= 2, hosts.host("h1").log.read_text()[-3000:]


def test_a_quarantined_host_is_re_probed_and_returns_to_service(root: Path, hosts: TestHosts) -> None:
    d = Daemon(root, hosts_file=hosts.inventory, timeouts='[scheduling]\nquarantine_backoff = "1s"\n')
    hosts.stop("h3")  # down at start-up: the start-up probe quarantines it
    d.start()
    try:
        view = _wait_host_state(d, "h3", "quarantined", timeout=60)
        assert view["consecutive_failures"] >= 1, view
        # While it stays down, every failed re-probe quarantines it again, for longer.
        deadline = time.monotonic() + 60
        while not (_host_view(d, "h3")["last_error"] or "").startswith("re-probe failed"):
            assert time.monotonic() < deadline, _host_view(d, "h3")
            time.sleep(0.2)
        failures = _host_view(d, "h3")["consecutive_failures"]
        assert failures >= 2
        shown = d.ctl("hosts")
        assert "h3" in shown.stdout and ("quarantined" in shown.stdout or "down" in shown.stdout), shown.stdout
        hosts.start("h3")
        view = _wait_host_state(d, "h3", "up", timeout=120)
        assert view["consecutive_failures"] == 0, view
        assert "h3" in d.ctl("hosts").stdout
        r = d.ctl("submit", FIXTURES / "frame-index-hook", "-o", root / "q.mp4", "--chunks", "6", "--wait")
        assert r.returncode == 0, r.stderr
        status = d.json("status", d.json("list")["jobs"][0]["id"])
        assert _verified_by_host(status).get("h3"), status["attempts"]
        assert "re-probe passed" in d.log.read_text()
    finally:
        d.stop()


def test_a_host_without_sftp_gets_its_chunks_fetched_with_rsync(root: Path, hosts: TestHosts) -> None:
    hosts.without_sftp.add("h1")
    hosts.stop("h1")
    hosts.start("h1")
    inventory = hosts.write_inventory(root / "nosftp.toml", overrides={"h2": {"enabled": False}})
    _job_verified_on_h1(root, inventory, root / "n.mp4", "4", "h1: no SFTP")


def test_require_routes_jobs_to_hosts_carrying_the_labels(root: Path, hosts: TestHosts) -> None:
    labels = {"h1": {"labels": ["gpu"]}, "h2": {"labels": ["gpu", "fonts"]}, "h3": {"labels": []}}
    inventory = hosts.write_inventory(root / "labelled.toml", overrides=labels)
    d = Daemon(root, hosts_file=inventory)
    d.start()
    try:
        comp = FIXTURES / "frame-index-hook"
        # No host carries "tape": refused at submit, one line naming every host's labels.
        r = d.ctl("submit", comp, "-o", root / "never.mp4", "--require", "gpu,tape")
        assert r.returncode != 0
        assert r.stderr == "renderd: error: no host carries label(s) gpu, tape (hosts: h1[gpu], h2[gpu, fonts], h3[])\n"
        assert not (root / "never.mp4").exists() and d.json("list")["jobs"] == []

        fonts, gpu = root / "fonts.mp4", root / "gpu.mp4"
        r = d.ctl("submit", comp, "-o", fonts, "--require", "fonts", "--require", "gpu", "--chunks", "3", "--wait")
        assert r.returncode == 0, r.stderr
        r = d.ctl("submit", comp, "-o", gpu, "--require", "gpu", "--chunks", "4", "--wait")
        assert r.returncode == 0, r.stderr
        jobs = {j["output"]: j for j in d.json("list")["jobs"]}
        fonts_job, gpu_job = jobs[str(fonts)], jobs[str(gpu)]
        # The composition was loaded on the host with the labels, and only such hosts rendered.
        assert fonts_job["params"]["described"]["host"] == "h2"
        # Then any labels only probes give ("=" in them): the job's browser and its build.
        assert [label for label in fonts_job["params"]["require"] if "=" not in label] == ["fonts", "gpu"]
        assert set(_attempt_hosts(d.json("status", fonts_job["id"]))) == {"h2"}
        assert set(_attempt_hosts(d.json("status", gpu_job["id"]))) <= {"h1", "h2"}
        for out in (fonts, gpu):
            assert [decode_index(f, 320) for f in decode_frames(out, 320, 240)] == list(range(120))

        # The only carrier drained: accepted (it may come back), and said so.
        assert d.ctl("drain", "h2").returncode == 0
        later = root / "later.mp4"
        r = d.ctl("submit", comp, "-o", later, "--require", "fonts", "--frames", "0:30")
        assert r.returncode == 0, r.stderr
        job = r.stdout.strip()
        assert f"renderd: warning: {job}: the job waits: every host carrying label(s) fonts is drained" in r.stderr
        # A reload that takes the label away: the job stays queued, and status says why.
        labels["h2"] = {"labels": ["gpu"]}
        hosts.write_inventory(inventory, overrides=labels)
        assert d.ctl("reload").returncode == 0, d.log.read_text()[-2000:]
        assert d.ctl("undrain", "h2").returncode == 0
        time.sleep(3)
        status = d.json("status", job)
        assert status["job"]["state"] == "queued" and status["attempts"] == []
        assert status["job"]["waiting"].startswith("no host carries label(s) fonts (hosts: h1[gpu], h2[gpu], h3[])")
        assert "waiting: no host carries label(s) fonts" in d.ctl("status", job).stdout
        assert f"[job={job}] waits until a host carries its labels" in d.log.read_text()
        # The label back on h3: the job runs there.
        labels["h3"] = {"labels": ["fonts"]}
        hosts.write_inventory(inventory, overrides=labels)
        assert d.ctl("reload").returncode == 0
        status = wait_state(d, job, ("done", "failed"))
        assert status["job"]["state"] == "done", status["job"]
        assert status["job"]["waiting"] is None
        assert set(_attempt_hosts(status)) == {"h3"}
        assert [decode_index(f, 320) for f in decode_frames(later, 320, 240)] == list(range(30))
    finally:
        d.stop()


def _version(browser: str) -> str:
    printed = subprocess.run([browser, "--version"], capture_output=True, text=True, check=True).stdout
    return next(w for w in printed.split() if w[:1].isdigit())


def _wait_probe_done(d: Daemon, timeout: float = 120) -> None:
    deadline = time.monotonic() + timeout
    while "host probe done" not in d.log.read_text():
        assert time.monotonic() < deadline, d.log.read_text()[-2000:]
        time.sleep(0.2)


def test_a_job_keeps_one_browser_and_only_hosts_with_it_render(root: Path, hosts: TestHosts) -> None:
    """`--browser auto` takes the headless shell only when every host has one; a shell job stays on shell hosts."""
    if shutil.which("chromium-headless-shell") is None and not os.environ.get("CI"):
        pytest.skip("chromium-headless-shell is not installed (.ci/run installs it)")
    # h3 has the shell turned off, as a host with another build of it would.
    no_shell = {"h3": {"agent_command": ["env", "RENDERD_HEADLESS_SHELL=off", *AGENT]}}
    inventory = hosts.write_inventory(root / "shells.toml", overrides=no_shell)
    d = Daemon(root, hosts_file=inventory)
    d.start()
    try:
        _wait_probe_done(d)
        comp = FIXTURES / "frame-index-hook"
        auto, shell = root / "auto.mp4", root / "shell.mp4"
        r = d.ctl("submit", comp, "-o", auto, "--browser", "auto", "--chunks", "3", "--wait")
        assert r.returncode == 0, r.stderr
        r = d.ctl("submit", comp, "-o", shell, "--browser", "headless-shell", "--chunks", "4", "--wait")
        assert r.returncode == 0, r.stderr
        jobs = {j["output"]: j for j in d.json("list")["jobs"]}
        auto_job, shell_job = jobs[str(auto)], jobs[str(shell)]
        # Not every host has a shell: the whole job is captured with Chromium screenshots, by the
        # one Chromium build the hosts run (pinned: a host on another build would not take it).
        build = _version("/usr/bin/chromium")
        assert auto_job["params"]["browser"] == "chromium"
        assert auto_job["params"]["require"] == [f"chromium={build}"]
        # The shell job is recorded as such and only h1 and h2 rendered its chunks.
        assert shell_job["params"]["browser"] == "headless-shell"
        shell_build = _version("/usr/bin/chromium-headless-shell")
        assert shell_job["params"]["require"] == ["browser=headless-shell", f"headless-shell={shell_build}"]
        assert set(_attempt_hosts(d.json("status", shell_job["id"]))) <= {"h1", "h2"}
        for out in (auto, shell):
            assert [decode_index(f, 320) for f in decode_frames(out, 320, 240)] == list(range(120))

        # With the shell off on every host, a shell job is refused in one line naming the hosts.
        off = {h: no_shell["h3"] for h in ("h1", "h2", "h3")}
        hosts.write_inventory(inventory, overrides=off)
        assert d.ctl("reload").returncode == 0
        deadline = time.monotonic() + 120
        while d.log.read_text().count("host probe done") < 2:
            assert time.monotonic() < deadline
            time.sleep(0.2)
        r = d.ctl("submit", comp, "-o", root / "never.mp4", "--browser", "headless-shell")
        assert r.returncode != 0
        assert r.stderr.startswith("renderd: error: no host has chromium-headless-shell (the job's browser")
        assert r.stderr.count("\n") == 1 and "h1[]" in r.stderr
    finally:
        d.stop()
