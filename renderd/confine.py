"""Files of an untrusted composition, read only from inside its directory.

A composition names files by relative URLs and paths; symlinks (at any level), a directory
index, ``..`` and percent-encoding must never lead outside the composition root. Every path is
resolved fully (the root too, by the caller) and must lie inside the root; the file is then
opened without following a last-component symlink and re-checked on the open descriptor (a
regular file, and the very path that was resolved: ``/proc/self/fd``), so a symlink swapped in
between the check and the open is refused rather than followed. FIFOs, devices and sockets are
refused (a FIFO would block, ``/dev/zero`` never ends).
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import stat
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO

from renderd.errors import AssetTooLarge, Refused
from renderd.settings import DEFAULTS

MIB = 1 << 20
# Assets served whole to the page are held in memory (several copies on their way through the
# browser driver); larger ones need an operator's --max-asset-size.
DEFAULT_MAX_ASSET_BYTES = DEFAULTS.max_asset_size * MIB


def asset_too_large_text(name: str, size: int, limit: int) -> str:
    """The one-line error for an asset over the limit (naming the file and the flag)."""
    return str(AssetTooLarge(Path(name), size, limit))


def inside(root: Path, path: Path) -> Path | None:
    """Return ``path`` fully resolved when it lies inside ``root`` (already resolved), else None."""
    try:
        resolved = path.resolve()
    except (OSError, RuntimeError):  # a symlink loop
        return None
    return resolved if resolved == root or resolved.is_relative_to(root) else None


def regular_inside(root: Path, path: Path) -> Path | None:
    """Return ``path`` resolved when it is a regular file inside ``root``, else None.

    For paths handed to other programs (ffmpeg, ffprobe): they open the returned path, in which
    no symlink is left to swap, so only a rename of one of its directories races with them.
    """
    resolved = inside(root, path)
    if resolved is None:
        return None
    try:
        st = os.stat(resolved, follow_symlinks=False)
    except OSError:
        return None
    return resolved if stat.S_ISREG(st.st_mode) else None


@contextlib.contextmanager
def open_inside(root: Path, path: Path) -> Iterator[tuple[BinaryIO, int]]:
    """Open regular file ``path`` inside ``root`` (resolved) for reading; yield (file, size).

    Raises Refused (outside the root, not a regular file, not there, or swapped while opening).
    """
    resolved = inside(root, path)
    if resolved is None:
        raise Refused(path, "outside the composition directory")
    flags = os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC
    try:
        fd = os.open(resolved, flags)
    except OSError as exc:
        raise Refused(path, exc.strerror or "cannot open") from None
    try:
        st = os.fstat(fd)
        if not stat.S_ISREG(st.st_mode):
            raise Refused(path, "not a regular file")
        if not _is_open_at(fd, resolved, st):
            raise Refused(path, "changed while it was opened")
        os.set_blocking(fd, True)
        f = os.fdopen(fd, "rb")
    except BaseException:
        os.close(fd)
        raise
    with f:
        yield f, st.st_size


def _is_open_at(fd: int, resolved: Path, st: os.stat_result) -> bool:
    """Whether descriptor ``fd`` is the file at ``resolved`` (no directory on the way was swapped)."""
    try:
        return os.readlink(f"/proc/self/fd/{fd}") == str(resolved)
    except OSError:
        pass
    # Without /proc: the same inode as the path now names (a weaker check).
    try:
        now = os.stat(resolved, follow_symlinks=False)
    except OSError:
        return False
    return (now.st_dev, now.st_ino) == (st.st_dev, st.st_ino)


def read_inside(root: Path, path: Path, limit: int | None = None) -> bytes:
    """Read regular file ``path`` inside ``root`` whole; raise Refused, or AssetTooLarge over ``limit`` bytes."""
    with open_inside(root, path) as (f, size):
        if limit is not None and size > limit:
            raise AssetTooLarge(path, size, limit)
        # Read at most what was checked: a file growing meanwhile is cut, never read unbounded.
        return f.read(size if limit is None else min(size, limit))


def read_text_inside(root: Path, path: Path, limit: int | None = None) -> str | None:
    """``path`` as text (UTF-8, errors replaced), or None when it is refused."""
    try:
        return read_inside(root, path, limit).decode("utf-8", errors="replace")
    except Refused:
        return None


@dataclass(frozen=True, slots=True)
class TreeEntry:
    """One entry of a composition tree, never followed: a regular file or a symlink.

    ``target``: for a symlink, what it resolves to when that lies inside the root (None: it
    leads outside, or loops).
    """

    rel: str
    path: Path
    link: bool
    target: Path | None = None


def tree_entries(root: Path) -> list[TreeEntry]:
    """The regular files and symlinks under ``root`` (resolved), sorted; directory symlinks are not entered.

    FIFOs, sockets and devices are left out: nothing of a composition can be one.
    """
    out: list[TreeEntry] = []
    for top, dirs, files in os.walk(root, followlinks=False):
        base = Path(top)
        for name in sorted(dirs + files):
            path = base / name
            try:
                st = os.lstat(path)
            except OSError:
                continue
            rel = path.relative_to(root).as_posix()
            if stat.S_ISLNK(st.st_mode):
                out.append(TreeEntry(rel, path, True, inside(root, path)))
            elif stat.S_ISREG(st.st_mode):
                out.append(TreeEntry(rel, path, False))
    out.sort(key=lambda e: e.rel)
    return out


def tree_digest(root: Path) -> str:
    """Return a hash of every file under ``root`` (relative names and bytes) and of its symlinks (where to).

    Symlinks are not followed (a composition's link to a file outside it is never read): what a
    link says is hashed, not what it points at. Blocking: run it in a thread.
    """
    h = hashlib.sha256()
    for e in tree_entries(root):
        rel = e.rel.encode("utf-8", "surrogateescape")
        h.update(len(rel).to_bytes(4, "big") + rel)
        if e.link:
            to = "" if e.target is None else e.target.relative_to(root).as_posix()
            h.update(b"\1" + to.encode("utf-8", "surrogateescape"))
        else:
            with e.path.open("rb") as f:
                for block in iter(lambda: f.read(1 << 20), b""):
                    h.update(block)
        h.update(b"\0")
    return h.hexdigest()
