"""How a failed command ends: one `renderd: error:` line (and a JSON error event with --json)."""

from __future__ import annotations

import sys

EXIT_CANCELLED = 130
# What a shell reports for a command killed by SIGPIPE; Python ignores the signal, renderd ends so.
EXIT_BROKEN_PIPE = 141


def fail(message: str, json_mode: bool, *, code: str = "error", status: int = 1) -> int:
    """Print ``message`` as renderd's one-line error (and as a JSON event in JSON mode); return ``status``."""
    if json_mode:
        # Imported here: client commands reach this only on an error with --json.
        from renderd.events import Error

        print(Error(message=message, code=code).to_json(), flush=True)
    print(f"renderd: error: {message}", file=sys.stderr, flush=True)
    return status
