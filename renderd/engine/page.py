"""One composition page in a browser: load it offline, wait until ready, seek, capture.

The composition is served to the page from its own directory through request interception
on a private origin (engine/routing.py); every other request is refused, so a composition can
reach neither the network nor files outside its directory. HyperFrames documents are rewritten
on their way (engine/hyperframes/document.py).
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import logging
from collections.abc import Coroutine, Sequence
from fractions import Fraction
from importlib import resources
from typing import Any, TypeVar

from playwright.async_api import Browser, BrowserContext, CDPSession, Page
from playwright.async_api import Error as PlaywrightError
from playwright.async_api import TimeoutError as PlaywrightTimeout

from renderd.composition import DEFAULT_FPS, Composition
from renderd.confine import DEFAULT_MAX_ASSET_BYTES
from renderd.engine.beginframe import FrameClock
from renderd.engine.hyperframes import runtime as hf_runtime
from renderd.engine.hyperframes.document import HyperFramesDocuments
from renderd.engine.hyperframes.media_frames import MediaFrames
from renderd.engine.redraw import Redraw
from renderd.engine.routing import ORIGIN, Router, ServeFailures
from renderd.errors import CompositionError, CompositionTimeout, FrameRangeError, PageBroken, ServeError
from renderd.frames import Fps
from renderd.hyperframes.project import HyperFramesProject, read_project

_T = TypeVar("_T")
# What state the ready page carries between seeks: [its longest transition-duration +
# transition-delay (seconds) of any element, whether frames depend on every seek since the first
# (anime.js timelines registered with the HyperFrames runtime's anime adapter, or GSAP
# animations running outside every registered timeline)].
_PAGE_HISTORY = """() => {
  let longest = 0;
  for (const el of document.querySelectorAll("*")) {
    const cs = getComputedStyle(el);
    if (cs.transitionProperty === "none") continue;
    const durations = cs.transitionDuration.split(",").map(parseFloat);
    const delays = cs.transitionDelay.split(",").map(parseFloat);
    durations.forEach((d, i) => {
      longest = Math.max(longest, (d || 0) + Math.max(0, delays[i % delays.length] || 0));
    });
  }
  const anime = Array.isArray(window.__hfAnime) && window.__hfAnime.length > 0;
  return [longest, anime || window.__renderdShim.freeGsapRunning()];
}"""
_CLEAR_BACKGROUND = """() => {
  const style = document.createElement("style");
  style.dataset.renderdTransparent = "";
  style.textContent = "html,body{background:transparent !important;background-color:transparent !important;"
    + "background-image:none !important;}";
  document.head.appendChild(style);
}"""

_SHIM = resources.files("renderd.engine").joinpath("page_shim.js").read_text(encoding="utf-8")
# Video frames swapped in per frame (HyperFrames projects only; see media_frames.py).
_MEDIA_SHIM = resources.files("renderd.engine").joinpath("media_shim.js").read_text(encoding="utf-8")
_READY_POLL_MS = 50
# Chromium may return a BeginFrame without a picture while the renderer is still starting up.
_BEGIN_FRAME_ATTEMPTS = 3
# How long readiness waits for timelines the scripts could register but never name
# (HyperFramesProject.unnamed): a script that builds its keys registers them as the page loads.
_UNNAMED_GRACE_S = 3.0
log = logging.getLogger(__name__)
_warned: set[tuple[str, tuple[str, ...]]] = set()  # one warning per composition and ids, per process
# Which compositions still lack a registered timeline (HyperFrames' own readiness rule: every
# element with data-composition-id, unless it carries data-no-timeline), leaving out the ids in
# `skip` (those no script of the project can register: HyperFramesProject.never_registered).
_HF_MISSING_TIMELINES = """((skip) => {
  const reg = window.__timelines || {};
  const out = [];
  for (const el of document.querySelectorAll("[data-composition-id]")) {
    const id = el.getAttribute("data-composition-id");
    if (id && !el.hasAttribute("data-no-timeline") && !skip.includes(id) && !reg[id]) out.push(id);
  }
  return out;
})"""
_HF_READY = f"""(skip) => !!(window.__player && typeof window.__player.renderSeek === 'function'
  && window.__renderReady && !window.__hfTimelinesBuilding && {_HF_MISSING_TIMELINES}(skip).length === 0)"""
_HF_STATE = f"""(skip) => ({{player: !!window.__player, building: !!window.__hfTimelinesBuilding,
  missing: {_HF_MISSING_TIMELINES}(skip),
  startup: window.__hfStartupError ? String(window.__hfStartupError) : null}})"""


class CompositionPage:
    """A loaded composition page with a CDP session for fast screenshots."""

    def __init__(self, context: BrowserContext, page: Page, cdp: CDPSession, comp: Composition) -> None:
        self._context = context
        self.page = page
        self._cdp = cdp
        self._comp = comp
        self.page_errors: list[str] = []
        self._router: Router | None = None  # answers the page's requests; knows what it refused
        self.crashed = False
        self.project: HyperFramesProject | None = None  # the static scan the page was opened with
        # The absolute frame the page last showed, so a worker knows whether the page's
        # history already leads up to the next frame (see CaptureSettings.prime_frames).
        self.shown_frame: int | None = None
        self.transparent = False
        # Seconds of state the page carries from one seek to the next: its longest CSS transition.
        self.history_s = 0.0
        # The page keeps state from every seek since its first (anime.js timelines take a tween's
        # start value from the page at its first render; a deck's callbacks start GSAP tweens
        # when a slide becomes active): frames equal a sequential pass only when this page has
        # shown every frame before them, from frame 0.
        self.keeps_all_history = False
        self._failures = ServeFailures()
        # Set in a BeginFrame-controlled browser: frames are drawn, and captured, only through it.
        self.clock: FrameClock | None = None

    @classmethod
    async def open(
        cls,
        browser: Browser,
        comp: Composition,
        width: int,
        height: int,
        *,
        ready_timeout_s: float,
        fps: Fps | None = None,
        media: MediaFrames | None = None,
        transparent: bool = False,
        max_asset_bytes: int = DEFAULT_MAX_ASSET_BYTES,
        device_scale_factor: float = 1.0,
        begin_frame: bool = False,
    ) -> CompositionPage:
        """Open ``comp`` at ``width``x``height`` and wait until it can be seeked.

        ``fps`` is the render rate (the HyperFrames runtime quantises seeks to it from its first
        line); None means the project's own ``data-fps``, else 30. ``media`` serves the
        render's extracted video frames to a HyperFrames page. ``transparent`` clears the
        html/body backgrounds so PNG screenshots keep the page's transparency. A file served
        whole over ``max_asset_bytes`` fails the load (or the frame that asks for it).
        ``device_scale_factor`` draws the page at that many device pixels per CSS pixel
        (``--scale``): screenshots are that much larger, text and vectors drawn at that resolution.
        ``begin_frame``: ``browser`` draws only on BeginFrame (engine/beginframe.py), which captures.
        """
        project = read_project(comp.entry)
        if project is not None and project.missing_sub_files:
            # The runtime would wait for their timelines until --ready-timeout; say why right away.
            where = comp.entry_relative
            names = ", ".join(project.missing_sub_files)
            raise CompositionError(f"{where}: sub-composition file not found: {names}", path=where)
        init_script = _SHIM
        if project is not None:
            init_script += "\n" + hf_runtime.render_config_script(fps or _project_fps(project.fps))
            init_script += "\n" + _MEDIA_SHIM
        self: CompositionPage | None = None
        context = await browser.new_context(
            viewport={"width": width, "height": height},
            device_scale_factor=device_scale_factor,
            service_workers="block",
            bypass_csp=False,
        )
        try:
            page = await context.new_page()
            await page.add_init_script(init_script)
            documents = HyperFramesDocuments(comp, project) if project is not None else None
            router = Router(comp, documents=documents, media=media, max_asset_bytes=max_asset_bytes)
            await page.route("**/*", router.handle)
            cdp = await context.new_cdp_session(page)
            if device_scale_factor != 1:
                # Emulation is per CDP session: without this, screenshots through our session stay
                # at CSS size although the page reports devicePixelRatio = F (measured).
                await cdp.send(
                    "Emulation.setDeviceMetricsOverride",
                    {"width": width, "height": height, "deviceScaleFactor": device_scale_factor, "mobile": False},
                )
            self = cls(context, page, cdp, comp)
            if begin_frame:
                self.clock = FrameClock(cdp)
                await self.clock.start()
            self._failures = router.failures
            self.project = project
            self._router = router
            page.on("pageerror", lambda e: self.page_errors.append(_error_text(e)))
            page.on("crash", lambda _p: setattr(self, "crashed", True))
            await self._load(ready_timeout_s)
            if self.clock is not None:
                # Ready: from here every frame is drawn on purpose, never by the tick's timing.
                await page.evaluate("() => window.__renderdShim.drawFramesManually()")
                self.clock.manual = True
            if transparent:
                await self.clear_background()
            return self
        except BaseException:
            if self is not None and self.clock is not None:
                await self.clock.stop()
            with contextlib.suppress(Exception):
                await context.close()
            raise

    async def _load(self, timeout_s: float) -> None:
        """Load the page; a request renderd failed to serve ends the wait at once, as the error."""
        where = self._comp.entry_relative
        loading = asyncio.create_task(self._load_page(timeout_s))
        failed = asyncio.create_task(self._failures.event.wait())
        try:
            await asyncio.wait({loading, failed}, return_when=asyncio.FIRST_COMPLETED)
        finally:
            failed.cancel()
            if not loading.done():
                loading.cancel()
                await asyncio.wait({loading}, timeout=5)
        if self._failures.first is not None:
            # Whatever the load ran into next (a readiness timeout, a refused document) follows from this.
            if loading.done() and not loading.cancelled():
                loading.exception()  # retrieved: it is superseded
            raise ServeError(f"{where}: {self._failures.first}")
        await loading

    async def _load_page(self, timeout_s: float) -> None:
        where = self._comp.entry_relative
        url = f"{ORIGIN}/{where}"
        try:
            await self.page.goto(url, wait_until="load", timeout=timeout_s * 1000)
        except PlaywrightTimeout:
            raise CompositionTimeout(f"{where}: page did not finish loading within {timeout_s:g} s") from None
        except PlaywrightError as exc:
            self._raise_refused_asset()
            raise CompositionError(f"{where}: page did not load: {_first_line(exc)}", path=where) from None
        self._raise_script_errors()
        info = await self.describe()
        deadline = asyncio.get_running_loop().time() + timeout_s
        # Compositions readiness does not wait for (no script could register one) and those it
        # waits for briefly only (the scripts never name them): read once from the static scan.
        project = self.project
        skip = sorted(project.never_registered()) if project is not None else []
        brief = sorted(project.unnamed()) if project is not None else []
        try:
            async with asyncio.timeout_at(deadline):
                if info["kind"] == "hyperframes":
                    # The runtime sets __renderReady once sub-compositions are mounted and the
                    # timelines bound; __hfTimelinesBuilding covers timelines built lazily.
                    await self.page.wait_for_function(_HF_READY, arg=skip + brief, polling=_READY_POLL_MS, timeout=0)
                    if brief:
                        await self._wait_for_unnamed(deadline, skip)
                    # Timelines registered late are nested into the root only on a rebind.
                    await self.page.evaluate("() => window.__hfForceTimelineRebind && window.__hfForceTimelineRebind()")
                await self.page.evaluate("() => window.__renderdShim.ready()")
                longest, keeps_all = await self.page.evaluate(_PAGE_HISTORY)
                self.history_s, self.keeps_all_history = float(longest), bool(keeps_all)
        except TimeoutError:
            self._raise_script_errors()
            what = (
                await self._hyperframes_not_ready(skip + brief)
                if info["kind"] == "hyperframes"
                else "fonts, images or the hook's ready promise never settled"
            )
            raise CompositionTimeout(
                f"{where}: composition never became ready within {timeout_s:g} s: {what}", path=where
            ) from None
        except PlaywrightError as exc:
            raise CompositionError(f"{where}: page failed while getting ready: {_first_line(exc)}") from None
        self._raise_script_errors()

    async def clear_background(self) -> None:
        """Make the page transparent behind its content (idempotent); PNG screenshots keep the alpha."""
        if self.transparent:
            return
        # The same two steps as HyperFrames' alpha capture, so both tools' transparent frames
        # agree: no default white behind the page, and no html/body background of its own.
        self.transparent = True
        await self._cdp.send("Emulation.setDefaultBackgroundColorOverride", {"color": {"r": 0, "g": 0, "b": 0, "a": 0}})
        await self.page.evaluate(_CLEAR_BACKGROUND)

    async def _wait_for_unnamed(self, deadline: float, skip: list[str]) -> None:
        """Give the unnamed timelines a moment (within ``deadline``), then go on without the rest.

        That is what the HyperFrames CLI does after its 45 s (slide decks register the root's
        timeline only); the warning names them. ``skip``: the ids never waited for.
        """
        grace = min(_UNNAMED_GRACE_S, deadline - asyncio.get_running_loop().time() - 0.5)
        all_in = f"(skip) => {_HF_MISSING_TIMELINES}(skip).length === 0"
        try:
            await self.page.wait_for_function(all_in, arg=skip, polling=_READY_POLL_MS, timeout=max(1.0, grace * 1000))
        except PlaywrightTimeout:
            ids = tuple(await self.page.evaluate(_HF_MISSING_TIMELINES, skip))
            key = (str(self._comp.entry), ids)
            if ids and key not in _warned:
                _warned.add(key)
                names = ", ".join(f"window.__timelines[{m!r}]" for m in ids)
                log.warning(
                    "%s: %s never registered (no script names them); rendering without them, as "
                    "HyperFrames does after its 45 s page-ready timeout",
                    self._comp.entry_relative,
                    names,
                )

    async def _hyperframes_not_ready(self, skip: list[str]) -> str:
        """Say which part of a HyperFrames page never got ready (for the timeout error)."""
        try:
            state = await self.page.evaluate(_HF_STATE, skip)
        except PlaywrightError:
            return "the HyperFrames runtime never reported ready"
        if state.get("startup"):
            return f"the HyperFrames runtime failed to start: {_first_line(state['startup'])}"
        if not state.get("player"):
            return "the HyperFrames runtime never initialised (window.__player missing)"
        if state.get("building"):
            return "GSAP timelines were still being built"
        missing = state.get("missing") or []
        if missing:
            names = ", ".join(f"window.__timelines[{m!r}]" for m in missing)
            return (
                f"{names} never registered (a composition driven only by CSS or rAF can say so with "
                "data-no-timeline on its element)"
            )
        return "the HyperFrames runtime never reported ready (window.__renderReady)"

    @property
    def blocked(self) -> list[str]:
        """URLs the page asked for and was refused (remote ones, files it may not read)."""
        return self._router.blocked if self._router is not None else []

    def _raise_refused_asset(self) -> None:
        """Fail on an asset the router refused for its size: the page would render without it."""
        fatal = self._router.fatal if self._router is not None else None
        if fatal is not None:
            raise CompositionError(fatal, path=self._comp.entry_relative)

    def _raise_script_errors(self) -> None:
        self._raise_refused_asset()
        if self.page_errors:
            where = self._comp.entry_relative
            raise CompositionError(
                f"{where}: script error during load: {self.page_errors[0]}{self._blocked_hint()}", path=where
            )

    def _blocked_hint(self) -> str:
        """Name the remote requests refused so far: usually why a script failed (say how to fix it)."""
        remote = [u for u in self.blocked if u.startswith(("http://", "https://")) and not u.startswith(ORIGIN)]
        if not remote:
            return ""
        more = f" and {len(remote) - 1} more" if len(remote) > 1 else ""
        return f" (remote request refused: {remote[0]}{more}; run 'renderd prepare' or render without --no-prepare)"

    async def describe(self) -> dict[str, Any]:
        """Return what the page says about itself (kind, size, fps, duration)."""
        result: dict[str, Any] = await self.page.evaluate("() => window.__renderdShim.describe()")
        return result

    async def discover_media(self) -> list[dict[str, Any]]:
        """Return the page's <video>/<audio> elements with their resolved timing (HyperFrames pages)."""
        try:
            result: list[dict[str, Any]] = await self.page.evaluate(
                "() => window.__renderdMedia ? window.__renderdMedia.discover() : []"
            )
        except PlaywrightError as exc:
            raise CompositionError(f"{self._comp.entry_relative}: cannot list media: {_first_line(exc)}") from None
        return result

    async def forget_history(self, frame: int, timeout_s: float) -> None:
        """End the CSS transitions in flight: the page just jumped to ``frame`` from elsewhere."""
        await self._run(frame, timeout_s, self.page.evaluate("() => window.__renderdShim.settleTransitions()"))

    async def raster_layers(self) -> int:
        """Return how many will-change layers the page has (see page_shim.js, "Raster of will-change layers")."""
        return int(await self.page.evaluate("() => window.__renderdShim.rasterLayers()"))

    async def raster_bits(self, start: int, end: int, fps: Fps, *, timeout_s: float) -> list[str]:
        """Return which will-change layers frames ``start``..``end - 1`` draw, one "0"/"1" per layer.

        Leaves the page unfit to capture from: only for a page that captures nothing.
        """
        rows: list[str] = await self._run(
            start,
            timeout_s,
            self.page.evaluate(
                "([a, b, n, d]) => window.__renderdShim.rasterBits(a, b, n, d)", [start, end, fps.num, fps.den]
            ),
        )
        return rows

    async def tag_rasters(self, redraws: Sequence[Redraw], layers: int, timeout_s: float) -> list[int] | None:
        """Drop the raster of the layers in ``redraws``; return the frames to show, each after ``release_rasters``.

        None when the page's will-change layers are not the ``layers`` the walker counted.
        """
        shown = -1 if self.shown_frame is None else self.shown_frame
        frames: list[int] | None = await self._run(
            shown,
            timeout_s,
            self.page.evaluate(
                "([r, n]) => window.__renderdShim.tagRasters(r, n)",
                [[[r.layer, r.frame, r.keep_if_drawn] for r in redraws], layers],
            ),
        )
        if frames and self.clock is not None and self.clock.manual:
            # The two frames tagRasters lets pass elsewhere (the tagged layers lose their raster).
            async with self.clock.paused():
                for _ in range(2):
                    await self._run(shown, timeout_s, self.clock.frame())
        return None if frames is None else [int(f) for f in frames]

    async def release_rasters(self, frame: int, timeout_s: float) -> None:
        """Give back their own raster to the layers ``tag_rasters`` tagged for ``frame``: its next paint draws them."""
        await self._run(frame, timeout_s, self.page.evaluate("(f) => window.__renderdShim.releaseRasters(f)", frame))

    async def starts_free_tweens_by(self, t: Fraction, timeout_s: float) -> bool | None:
        """Jump the runtime to ``t`` and return whether that started GSAP tweens outside every timeline.

        A slide deck that starts its entrances from timeline callbacks keeps all its history even
        when none runs at load. The jump is made without renderd's seek (no clock, video frames or
        settling): the page is not fit to capture from afterwards, so close it. None: no GSAP,
        no jump made, the page is as it was. A jump that does not return within ``timeout_s``
        counts as no (the render's own seeks time out with the frame named).
        """
        try:
            async with asyncio.timeout(timeout_s):
                found = await self.page.evaluate("(t) => window.__renderdShim.freeGsapAfterJump(t)", float(t))
        except TimeoutError:
            return False
        return None if found is None else bool(found)

    async def seek(self, frame: int, t: Fraction, *, settle_frames: int, timeout_s: float) -> int:
        """Show time ``t`` (absolute ``frame``) without capturing it; return the CSS transitions it started."""
        started, _static = await self._run(frame, timeout_s, self._seek_and_draw(frame, t, settle_frames))
        return started

    async def _seek_and_draw(self, frame: int, t: Fraction, settle_frames: int) -> tuple[int, bool]:
        if self.clock is None or not self.clock.manual:
            return await self._seek(frame, t, settle_frames)
        async with self.clock.paused():
            result = await self._seek(frame, t, 0)
            for _ in range(settle_frames):
                await self.clock.frame()
            return result

    async def capture(
        self, frame: int, t: Fraction, *, fmt: str, quality: int, settle_frames: int, timeout_s: float
    ) -> bytes:
        """Seek to time ``t`` (absolute ``frame``) and return the encoded screenshot."""
        data, _static = await self.capture_unless_static(
            frame, t, fmt=fmt, quality=quality, settle_frames=settle_frames, timeout_s=timeout_s, verify=True
        )
        assert data is not None
        return data

    async def capture_unless_static(
        self,
        frame: int,
        t: Fraction,
        *,
        fmt: str,
        quality: int,
        settle_frames: int,
        timeout_s: float,
        verify: bool,
        probe: bool = True,
    ) -> tuple[bytes | None, bool]:
        """Seek to time ``t`` (absolute ``frame``); return (screenshot or None, whether the frame is static).

        A static frame provably shows what this page's seek of ``frame - 1`` showed (page_shim.js,
        staticVerdict); it is not captured (None) unless ``verify`` asks for the screenshot anyway, to
        compare. Without ``probe`` every frame is captured, as before static frames existed.
        """
        params: dict[str, Any] = {"format": fmt, "optimizeForSpeed": True, "captureBeyondViewport": False}
        if fmt == "jpeg":
            params["quality"] = quality

        if self.clock is not None:
            return await self._run(frame, timeout_s, self._begin_frame_capture(frame, t, params, verify, probe))

        async def seek_and_shoot() -> tuple[bytes | None, bool]:
            _started, static = await self._seek(frame, t, settle_frames, probe=probe)
            if probe and static:
                if not verify:
                    return None, True
                await self.page.evaluate("(n) => window.__renderdShim.settle(n)", settle_frames)
            shot = await self._cdp.send("Page.captureScreenshot", params)
            return base64.b64decode(shot["data"]), static

        return await self._run(frame, timeout_s, seek_and_shoot())

    async def _begin_frame_capture(
        self, frame: int, t: Fraction, params: dict[str, Any], verify: bool, probe: bool
    ) -> tuple[bytes | None, bool]:
        """Seek, then draw and capture the frame in one BeginFrame (no animation frames to settle)."""
        assert self.clock is not None
        shot = {k: v for k, v in params.items() if k != "captureBeyondViewport"}
        async with self.clock.paused():
            _started, static = await self._seek(frame, t, 0, probe=probe)
            if probe and static and not verify:
                return None, True
            for _attempt in range(_BEGIN_FRAME_ATTEMPTS):
                result = await self.clock.frame(shot)
                data = result.get("screenshotData")
                if data:
                    return base64.b64decode(data), static
        raise PageBroken(f"frame {frame}: BeginFrame returned no picture {_BEGIN_FRAME_ATTEMPTS} times")

    async def _seek(self, frame: int, t: Fraction, settle_frames: int, *, probe: bool = False) -> tuple[int, bool]:
        self.shown_frame = None  # unknown until the seek has finished
        # The frame before's time in a sequential pass: HyperFrames' clock still shows it while its
        # runtime seeks (see page_shim.js), whichever frame this page showed last.
        before = t * (frame - 1) / frame if frame > 0 else Fraction(0)
        started, static = await self.page.evaluate(
            "([t, f, s, b, p]) => window.__renderdShim.seek(t, f, s, b, p)",
            [float(t), frame, settle_frames, float(before), probe],
        )
        self.shown_frame = frame
        return int(started or 0), bool(static)

    async def _run(self, frame: int, timeout_s: float, work: Coroutine[Any, Any, _T]) -> _T:
        """Await ``work`` on this page, turning its failures into PageBroken or CompositionError."""
        try:
            async with asyncio.timeout(timeout_s):
                result = await work
        except TimeoutError:
            self._raise_serve_failure(frame)
            raise PageBroken(f"frame {frame}: capture timed out after {timeout_s:g} s", timeout=True) from None
        except PlaywrightError as exc:
            if self.crashed or self.page.is_closed():
                raise PageBroken(f"frame {frame}: page crashed") from None
            self._raise_serve_failure(frame)
            if self.page_errors:
                raise CompositionError(f"frame {frame}: composition script error: {self.page_errors[-1]}") from None
            raise PageBroken(f"frame {frame}: {_first_line(exc)}") from None
        self._raise_refused_asset()
        if self.page_errors:
            raise CompositionError(f"frame {frame}: composition script error: {self.page_errors[-1]}")
        return result

    def _raise_serve_failure(self, frame: int) -> None:
        if self._failures.first is not None:
            raise ServeError(f"frame {frame}: {self._failures.first}") from None

    async def crash(self) -> None:
        """Crash the renderer process (test hook for the retry path)."""
        # The crashed renderer never answers the command itself.
        with contextlib.suppress(PlaywrightError, TimeoutError):
            await asyncio.wait_for(self._cdp.send("Page.crash"), 5)

    async def close(self) -> None:
        """Close the page and its context."""
        if self.clock is not None:
            await self.clock.stop()
        with contextlib.suppress(PlaywrightError):
            await self._context.close()


def _project_fps(value: str | None) -> Fps:
    try:
        return Fps.parse(value) if value else DEFAULT_FPS
    except FrameRangeError:
        return DEFAULT_FPS  # reported as a proper error once the page describes itself


def _error_text(exc: Exception) -> str:
    name = getattr(exc, "name", "") or "Error"
    msg = getattr(exc, "message", "") or str(exc)
    return f"{name}: {_first_line(msg)}"


def _first_line(value: object) -> str:
    text = str(value).strip()
    return text.splitlines()[0] if text else type(value).__name__
