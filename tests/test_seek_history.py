"""Frames do not depend on how a render is split, and --transparent keeps the page's alpha."""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

import pytest
from conftest import FIXTURES, json_events, run_renderd
from videotools import close, decode_frames, pixel

HISTORY = FIXTURES / "hf-history"
W, H = 160, 120
GREEN = (0, 255, 0)


@pytest.mark.parametrize(
    "fixture",
    [
        # State from the previous seek (velocity-driven motion blur): the frame before is shown first.
        "hf-history",
        # State from every seek since the first (anime.js start values): every task replays from 0.
        "hf-anime-history",
        # A slide deck whose callback fires entrance tweens on GSAP's ticker: replays from 0 too.
        "hf-deck-history",
        # The same without a tween at load: found by the probe's jump to the end.
        "hf-deck-late",
    ],
)
def test_a_composition_with_state_between_seeks_renders_as_one_sequential_pass(tmp_path: Path, fixture: str) -> None:
    """Every task starts mid-range on a fresh or reused page; the fixture turns red when its history is wrong."""
    out = tmp_path / "out.mp4"
    r = run_renderd("render", FIXTURES / fixture, "-o", out, "--workers", "2", "--chunks", "3", "--crf", "10")
    assert r.returncode == 0, r.stderr
    frames = decode_frames(out, W, H)
    assert len(frames) == 60
    # The decks' probe is grey until their slide 2 fires (frame 30).
    first = 30 if fixture.startswith("hf-deck") else 0
    red = [i for i, f in enumerate(frames) if i >= first and not close(pixel(f, W, 40, 60), GREEN, 40)]
    assert red == [], f"frames rendered with a history a sequential pass would not have: {red}"


@pytest.mark.parametrize("gl", ["on", "off"])
def test_auto_workers_is_one_for_a_webgl_page_that_replays_from_frame_0(tmp_path: Path, gl: str) -> None:
    """Each worker of a page that keeps all its history draws every frame before its own.

    With software GL one page already uses every core, so a second worker only doubles the
    drawing (airbnb-deck, 450 frames: 69 s with 1 worker, 93 s with 2); without GL it pays.
    """
    r = run_renderd("render", FIXTURES / "hf-deck-history", "-o", tmp_path / "out.mp4", "--gl", gl, "--json")
    assert r.returncode == 0, r.stderr
    started = next(e for e in json_events(r.stdout) if e["event"] == "started")
    assert started["gl"] is (gl == "on")
    if gl == "on":
        assert started["workers"] == 1, started
    elif (os.cpu_count() or 1) >= 2:
        assert started["workers"] >= 2, started


def test_a_tween_a_seek_callback_starts_is_one_tick_along_on_its_first_frame(tmp_path: Path) -> None:
    """HyperFrames seeks with the clock at the frame before, then moves it and runs rAF: match that.

    hf-deck-history's callback starts a 0.5 s tween of #bar (x 0 -> 100 px) on GSAP's own ticker at
    frame 30. In HyperFrames' render it is one frame along there (x = 6.7), ends at frame 44, and
    startup-pitch's slide entrances compare at >= 54 dB only that way; with the clock moved before
    the seek every frame of it was 6.7 px behind.
    """
    out = tmp_path / "out.mp4"
    r = run_renderd("render", FIXTURES / "hf-deck-history", "-o", out, "--crf", "0")
    assert r.returncode == 0, r.stderr
    frames = decode_frames(out, W, H)
    got = {i: _dark_left_edge(frames[i], 105) for i in (29, 30, 35, 40, 44, 50)}
    want = {i: min(100.0, max(0.0, (i - 29) * 100 / 15)) for i in got}
    off = {i: (got[i], round(want[i], 1)) for i in got if got[i] is None or abs(got[i] - want[i]) > 1.5}
    assert off == {}, f"#bar's left edge (got, want) by frame: {off}"


