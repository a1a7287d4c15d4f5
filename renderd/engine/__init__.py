"""One-host rendering: a pool of Chromium workers that capture frames of a composition.

The engine knows nothing of SSH or of the coordinator: it takes a composition, a chunk range
and a frames directory, and leaves complete LOCAL frame files there (or raises).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path

import psutil
from playwright.async_api import Browser, Playwright, async_playwright

from renderd.capture_cost import CALIBRATE_MIN_FRAMES, Calibration, choose_from_cost
from renderd.composition import Composition, CompositionInfo, Overrides, resolve_info
from renderd.confine import DEFAULT_MAX_ASSET_BYTES
from renderd.engine.browser import BrowserOptions, launch_browser, uses_begin_frame
from renderd.engine.calibrate import cpu_count, measure_capture_cost
from renderd.engine.hyperframes.media_frames import MediaFrames
from renderd.engine.page import CompositionPage
from renderd.engine.pool import (
    CapturePool,
    CaptureSettings,
    FrameCallback,
    SplitCallback,
    StaticStats,
    open_worker_page,
)
from renderd.engine.retry import (
    CaptureOutcome,
    RetryNotice,
    execute_disk_capture_with_adaptive_retry,
)
from renderd.engine.routing import ORIGIN
from renderd.frames import FrameRange, choose_worker_count, frame_time
from renderd.hyperframes.media import MediaPlan, project_has_media, resolve_media
from renderd.settings import DEFAULTS

log = logging.getLogger(__name__)

PROBE_VIEWPORT = (1920, 1080)
# Renders of fewer frames keep the fixed worker rule instead of the capture probe (the
# environment variable sets another bound: 0 probes every render).
CALIBRATE_MIN_FRAMES_ENV = "RENDERD_CALIBRATE_MIN_FRAMES"

__all__ = [
    "CaptureOutcome",
    "CaptureSettings",
    "Engine",
    "EngineOptions",
    "RetryNotice",
    "StaticStats",
    "execute_disk_capture_with_adaptive_retry",
    "read_media",
]


@dataclass(frozen=True, slots=True)
class EngineOptions:
    """How the engine renders on this host."""

    capture: CaptureSettings = field(default_factory=CaptureSettings)
    chromium: str | None = DEFAULTS.chromium
    gl: str = DEFAULTS.gl  # "auto" (scan the composition for WebGL), "on", "off"
    # "chromium" (screenshot capture), "headless-shell" (BeginFrame capture) or "auto" (the
    # headless shell if this host has one; a coordinator resolves it per job before the agent).
    browser: str = DEFAULTS.browser
    workers: int | None = DEFAULTS.workers  # None = auto


async def read_info(
    browser: Browser,
    comp: Composition,
    overrides: Overrides,
    ready_timeout_s: float,
    *,
    keep_page: bool = False,
    on_ready: Callable[[CompositionPage, CompositionInfo], Awaitable[None]] | None = None,
    media: MediaFrames | None = None,
    max_asset_bytes: int = DEFAULT_MAX_ASSET_BYTES,
    begin_frame: bool = False,
) -> tuple[CompositionInfo, CompositionPage | None]:
    """Load ``comp`` in ``browser`` and return its validated metadata.

    With ``keep_page`` the loaded page is returned too when it was loaded at the final size
    (the caller then owns it), so the first worker need not load the composition again.
    ``on_ready`` is called with the ready page and its metadata before it is closed or returned.
    """
    w = overrides.width or PROBE_VIEWPORT[0]
    h = overrides.height or PROBE_VIEWPORT[1]
    page = await CompositionPage.open(
        browser,
        comp,
        w,
        h,
        ready_timeout_s=ready_timeout_s,
        fps=overrides.fps,
        media=media,
        max_asset_bytes=max_asset_bytes,
        begin_frame=begin_frame,
    )
    try:
        info = resolve_info(comp, await page.describe(), overrides)
        if on_ready is not None:
            await on_ready(page, info)
    except BaseException:
        await page.close()
        raise
    if keep_page and (info.width, info.height) == (w, h):
        return info, page
    await page.close()
    return info, None


async def read_media(page: CompositionPage, comp: Composition) -> MediaPlan:
    """Return the media plan of the loaded ``page``: its videos and audio tracks, files checked."""
    described = await page.discover_media()
    return await resolve_media(comp.root, ORIGIN, described, comp.entry_relative)


class Engine:
    """Render frames of one composition on this host; use as ``async with``."""

    def __init__(self, comp: Composition, options: EngineOptions, *, playwright: Playwright | None = None) -> None:
        self.comp = comp
        self.options = options
        self.info: CompositionInfo | None = None
        self.gl = options.gl == "on" or (options.gl == "auto" and comp.uses_webgl())
        self.begin_frame = uses_begin_frame(options.browser, options.chromium)
        self._browser_options = BrowserOptions(
            executable=options.chromium, gl=self.gl, begin_frame=self.begin_frame, scale=options.capture.scale
        )
        self._pw_cm = async_playwright()
        # A driver passed in belongs to the caller (a serving agent keeps one for its whole life).
        self._own_driver = playwright is None
        self._pw: Playwright | None = playwright
        self._pool: CapturePool | None = None
        # The composition's media (HyperFrames <video>/<audio>), read from the page at probe time.
        self.media = MediaPlan()
        self._media_frames = MediaFrames()
        # Whether the page keeps every seek's state (each worker then replays from frame 0).
        self.keeps_all_history = False
        self._probe_page_spent = False
        self._raster_layers = 0
        # The capture probe's measurement (auto workers only), taken once per engine: a warm engine
        # renders the same composition again.
        self.calibration: Calibration | None = None

    async def __aenter__(self) -> Engine:
        if self._own_driver:
            self._pw = await self._pw_cm.start()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await asyncio.shield(self.close())

    async def close(self) -> None:
        """Close every browser and the Playwright driver; safe to call twice."""
        if self._pool is not None:
            pool, self._pool = self._pool, None
            await pool.close()
        if self._pw is not None and self._own_driver:
            self._pw = None
            with contextlib.suppress(Exception):
                await self._pw_cm.__aexit__(None, None, None)

    async def probe(self, overrides: Overrides | None = None, *, expect_frames: int | None = None) -> CompositionInfo:
        """Load the composition once, read and validate its metadata, and set up the pool.

        ``expect_frames``: the frames the caller expects to render (None: no guess). The workers
        the fixed rule gives that many frames (``worker_count``) are started with the probe: the
        browsers and pages of all but the first start while the composition is probed, at the
        size the probe loads it at, and are kept when the composition turns out to be that size.
        (A second page in the probe's browser, for a HyperFrames project whose probe page jumps
        to its end, was tried and left out: in one full test run that worker's first frames
        showed a WAAPI box at the wrong time, a flake not reproduced since; docs/performance.md,
        "Start-up and overlap".)
        """
        assert self._pw is not None, "Engine used outside 'async with'"
        overrides = overrides or Overrides()
        size = (overrides.width or PROBE_VIEWPORT[0], overrides.height or PROBE_VIEWPORT[1])
        spares = [
            asyncio.create_task(self._spare_worker(size, overrides), name="renderd-spare-worker")
            for _ in range(self.worker_count(expect_frames) - 1 if expect_frames else 0)
        ]
        try:
            browser = await launch_browser(self._pw, self._browser_options)
            try:
                info, page = await read_info(
                    browser,
                    self.comp,
                    overrides,
                    self.options.capture.ready_timeout_s,
                    # The probe page is drawn at scale 1: a scaled render opens its own.
                    keep_page=self.options.capture.scale == 1.0,
                    on_ready=self._on_probe_ready,
                    media=self._media_frames,
                    max_asset_bytes=self.options.capture.max_asset_bytes,
                    begin_frame=self._browser_options.begin_frame,
                )
                if page is not None and self._probe_page_spent:
                    await page.close()
                    page = None
                fits = (info.width, info.height) == size
            except BaseException:
                with contextlib.suppress(Exception):
                    await browser.close()
                raise
            started = [w for w in await asyncio.gather(*spares) if w is not None]
        except BaseException:
            await asyncio.shield(_close_spares(spares))
            raise
        adopted: list[tuple[Browser, CompositionPage | None]] = []
        for spare_browser, spare in started:
            if spare is not None and not fits:
                await spare.close()
                spare = None
            adopted.append((spare_browser, spare))
        self.info = info
        self._pool = CapturePool(
            self.comp,
            width=info.width,
            height=info.height,
            fps=info.fps,
            settings=self.options.capture,
            browser_options=self._browser_options,
            playwright=self._pw,
            first_browser=browser,
            first_page=page,
            spares=adopted,
            media=self._media_frames,
            replay_all=self.keeps_all_history,
            raster_layers=self._raster_layers,
        )
        return info

    async def _spare_worker(
        self, size: tuple[int, int], overrides: Overrides
    ) -> tuple[Browser, CompositionPage | None] | None:
        """Launch a worker's browser and load the composition in it at ``size`` (during the probe).

        None if the browser did not start: the worker launches its own when it is needed, and
        reports why it cannot.
        """
        assert self._pw is not None
        try:
            browser = await launch_browser(self._pw, self._browser_options)
        except Exception as exc:
            log.debug("%s: a worker's browser started during the probe failed: %s", self.comp.entry_relative, exc)
            return None
        return browser, await self._spare_page(browser, size, overrides)

    async def _spare_page(
        self, browser: Browser, size: tuple[int, int], overrides: Overrides
    ) -> CompositionPage | None:
        """Load the composition as a worker would, at ``size``; None if it fails (the probe says why)."""
        try:
            return await open_worker_page(
                browser,
                self.comp,
                size,
                self.options.capture,
                fps=overrides.fps,
                media=self._media_frames,
                begin_frame=self._browser_options.begin_frame,
            )
        except Exception as exc:  # the worker loads its own page later, and reports its failure
            log.debug("%s: a worker's page loaded during the probe failed: %s", self.comp.entry_relative, exc)
            return None

    async def _on_probe_ready(self, page: CompositionPage, info: CompositionInfo) -> None:
        # The page's own scan of the project says whether there is media to read (no second scan).
        if project_has_media(page.project):
            self.media = await read_media(page, self.comp)
        self.keeps_all_history = page.keeps_all_history
        self._raster_layers = await page.raster_layers()
        if not self.keeps_all_history and info.kind == "hyperframes":
            # A deck may start its first free tween after load: jump to the end to find out. A page
            # that jumped is past frame 0, so the first worker then loads its own.
            last = frame_time(info.total_frames - 1, info.fps)
            found = await page.starts_free_tweens_by(last, self.options.capture.frame_timeout_s)
            self._probe_page_spent = found is not None
            self.keeps_all_history = bool(found)

    async def prepare_media(self, span: FrameRange, cache_dir: Path) -> None:
        """Extract the video frames ``span`` shows into ``cache_dir`` for the pages (no-op without video)."""
        assert self.info is not None, "probe() first"
        if self.media.videos:
            await self._media_frames.prepare(self.media.videos, span, self.info.fps, cache_dir)

    @property
    def static_stats(self) -> StaticStats:
        """Return the static frames of this render so far (zeros before probe())."""
        return self._pool.static_stats if self._pool is not None else StaticStats()

    def begin_render(self) -> None:
        """Count static frames from zero (a serving agent's warm engine renders many times)."""
        if self._pool is not None:
            self._pool.static_stats = StaticStats(disabled=self._pool.static_stats.disabled)

    def worker_count(self, frames: int) -> int:
        """Return the workers to use for ``frames`` frames by the fixed rule (explicit option, else per core)."""
        replays_gl = self.gl and self.keeps_all_history
        count = choose_worker_count(
            frames,
            self.options.workers,
            psutil.cpu_count(logical=True) or 1,
            psutil.virtual_memory().available,
            replays_gl=replays_gl,
        )
        if replays_gl and self.options.workers is None:
            log.info(
                "%s: one capture worker: the page keeps every seek's state, so each worker would "
                "draw its WebGL for every frame before its own (--workers N overrides)",
                self.comp.entry_relative,
            )
        return count

    async def calibrate(self, span: FrameRange, frames: int | None = None) -> Calibration:
        """Measure one worker's capture cost on frames of ``span``; choose workers for ``frames`` and a chunk size.

        ``frames`` (the frames a worker count is chosen for, default all of ``span``) bounds the
        workers so that each gets enough frames to pay for its browser start.

        Measured once per engine (later calls choose again from the same cost, with the memory
        available now). The frames of ``span`` must be renderable (media prepared for them).
        """
        assert self._pool is not None and self.info is not None, "probe() first"
        span.check_within(self.info.total_frames)
        cost = self.calibration.cost if self.calibration is not None else None
        if cost is None:
            cost = await measure_capture_cost(self._pool, span, contiguous=self.keeps_all_history)
        choice = choose_from_cost(
            cost,
            cpu_count=cpu_count(),
            available_memory=psutil.virtual_memory().available,
            frames=len(span) if frames is None else frames,
        )
        self.calibration = Calibration(cost, choice)
        return self.calibration

    async def auto_worker_count(self, span: FrameRange, frames: int) -> int:
        """Return the workers for chunks of up to ``frames`` frames of ``span``.

        An explicit ``workers`` option wins. ``auto`` runs the capture probe (calibrate) on a
        span of at least CALIBRATE_MIN_FRAMES frames and takes its choice; a WebGL page that
        keeps all its history keeps one worker without a probe (each extra worker would replay
        every frame, which one worker's probe cannot see), and a probe that fails (or a render
        with test hooks) uses the fixed rule.
        """
        s = self.options.capture
        # Test hooks (a crash at a frame, a slowed host, forced static frames) are meant for the
        # render itself: a probe would fire or skew them, so renders with any use the fixed rule.
        hooked = s.fault_crash_at_frame is not None or s.fault_frame_delay_s > 0 or s.fault_force_static
        if self.options.workers is not None or (self.gl and self.keeps_all_history) or hooked:
            return self.worker_count(frames)
        if len(span) < _calibrate_min_frames():
            # The probe's frames are captured and thrown away (a second or more): only a render
            # long enough to pay for it gets one; the fixed rule is right for most pages anyway.
            return self.worker_count(frames)
        try:
            cal = await self.calibrate(span, frames)
        except RuntimeError as exc:
            log.warning("%s: capture probe failed (%s); workers per core", self.comp.entry_relative, exc)
            return self.worker_count(frames)
        log.info("%s: %s", self.comp.entry_relative, cal.describe())
        return cal.choice.workers

    async def warm_up(self, workers: int) -> None:
        """Start ``workers`` browsers with the composition loaded."""
        assert self._pool is not None, "probe() first"
        await self._pool.warm_up(workers)

    async def capture_chunk(
        self,
        chunk: FrameRange,
        frames_dir: Path,
        workers: int,
        *,
        on_frame: FrameCallback,
        on_retry: Callable[[RetryNotice], None] | None = None,
        on_split: SplitCallback | None = None,
    ) -> CaptureOutcome:
        """Capture absolute ``chunk`` into ``frames_dir`` as LOCAL files, retrying as needed.

        ``on_split`` is told the first frame of each run a worker took over from another
        (CapturePool.run_pass): from there on, the frames come from that worker, in order.
        """
        assert self._pool is not None and self.info is not None, "probe() first"
        chunk.check_within(self.info.total_frames)
        frames_dir.mkdir(parents=True, exist_ok=True)
        return await execute_disk_capture_with_adaptive_retry(
            self._pool, chunk, frames_dir, workers, on_frame=on_frame, on_retry=on_retry, on_split=on_split
        )


async def _close_spares(spares: list[asyncio.Task[tuple[Browser, CompositionPage | None] | None]]) -> None:
    """Stop the workers started during a probe that failed: their pages and browsers."""
    for task in spares:
        task.cancel()
    for result in await asyncio.gather(*spares, return_exceptions=True):
        if isinstance(result, tuple):
            browser, page = result
            with contextlib.suppress(Exception):
                if page is not None:
                    await page.close()
                await browser.close()


def _calibrate_min_frames() -> int:
    raw = os.environ.get(CALIBRATE_MIN_FRAMES_ENV, "").strip()
    return int(raw) if raw.isdigit() else CALIBRATE_MIN_FRAMES
