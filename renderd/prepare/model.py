"""What `renderd prepare` works with: references found in files, localised assets, problems, the result."""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from renderd.errors import Problem

ASSETS_DIR = "_renderd_assets"
MANIFEST = f"{ASSETS_DIR}/manifest.json"
# Bumped whenever the prepared tree's layout or rewriting changes, so older prepared copies in
# the cache are not reused for the new layout.
FORMAT_VERSION = 1


@dataclass(frozen=True, slots=True)
class FetchLimits:
    """Bounds for one prepare run's downloads."""

    max_bytes: int = 256 << 20  # per asset: compositions may carry video
    timeout_s: float = 120.0  # per asset, whole transfer
    connect_timeout_s: float = 10.0
    parallel: int = 8


@dataclass(frozen=True, slots=True)
class Ref:
    """One remote URL as written in a file: where its text sits and what it points at.

    ``start``/``end`` delimit the URL text in the decoded file (what gets replaced); ``url`` is
    the absolute URL without its fragment, ``fragment`` (with ``#``) is kept on the local path.
    """

    url: str
    start: int
    end: int
    line: int
    kind: str  # "stylesheet" (parsed for more URLs), "module" (an import specifier) or "asset"
    fragment: str = ""
    # False for a URL a script only names (a string literal): it may never be loaded, so one
    # that cannot be fetched is left as written and reported, not an error.
    required: bool = True


@dataclass(frozen=True, slots=True)
class AssetRecord:
    """A localised asset as the prepared copy holds it."""

    url: str
    file: str  # name inside ASSETS_DIR
    sha256: str
    size: int
    source: str  # "cache", "network", "npm" or "shipped": where its bytes came from this time

    def manifest_entry(self) -> dict[str, Any]:
        """Return the manifest entry; ``source`` is left out so the tree does not depend on it."""
        return {"url": self.url, "file": f"{ASSETS_DIR}/{self.file}", "sha256": self.sha256, "bytes": self.size}


@dataclass(frozen=True, slots=True)
class PrepareResult:
    """A prepared composition: where it is and what was localised into it."""

    source: Path
    prepared: Path
    entry: Path
    references: int
    rewritten: tuple[str, ...]
    assets: tuple[AssetRecord, ...] = field(default=())
    reused: bool = False
    # URLs scripts name that could not be fetched: left remote (a render host cannot load them).
    unresolved: tuple[Problem, ...] = field(default=())
    # With --allow-missing: required references that could not be fetched, left remote.
    missing: tuple[Problem, ...] = field(default=())

    def unresolved_warning(self) -> str | None:
        """Return the warning naming the script URLs left remote (one per line), or None."""
        if not self.unresolved:
            return None
        lines = "".join(f"\n  {p}" for p in self.unresolved)
        return f"left remote (named in a script, could not be fetched; the page fails if it loads one):{lines}"

    @property
    def total_bytes(self) -> int:
        """Return the bytes of every localised asset."""
        return sum(a.size for a in self.assets)

    def sources(self) -> dict[str, int]:
        """Return how many assets came from each source (cache, network, npm, shipped)."""
        return dict(sorted(Counter(a.source for a in self.assets).items()))

    def to_dict(self) -> dict[str, Any]:
        """Return a JSON-friendly summary."""
        return {
            "source": str(self.source),
            "prepared": str(self.prepared),
            "entry": str(self.entry),
            "references": self.references,
            "rewritten": list(self.rewritten),
            "assets": [
                {"url": a.url, "file": a.file, "sha256": a.sha256, "bytes": a.size, "source": a.source}
                for a in self.assets
            ],
            "bytes": self.total_bytes,
            "sources": self.sources(),
            "reused": self.reused,
            "unresolved": [str(p) for p in self.unresolved],
            "missing": [str(p) for p in self.missing],
        }
