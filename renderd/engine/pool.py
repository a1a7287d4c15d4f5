"""Capture workers: one Chromium per worker, each with one composition page.

One browser per worker, not pages sharing a browser: measured on the 1080p bench composition
with 2 workers, pages in one browser took ~280 ms/frame against ~175 ms/frame with a browser
each (a shared browser serialises compositing and screenshots).
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import logging
import os
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from playwright.async_api import Browser, Playwright

from renderd.composition import Composition
from renderd.confine import DEFAULT_MAX_ASSET_BYTES
from renderd.engine.browser import BrowserOptions, launch_browser
from renderd.engine.hyperframes.media_frames import MediaFrames
from renderd.engine.page import CompositionPage
from renderd.engine.raster import RasterWalker
from renderd.errors import CaptureError, PageBroken, first_error
from renderd.frames import Fps, WorkerTask, frame_file_name, frame_time, frames_spanning, prime_plan
from renderd.settings import DEFAULTS

log = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True)
class CaptureSettings:
    """How frames are captured and stored."""

    fmt: str = DEFAULTS.capture_format  # "jpeg" or "png"
    quality: int = DEFAULTS.quality
    # Animation frames to let pass after a seek before the screenshot: without one, a
    # screenshot can show the previous frame's paint (measured on the bench composition).
    settle_frames: int = 1
    # Frames to show, uncaptured, before a frame whose predecessor the page did not just show
    # (the first frame of every task). Compositions that keep state between seeks, such as
    # velocity-driven motion blur, then render each frame as one sequential pass would, whatever
    # the split into workers and chunks. HyperFrames' own multi-worker renders differ at their
    # split points; renderd's do not.
    prime_frames: int = 1
    # A page with CSS transitions carries state for as long as its longest transition (a GSAP
    # value set at one seek is still easing in at the next ones), longer while a timeline keeps
    # restarting them: priming covers that too (frames.PrimePlan), up to this many seconds.
    max_prime_s: float = 4.0
    # Before a jump, how far back to look for the frame each will-change layer was first drawn
    # on (page_shim.js, "Raster of will-change layers"); one drawn longer is taken as drawn since
    # frame 0. The look back costs about a millisecond per frame on a large DOM page.
    raster_lookback_s: float = 60.0
    # Off only to measure what drawing them costs (scripts/bench raster).
    anchor_rasters: bool = True
    # A worker out of frames takes half of another's (run_pass). Off only to measure what it
    # saves (scripts/bench targets).
    work_stealing: bool = True
    # Clear the html/body backgrounds and keep alpha in PNG frames, as HyperFrames does for its
    # alpha outputs (png-sequence): the composition's own elements are all that is drawn.
    transparent: bool = DEFAULTS.transparent
    # Device pixels per CSS pixel (--scale): frames are this many times the composition's size.
    scale: float = DEFAULTS.scale
    frame_timeout_s: float = DEFAULTS.frame_timeout
    ready_timeout_s: float = DEFAULTS.ready_timeout
    # Largest composition file served whole to the page (--max-asset-size); media are streamed.
    max_asset_bytes: int = DEFAULT_MAX_ASSET_BYTES
    # Static frames (--no-skip-static turns them off): a frame the page proves unchanged since the
    # frame before is not captured; the frame before's bytes are written again (page_shim.js,
    # staticVerdict). Every run of static frames is checked against real screenshots: its first
    # frame, every `static_verify_stride`-th after it and a task's last frame are captured anyway
    # and must match byte for byte (same pixels, same encoder, same bytes); on a mismatch the
    # chunk's reused frames are captured again and the composition's static frames stop.
    skip_static: bool = DEFAULTS.skip_static
    static_verify_stride: int = 12
    # Test hooks: crash the page the first time this absolute frame is about to be captured;
    # sleep this long before every frame (a slow host, for the straggler tests); take every
    # frame after a task's first as static (a wrong proof, which the pixel check must catch:
    # with static_verify_stride 0, nothing is checked).
    fault_crash_at_frame: int | None = None
    fault_frame_delay_s: float = 0.0
    fault_force_static: bool = False

    @property
    def ext(self) -> str:
        """Return the frame files' extension."""
        return "jpg" if self.fmt == "jpeg" else "png"


@dataclass(slots=True)
class PassReport:
    """What went wrong in one capture pass (frames that failed are simply missing on disk)."""

    timeouts: int = 0
    crashes: int = 0
    reasons: list[str] = field(default_factory=list)


