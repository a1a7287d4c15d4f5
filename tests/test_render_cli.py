"""End-to-end renders through the real `renderd render` command, real Chromium and ffmpeg."""

from __future__ import annotations

import hashlib
import re
from pathlib import Path

import pytest
from conftest import EXAMPLES, FIXTURES, decode_index, json_events, run_renderd
from videotools import decode_frames, ffprobe, pixel

pytestmark = pytest.mark.browser


def probe(path: Path) -> tuple[int, int, int, str]:
    s = ffprobe(path, "-count_packets", "-select_streams", "v:0", "-show_entries",
                "stream=nb_read_packets,width,height,r_frame_rate")["streams"][0]  # fmt: skip
    return int(s["nb_read_packets"]), s["width"], s["height"], s["r_frame_rate"]


def test_gsap_example_renders_every_frame(tmp_path: Path) -> None:
    out = tmp_path / "out.mp4"
    r = run_renderd("render", EXAMPLES / "hyperframes-gsap", "-o", out)
    assert r.returncode == 0, r.stderr
    # 4 s at 30 fps, 1280x720: frame count from ffprobe, not from our own bookkeeping.
    assert probe(out) == (120, 1280, 720, "30/1")
    assert not list(tmp_path.glob(".renderd-*")), "work directory left behind"


def test_hook_example_renders(tmp_path: Path) -> None:
    out = tmp_path / "hook.mp4"
    r = run_renderd("render", EXAMPLES / "hook", "-o", out, "--json")
    assert r.returncode == 0, r.stderr
    assert probe(out) == (72, 640, 360, "24/1")
    events = json_events(r.stdout)
    assert events[0]["event"] == "started" and events[-1]["event"] == "done"
    assert events[-1]["frames"] == 72


def _frame_hashes(work_dir: Path) -> dict[int, str]:
    """Map absolute frame index -> sha256 of the PNG, from kept chunk dirs (local names)."""
    hashes: dict[int, str] = {}
    for chunk_dir in work_dir.glob(".renderd-*/chunk-*-*-*"):
        start = int(chunk_dir.name.split("-")[2])
        for f in chunk_dir.glob("frame_*.png"):
            local = int(f.stem.split("_")[1])
            assert start + local not in hashes, f"frame {start + local} written twice"
            hashes[start + local] = hashlib.sha256(f.read_bytes()).hexdigest()
    return hashes


def test_same_frames_whatever_the_workers_and_chunks(tmp_path: Path) -> None:
    """1 worker in 1 chunk and 2 workers in 3 chunks give byte-identical PNG frames.

    The fixture goes through the HyperFrames runtime. It has no gradients: Chromium's gradient
    dithering can differ by a least significant bit depending on the frames a page drew before
    (see docs/design.md), which is why examples/hyperframes-gsap is not used here.
    """
    results = {}
    for name, workers, chunks in (("a", "1", "1"), ("b", "2", "3")):
        work = tmp_path / name
        work.mkdir()
        r = run_renderd(
            "render", FIXTURES / "frame-index-gsap", "-o", work / "out.mp4", "--frames", "37:67",
            "--frame-format", "png", "--workers", workers, "--chunks", chunks, "--keep-frames", "--work-dir", work,
        )  # fmt: skip
        assert r.returncode == 0, r.stderr
        results[name] = _frame_hashes(work)
    assert sorted(results["a"]) == list(range(37, 67))
    assert results["a"] == results["b"]
    # The frames really differ from each other, so equality above is not vacuous.
    assert len(set(results["a"].values())) > 20


@pytest.mark.parametrize("fixture", ["frame-index-hook", "frame-index-gsap"])
def test_chunked_render_mid_composition_shows_each_frame_index(tmp_path: Path, fixture: str) -> None:
    out = tmp_path / "idx.mp4"
    r = run_renderd("render", FIXTURES / fixture, "-o", out, "--frames", "45:105", "--chunks", "3", "--workers", "2")
    assert r.returncode == 0, r.stderr
    frames = decode_frames(out, 320, 240)
    assert len(frames) == 60
    assert [decode_index(f, 320) for f in frames] == list(range(45, 105))
    # Row B follows GSAP property tweens: it must agree with row A (onUpdate callbacks).
    assert [decode_index(f, 320, row_y=180) for f in frames] == list(range(45, 105))


