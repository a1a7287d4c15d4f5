"""Outputs never land in the composition, and the daemon writes only what its submitter could.

Real `renderd render`, `renderd prepare`, and a real daemon with a throwaway unprivileged user
submitting through `runuser` (root only).
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import subprocess
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest
from conftest import FIXTURES, run_renderd
from daemonctl import Daemon, wait_state
from users import ThrowawayUser, needs_root_and_user_tools
from videotools import ffprobe

pytestmark = pytest.mark.browser

ROOT_VIDEO = b"root's video, not to be replaced\n"


def _snapshot(tree: Path) -> dict[str, str]:
    """Every entry under ``tree`` with a hash of its content (symlinks by their target)."""
    out = {}
    for p in sorted(tree.rglob("*")):
        rel = p.relative_to(tree).as_posix()
        if p.is_symlink():
            out[rel] = "-> " + os.readlink(p)
        elif p.is_file():
            out[rel] = hashlib.sha256(p.read_bytes()).hexdigest()
        else:
            out[rel] = "dir"
    return out


def _one_error_line(stderr: str) -> str:
    lines = [ln for ln in stderr.splitlines() if ln.strip()]
    assert len(lines) == 1, stderr
    assert lines[0].startswith("renderd: error: ") and "Traceback" not in stderr, stderr
    return lines[0]


@pytest.fixture
def comp(tmp_path: Path) -> Path:
    """frame-index-hook with a <video> from media/clip.mp4 and a symlinked media library outside it."""
    root = tmp_path / "comp"
    shutil.copytree(FIXTURES / "frame-index-hook", root)
    (root / "media").mkdir()
    (root / "sub").mkdir()
    library = tmp_path / "library"
    library.mkdir()
    for clip in (root / "media" / "clip.mp4", library / "shared.mp4"):
        subprocess.run(
            ["ffmpeg", "-v", "error", "-f", "lavfi", "-i", "color=c=red:s=64x48:r=30:d=0.2", "-pix_fmt", "yuv420p",
             str(clip)], check=True,
        )  # fmt: skip
    (root / "library").symlink_to(library)
    html = (root / "index.html").read_text()
    video = '<video src="media/clip.mp4" muted></video><video src="library/shared.mp4" muted></video>'
    (root / "index.html").write_text(html.replace("</body>", video + "</body>"))
    return root


def _render_cases(comp: Path) -> dict[str, tuple[list[str | Path], str]]:
    t = comp.parent
    (t / "into-index.mp4").symlink_to(comp / "index.html")
    (t / "comp-link").symlink_to(comp)
    return {
        "the entry html": (["-o", comp / "index.html"], "is inside the composition"),
        "the directory": (["-o", comp], "is the composition directory"),
        "a new file in a subdirectory": (["-o", comp / "sub" / "x.mp4"], "is inside the composition"),
        "a symlink to the entry html": (["-o", t / "into-index.mp4"], "is inside the composition"),
        "through a symlinked parent": (["-o", t / "comp-link" / "x.mp4"], "is inside the composition"),
        "an input media file": (["-o", comp / "media" / "clip.mp4"], "is inside the composition"),
        "media behind a symlink": (["-o", t / "library" / "shared.mp4"], "is a file of the composition"),
        "the work directory": (["-o", t / "ok.mp4", "--work-dir", comp / "sub"], "work directory"),
    }


@pytest.mark.parametrize(
    "case",
    [
        "the entry html",
        "the directory",
        "a new file in a subdirectory",
        "a symlink to the entry html",
        "through a symlinked parent",
        "an input media file",
        "media behind a symlink",
        "the work directory",
    ],
)
def test_render_into_the_composition_is_refused_before_any_work(comp: Path, case: str) -> None:
    args, expected = _render_cases(comp)[case]
    before = _snapshot(comp.parent)
    r = run_renderd("render", comp, *args, "--frames", "0:3", "--workers", "1", "--json")
    assert r.returncode == 2, (case, r.stderr)
    line = _one_error_line(r.stderr)
    assert expected in line and str(comp) in line, line
    # Nothing started: no work directory, no event before the error, not a byte changed anywhere.
    assert [json.loads(x)["event"] for x in r.stdout.splitlines()] == ["error"]
    assert _snapshot(comp.parent) == before


def test_render_replaces_a_symlink_at_the_output_instead_of_writing_through_it(comp: Path) -> None:
    victim = comp.parent / "victim.mp4"
    victim.write_bytes(ROOT_VIDEO)
    link = comp.parent / "out.mp4"
    link.symlink_to(victim)
    r = run_renderd("render", comp, "-o", link, "--frames", "0:3", "--workers", "1")
    assert r.returncode == 0, r.stderr
    assert victim.read_bytes() == ROOT_VIDEO
    assert not link.is_symlink() and link.is_file()
    assert ffprobe(link, "-show_entries", "stream=codec_name")["streams"][0]["codec_name"] == "h264"


def test_render_with_work_dir_on_another_file_system_copies_then_renames(comp: Path) -> None:
    """EXDEV: the video is copied into an O_EXCL temp file beside the output, then renamed."""
    shm = Path("/dev/shm")
    if not shm.is_dir() or os.stat(shm).st_dev == os.stat(comp).st_dev:
        pytest.skip("no second file system at /dev/shm")
    out_dir = comp.parent / "out"
    out_dir.mkdir()
    work = Path(tempfile.mkdtemp(prefix="rd-work-", dir=shm))
    try:
        r = run_renderd("render", comp, "-o", out_dir / "x.mp4", "--work-dir", work, "--frames", "0:3")
        assert r.returncode == 0, r.stderr
    finally:
        shutil.rmtree(work, ignore_errors=True)
    assert sorted(p.name for p in out_dir.iterdir()) == ["x.mp4"]
    assert ffprobe(out_dir / "x.mp4", "-show_entries", "stream=codec_name")["streams"][0]["codec_name"] == "h264"


def test_prepare_output_must_neither_be_in_nor_hold_the_composition(comp: Path) -> None:
    env = {"RENDERD_CACHE_DIR": str(comp.parent / "cache")}
    before = _snapshot(comp)
    r = run_renderd("prepare", comp, "-o", comp / "sub" / "copy", env=env)
    assert r.returncode == 2 and "is inside the composition" in _one_error_line(r.stderr)
    # A directory that looks like an earlier prepared copy but holds the composition: replacing
    # it would delete the source.
    outer = comp.parent
    (outer / "_renderd_assets").mkdir()
    (outer / "_renderd_assets" / "manifest.json").write_text('{"format": 1, "assets": []}\n')
    r = run_renderd("prepare", comp, "-o", outer, env=env)
    assert r.returncode == 2 and "holds the composition" in _one_error_line(r.stderr)
    assert _snapshot(comp) == before


# -- the daemon, with an unprivileged submitter ------------------------------------------------


@pytest.fixture
def shared(short_tmp: Path, throwaway_user: ThrowawayUser) -> Iterator[tuple[Daemon, Path, Path]]:
    """A root daemon that allows the submitter, a composition they can read, a sticky 1777 directory."""
    d = Daemon(short_tmp, slots=1)
    d.allow_uids(throwaway_user.uid)
    comp = short_tmp / "comp"
    shutil.copytree(FIXTURES / "frame-index-hook", comp)
    sticky = short_tmp / "shared"
    sticky.mkdir()
    os.chmod(sticky, 0o1777)
    # Frames slow enough that a file can appear between submission and assembly.
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("RENDERD_FAULT_FRAME_DELAY_MS", "300")
        d.start(socket_mode="0666")
    yield d, comp, sticky
    d.stop()


def _submit(s: ThrowawayUser, d: Daemon, comp: Path, out: Path, *extra: str) -> subprocess.CompletedProcess[str]:
    return s.renderd("submit", comp, "-o", out, "--frames", "0:4", "--chunks", "1", "--socket", d.socket, *extra,
                     cwd=d.root)  # fmt: skip


@needs_root_and_user_tools
def test_submitter_cannot_replace_a_root_file_in_a_sticky_directory(
    shared: tuple[Daemon, Path, Path], throwaway_user: ThrowawayUser
) -> None:
    d, comp, sticky = shared
    target = sticky / "out.mp4"
    target.write_bytes(ROOT_VIDEO)
    r = _submit(throwaway_user, d, comp, target, "--wait")
    assert r.returncode != 0, r.stdout + r.stderr
    line = _one_error_line(r.stderr)
    assert f"output {target} belongs to uid 0; uid {throwaway_user.uid} may not replace it" in line, line
    assert target.read_bytes() == ROOT_VIDEO and os.stat(target).st_uid == 0
    assert d.json("list")["jobs"] == []


@needs_root_and_user_tools
def test_submitter_cannot_replace_through_a_symlink(
    shared: tuple[Daemon, Path, Path], throwaway_user: ThrowawayUser
) -> None:
    d, comp, sticky = shared
    victim = d.root / "victim.mp4"
    victim.write_bytes(ROOT_VIDEO)
    link = sticky / "link.mp4"
    assert throwaway_user.run("ln", "-s", victim, link).returncode == 0
    r = _submit(throwaway_user, d, comp, link, "--wait")
    assert r.returncode != 0
    assert "is a symbolic link" in _one_error_line(r.stderr)
    assert victim.read_bytes() == ROOT_VIDEO and link.is_symlink()


@needs_root_and_user_tools
def test_new_output_belongs_to_the_submitter(shared: tuple[Daemon, Path, Path], throwaway_user: ThrowawayUser) -> None:
    d, comp, sticky = shared
    out = sticky / "new.mp4"
    r = _submit(throwaway_user, d, comp, out, "--wait")
    assert r.returncode == 0, r.stderr + d.log.read_text()[-2000:]
    st = os.stat(out, follow_symlinks=False)
    assert (st.st_uid, st.st_gid) == (throwaway_user.uid, throwaway_user.gid)
    packets = ffprobe(out, "-count_packets", "-show_entries", "stream=nb_read_packets")["streams"][0]
    assert packets["nb_read_packets"] == "4"
    # Nothing but the output was left in the shared directory (no temp files).
    assert sorted(p.name for p in sticky.iterdir()) == ["new.mp4"]


@needs_root_and_user_tools
def test_a_file_that_appears_before_assembly_is_not_replaced(
    shared: tuple[Daemon, Path, Path], throwaway_user: ThrowawayUser
) -> None:
    d, comp, sticky = shared
    out = sticky / "late.mp4"
    r = _submit(throwaway_user, d, comp, out)
    assert r.returncode == 0, r.stderr
    job = r.stdout.strip()
    out.write_bytes(ROOT_VIDEO)  # root's file arrives while the job renders
    status = wait_state(d, job, ("failed", "done"))
    assert status["job"]["state"] == "failed", status["job"]
    assert f"belongs to uid 0; uid {throwaway_user.uid} may not replace it" in status["job"]["error"]
    assert out.read_bytes() == ROOT_VIDEO
    assert sorted(p.name for p in sticky.iterdir()) == ["late.mp4"]
    assert d.proc is not None and d.proc.poll() is None


def test_submit_into_the_composition_is_refused(short_tmp: Path) -> None:
    comp = short_tmp / "comp"
    shutil.copytree(FIXTURES / "frame-index-hook", comp)
    before = _snapshot(comp)
    d = Daemon(short_tmp, slots=1)
    d.start()
    try:
        (short_tmp / "link.mp4").symlink_to(comp / "new.mp4")
        for out in (comp / "out.mp4", short_tmp / "link.mp4"):
            r = d.ctl("submit", comp, "-o", out, "--frames", "0:2", "--wait")
            assert r.returncode != 0
            line = _one_error_line(r.stderr)
            assert f"output {out} is inside the composition {comp}" in line, line
        assert d.json("list")["jobs"] == []
    finally:
        d.stop()
    assert _snapshot(comp) == before
