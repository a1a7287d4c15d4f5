"""Turn a `submit` request into a planned job: check paths for the submitting user, describe, plan.

The composition is loaded once at submission, by an agent on a render host (the coordinator
runs no browser; see ``coordinator/describe.py``), so that a broken page is refused with the
page's own error, and the job is planned with exact metadata and its audio plan.
"""

from __future__ import annotations

import asyncio
import logging
import os
import pwd
import stat
import threading
from collections import OrderedDict
from collections.abc import Mapping, Sequence
from dataclasses import replace
from fractions import Fraction
from pathlib import Path
from typing import Any

from renderd.capture_cost import CaptureCost, SlotShare, choose_for_fleet, positive_int
from renderd.composition import Composition, Overrides, load_composition
from renderd.config import LABEL, LABEL_WHAT, DaemonConfig, HostConfig, Inventory
from renderd.coordinator.describe import CACHE_ENTRIES, DescribeHost, Describer, TreeDigester, request_for
from renderd.coordinator.hooks import job_targets
from renderd.coordinator.hostcheck import HEADLESS_SHELL_LABEL, build_label
from renderd.coordinator.models import NewJob
from renderd.coordinator.planner import ChunkPolicy, plan_job_chunks
from renderd.coordinator.protocol import BAD_INPUT, FORBIDDEN, NO_HOST
from renderd.coordinator.server import Peer
from renderd.errors import CompositionError, ControlError, OutputError, RenderdError, SettingsError
from renderd.formats import resolve_format
from renderd.frames import Fps, FrameRange, parse_frame_range
from renderd.outputs import Owner, check_outside, check_replaceable, composition_root
from renderd.prepare import CACHE_ENV, PrepareOptions, needs_prepare, prepare_composition
from renderd.settings import NAMES, RenderSettings

log = logging.getLogger(__name__)


def peer_gids(peer: Peer) -> set[int]:
    """Return the primary and supplementary groups of the peer's user."""
    gids = {peer.gid}
    try:
        pw = pwd.getpwuid(peer.uid)
        gids.update(os.getgrouplist(pw.pw_name, pw.pw_gid))
    except (KeyError, OSError):
        pass
    return gids


def user_may(path: Path, uid: int, gids: set[int], want: str) -> bool:
    """Return whether ``uid`` (with ``gids``) may access ``path`` as ``want`` ("r", "w" or "x").

    Checks the permission bits of the path and search permission on every parent directory, as
    the kernel would for that user (ACLs are not considered).
    """
    if uid == 0:
        return True
    shifts = {"r": 2, "w": 1, "x": 0}
    try:
        for parent in reversed(path.parents):
            if not _allowed(parent.stat(), uid, gids, 0):
                return False
        return _allowed(path.stat(), uid, gids, shifts[want])
    except OSError:
        return False


def _allowed(st: os.stat_result, uid: int, gids: set[int], bit: int) -> bool:
    mode = stat.S_IMODE(st.st_mode)
    if st.st_uid == uid:
        return bool(mode & (1 << (6 + bit)))
    if st.st_gid in gids:
        return bool(mode & (1 << (3 + bit)))
    return bool(mode & (1 << bit))


def _check_paths(fields: dict[str, Any], peer: Peer) -> tuple[Path, Path]:
    comp_path = Path(fields["composition"])
    out = Path(fields["output"])
    for name, p in (("composition", comp_path), ("output", out)):
        if not p.is_absolute():
            raise ControlError(BAD_INPUT, f"{name} path {str(p)!r} must be absolute")
    gids = peer_gids(peer)
    if comp_path.exists() and not user_may(comp_path, peer.uid, gids, "r"):
        raise ControlError(FORBIDDEN, f"uid {peer.uid} may not read {comp_path}")
    if not out.parent.is_dir():
        raise ControlError(BAD_INPUT, f"output directory {str(out.parent)!r} does not exist")
    if not user_may(out.parent, peer.uid, gids, "w"):
        raise ControlError(FORBIDDEN, f"uid {peer.uid} may not write to {out.parent}")
    if not os.access(out.parent, os.W_OK | os.X_OK):
        raise ControlError(FORBIDDEN, f"the daemon may not write to {out.parent}")
    return comp_path, out


