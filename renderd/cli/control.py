"""CLI commands that talk to the daemon (submit, status, list, watch, cancel, hosts, ...) and `daemon`."""

from __future__ import annotations

import argparse
import datetime
import json
import os
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

from renderd import settings
from renderd.cli import options as cli_options
from renderd.cli.timefmt import eta_text
from renderd.coordinator.client import Client
from renderd.errors import RenderdError
from renderd.formats import resolve_format
from renderd.outdir import make_output_dir
from renderd.settings import RenderSettings, given_args

if TYPE_CHECKING:
    from renderd.config import DaemonConfig, Inventory

# Only the socket client is imported above. The coordinator (asyncssh, the scheduler), the
# event loop, the TOML config and rich are imported inside the commands that need them: every
# chunk starts `renderd agent`, and `renderd submit` is typed by people waiting for a job id.

DEFAULT_SOCKET = Path("/run/renderd/renderd.sock")
SOCKET_ENV = "RENDERD_SOCKET"
FINISHED = ("done", "failed", "cancelled")


def _socket(args: argparse.Namespace) -> Path:
    if args.socket:
        return Path(args.socket)
    env = os.environ.get(SOCKET_ENV)
    return Path(env) if env else DEFAULT_SOCKET


def _print_json(obj: Any) -> None:
    print(json.dumps(obj, indent=None, separators=(",", ":"), default=str), flush=True)


def _ts(value: float | None) -> str:
    if not value:
        return "-"
    return datetime.datetime.fromtimestamp(value).strftime("%Y-%m-%d %H:%M:%S")


def _request(args: argparse.Namespace, op: str, **fields: Any) -> dict[str, Any]:
    """Send one request to the daemon and return its reply."""
    with Client(_socket(args)) as c:
        return c.request(op, **fields)


def add_parsers(sub: Any, parser_class: type[argparse.ArgumentParser]) -> None:
    """Add the daemon and client commands to the CLI."""
    d = sub.add_parser("daemon", help="run the coordinator daemon (normally under systemd)")
    d.add_argument("--config", type=Path, default=Path("/etc/renderd/renderd.toml"))
    d.add_argument("--socket-mode", default="0660", help="mode of the control socket (octal, default 0660)")
    d.add_argument(
        "--dev",
        type=Path,
        metavar="DIR",
        help="try renderd: run as yourself with a ready config, socket and state in DIR (made if missing)",
    )
    d.set_defaults(func=cmd_daemon)

    def client(name: str, help_text: str, func: Callable[[argparse.Namespace], int]) -> argparse.ArgumentParser:
        p: argparse.ArgumentParser = sub.add_parser(name, help=help_text)
        p.add_argument("--socket", help=f"control socket (default ${SOCKET_ENV} or {DEFAULT_SOCKET})")
        p.add_argument("--json", action="store_true", help="print JSON")
        p.set_defaults(func=func)
        return p

    s = client("submit", "submit a render job to the daemon", cmd_submit)
    s.add_argument("composition", type=Path, help="directory with index.html, or an .html file")
    s.add_argument("-o", "--output", required=True, help=cli_options.OUTPUT_HELP)
    cli_options.add_override_arguments(s)
    s.add_argument(
        "--frames-per-chunk", type=cli_options.positive_int("--frames-per-chunk"), help="chunk size instead of --chunks"
    )
    settings.add_arguments(s)
    s.add_argument("--priority", type=int, default=0, help="higher runs first (default 0)")
    s.add_argument("--label")
    s.add_argument(
        "--require",
        # One value per flag (repeat it, or LABEL,LABEL): a variable count would swallow the
        # composition in `submit --require gpu COMP`.
        action="append",
        metavar="LABEL[,LABEL]",
        help="render only on hosts carrying all these labels (the inventory's `labels`); repeatable",
    )
    s.add_argument("--wait", action="store_true", help="follow the job until it ends")
    s.add_argument(
        "--notify",
        action="append",
        metavar="URL|CMD",
        help="when the job is done, failed or cancelled: POST its JSON to an http(s) URL, or run a command "
        "with it on stdin (commands: root or the daemon's user only); repeatable",
    )
    client("status", "show a job (or all jobs)", cmd_status).add_argument("job", nargs="?")
    client("list", "list jobs", cmd_list).add_argument("--limit", type=int, default=50)
    client("watch", "follow a job's progress", cmd_watch).add_argument("job")
    client("cancel", "cancel a job", cmd_cancel).add_argument("job")
    client("retry", "render a failed job's unverified chunks again", cmd_retry).add_argument("job")
    client("logs", "show a job's event log", cmd_logs).add_argument("job")
    h = client("hosts", "show the render hosts (`hosts check`: probe them and render a test frame)", cmd_hosts)
    h.add_argument(
        "action",
        nargs="?",
        choices=("check", "install", "add"),
        help=(
            "check: probe each host and render a self-test frame on it; "
            "install: put this renderd into <work_dir>/venv on each host and its agent_command into the inventory; "
            "add NAME ADDRESS: show the host's SSH key, trust it and add the host to the inventory"
        ),
    )
    h.add_argument("names", nargs="*", metavar="HOST", help="with check/install: only these hosts; add: NAME ADDRESS")
    h.add_argument("--config", type=Path, default=Path("/etc/renderd/renderd.toml"), help="with check/install/add")
    h.add_argument("--system-packages", action="store_true", help="with install: apt-get install what the agent needs")
    h.add_argument("--user", help="with add: the SSH user (default: [defaults] user, else the daemon's)")
    h.add_argument("--port", type=int, help="with add: the SSH port (default 22)")
    h.add_argument("--labels", help="with add: the host's labels, comma-separated (gpu,fonts)")
    h.add_argument("--yes", action="store_true", help="with add: trust the key shown without asking")
    client("drain", "stop giving new chunks to a host", cmd_drain).add_argument("host")
    client("undrain", "give chunks to a drained host again", cmd_drain).add_argument("host")
    client("reload", "reload the daemon's config and inventory", cmd_reload)


