"""The content-addressed asset cache shared by every prepare on this machine.

    <root>/assets/<sha256>                 the bytes of each asset, named by their hash
    <root>/assets/urls/<sha256(url)>.json  which asset a URL gave, and its content type
    <root>/prepared/<key>/                 prepared compositions (see renderd.prepare.build)

``<root>`` is ``$RENDERD_CACHE_DIR``, else ``$XDG_CACHE_HOME/renderd``, else ``~/.cache/renderd``.
A URL is fetched once and then served from here, also with ``--offline``; delete an entry (or
the directory) to fetch it again.
"""

from __future__ import annotations

import hashlib
import json
import os
import tempfile
from dataclasses import dataclass
from pathlib import Path

CACHE_ENV = "RENDERD_CACHE_DIR"


def default_cache_root() -> Path:
    """Return the cache root from the environment (see the module docstring)."""
    env = os.environ.get(CACHE_ENV)
    if env:
        return Path(env).expanduser()
    xdg = os.environ.get("XDG_CACHE_HOME")
    return (Path(xdg) if xdg else Path.home() / ".cache") / "renderd"


def sha256_hex(data: bytes) -> str:
    """Return the hex sha256 of ``data``."""
    return hashlib.sha256(data).hexdigest()


@dataclass(frozen=True, slots=True)
class Cached:
    """An asset's bytes and the content type it was served with."""

    data: bytes
    content_type: str


class AssetCache:
    """Blobs by sha256 plus a URL index; every write is atomic (temp file, then rename)."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self.assets = root / "assets"

    def _index_path(self, url: str) -> Path:
        return self.assets / "urls" / f"{sha256_hex(url.encode())}.json"

    def lookup(self, url: str) -> Cached | None:
        """Return what ``url`` gave before, or None (also when the blob is missing or damaged)."""
        try:
            entry = json.loads(self._index_path(url).read_text(encoding="utf-8"))
            data = (self.assets / entry["sha256"]).read_bytes()
        except (OSError, ValueError, KeyError, TypeError):
            return None
        if entry.get("url") != url or sha256_hex(data) != entry["sha256"]:
            return None
        return Cached(data, str(entry.get("content_type") or ""))

    def store(self, url: str, data: bytes, content_type: str) -> str:
        """Keep ``data`` as what ``url`` gives; return its sha256."""
        digest = sha256_hex(data)
        blob = self.assets / digest
        if not blob.is_file():
            _write_atomic(blob, data)
        entry = {"url": url, "sha256": digest, "content_type": content_type}
        _write_atomic(self._index_path(url), json.dumps(entry, sort_keys=True).encode())
        return digest


def _write_atomic(path: Path, data: bytes) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name[:16]}.", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
