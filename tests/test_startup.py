"""Workers started while the composition is probed (Engine.probe's expect_frames), on real Chromium.

The browsers and pages of the expected workers load beside the probe's, at the size the probe
loads at; once the composition's size is known they are kept (nothing is launched or loaded
when the workers warm up) or, at another size, only their browsers are.
"""

from __future__ import annotations

import asyncio
import tempfile
from pathlib import Path
from typing import Any

import pytest
from conftest import FIXTURES

from renderd.composition import Overrides, load_composition
from renderd.engine import Engine, EngineOptions
from renderd.engine import pool as pool_mod
from renderd.engine.page import CompositionPage
from renderd.frames import FrameRange

COMP = FIXTURES / "hf-static-skip"  # a HyperFrames project: its probe page jumps to its end


def _warm_up_cost(
    monkeypatch: pytest.MonkeyPatch, overrides: Overrides, expect: int | None
) -> tuple[int, int, list[str]]:
    """Probe expecting ``expect`` frames (2 workers for any), warm 2 workers up and capture.

    Returns the browsers launched and pages opened by the warm-up, and the frame files written.
    """
    launched: list[int] = []
    opened: list[int] = []
    real_launch, real_open = pool_mod.launch_browser, CompositionPage.open.__func__  # type: ignore[attr-defined]

    async def launch(*a: Any, **kw: Any) -> Any:
        launched.append(1)
        return await real_launch(*a, **kw)

    async def open_page(cls: type[CompositionPage], *a: Any, **kw: Any) -> Any:
        opened.append(1)
        return await real_open(cls, *a, **kw)

    async def run() -> list[str]:
        async with Engine(load_composition(COMP), EngineOptions(workers=2)) as engine:
            await engine.probe(overrides, expect_frames=expect)
            monkeypatch.setattr(pool_mod, "launch_browser", launch)
            monkeypatch.setattr(CompositionPage, "open", classmethod(open_page))
            await engine.warm_up(2)
            monkeypatch.undo()
            return await _capture_names(engine)

    names = asyncio.run(run())
    return len(launched), len(opened), names


async def _capture_names(engine: Engine) -> list[str]:
    """Capture frames 0-11 with both workers; return the files written."""
    with tempfile.TemporaryDirectory() as tmp:
        await engine.capture_chunk(FrameRange(0, 12), Path(tmp), 2, on_frame=lambda _i: None)
        return sorted(p.name for p in Path(tmp).iterdir())


@pytest.mark.browser
def test_workers_loaded_during_the_probe_capture_at_once(monkeypatch: pytest.MonkeyPatch) -> None:
    # At the composition's size (given as overrides): worker 1's browser and page are ready;
    # worker 0 loads its page in the probe's browser (the probe page jumped to the end).
    launched, opened, names = _warm_up_cost(monkeypatch, Overrides(width=160, height=120), expect=90)
    assert (launched, opened) == (0, 1)
    assert names == [f"frame_{i:06d}.jpg" for i in range(12)]


@pytest.mark.browser
def test_workers_loaded_at_another_size_keep_only_their_browsers(monkeypatch: pytest.MonkeyPatch) -> None:
    # The probe loads at 1920x1080 until it knows better: the pages are dropped, the browser kept.
    launched, opened, names = _warm_up_cost(monkeypatch, Overrides(), expect=90)
    assert (launched, opened) == (0, 2)
    assert len(names) == 12


@pytest.mark.browser
def test_without_a_guess_the_warm_up_starts_the_second_browser(monkeypatch: pytest.MonkeyPatch) -> None:
    launched, opened, _names = _warm_up_cost(monkeypatch, Overrides(width=160, height=120), expect=None)
    assert (launched, opened) == (1, 2)