FrameCallback = Callable[[int], None]
# Told the first frame of a run one worker took from another's task (run_pass).
SplitCallback = Callable[[int], None]
# A thief first primes its page (a jump and a drawn frame, about one frame's capture): fewer
# frames left than this are not worth taking.
MIN_STEAL_FRAMES = 6


@dataclass(slots=True)
class StaticStats:
    """Static frames of a render so far (all chunks of one composition)."""

    skipped: int = 0  # frames written from the frame before's bytes, not captured
    verified: int = 0  # static frames captured anyway, to compare: all matched but `mismatches`
    mismatches: int = 0  # static frames whose screenshot differed: the proof was wrong
    recaptured: int = 0  # reused frames deleted after a mismatch, to be captured again
    disabled: str | None = None  # why static frames stopped for this composition
    # The absolute frames whose files hold reused bytes (those captured again left out).
    frames: set[int] = field(default_factory=set)


@dataclass(slots=True)
class _StaticRun:
    """A worker's run of static frames on one page: the bytes they reuse."""

    anchor: bytes | None = None  # the last frame this page showed, as written
    run: int = 0  # static frames since the last captured one


@dataclass(slots=True, eq=False)
class _Running:
    """A task as a worker captures it: the next frame it starts, and where it stops now."""

    worker: Worker
    task: WorkerTask
    next: int = field(init=False)
    end: int = field(init=False)

    def __post_init__(self) -> None:
        self.next, self.end = self.task.start, self.task.end

    def split(self, thief: Worker, min_frames: int) -> _Running | None:
        """Give ``thief`` the far half of the frames not started yet (None: too few to be worth it)."""
        left = self.end - self.next
        if left < min_frames:
            return None
        mid = self.next + (left + 1) // 2
        taken = _Running(thief, dataclasses.replace(self.task, start=mid, end=self.end))
        self.end = mid
        return taken


