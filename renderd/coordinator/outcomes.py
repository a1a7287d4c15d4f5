"""Where the scheduler reports how chunk attempts end, for counting (``/metrics``).

The scheduler calls these at the points where an attempt's end is recorded; the default does
nothing, so the scheduler never imports the metrics library. The web listener's metrics
(:mod:`renderd.coordinator.metrics`) subclass it.
"""

from __future__ import annotations


class ChunkOutcomes:
    """Receives chunk attempt endings; this base ignores them."""

    def verified(self, host: str, seconds: float, *, speculative: bool = False) -> None:
        """A chunk rendered on ``host`` in ``seconds`` was verified and kept."""

    def failed(self, host: str) -> None:
        """An attempt on ``host`` failed (it counts against the chunk)."""

    def lost(self, host: str) -> None:
        """An attempt was lost because ``host`` went away (requeued, not counted)."""

    def speculative(self, host: str) -> None:
        """A speculative copy of a straggling chunk started on ``host``."""