def test_crashed_page_is_recaptured_by_the_retry_path(tmp_path: Path) -> None:
    out = tmp_path / "crash.mp4"
    r = run_renderd(
        "render", FIXTURES / "frame-index-hook", "-o", out, "--frames", "20:100", "--workers", "2",
        "--chunks", "2", "--json", env={"RENDERD_FAULT_CRASH_PAGE_AT_FRAME": "30"},
    )  # fmt: skip
    assert r.returncode == 0, r.stderr
    retries = [e for e in json_events(r.stdout) if e["event"] == "retry"]
    assert retries, "the crash should have gone through the retry path"
    assert retries[0]["frames"] >= 1 and "crash" in retries[0]["reason"]
    frames = decode_frames(out, 320, 240)
    assert [decode_index(f, 320) for f in frames] == list(range(20, 100))


def test_css_and_waapi_animations_follow_the_virtual_clock(tmp_path: Path) -> None:
    out = tmp_path / "css.mp4"
    r = run_renderd("render", FIXTURES / "css-anim", "-o", out, "--frames", "10:40", "--chunks", "2")
    assert r.returncode == 0, r.stderr
    frames = decode_frames(out, 320, 240)
    assert len(frames) == 30
    for j, frame in enumerate(frames):
        k = 10 + j
        # Red box (CSS keyframes) has its left edge at x = 4k; blue box (WAAPI) at x = 240 - 4k.
        red_inside, red_before = pixel(frame, 320, 4 * k + 20, 60), pixel(frame, 320, max(0, 4 * k - 12), 60)
        assert red_inside[0] > 200 and red_inside[2] < 60, (k, red_inside)
        assert red_before[0] < 200 or red_before[1] > 100, (k, red_before)
        blue_inside = pixel(frame, 320, 240 - 4 * k + 20, 180)
        assert blue_inside[2] > 200 and blue_inside[0] < 60, (k, blue_inside)


HOOK = "tests/fixtures/frame-index-hook"
BAD_CASES = [
    (["render", "tests/fixtures/does-not-exist", "-o", "{out}"], r"does not exist"),
    (["render", "tests", "-o", "{out}"], r"has no index\.html"),
    (["render", "tests/fixtures/bad-script-error", "-o", "{out}"],
     r"script error during load: .*boom from composition"),
    (["render", "tests/fixtures/bad-never-ready", "-o", "{out}", "--ready-timeout", "3"],
     r"never became ready within 3 s: window\.__timelines\['main'\] never registered"),
    (["render", "tests/fixtures/bad-no-duration", "-o", "{out}"], r"no width, height, duration found"),
    (["render", "tests/fixtures/bad-size", "-o", "{out}"], r"width 0 is out of range"),
    (["render", HOOK, "-o", "{out}", "--frames", "1.5:3"], r"frame range '1\.5:3'"),
    (["render", HOOK, "-o", "{out}", "--frames", "5:500"], r"beyond the end .*120 frames"),
    (["render", HOOK, "-o", "{out}", "--frames", "9:9"], r"is empty"),
    (["render", HOOK, "-o", "{out}", "--fps", "0"], r"fps must be positive"),
    (["render", HOOK, "-o", "{out}", "--workers", "0"], r"--workers must be at least 1"),
    (["render", HOOK, "-o", "/dev/null/x.mp4"],  # a missing one is created; this one cannot be
     r"output directory /dev/null is not a directory"),
    (["render", HOOK, "-o", "{out}", "--width", "321"], r"width 321 is odd"),
]  # fmt: skip


@pytest.mark.parametrize(("argv", "pattern"), BAD_CASES, ids=[c[1][:30] for c in BAD_CASES])
def test_bad_input_gives_one_line_error(tmp_path: Path, argv: list[str], pattern: str) -> None:
    out = tmp_path / "out.mp4"
    r = run_renderd(*[a.replace("{out}", str(out)) for a in argv], timeout=120)
    assert r.returncode != 0
    assert "Traceback" not in r.stderr
    lines = [ln for ln in r.stderr.splitlines() if ln.strip() and not ln.startswith("usage:")]
    assert len(lines) == 1, r.stderr
    assert re.search(pattern, lines[0]), lines[0]
    assert not out.exists()
    assert not list(tmp_path.glob(".renderd-*"))
