"""Reading TOML config files so that every problem is reported with its file, line and key path.

``tomllib`` returns plain dicts with no positions, so this module scans the raw text once for
table headers (``[daemon]``, the n-th ``[[hosts]]``) and ``key = value`` lines (bare, quoted and
dotted keys), skipping multi-line strings and arrays, and maps key paths such as
``("hosts", 2, "port")`` to the line they are written on. A path that is not written anywhere
(a missing key) falls back to its closest written ancestor, usually the table header.

:func:`read_table` runs one check per known key and keeps going after a failure, so a file
with five mistakes yields five problems in one pass.
"""

from __future__ import annotations

import difflib
import re
import tomllib
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from renderd.errors import Invalid as Invalid
from renderd.errors import KeyPath as KeyPath

_BARE_KEY = re.compile(r"[A-Za-z0-9_-]+")


def format_key_path(path: KeyPath) -> str:
    """Render a key path the way a person reads it: ``hosts[2].port``, ``daemon."odd key"``."""
    out = ""
    for part in path:
        if isinstance(part, int):
            out += f"[{part}]"
            continue
        text = part if _BARE_KEY.fullmatch(part) else '"' + part.replace('"', '\\"') + '"'
        out += f".{text}" if out else text
    return out


class _Scanner:
    """Walks TOML text line by line, remembering open multi-line strings and arrays."""

    def __init__(self) -> None:
        self.ml_quote: str | None = None  # '"""' or "'''" while inside a multi-line string
        self.depth = 0  # open [ / { of a value that continues on the next line

    @property
    def in_value(self) -> bool:
        return self.ml_quote is not None or self.depth > 0

    def scan_value(self, s: str, i: int) -> None:
        """Consume a value (or its continuation) from ``s[i:]`` up to the end or a comment."""
        n = len(s)
        while i < n:
            if self.ml_quote is not None:
                end = _find_close(s, i, self.ml_quote)
                if end < 0:
                    return
                self.ml_quote, i = None, end
                continue
            c = s[i]
            if c == "#":
                return
            if c in "\"'":
                if s.startswith(c * 3, i):
                    self.ml_quote, i = c * 3, i + 3
                    continue
                end = _find_close(s, i + 1, c)
                i = n if end < 0 else end
                continue
            if c in "[{":
                self.depth += 1
            elif c in "]}":
                self.depth = max(0, self.depth - 1)
            i += 1


def _find_close(s: str, i: int, quote: str) -> int:
    """Return the index just past the closing ``quote`` at or after ``i``, or -1."""
    escapes = quote[0] == '"'
    while i < len(s):
        if escapes and s[i] == "\\":
            i += 2
            continue
        if s.startswith(quote, i):
            return i + len(quote)
        i += 1
    return -1


def _parse_key(s: str, i: int) -> tuple[list[str], int]:
    """Parse a (possibly dotted, possibly quoted) key at ``s[i:]``; return its parts and end."""
    parts: list[str] = []
    n = len(s)
    while True:
        while i < n and s[i] in " \t":
            i += 1
        if i < n and s[i] in "\"'":
            end = _find_close(s, i + 1, s[i])
            if end < 0:
                return [], i
            raw = s[i + 1 : end - 1]
            parts.append(re.sub(r"\\(.)", r"\1", raw) if s[i] == '"' else raw)
            i = end
        else:
            m = _BARE_KEY.match(s, i)
            if not m:
                return [], i
            parts.append(m.group())
            i = m.end()
        while i < n and s[i] in " \t":
            i += 1
        if i < n and s[i] == ".":
            i += 1
            continue
        return parts, i


