"""Command-line options shared by `render`, `inspect` and `submit` besides the render settings.

The render settings themselves come from renderd.settings.add_arguments; these are the
composition overrides and the frame range, which are not settings but are checked the same way
wherever they are accepted.
"""

from __future__ import annotations

import argparse
from collections.abc import Callable
from typing import TYPE_CHECKING

from renderd.errors import RenderdError

if TYPE_CHECKING:
    from fractions import Fraction

    from renderd.frames import Fps

# renderd.frames and fractions (with decimal) are imported when a value is parsed: every
# command's parser has these options, and most invocations give none of them.

# Kept as text by the parser: a trailing slash ("frames/") says png-sequence, and Path drops it.
OUTPUT_HELP = (
    "output file: .mp4, .webm, .mov or .gif (its extension says the format); "
    "or a directory, named with a trailing slash or made with the png-sequence format, for PNG files"
)


def positive_int(name: str) -> Callable[[str], int]:
    """Return an argparse type: a whole number >= 1, errors naming ``name``."""

    def parse(text: str) -> int:
        try:
            v = int(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"{name} must be a whole number, got {text!r}") from None
        if v <= 0:
            raise argparse.ArgumentTypeError(f"{name} must be at least 1, got {v}")
        return v

    return parse


def _int_in(name: str, lo: int, hi: int) -> Callable[[str], int]:
    def parse(text: str) -> int:
        try:
            v = int(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"{name} must be a whole number, got {text!r}") from None
        if not lo <= v <= hi:
            raise argparse.ArgumentTypeError(f"{name} must be between {lo} and {hi}, got {v}")
        return v

    return parse


def _fps(text: str) -> Fps:
    from renderd.frames import Fps

    try:
        return Fps.parse(text)
    except RenderdError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


def _seconds(name: str) -> Callable[[str], Fraction]:
    def parse(text: str) -> Fraction:
        from fractions import Fraction

        try:
            v = Fraction(text)
        except (ValueError, ZeroDivisionError):
            raise argparse.ArgumentTypeError(f"{name} must be a number of seconds, got {text!r}") from None
        if v <= 0:
            raise argparse.ArgumentTypeError(f"{name} must be positive, got {text}")
        return v

    return parse


def add_override_arguments(p: argparse.ArgumentParser, *, frames: bool = True) -> None:
    """Add --fps, --width, --height, --duration (and --frames) to ``p``."""
    p.add_argument("--fps", type=_fps, help="frame rate, e.g. 30, 29.97, 30000/1001 (default: the composition's)")
    p.add_argument("--width", type=_int_in("--width", 2, 8192), help="width in pixels (default: the composition's)")
    p.add_argument("--height", type=_int_in("--height", 2, 8192), help="height in pixels (default: the composition's)")
    p.add_argument("--duration", type=_seconds("--duration"), help="duration in seconds (default: the composition's)")
    if frames:
        p.add_argument("--frames", metavar="A:B", help="render only absolute frames [A, B)")
