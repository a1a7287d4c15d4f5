"""The frame clock of a page in a BeginFrame-controlled headless shell.

Started with ``--enable-begin-frame-control``, ``chromium-headless-shell`` draws a frame only
when asked (CDP ``HeadlessExperimental.beginFrame``), and that call can return the frame's
screenshot: one main-frame update, raster, composite and encode, with no animation frames to
wait for and no second compositor pass. That is the capture path (page.py).

A page still needs frames while it loads (fonts, image decodes): the clock ticks in the
background then, about 30 times a second. Once the page is ready (``manual``) its owner draws
every frame it needs (page.py: a seek's settle frames, the frames after tagging will-change
layers, each capture), so no frame depends on when a tick comes; a capture holds the tick off
(``paused``) and costs one drawn frame. The tick then only rescues a page that has waited
STALL_MS for a frame (a script awaiting one), without display updates: it runs the page's frame
callbacks but draws nothing, so no layer is rasterised at a half-seeked state.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator
from typing import Any

from playwright.async_api import CDPSession
from playwright.async_api import Error as PlaywrightError

TICK_INTERVAL_MS = 33.0
# A seek takes 5-20 ms on a 1080p page (more on a loaded machine): a pause this long means the
# page waits for a frame.
STALL_MS = 500.0


class FrameClock:
    """Issue BeginFrames to one page: on demand, and as a background tick when nobody captures."""

    def __init__(self, cdp: CDPSession) -> None:
        self._cdp = cdp
        self._ticks_ms = 0.0  # frameTimeTicks must only grow
        self._lock = asyncio.Lock()
        self._paused = 0
        self._paused_since = 0.0
        # Once the page is ready its owner draws every frame it needs (``manual``): the background
        # tick then only rescues a page that waits for a frame, without drawing.
        self.manual = False
        self._last_frame = 0.0  # loop time of the last frame, ticked or captured
        self._ticker: asyncio.Task[None] | None = None

    async def start(self) -> None:
        """Enable the domain and start ticking."""
        await self._cdp.send("HeadlessExperimental.enable")
        self._ticker = asyncio.create_task(self._tick_forever(), name="renderd-beginframe-ticker")

    async def stop(self) -> None:
        """Stop ticking (the page is closing)."""
        ticker, self._ticker = self._ticker, None
        if ticker is not None:
            ticker.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await asyncio.wait_for(ticker, 5)

    @contextlib.asynccontextmanager
    async def paused(self) -> AsyncIterator[None]:
        """Hold the background tick off (a capture's seek and its frame)."""
        if not self._paused:
            self._paused_since = asyncio.get_running_loop().time()
        self._paused += 1
        try:
            yield
        finally:
            self._paused -= 1
            self._last_frame = asyncio.get_running_loop().time()

    async def frame(self, screenshot: dict[str, Any] | None = None, *, draw: bool = True) -> dict[str, Any]:
        """Draw one frame; with ``screenshot`` (CDP ScreenshotParams) return its picture too.

        Without ``draw`` the frame only runs the page's frame callbacks and lifecycle: nothing is
        committed or drawn.
        """
        async with self._lock:
            self._ticks_ms += TICK_INTERVAL_MS
            params: dict[str, Any] = {"frameTimeTicks": self._ticks_ms, "interval": TICK_INTERVAL_MS}
            if not draw:
                params["noDisplayUpdates"] = True
            if screenshot is not None:
                params["screenshot"] = screenshot
            try:
                result: dict[str, Any] = await self._cdp.send("HeadlessExperimental.beginFrame", params)
            finally:
                self._last_frame = asyncio.get_running_loop().time()
            return result

    async def _tick_forever(self) -> None:
        loop = asyncio.get_running_loop()
        interval = TICK_INTERVAL_MS / 1000
        while True:
            await asyncio.sleep(interval)
            now = loop.time()
            if now - self._last_frame < interval:
                continue
            stalled = (now - (self._last_frame if self.manual else self._paused_since)) * 1000 >= STALL_MS
            if (self._paused or self.manual) and not stalled:
                continue
            try:
                await self.frame(draw=not (self._paused or self.manual))
            except PlaywrightError:
                # The page is navigating or closing: its owner notices on its own calls.
                await asyncio.sleep(interval)
