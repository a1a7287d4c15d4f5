"""Render settings: every option of a render, defined once.

`RenderSettings` is what `renderd render` and `renderd submit` accept, what a job record keeps,
what an assignment carries to an agent, and what the agent turns into the engine's and the
encoder's settings (render.RenderRequest.from_settings). Each field's metadata (flag, help,
range or choices) generates the command-line options of both commands, the control protocol's
field types and the checks; its default is the only one written anywhere.

This module is a leaf: the engine and the encoder import their defaults from it.
"""

from __future__ import annotations

import argparse
import math
from collections.abc import Iterable, Mapping
from dataclasses import MISSING, asdict, dataclass, field, fields, replace
from typing import Any

from renderd.errors import SettingsError

# What a render can deliver (renderd.formats holds how each is made).
OUTPUT_FORMATS = ("mp4", "webm", "mov", "png-sequence", "gif")
ALPHA_FORMATS = ("webm", "mov", "png-sequence")

X264_PRESETS = (
    "ultrafast",
    "superfast",
    "veryfast",
    "faster",
    "fast",
    "medium",
    "slow",
    "slower",
    "veryslow",
    "placebo",
)


@dataclass(frozen=True, slots=True)
class Option:
    """How one setting appears on the command line and which values it takes."""

    help: str
    kind: type  # int, float, str or bool: the JSON type of the value
    metavar: str | None = None
    choices: tuple[str, ...] = ()
    lo: int | None = None
    hi: int | None = None
    unit: str = "seconds"  # what a float setting counts, for its error text
    auto: bool = False  # "auto" on the command line, null in JSON: None, decided at render time
    optional: bool = False  # None allowed (unset), without the "auto" spelling

    @property
    def nullable(self) -> bool:
        """Return whether None is a valid value."""
        return self.auto or self.optional


def _setting(default: Any, **option: Any) -> Any:
    return field(default=default, metadata={"option": Option(**option)})


