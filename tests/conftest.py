"""Shared helpers: run the real `renderd` console script, decode frame-index fixtures."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from users import UNAVAILABLE, ThrowawayUser

ROOT = Path(__file__).resolve().parent.parent
FIXTURES = ROOT / "tests" / "fixtures"
EXAMPLES = ROOT / "examples"
RENDERD = Path(sys.executable).with_name("renderd")


def renderd_cmd(*args: str | os.PathLike[str]) -> list[str]:
    """Return the argv that runs the installed renderd console script."""
    return [str(RENDERD), *map(str, args)]


def run_renderd(
    *args: str | os.PathLike[str], env: dict[str, str] | None = None, timeout: float = 240
) -> subprocess.CompletedProcess[str]:
    """Run renderd to completion and return its result (text mode)."""
    full_env = {**os.environ, **(env or {})}
    return subprocess.run(renderd_cmd(*args), capture_output=True, text=True, timeout=timeout, env=full_env, cwd=ROOT)


def json_events(stdout: str) -> list[dict[str, Any]]:
    """Parse JSON-line events from renderd --json output."""
    return [json.loads(line) for line in stdout.splitlines() if line.strip().startswith("{")]


def decode_index(frame: bytes, width: int, row_y: int = 120) -> int:
    """Read the 8-bit frame index drawn by the frame-index fixtures (see fixtures/README.md)."""
    k = 0
    for b in range(8):
        total = 0
        n = 0
        for x in range(40 * b + 10, 40 * b + 30, 5):
            for y in range(row_y - 10, row_y + 10, 5):
                i = (y * width + x) * 3
                total += (frame[i] * 299 + frame[i + 1] * 587 + frame[i + 2] * 114) // 1000
                n += 1
        if total / n > 128:
            k |= 1 << b
    return k


@pytest.fixture
def short_tmp() -> Iterator[Path]:
    """A temp dir with a short path (Unix socket paths are limited to ~107 bytes), readable by all."""
    root = Path(tempfile.mkdtemp(prefix="rd-", dir="/tmp"))
    os.chmod(root, 0o755)
    yield root
    shutil.rmtree(root, ignore_errors=True)


@pytest.fixture(scope="module")
def throwaway_user() -> Iterator[ThrowawayUser]:
    """A new unprivileged user for this test module, removed afterwards (skips unless root, see users.py)."""
    if UNAVAILABLE is not None:
        pytest.skip(f"cannot make a throwaway user: {UNAVAILABLE}")
    user = ThrowawayUser()
    try:
        yield user
    finally:
        user.remove()


@pytest.fixture(scope="session", autouse=True)
def _chromium_available() -> None:
    if not Path("/usr/bin/chromium").exists():
        pytest.exit("Chromium is not installed: run scripts/setup first", returncode=2)


# Never source: what a checkout accumulates at its top level from tools and earlier builds.
NOT_SOURCE = {".git", ".venv", "build", "dist", ".pytest_cache", ".ruff_cache", ".mypy_cache", ".hypothesis"}


def copy_checkout(dest: Path) -> Path:
    """Copy the checkout to ``dest`` as a developer has it (__pycache__, untracked files), less build leftovers."""

    def ignore(directory: str, names: list[str]) -> set[str]:
        if Path(directory) != ROOT:
            return set()
        return {n for n in names if n in NOT_SOURCE or n.endswith(".egg-info")}

    shutil.copytree(ROOT, dest, ignore=ignore, symlinks=True)
    return dest


@pytest.fixture(scope="session")
def renderd_wheel(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A wheel of renderd built by pip from a copy of the checkout, shared by the whole session."""
    work = tmp_path_factory.mktemp("wheel")
    # From a copy: a stale build/lib in the checkout could add files that the tree no longer has.
    src = copy_checkout(work / "src")
    # As in a checkout that has run: __pycache__ everywhere, which must not ship.
    compile_all = [sys.executable, "-m", "compileall", "-q", src / "renderd"]
    subprocess.run(compile_all, check=True, capture_output=True, timeout=120)
    r = subprocess.run(
        [sys.executable, "-m", "pip", "wheel", "--no-deps", "-q", "-w", work / "dist", src],
        capture_output=True, text=True, timeout=600,
    )  # fmt: skip
    assert r.returncode == 0, r.stdout + r.stderr
    (wheel,) = (work / "dist").glob("renderd-*.whl")
    return wheel
