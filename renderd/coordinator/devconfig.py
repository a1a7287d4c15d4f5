"""`renderd daemon --dev DIR`: a trial daemon that runs as you, with everything in one directory.

DIR gets a ready ``renderd.toml`` (socket and state inside DIR, no systemd watchdog) and a
``hosts.toml`` with one host, this machine (``address = "local"``: agents are subprocesses of
the daemon). Files already there are kept, so running it again continues the same trial.
"""

from __future__ import annotations

import os
import shlex
from pathlib import Path

from renderd.config import MAX_SOCKET_PATH_BYTES
from renderd.errors import RenderdError

CONFIG = """\
# A trial renderd daemon, made by `renderd daemon --dev {dir}`. It runs as the user who
# started it; everything it keeps is in this directory. See config/renderd.toml for every key.
[daemon]
socket = "{dir}/renderd.sock"
state_dir = "{dir}/state"
hosts_file = "hosts.toml"      # beside this file
log_level = "info"
watchdog = false               # no systemd here
"""
HOSTS = """\
# The trial daemon's render hosts: this machine only. Add SSH hosts with
# `renderd hosts add NAME ADDRESS --config {dir}/renderd.toml`; see hosts.example.toml.
[[hosts]]
name = "local"
address = "local"              # agents run as subprocesses of the daemon, no SSH
slots = 1
labels = ["local"]
"""


def _quotable(path: Path) -> str:
    text = str(path)
    if any(c in text for c in '"\\\n') or not text.isprintable():
        raise RenderdError(f"--dev {text!r}: choose a directory without quotes, backslashes or control characters")
    return text


def write_dev_config(directory: Path) -> Path:
    """Create ``directory`` with a trial ``renderd.toml`` and ``hosts.toml`` (kept if there); return the config."""
    if os.geteuid() == 0:
        raise RenderdError(
            "--dev runs a trial daemon as your own user; run it as a user other than root "
            "(for a system daemon, see systemd/README.md)"
        )
    root = directory.expanduser().absolute()
    text = _quotable(root)
    socket = root / "renderd.sock"
    if len(os.fsencode(socket)) > MAX_SOCKET_PATH_BYTES:
        raise RenderdError(f"--dev {root}: the socket path would be longer than {MAX_SOCKET_PATH_BYTES} bytes")
    try:
        root.mkdir(parents=True, exist_ok=True, mode=0o700)
        for name, template in (("renderd.toml", CONFIG), ("hosts.toml", HOSTS)):
            path = root / name
            if not path.exists():
                path.write_text(template.format(dir=text), encoding="utf-8")
    except OSError as exc:
        raise RenderdError(f"--dev {root}: {exc.strerror or exc}") from None
    return root / "renderd.toml"


def dev_instructions(config: Path, socket: Path) -> str:
    """What to type in another shell to use the trial daemon."""
    return (
        f"renderd: trial daemon with {config} (Ctrl-C stops it). In another shell:\n"
        f"  export RENDERD_SOCKET={shlex.quote(str(socket))}\n"
        "  renderd submit path/to/composition -o /tmp/out.mp4 --wait\n"
    )