def test_the_clock_during_a_seek_shows_the_frame_before_whatever_the_split(tmp_path: Path) -> None:
    """hf-seek-clock: onUpdate sees the frame before's time, rAF the frame's own, on every frame.

    That is HyperFrames' order (its runtime seeks, then its clock moves); on a split render, so the
    frames where a worker starts are checked too.
    """
    out = tmp_path / "out.mp4"
    r = run_renderd("render", FIXTURES / "hf-seek-clock", "-o", out, "--workers", "2", "--chunks", "3", "--crf", "10")
    assert r.returncode == 0, r.stderr
    frames = decode_frames(out, W, H)
    assert len(frames) == 60
    wrong = [
        (i, side)
        for i, f in enumerate(frames)
        for side, x in (("seek", 40), ("raf", 120))
        if not close(pixel(f, W, x, 60), GREEN, 40)
    ]
    assert wrong == [], f"frames whose clock was not the expected one (frame, half): {wrong}"


def _dark_left_edge(frame: bytes, y: int) -> int | None:
    dark = [x for x in range(W) if max(pixel(frame, W, x, y)) < 60]
    return dark[0] if dark else None


def _slider_x(frame: bytes) -> int | None:
    """Left edge of the black slider on row y = 110 (see tests/fixtures/hf-history)."""
    return _dark_left_edge(frame, 110)


@pytest.mark.parametrize("slow", [False, True], ids=["fast", "slow-capture"])
def test_css_transitions_advance_with_composition_time_not_capture_speed(tmp_path: Path, slow: bool) -> None:
    """The transition starts at 0.5 s and runs 1 s; a slower host must not draw it further along."""
    out = tmp_path / "out.mp4"
    env = {"RENDERD_FAULT_FRAME_DELAY_MS": "150"} if slow else None
    r = run_renderd("render", HISTORY, "-o", out, "--workers", "2", "--chunks", "3", "--crf", "10", env=env)
    assert r.returncode == 0, r.stderr
    frames = decode_frames(out, W, H)
    got = {i: _slider_x(frames[i]) for i in (0, 15, 20, 30, 40, 45, 59)}
    want = {0: 0, 15: 0, 20: 10, 30: 30, 40: 50, 45: 60, 59: 60}
    assert all(got[i] is not None and abs(got[i] - x) <= 1 for i, x in want.items()), got


CHASE = FIXTURES / "hf-chase"


def _chase_sequential() -> list[float]:
    """x of the hf-chase square at each frame of a browser playing it at 30 fps (see the fixture)."""
    fps, duration = 30, 0.2

    def target(k: int) -> float:
        return min(max(120 * (k / fps - 0.2) / 1.2, 0.0), 120.0)

    xs, run = [], None  # run: (start frame, from x, to x) of the transition in flight
    for k in range(60):
        # Where the square is when frame k's style change comes: still at the previous target, or
        # part of the way along the transition in flight.
        if run is None:
            now = target(max(k - 1, 0))
        else:
            now = run[1] + (run[2] - run[1]) * min(1.0, (k - run[0]) / fps / duration)
        if k and target(k) != target(k - 1):
            run = (k, now, target(k))  # the new transition starts where the running one has got to
        xs.append(now)
    return xs


def _square_x(frame: bytes) -> int | None:
    """Left edge of the black square on row y = 60 (see tests/fixtures/hf-chase)."""
    dark = [x for x in range(W) if max(pixel(frame, W, x, 60)) < 128]
    return dark[0] if dark else None


@pytest.fixture(scope="module")
def chase_renders(tmp_path_factory: pytest.TempPathFactory) -> dict[str, list[bytes]]:
    """hf-chase rendered as one sequential pass and split into 6 worker tasks (3 chunks x 2)."""
    out = {}
    for name, split in (("sequential", ("1", "1")), ("split", ("2", "3"))):
        video = tmp_path_factory.mktemp("chase") / f"{name}.mp4"
        r = run_renderd("render", CHASE, "-o", video, "--workers", split[0], "--chunks", split[1], "--crf", "0")
        assert r.returncode == 0, r.stderr
        out[name] = decode_frames(video, W, H)
        assert len(out[name]) == 60
    return out


def test_an_element_a_timeline_moves_chases_its_target_through_its_transition(chase_renders) -> None:
    """Each frame's style change restarts the transition from where it has got to, as in a browser."""
    got = [_square_x(f) for f in chase_renders["sequential"]]
    want = _chase_sequential()
    off = [(k, got[k], round(x, 1)) for k, x in enumerate(want) if got[k] is None or abs(got[k] - x) > 1]
    assert off == [], f"(frame, drawn x, expected x): {off}"


