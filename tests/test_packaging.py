"""The wheel ships every file of renderd/ that renderd reads at run time, and nothing else.

Static and fast (one pip wheel build, shared with tests/test_installed.py). The editable install
the other tests run hides a file that the wheel leaves out; this compares the two directly.
"""

from __future__ import annotations

import zipfile
from pathlib import Path

from conftest import ROOT


def _source_files() -> set[str]:
    """Files under renderd/ in the checkout, as wheel paths, less bytecode."""
    out = set()
    for path in (ROOT / "renderd").rglob("*"):
        if path.is_file() and "__pycache__" not in path.parts and path.suffix not in (".pyc", ".pyo"):
            out.add(path.relative_to(ROOT).as_posix())
    return out


def _wheel_files(wheel: Path) -> set[str]:
    with zipfile.ZipFile(wheel) as z:
        return {n for n in z.namelist() if not n.endswith("/")}


def test_every_file_under_renderd_ships_in_the_wheel(renderd_wheel: Path) -> None:
    source = _source_files()
    data = {f for f in source if not f.endswith(".py")}
    # The data files the engine opens at run time: if these move, this list moves with them.
    for needed in (
        "renderd/engine/page_shim.js",
        "renderd/engine/vendor/hyperframes/hyperframe.runtime.iife.js",
        "renderd/engine/vendor/hyperframes/fonts/fonts.json",
        "renderd/engine/vendor/hyperframes/fonts/licenses/inter.txt",
    ):
        assert needed in data, f"{needed} is not in the checkout any more: update this test"
    missing = sorted(source - _wheel_files(renderd_wheel))
    assert not missing, f"{len(missing)} file(s) under renderd/ are not in the wheel: {missing[:10]}"


def test_the_wheel_holds_renderd_and_its_metadata_only(renderd_wheel: Path) -> None:
    files = _wheel_files(renderd_wheel)
    dist_info = f"{renderd_wheel.name.split('-')[0]}-{renderd_wheel.name.split('-')[1]}.dist-info/"
    outside = sorted(f for f in files if not f.startswith(("renderd/", dist_info)))
    assert not outside, f"files from outside renderd/ leaked into the wheel: {outside[:10]}"
    bytecode = sorted(f for f in files if "__pycache__" in f or f.endswith((".pyc", ".pyo")))
    assert not bytecode, f"bytecode in the wheel: {bytecode[:10]}"
    # Nothing in the wheel that the checkout does not have either (a stale build/ would add some).
    extra = sorted(f for f in files if f.startswith("renderd/") and f not in _source_files())
    assert not extra, extra
    assert f"{dist_info}entry_points.txt" in files and f"{dist_info}licenses/LICENSE" in files
