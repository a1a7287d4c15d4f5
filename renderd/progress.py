"""Turn frame completions into rate-limited Progress events with a smoothed rate and ETA."""

from __future__ import annotations

import time
from collections import deque
from collections.abc import Callable

from renderd.events import Event, Progress

EMIT_INTERVAL_S = 0.25
RATE_WINDOW_S = 5.0


class ProgressTracker:
    """Count captured frames and emit Progress events at most every EMIT_INTERVAL_S."""

    def __init__(self, total: int, emit: Callable[[Event], None], *, clock: Callable[[], float] = time.monotonic):
        self.total = total
        self.done = 0
        self.workers = 0
        self.retries = 0
        self.chunks_done = 0
        self.skipped = 0  # static frames among those done (set by the render)
        # Frames counted, so a frame captured again (a reused frame after a static-frame mismatch)
        # is counted once.
        self._counted: set[int] = set()
        self._emit = emit
        self._clock = clock
        self._last_emit = -1e9
        self._samples: deque[tuple[float, int]] = deque()
        self._started = clock()

    def frame_done(self, _frame: int = -1) -> None:
        """Record one captured frame (absolute index; a frame recorded before is not counted again)."""
        if _frame >= 0:
            if _frame in self._counted:
                return
            self._counted.add(_frame)
        self.done += 1
        now = self._clock()
        self._samples.append((now, self.done))
        while self._samples and now - self._samples[0][0] > RATE_WINDOW_S:
            self._samples.popleft()
        if now - self._last_emit >= EMIT_INTERVAL_S or self.done >= self.total:
            self.emit_now(now)

    def rate(self) -> float:
        """Return frames per second over the recent window (since the start if short)."""
        if len(self._samples) >= 2:
            (t0, n0), (t1, n1) = self._samples[0], self._samples[-1]
            if t1 > t0:
                return (n1 - n0) / (t1 - t0)
        elapsed = self._clock() - self._started
        return self.done / elapsed if elapsed > 0 else 0.0

    def emit_now(self, now: float | None = None) -> None:
        """Emit a Progress event with the current counts."""
        self._last_emit = self._clock() if now is None else now
        rate = self.rate()
        remaining = max(0, self.total - self.done)
        eta = remaining / rate if rate > 0 else None
        self._emit(
            Progress(
                frames_done=min(self.done, self.total),
                frames=self.total,
                fps=round(rate, 2),
                eta_s=None if eta is None else round(eta, 1),
                workers=self.workers,
                retries=self.retries,
                chunks_done=self.chunks_done,
                frames_skipped=self.skipped,
            )
        )
