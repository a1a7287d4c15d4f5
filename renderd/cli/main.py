"""The `renderd` command line. Only this module prints for people and decides exit codes."""

from __future__ import annotations

import argparse
import asyncio
import json
import logging
import os
import signal
import sys
from collections.abc import Coroutine, Sequence
from pathlib import Path
from typing import Any, NoReturn

from renderd import __version__, settings
from renderd.assignment import MAX_ASSIGNMENT_BYTES, Assignment
from renderd.cli import control as cli_control
from renderd.cli import options as cli_options
from renderd.cli import prepare as cli_prepare
from renderd.cli.display import JsonDisplay, make_display
from renderd.composition import Overrides, load_composition
from renderd.config import check_config
from renderd.errors import ConfigError, DaemonError, RenderdError
from renderd.events import Error
from renderd.outputs import check_render_paths
from renderd.settings import RenderSettings

EXIT_CANCELLED = 130
DEFAULT_CONFIG = Path("/etc/renderd/renderd.toml")
# Test hook for the retry path, read only here at the edge: crash a worker's page once, at
# this absolute frame.
FAULT_CRASH_ENV = "RENDERD_FAULT_CRASH_PAGE_AT_FRAME"
# Test hook for stragglers: sleep this many milliseconds before capturing each frame.
FAULT_DELAY_ENV = "RENDERD_FAULT_FRAME_DELAY_MS"


class _Parser(argparse.ArgumentParser):
    """An argument parser whose errors are one line, like every other renderd error."""

    def error(self, message: str) -> NoReturn:
        self.exit(2, f"renderd: error: {message} (see '{self.prog} --help')\n")


def _add_render_parser(sub: Any) -> None:
    p = sub.add_parser("render", help="render a composition to a video on this machine")
    p.add_argument("composition", type=Path, help="directory with index.html, or an .html file")
    p.add_argument("-o", "--output", type=Path, required=True, help="output .mp4 path")
    cli_options.add_override_arguments(p)
    settings.add_arguments(p)
    p.add_argument("--work-dir", type=Path, help="where frames and chunks are written (default: next to output)")
    p.add_argument("--json", action="store_true", help="print JSON-line events on stdout")
    p.add_argument("--no-prepare", action="store_true", help="render as is, even if the page loads remote URLs")
    p.add_argument("--offline", action="store_true", help="prepare without network (asset cache and npm cache only)")
    p.set_defaults(func=_cmd_render)


def _add_inspect_parser(sub: Any) -> None:
    p = sub.add_parser("inspect", help="print what renderd detects in a composition (size, fps, frames, parts)")
    p.add_argument("composition", type=Path, help="directory with index.html, or an .html file")
    cli_options.add_override_arguments(p, frames=False)
    settings.add_arguments(p, ("chromium", "ready_timeout"))
    p.add_argument("--json", action="store_true", help="print one JSON object")
    p.set_defaults(func=_cmd_inspect)


def _cmd_inspect(args: argparse.Namespace) -> int:
    from renderd.inspect import format_inspection, inspect_composition

    chosen = RenderSettings.from_args(args)
    comp = load_composition(args.composition)
    overrides = Overrides(width=args.width, height=args.height, fps=args.fps, duration=args.duration)
    ins = _run(inspect_composition(comp, overrides, chromium=chosen.chromium, ready_timeout_s=chosen.ready_timeout))
    if args.json:
        print(json.dumps(ins.to_dict()), flush=True)
    else:
        print("\n".join(format_inspection(ins)), flush=True)
    if ins.error is not None:
        print(f"renderd: error: {ins.error}", file=sys.stderr, flush=True)
        return 1
    return 0


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


