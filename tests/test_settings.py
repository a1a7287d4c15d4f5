"""One render-settings type: `render` and `submit` take the same options with the same checks, and
what is submitted reaches the agent's engine and encoder unchanged."""

from __future__ import annotations

import argparse
import json
import re
import sqlite3
import sys
from pathlib import Path
from typing import Any

import pytest
from conftest import FIXTURES, run_renderd
from daemonctl import Daemon

from renderd.agent import request_for
from renderd.assignment import Assignment
from renderd.cli.main import build_parser
from renderd.errors import RenderdError, SettingsError
from renderd.settings import DEFAULTS, NAMES, OPTIONS, RenderSettings, flag

COMP = FIXTURES / "frame-index-hook"
SHARED = ("fps", "width", "height", "duration", "frames", *NAMES)


def _subparser(command: str) -> argparse.ArgumentParser:
    for action in build_parser()._actions:
        if isinstance(action, argparse._SubParsersAction):
            parser: argparse.ArgumentParser = action.choices[command]
            return parser
    raise AssertionError("no subcommands")


def _action(parser: argparse.ArgumentParser, dest: str) -> argparse.Action:
    return next(a for a in parser._actions if a.dest == dest)


@pytest.mark.parametrize("dest", SHARED)
def test_render_and_submit_take_the_same_option(dest: str) -> None:
    render, submit = _action(_subparser("render"), dest), _action(_subparser("submit"), dest)
    for attr in ("option_strings", "help", "metavar", "default", "choices", "nargs", "const"):
        assert getattr(render, attr) == getattr(submit, attr), (dest, attr)
    # The same parser function (a closure per option, so compared by name).
    assert getattr(render.type, "__qualname__", None) == getattr(submit.type, "__qualname__", None)


@pytest.mark.parametrize("command", ["render", "submit"])
def test_defaults_show_in_help(command: str) -> None:
    text = " ".join(_subparser(command).format_help().split())
    for name in NAMES:
        default = getattr(DEFAULTS, name)
        if isinstance(default, bool) or (default is None and not OPTIONS[name].auto):
            continue
        shown = "auto" if default is None else f"{default:g}" if isinstance(default, float) else str(default)
        after = text.split(f" {flag(name)} ", 1)[1].split(" --", 1)[0]
        assert f"(default: {shown})" in after, (name, after)
    assert "(default: 90)" in text and "(default: 18)" in text and "(default: veryfast)" in text


BAD_VALUES = [
    (["--quality", "0"], "--quality must be between 1 and 100, got 0"),
    (["--quality", "high"], "--quality must be a whole number, got 'high'"),
    (["--crf", "52"], "--crf must be between 0 and 51, got 52"),
    (["--preset", "turbo"], "--preset must be one of ultrafast,"),
    (["--format", "avi"], "--format must be one of auto, mp4, webm, mov, png-sequence, gif, got 'avi'"),
    (["--format", "gif"], "out.mp4 ends in .mp4, but --format is gif: name it with .gif"),
    (["--format", "png"], "for png frames use --frame-format png"),
    (["--scale", "0"], "--scale must be positive, got 0"),
    (["--scale", "9"], "--scale must be at most 8, got 9"),
    (["--scale", "big"], "--scale must be a number (factor), got 'big'"),
    (["--gl", "maybe"], "--gl must be one of auto, on, off, got 'maybe'"),
    (["--workers", "0"], "--workers must be at least 1, got 0"),
    (["--chunks", "some"], "--chunks must be a whole number or auto, got 'some'"),
    (["--frame-timeout", "-1"], "--frame-timeout must be positive, got -1"),
    (["--ready-timeout", "soon"], "--ready-timeout must be a number (seconds), got 'soon'"),
    (["--transparent"], "--transparent needs an output with alpha (webm, mov, png-sequence); mp4 has none"),
    (["--transparent", "--frame-format", "jpeg", "--format", "webm"], "--frame-format jpeg cannot be used"),
]


@pytest.mark.parametrize(("args", "message"), BAD_VALUES, ids=["=".join(a) for a, _ in BAD_VALUES])
def test_a_bad_value_gets_the_same_line_from_render_and_submit(tmp_path: Path, args: list[str], message: str) -> None:
    out = tmp_path / "out.mp4"
    render = run_renderd("render", COMP, "-o", out, "--no-prepare", *args, timeout=60)
    # No daemon listens there: the check comes before the daemon is asked.
    submit = run_renderd("submit", COMP, "-o", out, *args, "--socket", tmp_path / "none.sock", timeout=60)
    for r in (render, submit):
        assert r.returncode == 2, r.stderr
        lines = r.stderr.splitlines()
        assert len(lines) == 1 and lines[0].startswith("renderd: error: ") and message in lines[0], r.stderr
    assert render.stderr == submit.stderr
    assert not out.exists()


def test_settings_round_trip_through_json_and_the_assignment() -> None:
    s = RenderSettings(
        quality=77, crf=23, preset="fast", frame_timeout=12, gl="off", format="webm", frame_format="png",
        transparent=True, scale=2,
    )  # fmt: skip
    assert RenderSettings.from_dict(json.loads(json.dumps(s.to_dict()))) == s
    a = Assignment(
        job_id="j-1", chunk_index=0, composition=str(COMP), start=0, end=10, total_frames=120, fps="30",
        width=320, height=240, duration="4", output="/tmp/x.mp4", work_dir="/tmp/w", settings=s,
    )  # fmt: skip
    back = Assignment.from_json(a.to_json())
    assert back == a
    req = request_for(back)
    assert (req.capture.fmt, req.capture.quality, req.capture.transparent) == ("png", 77, True)
    assert req.capture.frame_timeout_s == 12.0 and req.capture.ready_timeout_s == DEFAULTS.ready_timeout
    assert (req.encode.crf, req.encode.preset, req.gl) == (23, "fast", "off")
    assert (req.encode.format, req.encode.transparent, req.capture.scale, req.as_part) == ("webm", True, 2.0, True)


