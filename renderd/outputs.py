"""Where renderd may write what it makes, and how a finished video is put in place.

Two rules (docs/design.md, "Confinement: outputs"):

- Nothing renderd writes lands in the composition it reads. The output video, the work directory
  (frames, chunks) and a prepared copy must not be the composition directory, lie inside it, or
  lie in a place one of its symlinks points at. ``check_outside`` says so in one line before any
  browser starts.
- The daemon writes for the user who submitted the job. It replaces an existing file only where
  that user could remove it, never a symlink or a directory; as root it makes the new file the
  user's. ``check_replaceable`` runs at submission and again, on the opened directory, in
  ``install_output`` just before the rename, because the file may have appeared meanwhile.

A finished file is always renamed into place from a directory nobody else can write (the work
directory of `renderd render`, the daemon's job directory). The rename replaces the directory
entry at the output path, so a symlink planted there is replaced, never written through; only
when the two directories are on different file systems is the file copied, into a temp file
created with O_EXCL under an unguessable name next to the output.
"""

from __future__ import annotations

import contextlib
import errno
import os
import pwd
import re
import secrets
import shutil
import stat
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

from renderd.errors import OutputError

# Symlinks are looked for in at most this many directory entries of a composition; past that
# (a vendored node_modules, say) the check keeps only the path rules.
MAX_SCAN_ENTRIES = 100_000
_W, _X = 1, 0  # permission bit offsets within a rwx triple


@dataclass(frozen=True, slots=True)
class Owner:
    """The user a daemon job writes for: uid, primary gid, and every group they are in."""

    uid: int
    gid: int
    gids: frozenset[int]

    @classmethod
    def of_uid(cls, uid: int) -> Owner:
        """Look the user up (NSS: blocking); a uid without a passwd entry keeps only its uid."""
        try:
            pw = pwd.getpwuid(uid)
        except KeyError:
            return cls(uid, -1, frozenset())
        try:
            groups = os.getgrouplist(pw.pw_name, pw.pw_gid)
        except OSError:
            groups = [pw.pw_gid]
        return cls(uid, pw.pw_gid, frozenset(groups))


def composition_root(path: Path) -> Path:
    """Return the directory a composition is served from: the directory itself, or an .html file's."""
    p = path.expanduser().resolve()
    return p if p.is_dir() else p.parent


def check_outside(path: Path, roots: Iterable[Path], *, what: str = "output") -> None:
    """Raise OutputError if ``path`` (followed through symlinks) is a composition root, inside one,
    or inside a place a symlink of that composition points at. Blocking: it walks each root once.
    """
    _check_all([(what, path)], roots)


def check_render_paths(root: Path, output: Path, work_dir: Path | None) -> None:
    """Raise OutputError if a render's output or work directory would land in the composition at ``root``."""
    named = [("output", output)] + ([("work directory", work_dir)] if work_dir is not None else [])
    _check_all(named, [root])


def _check_all(named: list[tuple[str, Path]], roots: Iterable[Path]) -> None:
    targets = [(what, path, path.expanduser().resolve()) for what, path in named]
    for root in {r.resolve() for r in roots}:
        for what, path, target in targets:
            via = "" if str(target) == os.path.abspath(path.expanduser()) else f" (it resolves to {target})"
            if target == root:
                raise OutputError(f"{what} {path} is the composition directory {root}{via}")
            if target.is_relative_to(root):
                raise OutputError(f"{what} {path} is inside the composition {root}{via}")
        for link, dest in _links_out_of(root):
            for what, path, target in targets:
                if target == dest or target.is_relative_to(dest):
                    raise OutputError(f"{what} {path} is a file of the composition {root} (through its symlink {link})")


def _links_out_of(root: Path) -> Iterable[tuple[Path, Path]]:
    """Yield (symlink, resolved target) for the symlinks under ``root`` that point outside it."""
    seen = 0
    for dirpath, dirnames, filenames in os.walk(root):
        for name in (*dirnames, *filenames):
            seen += 1
            if seen > MAX_SCAN_ENTRIES:
                return
            entry = Path(dirpath, name)
            if entry.is_symlink() and not (dest := entry.resolve()).is_relative_to(root):
                yield entry, dest


