"""Static frames: a frame the page proves unchanged is not captured, its predecessor's bytes are reused.

Real Chromium and ffmpeg. tests/fixtures/hf-static-skip has a still section (frames 0-19), a moving one
(20-39), a slow fade in steps under one 8-bit level (40-69) and a hard cut with no animation at
70, then stillness (70-89). Frames are PNG and decoded to pixels: every frame rendered with static
frames must equal the one rendered without them.
"""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

from conftest import FIXTURES, json_events, run_renderd
from videotools import decode_frames, pixel

from renderd.encode import EncodeSettings
from renderd.engine import CaptureSettings
from renderd.engine.pool import _verify_static
from renderd.events import Done, Event
from renderd.progress import ProgressTracker
from renderd.render import RenderRequest, RenderResult, render_local

COMP = FIXTURES / "hf-static-skip"
W, H = 160, 120
STILL = range(1, 20)
MOVING = range(20, 40)
FADE = range(40, 70)
CUT = 70
AFTER_CUT = range(71, 90)


def _render(out: Path, *, workers: int = 2, chunks: int | None = None, **capture: Any) -> tuple[RenderResult, Done]:
    """Render hf-static-skip to a PNG sequence in this process; return the result and its done event."""
    events: list[Event] = []
    req = RenderRequest(
        composition=COMP,
        output=out,
        workers=workers,
        chunks=chunks,
        capture=CaptureSettings(fmt="png", **capture),
        encode=EncodeSettings(format="png-sequence"),
    )
    result = asyncio.run(render_local(req, events.append))
    done = [e for e in events if isinstance(e, Done)]
    assert len(done) == 1
    return result, done[0]


def _pixels(seq: Path) -> list[bytes]:
    frames = decode_frames(seq / "frame_%06d.png", W, H)
    assert len(frames) == 90
    return frames


def _every_frame(tmp_path: Path) -> list[bytes]:
    """Frames rendered without static frames, through the command line's --no-skip-static."""
    out = tmp_path / "off"
    r = run_renderd("render", COMP, "-o", out, "--format", "png-sequence", "--no-prepare", "--json", "--no-skip-static")
    assert r.returncode == 0, r.stderr
    done = json_events(r.stdout)[-1]
    assert done["event"] == "done" and (done["frames_skipped"], done["frames_verified"]) == (0, 0), done
    return _pixels(out)


def test_static_frames_are_pixel_identical_and_only_where_nothing_changes(tmp_path: Path) -> None:
    off = _every_frame(tmp_path)
    # The fixture is what it says: the fade changes the picture, the cut shows a blue square.
    assert off[FADE.start] != off[FADE.stop - 1] and off[STILL.start] == off[STILL.stop - 1]
    assert pixel(off[CUT - 1], W, 120, 80) != (0, 0, 255) and pixel(off[CUT], W, 120, 80) == (0, 0, 255)

    result, done = _render(tmp_path / "on")
    on = _pixels(tmp_path / "on")
    differing = [i for i in range(90) if on[i] != off[i]]
    assert differing == [], f"frames differ with static frames: {differing}"

    skipped = result.static.frames
    assert skipped & set(STILL) and skipped & set(AFTER_CUT), sorted(skipped)
    assert not skipped & set(MOVING), sorted(skipped & set(MOVING))
    assert not skipped & set(FADE), sorted(skipped & set(FADE))
    assert CUT not in skipped
    assert result.static.mismatches == 0 and result.static.disabled is None
    assert done.frames_skipped == len(skipped) == result.static.skipped
    assert done.frames_verified >= 2 and done.skip_mismatches == 0


def test_a_wrong_proof_is_caught_by_the_pixel_check_and_its_frames_captured_again(tmp_path: Path) -> None:
    off = _every_frame(tmp_path)
    # Every frame taken as static (the proof injected wrong), nothing checked: frames that moved
    # come out frozen. This is what the comparisons in this file must see.
    _render(tmp_path / "unchecked", workers=1, chunks=1, fault_force_static=True, static_verify_stride=0)
    unchecked = _pixels(tmp_path / "unchecked")
    assert [i for i in MOVING if unchecked[i] != off[i]], "a wrong proof went unnoticed by the comparison"

    # The same wrong proof, checked: the first static frame of a run matches (frame 1), the 24th
    # (frame 24, moving) does not; the reused frames before it are captured again.
    result, done = _render(tmp_path / "checked", workers=1, chunks=1, fault_force_static=True)
    checked = _pixels(tmp_path / "checked")
    assert [i for i in range(90) if checked[i] != off[i]] == []
    assert result.static.mismatches == 1 and done.skip_mismatches == 1
    assert result.static.disabled is not None and "frame 24 differed" in result.static.disabled
    assert result.static.recaptured == result.static.skipped > 0
    assert result.static.frames == set()


def test_which_static_frames_are_checked() -> None:
    stride = CaptureSettings().static_verify_stride
    checked = [k for k in range(1, 40) if _verify_static(k, stride, last_of_task=False)]
    assert checked == [1, stride, 2 * stride, 3 * stride]
    assert _verify_static(5, stride, last_of_task=True)
    assert not any(_verify_static(k, 0, last_of_task=True) for k in range(1, 40))


def test_a_reused_frame_captured_again_counts_once_in_progress() -> None:
    events: list[Event] = []
    tracker = ProgressTracker(3, events.append, clock=lambda: 0.0)
    for frame in (0, 1, 1, 2):
        tracker.frame_done(frame)
    assert tracker.done == 3
