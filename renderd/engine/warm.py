"""Engines kept warm between chunk assignments (``renderd agent --serve``).

A serving agent keeps its Playwright driver for its whole life and the last probed engine
(browsers with the composition's pages loaded) for as long as the assignments come from the same
job with the same settings: the next chunk of that job starts capturing at once. Another job, or
a failed chunk, gets a fresh engine, so no page state crosses jobs or survives an error.
"""

from __future__ import annotations

import contextlib
from collections.abc import Hashable

from playwright.async_api import Playwright, async_playwright

from renderd.composition import Composition, CompositionInfo, Overrides
from renderd.engine import Engine, EngineOptions


class WarmEngines:
    """The Playwright driver and one probed engine, reused while the key stays the same."""

    def __init__(self) -> None:
        self._pw_cm = async_playwright()
        self._pw: Playwright | None = None
        self._key: Hashable | None = None
        self._engine: Engine | None = None
        self._info: CompositionInfo | None = None
        self.reused = 0  # assignments served by an engine already warm (for logs and tests)

    async def acquire(
        self,
        key: Hashable,
        comp: Composition,
        options: EngineOptions,
        overrides: Overrides,
        *,
        expect_frames: int | None = None,
    ) -> tuple[Engine, CompositionInfo]:
        """Return a probed engine for ``key``: the warm one if the key matches, else a new one.

        ``expect_frames``: Engine.probe's (it sizes the workers started while a new engine probes).
        """
        if self._engine is not None and self._info is not None and self._key == key:
            self.reused += 1
            return self._engine, self._info
        await self.release()
        if self._pw is None:
            self._pw = await self._pw_cm.start()
        engine = Engine(comp, options, playwright=self._pw)
        try:
            info = await engine.probe(overrides, expect_frames=expect_frames)
        except BaseException:
            await engine.close()
            raise
        self._key, self._engine, self._info = key, engine, info
        return engine, info

    async def release(self) -> None:
        """Close the warm engine's browsers (after an error, or for another job)."""
        engine, self._engine, self._key, self._info = self._engine, None, None, None
        if engine is not None:
            await engine.close()

    async def close(self) -> None:
        """Close the engine and the driver."""
        await self.release()
        if self._pw is not None:
            self._pw = None
            with contextlib.suppress(Exception):
                await self._pw_cm.__aexit__(None, None, None)