def cmd_daemon(args: argparse.Namespace) -> int:
    """Run the coordinator until SIGTERM."""
    import asyncio
    import logging

    from renderd.coordinator.daemon import Coordinator
    from renderd.coordinator.sdnotify import Notifier

    if args.dev is not None:
        from renderd.coordinator.devconfig import dev_instructions, write_dev_config

        args.config = write_dev_config(args.dev)
    config, inventory = _config_and_inventory(args)
    if args.dev is not None:
        print(dev_instructions(args.config, config.socket), end="", flush=True)
    try:
        mode = int(args.socket_mode, 8)
    except ValueError:
        raise RenderdError(f"--socket-mode {args.socket_mode!r} is not an octal mode") from None
    level = getattr(logging, config.log_level.upper(), logging.INFO)
    logging.getLogger("renderd").setLevel(level)
    notifier = Notifier.from_environ(os.environ)
    coordinator = Coordinator(config, inventory, config_path=args.config, notifier=notifier, socket_mode=mode)
    asyncio.run(coordinator.run())
    return 0


def cmd_submit(args: argparse.Namespace) -> int:
    """Submit a job; print its id (or follow it with --wait)."""
    output = Path(args.output).expanduser()
    # Here, as the submitting user: the daemon writes only into a directory they could write.
    make_output_dir(output.absolute())
    fields: dict[str, Any] = {
        "composition": str(args.composition.expanduser().resolve()),
        # The last component stays as given: the daemon must see a symlink there to refuse it.
        "output": str(output.parent.resolve() / output.name),
        "priority": args.priority,
    }
    # Checked here too, so that a bad value gets the very line `render` prints, before the daemon is asked.
    chosen = resolve_format(RenderSettings.from_args(args), args.output)
    fields.update(given_args(args))
    # Resolved here, where a trailing slash still says "directory".
    fields["format"] = chosen.format
    for name in ("fps", "width", "height", "duration", "frames", "frames_per_chunk", "label", "notify"):
        if getattr(args, name) is not None:
            value = getattr(args, name)
            fields[name] = str(value) if name in ("fps", "duration") else value
    if args.require:
        fields["require"] = _required_labels(args.require)
    reply = _request(args, "submit", **fields)
    job = reply["job"]
    if reply.get("warning"):
        print(f"renderd: warning: {job['id']}: {reply['warning']}", file=sys.stderr)
    if args.json and not args.wait:
        _print_json(reply)
    elif not args.json:
        print(job["id"])
    if args.wait:
        return _follow(args, job["id"])
    return 0