def _cmd_agent(args: argparse.Namespace) -> int:
    # The engine (and playwright) load only for commands that render: `renderd submit` and the
    # daemon stay quick to start and browserless.
    from renderd.agent import probe_host, run_assignment

    if args.probe:
        print(json.dumps(probe_host(args.work_dir)), flush=True)
        return 0
    if args.describe:
        return _describe_stdin()
    if args.serve:
        try:
            _run(_serve_stdin(JsonDisplay(), _fault_settings()))
            return 0
        except RenderdError as exc:
            return _fail(str(exc), True, code=type(exc).__name__, status=exc.exit_code)
        except (KeyboardInterrupt, asyncio.CancelledError):
            return _fail("cancelled; no chunk was written", True, code="cancelled", status=EXIT_CANCELLED)
    try:
        if args.assignment:
            raw = args.assignment.read_bytes()
        elif args.watch_stdin:
            raw = sys.stdin.buffer.readline(MAX_ASSIGNMENT_BYTES + 1)
        else:
            raw = sys.stdin.buffer.read(MAX_ASSIGNMENT_BYTES + 1)
        assignment = Assignment.from_json(raw)
    except OSError as exc:
        return _fail(f"cannot read assignment {args.assignment}: {exc.strerror}", True, status=2)
    except RenderdError as exc:
        return _fail(str(exc), True, code=type(exc).__name__, status=exc.exit_code)
    display = JsonDisplay()
    try:
        _run(run_assignment(assignment, display, **_fault_settings()), cancel_on_stdin_eof=args.watch_stdin)
        return 0
    except RenderdError as exc:
        return _fail(str(exc), True, code=type(exc).__name__, status=exc.exit_code)
    except (KeyboardInterrupt, asyncio.CancelledError):
        return _fail("cancelled; no chunk was written", True, code="cancelled", status=EXIT_CANCELLED)


def _describe_stdin() -> int:
    from renderd.describe import describe, read_request

    try:
        result = _run(describe(read_request(sys.stdin.buffer)))
    except RenderdError as exc:
        return _fail(str(exc), True, code=type(exc).__name__, status=exc.exit_code)
    except (KeyboardInterrupt, asyncio.CancelledError):
        return _fail("cancelled", True, code="cancelled", status=EXIT_CANCELLED)
    print(json.dumps(result, separators=(",", ":")), flush=True)
    return 0


def _add_config_parser(sub: Any) -> None:
    p = sub.add_parser("config", help="daemon configuration tools")
    csub = p.add_subparsers(dest="config_command", required=True, metavar="SUBCOMMAND", parser_class=_Parser)
    c = csub.add_parser("check", help="validate the daemon config and host inventory (every problem at once)")
    c.add_argument("--config", type=Path, default=DEFAULT_CONFIG, help=f"daemon config (default {DEFAULT_CONFIG})")
    c.add_argument("--hosts", type=Path, help="host inventory (default: the config's hosts_file)")
    c.set_defaults(func=_cmd_config_check)


def _cmd_config_check(args: argparse.Namespace) -> int:
    problems = check_config(args.config, args.hosts)
    for line in problems:
        print(f"renderd: {line}", file=sys.stderr)
    if problems:
        print(f"renderd: error: {len(problems)} problem(s) found", file=sys.stderr)
        return 2
    print(f"renderd: {args.config} and its host inventory are valid")
    return 0


def build_parser() -> argparse.ArgumentParser:
    """Return the argument parser for every renderd command."""
    parser = _Parser(prog="renderd", description="Render HTML compositions to video.")
    parser.add_argument("--version", action="version", version=f"renderd {__version__}")
    parser.add_argument("-v", "--verbose", action="count", default=0, help="more log output on stderr")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND", parser_class=_Parser)
    _add_render_parser(sub)
    _add_inspect_parser(sub)
    _add_agent_parser(sub)
    _add_config_parser(sub)
    cli_prepare.add_parser(sub)
    cli_control.add_parsers(sub, _Parser)
    return parser


def _fault_int(name: str) -> int | None:
    raw = os.environ.get(name)
    if not raw:
        return None
    try:
        return int(raw)
    except ValueError:
        raise RenderdError(f"{name}={raw!r} is not a whole number") from None


def _fault_settings() -> dict[str, Any]:
    """Test hooks from the environment, read only here at the edge."""
    return {
        "fault_crash_at_frame": _fault_int(FAULT_CRASH_ENV),
        "fault_frame_delay_s": (_fault_int(FAULT_DELAY_ENV) or 0) / 1000,
    }