def _check_outside(comp_path: Path, out: Path) -> None:
    """Refuse an output inside the composition (blocking)."""
    try:
        if comp_path.exists():
            check_outside(out, [composition_root(comp_path)])
    except OutputError as exc:
        raise ControlError(BAD_INPUT, str(exc)) from None


def _check_replaceable(out: Path, peer: Peer, sequence: bool) -> None:
    """Refuse an output the submitter may not create or replace (blocking); ``sequence``: a directory."""
    try:
        check_replaceable(out, Owner.of_uid(peer.uid), sequence=sequence)
    except OutputError as exc:
        raise ControlError(FORBIDDEN, str(exc)) from None


def _overrides(fields: dict[str, Any]) -> Overrides:
    try:
        fps = Fps.parse(fields["fps"]) if fields.get("fps") else None
        duration = Fraction(fields["duration"]) if fields.get("duration") else None
    except (ValueError, ZeroDivisionError):
        raise ControlError(BAD_INPUT, f"duration {fields.get('duration')!r} is not a number") from None
    return Overrides(width=fields.get("width"), height=fields.get("height"), fps=fps, duration=duration)


def _settings(fields: dict[str, Any], config: DaemonConfig) -> RenderSettings:
    """Return the job's render settings: those in the request, the rest defaults.

    The daemon's ``timeouts.ready`` is the page-ready timeout of a job that does not set one.
    """
    given = {name: fields[name] for name in NAMES if fields.get(name) is not None}
    per_chunk = fields.get("frames_per_chunk")
    if per_chunk is not None and per_chunk < 1:
        raise ControlError(BAD_INPUT, f"frames_per_chunk must be at least 1, got {per_chunk}")
    try:
        return RenderSettings.from_dict(given, RenderSettings(ready_timeout=config.timeouts.ready))
    except SettingsError as exc:
        raise ControlError(BAD_INPUT, str(exc)) from None


MAX_HOSTS_LISTED = 12


def required_labels(fields: dict[str, Any]) -> tuple[str, ...]:
    """Return the host labels a submit request requires (``--require``), checked, in order, once each."""
    raw = fields.get("require") or []
    if not isinstance(raw, list) or not all(isinstance(label, str) for label in raw):
        raise ControlError(BAD_INPUT, "require must be a list of label strings")
    for label in raw:
        if not LABEL.fullmatch(label):
            raise ControlError(BAD_INPUT, f"--require: {label!r} is not {LABEL_WHAT}")
    return tuple(dict.fromkeys(raw))


def carries(host: HostConfig, require: Sequence[str], caps: Mapping[str, frozenset[str]] | None = None) -> bool:
    """Whether ``host`` has every label of ``require`` (inventory labels, then probed ``caps``)."""
    return set(require) <= set(host.labels) | (caps or {}).get(host.name, frozenset())


def _host_list(hosts: tuple[HostConfig, ...]) -> str:
    shown = [f"{h.name}[{', '.join(h.labels)}]" for h in hosts[:MAX_HOSTS_LISTED]]
    if len(hosts) > MAX_HOSTS_LISTED:
        shown.append(f"{len(hosts) - MAX_HOSTS_LISTED} more")
    return ", ".join(shown) or "none enabled"


def waiting_reason(
    require: Sequence[str],
    inventory: Inventory,
    usable: set[str] | None = None,
    *,
    caps: Mapping[str, frozenset[str]] | None = None,
) -> str | None:
    """Why a job requiring ``require`` cannot run now; None when a host may take it.

    Without ``usable`` (the names of hosts that take work now) only the inventory is asked.
    ``caps``: each host's probed capability labels (a host not probed yet has none). The labels
    only probes give (the job's browser and build, with "=" in them) are said in words.
    """
    if not require:
        return None
    user = [label for label in require if "=" not in label]
    browser = _browser_words([label for label in require if "=" in label])
    enabled = inventory.enabled_hosts()
    if user and not any(carries(h, user) for h in enabled):
        return f"no host carries label(s) {', '.join(user)} (hosts: {_host_list(enabled)})"
    carriers = [h.name for h in enabled if carries(h, require, caps)]
    with_labels = f" carrying label(s) {', '.join(user)}" if user else ""
    if not carriers:
        return (
            f"no host{with_labels} has {browser} (the job's browser, chosen at submit; `renderd hosts check` "
            f"shows each host's; hosts: {_host_list(enabled)})"
        )
    if usable is not None and not usable.intersection(carriers):
        what = with_labels or f" with {browser}"
        return f"every host{what} is drained, quarantined or down: {', '.join(carriers)}"
    return None