def _required_labels(given: list[str]) -> list[str]:
    from renderd.config import LABEL, LABEL_WHAT

    labels = [label for item in given for label in item.split(",") if label]
    for label in labels:
        if not LABEL.fullmatch(label):
            raise RenderdError(f"--require: {label!r} is not {LABEL_WHAT}")
    return list(dict.fromkeys(labels))


def cmd_status(args: argparse.Namespace) -> int:
    """Show one job with its chunks and attempts, or every job."""
    if not args.job:
        return cmd_list(args)
    reply = _request(args, "status", job=args.job)
    if args.json:
        _print_json(reply)
        return 0
    j = reply["job"]
    print(f"{j['id']}  {j['state']}  {j['frames_done']}/{j['frames']} frames  {j['output']}")
    if j.get("error"):
        print(f"  error: {j['error']}")
    if j.get("waiting"):
        print(f"  waiting: {j['waiting']}")
    if cal := j.get("params", {}).get("calibration"):
        print(f"  {calibration_text(cal)}")
    for ch in reply["chunks"]:
        print(f"  chunk {ch['index']:3d} [{ch['start']}, {ch['end']})  {ch['state']:9s}  host {ch['host'] or '-'}")
    for a in reply["attempts"]:
        err = f"  {a['error']}" if a.get("error") else ""
        print(f"  attempt {a.get('number', a['id'])}: chunk {a['chunk_index']} on {a['host']}: {a['outcome']}{err}")
    return 0


def calibration_text(cal: dict[str, Any]) -> str:
    """One line on how a job's chunks were sized from its capture probe (params.calibration)."""
    cost = cal["cost"]
    hosts = ", ".join(f"{n}: {h['workers']} worker(s), ~{h['chunk_frames']} frames" for n, h in cal["hosts"].items())
    return (
        f"chunks sized by a capture probe: {cost['ms_per_frame']:.0f} ms/frame, "
        f"{cost['cores_per_worker']:.2f} cores/worker, {cal['slot_fps']:.1f} frames/s a slot ({hosts})"
    )


def cmd_list(args: argparse.Namespace) -> int:
    """List jobs, newest first."""
    reply = _request(args, "list", limit=getattr(args, "limit", 50))
    if args.json:
        _print_json(reply)
        return 0
    if not reply["jobs"]:
        print("no jobs")
        return 0
    print(_LIST_ROW.format("JOB", "STATE", "PRIO", "FRAMES", "FPS", "TIME", "ETA", "SUBMITTED", "OUTPUT"))
    for j in reply["jobs"]:
        label = f" [{j['label']}]" if j.get("label") else ""
        row = (j["id"], j["state"], j.get("priority", 0), f"{j['frames_done']}/{j['frames']}", _rate(j.get("fps")))
        times = (eta_text(j.get("elapsed_s")), eta_text(j.get("eta_s")), _ts(j["created_at"]))
        print(_LIST_ROW.format(*row, *times, f"{j['output']}{label}"))
    return 0


# TIME: how long the job has been running (or ran); ETA: time left, --:-- when unknown.
_LIST_ROW = "{:12s}  {:10s} {:>4} {:>13}  {:>6} {:>8} {:>8}  {:19s}  {}"


def _rate(fps: float | None) -> str:
    return "-" if fps is None else f"{fps:.1f}"


def cmd_watch(args: argparse.Namespace) -> int:
    """Follow a job until it ends."""
    return _follow(args, args.job)


def _follow(args: argparse.Namespace, job_id: str) -> int:
    last: dict[str, Any] = {}
    with Client(_socket(args)) as c:
        if args.json:
            for event in c.stream("watch", job=job_id):
                _print_json(event)
                last = event
        elif sys.stderr.isatty():
            last = _follow_bar(c, job_id)
        else:
            shown = 0.0
            for event in c.stream("watch", job=job_id):
                last = event
                if time.monotonic() - shown >= 2 or event["final"]:
                    shown = time.monotonic()
                    print(
                        f"renderd: {job_id} {event['state']} {event['frames_done']}/{event['frames']} frames, "
                        f"{_rate(event.get('fps'))} fps, eta {eta_text(event.get('eta_s'))}, "
                        f"chunks {event['chunks_verified']}/{event['chunks_total']}",
                        file=sys.stderr,
                        flush=True,
                    )
    state = last.get("state")
    if state == "done":
        if not args.json:
            print(f"renderd: {job_id} done: {last.get('output')}", file=sys.stderr)
        return 0
    if not args.json:
        print(f"renderd: error: job {job_id} {state}: {last.get('error') or ''}".rstrip(": "), file=sys.stderr)
    return 1