def test_a_job_stored_before_formats_keeps_its_frame_format() -> None:
    """Job records of renderd 0.1 said `format` for the frame format: they load as mp4 with those frames."""
    old = RenderSettings.from_dict({"format": "png", "quality": 80})
    assert (old.format, old.frame_format, old.capture_format) == ("mp4", "png", "png")


@pytest.mark.parametrize(
    ("data", "message"),
    [
        ({"quality": 101}, "--quality must be between 1 and 100, got 101"),
        ({"quality": True}, "--quality must be a whole number, got True"),
        ({"crf": "18"}, "--crf must be a whole number, got '18'"),
        ({"keep_frames": 1}, "--keep-frames must be true or false, got 1"),
        ({"format": None}, "--format must not be null"),
        ({"frame_timeout": 0}, "--frame-timeout must be positive, got 0"),
        ({"colour": "red"}, "unknown render setting(s): colour"),
    ],
)
def test_settings_from_json_are_checked_by_the_same_validator(data: dict[str, Any], message: str) -> None:
    with pytest.raises(SettingsError) as info:
        RenderSettings.from_dict(data)
    assert str(info.value) == message


def test_an_assignment_with_bad_settings_names_the_option() -> None:
    a = Assignment(
        job_id="j-1", chunk_index=0, composition=str(COMP), start=0, end=10, total_frames=120, fps="30",
        width=320, height=240, duration="4", output="/tmp/x.mp4", work_dir="/tmp/w",
    )  # fmt: skip
    data = json.loads(a.to_json())
    data["settings"]["crf"] = 99
    with pytest.raises(RenderdError, match="--crf must be between 0 and 51, got 99"):
        Assignment.from_dict(data)


AGENT_WRAPPER = """
import os, sys
args = sys.argv[1:]
agent = [sys.executable, "-m", "renderd", "agent"]
if "--watch-stdin" not in args:
    os.execv(sys.executable, agent + args)
line = sys.stdin.buffer.readline()
path = os.path.join({log!r}, "assignment-%d.json" % os.getpid())
with open(path, "wb") as f:
    f.write(line)
os.execv(sys.executable, agent + ["--assignment", path])
"""


@pytest.mark.browser
def test_submitted_settings_reach_the_agent_unchanged(short_tmp: Path) -> None:
    log = short_tmp / "assignments"
    log.mkdir()
    wrapper = short_tmp / "agent.py"
    wrapper.write_text(AGENT_WRAPPER.format(log=str(log)))
    hosts = short_tmp / "hosts.toml"
    hosts.write_text(
        f'[[hosts]]\nname = "local"\naddress = "local"\nslots = 1\nworkers = 1\n'
        f"agent_command = {json.dumps([sys.executable, str(wrapper)])}\n"
    )
    daemon = Daemon(short_tmp, hosts_file=hosts)
    daemon.start()
    out = short_tmp / "out.mp4"
    try:
        r = daemon.ctl(
            "submit", COMP, "-o", out, "--frames", "0:8", "--chunks", "2", "--wait",
            "--quality", "77", "--crf", "23", "--preset", "fast", "--frame-timeout", "12", "--gl", "off",
            "--keep-frames",
        )  # fmt: skip
        assert r.returncode == 0, r.stderr + daemon.log.read_text()
    finally:
        daemon.stop()
    job_id = r.stdout.split()[0]
    expected = RenderSettings(
        format="mp4", quality=77, crf=23, preset="fast", frame_timeout=12, gl="off", chunks=2, keep_frames=True
    )
    with sqlite3.connect(short_tmp / "state" / "renderd.db") as db:
        (params,) = db.execute("SELECT params FROM jobs WHERE id = ?", (job_id,)).fetchone()
    assert RenderSettings.from_dict({k: v for k, v in json.loads(params).items() if k in NAMES}) == expected
    received = [Assignment.from_json(p.read_bytes()) for p in sorted(log.glob("assignment-*.json"))]
    assert len(received) == 2
    for a in received:
        # The coordinator split the job; the agent splits its chunk as it likes, with the host's workers.
        assert a.settings == RenderSettings(
            format="mp4", quality=77, crf=23, preset="fast", frame_timeout=12, gl="off", workers=1, keep_frames=True
        )
        req = request_for(a)
        assert (req.capture.quality, req.capture.frame_timeout_s, req.gl) == (77, 12.0, "off")
        assert (req.encode.crf, req.encode.preset, req.keep_frames) == (23, "fast", True)
    # x264 writes its options into the stream: the video was encoded at CRF 23.
    assert re.search(rb"crf=23\.0", out.read_bytes())
    # --keep-frames: the job's work directory with the captured frames outlives the job.
    frames = list((short_tmp / "state" / "jobs" / job_id).rglob("frame_*.jpg"))
    assert len(frames) >= 8  # a speculative second copy of a chunk may have kept its frames too
