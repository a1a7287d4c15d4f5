"""Where will-change layers were first drawn, from which layers each frame draws (renderd.engine.raster)."""

from __future__ import annotations

from renderd.engine.raster import Redraw, episode_starts, redraws_for

# Three layers over frames 0..9: layer 0 drawn from frame 2 on, layer 1 drawn from 0 but hidden at
# frames 4..5, layer 2 never drawn after frame 6.
BITS = {
    0: "010", 1: "010", 2: "111", 3: "111", 4: "101",
    5: "101", 6: "111", 7: "110", 8: "110", 9: "110",
}  # fmt: skip


def test_each_drawn_layer_gets_the_frame_its_episode_began_on() -> None:
    assert episode_starts(BITS, 9, 0) == ({0: 2, 1: 6}, False)
    assert episode_starts(BITS, 3, 0) == ({0: 2, 1: 0, 2: 2}, True)


def test_a_layer_drawn_all_the_way_back_is_flagged_open() -> None:
    assert episode_starts(BITS, 9, 7) == ({0: 7, 1: 7}, True)
    assert episode_starts(BITS, 1, 0) == ({1: 0}, True)


def test_a_fresh_page_keeps_layers_drawn_since_load_if_it_drew_them() -> None:
    assert redraws_for({0: 2, 1: 0}, 3, None) == [Redraw(0, 2), Redraw(1, 0, keep_if_drawn=True)]


def test_a_page_that_drew_an_episode_through_keeps_it() -> None:
    # Last showed frame 3: layer 0 (from 2) was drawn through; layer 1 (from 6) was not.
    assert redraws_for({0: 2, 1: 6}, 9, 3) == [Redraw(1, 6)]


def test_a_page_past_the_frame_draws_every_layer_again() -> None:
    assert redraws_for({0: 2, 1: 6}, 9, 12) == [Redraw(0, 2), Redraw(1, 6)]