def _follow_bar(c: Client, job_id: str) -> dict[str, Any]:
    from rich.console import Console
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

    last: dict[str, Any] = {}
    console = Console(stderr=True)
    with Progress(
        TextColumn("[bold]{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TextColumn("{task.fields[fps]:>5} fps"),
        TextColumn("eta {task.fields[eta]}"),
        TextColumn("chunks {task.fields[chunks]}"),
        TextColumn("hosts {task.fields[hosts]}"),
        TimeElapsedColumn(),
        console=console,
    ) as bar:
        task = bar.add_task(job_id, total=None, chunks="-", hosts="-", fps="-", eta=eta_text(None))
        for event in c.stream("watch", job=job_id):
            last = event
            hosts = ",".join(sorted(set(event.get("hosts", {}).values()))) or "-"
            bar.update(
                task,
                total=event["frames"],
                completed=event["frames_done"],
                description=f"{job_id} {event['state']}",
                chunks=f"{event['chunks_verified']}/{event['chunks_total']}",
                hosts=hosts,
                fps=_rate(event.get("fps")),
                eta=eta_text(event.get("eta_s")),
            )
    return last


def cmd_cancel(args: argparse.Namespace) -> int:
    """Cancel a job."""
    reply = _request(args, "cancel", job=args.job)
    if args.json:
        _print_json(reply)
    else:
        print(f"renderd: {args.job} cancelled ({reply['stopped']} running task(s) stopped)", file=sys.stderr)
    return 0


def cmd_retry(args: argparse.Namespace) -> int:
    """Requeue a failed job's chunks that are not verified."""
    reply = _request(args, "retry", job=args.job)
    if args.json:
        _print_json(reply)
    else:
        again = f"{reply['requeued']} chunk(s) to render again"
        print(f"renderd: {args.job} {reply['job']['state']} ({again})", file=sys.stderr)
    return 0


def cmd_logs(args: argparse.Namespace) -> int:
    """Print a job's event log."""
    reply = _request(args, "logs", job=args.job)
    if args.json:
        _print_json(reply)
        return 0
    for e in reply["events"]:
        data = " ".join(f"{k}={v}" for k, v in e["data"].items())
        print(f"{_ts(e['ts'])}  {e['kind']:16s} {data}")
    return 0


def cmd_hosts(args: argparse.Namespace) -> int:
    """Show the render hosts, or probe them with `check`."""
    if args.action == "check":
        return _hosts_check(args)
    if args.action == "install":
        return _hosts_install(args)
    if args.action == "add":
        return _hosts_add(args)
    reply = _request(args, "hosts")
    if args.json:
        _print_json(reply)
        return 0
    for h in reply["hosts"]:
        speed = f"{h['speed_fps']:.1f} fps" if h.get("speed_fps") else "-"
        err = f"  last error: {h['last_error']}" if h.get("last_error") else ""
        until = h.get("quarantined_until")
        probe = ""
        if h["state"] == "quarantined" and until:
            probe = f"  re-probe in {max(0, round(until - time.time()))} s"
        print(f"{h['name']:16s} {h['state']:12s} slots {h['slots_in_use']}/{h['slots']}  speed {speed}{probe}{err}")
    return 0


def _config_and_inventory(args: argparse.Namespace) -> tuple[DaemonConfig, Inventory]:
    from renderd.config import load_daemon_config, load_inventory

    config = load_daemon_config(args.config)
    return config, load_inventory(config.hosts_file)


def _hosts_check(args: argparse.Namespace) -> int:
    import asyncio
    import dataclasses

    from renderd.coordinator.hostcheck import check_hosts, mixed_builds, version_number

    config, inventory = _config_and_inventory(args)
    reports = asyncio.run(check_hosts(config, inventory, args.names))
    if args.json:
        _print_json({"hosts": [dataclasses.asdict(r) for r in reports]})
    else:
        for r in reports:
            f = r.facts
            ram = (f.get("memory_available") or 0) >> 30
            build = f", {f['chromium_version']}" if f.get("chromium_version") else ""
            if f.get("headless_shell"):
                build += f", headless shell {version_number(f.get('headless_shell_version')) or '(version unknown)'}"
            facts = f"renderd {f.get('version')}{build}, {f.get('cpus')} CPUs, {ram} GiB free RAM" if f else ""
            if r.selftest_s is not None:
                facts += f", self-test frame in {r.selftest_s:.1f} s"
            print(f"{r.name:16s} {'ok' if r.ok else 'UNAVAILABLE':12s} {facts}")
            for p in r.problems:
                print(f"    {p}")
        if (mixed := mixed_builds(reports)) is not None:
            print(f"renderd: warning: {mixed}", file=sys.stderr)
    return 0 if all(r.ok for r in reports) else 1


def _hosts_install(args: argparse.Namespace) -> int:
    import asyncio
    import dataclasses

    from renderd.coordinator.enrol import record_agent_command
    from renderd.coordinator.hostinstall import install_hosts

    config, inventory = _config_and_inventory(args)
    reports = asyncio.run(install_hosts(config, inventory, args.names, system_packages=args.system_packages))
    # The inventory names the agent just installed (or says which line to add, if this user cannot write it).
    recorded = {
        r.name: record_agent_command(inventory.path, r.name, r.agent_command) for r in reports if r.agent_command
    }
    if args.json:
        _print_json({"hosts": [{**dataclasses.asdict(r), "inventory": recorded.get(r.name)} for r in reports]})
    else:
        for r in reports:
            if r.error:
                print(f"{r.name:16s} FAILED       {r.error}")
                continue
            print(f"{r.name:16s} installed    agent_command = {json.dumps(r.agent_command)}")
            print(f"    {recorded[r.name]}")
            if r.missing_packages:
                print(f"    missing system packages: {' '.join(r.missing_packages)} (use --system-packages)")
    return 0 if all(r.ok for r in reports) else 1


def _hosts_add(args: argparse.Namespace) -> int:
    import asyncio

    from renderd.config import load_daemon_config
    from renderd.coordinator import enrol

    if len(args.names) != 2:
        raise RenderdError("hosts add takes NAME ADDRESS, e.g. `renderd hosts add render-3 10.0.0.13`")
    name, address = args.names
    host = enrol.check_new_host(name, address, args.port, args.user, args.labels)
    config = load_daemon_config(args.config)
    plan = enrol.plan_add(config.hosts_file, host)
    if not host.is_local:
        key = asyncio.run(enrol.fetch_host_key(host, config.timeouts.connect))
        shown = f"{enrol.key_type(key)} key fingerprint is {enrol.fingerprint(key)}"
        print(f"{host.name} ({host.address} port {host.port}): {shown}")
        if not args.yes:
            if not sys.stdin.isatty():
                raise RenderdError("not added: compare the fingerprint with the host's own, then run again with --yes")
            answer = input("Trust this key and add the host? [y/N] ").strip().lower()
            if answer not in ("y", "yes"):
                print("renderd: not added", file=sys.stderr)
                return 1
        added = enrol.trust_key(plan.known_hosts, host, key)
        print(f"{plan.known_hosts}: {'key recorded' if added else 'key already known'}")
    enrol.append_host(plan, host)
    print(f"{plan.inventory}: added [[hosts]] {host.name}; `renderd hosts check {host.name}`, then `renderd reload`")
    return 0


def cmd_drain(args: argparse.Namespace) -> int:
    """Drain or undrain a host."""
    op = args.command
    reply = _request(args, op, host=args.host)
    if args.json:
        _print_json(reply)
    else:
        print(f"renderd: {args.host} {reply['host']['state']}", file=sys.stderr)
    return 0


def cmd_reload(args: argparse.Namespace) -> int:
    """Ask the daemon to reload its config and inventory."""
    reply = _request(args, "reload")
    if args.json:
        _print_json(reply)
    else:
        print(f"renderd: {reply['message']}", file=sys.stderr)
    return 0
