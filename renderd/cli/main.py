"""The `renderd` command line: the parser of every command, logging set-up and the exit code.

Each command's module is imported when that command runs, not here: `renderd submit` and the
other client commands only talk to the daemon's socket and start in a fraction of the time the
local commands' imports (the event loop, rich, the composition loader, the engine) would cost.
"""

from __future__ import annotations

import argparse
import logging
import os
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any, NoReturn

from renderd import __version__, settings
from renderd.cli import control as cli_control
from renderd.cli import options as cli_options
from renderd.cli import prepare as cli_prepare
from renderd.cli.exits import EXIT_BROKEN_PIPE, EXIT_CANCELLED
from renderd.cli.exits import fail as _fail
from renderd.errors import ConfigError, DaemonError, RenderdError

if TYPE_CHECKING:
    from fractions import Fraction

DEFAULT_CONFIG = Path("/etc/renderd/renderd.toml")


class _Parser(argparse.ArgumentParser):
    """An argument parser whose errors are one line, like every other renderd error."""

    def error(self, message: str) -> NoReturn:
        self.exit(2, f"renderd: error: {message} (see '{self.prog} --help')\n")


def _add_render_parser(sub: Any) -> None:
    p = sub.add_parser("render", help="render a composition to a video on this machine")
    p.add_argument("composition", type=Path, help="directory with index.html, or an .html file")
    p.add_argument("-o", "--output", required=True, help=cli_options.OUTPUT_HELP)
    cli_options.add_override_arguments(p)
    settings.add_arguments(p)
    p.add_argument("--work-dir", type=Path, help="where frames and chunks are written (default: next to output)")
    p.add_argument("--json", action="store_true", help="print JSON-line events on stdout")
    p.add_argument("--no-prepare", action="store_true", help="render as is, even if the page loads remote URLs")
    p.add_argument("--offline", action="store_true", help="prepare without network (asset cache and npm cache only)")
    p.set_defaults(func=_cmd_render)


# The render settings that shape a still's pixels (the rest are about video, chunks and workers).
STILL_SETTINGS = ("transparent", "scale", "gl", "chromium", "frame_timeout", "ready_timeout", "max_asset_size")


def _frame_index(text: str) -> int:
    try:
        v = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"--frame must be a whole number, got {text!r}") from None
    if v < 0:
        raise argparse.ArgumentTypeError(f"--frame must be 0 or more (frames count from 0), got {v}")
    return v


def _time_s(text: str) -> Fraction:
    from fractions import Fraction  # with decimal: imported only when --time is given

    try:
        v = Fraction(text)
    except (ValueError, ZeroDivisionError):
        raise argparse.ArgumentTypeError(
            f"--time must be seconds as a decimal or a fraction (1.25, 5/4), got {text!r}"
        ) from None
    if v < 0:
        raise argparse.ArgumentTypeError(f"--time must be 0 or more, got {text}")
    return v


def _add_still_parser(sub: Any) -> None:
    p = sub.add_parser("still", help="render one frame of a composition to a PNG or JPEG image on this machine")
    p.add_argument("composition", type=Path, help="directory with index.html, or an .html file")
    p.add_argument(
        "-o", "--output", required=True, type=Path, help="image file: .png (alpha with --transparent), .jpg or .jpeg"
    )
    at = p.add_mutually_exclusive_group(required=True)
    at.add_argument("--frame", type=_frame_index, metavar="N", help="absolute frame index, from 0 (shows time N/fps)")
    at.add_argument(
        "--time", type=_time_s, metavar="T", help="seconds (1.25 or 5/4): the frame on screen then, floor(T * fps)"
    )
    cli_options.add_override_arguments(p, frames=False)
    settings.add_arguments(p, STILL_SETTINGS)
    p.add_argument("--json", action="store_true", help="print JSON-line events on stdout")
    p.add_argument("--no-prepare", action="store_true", help="render as is, even if the page loads remote URLs")
    p.add_argument("--offline", action="store_true", help="prepare without network (asset cache and npm cache only)")
    p.set_defaults(func=_cmd_still)


def _add_inspect_parser(sub: Any) -> None:
    p = sub.add_parser("inspect", help="print what renderd detects in a composition (size, fps, frames, parts)")
    p.add_argument("composition", type=Path, help="directory with index.html, or an .html file")
    cli_options.add_override_arguments(p, frames=False)
    settings.add_arguments(p, ("chromium", "ready_timeout"))
    p.add_argument("--json", action="store_true", help="print one JSON object")
    p.set_defaults(func=_cmd_inspect)


def _add_agent_parser(sub: Any) -> None:
    p = sub.add_parser("agent", help="render one chunk assignment read as JSON on stdin (used over SSH)")
    p.add_argument("--assignment", type=Path, help="read the assignment from this file instead of stdin")
    p.add_argument(
        "--watch-stdin",
        action="store_true",
        help="read the assignment as the first line of stdin, then cancel when stdin closes "
        "(the coordinator keeps it open, so a dropped connection or a dead coordinator stops the agent)",
    )
    p.add_argument(
        "--serve",
        action="store_true",
        help="render one assignment per stdin line, keeping browsers warm between chunks of a job; "
        "end of stdin cancels the chunk in progress and exits",
    )
    p.add_argument("--probe", action="store_true", help="print what this host has (versions, tools, CPUs) as JSON")
    p.add_argument("--work-dir", type=Path, help="with --probe: report free disk there")
    p.add_argument(
        "--describe",
        action="store_true",
        help="load the composition of the describe request on stdin (JSON) once and print its metadata "
        "and audio plan as one JSON line (the coordinator plans jobs with it)",
    )
    p.set_defaults(func=_cmd_agent, json=True)


