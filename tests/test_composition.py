"""Composition loading and metadata validation (no browser)."""

from __future__ import annotations

from fractions import Fraction
from pathlib import Path

import pytest
from conftest import EXAMPLES

from renderd.composition import Composition, Overrides, load_composition, resolve_info
from renderd.errors import CompositionError
from renderd.frames import Fps


def test_directory_and_html_file_resolve_to_the_same_root(tmp_path: Path) -> None:
    (tmp_path / "index.html").write_text("<html></html>")
    (tmp_path / "other.html").write_text("<html></html>")
    a = load_composition(tmp_path)
    b = load_composition(tmp_path / "other.html")
    assert a.root == b.root == tmp_path.resolve()
    assert a.entry_relative == "index.html" and b.entry_relative == "other.html"


@pytest.mark.parametrize(
    ("name", "pattern"),
    [
        ("missing", "does not exist"),
        ("emptydir", "has no index.html"),
        ("file.txt", "not a directory or an .html"),
    ],
)
def test_bad_paths(tmp_path: Path, name: str, pattern: str) -> None:
    (tmp_path / "emptydir").mkdir()
    (tmp_path / "file.txt").write_text("x")
    with pytest.raises(CompositionError, match=pattern):
        load_composition(tmp_path / name)


def _comp(tmp_path: Path) -> Composition:
    (tmp_path / "index.html").write_text("<html></html>")
    return load_composition(tmp_path)


def test_hook_metadata_and_overrides(tmp_path: Path) -> None:
    comp = _comp(tmp_path)
    described = {"kind": "hook", "width": 640, "height": 360, "fps": "24", "duration": 3}
    info = resolve_info(comp, described, Overrides())
    assert (info.width, info.height, info.fps, info.total_frames) == (640, 360, Fps(24), 72)
    info = resolve_info(comp, described, Overrides(fps=Fps(30000, 1001), duration=Fraction(10)))
    assert info.total_frames == 300


def test_timeline_duration_used_when_no_data_duration(tmp_path: Path) -> None:
    comp = _comp(tmp_path)
    described = {"kind": "hyperframes", "width": 100, "height": 100, "fps": None, "timelineDuration": 2.5}
    info = resolve_info(comp, described, Overrides())
    assert info.fps == Fps(30) and info.total_frames == 75


@pytest.mark.parametrize(
    ("described", "pattern"),
    [
        ({"width": 0, "height": 10, "duration": 1}, "width 0 is out of range"),
        ({"width": 10, "height": 99999, "duration": 1}, "height 99999 is out of range"),
        ({"width": 11, "height": 10, "duration": 1}, "width 11 is odd"),
        ({"width": 10.5, "height": 10, "duration": 1}, "not a whole number"),
        ({"width": 10, "height": 10, "duration": -1}, "duration -1 s is out of range"),
        ({"width": 10, "height": 10, "duration": 1, "fps": "0"}, "fps must be positive"),
        ({"width": 10, "height": 10, "duration": 1, "fps": "1000"}, "above the maximum"),
        ({}, "no width, height, duration found"),
    ],
)
def test_bad_metadata(tmp_path: Path, described: dict[str, object], pattern: str) -> None:
    with pytest.raises(CompositionError, match=pattern):
        resolve_info(_comp(tmp_path), described, Overrides())


def test_webgl_detection(tmp_path: Path) -> None:
    assert not load_composition(EXAMPLES / "hyperframes-gsap").uses_webgl()
    (tmp_path / "index.html").write_text("<script src='scene.js'></script>")
    (tmp_path / "scene.js").write_text("const gl = canvas.getContext('webgl2');")
    assert load_composition(tmp_path).uses_webgl()
