"""HyperFrames media: <video> frames extracted at the render fps, audio mixed once and muxed.

The media is generated here with ffmpeg: a video whose frame k is coloured index_colour(k)
(so a decoded output pixel says which source frame is shown) with an 880 Hz tone, and a 440 Hz
tone. The fixture composition is tests/fixtures/hf-media (see its comments for the timeline).
"""

from __future__ import annotations

import array
import math
import shutil
import subprocess
import sys
from collections.abc import Iterator
from fractions import Fraction
from pathlib import Path

import pytest
from conftest import FIXTURES, run_renderd
from daemonctl import Daemon
from sshhosts import TestHosts
from videotools import RGB, close, decode_frames, ffprobe, index_colour, pixel, stream

from renderd.engine.hyperframes.media_frames import frame_index
from renderd.engine.routing import read_range
from renderd.hyperframes.audio import atempo_chain, build_mix_argv
from renderd.hyperframes.media import SourceInfo, VideoClip

pytestmark = pytest.mark.browser

PROJECT = FIXTURES / "hf-media"
W, H, FPS = 320, 240, 30
GREY: RGB = (128, 128, 128)
RATE = 48000
CLIP_FRAMES = 120
# (start, media start, rate) of the two videos, as the fixture places them.
CLIP = (1.0, 0.5, 1.0)  # #clip, top left quadrant, shown for t in [1, 2.5]
FAST = (2.5, 0.0, 2.0)  # #fast in the sub-composition, bottom right quadrant, t in [2.5, 3]
CLIP_AT = (80, 60)
FAST_AT = (240, 180)


def _ffmpeg(*args: str) -> None:
    subprocess.run(["ffmpeg", "-hide_banner", "-nostdin", "-loglevel", "error", "-y", *args], check=True, timeout=120)


def make_media(directory: Path, *, tone: bool = True) -> None:
    """Write media/clip.mp4 (colour-coded frames + 880 Hz) and, with ``tone``, media/tone440.wav."""
    media = directory / "media"
    media.mkdir(exist_ok=True)
    colour = [f"28+mod(N*{a}+{b},200)" for a, b in ((97, 0), (53, 80), (151, 160))]
    _ffmpeg(
        "-f", "lavfi", "-i", f"color=c=black:size=160x120:rate={FPS},format=rgb24,"
        f"geq=r='{colour[0]}':g='{colour[1]}':b='{colour[2]}'",
        "-f", "lavfi", "-i", f"aevalsrc=0.4*sin(2*PI*880*t):s={RATE}",
        "-frames:v", str(CLIP_FRAMES), "-t", "4",
        "-c:v", "libx264", "-crf", "4", "-pix_fmt", "yuv420p", "-g", "30",
        "-c:a", "aac", "-b:a", "192k",
        str(media / "clip.mp4"),
    )  # fmt: skip
    if tone:
        _ffmpeg("-f", "lavfi", "-i", f"aevalsrc=0.5*sin(2*PI*440*t):s={RATE}", "-t", "3", str(media / "tone440.wav"))