@dataclass(frozen=True, slots=True)
class RenderSettings:
    """Every render option, validated on construction (SettingsError names the bad option)."""

    workers: int | None = _setting(
        None,
        kind=int,
        lo=1,
        auto=True,
        metavar="N|auto",
        help="capture workers, one Chromium each (auto: by CPUs, free memory and frames; "
        "with submit, the host's `workers`, else auto)",
    )
    chunks: int | None = _setting(
        None,
        kind=int,
        lo=1,
        auto=True,
        metavar="N|auto",
        help="split the frames into N chunks encoded separately (with submit: the chunks spread over the hosts)",
    )
    format: str = _setting(
        "auto",
        kind=str,
        choices=("auto", *OUTPUT_FORMATS),
        help="what to deliver (auto: by the output's extension; png-sequence: the output is a directory)",
    )
    codec: str = _setting("h264", kind=str, choices=("h264", "h265"), help="video codec of an mp4 output")
    frame_format: str = _setting(
        "auto",
        kind=str,
        choices=("auto", "jpeg", "png"),
        help="intermediate frame format (auto: PNG for alpha, png-sequence and gif outputs, else JPEG)",
    )
    quality: int = _setting(90, kind=int, lo=1, hi=100, metavar="Q", help="JPEG quality of the frames, 1-100")
    transparent: bool = _setting(
        False,
        kind=bool,
        help="transparent page background, alpha kept in the output (webm, mov and png-sequence)",
    )
    scale: float = _setting(
        1.0,
        kind=float,
        unit="factor",
        hi=8,
        metavar="F",
        help="render at F times the composition's size, drawn at that resolution (device scale factor)",
    )
    crf: int = _setting(
        18, kind=int, lo=0, hi=51, metavar="N", help="constant quality of H.264/H.265/VP9, 0-51 (lower is better)"
    )
    preset: str = _setting(
        "veryfast", kind=str, choices=X264_PRESETS, metavar="P", help="encoder speed (x264 names; mapped for VP9)"
    )
    gl: str = _setting(
        "auto",
        kind=str,
        choices=("auto", "on", "off"),
        help="Chromium with SwiftShader GL (on), without GPU (off), or by scanning the composition for WebGL (auto)",
    )
    # Chromium screenshots stay the default until BeginFrame capture draws will-change layers as a
    # sequential pass does whatever the split, on a loaded machine too (docs/performance.md,
    # "Two capture paths").
    browser: str = _setting(
        "chromium",
        kind=str,
        choices=("auto", "chromium", "headless-shell"),
        help="capture with Chromium screenshots (chromium, the default), with chromium-headless-shell under "
        "BeginFrame control (headless-shell), or with the headless shell where it is installed (auto; with "
        "submit: only if every host that can take the job has one)",
    )
    chromium: str | None = _setting(
        None,
        kind=str,
        optional=True,
        metavar="PATH",
        help="Chromium executable (default: /usr/bin/chromium or chromium on PATH; with submit, on the hosts)",
    )
    keep_frames: bool = _setting(
        False,
        kind=bool,
        help="keep the work directory with frames and chunks (with submit: the job's directories on the hosts)",
    )
    skip_static: bool = _setting(
        True,
        kind=bool,
        help="capture every frame (by default a frame a HyperFrames page proves unchanged since the frame "
        "before reuses that frame's picture, checked by sampled screenshots)",
    )
    frame_timeout: float = _setting(
        30.0, kind=float, metavar="S", help="seconds one frame's capture may take before the worker is retried"
    )
    max_asset_size: int = _setting(
        512,
        kind=int,
        lo=1,
        hi=1 << 20,
        metavar="MIB",
        help="largest composition file served whole to the page, in MiB (video and audio are streamed by range)",
    )
    ready_timeout: float = _setting(
        30.0,
        kind=float,
        metavar="S",
        help="seconds the page may take to become ready (with submit: default the daemon's timeouts.ready)",
    )

    def __post_init__(self) -> None:
        for name in NAMES:
            value = getattr(self, name)
            if isinstance(value, int) and not isinstance(value, bool) and OPTIONS[name].kind is float:
                object.__setattr__(self, name, float(value))
        validate(self)

    @property
    def capture_format(self) -> str:
        """Return the format frames are captured in: "jpeg" or "png"."""
        if self.frame_format != "auto":
            return self.frame_format
        return "png" if self.transparent or self.format in ("png-sequence", "gif") else "jpeg"

    def to_dict(self) -> dict[str, Any]:
        """Return the settings as a JSON-ready dict (every field)."""
        return asdict(self)

    @classmethod
    def from_dict(cls, data: Mapping[str, Any], base: RenderSettings | None = None) -> RenderSettings:
        """Return ``base`` (default: the defaults) with the settings in ``data``; raise SettingsError."""
        if data.get("format") in ("jpeg", "png") and "frame_format" not in data:
            # A job stored by renderd before 0.2, where `format` meant the frame format.
            data = {**data, "frame_format": data["format"], "format": "mp4"}
        unknown = sorted(set(data) - set(NAMES))
        if unknown:
            raise SettingsError(f"unknown render setting(s): {', '.join(unknown)}")
        for name, value in data.items():
            _check_type(name, value)
        return replace(base or cls(), **data)

    @classmethod
    def from_args(cls, args: argparse.Namespace, base: RenderSettings | None = None) -> RenderSettings:
        """Return the settings given on a command line built by add_arguments (the rest from ``base``)."""
        return replace(base or cls(), **given_args(args))


NAMES: tuple[str, ...] = tuple(f.name for f in fields(RenderSettings))
OPTIONS: dict[str, Option] = {f.name: f.metadata["option"] for f in fields(RenderSettings)}


def flag(name: str) -> str:
    """Return the command-line flag of setting ``name`` (``--no-...`` for a switch that is on by default)."""
    negated = OPTIONS[name].kind is bool and default_of(name) is True
    return ("--no-" if negated else "--") + name.replace("_", "-")


def default_of(name: str) -> Any:
    """Return the default value of setting ``name``."""
    default = next(f.default for f in fields(RenderSettings) if f.name == name)
    assert default is not MISSING
    return default


def problem(name: str, value: Any) -> str | None:
    """Return why ``value`` is not valid for setting ``name`` (naming its flag), or None."""
    opt, where = OPTIONS[name], flag(name)
    if value is None:
        return None if opt.nullable else f"{where} must be set"
    if opt.choices and value not in opt.choices:
        return f"{where} must be one of {', '.join(opt.choices)}, got {value!r}"
    if opt.kind is int and (not isinstance(value, int) or isinstance(value, bool)):
        return f"{where} must be a whole number, got {value!r}"
    if opt.kind is float:
        if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value):
            return f"{where} must be a number ({opt.unit}), got {value!r}"
        if value <= 0:
            return f"{where} must be positive, got {value:g}"
        if opt.hi is not None and value > opt.hi:
            return f"{where} must be at most {opt.hi}, got {value:g}"
        return None
    if opt.lo is not None and opt.hi is not None and not opt.lo <= value <= opt.hi:
        return f"{where} must be between {opt.lo} and {opt.hi}, got {value}"
    if opt.lo is not None and opt.hi is None and value < opt.lo:
        return f"{where} must be at least {opt.lo}, got {value}"
    return None