def _add_config_parser(sub: Any) -> None:
    p = sub.add_parser("config", help="daemon configuration tools")
    csub = p.add_subparsers(dest="config_command", required=True, metavar="SUBCOMMAND", parser_class=_Parser)
    c = csub.add_parser("check", help="validate the daemon config and host inventory (every problem at once)")
    c.add_argument("--config", type=Path, default=DEFAULT_CONFIG, help=f"daemon config (default {DEFAULT_CONFIG})")
    c.add_argument("--hosts", type=Path, help="host inventory (default: the config's hosts_file)")
    c.set_defaults(func=_cmd_config_check)


def _cmd_render(args: argparse.Namespace) -> int:
    from renderd.cli.local import cmd_render

    return cmd_render(args)


def _cmd_still(args: argparse.Namespace) -> int:
    from renderd.cli.local import cmd_still

    return cmd_still(args)


def _cmd_inspect(args: argparse.Namespace) -> int:
    from renderd.cli.local import cmd_inspect

    return cmd_inspect(args)


def _cmd_agent(args: argparse.Namespace) -> int:
    # The engine (and playwright) load only for commands that render: `renderd submit` and the
    # daemon stay quick to start and browserless.
    from renderd.cli.local import cmd_agent

    return cmd_agent(args)


def _cmd_config_check(args: argparse.Namespace) -> int:
    from renderd.cli.local import cmd_config_check

    return cmd_config_check(args)


def build_parser() -> argparse.ArgumentParser:
    """Return the argument parser for every renderd command."""
    parser = _Parser(prog="renderd", description="Render HTML compositions to video.")
    parser.add_argument("--version", action="version", version=f"renderd {__version__}")
    parser.add_argument("-v", "--verbose", action="count", default=0, help="more log output on stderr")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND", parser_class=_Parser)
    _add_render_parser(sub)
    _add_still_parser(sub)
    _add_inspect_parser(sub)
    _add_agent_parser(sub)
    _add_config_parser(sub)
    cli_prepare.add_parser(sub)
    cli_control.add_parsers(sub, _Parser)
    _add_verbose_everywhere(sub)
    return parser


def _add_verbose_everywhere(sub: Any) -> None:
    """Accept ``-v`` after the command too (``renderd render X -o y -v``), as people type it.

    SUPPRESS keeps a command parser from resetting the count given before the command.
    """
    for p in sub.choices.values():
        p.add_argument("-v", "--verbose", action="count", default=argparse.SUPPRESS, help="more log output on stderr")
        for action in p._actions:
            if isinstance(action, argparse._SubParsersAction):
                _add_verbose_everywhere(action)


def _under_journald() -> bool:
    """Return True when stderr is the journal's stream (systemd sets JOURNAL_STREAM to its dev:inode)."""
    value = os.environ.get("JOURNAL_STREAM", "")
    dev, _, ino = value.partition(":")
    try:
        st = os.fstat(sys.stderr.fileno())
        return (int(dev), int(ino)) == (st.st_dev, st.st_ino)
    except (ValueError, OSError):
        return False


def _log_format(command: str) -> str:
    # journald stamps every line itself; a daemon run by hand (a terminal, a log file) needs its own.
    if command == "daemon" and not _under_journald():
        return "%(asctime)s renderd[%(name)s] %(levelname)s: %(message)s"
    return "renderd[%(name)s] %(levelname)s: %(message)s"


def _quiet_broken_pipe() -> int:
    """The reader of stdout went away (`renderd status | head`): stop quietly, as `cat` would.

    stdout is pointed at /dev/null so that the interpreter's final flush finds nowhere to fail.
    """
    devnull = os.open(os.devnull, os.O_WRONLY)
    os.dup2(devnull, sys.stdout.fileno())
    os.close(devnull)
    return EXIT_BROKEN_PIPE


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the `renderd` console script."""
    parser = build_parser()
    args = parser.parse_args(argv)
    level = logging.WARNING if args.verbose == 0 else logging.INFO if args.verbose == 1 else logging.DEBUG
    logging.basicConfig(level=level, format=_log_format(args.command), stream=sys.stderr)
    if not args.verbose:
        # Worker retries are reported as Retry events; the log lines would duplicate them.
        for name in ("renderd.engine.pool", "renderd.engine.retry"):
            logging.getLogger(name).setLevel(logging.ERROR)
    try:
        status: int = args.func(args)
        # Flushed here, where a reader that went away is still caught below.
        sys.stdout.flush()
    except ConfigError as exc:
        for line in exc.problems:
            print(f"renderd: {line}", file=sys.stderr)
        return _fail(str(exc), getattr(args, "json", False), code="config", status=exc.exit_code)
    except DaemonError as exc:
        return _fail(str(exc), getattr(args, "json", False), code=exc.code, status=1)
    except RenderdError as exc:
        return _fail(str(exc), getattr(args, "json", False), code=type(exc).__name__, status=exc.exit_code)
    except KeyboardInterrupt:
        return _fail("interrupted", getattr(args, "json", False), code="cancelled", status=EXIT_CANCELLED)
    except BrokenPipeError:
        return _quiet_broken_pipe()
    return status


if __name__ == "__main__":
    sys.exit(main())
