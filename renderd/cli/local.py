"""The commands that work on this machine: `render`, `still`, `inspect`, `agent` and `config check`.

They are apart from the parser (renderd.cli.main) because they need the event loop, the
composition loader and the progress display, which the daemon's client commands (`submit`,
`status`, ...) should not pay for at every start.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import logging
import os
import signal
import sys
from collections.abc import Coroutine
from pathlib import Path
from typing import Any

from renderd.assignment import MAX_ASSIGNMENT_BYTES, Assignment
from renderd.cli import prepare as cli_prepare
from renderd.cli.display import JsonDisplay, make_display
from renderd.cli.exits import EXIT_CANCELLED
from renderd.cli.exits import fail as _fail
from renderd.composition import Overrides, load_composition
from renderd.errors import RenderdError
from renderd.formats import resolve_format
from renderd.outputs import check_render_paths
from renderd.settings import RenderSettings

# Test hook for the retry path, read only here at the edge: crash a worker's page once, at
# this absolute frame.
FAULT_CRASH_ENV = "RENDERD_FAULT_CRASH_PAGE_AT_FRAME"
# Test hook for stragglers: sleep this many milliseconds before capturing each frame.
FAULT_DELAY_ENV = "RENDERD_FAULT_FRAME_DELAY_MS"


def cmd_inspect(args: argparse.Namespace) -> int:
    """Print what renderd detects in a composition."""
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


def cmd_agent(args: argparse.Namespace) -> int:
    """Render one assignment (or serve, probe, describe), printing JSON events."""
    # The engine (and playwright) load only here: the daemon imports this CLI without them.
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


def cmd_config_check(args: argparse.Namespace) -> int:
    """Validate the daemon config and host inventory, printing every problem."""
    from renderd.config import check_config

    problems = check_config(args.config, args.hosts)
    for line in problems:
        print(f"renderd: {line}", file=sys.stderr)
    if problems:
        print(f"renderd: error: {len(problems)} problem(s) found", file=sys.stderr)
        return 2
    print(f"renderd: {args.config} and its host inventory are valid")
    return 0


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


def cmd_render(args: argparse.Namespace) -> int:
    """Render a composition to a video on this machine."""
    from renderd.render import RenderRequest, render_local

    chosen = RenderSettings.from_args(args)
    output = Path(args.output)
    # Before the prepare and any browser: a render never writes into what it reads. The prepared
    # copy, if any, is checked again by render_local.
    check_render_paths(load_composition(args.composition).root, output, args.work_dir)
    chosen = resolve_format(chosen, args.output)
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
        output=output,
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


def cmd_still(args: argparse.Namespace) -> int:
    """Render one frame of a composition to a PNG or JPEG image (renderd.still)."""
    from renderd.still import image_format, render_still

    chosen = RenderSettings.from_args(args)
    output = Path(args.output)
    # Before the prepare and any browser, as for render: the image's name, and where it may go.
    image_format(output, transparent=chosen.transparent)
    check_render_paths(load_composition(args.composition).root, output, None)
    composition = args.composition
    if not args.no_prepare:
        composition = _run(cli_prepare.prepare_for_render(composition, offline=args.offline, quiet=args.json))
    # Progress is not shown for one frame; with --json the render's events and a final done are.
    display = JsonDisplay() if args.json else None
    try:
        result = _run(
            render_still(
                composition,
                output,
                frame=args.frame,
                seconds=args.time,
                settings=chosen,
                overrides=Overrides(width=args.width, height=args.height, fps=args.fps, duration=args.duration),
                emit=display,
                faults=_fault_settings(),
            )
        )
    except (KeyboardInterrupt, asyncio.CancelledError):
        return _fail("cancelled; no output was written", args.json, code="cancelled", status=EXIT_CANCELLED)
    if not args.json:
        print(f"renderd: wrote {output} (frame {result.frame}, {result.width}x{result.height})", flush=True)
    return 0


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