def _browser_words(labels: Sequence[str]) -> str:
    """Say what the probe-given labels ``labels`` ask for ("chromium-headless-shell 156.0.8078.114")."""
    values = dict(label.split("=", 1) for label in labels)
    if "browser" in values or "headless-shell" in values:
        return " ".join(
            ["chromium-headless-shell", *([values["headless-shell"]] if "headless-shell" in values else [])]
        )
    return " ".join(["Chromium", *([values["chromium"]] if "chromium" in values else [])])


def choose_browser(
    settings: RenderSettings, require: tuple[str, ...], inventory: Inventory, caps: Mapping[str, frozenset[str]]
) -> tuple[RenderSettings, tuple[str, ...]]:
    """Decide a job's browser and build once, for all its chunks: return the settings and labels to record.

    ``auto`` means the headless shell (BeginFrame capture) only when every enabled host that may
    take the job has one by its last probe, else Chromium screenshots. A job on the shell requires
    the probe's ``browser=headless-shell`` label, so a host without one never claims its chunks.
    The job is also pinned to one build of its browser (``chromium=VERSION`` or
    ``headless-shell=VERSION``): the build most of those hosts run (the newest on a tie), so no
    two chunks of a job are drawn by different builds; hosts on another build leave it alone.
    Nothing is pinned while no probe has reported a build yet. ``--chromium PATH`` leaves ``auto``
    to the agents (the path's name says which it is) and pins nothing.
    """
    choice = settings.browser
    fit = [h for h in inventory.enabled_hosts() if carries(h, require)]
    if choice == "auto":
        if settings.chromium is not None:
            return settings, require
        shells = [h for h in fit if HEADLESS_SHELL_LABEL in caps.get(h.name, frozenset())]
        choice = "headless-shell" if fit and len(shells) == len(fit) else "chromium"
    if choice == "headless-shell" and HEADLESS_SHELL_LABEL not in require:
        require = (*require, HEADLESS_SHELL_LABEL)
    if settings.chromium is None:
        prefix = build_label(choice, "")
        builds: dict[str, int] = {}
        for h in fit:
            for cap in caps.get(h.name, frozenset()):
                if cap.startswith(prefix):
                    builds[cap] = builds.get(cap, 0) + 1
        if builds and not any(label.startswith(prefix) for label in require):
            pinned = max(builds, key=lambda label: (builds[label], _version_key(label[len(prefix) :])))
            require = (*require, pinned)
    return replace(settings, browser=choice), require


def _version_key(version: str) -> tuple[int, ...]:
    return tuple(int(part) if part.isdigit() else -1 for part in version.split("."))


def prefer_carriers(hosts: list[DescribeHost], require: tuple[str, ...]) -> list[DescribeHost]:
    """Order describe hosts so that hosts with every required label come first (their fonts, their tools)."""
    return sorted(hosts, key=lambda h: not set(require) <= set(h.labels))


class PrepareScans:
    """Whether compositions load remote URLs, remembered by content.

    Answering means parsing the entry and every page, stylesheet and script it pulls in, on
    every submit; an unchanged composition (the same stat-based tree digest as the describe
    cache's) is not parsed again.
    """

    def __init__(self, digester: TreeDigester, *, entries: int = CACHE_ENTRIES) -> None:
        self._digester = digester
        self._known: OrderedDict[tuple[str, str], bool] = OrderedDict()
        self._entries = entries
        self._lock = threading.Lock()  # needs_prepare() runs in worker threads
        self.scans = 0  # compositions actually parsed (not answered from memory)

    def needs_prepare(self, comp: Composition) -> bool:
        """Return whether ``comp`` loads anything from a remote URL (blocking: digests the tree)."""
        key = (self._digester.digest(comp.root), comp.entry_relative)
        with self._lock:
            known = self._known.get(key)
            if known is not None:
                self._known.move_to_end(key)
                return known
        answer = needs_prepare(comp)  # a PrepareError is raised again next time: not remembered
        with self._lock:
            self.scans += 1
            self._known[key] = answer
            while len(self._known) > self._entries:
                self._known.popitem(last=False)
        return answer