def test_a_chain_of_transitions_renders_the_same_whatever_the_split(chase_renders) -> None:
    """Tasks start inside the chain (frames 10..50); priming reaches back to before it began."""
    seq, split = chase_renders["sequential"], chase_renders["split"]
    differ = [k for k in range(60) if seq[k] != split[k]]
    assert differ == [], f"frames that differ from the sequential pass: {differ}"


def test_will_change_layers_are_drawn_as_in_one_sequential_pass_whatever_the_split(tmp_path: Path) -> None:
    """Chromium rasterises a will-change layer when first drawn and then only moves that raster.

    hf-will-change's rows of text start on other frames (2, 30 after a hidden spell, 30 as a late
    clip, load); a worker that jumped to frame 10, 20 or 40 drew their glyphs at another subpixel
    offset until it is shown where each row was first drawn (40 of 60 frames differed before).
    """
    frames = {}
    for name, workers, chunks in (("sequential", "1", "1"), ("split", "2", "3")):
        video = tmp_path / f"{name}.mp4"
        r = run_renderd(
            "render", FIXTURES / "hf-will-change", "-o", video, "--workers", workers, "--chunks", chunks, "--crf", "0"
        )
        assert r.returncode == 0, r.stderr
        frames[name] = decode_frames(video, W, H)
        assert len(frames[name]) == 60
    seq, split = frames["sequential"], frames["split"]
    assert len(set(seq)) > 50, "the rows do not move"
    differ = [k for k in range(60) if seq[k] != split[k]]
    assert differ == [], f"frames that differ from the sequential pass: {differ}"


def _rgba(png: Path, x: int, y: int) -> tuple[int, ...]:
    raw = subprocess.run(
        ["ffmpeg", "-v", "error", "-i", str(png), "-f", "rawvideo", "-pix_fmt", "rgba", "-"],
        check=True, capture_output=True, timeout=60,
    ).stdout  # fmt: skip
    i = (y * W + x) * 4
    return tuple(raw[i : i + 4])


def _first_kept_frame(work: Path) -> Path:
    frames = sorted(work.glob(".renderd-*/chunk-*/frame_000000.png"))
    assert frames, f"no kept PNG frames under {work}"
    return frames[0]


@pytest.mark.parametrize("transparent", [False, True])
def test_transparent_clears_the_page_background_and_keeps_alpha(tmp_path: Path, transparent: bool) -> None:
    work = tmp_path / "work"
    work.mkdir()
    extra = ["--transparent"] if transparent else []
    # An output with alpha (webm) for --transparent; the kept PNG frames are what is checked here.
    r = run_renderd(
        "render", HISTORY, "-o", tmp_path / ("out.webm" if transparent else "out.mp4"), "--frames", "0:2",
        "--frame-format", "png",
        "--keep-frames", "--work-dir", work, *extra,
    )  # fmt: skip
    assert r.returncode == 0, r.stderr
    png = _first_kept_frame(work)
    assert _rgba(png, 40, 60) == (0, 255, 0, 255)  # the composition's own box stays opaque
    # Right half: only the html background (blue) is there; --transparent clears it.
    assert _rgba(png, 120, 60) == ((0, 0, 0, 0) if transparent else (0, 0, 255, 255))


def test_transparent_needs_an_output_with_alpha_and_png_frames(tmp_path: Path) -> None:
    r = run_renderd("render", HISTORY, "-o", tmp_path / "out.mp4", "--transparent")
    assert r.returncode == 2
    assert r.stderr.strip() == (
        "renderd: error: --transparent needs an output with alpha (webm, mov, png-sequence); mp4 has none"
    )
    r = run_renderd("render", HISTORY, "-o", tmp_path / "out.webm", "--transparent", "--frame-format", "jpeg")
    assert r.returncode == 2
    assert r.stderr.strip() == (
        "renderd: error: --frame-format jpeg cannot be used with --transparent "
        "(JPEG frames are lossy and have no alpha)"
    )
    assert not (tmp_path / "out.mp4").exists() and not (tmp_path / "out.webm").exists()