class Worker:
    """A browser and a loaded composition page, reopened when they break."""

    def __init__(self, index: int, pool: CapturePool) -> None:
        self.index = index
        self._pool = pool
        self._browser: Browser | None = None
        self._page: CompositionPage | None = None

    @property
    def keeps_all_history(self) -> bool:
        """Return whether this worker's page keeps every seek's state (it replays from frame 0)."""
        return self._page is not None and self._page.keeps_all_history

    def adopt(self, browser: Browser, page: CompositionPage | None) -> None:
        """Use an already launched browser (and loaded page) from probing the composition."""
        self._browser = browser
        self._page = page

    async def ensure_ready(self) -> CompositionPage:
        """Return a loaded page, (re)launching the browser and page as needed."""
        if self._page is not None and not self._page.crashed and not self._page.page.is_closed():
            if self._pool.settings.transparent:
                await self._page.clear_background()  # a page adopted from probing was opened opaque
            return self._page
        await self._drop_page()
        if self._browser is None or not self._browser.is_connected():
            await self._drop_browser()
            self._browser = await launch_browser(self._pool.playwright, self._pool.browser_options)
        self._page = await self._pool.open_page(self._browser)
        return self._page

    async def open_spare_page(self) -> CompositionPage:
        """Load the composition in another page of this worker's browser (one that captures nothing)."""
        if self._browser is None or not self._browser.is_connected():
            await self.ensure_ready()
        assert self._browser is not None
        return await self._pool.open_page(self._browser)

    async def run_task(
        self, task: WorkerTask, on_frame: FrameCallback, report: PassReport, at: _Running | None = None
    ) -> None:
        """Capture every frame of ``task``; on a broken page, record why and abandon the task.

        ``at`` is where the task stands for the pool: a worker that ran out of work may take
        the far end of it (``_Running.split``), and this worker then stops there.
        """
        p = self._pool
        s = p.settings
        run = _StaticRun()
        at = at or _Running(self, task)
        while at.next < at.end:
            i = at.next
            at.next = i + 1
            reused = False
            try:
                page = await self.ensure_ready()
                if s.fault_frame_delay_s:
                    await asyncio.sleep(s.fault_frame_delay_s)
                if s.fault_crash_at_frame == i and not p.fault_fired:
                    p.fault_fired = True
                    log.warning("test hook: crashing worker %d's page at frame %d", self.index, i)
                    await page.crash()
                if page.shown_frame != i - 1:
                    page = await self._prime(page, i)
                    run = _StaticRun()
                probe = run.anchor is not None and p.static_stats.disabled is None
                verify = probe and _verify_static(run.run + 1, s.static_verify_stride, i == at.end - 1)
                data, is_static = await page.capture_unless_static(
                    i,
                    frame_time(i, p.fps),
                    fmt=s.fmt,
                    quality=s.quality,
                    settle_frames=s.settle_frames,
                    timeout_s=s.frame_timeout_s,
                    verify=verify,
                    probe=probe,
                )
                if probe and s.fault_force_static:
                    is_static = True
                    data = data if verify else None
                if not (probe and is_static):
                    run.run = 0
                elif data is None:
                    data, reused = run.anchor, True
                    run.run += 1
                    p.static_stats.skipped += 1
                elif data == run.anchor:
                    run.run += 1
                    p.static_stats.verified += 1
                else:
                    run.run = 0
                    await p.static_mismatch(i, report)
                run.anchor = data
            except PageBroken as exc:
                report.reasons.append(f"worker {self.index}: {exc}")
                if exc.timeout:
                    report.timeouts += 1
                else:
                    report.crashes += 1
                log.warning("worker %d: %s; reopening the page", self.index, exc)
                await self._drop_page()
                return
            assert data is not None
            target = task.work_dir / frame_file_name(task.local_index(i), s.ext)
            try:
                await asyncio.to_thread(_write_atomic, target, data)
            except OSError as exc:
                # A full or read-only disk will not get better by retrying on this host.
                raise CaptureError(f"cannot write frame {i} to {task.work_dir}: {exc.strerror or exc}") from None
            if reused and not await p.keep_reused(i, target):
                continue  # a mismatch elsewhere while it was written: captured again by the retry
            on_frame(i)

    async def _prime(self, page: CompositionPage, i: int) -> CompositionPage:
        """Show the frames before ``i``, uncaptured, so the page's state is as in a sequential pass.

        Returns the page to capture ``i`` with (a new one when the page had to start over).
        """
        p = self._pool
        s = p.settings
        if page.keeps_all_history or p.replay_all:
            return await self._replay_all(page, i)
        plan = prime_plan(s.prime_frames, page.history_s, p.fps, s.max_prime_s)
        for span in plan.spans:
            start = max(0, i - span)
            started = await self._replay(page, start, i)
            log.debug("worker %d: primed from frame %d for frame %d", self.index, start, i)
            if start == 0 or plan.settled(started):
                return page
        log.info(
            "worker %d: CSS transitions kept starting through the %g s before frame %d; "
            "it may differ slightly from a sequential render",
            self.index, s.max_prime_s, i,
        )  # fmt: skip
        return page

    async def _replay_all(self, page: CompositionPage, i: int) -> CompositionPage:
        """Bring a page that keeps all its history to frame ``i - 1`` through every frame from 0.

        A page that has shown an earlier frame goes on from there (each worker's tasks come in
        frame order, so it steps over the frames other workers capture); one that is past ``i``
        starts over as a new page.
        """
        if page.shown_frame is not None and page.shown_frame >= i:
            await self._drop_page()
            page = await self.ensure_ready()
        first = 0 if page.shown_frame is None else page.shown_frame + 1
        log.debug("worker %d: replaying frames %d..%d for frame %d", self.index, first, i - 1, i)
        for k in range(first, i):
            await self._show(page, k)
        return page

    async def _replay(self, page: CompositionPage, start: int, end: int) -> list[int]:
        """Jump to ``start``, then show each frame up to ``end`` (excluded); return transitions started per frame."""
        await self._draw_rasters_as_sequential(page, start)
        await self._show(page, start)
        # The jump itself started CSS transitions from wherever the page was before; a sequential
        # pass would have none of those at ``start``.
        await page.forget_history(start, self._pool.settings.frame_timeout_s)
        return [await self._show(page, k) for k in range(start + 1, end)]

    async def _draw_rasters_as_sequential(self, page: CompositionPage, start: int) -> None:
        """Before jumping to ``start``, draw each will-change layer first where a sequential pass did.

        Without this, a scrolling ticker's glyphs on a worker's first frames differ from a
        sequential render's (and so between splits) for as long as the layer stays drawn.
        """
        if start == 0 and page.shown_frame is None:
            return  # a fresh page at frame 0 is a sequential pass's start
        p = self._pool
        s = p.settings
        walker = p.raster_walker(self)
        if walker is None:
            return
        redraws = await walker.redraws(start, page.shown_frame, frames_spanning(s.raster_lookback_s, p.fps))
        if not redraws:
            return
        frames = await page.tag_rasters(redraws, walker.layers, s.frame_timeout_s)
        if frames is None:
            walker.disable(f"worker {self.index}: the page's will-change layers changed since load")
            return
        if frames:
            log.debug("worker %d: drawing will-change layers at frames %s before frame %d", self.index, frames, start)
        for a in frames:
            await page.release_rasters(a, s.frame_timeout_s)
            await self._show(page, a)

    async def _show(self, page: CompositionPage, k: int) -> int:
        """Show frame ``k`` uncaptured; return the CSS transitions its seek started."""
        s = self._pool.settings
        # Frames are let pass after these seeks as after captured ones, though nothing is drawn:
        # without them, a chain of CSS transitions came out a few levels off (product-promo).
        return await page.seek(
            k, frame_time(k, self._pool.fps), settle_frames=s.settle_frames, timeout_s=s.frame_timeout_s
        )

    async def _drop_page(self) -> None:
        if self._page is not None:
            page, self._page = self._page, None
            await page.close()

    async def _drop_browser(self) -> None:
        if self._browser is not None:
            browser, self._browser = self._browser, None
            with contextlib.suppress(Exception):
                await asyncio.wait_for(browser.close(), 10)

    async def close(self) -> None:
        """Close the page and the browser."""
        await self._drop_page()
        await self._drop_browser()