def check_replaceable(out: Path, owner: Owner | None, *, sequence: bool = False) -> None:
    """Raise OutputError unless ``out`` may be created or replaced (for ``owner``, a daemon job's
    submitter, when given): a file, or with ``sequence`` a png-sequence directory. Blocking.
    """
    dfd = _open_dir(out)
    try:
        if sequence:
            _check_dir_at(dfd, out, owner)
        elif owner is not None:
            _check_at(dfd, out, owner)
    finally:
        os.close(dfd)


def install_output(src: Path, out: Path, owner: Owner | None = None) -> None:
    """Move the finished file ``src`` to ``out`` in one rename (blocking).

    ``src`` must sit in a directory only renderd writes. With ``owner`` (a daemon job) the
    directory and any file already at ``out`` are checked for that user first, and a daemon
    running as root hands the file to them.
    """
    dfd = _open_dir(out)
    try:
        if owner is not None:
            _check_at(dfd, out, owner)
        give = owner if owner is not None and os.geteuid() == 0 else None
        if give is not None:
            os.chown(src, give.uid, give.gid, follow_symlinks=False)
        try:
            os.rename(src, out.name, dst_dir_fd=dfd)
        except OSError as exc:
            if exc.errno != errno.EXDEV:
                raise
            _copy_into(src, dfd, out.name, give)
    finally:
        os.close(dfd)


def install_output_dir(src: Path, out: Path, owner: Owner | None = None) -> None:
    """Move the finished directory ``src`` (a png-sequence) to ``out`` (blocking).

    ``out`` may be missing, or a directory that holds only files named like a sequence's
    (``frame_*.png``) from an earlier render: that one is replaced, by two renames (the old one
    moves aside, the new one in) and then removed. Anything else at ``out`` is refused, so a
    directory of other files is never emptied. With ``owner`` the same checks as for a file
    apply, and a daemon running as root hands every file to them.
    """
    dfd = _open_dir(out)
    try:
        old = _check_dir_at(dfd, out, owner)
        give = owner if owner is not None and os.geteuid() == 0 else None
        if give is not None:
            for entry in (src, *src.iterdir()):
                os.chown(entry, give.uid, give.gid, follow_symlinks=False)
        aside = f".{out.name}.renderd-{secrets.token_hex(8)}.old"
        if old:
            os.rename(out.name, aside, src_dir_fd=dfd, dst_dir_fd=dfd)
        try:
            try:
                os.rename(src, out.name, dst_dir_fd=dfd)
            except OSError as exc:
                if exc.errno != errno.EXDEV:
                    raise
                _copy_dir_into(src, dfd, out.name, give)
        except BaseException:
            if old:  # the earlier sequence goes back where it was
                with contextlib.suppress(OSError):
                    os.rename(aside, out.name, src_dir_fd=dfd, dst_dir_fd=dfd)
            raise
        if old:
            _remove_sequence(dfd, aside)
    finally:
        os.close(dfd)


def _check_dir_at(dfd: int, out: Path, owner: Owner | None) -> bool:
    """Check ``out`` may receive a sequence directory; return whether one is there to replace."""
    if owner is not None:
        _check_parent(dfd, out, owner)
    try:
        st = os.stat(out.name, dir_fd=dfd, follow_symlinks=False)
    except FileNotFoundError:
        return False
    if stat.S_ISLNK(st.st_mode):
        raise OutputError(f"output {out} is a symbolic link; renderd replaces only a directory of PNG files")
    if not stat.S_ISDIR(st.st_mode):
        raise OutputError(f"output {out} exists and is not a directory (a png-sequence is written as one)")
    if owner is not None and owner.uid != 0 and st.st_uid != owner.uid:
        raise OutputError(f"output {out} belongs to uid {st.st_uid}; uid {owner.uid} may not replace it")
    fd = os.open(out.name, os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC, dir_fd=dfd)
    try:
        for name in os.listdir(fd):
            if not _SEQUENCE_NAME.fullmatch(name) or not stat.S_ISREG(
                os.stat(name, dir_fd=fd, follow_symlinks=False).st_mode
            ):
                raise OutputError(
                    f"output directory {out} holds {name!r}, which is not a frame of a PNG sequence; "
                    "renderd replaces only an earlier sequence (remove it or name another directory)"
                )
    finally:
        os.close(fd)
    return True


_SEQUENCE_NAME = re.compile(r"frame_\d+\.png")


def _remove_sequence(dfd: int, name: str) -> None:
    """Remove the directory ``name`` of ``dfd`` that _check_dir_at found to hold only frame files."""
    fd = os.open(name, os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC, dir_fd=dfd)
    try:
        for entry in os.listdir(fd):
            os.unlink(entry, dir_fd=fd)
    finally:
        os.close(fd)
    os.rmdir(name, dir_fd=dfd)


