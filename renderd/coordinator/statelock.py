"""One daemon per state dir: an exclusive lock on ``<state_dir>/renderd.lock``, holding its pid.

Taken before the store is opened (recovery rewrites in-flight chunks, which would steal the
running daemon's work). ``flock`` locks belong to the open file, so the kernel drops the lock
when the daemon exits however it exits; the file itself stays (removing it would let a third
daemon lock a new file while a second still holds the old one).
"""

from __future__ import annotations

import contextlib
import fcntl
import os
from pathlib import Path

from renderd.errors import RenderdError, StateDirLocked

LOCK_NAME = "renderd.lock"


class StateLock:
    """The held lock of a state dir; :meth:`release` (or process exit) gives it up."""

    def __init__(self, path: Path, fd: int) -> None:
        self.path = path
        self._fd: int | None = fd

    @classmethod
    def acquire(cls, state_dir: Path) -> StateLock:
        """Lock ``state_dir`` for this process (blocking file I/O: call from a thread)."""
        state_dir.mkdir(parents=True, exist_ok=True)
        path = state_dir / LOCK_NAME
        try:
            fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o644)
        except OSError as exc:
            raise RenderdError(f"cannot open the state dir lock {path}: {exc.strerror}") from None
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            holder = os.pread(fd, 64, 0).decode(errors="replace").strip() or "unknown"
            os.close(fd)
            raise StateDirLocked(
                f"state dir {state_dir} is in use by another renderd daemon (pid {holder}; lock {path})"
            ) from None
        os.ftruncate(fd, 0)
        os.pwrite(fd, f"{os.getpid()}\n".encode(), 0)
        return cls(path, fd)

    def release(self) -> None:
        """Give the lock up (the file stays, emptied of our pid)."""
        if self._fd is None:
            return
        with contextlib.suppress(OSError):
            os.ftruncate(self._fd, 0)
        os.close(self._fd)
        self._fd = None
