"""A throwaway unprivileged user that runs this checkout's real `renderd` (root-only tests).

Tests of untrusted compositions check what renderd does for a user who is not root: a submitter
the daemon must not write or read for beyond that user's rights, a render whose Chromium must
keep its sandbox. The fixture ``throwaway_user`` (tests/conftest.py) creates one with a random
name per test module and always removes it.
"""

from __future__ import annotations

import os
import pwd
import secrets
import shutil
import subprocess
import sys
import sysconfig
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
SYSTEM_PYTHON_DIRS = "/usr/bin:/usr/local/bin"


def system_python() -> str | None:
    """Return a system Python of this interpreter's minor version, or None.

    The venv's interpreter may live under root's home (pyenv), which is 0700: another user cannot
    execute it. A system Python of the same minor version can load the venv's site-packages.
    """
    return shutil.which(f"python{sys.version_info.major}.{sys.version_info.minor}", path=SYSTEM_PYTHON_DIRS)


def _unavailable() -> str | None:
    if os.geteuid() != 0:
        return "not root"
    missing = [tool for tool in ("useradd", "userdel", "runuser") if shutil.which(tool) is None]
    if missing:
        return f"{', '.join(missing)} not installed"
    if system_python() is None:
        return f"no python{sys.version_info.major}.{sys.version_info.minor} in {SYSTEM_PYTHON_DIRS}"
    return None


UNAVAILABLE = _unavailable()

needs_root_and_user_tools = pytest.mark.skipif(
    UNAVAILABLE is not None,
    reason=f"needs root, useradd/userdel/runuser and a system Python of this version to run renderd as a "
    f"throwaway unprivileged user ({UNAVAILABLE})",
)


class ThrowawayUser:
    """A new system user without a home or login shell; ``remove()`` deletes it again."""

    def __init__(self, prefix: str = "rdt") -> None:
        self.name = f"{prefix}{secrets.token_hex(4)}"
        subprocess.run(
            ["useradd", "--system", "--user-group", "--no-create-home", "--shell", "/usr/sbin/nologin", self.name],
            check=True, capture_output=True, timeout=60,
        )  # fmt: skip
        pw = pwd.getpwnam(self.name)
        self.uid, self.gid = pw.pw_uid, pw.pw_gid

    def argv(self, *argv: str | os.PathLike[str], env: dict[str, str] | None = None) -> list[str]:
        """Return the argv running ``argv`` as this user (no groups but its own), with ``env`` added."""
        assigns = [f"{k}={v}" for k, v in (env or {}).items()]
        return ["runuser", "-u", self.name, "--", "env", *assigns, *map(str, argv)]

    def renderd_argv(self, *args: str | os.PathLike[str], env: dict[str, str] | None = None) -> list[str]:
        """Return the argv running the real `renderd` CLI as this user: system Python, this checkout's code."""
        python = system_python()
        assert python is not None, UNAVAILABLE
        # The checkout first (the editable install's .pth is not read from PYTHONPATH), then the
        # venv's site-packages for the dependencies.
        path = f"{ROOT}{os.pathsep}{sysconfig.get_paths()['purelib']}"
        renderd_env = {"PYTHONPATH": path, "PYTHONDONTWRITEBYTECODE": "1", **(env or {})}
        return self.argv(python, "-m", "renderd", *args, env=renderd_env)

    def renderd(
        self,
        *args: str | os.PathLike[str],
        cwd: Path | str = "/",
        env: dict[str, str] | None = None,
        timeout: float = 240,
    ) -> subprocess.CompletedProcess[str]:
        """Run `renderd *args` as this user to completion (text mode)."""
        argv = self.renderd_argv(*args, env=env)
        return subprocess.run(argv, capture_output=True, text=True, timeout=timeout, cwd=cwd)

    def run(
        self, *argv: str | os.PathLike[str], cwd: Path | str = "/", timeout: float = 240
    ) -> subprocess.CompletedProcess[str]:
        """Run a plain command as this user to completion (text mode)."""
        return subprocess.run(self.argv(*argv), capture_output=True, text=True, timeout=timeout, cwd=cwd)

    def remove(self) -> None:
        """Delete the user and its group (userdel refuses while a process of the user still runs)."""
        r = subprocess.run(["userdel", self.name], check=False, capture_output=True, text=True, timeout=60)
        if r.returncode != 0:
            raise RuntimeError(f"userdel {self.name} failed: {r.stderr.strip()}")