async def prepared(comp: Composition, config: DaemonConfig, scans: PrepareScans) -> Composition:
    """Return the composition a job renders: ``comp``, or its prepared copy when it loads remote URLs.

    Render hosts have no network, so remote scripts, fonts and media are localised here, once;
    the prepared copy (under the state directory unless $RENDERD_CACHE_DIR is set) is what the
    hosts get. The composition is the submitter's, so it is fetched from public addresses only,
    plus what ``[prepare] allow`` names (the daemon's own environment does not widen this).
    """
    if not await asyncio.to_thread(scans.needs_prepare, comp):
        return comp
    cache_root = None if os.environ.get(CACHE_ENV) else config.state_dir / "cache"
    result = await prepare_composition(comp, PrepareOptions(cache_root=cache_root, allow=config.prepare_allow))
    if (warning := result.unresolved_warning()) is not None:
        log.warning("%s: %s", comp.entry, warning)
    return load_composition(result.entry)


def _calibrate_from(fields: Mapping[str, Any], settings: RenderSettings, config: DaemonConfig) -> int | None:
    """Return the frames from which the describe measures the capture cost; None when the plan is the submitter's."""
    if settings.chunks is not None or fields.get("frames_per_chunk") is not None:
        return None
    return config.scheduling.calibrate_min_frames


def _fleet_choice(
    described: Mapping[str, Any],
    shares: Sequence[SlotShare],
    policy: ChunkPolicy,
    described_on: str | None,
    workers: int | None,
    slot_fps: float | None,
) -> tuple[float | None, dict[str, Any]]:
    """Return the slot speed to plan with and the job's params recording why (``calibration``).

    With a capture cost in the ``described`` result, the speed it predicts for the fleet; else
    ``slot_fps`` (the hosts' past speed) and nothing to record. The cost comes from an agent: one
    that is malformed is logged and the job is planned as if it had none.
    """
    if described.get("capture") is None:
        return slot_fps, {}
    try:
        cost = CaptureCost.from_dict(described["capture"])
    except ValueError as exc:
        log.warning("describe result ignored for planning: %s", exc)
        return slot_fps, {}
    # Where a host's cores are not probed yet: the describing host's, as its probe or its describe
    # said, else one core (small chunks).
    own = next((sh.cores for sh in shares if sh.host == described_on and sh.cores), None)
    said = positive_int(described.get("cpus"))
    # A WebGL page that keeps all its history: each extra worker would draw every frame before its
    # own, which one worker's probe cannot see (Engine.auto_worker_count keeps 1 too).
    replays_gl = bool(described.get("gl")) and bool(described.get("keeps_all_history"))
    workers = workers or (1 if replays_gl else None)
    fleet = choose_for_fleet(cost, shares, policy, default_cores=own or said or 1, workers=workers)
    if fleet is None:
        return slot_fps, {}
    log.info(
        "capture cost (measured on %s): %.0f ms/frame, %.2f cores/worker -> chunks planned at %.1f frames/s a slot",
        described_on or "a host, cached",
        cost.ms_per_frame,
        cost.cores_per_worker,
        fleet.slot_fps,
    )
    return fleet.slot_fps, {"calibration": {"cost": cost.to_dict(), **fleet.to_dict()}}


