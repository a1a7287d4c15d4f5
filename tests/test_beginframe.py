"""BeginFrame capture in chromium-headless-shell (``--browser headless-shell``) against screenshots.

Real Chromium, the real headless shell and ffmpeg. The same composition rendered both ways must
give the same pixels: a farm may then mix hosts of either kind across jobs, and the choice of
path is about speed only (docs/performance.md). `.ci/run` installs the shell; without it (a
developer machine) these tests are skipped, never in CI.
"""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import pytest
from conftest import EXAMPLES, FIXTURES, run_renderd
from videotools import decode_frames, pixel

if shutil.which("chromium-headless-shell") is None and not os.environ.get("CI"):
    pytest.skip("chromium-headless-shell is not installed (.ci/run installs it)", allow_module_level=True)


def _frames(comp: Path, out: Path, browser: str, *extra: str) -> tuple[list[bytes], str]:
    r = run_renderd("render", comp, "-o", out, "--format", "png-sequence", "--browser", browser, *extra)
    assert r.returncode == 0, r.stderr
    files = sorted(out.iterdir())
    assert files, out
    w, h = _size(comp)
    return [decode_frames(f, w, h)[0] for f in files], r.stderr


def _size(comp: Path) -> tuple[int, int]:
    return (1280, 720) if comp.name == "hyperframes-gsap" else (160, 120)


# Will-change text is compared as one sequential pass: split over workers, the shell's frames after
# a worker's jump differed now and then on a loaded machine (docs/performance.md, "Two capture
# paths"), which is why the shell is not the default.
@pytest.mark.parametrize(
    ("comp", "frames", "workers"),
    [
        (EXAMPLES / "hyperframes-gsap", "0:12", "2"),
        (FIXTURES / "hf-will-change", "0:60", "1"),
        (FIXTURES / "hf-project", "0:45", "2"),
    ],
    ids=["gsap-text", "will-change-text", "hf-project"],
)
def test_beginframe_frames_equal_screenshot_frames(tmp_path: Path, comp: Path, frames: str, workers: str) -> None:
    shot, shot_log = _frames(comp, tmp_path / "shot", "chromium", "--frames", frames, "--workers", workers)
    begin, begin_log = _frames(comp, tmp_path / "begin", "headless-shell", "--frames", frames, "--workers", workers)
    assert "screenshot capture (Chromium)" in shot_log
    assert "BeginFrame capture (headless shell)" in begin_log
    assert len(shot) == len(begin) == int(frames.split(":")[1])
    differ = [i for i, (a, b) in enumerate(zip(shot, begin, strict=True)) if a != b]
    assert differ == [], f"{comp.name}: frames {differ} differ between the two capture paths"


def test_webgl_through_beginframe(tmp_path: Path) -> None:
    frames, log = _frames(FIXTURES / "webgl-clear", tmp_path / "gl", "headless-shell", "--gl", "on")
    assert "BeginFrame capture" in log and len(frames) == 30
    for i in (0, 15, 29):
        t = i / 30
        want = (round(t * 255), 128, round((1 - t) * 255))
        got = pixel(frames[i], 160, 80, 60)
        assert all(abs(g - w) <= 1 for g, w in zip(got, want, strict=True)), (i, got, want)


def test_a_host_can_turn_the_shell_off(tmp_path: Path) -> None:
    off = {"RENDERD_HEADLESS_SHELL": "off"}
    comp = FIXTURES / "frame-index-hook"
    r = run_renderd("render", comp, "-o", tmp_path / "never.mp4", "--browser", "headless-shell", env=off)
    assert r.returncode != 0
    assert r.stderr.endswith(
        "renderd: error: the headless shell is turned off on this host (RENDERD_HEADLESS_SHELL=off)\n"
    ), r.stderr
    assert "Traceback" not in r.stderr and not (tmp_path / "never.mp4").exists()
    # auto falls back to Chromium screenshots; without the variable it takes the shell.
    r = run_renderd("render", comp, "-o", tmp_path / "auto.mp4", "--frames", "0:10", "--browser", "auto", env=off)
    assert r.returncode == 0 and "screenshot capture (Chromium)" in r.stderr, r.stderr
    r = run_renderd("render", comp, "-o", tmp_path / "shell.mp4", "--frames", "0:10", "--browser", "auto")
    assert r.returncode == 0 and "BeginFrame capture (headless shell)" in r.stderr, r.stderr
    # The default is Chromium screenshots.
    r = run_renderd("render", comp, "-o", tmp_path / "default.mp4", "--frames", "0:10")
    assert r.returncode == 0 and "screenshot capture (Chromium)" in r.stderr, r.stderr
