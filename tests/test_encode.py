"""renderd.encode against the real ffmpeg/ffprobe: exact frame counts and rates, copy-concat
of chunks with the right frame at every seam, atomic outputs, cancellation and audio muxing."""

from __future__ import annotations

import asyncio
import hashlib
import os
import subprocess
from fractions import Fraction
from pathlib import Path

import psutil
import pytest
from videotools import (
    close,
    decode_frames,
    frame_types,
    index_colour,
    packets,
    pixel,
    stream,
    stream_duration,
    write_index_frames,
)

from renderd.encode import (
    EncodeSettings,
    VideoInfo,
    concat_videos,
    encode_frames,
    mux_audio,
    probe_video,
    sha256_file,
    sha256_file_async,
    verify_video,
)
from renderd.errors import EncodeError, RenderdError
from renderd.frames import Fps, frame_file_name

W, H = 64, 48
NTSC = Fps(30000, 1001)
FAST = EncodeSettings(preset="ultrafast")


def link_chunk(src: Path, dst: Path, start: int, end: int, ext: str = "png") -> Path:
    """Make ``dst`` hold frames ``[start, end)`` of ``src`` under LOCAL names (hard links)."""
    dst.mkdir(parents=True)
    for i in range(start, end):
        os.link(src / frame_file_name(i, ext), dst / frame_file_name(i - start, ext))
    return dst


def ffmpeg_children() -> list[psutil.Process]:
    found = []
    for child in psutil.Process().children(recursive=True):
        try:
            if child.name() == "ffmpeg" and child.status() != psutil.STATUS_ZOMBIE:
                found.append(child)
        except psutil.NoSuchProcess:
            pass
    return found


