"""The daemon parses a submitted composition for remote URLs once per content, not on every submit."""

from __future__ import annotations

import os
from pathlib import Path

from renderd.composition import load_composition
from renderd.coordinator.describe import TreeDigester
from renderd.coordinator.submit import PrepareScans

REMOTE_SCRIPT = '<script src="https://cdn.jsdelivr.net/npm/gsap@3.15.0/dist/gsap.min.js"></script>'
REMOTE_FONT = '@import url("https://fonts.googleapis.com/css2?family=Inter");\n'


def _page(extra: str = "") -> str:
    return (
        '<!doctype html><html><head><link rel="stylesheet" href="style.css"><script src="app.js"></script>'
        f'{extra}</head><body data-width="160" data-height="120" data-duration="1"></body></html>\n'
    )


def test_unchanged_composition_is_not_parsed_again_and_any_change_is(tmp_path: Path) -> None:
    root = tmp_path / "comp"
    root.mkdir()
    (root / "index.html").write_text(_page())
    (root / "other.html").write_text(_page(REMOTE_SCRIPT))
    (root / "style.css").write_text("body { background: #000; }\n")
    (root / "app.js").write_text("window.x = 1;\n")
    scans = PrepareScans(TreeDigester())
    comp = load_composition(root)

    assert scans.needs_prepare(comp) is False
    assert scans.needs_prepare(load_composition(root)) is False
    assert scans.scans == 1

    # A new mtime with the same bytes is the same composition.
    os.utime(root / "app.js", ns=(1, 1))
    assert scans.needs_prepare(load_composition(root)) is False
    assert scans.scans == 1

    # A remote font in a stylesheet the page pulls in is seen, and so is its removal.
    (root / "style.css").write_text(REMOTE_FONT + "body { background: #000; }\n")
    assert scans.needs_prepare(load_composition(root)) is True
    assert scans.scans == 2
    (root / "style.css").write_text("body { background: #000; }\n")
    assert scans.needs_prepare(load_composition(root)) is False
    assert scans.scans == 2  # that content was parsed before

    # Another entry of the same tree has its own answer.
    assert scans.needs_prepare(load_composition(root / "other.html")) is True
    assert scans.scans == 3