class CapturePool:
    """Capture workers for one composition at a fixed size and rate."""

    def __init__(
        self,
        comp: Composition,
        *,
        width: int,
        height: int,
        fps: Fps,
        settings: CaptureSettings,
        browser_options: BrowserOptions,
        playwright: Playwright,
        first_browser: Browser | None = None,
        first_page: CompositionPage | None = None,
        spares: Sequence[tuple[Browser, CompositionPage | None]] = (),
        media: MediaFrames | None = None,
        replay_all: bool = False,
        raster_layers: int = 0,
    ) -> None:
        self.comp = comp
        self.media = media
        self.width = width
        self.height = height
        self.fps = fps
        self.settings = settings
        self.browser_options = browser_options
        self.fault_fired = False
        # Probing found the page keeps all its history though a fresh page does not show it yet.
        self.replay_all = replay_all
        self.playwright = playwright
        self._workers: list[Worker] = []
        # The page's will-change layers (probed at load): with any, jumps draw them as a
        # sequential pass would (raster.py), read in a page of their own, opened when first needed.
        self._raster_layers = raster_layers
        self._walker: RasterWalker | None = None
        self.static_stats = StaticStats(disabled=None if settings.skip_static else "off (--no-skip-static)")
        # The current chunk's frame files written from another frame's bytes (see static_mismatch).
        self._reused: list[tuple[int, Path]] = []
        # Browsers (and pages) started while the composition was probed: workers 0, 1, ...
        started = [(first_browser, first_page)] if first_browser is not None else []
        for browser, page in [*started, *spares]:
            self._grow(len(self._workers) + 1)
            self._workers[-1].adopt(browser, page)

    async def open_page(self, browser: Browser) -> CompositionPage:
        """Load the composition in a new page of ``browser``."""
        return await open_worker_page(
            browser,
            self.comp,
            (self.width, self.height),
            self.settings,
            fps=self.fps,
            media=self.media,
            begin_frame=self.browser_options.begin_frame,
        )

    def raster_walker(self, worker: Worker) -> RasterWalker | None:
        """Return the walker of will-change layers (None: the page has none, or replays from 0).

        Its page is opened, when first needed, in ``worker``'s browser.
        """
        if not self._raster_layers or self.replay_all or not self.settings.anchor_rasters:
            return None
        if self._walker is None:
            self._walker = RasterWalker(
                self._raster_layers, self.fps, worker.open_spare_page, timeout_s=self.settings.frame_timeout_s
            )
        return self._walker

    def begin_chunk(self) -> None:
        """Forget the reused frames of the chunk before (its frames are final)."""
        self._reused = []

    async def keep_reused(self, frame: int, target: Path) -> bool:
        """Record ``target`` as reused ``frame``; False (and it is deleted) when static frames stopped meanwhile."""
        if self.static_stats.disabled is None:
            self._reused.append((frame, target))
            self.static_stats.frames.add(frame)
            return True
        await asyncio.to_thread(target.unlink, True)
        self.static_stats.recaptured += 1
        return False

    async def static_mismatch(self, frame: int, report: PassReport) -> None:
        """A frame the page proved static looked different: stop static frames, delete the chunk's reused ones.

        The proof missed a change, so no reused frame of the chunk is trusted: the retry pass
        captures them again, this time every one.
        """
        stats = self.static_stats
        stats.mismatches += 1
        if stats.disabled is not None:
            return
        stats.disabled = f"frame {frame} differed from the frame it was to reuse, though the page showed no change"
        reused, self._reused = self._reused, []
        await asyncio.to_thread(_unlink_all, [path for _, path in reused])
        stats.frames.difference_update(f for f, _ in reused)
        stats.recaptured += len(reused)
        why = f"static frames: {stats.disabled}; capturing the {len(reused)} reused frame(s) again"
        report.reasons.append(why)
        log.warning("%s: %s", self.comp.entry_relative, why)

    async def warm_up(self, workers: int) -> None:
        """Launch and load ``workers`` pages concurrently, so the first frames do not wait."""
        self._grow(workers)
        await asyncio.gather(*(w.ensure_ready() for w in self._workers[:workers]))

    def _grow(self, n: int) -> None:
        while len(self._workers) < n:
            self._workers.append(Worker(len(self._workers), self))

    async def run_pass(
        self,
        tasks: Sequence[WorkerTask],
        workers: int,
        on_frame: FrameCallback,
        on_split: SplitCallback | None = None,
    ) -> PassReport:
        """Capture ``tasks`` with ``workers`` concurrent workers pulling from one queue.

        A worker that finds the queue empty takes the far half of the running task with the most
        frames left (work stealing): the split tasks' workers finish about together instead of
        one waiting for the other (measured: 4 s of a 39 s capture of the bench composition,
        whose second half draws slower). ``on_split`` is told the first frame of each taken half.
        Pages that keep their whole history are not split: the thief would replay from frame 0.
        """
        self._grow(workers)
        queue: asyncio.Queue[WorkerTask] = asyncio.Queue()
        for t in tasks:
            queue.put_nowait(t)
        report = PassReport()
        running: list[_Running] = []

        def steal(worker: Worker) -> _Running | None:
            if not self.settings.work_stealing or self.replay_all or not running:
                return None
            if any(r.worker.keeps_all_history for r in running):
                return None
            victim = max(running, key=lambda r: r.end - r.next)
            taken = victim.split(worker, MIN_STEAL_FRAMES)
            if taken is not None:
                log.debug(
                    "worker %d: takes frames %d-%d from worker %d",
                    worker.index,
                    taken.next,
                    taken.end - 1,
                    victim.worker.index,
                )
                if on_split is not None:
                    on_split(taken.next)
            return taken

        async def drain(worker: Worker) -> None:
            while True:
                try:
                    at = _Running(worker, queue.get_nowait())
                except asyncio.QueueEmpty:
                    taken = steal(worker)
                    if taken is None:
                        return
                    at = taken
                running.append(at)
                try:
                    await worker.run_task(at.task, on_frame, report, at)
                finally:
                    running.remove(at)

        try:
            async with asyncio.TaskGroup() as tg:
                for w in self._workers[:workers]:
                    tg.create_task(drain(w))
        except BaseExceptionGroup as group:
            raise first_error(group) from None
        # Workers beyond the current count keep their browsers: a later chunk may use them.
        return report

    async def close(self) -> None:
        """Close every browser; safe to call more than once."""
        workers, self._workers = self._workers, []
        walker, self._walker = self._walker, None
        closing = [w.close() for w in workers] + ([walker.close()] if walker is not None else [])
        await asyncio.gather(*closing, return_exceptions=True)