@pytest.fixture(scope="module")
def index_frames(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """24 PNG frames whose solid colour encodes their index."""
    return write_index_frames(tmp_path_factory.mktemp("index") / "frames", 24)


@pytest.fixture(scope="module")
def slow_frames(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """600 hard links to one busy 1280x720 frame: minutes of work at veryslow, all-intra."""
    d = tmp_path_factory.mktemp("slow")
    subprocess.run(
        ["ffmpeg", "-loglevel", "error", "-f", "lavfi", "-i", "testsrc2=size=1280x720:rate=30",
         "-frames:v", "1", str(d / "frame_000000.png")],
        check=True, timeout=60,
    )  # fmt: skip
    for i in range(1, 600):
        os.link(d / "frame_000000.png", d / frame_file_name(i, "png"))
    return d


# --- settings -------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("kwargs", "words"),
    [
        ({"crf": -1}, "crf"),
        ({"crf": 52}, "crf"),
        ({"crf": 18.5}, "crf"),
        ({"preset": "turbo"}, "--preset must be one of ultrafast, .*, got 'turbo'"),
        ({"gop": 0}, "gop"),
        ({"threads": -1}, "threads"),
        ({"codec": "libx265"}, "libx265"),
    ],
)
def test_settings_reject_bad_values(kwargs: dict[str, object], words: str) -> None:
    with pytest.raises(EncodeError, match=words):
        EncodeSettings(**kwargs)  # type: ignore[arg-type]


def test_settings_gop_defaults_to_one_second() -> None:
    assert EncodeSettings().gop_for(Fps(30)) == 30
    assert EncodeSettings().gop_for(NTSC) == 30
    assert EncodeSettings().gop_for(Fps(24000, 1001)) == 24
    assert EncodeSettings(gop=7).gop_for(Fps(60)) == 7


# --- encode ---------------------------------------------------------------------------------


async def test_encode_png_30fps_exact(index_frames: Path, tmp_path: Path) -> None:
    out = tmp_path / "chunk.mp4"
    info = await encode_frames(index_frames, out, fps=Fps(30), frame_count=24, ext="png", settings=FAST)

    assert (info.frames, info.width, info.height) == (24, W, H)
    assert info.fps == Fraction(30) and info.duration == Fraction(24, 30)
    assert (info.codec, info.pix_fmt) == ("h264", "yuv420p")
    s = stream(out)
    assert s["r_frame_rate"] == "30/1" and s["nb_frames"] == "24"
    assert (s["color_space"], s["color_primaries"], s["color_transfer"], s["color_range"]) == (
        "bt709", "bt709", "bt709", "tv",
    )  # fmt: skip
    assert s.get("has_b_frames", 0) == 0
    assert frame_types(out)[0] == (True, "I")
    decoded = decode_frames(out, W, H)
    assert len(decoded) == 24
    for k, frame in enumerate(decoded):
        assert close(pixel(frame, W, W // 2, H // 2), index_colour(k)), k


async def test_encode_jpg_ntsc_exact(tmp_path: Path) -> None:
    frames = write_index_frames(tmp_path / "frames", 10, ext="jpg")
    out = tmp_path / "ntsc.mp4"
    info = await encode_frames(frames, out, fps=NTSC, frame_count=10, ext="jpg", settings=FAST)

    assert info.frames == 10 and info.fps == Fraction(30000, 1001)
    assert stream(out)["r_frame_rate"] == "30000/1001"
    assert stream_duration(out) == Fraction(10 * 1001, 30000)  # exact, not just within 1 ms
    assert [(pts, dur) for pts, dur, _ in packets(out)] == [(k * 3003, 3003) for k in range(10)]
    for k, frame in enumerate(decode_frames(out, W, H)):
        assert close(pixel(frame, W, 5, 5), index_colour(k)), k


async def test_encode_uses_only_frame_count_frames(index_frames: Path, tmp_path: Path) -> None:
    info = await encode_frames(
        index_frames, tmp_path / "short.mp4", fps=Fps(25), frame_count=5, ext="png", settings=FAST
    )
    assert info.frames == 5 and info.duration == Fraction(5, 25)


async def test_encode_dir_with_percent_and_quote(tmp_path: Path) -> None:
    frames = write_index_frames(tmp_path / "100% it's" / "frames", 3)
    info = await encode_frames(frames, tmp_path / "o.mp4", fps=Fps(30), frame_count=3, ext="png", settings=FAST)
    assert info.frames == 3


# --- chunks and concat ----------------------------------------------------------------------


async def test_three_chunks_concat_copy_seams_exact(index_frames: Path, tmp_path: Path) -> None:
    bounds = [(0, 8), (8, 16), (16, 24)]
    dirs = [link_chunk(index_frames, tmp_path / f"c{j}", s, e) for j, (s, e) in enumerate(bounds)]
    chunks = [tmp_path / "out" / f"chunk_{j}.mp4" for j in range(3)]
    infos = await asyncio.gather(
        *(
            encode_frames(d, c, fps=NTSC, frame_count=e - s, ext="png", settings=FAST)
            for d, c, (s, e) in zip(dirs, chunks, bounds, strict=True)
        )
    )
    assert [i.frames for i in infos] == [8, 8, 8]
    for c in chunks:
        assert frame_types(c)[0] == (True, "I"), c

    final = tmp_path / "final.mp4"
    info = await concat_videos(chunks, final)

    assert info.frames == 24 and info.fps == Fraction(30000, 1001)
    assert stream_duration(final) == Fraction(24 * 1001, 30000)
    pk = packets(final)
    assert [(pts, dur) for pts, dur, _ in pk] == [(k * 3003, 3003) for k in range(24)]
    assert [k for k, (_, _, key) in enumerate(pk) if key] == [0, 8, 16]
    decoded = decode_frames(final, W, H)
    assert len(decoded) == 24
    for k, frame in enumerate(decoded):
        got = pixel(frame, W, W // 2, H // 2)
        assert close(got, index_colour(k)), f"frame {k}: {got} != {index_colour(k)}"


async def test_many_small_chunks_keep_exact_timestamps(index_frames: Path, tmp_path: Path) -> None:
    # 18 parts at 30000/1001: the concat demuxer's microsecond offsets alone put part 16 a tick late.
    chunks = [tmp_path / f"p{j:02d}.mp4" for j in range(18)]
    dirs = [link_chunk(index_frames, tmp_path / f"d{j}", j, j + 1) for j in range(18)]
    await asyncio.gather(
        *(
            encode_frames(d, c, fps=NTSC, frame_count=1, ext="png", settings=FAST)
            for d, c in zip(dirs, chunks, strict=True)
        )
    )
    info = await concat_videos(chunks, tmp_path / "all.mp4")
    assert info.frames == 18
    assert [(pts, dur, key) for pts, dur, key in packets(tmp_path / "all.mp4")] == [
        (k * 3003, 3003, True) for k in range(18)
    ]


async def test_concat_one_part_and_quoted_paths(index_frames: Path, tmp_path: Path) -> None:
    odd_dir = tmp_path / "it's a 'dir'"
    part = odd_dir / "chunk 'a'.mp4"
    await encode_frames(index_frames, part, fps=Fps(30), frame_count=6, ext="png", settings=FAST)
    info = await concat_videos([part], odd_dir / "joined 'x'.mp4")
    assert info.frames == 6 and info.fps == 30
    assert sorted(p.name for p in odd_dir.iterdir()) == ["chunk 'a'.mp4", "joined 'x'.mp4"]


async def test_concat_rejects_mismatched_parts(tmp_path: Path) -> None:
    small = write_index_frames(tmp_path / "small", 2, size="32x24")
    big = write_index_frames(tmp_path / "big", 2)
    a, b = tmp_path / "a.mp4", tmp_path / "b.mp4"
    await encode_frames(big, a, fps=Fps(30), frame_count=2, ext="png", settings=FAST)
    await encode_frames(small, b, fps=Fps(30), frame_count=2, ext="png", settings=FAST)
    with pytest.raises(EncodeError, match=r"b\.mp4: .*32x24.*does not match a\.mp4"):
        await concat_videos([a, b], tmp_path / "ab.mp4")
    assert not (tmp_path / "ab.mp4").exists()


async def test_concat_missing_part(tmp_path: Path) -> None:
    with pytest.raises(EncodeError, match="nope.mp4 does not exist"):
        await concat_videos([tmp_path / "nope.mp4"], tmp_path / "x.mp4")
    assert list(tmp_path.iterdir()) == []


# --- failures leave nothing behind ----------------------------------------------------------


async def test_missing_frames_dir(tmp_path: Path) -> None:
    missing = tmp_path / "no-such-frames"
    with pytest.raises(RenderdError, match=str(missing)):
        await encode_frames(missing, tmp_path / "o.mp4", fps=Fps(30), frame_count=3, ext="png", settings=FAST)


async def test_missing_frame_in_middle(tmp_path: Path) -> None:
    frames = write_index_frames(tmp_path / "frames", 10)
    (frames / frame_file_name(5, "png")).unlink()
    out_dir = tmp_path / "out"
    with pytest.raises(EncodeError, match=r"1 of 10 .png frames missing or incomplete: \[5, 6\)"):
        await encode_frames(frames, out_dir / "o.mp4", fps=Fps(30), frame_count=10, ext="png", settings=FAST)
    assert not out_dir.exists() or list(out_dir.iterdir()) == []


async def test_undecodable_frame_fails_and_leaves_no_output(tmp_path: Path) -> None:
    frames = write_index_frames(tmp_path / "frames", 10)
    victim = frames / frame_file_name(4, "png")
    data = bytearray(victim.read_bytes())
    # Keep the PNG signature, IHDR and IEND (so it looks complete) and wreck the image data.
    for i in range(41, len(data) - 16):
        data[i] ^= 0x5A
    victim.write_bytes(bytes(data))
    out_dir = tmp_path / "out"
    with pytest.raises(EncodeError, match="failed") as err:
        await encode_frames(frames, out_dir / "o.mp4", fps=Fps(30), frame_count=10, ext="png", settings=FAST)
    assert "\n" not in str(err.value)
    assert list(out_dir.iterdir()) == []


async def test_odd_size_is_refused(tmp_path: Path) -> None:
    frames = write_index_frames(tmp_path / "frames", 2, size="63x48")
    with pytest.raises(EncodeError, match="63x48"):
        await encode_frames(frames, tmp_path / "o.mp4", fps=Fps(30), frame_count=2, ext="png", settings=FAST)
    assert not (tmp_path / "o.mp4").exists()


async def test_cancel_stops_ffmpeg_and_leaves_no_output(slow_frames: Path, tmp_path: Path) -> None:
    out = tmp_path / "out" / "cancelled.mp4"
    slow = EncodeSettings(preset="veryslow", gop=1)
    task = asyncio.create_task(encode_frames(slow_frames, out, fps=Fps(30), frame_count=600, ext="png", settings=slow))
    for _ in range(500):
        if ffmpeg_children():
            break
        assert not task.done()
        await asyncio.sleep(0.01)
    else:
        pytest.fail("ffmpeg never started")
    await asyncio.sleep(0.2)
    assert not task.done()
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    assert ffmpeg_children() == []
    assert list(out.parent.iterdir()) == []


async def test_timeout_is_an_encode_error(slow_frames: Path, tmp_path: Path) -> None:
    out = tmp_path / "timed.mp4"
    slow = EncodeSettings(preset="veryslow", gop=1)
    with pytest.raises(EncodeError, match="timed out"):
        await encode_frames(slow_frames, out, fps=Fps(30), frame_count=600, ext="png", settings=slow, timeout=0.5)
    assert ffmpeg_children() == []
    assert list(tmp_path.iterdir()) == []


# --- probe and verify -----------------------------------------------------------------------


async def test_verify_mismatch_names_file_and_what(index_frames: Path, tmp_path: Path) -> None:
    out = tmp_path / "v.mp4"
    await encode_frames(index_frames, out, fps=Fps(30), frame_count=10, ext="png", settings=FAST)
    assert (await verify_video(out, frames=10, width=W, height=H, fps=Fps(30))).frames == 10
    with pytest.raises(EncodeError) as err:
        await verify_video(out, frames=11, width=100, fps=Fps(25))
    msg = str(err.value)
    assert msg.startswith(f"{out}: ") and "\n" not in msg
    assert "expected 11 frames, found 10" in msg
    assert "expected 100x48, found 64x48" in msg
    assert "expected 25 fps, found 30" in msg


async def test_probe_missing_and_non_video(tmp_path: Path) -> None:
    with pytest.raises(EncodeError, match="gone.mp4 does not exist"):
        await probe_video(tmp_path / "gone.mp4")
    text = tmp_path / "notes.mp4"
    text.write_text("not a video at all\n" * 100)
    with pytest.raises(EncodeError, match="notes.mp4 is not a readable video"):
        await probe_video(text)
    wav = tmp_path / "tone.wav"
    subprocess.run(
        ["ffmpeg", "-loglevel", "error", "-f", "lavfi", "-i", "sine=frequency=440:duration=0.1", str(wav)],
        check=True, timeout=60,
    )  # fmt: skip
    with pytest.raises(EncodeError, match="tone.wav has no video stream"):
        await probe_video(wav)


async def test_probe_reports_video(index_frames: Path, tmp_path: Path) -> None:
    out = tmp_path / "p.mp4"
    await encode_frames(index_frames, out, fps=NTSC, frame_count=4, ext="png", settings=FAST)
    info = await probe_video(out)
    assert info == VideoInfo(
        frames=4, width=W, height=H, fps=Fraction(30000, 1001), duration=Fraction(4004, 30000),
        codec="h264", pix_fmt="yuv420p", time_base=Fraction(1, 90000),
    )  # fmt: skip


# --- audio ----------------------------------------------------------------------------------


@pytest.mark.parametrize("audio_seconds", [2.0, 0.4])
async def test_mux_audio_trimmed_or_padded_to_video(index_frames: Path, tmp_path: Path, audio_seconds: float) -> None:
    video = tmp_path / "v.mp4"
    frames = write_index_frames(tmp_path / "frames30", 30)
    await encode_frames(frames, video, fps=Fps(30), frame_count=30, ext="png", settings=FAST)
    audio = tmp_path / "sine.wav"
    subprocess.run(
        ["ffmpeg", "-loglevel", "error", "-f", "lavfi",
         "-i", f"sine=frequency=440:sample_rate=44100:duration={audio_seconds}", str(audio)],
        check=True, timeout=60,
    )  # fmt: skip
    out = tmp_path / "final.mp4"
    info = await mux_audio(video, audio, out, frames=30, fps=Fps(30))

    assert info.frames == 30 and info.fps == 30 and info.audio_codec == "aac"
    a = stream(out, "audio")
    assert (a["sample_rate"], a["channels"]) == ("48000", 2)
    assert abs(float(a["duration"]) - 1.0) < 0.03
    assert stream_duration(out) == 1
    assert [p[:2] for p in packets(out)] == [p[:2] for p in packets(video)]  # video copied as is
    assert sorted(p.name for p in tmp_path.iterdir()) == ["final.mp4", "frames30", "sine.wav", "v.mp4"]


async def test_mux_audio_missing_audio(index_frames: Path, tmp_path: Path) -> None:
    video = tmp_path / "v.mp4"
    await encode_frames(index_frames, video, fps=Fps(30), frame_count=3, ext="png", settings=FAST)
    with pytest.raises(EncodeError, match="silence.wav does not exist"):
        await mux_audio(video, tmp_path / "silence.wav", tmp_path / "o.mp4", frames=3, fps=Fps(30))


# --- checksums ------------------------------------------------------------------------------


async def test_sha256_streams_large_files(tmp_path: Path) -> None:
    data = os.urandom(3 * 1024 * 1024 + 17)
    f = tmp_path / "blob"
    f.write_bytes(data)
    want = hashlib.sha256(data).hexdigest()
    assert sha256_file(f) == want
    assert await sha256_file_async(f) == want