@dataclass
class SourceMap:
    """Where each table header and key of one TOML document is written (1-based lines)."""

    lines: dict[KeyPath, int] = field(default_factory=dict)

    @classmethod
    def from_text(cls, text: str) -> SourceMap:
        """Scan ``text`` (already known to be valid TOML) for headers and keys."""
        smap = cls()
        scanner = _Scanner()
        arrays: dict[KeyPath, int] = {}  # array-of-tables path -> elements seen so far
        table: KeyPath = ()
        for lineno, line in enumerate(text.splitlines(), start=1):
            if scanner.in_value:
                scanner.scan_value(line, 0)
                continue
            stripped = line.lstrip()
            i = len(line) - len(stripped)
            if not stripped or stripped[0] == "#":
                continue
            if stripped[0] == "[":
                is_array = stripped.startswith("[[")
                parts, _ = _parse_key(line, i + (2 if is_array else 1))
                if not parts:
                    continue
                table = smap._resolve(parts[:-1] if is_array else parts, arrays)
                if is_array:
                    table += (parts[-1],)
                    smap._note(table, lineno)
                    index = arrays.get(table, 0)
                    arrays[table] = index + 1
                    table += (index,)
                smap._note(table, lineno)
                continue
            parts, j = _parse_key(line, i)
            if not parts or j >= len(line) or line[j] != "=":
                continue
            for k in range(1, len(parts) + 1):
                smap._note(table + tuple(parts[:k]), lineno)
            scanner.scan_value(line, j + 1)
        return smap

    @staticmethod
    def _resolve(parts: list[str], arrays: dict[KeyPath, int]) -> KeyPath:
        # In `[hosts.ssh]` after `[[hosts]]`, `hosts` means the latest element of the array.
        path: KeyPath = ()
        for part in parts:
            path += (part,)
            if path in arrays:
                path += (arrays[path] - 1,)
        return path

    def _note(self, path: KeyPath, lineno: int) -> None:
        self.lines.setdefault(path, lineno)

    def line_of(self, path: KeyPath) -> int | None:
        """Return the line of ``path``, else of its nearest written ancestor, else None."""
        for k in range(len(path), 0, -1):
            line = self.lines.get(path[:k])
            if line is not None:
                return line
        return None


class Problems:
    """Problems found in one file, each formatted as ``<file>:<line>: <key path>: <reason>``."""

    def __init__(self, file: str, source: SourceMap | None = None) -> None:
        self.file = file
        self.source = source
        self._items: list[tuple[int, int, str]] = []
        self.paths: set[KeyPath] = set()  # key paths that have a problem

    def add(self, path: KeyPath, reason: str, *, line: int | None = None) -> None:
        """Record one problem at ``path`` (an empty path means the file as a whole)."""
        if line is None and self.source is not None and path:
            line = self.source.line_of(path)
        where = self.file if line is None else f"{self.file}:{line}"
        text = f"{where}: {format_key_path(path)}: {reason}" if path else f"{where}: {reason}"
        self._items.append((line or 0, len(self._items), text))
        self.paths.add(path)

    def __bool__(self) -> bool:
        return bool(self._items)

    def __len__(self) -> int:
        return len(self._items)

    def lines(self) -> list[str]:
        """Return the problems ordered by line, then by the order they were found."""
        return [text for _, _, text in sorted(self._items)]


# --- reading a TOML file and checking its tables, with every problem kept -----------------------


Check = Callable[[Any], Any]

_TOML_TYPES: tuple[tuple[type, str], ...] = (
    (bool, "a boolean"),
    (int, "an integer"),
    (float, "a float"),
    (str, "a string"),
    (list, "an array"),
    (dict, "a table"),
)


def type_name(value: object) -> str:
    """Name the TOML type of a parsed value: ``"an integer"``, ``"a boolean"``, ..."""
    # bool before int: True is an int to Python but not to a person writing TOML.
    return next((name for t, name in _TOML_TYPES if isinstance(value, t)), "a date/time")


def show(value: object) -> str:
    """Write a parsed value back roughly as it looked in TOML (``true``, ``'30s'``, ``3``)."""
    return str(value).lower() if isinstance(value, bool) else repr(value)


def want(value: object, typ: type, what: str) -> Any:
    """Return ``value`` if it has TOML type ``typ`` (a bool is not an int), else raise Invalid."""
    if isinstance(value, bool) != (typ is bool) or not isinstance(value, typ):
        raise Invalid(f"expected {what}, got {type_name(value)} ({show(value)})")
    return value


