"""The dashboard and ``/metrics``: an aiohttp listener inside the daemon (``[web]`` in renderd.toml).

Reading is open (on loopback by default); actions (cancel, retry, drain, undrain) need the bearer
token of ``web.token_file`` and go through the daemon's own operation handler, the code path of
the control socket, as the daemon's own user. Live updates are Server-Sent Events: one producer
task builds a farm snapshot when any job's progress changes (the events ``renderd watch`` follows)
or every second, and hands it to every connected page.

Thumbnails are single frames that ffmpeg extracts from verified chunk files (never a browser),
cached by the chunk's sha256, so a job's pictures stay after its chunk files are cleaned up.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import hmac
import json
import logging
import os
import tarfile
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

from aiohttp import web

from renderd.config import WebConfig
from renderd.coordinator import protocol
from renderd.coordinator.metrics import CONTENT_TYPE, FarmMetrics
from renderd.coordinator.models import Chunk, ChunkState, Job
from renderd.coordinator.scheduler import Scheduler
from renderd.coordinator.server import Handler, Peer
from renderd.coordinator.store import Store
from renderd.errors import ConfigError, ControlError, RenderdError
from renderd.netguard import is_loopback_name

log = logging.getLogger(__name__)

WEBUI = Path(__file__).parent / "webui"
ASSETS = {"index.html": "text/html", "app.js": "text/javascript", "style.css": "text/css"}
JOBS_SHOWN = 50
SNAPSHOT_INTERVAL_S = 1.0  # a snapshot at least this often while a page is connected
CHANGE_POLL_S = 0.25  # how soon a progress change reaches the pages
KEEPALIVE_S = 15.0
THUMB_TIMEOUT_S = 20.0
THUMB_WIDTH = 320
THUMB_CACHE = 128
STOP_TIMEOUT_S = 5.0
# Answers to the control protocol's error codes.
HTTP_STATUS = {
    protocol.FORBIDDEN: 403,
    protocol.NOT_FOUND: 404,
    protocol.INVALID_STATE: 409,
    protocol.SHUTTING_DOWN: 503,
    protocol.INTERNAL: 500,
}
JOB_OPS = ("cancel", "retry")
HOST_OPS = ("drain", "undrain")
CSP = "default-src 'self'; img-src 'self' data:; style-src 'self'; script-src 'self'; frame-ancestors 'none'"

Summary = Callable[[Job], Awaitable[dict[str, Any]]]
HostList = Callable[[], Awaitable[list[dict[str, Any]]]]


async def read_token(config: WebConfig) -> str | None:
    """Return the action token of ``config`` (None: no token_file); raise ConfigError if it is unusable."""
    if config.token_file is None:
        return None
    path = config.token_file
    try:
        token = (await asyncio.to_thread(path.read_text, encoding="utf-8")).strip()
    except (OSError, UnicodeDecodeError) as exc:
        raise ConfigError(str(path), [f"{path}: web.token_file: cannot read the token: {exc}"]) from None
    if len(token) < 16 or any(c.isspace() for c in token):
        raise ConfigError(str(path), [f"{path}: web.token_file: the token must be one word of 16 characters or more"])
    return token


class WebServer:
    """The dashboard, its JSON/SSE API, the thumbnails and ``/metrics`` of one coordinator."""

    def __init__(
        self,
        config: WebConfig,
        *,
        store: Store,
        scheduler: Scheduler,
        handle: Handler,
        summary: Summary,
        hosts: HostList,
        metrics: FarmMetrics,
        source: Path | None = None,
    ) -> None:
        self.config = config
        self.source = source  # the config file, named in errors
        self._store = store
        self._scheduler = scheduler
        self._handle = handle
        self._summary = summary
        self._hosts = hosts
        self.metrics = metrics
        self._token: str | None = None
        self._assets: dict[str, bytes] = {}
        self._runner: web.AppRunner | None = None
        self._producer: asyncio.Task[None] | None = None
        self._subscribers: set[asyncio.Queue[bytes | None]] = set()
        self._thumbs: collections.OrderedDict[str, bytes] = collections.OrderedDict()
        self._thumb_lock = asyncio.Lock()  # one ffmpeg at a time: thumbnails never compete with renders
        self.address: tuple[str, int] | None = None

    # -- lifecycle -------------------------------------------------------------------------

    async def start(self) -> None:
        """Read the token and the page, then listen; raise ConfigError or RenderdError when that fails."""
        self._token = await read_token(self.config)
        self._assets = await asyncio.to_thread(lambda: {n: (WEBUI / n).read_bytes() for n in ASSETS})
        app = web.Application(middlewares=[self._guard])
        app.router.add_get("/", self._index)
        app.router.add_get("/static/{name}", self._asset)
        app.router.add_get("/metrics", self._metrics)
        app.router.add_get("/api/farm", self._farm)
        app.router.add_get("/api/events", self._events)
        app.router.add_get("/api/jobs/{job}/{which:thumb|poster}", self._thumb)
        app.router.add_post("/api/jobs/{job}/{op}", self._job_action)
        app.router.add_post("/api/hosts/{host}/{op}", self._host_action)
        runner = web.AppRunner(app, access_log=None, shutdown_timeout=STOP_TIMEOUT_S)
        await runner.setup()
        site = web.TCPSite(runner, self.config.host, self.config.port, shutdown_timeout=STOP_TIMEOUT_S)
        try:
            await site.start()
        except OSError as exc:
            await runner.cleanup()
            where = f"{self.source}: " if self.source else ""
            raise RenderdError(
                f"{where}web.listen: cannot listen on {self.config.host}:{self.config.port}: {exc}"
            ) from None
        self._runner = runner
        bound = runner.addresses  # the real port when listen asked for port 0
        self.address = (str(bound[0][0]), int(bound[0][1])) if bound else (self.config.host, self.config.port)
        self._producer = asyncio.create_task(self._produce(), name="web-snapshots")
        actions = "with actions" if self._token else "read-only (no web.token_file)"
        log.info("dashboard on http://%s:%d/ %s", self.address[0], self.address[1], actions)

    async def reload(self, config: WebConfig) -> None:
        """Take a new token file (a listen change needs a restart); keep the old token if it is unusable."""
        if config.host != self.config.host or config.port != self.config.port:
            log.warning("reload: web.listen changes need a restart; kept %s:%d", self.config.host, self.config.port)
            config = WebConfig(self.config.host, self.config.port, config.token_file)
        try:
            self._token = await read_token(config)
        except ConfigError as exc:
            log.error("reload: %s; kept the old token", "; ".join(exc.problems))
            return
        self.config = config

    async def stop(self) -> None:
        """End every event stream, stop the producer and close the listener."""
        for q in list(self._subscribers):
            _offer(q, None)
        if self._producer is not None:
            self._producer.cancel()
            await asyncio.wait([self._producer], timeout=STOP_TIMEOUT_S)
            self._producer = None
        if self._runner is not None:
            with contextlib.suppress(Exception):
                await asyncio.wait_for(self._runner.cleanup(), STOP_TIMEOUT_S * 2)
            self._runner = None

    # -- middleware ------------------------------------------------------------------------

    @web.middleware
    async def _guard(
        self, request: web.Request, handler: Callable[[web.Request], Awaitable[web.StreamResponse]]
    ) -> web.StreamResponse:
        # On loopback a page from elsewhere could still reach us by DNS rebinding: only names of this machine.
        if self.config.loopback and not _loopback_host(request.host):
            return web.json_response(
                _error(protocol.FORBIDDEN, "this listener answers loopback names only"), status=421
            )
        response = await handler(request)
        response.headers.setdefault("Content-Security-Policy", CSP)
        response.headers.setdefault("X-Content-Type-Options", "nosniff")
        response.headers.setdefault("Cache-Control", "no-store")
        return response

    # -- pages and data --------------------------------------------------------------------

    async def _index(self, request: web.Request) -> web.Response:
        return web.Response(body=self._assets["index.html"], content_type="text/html", charset="utf-8")

    async def _asset(self, request: web.Request) -> web.Response:
        name = request.match_info["name"]
        if name not in ASSETS or name == "index.html":
            raise web.HTTPNotFound()
        return web.Response(body=self._assets[name], content_type=ASSETS[name], charset="utf-8")

    async def _metrics(self, request: web.Request) -> web.Response:
        body = await self.metrics.scrape(self._store, await self._hosts(), streams=len(self._subscribers))
        return web.Response(body=body, headers={"Content-Type": CONTENT_TYPE})

    async def _farm(self, request: web.Request) -> web.Response:
        return web.json_response(await self.snapshot(), dumps=_dumps)

    async def snapshot(self) -> dict[str, Any]:
        """Return the jobs (newest first) and hosts as the page shows them."""
        jobs = []
        for job in await self._store.list_jobs(limit=JOBS_SHOWN):
            summary = await self._summary(job)
            chunks = await self._store.get_chunks(job.id)
            latest = _latest_verified(chunks)
            first = chunks[0] if chunks and chunks[0].state is ChunkState.VERIFIED and chunks[0].sha256 else None
            summary.update(
                chunks_by_state=dict(collections.Counter(c.state.value for c in chunks)),
                chunks_by_host=dict(collections.Counter(c.host for c in chunks if c.host)),
                thumb=latest.sha256 if latest else None,
                poster=first.sha256 if first else None,
            )
            jobs.append(summary)
        return {"jobs": jobs, "hosts": await self._hosts(), "actions": self._token is not None, "ts": time.time()}

    # -- live updates ----------------------------------------------------------------------

    async def _events(self, request: web.Request) -> web.StreamResponse:
        response = web.StreamResponse(headers={"Content-Type": "text/event-stream", "X-Accel-Buffering": "no"})
        await response.prepare(request)
        queue: asyncio.Queue[bytes | None] = asyncio.Queue(maxsize=1)
        self._subscribers.add(queue)
        try:
            await response.write(_event(await self.snapshot()))
            while True:
                try:
                    data = await asyncio.wait_for(queue.get(), KEEPALIVE_S)
                except TimeoutError:
                    data = b": keepalive\n\n"
                if data is None:
                    break
                await response.write(data)
        except ConnectionError:
            pass  # the page went away: its next write failed; nothing of it is left behind
        finally:
            self._subscribers.discard(queue)
        return response

    async def _produce(self) -> None:
        """Build a snapshot when progress changes (or every second) while a page listens."""
        seen: dict[str, int] = {}
        last = 0.0
        while True:
            await asyncio.sleep(CHANGE_POLL_S)
            if not self._subscribers:
                continue
            versions = {job: p.version for job, p in self._scheduler.progress.items()}
            if versions == seen and time.monotonic() - last < SNAPSHOT_INTERVAL_S:
                continue
            seen, last = versions, time.monotonic()
            try:
                data = _event(await self.snapshot())
            except Exception:  # a failing store delays updates; the next round tries again
                log.exception("dashboard snapshot failed")
                continue
            for q in list(self._subscribers):
                _offer(q, data)

    # -- thumbnails ------------------------------------------------------------------------

    async def _thumb(self, request: web.Request) -> web.Response:
        chunks = await self._store.get_chunks(request.match_info["job"])
        if request.match_info["which"] == "poster":
            chunk = chunks[0] if chunks and chunks[0].state is ChunkState.VERIFIED else None
        else:
            chunk = _latest_verified(chunks)
        if chunk is None or not chunk.sha256:
            raise web.HTTPNotFound(text="no verified chunk yet")
        image = await self._frame_of(chunk)
        if image is None:
            raise web.HTTPNotFound(text="the chunk file is gone")
        return web.Response(body=image, content_type="image/jpeg", headers={"Cache-Control": "max-age=86400"})

    async def _frame_of(self, chunk: Chunk) -> bytes | None:
        assert chunk.sha256 is not None
        key = chunk.sha256
        async with self._thumb_lock:
            if key in self._thumbs:
                self._thumbs.move_to_end(key)
                return self._thumbs[key]
            image = await _extract_frame(Path(chunk.output_path or ""))
            if image is not None:
                self._thumbs[key] = image
                while len(self._thumbs) > THUMB_CACHE:
                    self._thumbs.popitem(last=False)
            return image

    # -- actions ---------------------------------------------------------------------------

    async def _job_action(self, request: web.Request) -> web.Response:
        op = request.match_info["op"]
        if op not in JOB_OPS:
            raise web.HTTPNotFound()
        return await self._act(request, {"op": op, "job": request.match_info["job"]})

    async def _host_action(self, request: web.Request) -> web.Response:
        op = request.match_info["op"]
        if op not in HOST_OPS:
            raise web.HTTPNotFound()
        return await self._act(request, {"op": op, "host": request.match_info["host"]})

    async def _act(self, request: web.Request, fields: dict[str, Any]) -> web.Response:
        refusal = self._refusal(request)
        if refusal is not None:
            return web.json_response(_error(protocol.FORBIDDEN, refusal), status=403)
        # The socket's own parsing and handler: the dashboard gets exactly the checks a CLI gets.
        peer = Peer(os.getpid(), os.getuid(), os.getgid())
        try:
            reply = await self._handle(protocol.parse_request(json.dumps(fields).encode()), peer)
        except ControlError as exc:
            return web.json_response(_error(exc.code, str(exc)), status=HTTP_STATUS.get(exc.code, 400))
        except RenderdError as exc:
            return web.json_response(_error(protocol.BAD_INPUT, str(exc)), status=400)
        except Exception as exc:  # as on the socket: a bug answers one error, the daemon stays up
            log.exception("dashboard action %s failed", fields["op"])
            return web.json_response(_error(protocol.INTERNAL, f"internal error: {type(exc).__name__}"), status=500)
        assert isinstance(reply, bytes), "actions answer with one line"
        answer = json.loads(reply)
        log.info("dashboard: %s %s from %s", fields["op"], fields.get("job") or fields.get("host"), request.remote)
        return web.json_response(answer)

    def _refusal(self, request: web.Request) -> str | None:
        if self._token is None:
            return "actions are off: the daemon has no web.token_file"
        scheme, _, given = request.headers.get("Authorization", "").partition(" ")
        if scheme.lower() != "bearer" or not hmac.compare_digest(given.strip().encode(), self._token.encode()):
            return "a valid token is needed for actions (Authorization: Bearer <token>)"
        return None


def _latest_verified(chunks: list[Chunk]) -> Chunk | None:
    verified = [c for c in chunks if c.state is ChunkState.VERIFIED and c.sha256]
    return max(verified, key=lambda c: (c.updated_at, c.index)) if verified else None


async def _extract_frame(part: Path) -> bytes | None:
    """Return the first frame of a chunk file as a small JPEG, or None if the file is gone or unreadable."""
    if not await asyncio.to_thread(part.is_file):
        return None
    stdin: bytes | None = None
    source = str(part)
    if part.suffix == ".tar":
        stdin = await asyncio.to_thread(_first_png, part)
        if stdin is None:
            return None
        source = "pipe:0"
    cmd = ["ffmpeg", "-v", "error", *(["-nostdin"] if stdin is None else []), "-i", source, "-frames:v", "1"]
    cmd += ["-vf", f"scale='min({THUMB_WIDTH},iw)':-2,format=yuvj420p", "-f", "image2pipe", "-c:v", "mjpeg"]
    cmd += ["-q:v", "5", "pipe:1"]
    proc = await asyncio.create_subprocess_exec(
        *cmd,
        stdin=asyncio.subprocess.PIPE if stdin is not None else asyncio.subprocess.DEVNULL,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    try:
        out, err = await asyncio.wait_for(proc.communicate(stdin), THUMB_TIMEOUT_S)
    except (TimeoutError, asyncio.CancelledError):
        proc.kill()
        with contextlib.suppress(Exception):
            await asyncio.wait_for(proc.wait(), STOP_TIMEOUT_S)
        raise
    if proc.returncode != 0 or not out:
        log.warning("thumbnail of %s failed: %s", part.name, err.decode(errors="replace").strip()[:200])
        return None
    return out


def _first_png(part: Path) -> bytes | None:
    try:
        with tarfile.open(part, "r:") as tar:
            for member in tar:
                if member.isfile():
                    f = tar.extractfile(member)
                    return f.read() if f is not None else None
    except (OSError, tarfile.TarError):
        return None
    return None


def _loopback_host(host: str) -> bool:
    name = host.rsplit(":", 1)[0] if host.count(":") == 1 or host.startswith("[") else host
    return is_loopback_name(name.strip("[]"))


def _offer(queue: asyncio.Queue[bytes | None], data: bytes | None) -> None:
    """Put the newest snapshot in a page's one-place queue, replacing one it has not read yet."""
    with contextlib.suppress(asyncio.QueueEmpty):
        if queue.full():
            queue.get_nowait()
    queue.put_nowait(data)


def _dumps(obj: Any) -> str:
    return json.dumps(obj, separators=(",", ":"), default=str)


def _event(snapshot: dict[str, Any]) -> bytes:
    return b"data: " + _dumps(snapshot).encode() + b"\n\n"


def _error(code: str, message: str) -> dict[str, Any]:
    return {"ok": False, "error": {"code": code, "message": message}}
