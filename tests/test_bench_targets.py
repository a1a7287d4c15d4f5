"""The measuring parts of scripts/bench_targets.py (`scripts/bench targets`), on real processes and renders."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
from conftest import FIXTURES

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "scripts"))

from bench_targets import TreeCpu, psnr, trimmed_copy, whole_render  # noqa: E402


def test_tree_cpu_keeps_cpu_of_exited_grandchildren() -> None:
    """A grandchild's CPU seconds still count after it exits (the largest value seen is kept).

    Its last moments before exit can fall between two samples (more so on a loaded machine), so
    half of its CPU time is all that is asserted.
    """
    busy = f"{sys.executable} -c 'import time; t = time.process_time()\nwhile time.process_time() - t < 1.6: pass'"
    proc = subprocess.Popen(["sh", "-c", f"{busy}; sleep 1"])
    with TreeCpu(proc.pid) as meter:
        proc.wait(timeout=60)
        total = meter.sample()
    assert total >= 0.8


def test_trimmed_copy_declares_only_the_frames(tmp_path: Path) -> None:
    """HyperFrames renders whole compositions: 0:45 at 30 fps becomes a 1.5 s copy; 12:45 cannot."""
    comp = FIXTURES / "hf-project"
    copy = trimmed_copy(comp, "0:45", tmp_path / "copy")
    assert copy == tmp_path / "copy"
    html = (copy / "index.html").read_text()
    assert 'data-composition-id="main" data-start="0" data-duration="1.5"' in html
    assert 'data-duration="3"' in (comp / "index.html").read_text()  # the original is untouched
    assert (copy / "gsap.min.js").exists()
    assert trimmed_copy(comp, None, tmp_path / "whole") == comp
    assert trimmed_copy(comp, "12:45", tmp_path / "late") is None


@pytest.mark.browser
def test_whole_render_reports_frames_workers_capture_and_cpu(tmp_path: Path) -> None:
    """A timed `renderd render --json`: its frames (ffprobe), workers, capture path and CPU busy."""
    run = whole_render(FIXTURES / "hf-chase", tmp_path / "out.mp4", "2", "0:30")
    assert run.frames == 30 and run.workers == 2
    assert run.capture in ("beginframe", "screenshot")
    assert run.busy is not None and 0.0 < run.busy <= 1.05
    assert run.first_s is not None and 0.0 < run.first_s < run.wall


def test_psnr_reads_bt709_videos_as_bt709(tmp_path: Path) -> None:
    """Colour bars encoded as renderd encodes (limited-range bt709): near-lossless, not 28 dB.

    Read through ffmpeg's default bt601 matrix, the same video scores 28 dB against its source.
    """
    ref = tmp_path / "ref"
    ref.mkdir()
    ffmpeg = ["ffmpeg", "-v", "error"]
    bars = ["-f", "lavfi", "-i", "smptebars=size=320x240:rate=30", "-frames:v", "10"]
    subprocess.run([*ffmpeg, *bars, str(ref / "frame_%06d.png")], check=True)
    video = tmp_path / "bars.mp4"
    subprocess.run(
        [*ffmpeg, "-framerate", "30", "-i", str(ref / "frame_%06d.png"),
         "-vf", "scale=out_color_matrix=bt709:out_range=tv,format=yuv420p", "-colorspace", "bt709",
         "-color_primaries", "bt709", "-color_trc", "bt709", "-color_range", "tv", "-c:v", "libx264", "-crf", "18",
         str(video)],
        check=True,
    )  # fmt: skip
    avg, worst = psnr(video, ref, "30")
    assert avg >= 50 and worst >= 50, (avg, worst)


@pytest.mark.browser
def test_capture_limit_meters_the_capture_and_encoding_its_frames(tmp_path: Path) -> None:
    """The CPU floor's parts: both are CPU seconds really spent (browsers, driver, ffmpeg)."""
    import asyncio

    from bench_targets import capture_limit

    lim = asyncio.run(capture_limit(FIXTURES / "hf-chase", "chromium", (0, 20), 2))
    assert lim.frames == 20 and lim.secs > 0
    assert lim.capture_cpu > 0.2 and lim.encode_cpu > 0.01, lim