def int_in(lo: int, hi: int | None = None) -> Check:
    """Check an integer in ``lo..hi`` (no upper bound when ``hi`` is None)."""

    def check(value: object) -> int:
        v: int = want(value, int, "an integer")
        if v < lo or (hi is not None and v > hi):
            raise Invalid(f"must be {lo}..{hi}, got {v}" if hi is not None else f"must be >= {lo}, got {v}")
        return v

    return check


def boolean(value: object) -> bool:
    """Check a boolean."""
    return bool(want(value, bool, "true or false"))


def one_of(*options: str) -> Check:
    """Check a string that is one of ``options``."""

    def check(value: object) -> str:
        if want(value, str, "a string") not in options:
            raise Invalid(f"must be one of {', '.join(map(repr, options))}, got {value!r}")
        return str(value)

    return check


def matching(pattern: re.Pattern[str], what: str) -> Check:
    """Check a string matching ``pattern``, described as ``what`` in the reason."""

    def check(value: object) -> str:
        v: str = want(value, str, "a string")
        if not pattern.fullmatch(v):
            raise Invalid(f"{v!r} is not {what}")
        return v

    return check


def nonempty_str(value: object) -> str:
    """Check a non-empty string."""
    if not want(value, str, "a string"):
        raise Invalid("must not be empty")
    return str(value)


def list_of(item: Check, *, nonempty: bool = False) -> Check:
    """Check an array whose elements each pass ``item``; return them as a tuple."""

    def check(value: object) -> tuple[Any, ...]:
        items: list[Any] = want(value, list, "an array")
        if nonempty and not items:
            raise Invalid("must not be empty")
        out = []
        for i, v in enumerate(items):
            try:
                out.append(item(v))
            except Invalid as exc:
                raise Invalid(exc.reason, (i, *exc.sub)) from None
        return tuple(out)

    return check


def read_toml(path: Path, what: str) -> tuple[dict[str, Any] | None, Problems]:
    """Parse ``path``; on failure return None and the one problem that stopped it."""
    problems = Problems(str(path))
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        problems.add((), f"{what} not found")
        return None, problems
    except (OSError, UnicodeDecodeError) as exc:
        problems.add((), f"cannot read {what}: {exc}")
        return None, problems
    try:
        doc = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        m = re.search(r"\(at line (\d+), column \d+\)$", str(exc))
        problems.add((), f"TOML syntax error: {exc}", line=int(m.group(1)) if m else None)
        return None, problems
    problems.source = SourceMap.from_text(text)
    return doc, problems


def unknown_key(key: str, known: Iterable[str], what: str = "key") -> str:
    """Say that ``key`` is unknown, suggesting the closest of ``known`` (or all, if few)."""
    names = list(known)
    close = difflib.get_close_matches(key, names, n=1, cutoff=0.6)
    if close:
        return f"unknown {what} {key!r} (did you mean {close[0]!r}?)"
    if len(names) <= 5:
        return f"unknown {what} {key!r} (expected one of: {', '.join(names)})"
    return f"unknown {what} {key!r}"


def as_table(value: object, path: KeyPath, problems: Problems) -> Mapping[str, Any]:
    """Return ``value`` if it is a table, else record a problem and return an empty one."""
    if isinstance(value, dict):
        return value
    problems.add(path, f"expected a table, got {type_name(value)}")
    return {}


def read_table(
    table: Mapping[str, Any], checks: Mapping[str, Check], path: KeyPath, problems: Problems
) -> dict[str, Any]:
    """Check every key of ``table``; return the valid values, record the rest as problems."""
    out: dict[str, Any] = {}
    for key, value in table.items():
        check = checks.get(key)
        if check is None:
            problems.add(path + (key,), unknown_key(key, checks))
            continue
        try:
            out[key] = check(value)
        except Invalid as exc:
            problems.add(path + (key, *exc.sub), exc.reason)
    return out
