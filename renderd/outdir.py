"""Create the directory an output goes into, as `mkdir -p` would, or say in one line why not.

Kept apart from renderd.outputs so that `renderd submit`, which creates it as the submitting
user before asking the daemon (the daemon may have no right to), stays light to start.
"""

from __future__ import annotations

from pathlib import Path

from renderd.errors import OutputError


def make_output_dir(out: Path) -> None:
    """Create the missing directories above the output ``out``; raise OutputError (exit 2) if that fails."""
    parent = out.parent
    if parent.is_dir():
        return
    try:
        parent.mkdir(parents=True, exist_ok=True)
    except FileExistsError:
        raise OutputError(f"output directory {parent} is not a directory") from None
    except NotADirectoryError:
        raise OutputError(f"output directory {parent} cannot be created: a part of it is a file") from None
    except PermissionError:
        raise OutputError(f"output directory {parent} cannot be created: permission denied") from None
    except OSError as exc:
        raise OutputError(f"output directory {parent} cannot be created: {exc.strerror}") from None
