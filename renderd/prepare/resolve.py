"""Turn remote URLs into local assets: from the cache, the network, or an npm package.

Order for each URL: the asset cache; then (unless offline) the URL itself; then, for CDN URLs
of npm packages, ``npm pack`` (only npm's cache when offline). A Google Fonts stylesheet of
families renderd ships is answered from those font files before anything else (gfonts). Stylesheets are localised
recursively: their ``@import`` and ``url()`` references (fonts, images) become sibling assets
and the stylesheet's text is rewritten to name them, so its bytes (and name) depend only on
the bytes of everything it pulls in.
"""

from __future__ import annotations

import asyncio
import mimetypes
import re
from dataclasses import dataclass
from typing import TYPE_CHECKING
from urllib.parse import unquote, urlsplit

from renderd.errors import FetchFailed, NpmFailed, Problem
from renderd.netguard import AddressPolicy
from renderd.prepare import gfonts
from renderd.prepare.cache import AssetCache, Cached, sha256_hex
from renderd.prepare.cdn import npm_file_for
from renderd.prepare.model import FetchLimits
from renderd.prepare.npm import NpmResolver
from renderd.prepare.scan import scan_css

if TYPE_CHECKING:
    from renderd.prepare.fetch import Fetcher

_CSS_ACCEPT = "text/css,*/*;q=0.1"
_EXT_FOR_TYPE = {
    "font/woff2": ".woff2",
    "font/woff": ".woff",
    "font/ttf": ".ttf",
    "font/otf": ".otf",
    "application/font-woff": ".woff",
    "application/x-font-ttf": ".ttf",
    "text/javascript": ".js",
    "application/javascript": ".js",
    "image/svg+xml": ".svg",
}
_HAS_SUFFIX = re.compile(r"\.[A-Za-z0-9]{1,6}$")


@dataclass(frozen=True, slots=True)
class Resolved:
    """A localised URL: the file name it gets under the assets directory and the bytes written there."""

    url: str
    name: str
    data: bytes
    source: str  # "cache", "network", "npm" or "shipped" (renderd's own font files)


def apply_replacements(text: str, replacements: list[tuple[int, int, str]]) -> str:
    """Return ``text`` with each ``[start, end)`` span replaced (spans must not overlap)."""
    out: list[str] = []
    pos = 0
    for start, end, new in sorted(replacements):
        out.append(text[pos:start])
        out.append(new)
        pos = end
    out.append(text[pos:])
    return "".join(out)


def asset_name(url: str, data: bytes, content_type: str, is_css: bool) -> str:
    """Return ``<sha256[:16]>-<last URL segment>``, with an extension the engine can serve it by."""
    seg = unquote(urlsplit(url).path).rsplit("/", 1)[-1]
    seg = re.sub(r"[^A-Za-z0-9._-]+", "_", seg).strip("._-")[:80] or "asset"
    if is_css:
        if not seg.lower().endswith(".css"):
            seg += ".css"
    elif not _HAS_SUFFIX.search(seg):
        seg += _EXT_FOR_TYPE.get(content_type) or mimetypes.guess_extension(content_type or "") or ""
    return f"{sha256_hex(data)[:16]}-{seg}"


def _is_css(url: str, kind: str, content_type: str) -> bool:
    return kind == "stylesheet" or content_type == "text/css" or urlsplit(url).path.lower().endswith(".css")


