"""A will-change layer to draw before a jump: made by raster.py, handed to the page (page.py).

On its own so that neither of the two imports the other for it.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True, slots=True)
class Redraw:
    """Draw layer ``layer`` (index among the page's will-change layers) first at ``frame``.

    ``keep_if_drawn``: the page is fresh and the layer has been drawn since frame 0; a fresh page
    that drew it at load already has it as a sequential pass would.
    """

    layer: int
    frame: int
    keep_if_drawn: bool = False
