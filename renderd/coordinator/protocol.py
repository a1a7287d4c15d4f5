"""Control-socket protocol: newline-delimited JSON requests and responses.

Request:  ``{"op": "<name>", ...fields}``
Response: ``{"ok": true, ...}`` or ``{"ok": false, "error": {"code": "...", "message": "..."}}``
A ``watch`` request is answered by a stream of ``{"ok": true, "event": {...}}`` lines ending
with one whose event has ``"final": true``.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

from renderd import settings
from renderd.errors import ControlError as ControlError

MAX_LINE_BYTES = 64 * 1024


# Error codes
BAD_JSON = "bad_json"
BAD_REQUEST = "bad_request"
UNKNOWN_OP = "unknown_op"
TOO_LARGE = "too_large"
FORBIDDEN = "forbidden"
NOT_FOUND = "not_found"
INVALID_STATE = "invalid_state"
BAD_INPUT = "bad_input"
SHUTTING_DOWN = "shutting_down"
NO_HOST = "no_host"
INTERNAL = "internal"

_STR = (str,)
_INT = (int,)
_OPT_INT = (int, type(None))
_OPT_STR = (str, type(None))

# op -> {field: (allowed types, required)}
OPS: dict[str, dict[str, tuple[tuple[type, ...], bool]]] = {
    "version": {},
    "submit": {
        "composition": (_STR, True),
        "output": (_STR, True),
        "fps": (_OPT_STR, False),
        "width": (_OPT_INT, False),
        "height": (_OPT_INT, False),
        "duration": (_OPT_STR, False),
        "frames": (_OPT_STR, False),
        "frames_per_chunk": (_OPT_INT, False),
        "priority": (_OPT_INT, False),
        "label": (_OPT_STR, False),
        "notify": ((list, type(None)), False),  # URLs or commands run when the job ends (hooks.py)
        "require": ((list, type(None)), False),  # host labels, each checked at submit
        # Every render setting, flat; null (or absent) means its default.
        **{name: (settings.json_types(name), False) for name in settings.NAMES},
    },
    "status": {"job": (_STR, True)},
    "list": {"all": ((bool,), False), "limit": (_OPT_INT, False)},
    "watch": {"job": (_STR, True)},
    "cancel": {"job": (_STR, True)},
    "retry": {"job": (_STR, True)},
    "logs": {"job": (_STR, True)},
    "hosts": {},
    "drain": {"host": (_STR, True)},
    "undrain": {"host": (_STR, True)},
    "reload": {},
}


@dataclass(frozen=True, slots=True)
class Request:
    """A validated control request."""

    op: str
    fields: dict[str, Any]


def parse_request(line: bytes) -> Request:
    """Decode and validate one request line; raise ControlError with a code on any problem."""
    if len(line) > MAX_LINE_BYTES:
        raise ControlError(TOO_LARGE, f"request line is longer than {MAX_LINE_BYTES} bytes")
    try:
        data = json.loads(line)
    except (ValueError, UnicodeDecodeError):
        raise ControlError(BAD_JSON, "request is not valid JSON") from None
    except RecursionError:
        # 64 KiB of '[' fits in a line and nests deeper than the decoder recurses.
        raise ControlError(BAD_JSON, "request is nested too deeply") from None
    if not isinstance(data, dict):
        raise ControlError(BAD_REQUEST, "request must be a JSON object")
    op = data.pop("op", None)
    if not isinstance(op, str):
        raise ControlError(BAD_REQUEST, "request has no 'op' string")
    spec = OPS.get(op)
    if spec is None:
        raise ControlError(UNKNOWN_OP, f"unknown op {op!r} (known: {', '.join(sorted(OPS))})")
    for name in data:
        if name not in spec:
            raise ControlError(BAD_REQUEST, f"op {op!r} has no field {name!r}")
    for name, (types, required) in spec.items():
        if name not in data:
            if required:
                raise ControlError(BAD_REQUEST, f"op {op!r} needs field {name!r}")
            continue
        value = data[name]
        if (isinstance(value, bool) and bool not in types) or not isinstance(value, types):
            raise ControlError(BAD_REQUEST, f"field {name!r} of op {op!r} has the wrong type")
    return Request(op, data)


def encode(obj: dict[str, Any]) -> bytes:
    """Return one protocol line."""
    return json.dumps(obj, separators=(",", ":"), default=str).encode() + b"\n"


def ok(**fields: Any) -> bytes:
    """Return a success line."""
    return encode({"ok": True, **fields})


def error(code: str, message: str) -> bytes:
    """Return an error line."""
    return encode({"ok": False, "error": {"code": code, "message": message}})