def _cmd_render(args: argparse.Namespace) -> int:
    from renderd.render import RenderRequest, render_local

    chosen = RenderSettings.from_args(args)
    # Before the prepare and any browser: a render never writes into what it reads. The prepared
    # copy, if any, is checked again by render_local.
    check_render_paths(load_composition(args.composition).root, args.output, args.work_dir)
    composition = args.composition
    if not args.no_prepare:
        # Remote scripts, fonts and media are localised first: the engine serves the page nothing else.
        try:
            composition = _run(cli_prepare.prepare_for_render(composition, offline=args.offline, quiet=args.json))
        except RenderdError as exc:
            return _fail(str(exc), args.json, code=type(exc).__name__, status=exc.exit_code)
    req = RenderRequest.from_settings(
        chosen,
        faults=_fault_settings(),
        composition=composition,
        output=args.output,
        overrides=Overrides(width=args.width, height=args.height, fps=args.fps, duration=args.duration),
        frames=args.frames,
        work_dir=args.work_dir,
    )
    display = make_display(args.json)
    try:
        _run(render_local(req, display))
        return 0
    except RenderdError as exc:
        display.close()
        return _fail(str(exc), args.json, code=type(exc).__name__, status=exc.exit_code)
    except (KeyboardInterrupt, asyncio.CancelledError):
        display.close()
        return _fail("cancelled; no output was written", args.json, code="cancelled", status=EXIT_CANCELLED)


def _run(coro: Coroutine[Any, Any, Any], *, cancel_on_stdin_eof: bool = False) -> Any:
    """Run ``coro``; SIGINT and SIGTERM (and, if asked, end of stdin) cancel it so its cleanup runs."""
    with asyncio.Runner() as runner:
        loop = runner.get_loop()
        task = loop.create_task(coro)
        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.add_signal_handler(sig, task.cancel)
        return runner.run(_await(task, cancel_on_stdin_eof))


async def _await(task: asyncio.Task[Any], cancel_on_stdin_eof: bool) -> Any:
    if not cancel_on_stdin_eof:
        return await task
    watcher = asyncio.create_task(_cancel_on_eof(task))
    try:
        return await task
    finally:
        watcher.cancel()


async def _serve_stdin(display: JsonDisplay, faults: dict[str, Any]) -> None:
    from renderd.agent import serve

    loop = asyncio.get_running_loop()
    reader = asyncio.StreamReader(limit=MAX_ASSIGNMENT_BYTES + 1)
    transport, _ = await loop.connect_read_pipe(lambda: asyncio.StreamReaderProtocol(reader), sys.stdin)
    try:
        await serve(reader, display, **faults)
    finally:
        transport.close()


async def _cancel_on_eof(task: asyncio.Task[Any]) -> None:
    """Cancel ``task`` when stdin reaches end of file (the coordinator went away)."""
    loop = asyncio.get_running_loop()
    reader = asyncio.StreamReader()
    transport, _ = await loop.connect_read_pipe(lambda: asyncio.StreamReaderProtocol(reader), sys.stdin)
    try:
        while await reader.read(4096):
            pass
        logging.getLogger("renderd.agent").warning("stdin closed: the coordinator is gone; cancelling")
        task.cancel()
    finally:
        transport.close()


def _fail(message: str, json_mode: bool, *, code: str = "error", status: int = 1) -> int:
    if json_mode:
        print(Error(message=message, code=code).to_json(), flush=True)
    print(f"renderd: error: {message}", file=sys.stderr, flush=True)
    return status


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the `renderd` console script."""
    parser = build_parser()
    args = parser.parse_args(argv)
    level = logging.WARNING if args.verbose == 0 else logging.INFO if args.verbose == 1 else logging.DEBUG
    logging.basicConfig(level=level, format="renderd[%(name)s] %(levelname)s: %(message)s", stream=sys.stderr)
    if not args.verbose:
        # Worker retries are reported as Retry events; the log lines would duplicate them.
        for name in ("renderd.engine.pool", "renderd.engine.retry"):
            logging.getLogger(name).setLevel(logging.ERROR)
    try:
        status: int = args.func(args)
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
    return status


if __name__ == "__main__":
    sys.exit(main())
