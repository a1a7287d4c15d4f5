"""`renderd inspect`: what renderd detects in a composition, read from its files and its page."""

from __future__ import annotations

import contextlib
from dataclasses import dataclass
from typing import Any

from playwright.async_api import async_playwright

from renderd.composition import Composition, CompositionInfo, Overrides
from renderd.engine import read_info
from renderd.engine.browser import BrowserOptions, launch_browser
from renderd.engine.hyperframes.runtime import runtime_version
from renderd.errors import RenderdError
from renderd.hyperframes.project import read_project


@dataclass(frozen=True, slots=True)
class Inspection:
    """The static view of a composition and, when its page loaded, the validated metadata."""

    comp: Composition
    static: dict[str, Any] | None  # HyperFrames project summary, None for other kinds
    info: CompositionInfo | None
    error: str | None  # why the page could not be read, if it could not

    def to_dict(self) -> dict[str, Any]:
        """Return a JSON-friendly dict."""
        out: dict[str, Any] = {"composition": str(self.comp.entry)}
        if self.info is not None:
            out.update(self.info.to_dict())
        if self.static is not None:
            out["hyperframes"] = {**self.static, "runtime_version": runtime_version()}
        if self.error is not None:
            out["error"] = self.error
        return out


async def inspect_composition(
    comp: Composition, overrides: Overrides, *, chromium: str | None, ready_timeout_s: float
) -> Inspection:
    """Scan ``comp``'s files, then load its page once to read and validate its metadata."""
    project = read_project(comp.entry)
    static = project.to_dict() if project is not None else None
    try:
        async with async_playwright() as pw:
            browser = await launch_browser(pw, BrowserOptions(executable=chromium, gl=comp.uses_webgl()))
            try:
                info, _ = await read_info(browser, comp, overrides, ready_timeout_s)
            finally:
                with contextlib.suppress(Exception):
                    await browser.close()
    except RenderdError as exc:
        return Inspection(comp, static, None, str(exc))
    return Inspection(comp, static, info, None)


def format_inspection(ins: Inspection) -> list[str]:
    """Return the human-readable lines for ``renderd inspect``."""
    lines = [f"composition: {ins.comp.entry}"]
    if ins.info is not None:
        i = ins.info
        lines += [
            f"kind: {i.kind}" + (f" (id {i.composition_id!r})" if i.composition_id else ""),
            f"size: {i.width}x{i.height}",
            f"fps: {i.fps}",
            f"duration: {float(i.duration):g} s",
            f"frames: {i.total_frames}",
        ]
    s = ins.static
    if s is not None:
        lines.append(f"hyperframes runtime: {runtime_version()}")
        lines.append(f"clips: {s['clips']}")
        subs = s["sub_compositions"]
        lines.append(f"sub-compositions: {len(subs)}")
        for sub in subs:
            where = "" if sub["found"] else "  MISSING"
            lines.append(
                f"  {sub['src']} (id {sub['id']}, start {sub['start'] or 0}, duration {sub['duration'] or '-'}){where}"
            )
        lines.append(f"media: {len(s['media'])}")
        for m in s["media"]:
            lines.append(f"  <{m['tag']}> {m['src']} (start {m['start'] or 0})")
        lines.append(f"remote URLs: {len(s['remote_urls'])}" + (" (run 'renderd prepare')" if s["remote_urls"] else ""))
        lines += [f"  {u}" for u in s["remote_urls"]]
    if ins.error is not None:
        lines.append(f"page: {ins.error}")
    return lines
