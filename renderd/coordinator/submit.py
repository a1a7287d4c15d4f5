"""Turn a `submit` request into a planned job: check paths for the submitting user, probe, plan.

The composition is loaded once here, in a browser on the coordinator, so that a broken page is
refused at submission with the page's own error, and the job is planned with exact metadata.
"""

from __future__ import annotations

import asyncio
import logging
import os
import pwd
import stat
from fractions import Fraction
from pathlib import Path
from typing import Any

from renderd.composition import Composition, Overrides, load_composition
from renderd.config import DaemonConfig
from renderd.coordinator.models import NewJob
from renderd.coordinator.planner import ChunkPolicy, plan_job_chunks
from renderd.coordinator.protocol import BAD_INPUT, FORBIDDEN, ControlError
from renderd.coordinator.server import Peer
from renderd.encode import EncodeSettings
from renderd.engine import Prober
from renderd.errors import OutputError, RenderdError
from renderd.frames import Fps, FrameRange, parse_frame_range
from renderd.outputs import Owner, check_outside, check_replaceable, composition_root
from renderd.prepare import CACHE_ENV, PrepareOptions, needs_prepare, prepare_composition

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
    if out.suffix.lower() != ".mp4":
        raise ControlError(BAD_INPUT, f"output {str(out)!r} must end in .mp4")
    if not out.parent.is_dir():
        raise ControlError(BAD_INPUT, f"output directory {str(out.parent)!r} does not exist")
    if not user_may(out.parent, peer.uid, gids, "w"):
        raise ControlError(FORBIDDEN, f"uid {peer.uid} may not write to {out.parent}")
    if not os.access(out.parent, os.W_OK | os.X_OK):
        raise ControlError(FORBIDDEN, f"the daemon may not write to {out.parent}")
    return comp_path, out


def _check_output(comp_path: Path, out: Path, peer: Peer) -> None:
    """Refuse an output inside the composition, or a file there the submitter may not replace (blocking)."""
    try:
        if comp_path.exists():
            check_outside(out, [composition_root(comp_path)])
    except OutputError as exc:
        raise ControlError(BAD_INPUT, str(exc)) from None
    try:
        check_replaceable(out, Owner.of_uid(peer.uid))
    except OutputError as exc:
        raise ControlError(FORBIDDEN, str(exc)) from None


def _overrides(fields: dict[str, Any]) -> Overrides:
    try:
        fps = Fps.parse(fields["fps"]) if fields.get("fps") else None
        duration = Fraction(fields["duration"]) if fields.get("duration") else None
    except (ValueError, ZeroDivisionError):
        raise ControlError(BAD_INPUT, f"duration {fields.get('duration')!r} is not a number") from None
    return Overrides(width=fields.get("width"), height=fields.get("height"), fps=fps, duration=duration)


def _settings(fields: dict[str, Any]) -> dict[str, Any]:
    fmt = fields.get("format") or "jpeg"
    if fmt not in ("jpeg", "png"):
        raise ControlError(BAD_INPUT, f"format must be jpeg or png, got {fmt!r}")
    quality = fields.get("quality") or 90
    if not 1 <= quality <= 100:
        raise ControlError(BAD_INPUT, f"quality must be 1..100, got {quality}")
    enc = EncodeSettings(
        crf=18 if fields.get("crf") is None else fields["crf"], preset=fields.get("preset") or "veryfast"
    )
    workers = fields.get("workers")
    if workers is not None and workers < 1:
        raise ControlError(BAD_INPUT, f"workers must be at least 1, got {workers}")
    for name in ("chunks", "frames_per_chunk"):
        if fields.get(name) is not None and fields[name] < 1:
            raise ControlError(BAD_INPUT, f"{name} must be at least 1, got {fields[name]}")
    return {"format": fmt, "quality": quality, "crf": enc.crf, "preset": enc.preset, "workers": workers}


async def prepared(comp: Composition, config: DaemonConfig) -> Composition:
    """Return the composition a job renders: ``comp``, or its prepared copy when it loads remote URLs.

    Render hosts have no network, so remote scripts, fonts and media are localised here, once;
    the prepared copy (under the state directory unless $RENDERD_CACHE_DIR is set) is what the
    hosts get.
    """
    if not await asyncio.to_thread(needs_prepare, comp):
        return comp
    cache_root = None if os.environ.get(CACHE_ENV) else config.state_dir / "cache"
    result = await prepare_composition(comp, PrepareOptions(cache_root=cache_root))
    if (warning := result.unresolved_warning()) is not None:
        log.warning("%s: %s", comp.entry, warning)
    return load_composition(result.entry)


async def plan_submission(
    fields: dict[str, Any],
    peer: Peer,
    config: DaemonConfig,
    prober: Prober,
    *,
    slots: int,
    slot_fps: float | None,
) -> tuple[NewJob, list[tuple[int, int]]]:
    """Validate a submit request and return the job to create with its chunk plan."""
    comp_path, out = _check_paths(fields, peer)
    await asyncio.to_thread(_check_output, comp_path, out, peer)
    settings = _settings(fields)
    overrides = _overrides(fields)
    try:
        source = load_composition(comp_path)
        comp = await prepared(source, config)
        if comp != source:
            await asyncio.to_thread(check_outside, out, [comp.root])
        info = await prober.probe(comp, overrides)
        span = parse_frame_range(fields["frames"], info.total_frames) if fields.get("frames") else None
    except RenderdError as exc:
        raise ControlError(BAD_INPUT, str(exc)) from None
    span = span or FrameRange(0, info.total_frames)
    s = config.scheduling
    chunks = plan_job_chunks(
        span,
        ChunkPolicy(s.target_chunk_seconds, s.min_chunk_frames, s.max_chunk_frames),
        slots=slots,
        slot_fps=slot_fps,
        chunks=fields.get("chunks"),
        frames_per_chunk=fields.get("frames_per_chunk"),
    )
    params = {
        "fps": str(info.fps),
        "width": info.width,
        "height": info.height,
        "duration": str(info.duration),
        **settings,
    }
    if comp != source:
        params["prepared"] = str(comp.entry)  # what the scheduler stages on hosts
    job = NewJob(
        composition=str(comp_path),
        output=str(out),
        params=params,
        total_frames=info.total_frames,
        start_frame=span.start,
        end_frame=span.end,
        submitted_by_uid=peer.uid,
        priority=fields.get("priority") or 0,
        label=fields.get("label"),
    )
    return job, [(c.start, c.end) for c in chunks]
