"""Where each will-change layer was first drawn, so a worker that jumps draws it as a sequential pass.

Chromium rasterises a layer with ``will-change: transform`` when it is first drawn and afterwards
only moves that raster, until the layer is hidden and drawn again (page_shim.js, "Raster of
will-change layers"). Before a jump, a worker asks ``RasterWalker.redraws`` which of the layers
drawn at its first frame it must draw first elsewhere, and at which frames.

Which layers are drawn at a frame is read in a page of its own: reading a page's styles at other
frames makes that page re-rasterise whatever was hidden there at its next paint.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable, Mapping

from playwright.async_api import Error as PlaywrightError

from renderd.engine.page import CompositionPage
from renderd.engine.redraw import Redraw
from renderd.errors import CompositionError, PageBroken

__all__ = ["RasterWalker", "Redraw", "episode_starts", "redraws_for"]
from renderd.frames import Fps

log = logging.getLogger(__name__)

# Frames read per call into the walker page while looking back from a jump.
_BATCH = 64


def episode_starts(bits: Mapping[int, str], frame: int, first: int) -> tuple[dict[int, int], bool]:
    """Return, for each layer drawn at ``frame``, the frame its drawn episode began on.

    ``bits[k]`` holds one "0"/"1" per layer for every frame ``k`` in ``[first, frame]``. A layer
    drawn at every one of them gets ``first``; the flag says whether any did (the caller may look
    further back).
    """
    at = bits[frame]
    open_layers = {i for i, b in enumerate(at) if b == "1"}
    starts: dict[int, int] = {}
    for k in range(frame - 1, first - 1, -1):
        if not open_layers:
            break
        row = bits[k]
        for i in [i for i in open_layers if row[i] == "0"]:
            starts[i] = k + 1
            open_layers.discard(i)
    for i in open_layers:
        starts[i] = first
    return starts, bool(open_layers)


def redraws_for(starts: Mapping[int, int], frame: int, shown: int | None) -> list[Redraw]:
    """Return the layers a page that last showed ``shown`` must draw first elsewhere before ``frame``.

    A layer whose episode began at or before ``shown`` (and ``shown`` before ``frame``) was drawn
    by this page through it already; one on a fresh page (``shown`` None) drawn since frame 0 was
    drawn at load, if the page drew it there.
    """
    out: list[Redraw] = []
    for layer, start in sorted(starts.items()):
        if shown is None:
            out.append(Redraw(layer, start, keep_if_drawn=start == 0))
        elif not (shown < frame and start <= shown):
            out.append(Redraw(layer, start))
    return out


PageOpener = Callable[[], Awaitable[CompositionPage]]


class RasterWalker:
    """Reads which will-change layers are drawn at which frames, in a page that captures nothing."""

    def __init__(self, layers: int, fps: Fps, open_page: PageOpener, *, timeout_s: float) -> None:
        self.layers = layers
        self._fps = fps
        self._open_page = open_page
        self._timeout_s = timeout_s
        self._page: CompositionPage | None = None
        self._bits: dict[int, str] = {}
        self._lock = asyncio.Lock()
        self.disabled = False

    async def redraws(self, frame: int, shown: int | None, lookback: int) -> list[Redraw]:
        """Return what a page that last showed ``shown`` must draw before jumping to ``frame``.

        Looks back at most ``lookback`` frames; a layer drawn all that way is taken as drawn
        since frame 0. Empty when the walker has been disabled by an earlier failure.
        """
        if self.disabled:
            return []
        first = max(0, frame - lookback)
        async with self._lock:
            try:
                hi = frame + 1
                while True:
                    lo = max(first, hi - _BATCH)
                    await self._read(lo, hi)
                    starts, still_open = episode_starts(self._bits, frame, lo)
                    if not still_open or lo == first:
                        break
                    hi = lo
            except (PageBroken, CompositionError, PlaywrightError) as exc:
                self.disable(f"cannot read which will-change layers frame {frame} draws: {exc}")
                return []
        if still_open and first > 0:
            # Drawn for the whole look-back: most likely since the start (a ticker on all along).
            starts = {i: 0 if s == first else s for i, s in starts.items()}
        return redraws_for(starts, frame, shown)

    def disable(self, reason: str) -> None:
        """Stop anchoring for this render (frames after jumps may then differ slightly)."""
        if not self.disabled:
            self.disabled = True
            log.warning("%s; frames after a worker's jump may differ slightly from a sequential render", reason)

    async def _read(self, lo: int, hi: int) -> None:
        missing = [k for k in range(lo, hi) if k not in self._bits]
        if not missing:
            return
        start, end = missing[0], missing[-1] + 1
        if self._page is None or self._page.crashed or self._page.page.is_closed():
            self._page = await self._open_page()
        rows = await self._page.raster_bits(start, end, self._fps, timeout_s=self._timeout_s)
        for k, row in zip(range(start, end), rows, strict=True):
            if len(row) != self.layers:
                raise CompositionError(f"frame {k}: {len(row)} will-change layers, {self.layers} at load")
            self._bits[k] = row

    async def close(self) -> None:
        """Close the walker page."""
        if self._page is not None:
            page, self._page = self._page, None
            await page.close()