def _copy_dir_into(src: Path, dfd: int, name: str, give: Owner | None) -> None:
    """Copy the files of ``src`` into a new directory beside ``name``, then rename it to ``name``."""
    tmp = f".{name}.renderd-{secrets.token_hex(8)}.partial"
    os.mkdir(tmp, 0o777, dir_fd=dfd)
    try:
        tfd = os.open(tmp, os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC, dir_fd=dfd)
        try:
            for entry in sorted(src.iterdir()):
                _copy_into(entry, tfd, entry.name, give)
        finally:
            os.close(tfd)
        if give is not None:
            os.chown(tmp, give.uid, give.gid, dir_fd=dfd, follow_symlinks=False)
        os.rename(tmp, name, src_dir_fd=dfd, dst_dir_fd=dfd)
    except BaseException:
        with contextlib.suppress(OSError):
            shutil.rmtree(tmp, dir_fd=dfd)
        raise
    shutil.rmtree(src, ignore_errors=True)


def _open_dir(out: Path) -> int:
    try:
        return os.open(out.parent, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
    except FileNotFoundError:
        raise OutputError(f"output directory {out.parent} does not exist") from None
    except NotADirectoryError:
        raise OutputError(f"output directory {out.parent} is not a directory") from None


def _check_at(dfd: int, out: Path, owner: Owner) -> None:
    d = _check_parent(dfd, out, owner)
    try:
        st = os.stat(out.name, dir_fd=dfd, follow_symlinks=False)
    except FileNotFoundError:
        return
    if stat.S_ISLNK(st.st_mode):
        raise OutputError(f"output {out} is a symbolic link; the daemon replaces only regular files")
    if not stat.S_ISREG(st.st_mode):
        raise OutputError(f"output {out} exists and is not a regular file")
    if owner.uid != 0 and st.st_uid != owner.uid and not _may_remove_others(d, owner):
        raise OutputError(f"output {out} belongs to uid {st.st_uid}; uid {owner.uid} may not replace it")


def _check_parent(dfd: int, out: Path, owner: Owner) -> os.stat_result:
    """Raise OutputError unless ``owner`` may write to the opened directory of ``out``; return its stat."""
    # Checked on the opened directory, which is the one the rename goes to: swapping a parent
    # for a symlink after this cannot move the output into a directory the user may not write.
    d = os.fstat(dfd)
    if not _may(d, owner, _W) or not _may(d, owner, _X):
        raise OutputError(f"uid {owner.uid} may not write to {out.parent}")
    return d


def _may(st: os.stat_result, owner: Owner, bit: int) -> bool:
    """Return whether ``owner`` has permission ``bit`` on ``st`` by its mode bits (no ACLs)."""
    if owner.uid == 0:
        return True
    mode = stat.S_IMODE(st.st_mode)
    if st.st_uid == owner.uid:
        return bool(mode & (1 << (6 + bit)))
    if st.st_gid in owner.gids:
        return bool(mode & (1 << (3 + bit)))
    return bool(mode & (1 << bit))


def _may_remove_others(d: os.stat_result, owner: Owner) -> bool:
    """Return whether ``owner`` could unlink another user's file in directory ``d`` themselves.

    Write permission allows it unless the directory is sticky (/tmp) and not theirs: then only
    a file's owner may remove it, and the daemon must not do it for them.
    """
    return not d.st_mode & stat.S_ISVTX or d.st_uid == owner.uid


def _copy_into(src: Path, dfd: int, name: str, give: Owner | None) -> None:
    """Copy ``src`` to a new O_EXCL temp file in ``dfd`` and rename it to ``name``."""
    tmp = f".{name}.renderd-{secrets.token_hex(8)}.partial"
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC, 0o666, dir_fd=dfd)
    try:
        with os.fdopen(fd, "wb", closefd=False) as dst, src.open("rb") as f:
            shutil.copyfileobj(f, dst, 1 << 20)
        os.fsync(fd)
        if give is not None:
            os.fchown(fd, give.uid, give.gid)
        os.rename(tmp, name, src_dir_fd=dfd, dst_dir_fd=dfd)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(tmp, dir_fd=dfd)
        raise
    finally:
        os.close(fd)
    src.unlink()
