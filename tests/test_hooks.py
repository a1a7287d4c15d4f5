"""Job hooks, `renderd retry` and job retention, with real parts.

Hooks: a real HTTP receiver on 127.0.0.1 (http.server in a thread) and real commands; jobs render
with the real agent and Chromium on a local host, in a Coordinator driven in this test's event
loop; failures are real ones (a page that throws) except where a test needs exactly one chunk to
fail, where a LocalTransport subclass injects the fault. The CLI and the refusal of command hooks
for an unprivileged submitter go through a real daemon process and a throwaway user.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import shutil
import subprocess
import sys
import threading
import time
from collections.abc import AsyncIterator, Callable
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest
from conftest import FIXTURES
from daemonctl import Daemon, wait_state
from users import ThrowawayUser, needs_root_and_user_tools

from renderd.assignment import Assignment
from renderd.config import load_daemon_config, load_inventory
from renderd.coordinator.daemon import Coordinator
from renderd.coordinator.models import JobState, NewJob
from renderd.coordinator.protocol import Request
from renderd.coordinator.retention import Pruner
from renderd.coordinator.server import Peer
from renderd.coordinator.store import Store
from renderd.coordinator.transport import EventSink, LocalTransport
from renderd.encode import probe_video
from renderd.errors import AgentFailed, ConfigError, ControlError

PARAMS = {"fps": "30/1", "width": 320, "height": 240, "duration": "4", "format": "mp4", "workers": 1}
ROOT = Peer(pid=1, uid=0, gid=0)


class Receiver:
    """An HTTP server on 127.0.0.1 that records POSTs; ``statuses[path]`` lists the answers, then 200."""

    def __init__(self, statuses: dict[str, list[int]] | None = None) -> None:
        self.statuses = statuses or {}
        self.requests: list[tuple[str, dict[str, str], Any, float]] = []
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:  # noqa: N802 - http.server's name
                body = self.rfile.read(int(self.headers.get("Content-Length", "0")))
                receiver.requests.append((self.path, dict(self.headers), json.loads(body), time.monotonic()))
                answers = receiver.statuses.get(self.path, [])
                self.send_response(answers.pop(0) if answers else 200)
                self.send_header("Content-Length", "0")
                self.end_headers()

            def log_message(self, *args: Any) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()

    def url(self, path: str) -> str:
        return f"http://127.0.0.1:{self.server.server_address[1]}{path}"

    def posts(self, path: str) -> list[Any]:
        return [r[2] for r in self.requests if r[0] == path]

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture
def receiver() -> Any:
    r = Receiver()
    yield r
    r.close()


def stdin_to(path: Path) -> str:
    """A command hook that writes its stdin and its RENDERD_* environment to ``path``."""
    script = 'import json, os, sys; d = json.load(sys.stdin); d["env"] = {k: v for k, v in os.environ.items() ' + (
        f'if k.startswith("RENDERD_")}}; open("{path}", "w").write(json.dumps(d))'
    )
    return f"{sys.executable} -c '{script}'"


def write_config(root: Path, extra: str = "", slots: int = 1) -> Path:
    path = root / "renderd.toml"
    path.write_text(
        f'[daemon]\nsocket = "{root / "renderd.sock"}"\nstate_dir = "{root / "state"}"\n'
        f'hosts_file = "{root / "hosts.toml"}"\nwatchdog = false\n'
        f"[scheduling]\nmax_attempts = 1\nhost_failure_quarantine = 100\n{extra}"
    )
    agent = json.dumps([sys.executable, "-m", "renderd", "agent"])
    (root / "hosts.toml").write_text(
        f'[[hosts]]\nname = "local"\naddress = "local"\nslots = {slots}\nworkers = 1\nagent_command = {agent}\n'
    )
    return path


@contextlib.asynccontextmanager
async def coordinator(root: Path, extra: str = "", slots: int = 1) -> AsyncIterator[Coordinator]:
    """A Coordinator started and serving in this loop; stopped and shut down on exit."""
    path = write_config(root, extra, slots)
    coord = Coordinator(load_daemon_config(path), load_inventory(root / "hosts.toml"), config_path=path)
    await coord.startup()
    serving = asyncio.create_task(coord.serve())
    try:
        yield coord
    finally:
        coord.request_stop()
        await asyncio.wait([serving], timeout=30)
        await coord.shutdown()


async def add_job(
    store: Store, chunks: list[tuple[int, int]], out: Path, composition: Path | None = None, **params: Any
) -> str:
    comp = composition or FIXTURES / "frame-index-hook"
    spec = NewJob(str(comp), str(out), {**PARAMS, **params}, 120, 0, chunks[-1][1], submitted_by_uid=0)
    return (await store.create_job(spec, chunks)).id


async def until(check: Callable[[], Any], what: str, timeout: float = 120) -> Any:
    """Poll ``check`` (sync or async) until it returns something truthy."""
    deadline = time.monotonic() + timeout
    while True:
        value = check()
        if asyncio.iscoroutine(value):
            value = await value
        if value:
            return value
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        await asyncio.sleep(0.1)


async def kinds(store: Store, job_id: str) -> list[str]:
    return [e.kind for e in await store.get_events(job_id)]


async def state_of(store: Store, job_id: str) -> JobState | None:
    job = await store.get_job(job_id)
    return None if job is None else job.state


# -- hooks -----------------------------------------------------------------------------------


async def test_hooks_fire_on_done_without_holding_up_the_scheduler(short_tmp: Path, receiver: Receiver) -> None:
    done_file, slow_file, flag = short_tmp / "done.json", short_tmp / "slow.json", short_tmp / "slow"
    flag.touch()
    # Job A's own hook sleeps while the flag exists: it must not delay job B.
    slow = f"/bin/sh -c 'while [ -e {flag} ]; do sleep 0.2; done; cat > {slow_file}'"
    hooks = f'[hooks]\non_done = ["{receiver.url("/done")}", {json.dumps(stdin_to(done_file))}]\ntimeout = "120s"\n'
    async with coordinator(short_tmp, hooks) as coord:
        assert coord.store is not None and coord.hooks is not None
        store = coord.store
        a = await add_job(store, [(0, 6)], short_tmp / "a.mp4", notify=[slow])
        await coord.handle(Request("cancel", {"job": a}), ROOT)
        await until(lambda: coord.hooks is not None and coord.hooks.pending() == 1, "job A's hook to start")
        b = await add_job(store, [(0, 6), (6, 12)], short_tmp / "b.mp4", notify=[receiver.url("/mine")])
        await until(lambda: receiver.posts("/done") and receiver.posts("/mine") and done_file.exists(), "B's hooks")
        assert await state_of(store, b) is JobState.DONE
        # A's hook is still waiting: B rendered, assembled and notified meanwhile.
        assert coord.hooks.pending() == 1 and not slow_file.exists()
        assert "hook_delivered" not in await kinds(store, a)
    (post,) = receiver.posts("/done")
    assert post["id"] == b and post["state"] == "done" and post["hook"] == "on_done"
    assert post["frames"] == 12 and post["output"] == str(short_tmp / "b.mp4") and post["error"] is None
    assert post["timings"]["finished_at"] >= post["timings"]["started_at"] > 0
    assert "notify" not in post["job"]["params"]  # another target's URL is not handed around
    assert receiver.posts("/mine")[0]["id"] == b
    by_command = json.loads(done_file.read_text())
    assert by_command["id"] == b and by_command["state"] == "done"
    assert by_command["env"]["RENDERD_JOB_ID"] == b and by_command["env"]["RENDERD_JOB_STATE"] == "done"
    assert (await probe_video(short_tmp / "b.mp4")).frames == 12
    # The shutdown gave up on A's hook; the next start delivers it again.
    flag.unlink()
    async with coordinator(short_tmp, hooks) as coord:
        assert coord.store is not None
        await until(lambda: slow_file.exists() and slow_file.stat().st_size, "A's hook to be delivered again")
        await until(lambda: _has(coord.store, a, "hook_delivered"), "the delivery to be recorded")
        assert json.loads(slow_file.read_text())["state"] == "cancelled"
        # B's hooks were settled: they are not sent again.
        await asyncio.sleep(1.5)
        assert len(receiver.posts("/done")) == 1


async def _has(store: Store | None, job_id: str, kind: str) -> bool:
    assert store is not None
    return kind in await kinds(store, job_id)


async def test_hooks_fire_on_failure_with_retries_and_backoff(short_tmp: Path) -> None:
    receiver = Receiver({"/flaky": [500], "/down": [500, 503, 500]})
    failed_file = short_tmp / "failed.json"
    hooks = (
        f'[hooks]\non_failed = ["{receiver.url("/flaky")}", "{receiver.url("/down")}", '
        f'{json.dumps(stdin_to(failed_file))}]\nattempts = 3\nbackoff = "300ms"\n'
    )
    try:
        async with coordinator(short_tmp, hooks) as coord:
            assert coord.store is not None
            store = coord.store
            # A real failure: the page throws while loading, the one allowed attempt fails, the job fails.
            job = await add_job(
                store, [(0, 6)], short_tmp / "x.mp4", composition=FIXTURES / "bad-script-error", duration="2"
            )
            await until(lambda: _has(store, job, "failed"), "the job to fail")
            await until(lambda: _settled(store, job, 3), "every hook to settle")
            events = {(e.kind, e.data.get("hook")): e for e in await store.get_events(job)}
            delivered = [e for e in await store.get_events(job) if e.kind == "hook_delivered"]
            failed = [e for e in await store.get_events(job) if e.kind == "hook_failed"]
            assert ("hook_failed", "on_failed") in events
    finally:
        receiver.close()
    flaky = [r for r in receiver.requests if r[0] == "/flaky"]
    assert len(flaky) == 2 and flaky[1][3] - flaky[0][3] >= 0.3  # tried again after the backoff
    assert flaky[1][2]["state"] == "failed" and "boom from composition" in flaky[1][2]["error"]
    assert flaky[1][1]["X-Renderd-Job"] == job
    assert len(receiver.posts("/down")) == 3
    down = receiver.requests[-1][3] - [r for r in receiver.requests if r[0] == "/down"][0][3]
    assert down >= 0.3 + 0.6  # 300 ms, then twice that
    assert sorted(e.data["attempts"] for e in delivered) == [1, 2]
    (gave_up,) = failed
    assert gave_up.data["attempts"] == 3 and gave_up.data["error"].startswith("HTTP 500")
    assert gave_up.data["target"] == f"http://127.0.0.1:{receiver.server.server_address[1]}/..."
    by_command = json.loads(failed_file.read_text())
    assert by_command["state"] == "failed" and by_command["env"]["RENDERD_HOOK"] == "on_failed"


async def _settled(store: Store, job_id: str, n: int) -> bool:
    return sum(k in ("hook_delivered", "hook_failed") for k in await kinds(store, job_id)) == n


async def test_unprivileged_notify_targets_are_checked() -> None:
    from renderd.config import DaemonConfig
    from renderd.coordinator.hooks import job_targets
    from renderd.netguard import AddressPolicy

    config = DaemonConfig()
    assert job_targets(["/bin/true --x", "http://127.0.0.1/x"], 0, config) == ["/bin/true --x", "http://127.0.0.1/x"]
    assert job_targets(["/bin/true"], os.getuid(), config) == ["/bin/true"]
    with pytest.raises(ControlError, match=r"uid 4242 may not run a command as the daemon's user"):
        job_targets(["/bin/true"], 4242, config)
    with pytest.raises(ControlError, match=r"127\.0\.0\.1 is not a public address"):
        job_targets(["http://127.0.0.1:8080/hook"], 4242, config)
    allowed = DaemonConfig(prepare_allow=AddressPolicy.parse(["127.0.0.1"]))
    assert job_targets(["http://127.0.0.1:8080/hook"], 4242, allowed)
    with pytest.raises(ControlError, match="only http:// and https:// URLs"):
        job_targets(["ftp://example.com/x"], 0, config)


async def test_unprivileged_url_to_a_private_name_is_refused_at_delivery(short_tmp: Path, receiver: Receiver) -> None:
    # `localhost` is a name: it passes at submit, and the guard refuses it where it would connect.
    async with coordinator(short_tmp, '[hooks]\nattempts = 3\nbackoff = "50ms"\n') as coord:
        assert coord.store is not None
        url = receiver.url("/x").replace("127.0.0.1", "localhost")
        spec = NewJob(str(FIXTURES / "frame-index-hook"), str(short_tmp / "o.mp4"), {**PARAMS, "notify": [url]},
                      120, 0, 6, submitted_by_uid=4242)  # fmt: skip
        job = (await coord.store.create_job(spec, [(0, 6)])).id
        await coord.handle(Request("cancel", {"job": job}), ROOT)
        await until(lambda: _has(coord.store, job, "hook_failed"), "the refusal to be recorded")
        (event,) = [e for e in await coord.store.get_events(job) if e.kind == "hook_failed"]
    assert receiver.requests == []
    assert event.data["attempts"] == 1 and "not a public address" in event.data["error"]


def test_cli_submit_notify_hooks_logs_and_retry_refusals(short_tmp: Path, receiver: Receiver) -> None:
    """The CLI path in a real daemon: --notify URL and command fire on done; `logs` shows it; retry refuses."""
    d = Daemon(short_tmp)
    d.start()
    try:
        out, by_command = short_tmp / "out.mp4", short_tmp / "cmd.json"
        r = d.ctl(
            "submit", FIXTURES / "frame-index-hook", "-o", out, "--frames", "0:6", "--workers", "1",
            "--notify", receiver.url("/cli"), "--notify", stdin_to(by_command),
        )  # fmt: skip
        assert r.returncode == 0, r.stderr
        job = r.stdout.strip()
        wait_state(d, job, ("done",))
        deadline = time.monotonic() + 60
        while not (receiver.posts("/cli") and by_command.exists()) and time.monotonic() < deadline:
            time.sleep(0.2)
        assert receiver.posts("/cli")[0]["id"] == job and json.loads(by_command.read_text())["state"] == "done"
        logs = ""
        while logs.count("hook_delivered") < 2 and time.monotonic() < deadline:
            logs = d.ctl("logs", job).stdout
            time.sleep(0.2)
        assert logs.count("hook_queued") == 2 and logs.count("hook_delivered") == 2, logs
        assert (subprocess.run(["ffprobe", "-v", "error", "-count_frames", "-select_streams", "v:0", "-show_entries",
                                "stream=nb_read_frames", "-of", "csv=p=0", out], capture_output=True, text=True,
                               check=True).stdout.strip() == "6")  # fmt: skip
        # `renderd retry`: a done job and an unknown one are one-line errors with a non-zero exit.
        r = d.ctl("retry", job)
        assert r.returncode != 0
        assert r.stderr == f"renderd: error: job {job} is done; only a failed job can be retried\n"
        r = d.ctl("retry", "j-0000000000")
        assert r.returncode != 0 and r.stderr.strip() == "renderd: error: no job 'j-0000000000'"
    finally:
        d.stop()


@needs_root_and_user_tools
def test_cli_notify_command_refused_for_an_unprivileged_submitter(
    short_tmp: Path, throwaway_user: ThrowawayUser
) -> None:
    d = Daemon(short_tmp)
    d.allow_uids(throwaway_user.uid)
    d.start(socket_mode="0666")
    try:
        comp = short_tmp / "comp"
        shutil.copytree(FIXTURES / "frame-index-hook", comp)
        for target, refusal in (
            ("/bin/touch /tmp/pwned", f"uid {throwaway_user.uid} may not run a command as the daemon's user"),
            ("http://127.0.0.1:9/hook", "127.0.0.1 is not a public address"),
        ):
            argv = throwaway_user.renderd_argv(
                "submit", comp, "-o", short_tmp / "out.mp4", "--notify", target, "--socket", d.socket
            )
            r = subprocess.run(argv, capture_output=True, text=True, timeout=120, cwd="/")
            assert r.returncode != 0
            assert r.stderr.count("\n") == 1 and r.stderr.startswith("renderd: error: "), r.stderr
            assert refusal in r.stderr
        assert d.json("list")["jobs"] == []
    finally:
        d.stop()


# -- retry -----------------------------------------------------------------------------------


class FailsChunk(LocalTransport):
    """A local host whose agent fails chunk ``index`` (not retryable) while ``broken`` is set."""

    def __init__(self, base: LocalTransport, index: int) -> None:
        super().__init__(base.name, base._jobs_dir, base._command)
        self.index = index
        self.broken = True

    async def run_chunk(self, assignment: Assignment, on_event: EventSink, *, timeout: float) -> dict[str, Any]:
        if self.broken and assignment.chunk_index == self.index:
            raise AgentFailed("injected failure", host=self.name, retryable=False)
        return await super().run_chunk(assignment, on_event, timeout=timeout)


async def test_retry_renders_only_the_unverified_chunks(short_tmp: Path) -> None:
    out = short_tmp / "out.mp4"
    async with coordinator(short_tmp) as coord:
        assert coord.store is not None and coord.scheduler is not None
        store = coord.store
        rt = coord.scheduler.hosts["local"]
        assert isinstance(rt.transport, LocalTransport)
        rt.transport = faulty = FailsChunk(rt.transport, 1)
        job = await add_job(store, [(0, 6), (6, 12)], out)
        coord.scheduler.wake()
        await until(lambda: _has(store, job, "failed"), "the job to fail")
        kept = (await store.get_chunks(job))[0]
        assert kept.state.value == "verified" and Path(kept.output_path or "").is_file()
        assert not out.exists()
        faulty.broken = False
        reply = json.loads(await coord.handle(Request("retry", {"job": job}), ROOT))
        assert reply["ok"] and reply["requeued"] == 1 and reply["job"]["state"] == "queued"
        await until(lambda: _has(store, job, "done"), "the retried job to finish")
        after = (await store.get_chunks(job))[0]
        assert (after.attempts, after.attempt_id, after.sha256) == (kept.attempts, kept.attempt_id, kept.sha256)
        attempts = await store.get_attempts(job)
        assert [(a.chunk_index, a.outcome.value) for a in attempts] == [(0, "verified"), (1, "failed"), (1, "verified")]
        assert "retried" in await kinds(store, job)
        with pytest.raises(ControlError, match=rf"job {job} is done; only a failed job can be retried"):
            await coord.handle(Request("retry", {"job": job}), ROOT)
    assert (await probe_video(out)).frames == 12


async def test_retry_counts_attempts_afresh_and_refuses_other_states(tmp_path: Path) -> None:
    store = await Store.open(tmp_path / "state" / "renderd.db", max_attempts=2)

    async def fail_once(job: str) -> bool:
        claim = await store.claim_chunk("h")
        assert claim is not None
        failure = await store.mark_chunk_failed(job, 0, claim.attempt.id, "boom")
        assert failure is not None
        return failure.job_failed

    try:
        job = await add_job(store, [(0, 6)], tmp_path / "o.mp4")
        assert not await fail_once(job) and await fail_once(job)
        assert await store.retry_job(job) is not None
        assert await state_of(store, job) is JobState.QUEUED
        # The failures before the retry do not count: the chunk gets max_attempts new ones.
        assert not await fail_once(job)
        assert await fail_once(job)
        assert await store.retry_job(job) is not None
        await store.cancel_job(job)
        assert await store.retry_job(job) is None  # cancelled: not retried
    finally:
        await store.close()


# -- retention -------------------------------------------------------------------------------


async def test_retention_prunes_old_finished_jobs_and_their_files(tmp_path: Path) -> None:
    from renderd.config import DaemonConfig

    now = [1_000_000.0]
    state = tmp_path / "state"
    store = await Store.open(state / "renderd.db", clock=lambda: now[0])
    try:
        prepared = state / "cache" / "prepared"
        old_copy, shared_copy = prepared / "aaa", prepared / "bbb"
        for d in (old_copy, shared_copy):
            d.mkdir(parents=True)
            (d / "index.html").write_text("x")
        old = await add_job(store, [(0, 6)], tmp_path / "old.mp4", prepared=str(old_copy / "index.html"))
        shared_old = await add_job(store, [(0, 6)], tmp_path / "s.mp4", prepared=str(shared_copy / "index.html"))
        elsewhere = tmp_path / "elsewhere"  # a prepared copy under $RENDERD_CACHE_DIR: not the daemon's
        elsewhere.mkdir()
        (elsewhere / "index.html").write_text("x")
        outside = await add_job(store, [(0, 6)], tmp_path / "e.mp4", prepared=str(elsewhere / "index.html"))
        for job in (old, shared_old, outside):
            await store.cancel_job(job)
        now[0] += 8 * 86400
        new = await add_job(store, [(0, 6)], tmp_path / "new.mp4", prepared=str(shared_copy / "index.html"))
        await store.cancel_job(new)
        running = await add_job(store, [(0, 6)], tmp_path / "run.mp4")
        for job in (old, shared_old, new, running):
            (state / "jobs" / job).mkdir(parents=True)
            (state / "jobs" / job / "chunk-00000-a1.mp4").write_bytes(b"chunk")
        (tmp_path / "old.mp4").write_bytes(b"the user's video")
        config = load_daemon_config(write_config(tmp_path, '[retention]\nkeep_finished = "7d"\n'))
        assert config.keep_finished == 7 * 86400
        pruned = await Pruner(store, config).prune(now=now[0])
        assert sorted(pruned) == sorted([old, shared_old, outside])
        assert (elsewhere / "index.html").is_file()
        for job in (old, shared_old):
            assert await store.get_job(job) is None and await store.get_events(job) == []
            assert not (state / "jobs" / job).exists()
        for job in (new, running):
            assert await store.get_job(job) is not None and (state / "jobs" / job).is_dir()
        assert not old_copy.exists() and (shared_copy / "index.html").is_file()  # the newer job still uses it
        assert (tmp_path / "old.mp4").read_bytes() == b"the user's video"
        # Forever by default.
        assert await Pruner(store, DaemonConfig()).prune(now=now[0] + 10**9) == []
    finally:
        await store.close()


def test_hooks_and_retention_config_errors(tmp_path: Path) -> None:
    path = write_config(
        tmp_path,
        '[hooks]\non_done = ["ftp://x/y"]\non_failed = ["https://"]\nattempts = 0\n'
        '[retention]\nkeep_finished = "a week"\n',
    )
    with pytest.raises(ConfigError) as info:
        load_daemon_config(path)
    lines = info.value.problems
    assert any("hooks.on_done[0]" in p and "only http:// and https:// URLs" in p for p in lines), lines
    assert any("hooks.on_failed[0]" in p and "is not a URL with a host" in p for p in lines), lines
    assert any("hooks.attempts" in p for p in lines), lines
    assert any("retention.keep_finished" in p for p in lines), lines