async def open_worker_page(
    browser: Browser,
    comp: Composition,
    size: tuple[int, int],
    settings: CaptureSettings,
    *,
    fps: Fps | None,
    media: MediaFrames | None,
    begin_frame: bool,
) -> CompositionPage:
    """Load ``comp`` at ``size`` (CSS pixels) in a new page of ``browser``, as a capture worker draws it."""
    return await CompositionPage.open(
        browser,
        comp,
        *size,
        ready_timeout_s=settings.ready_timeout_s,
        transparent=settings.transparent,
        max_asset_bytes=settings.max_asset_bytes,
        device_scale_factor=settings.scale,
        fps=fps,
        media=media,
        begin_frame=begin_frame,
    )


def _verify_static(position: int, stride: int, last_of_task: bool) -> bool:
    """Return whether the ``position``-th static frame of a run is captured anyway, to compare.

    The first of every run (a wrong proof shows at once), every ``stride``-th, and a task's last
    frame; ``stride`` 0 checks none (a test hook: shows what a wrong proof would do unchecked).
    """
    return stride > 0 and (position == 1 or position % stride == 0 or last_of_task)


def _unlink_all(paths: Sequence[Path]) -> None:
    for path in paths:
        path.unlink(missing_ok=True)


def _write_atomic(target: Path, data: bytes) -> None:
    tmp = target.with_name(f".{target.name}.{os.getpid()}.tmp")
    try:
        with open(tmp, "wb") as f:
            f.write(data)
    except OSError:
        tmp.unlink(missing_ok=True)
        raise
    os.replace(tmp, target)