def validate(settings: RenderSettings) -> None:
    """Raise SettingsError naming the first bad option of ``settings``, including combinations."""
    if settings.format in ("jpeg", "png"):
        raise SettingsError(
            f"--format is what to deliver ({', '.join(OUTPUT_FORMATS)}); for {settings.format} frames "
            f"use --frame-format {settings.format}"
        )
    for name in NAMES:
        if (why := problem(name, getattr(settings, name))) is not None:
            raise SettingsError(why)
    if settings.frame_format == "jpeg" and (settings.transparent or settings.format in ("png-sequence", "gif")):
        why = "--transparent" if settings.transparent else f"--format {settings.format}"
        raise SettingsError(f"--frame-format jpeg cannot be used with {why} (JPEG frames are lossy and have no alpha)")
    if settings.transparent and settings.format not in ("auto", *ALPHA_FORMATS):
        raise SettingsError(
            f"--transparent needs an output with alpha ({', '.join(ALPHA_FORMATS)}); {settings.format} has none"
        )
    if settings.codec != "h264" and settings.format not in ("auto", "mp4"):
        raise SettingsError(f"--codec {settings.codec} is for mp4 outputs, not {settings.format}")


def json_types(name: str) -> tuple[type, ...]:
    """Return the JSON value types setting ``name`` takes (None included: it means the default)."""
    kind = OPTIONS[name].kind
    return (int, float, type(None)) if kind is float else (kind, type(None))


def _check_type(name: str, value: Any) -> None:
    opt = OPTIONS[name]
    if value is None and not opt.nullable:
        raise SettingsError(f"{flag(name)} must not be null")
    if opt.kind is bool and not isinstance(value, bool):
        raise SettingsError(f"{flag(name)} must be true or false, got {value!r}")
    if opt.kind is str and value is not None and not isinstance(value, str):
        raise SettingsError(f"{flag(name)} must be a string, got {value!r}")


def _parse_text(name: str, text: str) -> Any:
    """Turn the command-line text of a setting into its value (range checks come later, in one place)."""
    opt = OPTIONS[name]
    if opt.auto and text == "auto":
        return None
    if opt.kind is int:
        try:
            return int(text)
        except ValueError:
            auto = " or auto" if opt.auto else ""
            raise SettingsError(f"{flag(name)} must be a whole number{auto}, got {text!r}") from None
    if opt.kind is float:
        try:
            return float(text)
        except ValueError:
            raise SettingsError(f"{flag(name)} must be a number ({opt.unit}), got {text!r}") from None
    return text


def _shown_default(name: str) -> str | None:
    opt, default = OPTIONS[name], default_of(name)
    if opt.kind is bool or (default is None and not opt.auto):
        return None  # a switch is off unless given; an unset path is described by the help
    if default is None:
        return "auto"
    return f"{default:g}" if isinstance(default, float) else str(default)


def add_arguments(parser: argparse.ArgumentParser, names: Iterable[str] = NAMES) -> None:
    """Add the options of the settings ``names`` to ``parser``, with their defaults in the help.

    The values stay text until from_args/given_args, so that `render` and `submit` report a bad
    value with the same one line from the one validator.
    """
    for name in names:
        opt = OPTIONS[name]
        shown = _shown_default(name)
        help_text = opt.help if shown is None else f"{opt.help} (default: {shown})"
        if opt.kind is bool:
            on = not default_of(name)  # a switch on by default is given to turn it off
            action = "store_true" if on else "store_false"
            parser.add_argument(flag(name), dest=name, action=action, default=argparse.SUPPRESS, help=help_text)
            continue
        metavar = opt.metavar or ("|".join(opt.choices) if opt.choices else None)
        if opt.choices and opt.metavar:
            help_text += f"; one of {', '.join(opt.choices)}"
        parser.add_argument(flag(name), dest=name, metavar=metavar, default=argparse.SUPPRESS, help=help_text)


def given_args(args: argparse.Namespace) -> dict[str, Any]:
    """Return the settings given on the command line, parsed (not yet range-checked)."""
    given: dict[str, Any] = {}
    for name in NAMES:
        if not hasattr(args, name):
            continue
        raw = getattr(args, name)
        given[name] = raw if isinstance(raw, bool) else _parse_text(name, raw)
    return given


# Last: constructing validates, with the functions above.
DEFAULTS = RenderSettings()
