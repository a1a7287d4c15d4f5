"""The soundtrack: every audio track of a composition mixed once with ffmpeg, muxed after concat.

Chunks are rendered without sound; the finished video gets one AAC track mixed over the frames
it covers (the whole timeline, or the slice of a ``--frames A:B`` render), the way the
HyperFrames producer mixes (engine/src/services/audioMixer.ts): each track is cut from its
source at ``data-media-start``, sped up by ``data-playback-rate`` (pitch kept, atempo),
scaled by ``data-volume``, delayed to its start and summed without normalisation. A mono
source goes to both channels at full level. A composition without audio tracks gets no audio
stream; one whose tracks are all outside the rendered slice gets silence.
"""

from __future__ import annotations

import contextlib
import os
import secrets
from collections.abc import Sequence
from fractions import Fraction
from pathlib import Path

from playwright.async_api import async_playwright

from renderd import procs
from renderd.composition import Composition, CompositionInfo, Overrides, load_composition
from renderd.encode import AUDIO_RATE, VideoInfo, mux_audio
from renderd.engine import read_info, read_media
from renderd.engine.browser import BrowserOptions, launch_browser
from renderd.engine.page import CompositionPage
from renderd.errors import EncodeError, ProcessFailed
from renderd.frames import Fps, FrameRange
from renderd.hyperframes.media import AudioTrack, MediaPlan, has_media

MIX_TIMEOUT_S = 600.0
READY_TIMEOUT_S = 60.0
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


async def add_composition_audio(
    composition: Path, overrides: Overrides, span: FrameRange, video: Path, *, timeout: float | None = None
) -> VideoInfo | None:
    """Give the assembled ``video`` (in place) the soundtrack of ``composition``, if it has one.

    For the coordinator, which has no page open at assembly: the composition is loaded once in
    a browser to read its media. Returns the new video's info, or None when it has no audio.
    """
    comp = load_composition(composition)
    if not has_media(comp):
        return None
    plan = await _read_plan(comp, overrides)
    if not plan.audio:
        return None
    assert overrides.fps is not None
    tmp = video.with_name(f".{video.name}.{secrets.token_hex(4)}.audio.mp4")
    try:
        info = await add_audio(video, tmp, plan.audio, span, overrides.fps, timeout=timeout)
        os.replace(tmp, video)
        return info
    finally:
        with contextlib.suppress(FileNotFoundError):
            tmp.unlink()


async def _read_plan(comp: Composition, overrides: Overrides) -> MediaPlan:
    plan = MediaPlan()

    async def on_ready(page: CompositionPage, _info: CompositionInfo) -> None:
        nonlocal plan
        plan = await read_media(page, comp)

    async with async_playwright() as pw:
        browser = await launch_browser(pw, BrowserOptions(gl=False))
        try:
            await read_info(browser, comp, overrides, READY_TIMEOUT_S, on_ready=on_ready)
        finally:
            with contextlib.suppress(Exception):
                await browser.close()
    return plan
