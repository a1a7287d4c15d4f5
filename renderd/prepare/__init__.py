"""Offline preparation: localise a composition's remote scripts, stylesheets, fonts and media.

Render hosts have no internet and the engine serves a page only its own directory, so anything
a composition loads from a CDN or Google Fonts is fetched here once (or read from an npm cache),
kept in a content-addressed cache, and written into a prepared copy of the composition whose
URLs point at the local files. See docs/prepare.md.
"""

from renderd.errors import PrepareError, Problem
from renderd.prepare.build import PrepareOptions, needs_prepare, prepare_composition, scan_composition
from renderd.prepare.cache import CACHE_ENV, default_cache_root
from renderd.prepare.model import AssetRecord, FetchLimits, PrepareResult

__all__ = [
    "CACHE_ENV",
    "AssetRecord",
    "FetchLimits",
    "PrepareError",
    "PrepareOptions",
    "PrepareResult",
    "Problem",
    "default_cache_root",
    "needs_prepare",
    "prepare_composition",
    "scan_composition",
]
