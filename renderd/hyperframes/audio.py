"""The soundtrack: every audio track of a composition mixed once with ffmpeg, muxed after concat.

Chunks are rendered without sound; the finished video gets one AAC track mixed over the frames
it covers (the whole timeline, or the slice of a ``--frames A:B`` render), the way the
HyperFrames producer mixes (engine/src/services/audioMixer.ts): each track is cut from its
source at ``data-media-start``, sped up by ``data-playback-rate`` (pitch kept, atempo),
scaled by ``data-volume``, delayed to its start and summed without normalisation. A mono
source goes to both channels at full level. A composition without audio tracks gets no audio
stream; one whose tracks are all outside the rendered slice gets silence.

Nothing here opens a browser: the tracks come from the page (the engine reads them while it
loads the composition; for the coordinator, an agent's ``describe`` did and the plan is stored
with the job as JSON, see ``plan_to_json`` / ``plan_from_json``). The coordinator imports this
module, so it must never import renderd.engine or playwright.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import secrets
from collections.abc import Sequence
from fractions import Fraction
from pathlib import Path
from typing import Any

from renderd import procs
from renderd.encode import AUDIO_RATE, VideoInfo, mux_audio
from renderd.errors import EncodeError, ProcessFailed, RenderdError
from renderd.frames import Fps, FrameRange
from renderd.hyperframes.media import AudioTrack

MIX_TIMEOUT_S = 600.0
# Mono to stereo at full level in both channels (ffmpeg's default rematrix drops it by 3 dB).
_MONO_TO_STEREO = "pan=stereo|FL=FL+FC|FR=FR+FC"


def _num(x: float) -> str:
    return f"{x:.6f}".rstrip("0").rstrip(".") or "0"


def atempo_chain(rate: float) -> list[str]:
    """Return atempo stages (each within 0.5..2) whose product is ``rate``; none for 1."""
    stages: list[str] = []
    remaining = rate
    if abs(remaining - 1) < 1e-9:
        return stages
    while remaining < 0.5 - 1e-9:
        stages.append("atempo=0.5")
        remaining /= 0.5
    while remaining > 2 + 1e-9:
        stages.append("atempo=2")
        remaining /= 2
    if abs(remaining - 1) >= 1e-9:
        stages.append(f"atempo={_num(remaining)}")
    return stages


def build_mix_argv(tracks: Sequence[AudioTrack], t0: Fraction, t1: Fraction, out: Path) -> list[str]:
    """Return the ffmpeg command mixing ``tracks`` over composition time ``[t0, t1)`` into a WAV."""
    total = round((t1 - t0) * AUDIO_RATE)
    inputs: list[str] = []
    chains: list[str] = []
    for track in tracks:
        lo, hi = max(track.start, float(t0)), min(track.end, float(t1))
        if hi <= lo:
            continue
        offset = track.media_start + (lo - track.start) * track.rate
        length = (hi - lo) * track.rate
        i = len(chains)
        # A little more than needed is read; atrim below sets the exact length in samples.
        inputs += ["-ss", _num(offset), "-t", _num(length + 0.1), "-i", str(track.path)]
        steps = [f"aresample={AUDIO_RATE}"]
        steps.append(_MONO_TO_STEREO if track.channels == 1 else "aformat=channel_layouts=stereo")
        steps += atempo_chain(track.rate)
        delay = round((lo - float(t0)) * AUDIO_RATE)
        steps += [
            f"atrim=end_sample={round((hi - lo) * AUDIO_RATE)}",
            f"volume={_num(track.volume)}",
            f"adelay=delays={delay}S:all=1",
            "apad",
            # Renumber after apad: some ffmpeg versions misplace padded samples in atrim.
            "asetpts=N/SR/TB",
            f"atrim=end_sample={total}",
        ]
        chains.append(f"[{i}:a]{','.join(steps)}[a{i}]")
    if not chains:
        graph = f"anullsrc=r={AUDIO_RATE}:cl=stereo,atrim=end_sample={total}[out]"
    elif len(chains) == 1:
        graph = chains[0].replace("[a0]", "[out]")
    else:
        labels = "".join(f"[a{i}]" for i in range(len(chains)))
        mix = f"{labels}amix=inputs={len(chains)}:normalize=0:duration=longest:dropout_transition=0[out]"
        graph = ";".join([*chains, mix])
    return [
        "ffmpeg", "-hide_banner", "-nostdin", "-loglevel", "error", "-y",
        *inputs,
        "-filter_complex", graph,
        "-map", "[out]",
        # Float samples: a loud sum is not clipped before the AAC encoder sees it.
        "-c:a", "pcm_f32le", "-ar", str(AUDIO_RATE), "-ac", "2",
        str(out),
    ]  # fmt: skip


async def mix_tracks(tracks: Sequence[AudioTrack], t0: Fraction, t1: Fraction, out: Path) -> Path:
    """Mix ``tracks`` over ``[t0, t1)`` into the WAV ``out``."""
    try:
        await procs.run(build_mix_argv(tracks, t0, t1, out), timeout=MIX_TIMEOUT_S)
    except ProcessFailed as exc:
        names = ", ".join(sorted({t.path.name for t in tracks}))
        raise EncodeError(f"mixing audio ({names}) failed: {exc}") from None
    return out


async def add_audio(
    video: Path, out: Path, tracks: Sequence[AudioTrack], span: FrameRange, fps: Fps, *, timeout: float | None = None
) -> VideoInfo:
    """Write ``video`` plus the mix of ``tracks`` over the frames ``span`` covers to ``out``."""
    t0 = Fraction(span.start * fps.den, fps.num)
    t1 = Fraction(span.end * fps.den, fps.num)
    wav = out.with_name(f".{out.name}.{secrets.token_hex(4)}.mix.wav")
    try:
        await mix_tracks(tracks, t0, t1, wav)
        return await mux_audio(video, wav, out, frames=len(span), fps=fps, timeout=timeout)
    finally:
        with contextlib.suppress(FileNotFoundError):
            wav.unlink()


def plan_to_json(tracks: Sequence[AudioTrack], root: Path) -> list[dict[str, Any]]:
    """Return ``tracks`` as JSON objects with paths RELATIVE to the composition ``root``.

    Relative, because the plan is read on a render host (its staged copy of the composition)
    and mixed on the coordinator (its own copy).
    """
    return [
        {
            "element": t.element,
            "path": t.path.relative_to(root).as_posix(),
            "start": t.start,
            "end": t.end,
            "media_start": t.media_start,
            "rate": t.rate,
            "volume": t.volume,
            "channels": t.channels,
        }
        for t in tracks
    ]


def plan_from_json(data: Any, root: Path) -> tuple[AudioTrack, ...]:
    """Turn a stored plan (``plan_to_json``) back into tracks whose files are under ``root``.

    The plan comes from an agent on another host: a path that leaves ``root`` or a field of the
    wrong type is refused, not followed.
    """
    if not isinstance(data, list):
        raise RenderdError("audio plan: expected a list of tracks")
    root = root.resolve()
    tracks = []
    for i, d in enumerate(data):
        try:
            rel = str(d["path"])
            path = (root / rel).resolve()
            if not path.is_relative_to(root) or Path(rel).is_absolute():
                raise RenderdError(f"audio plan: track {i} path {rel!r} is outside the composition")
            tracks.append(
                AudioTrack(
                    element=str(d.get("element") or ""),
                    path=path,
                    start=float(d["start"]),
                    end=float(d["end"]),
                    media_start=float(d["media_start"]),
                    rate=float(d["rate"]),
                    volume=float(d["volume"]),
                    channels=int(d["channels"]),
                )
            )
        except (KeyError, TypeError, ValueError):
            raise RenderdError(f"audio plan: track {i} is malformed") from None
    return tuple(tracks)


async def add_planned_audio(
    tracks: Sequence[AudioTrack], span: FrameRange, fps: Fps, video: Path, *, timeout: float | None = None
) -> VideoInfo | None:
    """Give the assembled ``video`` (in place) the mix of ``tracks`` over ``span``; None without tracks.

    For the coordinator's assembly: ffmpeg only, from the plan stored with the job at submission.
    """
    if not tracks:
        return None
    missing = await asyncio.to_thread(lambda: sorted({t.path.name for t in tracks if not t.path.is_file()}))
    if missing:
        raise EncodeError(f"audio source(s) {', '.join(missing)} no longer exist in the composition")
    tmp = video.with_name(f".{video.name}.{secrets.token_hex(4)}.audio{video.suffix}")
    try:
        info = await add_audio(video, tmp, tracks, span, fps, timeout=timeout)
        os.replace(tmp, video)
        return info
    finally:
        with contextlib.suppress(FileNotFoundError):
            tmp.unlink()