async def plan_submission(
    fields: dict[str, Any],
    peer: Peer,
    config: DaemonConfig,
    describer: Describer,
    hosts: list[DescribeHost],
    scans: PrepareScans,
    *,
    slots: int,
    slot_fps: float | None,
    inventory: Inventory | None = None,
    caps: Mapping[str, frozenset[str]] | None = None,
    shares: Sequence[SlotShare] = (),
) -> tuple[NewJob, list[tuple[int, int]]]:
    """Validate a submit request and return the job to create with its chunk plan.

    A job requiring labels no enabled host of ``inventory`` carries is refused here. ``caps``:
    each host's probed capability labels (hostcheck.capabilities), which decide ``--browser auto``.
    Chunks hold about ``target_chunk_seconds`` of work at ``slot_fps`` (the hosts' past speed),
    or, for a job long enough to be measured, at the speed its describe's capture probe predicts
    for the fleet's ``shares`` (renderd.capture_cost.choose_for_fleet).
    """
    require = required_labels(fields)
    if inventory is not None and (no_host := waiting_reason(require, inventory)) is not None:
        raise ControlError(BAD_INPUT, no_host)
    hosts = prefer_carriers(hosts, require)
    notify = job_targets(fields.get("notify"), peer.uid, config)
    comp_path, out = _check_paths(fields, peer)
    await asyncio.to_thread(_check_outside, comp_path, out)
    try:
        settings = await asyncio.to_thread(resolve_format, _settings(fields, config), out)
    except SettingsError as exc:
        raise ControlError(BAD_INPUT, str(exc)) from None
    await asyncio.to_thread(_check_replaceable, out, peer, settings.format == "png-sequence")
    if inventory is not None:
        settings, require = choose_browser(settings, require, inventory, caps or {})
        # Refused only once every host that may take it has been probed (none had what it needs).
        probed = all(h.name in (caps or {}) for h in inventory.enabled_hosts() if carries(h, require))
        if probed and (no_host := waiting_reason(require, inventory, caps=caps)) is not None:
            raise ControlError(BAD_INPUT, no_host)
        hosts = prefer_carriers(hosts, require)
    overrides = _overrides(fields)
    try:
        source = await asyncio.to_thread(load_composition, comp_path)
        comp = await prepared(source, config, scans)
        if comp != source:
            await asyncio.to_thread(check_outside, out, [comp.root])
    except RenderdError as exc:
        raise ControlError(BAD_INPUT, str(exc)) from None
    # Hosts stage what chunks will render: the prepared copy's entry, else the path as submitted.
    staged = comp.entry if comp != source else comp_path
    s = config.scheduling
    policy = ChunkPolicy(s.target_chunk_seconds, s.min_chunk_frames, s.max_chunk_frames)
    request = request_for(overrides, settings, calibrate_min_frames=_calibrate_from(fields, settings, config))
    try:
        described = await describer.describe(comp, staged, request, hosts)
    except CompositionError as exc:
        raise ControlError(BAD_INPUT, str(exc)) from None
    except RenderdError as exc:
        raise ControlError(NO_HOST, str(exc)) from None
    d = described.result
    try:
        fps, duration = Fps.parse(str(d["fps"])), Fraction(str(d["duration"]))
        width, height, total_frames = int(d["width"]), int(d["height"]), int(d["total_frames"])
    except (KeyError, TypeError, ValueError, ZeroDivisionError):
        raise ControlError(NO_HOST, f"host {described.host}: malformed describe result") from None
    try:
        span = parse_frame_range(fields["frames"], total_frames) if fields.get("frames") else None
    except RenderdError as exc:
        raise ControlError(BAD_INPUT, str(exc)) from None
    span = span or FrameRange(0, total_frames)
    planned_fps, measured = _fleet_choice(d, shares, policy, described.host, settings.workers, slot_fps)
    chunks = plan_job_chunks(
        span,
        policy,
        slots=slots,
        slot_fps=planned_fps,
        chunks=settings.chunks,
        frames_per_chunk=fields.get("frames_per_chunk"),
    )
    params = {
        "fps": str(fps),
        "width": width,
        "height": height,
        "duration": str(duration),
        **settings.to_dict(),
        # Assembly mixes from this (paths relative to the composition root): no browser then.
        "audio": d.get("audio") or [],
        "described": {"host": described.host, "key": described.key},
        **measured,
    }
    if comp != source:
        params["prepared"] = str(comp.entry)  # what the scheduler stages on hosts
    if notify:
        params["notify"] = notify
    if require:
        params["require"] = list(require)  # only hosts with all these labels claim its chunks
    job = NewJob(
        composition=str(comp_path),
        output=str(out),
        params=params,
        total_frames=total_frames,
        start_frame=span.start,
        end_frame=span.end,
        submitted_by_uid=peer.uid,
        priority=fields.get("priority") or 0,
        label=fields.get("label"),
    )
    return job, [(c.start, c.end) for c in chunks]
