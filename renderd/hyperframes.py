"""Read a HyperFrames project from its files, without a browser.

The engine needs a few facts before the page loads (is this a HyperFrames project, and at
which fps will it be rendered: the runtime quantises seeks to that rate from its first
line), and ``renderd inspect`` reports what a project contains. Both come from here: a
tolerant HTML scan of the entry file and of the sub-composition files it references.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from html.parser import HTMLParser
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

_MEDIA_TAGS = {"video", "audio"}
_URL_ATTRS = ("src", "href", "data-composition-src", "poster")
# Setting up the registry is no registration: many pages (and HyperFrames' own tests) carry this
# line and nothing else, and the HyperFrames CLI then waits out its 45 s timeout before rendering.
_REGISTRY_IDIOM = re.compile(r"(?:window\.)?__timelines\s*=\s*(?:window\.)?__timelines\s*\|\|\s*\{\s*\}")
_JS_TYPES = {"", "module", "text/javascript", "application/javascript", "text/ecmascript", "application/ecmascript"}
_CSS_URL = re.compile(r"""url\(\s*(['"]?)(https?://[^)'"\s]+)\1\s*\)|@import\s+(['"])(https?://[^'"]+)\3""")


@dataclass(frozen=True, slots=True)
class Element:
    """One element of interest with its attributes (names lower-cased)."""

    tag: str
    attrs: dict[str, str]
    line: int

    def get(self, name: str) -> str | None:
        """Return the attribute's value, or None when absent."""
        return self.attrs.get(name)


@dataclass(slots=True)
class HtmlScan:
    """What one HTML file holds that matters to rendering."""

    roots: list[Element] = field(default_factory=list)  # elements with data-composition-id
    hosts: list[Element] = field(default_factory=list)  # elements with data-composition-src
    clips: list[Element] = field(default_factory=list)  # elements with data-start
    media: list[Element] = field(default_factory=list)  # video/audio elements and their <source>s
    remote_urls: list[tuple[str, int]] = field(default_factory=list)  # (url, line)
    has_template: bool = False
    scripts: int = 0  # <script> elements
    # Whether an inline script of the file mentions window.__timelines beyond setting it up.
    inline_registers: bool = False
    script_srcs: list[str] = field(default_factory=list)  # src of each external script, as written
    # Whether a script of the file may register a timeline (read_project: inline or a local src
    # that mentions the registry; a src it cannot read counts as may).
    may_register: bool = False


class _Scanner(HTMLParser):
    def __init__(self) -> None:
        super().__init__(convert_charrefs=True)
        self.scan = HtmlScan()
        self._in_style = False
        self._in_script = False

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        a = {k.lower(): (v or "") for k, v in attrs}
        el = Element(tag, a, self.getpos()[0])
        s = self.scan
        if "data-composition-id" in a:
            s.roots.append(el)
        if "data-composition-src" in a:
            s.hosts.append(el)
        if "data-start" in a:
            s.clips.append(el)
        if tag in _MEDIA_TAGS:
            s.media.append(el)
        if tag == "template":
            s.has_template = True
        if tag == "script":
            s.scripts += 1
            # JSON, templates and the like are data, not code.
            self._in_script = a.get("type", "").strip().lower() in _JS_TYPES
            if self._in_script and a.get("src", "").strip():
                s.script_srcs.append(a["src"].strip())
        if tag == "source" and s.media and "src" in a:
            s.media.append(el)
        for name in _URL_ATTRS:
            v = a.get(name, "")
            if _is_remote(v):
                s.remote_urls.append((v, el.line))
        self._in_style = tag == "style"

    def handle_endtag(self, tag: str) -> None:
        if tag == "style":
            self._in_style = False
        if tag == "script":
            self._in_script = False

    def handle_data(self, data: str) -> None:
        if self._in_script and mentions_registry(data):
            self.scan.inline_registers = True
        if self._in_style:
            line = self.getpos()[0]
            for m in _CSS_URL.finditer(data):
                self.scan.remote_urls.append((m.group(2) or m.group(4), line + data.count("\n", 0, m.start())))


def mentions_registry(code: str) -> bool:
    """Whether script ``code`` refers to window.__timelines other than by creating it (may register)."""
    return "__timelines" in _REGISTRY_IDIOM.sub("", code)


def _is_remote(url: str) -> bool:
    u = url.strip()
    return u.startswith(("http://", "https://", "//"))


def scan_html(text: str) -> HtmlScan:
    """Scan HTML text (a document or a fragment, templates included)."""
    p = _Scanner()
    p.feed(text)
    p.close()
    return p.scan


@dataclass(frozen=True, slots=True)
class HyperFramesProject:
    """The static view of a HyperFrames project (entry file plus sub-composition files)."""

    composition_id: str
    root: Element
    entry: HtmlScan
    sub_files: dict[str, HtmlScan]  # composition-src as written -> scan (missing files absent)
    missing_sub_files: tuple[str, ...]
    # Hosts inside sub-composition files (a sub-composition that hosts another one), any depth,
    # each with the composition-src of the file that holds it.
    nested_hosts: tuple[tuple[str, Element], ...] = ()

    def never_registered(self) -> frozenset[str]:
        """Return the composition ids that no script of the project can register a timeline for.

        A sub-composition belongs to its file, an inline composition to the entry file; when no
        script of that file mentions window.__timelines (beyond ``__timelines = __timelines ||
        {}``), no timeline will come: the HyperFrames CLI waits out its 45 s page-ready timeout
        for those, then renders without them. The ids of files whose scripts may register are
        never in here, whichever file declares them too.
        """
        hosted = {h.get("data-composition-id") for h in self.entry.hosts}
        by_file: list[tuple[HtmlScan, set[str]]] = [
            (self.entry, {i for r in self.entry.roots if (i := r.get("data-composition-id")) and i not in hosted})
        ]
        for host in (*self.entry.hosts, *(h for _, h in self.nested_hosts)):
            scan = self.sub_files.get(host.get("data-composition-src") or "")
            if scan is not None:
                ids = {i for r in scan.roots if (i := r.get("data-composition-id"))}
                ids |= {i} if (i := host.get("data-composition-id")) else set()
                by_file.append((scan, ids))
        scripted = {i for scan, ids in by_file if scan.may_register for i in ids}
        return frozenset(i for _, ids in by_file for i in ids) - scripted

    @property
    def fps(self) -> str | None:
        """The root's data-fps as written, or None."""
        v = self.root.get("data-fps")
        return v.strip() if v and v.strip() else None

    def to_dict(self) -> dict[str, Any]:
        """Return a JSON-friendly summary (used by ``renderd inspect``)."""
        subs = []
        for host in (*self.entry.hosts, *(h for _, h in self.nested_hosts)):
            src = host.get("data-composition-src") or ""
            subs.append(
                {
                    "src": src,
                    "id": host.get("data-composition-id"),
                    "start": host.get("data-start"),
                    "duration": host.get("data-duration"),
                    "found": src not in self.missing_sub_files,
                }
            )
        media = [
            {"tag": m.tag, "src": m.get("src"), "start": m.get("data-start"), "file": f}
            for f, scan in (("", self.entry), *self.sub_files.items())
            for m in scan.media
            if m.get("src")
        ]
        remote = sorted({u for _, scan in (("", self.entry), *self.sub_files.items()) for u, _ in scan.remote_urls})
        return {
            "composition_id": self.composition_id,
            "sub_compositions": subs,
            "clips": len(self.entry.clips) + sum(len(s.clips) for s in self.sub_files.values()),
            "media": media,
            "remote_urls": remote,
        }


_TEMPLATE_CONTENT = re.compile(r"<template\b[^>]*>(.*)</template\s*>", re.S | re.I)
_BODY_CONTENT = re.compile(r"<body\b[^>]*>(.*)</body\s*>", re.S | re.I)


def composition_markup(text: str) -> str:
    """Return the markup a sub-composition file mounts: its ``<template>``'s content, else its body's."""
    m = _TEMPLATE_CONTENT.search(text) or _BODY_CONTENT.search(text)
    return m.group(1) if m else text


def _mark_registering(scan: HtmlScan, base: Path) -> None:
    """Set ``scan.may_register`` from its inline scripts and the local files its scripts load.

    Script sources resolve against the project directory ``base`` (the entry document's URL), as
    the runtime mounts sub-composition markup into the entry. A source that is remote, missing
    or outside the project may register, as far as anyone can tell before the page runs.
    """
    if scan.inline_registers:
        scan.may_register = True
        return
    for src in scan.script_srcs:
        rel = urlsplit(src).path
        path = (base / rel.lstrip("/")).resolve()
        if _is_remote(src) or not rel or not path.is_relative_to(base.resolve()) or not path.is_file():
            scan.may_register = True
            return
        if mentions_registry(path.read_text(encoding="utf-8", errors="replace")):
            scan.may_register = True
            return


def read_project(entry: Path) -> HyperFramesProject | None:
    """Return the HyperFrames view of ``entry``, or None if it has no composition root."""
    try:
        text = entry.read_text(encoding="utf-8", errors="replace")
    except OSError:
        return None
    scan = scan_html(text)
    if not scan.roots:
        return None
    _mark_registering(scan, entry.parent)
    root = scan.roots[0]
    subs: dict[str, HtmlScan] = {}
    missing: list[str] = []
    nested: list[tuple[str, Element]] = []
    base = entry.parent
    # Sub-composition files may host further ones; their sources are relative to the project, as
    # the runtime resolves them against the entry document. Each file is read once (cycles end).
    queue: list[tuple[str | None, Element]] = [(None, host) for host in scan.hosts]
    while queue:
        container, host = queue.pop(0)
        if container is not None:
            nested.append((container, host))
        src = host.get("data-composition-src") or ""
        rel = urlsplit(src).path
        if not rel or _is_remote(src) or src in subs or src in missing:
            continue
        path = (base / rel).resolve()
        if not path.is_relative_to(base.resolve()) or not path.is_file():
            missing.append(src)
            continue
        subs[src] = scan_html(path.read_text(encoding="utf-8", errors="replace"))
        _mark_registering(subs[src], base)
        queue += [(src, h) for h in subs[src].hosts]
    return HyperFramesProject(root.get("data-composition-id") or "", root, scan, subs, tuple(missing), tuple(nested))