@pytest.fixture(scope="module")
def project(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("media") / "hf-media"
    shutil.copytree(PROJECT, root)
    make_media(root)
    return root


@pytest.fixture(scope="module")
def rendered(project: Path, tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, list[bytes]]:
    out = tmp_path_factory.mktemp("out") / "out.mp4"
    r = run_renderd("render", project, "-o", out, "--chunks", "3", "--workers", "2", "--crf", "10")
    assert r.returncode == 0, r.stderr
    frames = decode_frames(out, W, H)
    assert len(frames) == 90
    return out, frames


def expected_source_frame(video: tuple[float, float, float], t: float) -> int:
    """HyperFrames' lookup: floor((t - start) * rate * fps + 1e-9) frames after data-media-start."""
    start, media_start, rate = video
    return round(media_start * FPS) + math.floor((t - start) * rate * FPS + 1e-9)


def shown_frame(frame: bytes, at: tuple[int, int]) -> int | None:
    """Return which source frame a quadrant shows (nearest index colour), or None for background."""
    got = pixel(frame, W, *at)
    if close(got, GREY, 16):
        return None
    k = min(range(CLIP_FRAMES), key=lambda i: sum(abs(a - b) for a, b in zip(got, index_colour(i), strict=True)))
    assert close(got, index_colour(k), 24), (got, k, index_colour(k))
    return k


@pytest.mark.parametrize("frame", [0, 29, 30, 31, 44, 45, 59, 60, 74, 75, 76, 89])
def test_video_shows_the_source_frame_for_each_output_frame(rendered: tuple[Path, list[bytes]], frame: int) -> None:
    """#clip: t in [1, 2.5] shows source frame 15 + (t - 1) * 30; hidden before and after."""
    _, frames = rendered
    t = frame / FPS
    want = expected_source_frame(CLIP, t) if CLIP[0] <= t <= 2.5 else None
    assert shown_frame(frames[frame], CLIP_AT) == want, (frame, pixel(frames[frame], W, *CLIP_AT))


@pytest.mark.parametrize("frame", [60, 74, 75, 76, 80, 89])
def test_video_in_sub_composition_at_double_speed(rendered: tuple[Path, list[bytes]], frame: int) -> None:
    """#fast starts with its host at 2.5 s and advances two source frames per output frame."""
    _, frames = rendered
    t = frame / FPS
    want = expected_source_frame(FAST, t) if t >= FAST[0] else None
    assert shown_frame(frames[frame], FAST_AT) == want, (frame, pixel(frames[frame], W, *FAST_AT))


def decode_left(path: Path) -> array.array[int]:
    """Decode the first audio stream's left channel as 48 kHz signed 16-bit samples."""
    raw = subprocess.run(
        ["ffmpeg", "-hide_banner", "-nostdin", "-loglevel", "error", "-i", str(path), "-map", "0:a:0",
         "-af", "pan=mono|c0=FL", "-ar", str(RATE), "-f", "s16le", "-c:a", "pcm_s16le", "-"],
        check=True, capture_output=True, timeout=60,
    ).stdout  # fmt: skip
    samples = array.array("h")
    samples.frombytes(raw)
    return samples


def amplitude(samples: array.array[int], t0: float, t1: float, freq: float) -> float:
    """Amplitude (full scale = 1) of the ``freq`` component in ``[t0, t1)`` (Goertzel)."""
    seg = samples[int(t0 * RATE) : int(t1 * RATE)]
    coeff = 2 * math.cos(2 * math.pi * freq / RATE)
    s1 = s2 = 0.0
    for x in seg:
        s1, s2 = x / 32768 + coeff * s1 - s2, s1
    power = s1 * s1 + s2 * s2 - coeff * s1 * s2
    return 2 * math.sqrt(max(power, 0.0)) / len(seg)


def peak(samples: array.array[int], t0: float, t1: float) -> float:
    return max(abs(x) for x in samples[int(t0 * RATE) : int(t1 * RATE)]) / 32768


def test_audio_is_mixed_over_the_timeline(rendered: tuple[Path, list[bytes]]) -> None:
    """Silence until 0.5 s; the 440 Hz <audio> at half volume until 2.5 s (the muted #clip adds
    nothing); then #fast's own 880 Hz at full volume (sped up, pitch kept)."""
    out, _ = rendered
    audio = stream(out, "audio")
    assert audio["codec_name"] == "aac" and int(audio["sample_rate"]) == RATE and int(audio["channels"]) == 2
    assert abs(float(audio["duration"]) - 3.0) < 0.03, audio["duration"]
    pcm = decode_left(out)
    assert abs(len(pcm) - 3 * RATE) < RATE * 0.03
    assert peak(pcm, 0.02, 0.48) < 0.005
    assert abs(amplitude(pcm, 0.6, 2.4, 440) - 0.25) < 0.025  # 0.5 amplitude at data-volume 0.5
    assert amplitude(pcm, 0.6, 2.4, 880) < 0.01  # #clip is muted
    assert abs(amplitude(pcm, 2.6, 2.95, 880) - 0.4) < 0.04
    assert amplitude(pcm, 2.6, 2.95, 440) < 0.01  # the <audio> ended at 2.5 s


def test_partial_render_gets_the_matching_slice(project: Path, tmp_path: Path) -> None:
    """--frames 45:90 starts mid-clip: frames and sound are those of 1.5 s .. 3 s."""
    out = tmp_path / "part.mp4"
    r = run_renderd("render", project, "-o", out, "--frames", "45:90", "--chunks", "2", "--workers", "2")
    assert r.returncode == 0, r.stderr
    frames = decode_frames(out, W, H)
    assert len(frames) == 45
    assert shown_frame(frames[0], CLIP_AT) == expected_source_frame(CLIP, 45 / FPS) == 30
    assert shown_frame(frames[44], FAST_AT) == expected_source_frame(FAST, 89 / FPS)
    assert abs(float(stream(out, "audio")["duration"]) - 1.5) < 0.03
    pcm = decode_left(out)
    assert abs(amplitude(pcm, 0.1, 0.9, 440) - 0.25) < 0.025
    assert abs(amplitude(pcm, 1.1, 1.45, 880) - 0.4) < 0.04


@pytest.mark.parametrize(("name", "codec"), [("part.webm", "opus"), ("part.mov", "aac"), ("part.gif", None)])
def test_each_format_gets_its_soundtrack(project: Path, tmp_path: Path, name: str, codec: str | None) -> None:
    """Opus in webm, AAC in mov, over the same slice as mp4; a GIF has no sound and says it left it out."""
    out = tmp_path / name
    r = run_renderd("render", project, "-o", out, "--frames", "45:90", "--chunks", "2", "--workers", "1")
    assert r.returncode == 0, r.stderr
    streams = [s["codec_type"] for s in ffprobe(out, "-show_streams")["streams"]]
    if codec is None:
        assert streams == ["video"]
        assert "gif carries no sound: the composition's audio is left out" in r.stderr
        return
    audio = stream(out, "audio")
    assert audio["codec_name"] == codec and int(audio["sample_rate"]) == RATE and int(audio["channels"]) == 2
    pcm = decode_left(out)
    assert abs(len(pcm) - 1.5 * RATE) < RATE * 0.03
    assert abs(amplitude(pcm, 0.1, 0.9, 440) - 0.25) < 0.025
    assert abs(amplitude(pcm, 1.1, 1.45, 880) - 0.4) < 0.04


def test_no_audio_tracks_means_no_audio_stream(project: Path, tmp_path: Path) -> None:
    """Only the muted video left: frames still come from the source, and there is no audio stream."""
    root = tmp_path / "silent"
    shutil.copytree(project, root)
    html = (root / "index.html").read_text()
    for element in ("<audio", '<div id="scene"'):
        i = html.index(element)
        j = html.index("</audio>", i) + len("</audio>") if element == "<audio" else html.index("</div>", i) + 6
        html = html[:i] + html[j:]
    (root / "index.html").write_text(html)
    out = tmp_path / "silent.mp4"
    r = run_renderd("render", root, "-o", out, "--frames", "30:33", "--chunks", "1", "--workers", "1")
    assert r.returncode == 0, r.stderr
    assert [shown_frame(f, CLIP_AT) for f in decode_frames(out, W, H)] == [15, 16, 17]
    streams = subprocess.run(
        ["ffprobe", "-v", "error", "-show_entries", "stream=codec_type", "-of", "csv=p=0", str(out)],
        capture_output=True, text=True, check=True,
    ).stdout.split()  # fmt: skip
    assert streams == ["video"]


def test_missing_media_file_is_one_line_naming_file_and_element(tmp_path: Path) -> None:
    root = tmp_path / "missing"
    shutil.copytree(PROJECT, root)
    make_media(root, tone=False)
    r = run_renderd("render", root, "-o", tmp_path / "x.mp4", "--ready-timeout", "20")
    assert r.returncode == 2
    lines = r.stderr.strip().splitlines()
    assert len(lines) == 1, r.stderr
    assert lines[0] == (
        "renderd: error: index.html: media file 'media/tone440.wav' of <audio id=\"music\"> "
        'in composition "main" does not exist'
    )
    assert not (tmp_path / "x.mp4").exists()


@pytest.fixture
def daemon(short_tmp: Path) -> Iterator[Daemon]:
    d = Daemon(short_tmp, slots=2)
    d.start()
    yield d
    d.stop()


def test_daemon_job_gets_frames_on_hosts_and_one_soundtrack(daemon: Daemon, project: Path, short_tmp: Path) -> None:
    """Agents extract the frames their chunks show; the coordinator mixes after concatenation."""
    out = short_tmp / "job.mp4"
    r = daemon.ctl("submit", project, "-o", out, "--chunks", "3", "--wait")
    assert r.returncode == 0, r.stderr + daemon.log.read_text()[-3000:]
    frames = decode_frames(out, W, H)
    assert len(frames) == 90
    for n in (29, 30, 59, 75, 76):
        t = n / FPS
        assert shown_frame(frames[n], CLIP_AT) == (expected_source_frame(CLIP, t) if 1 <= t <= 2.5 else None), n
    assert shown_frame(frames[80], FAST_AT) == expected_source_frame(FAST, 80 / FPS)
    assert abs(float(stream(out, "audio")["duration"]) - 3.0) < 0.03
    pcm = decode_left(out)
    assert peak(pcm, 0.02, 0.48) < 0.005
    assert abs(amplitude(pcm, 0.6, 2.4, 440) - 0.25) < 0.025
    assert abs(amplitude(pcm, 2.6, 2.95, 880) - 0.4) < 0.04


def test_ssh_hosts_extract_the_frames_of_their_own_chunks(project: Path, short_tmp: Path) -> None:
    """Over SSH every chunk runs in its own work dir on its host: it extracts what it shows."""
    with TestHosts(short_tmp / "ssh", 2, agent_command=[sys.executable, "-m", "renderd", "agent"]) as hosts:
        d = Daemon(short_tmp, hosts_file=hosts.inventory)
        d.start()
        try:
            out = short_tmp / "ssh.mp4"
            r = d.ctl("submit", project, "-o", out, "--chunks", "4", "--wait")
            assert r.returncode == 0, r.stderr + d.log.read_text()[-3000:]
        finally:
            d.stop()
    frames = decode_frames(out, W, H)
    assert len(frames) == 90
    # Chunks of 22-23 frames: the clip spans three of them, #fast the last one.
    for n in (29, 30, 44, 45, 67, 68, 75, 76):
        t = n / FPS
        assert shown_frame(frames[n], CLIP_AT) == (expected_source_frame(CLIP, t) if 1 <= t <= 2.5 else None), n
    assert shown_frame(frames[89], FAST_AT) == expected_source_frame(FAST, 89 / FPS)
    pcm = decode_left(out)
    assert abs(amplitude(pcm, 0.6, 2.4, 440) - 0.25) < 0.025


# -- pure parts --------------------------------------------------------------------------------


def _clip(start: float, end: float, media_start: float = 0.0, rate: float = 1.0, loop: bool = False) -> VideoClip:
    return VideoClip(0, "<video>", Path("v.mp4"), SourceInfo(4.0, None, 0, "h264"), start, end, media_start, rate, loop)


def test_frame_index_follows_hyperframes_lookup() -> None:
    clip = _clip(1.0, 2.5, media_start=0.5)
    assert frame_index(clip, 0.99, 30.0) is None
    assert frame_index(clip, 1.0, 30.0) == 0
    assert frame_index(clip, 31 / 30, 30.0) == 1
    assert frame_index(clip, 2.5, 30.0) == 45  # the end is inclusive, as in HyperFrames
    assert frame_index(clip, 2.5 + 1 / 30, 30.0) is None
    # 0.28 * 25 is 6.999999999999999 in doubles: the epsilon keeps it frame 7.
    assert frame_index(_clip(0.0, 1.0), 0.28, 25.0) == 7
    assert frame_index(_clip(0.0, 2.0, rate=2.0), 0.5, 30.0) == 30
    looped = _clip(0.0, 10.0, media_start=3.0, loop=True)  # 1 s of source per pass
    assert frame_index(looped, 1.5, 30.0) == 15


def test_atempo_chain_stays_within_filter_limits() -> None:
    assert atempo_chain(1.0) == []
    assert atempo_chain(2.0) == ["atempo=2"]
    assert atempo_chain(4.0) == ["atempo=2", "atempo=2"]
    assert atempo_chain(0.2) == ["atempo=0.5", "atempo=0.5", "atempo=0.8"]


def test_mix_outside_every_track_is_silence_of_the_slice_length(tmp_path: Path) -> None:
    argv = build_mix_argv([], Fraction(0), Fraction(3, 2), tmp_path / "mix.wav")
    subprocess.run(argv, check=True, timeout=60)
    info = stream(tmp_path / "mix.wav", "audio")
    assert int(info["duration_ts"]) == 72000


def test_media_files_are_served_by_byte_range(tmp_path: Path) -> None:
    f = tmp_path / "m.mp4"
    f.write_bytes(bytes(range(256)) * 4)

    def answer(header: str | None) -> tuple[int, bytes, dict[str, str]]:
        with f.open("rb") as fh:
            return read_range(fh, 1024, header)

    assert answer(None)[0] == 200 and len(answer(None)[1]) == 1024
    status, body, headers = answer("bytes=10-19")
    assert (status, body, headers["content-range"]) == (206, bytes(range(10, 20)), "bytes 10-19/1024")
    status, body, headers = answer("bytes=1000-")
    assert (status, len(body), headers["content-range"]) == (206, 24, "bytes 1000-1023/1024")
    assert answer("bytes=-4")[1] == bytes(range(252, 256))
    assert answer("bytes=2000-")[0] == 416