class Resolver:
    """Resolve URLs once each per run; failures of nested references are kept in ``problems``."""

    def __init__(
        self,
        cache: AssetCache,
        npm: NpmResolver,
        *,
        offline: bool,
        limits: FetchLimits,
        allow: AddressPolicy | None = None,
    ) -> None:
        self.cache = cache
        self.npm = npm
        self.offline = offline
        self.limits = limits
        self.allow = allow or AddressPolicy()
        self.problems: list[Problem] = []
        self._tasks: dict[str, asyncio.Task[Resolved | str]] = {}
        self._fetcher: Fetcher | None = None
        self._edges: dict[str, set[str]] = {}  # stylesheet URL -> URLs it waits for
        self._shipped: dict[str, Resolved] = {}  # font files of stylesheets answered by gfonts

    def _http(self) -> Fetcher:
        # Created on the first cache miss only: httpx and its TLS setup cost ~100 ms, and a
        # prepare whose assets are all cached (every render after the first) needs neither.
        if self._fetcher is None:
            from renderd.prepare.fetch import Fetcher

            self._fetcher = Fetcher(self.limits, self.allow)
        return self._fetcher

    async def aclose(self) -> None:
        """Close the HTTP client, if one was needed."""
        if self._fetcher is not None:
            await self._fetcher.aclose()

    def resolved(self) -> list[Resolved]:
        """Return every URL resolved so far (nested ones included), in URL order."""
        done = [t.result() for t in self._tasks.values() if t.done() and not t.cancelled()]
        done += [r for url, r in self._shipped.items() if url not in self._tasks]
        return sorted((r for r in done if isinstance(r, Resolved)), key=lambda r: r.url)

    async def resolve(self, url: str, kind: str, parent: str | None = None) -> Resolved | str:
        """Return the localised asset for ``url`` (referenced by stylesheet ``parent``), or why it could not be had."""
        if parent is not None:
            # Stylesheet A waiting for B while B waits for A would never finish: refuse the edge
            # that closes a cycle (checked and added without an await in between).
            if url == parent or self._reaches(url, parent):
                return "stylesheets import each other in a cycle"
            self._edges.setdefault(parent, set()).add(url)
        task = self._tasks.get(url)
        if task is None:
            task = asyncio.create_task(self._resolve(url, kind))
            self._tasks[url] = task
        return await asyncio.shield(task)

    def _reaches(self, start: str, goal: str) -> bool:
        seen: set[str] = set()
        todo = [start]
        while todo:
            node = todo.pop()
            if node == goal:
                return True
            if node not in seen:
                seen.add(node)
                todo.extend(self._edges.get(node, ()))
        return False

    async def _resolve(self, url: str, kind: str) -> Resolved | str:
        faces = gfonts.shipped_faces(url)
        if faces is not None:
            return await asyncio.to_thread(self._shipped_fonts, url, faces)
        got = await self._bytes(url, kind)
        if isinstance(got, str):
            return got
        cached, source = got
        css = _is_css(url, kind, cached.content_type)
        data = await self._localise_css(url, cached.data) if css else cached.data
        return Resolved(url, asset_name(url, data, cached.content_type, css), data, source)

    def _shipped_fonts(self, url: str, faces: list[gfonts.ShippedFace]) -> Resolved:
        """The stylesheet of a Google Fonts URL renderd can answer from its own font files (blocking: reads them)."""
        names: dict[str, str] = {}
        for f in faces:
            if f.file not in names:
                font_url = f"{gfonts.SHIPPED_URL}{f.file}"
                data = gfonts.font_bytes(f.file)
                font = Resolved(font_url, asset_name(font_url, data, "font/woff2", False), data, "shipped")
                self._shipped[font_url] = font
                names[f.file] = font.name
        css = gfonts.stylesheet(faces, names)
        return Resolved(url, asset_name(url, css, "text/css", True), css, "shipped")

    async def _bytes(self, url: str, kind: str) -> tuple[Cached, str] | str:
        hit = await asyncio.to_thread(self.cache.lookup, url)
        if hit is not None:
            return hit, "cache"
        reasons: list[str] = []
        if not self.offline:
            try:
                data, ctype = await self._http().get(url, accept=_CSS_ACCEPT if kind == "stylesheet" else "*/*")
                await asyncio.to_thread(self.cache.store, url, data, ctype)
                return Cached(data, ctype), "network"
            except FetchFailed as exc:
                reasons.append(str(exc))
        else:
            reasons.append("not in the asset cache and --offline forbids the network")
        npm_file = npm_file_for(url)
        if npm_file is not None:
            try:
                data, path = await self.npm.read(npm_file)
            except NpmFailed as exc:
                reasons.append(str(exc))
            else:
                ctype = mimetypes.guess_type(path)[0] or ""
                await asyncio.to_thread(self.cache.store, url, data, ctype)
                return Cached(data, ctype), "npm"
        return "; ".join(reasons)

    async def _localise_css(self, url: str, data: bytes) -> bytes:
        # surrogateescape keeps any non-UTF-8 byte exactly as it was.
        text = data.decode("utf-8", "surrogateescape")
        found = scan_css(text, base=url)
        results = await asyncio.gather(*(self.resolve(r.url, r.kind, url) for r in found.refs))
        replacements: list[tuple[int, int, str]] = []
        for ref, res in zip(found.refs, results, strict=True):
            if isinstance(res, str):
                self.problems.append(Problem(url, ref.line, ref.url, res))
            else:
                # Assets are siblings in one directory, so the bare name is the relative URL.
                replacements.append((ref.start, ref.end, res.name + ref.fragment))
        return apply_replacements(text, replacements).encode("utf-8", "surrogateescape")
