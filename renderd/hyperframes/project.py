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

from renderd.confine import read_text_inside

_MEDIA_TAGS = {"video", "audio"}
_URL_ATTRS = ("src", "href", "data-composition-src", "poster")
# Setting up the registry is no registration: many pages (and HyperFrames' own tests) carry this
# line and nothing else, and the HyperFrames CLI then waits out its 45 s timeout before rendering.
_REGISTRY_IDIOM = re.compile(r"(?:window\.)?__timelines\s*=\s*(?:window\.)?__timelines\s*\|\|\s*\{\s*\}")
# A registration: __timelines["id"] (or '…', `…`), __timelines.id, or a computed key.
_REGISTRATION = re.compile(
    r"""__timelines\s*(?:\[\s*(?:(["'`])(?P<quoted>[^"'`]*)\1\s*\]|(?P<computed>[^\s"'`\]]))"""
    r"""|\.\s*(?P<prop>[A-Za-z_$][\w$]*))"""
)
# A static or dynamic import's specifier (string literal): group "q" the quote, "spec" the text.
JS_IMPORT = re.compile(
    r"""(?:\bimport\s*(?:[\w$*{}\s,]+?\s*from\s*)?|\bexport\s*[\w$*{}\s,]+?\s*from\s*|\bimport\s*\(\s*)"""
    r"""(?P<q>["'])(?P<spec>[^"'\n]+)(?P=q)"""
)
# <script type> values a browser runs as JavaScript (anything else is data, or an import map).
JS_TYPES = {"", "module", "text/javascript", "application/javascript", "text/ecmascript", "application/ecmascript"}
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
    inline_code: list[str] = field(default_factory=list)  # text of the inline scripts
    script_srcs: list[str] = field(default_factory=list)  # src of each external script, as written
    # Set by read_project: the code of the inline scripts and of the local files the scripts load,
    # and whether any of it may register a timeline (mentions the registry, or a src it cannot read).
    script_code: str = ""
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
            self._in_script = a.get("type", "").strip().lower() in JS_TYPES
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
        if self._in_script:
            self.scan.inline_code.append(data)
            line = self.getpos()[0]
            self.scan.remote_urls += [(u, line + data.count("\n", 0, data.find(u))) for u in remote_imports(data)]
        if self._in_style:
            line = self.getpos()[0]
            for m in _CSS_URL.finditer(data):
                self.scan.remote_urls.append((m.group(2) or m.group(4), line + data.count("\n", 0, m.start())))


def remote_imports(code: str) -> list[str]:
    """The remote module specifiers that inline script ``code`` imports (as written)."""
    return [m["spec"] for m in JS_IMPORT.finditer(code) if _is_remote(m["spec"])]


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
        for host in self._all_hosts():
            scan = self.sub_files.get(host.get("data-composition-src") or "")
            if scan is not None:
                ids = {i for r in scan.roots if (i := r.get("data-composition-id"))}
                ids |= {i} if (i := host.get("data-composition-id")) else set()
                by_file.append((scan, ids))
        scripted = {i for scan, ids in by_file if scan.may_register for i in ids}
        return frozenset(i for _, ids in by_file for i in ids) - scripted

    def unnamed(self) -> frozenset[str]:
        """Return the composition ids that the project's scripts could register but never name.

        A script names an id by registering it literally: ``__timelines["id"]`` or
        ``__timelines.id``. HyperFrames' slide decks carry one composition per slide and register
        the root's timeline only; the HyperFrames CLI waits 45 s for the others, warns and
        renders. When any script registers under a computed key (``__timelines[el.id]``), every
        id may be meant, and none is in here. renderd waits for these only briefly (page.py).
        """
        ids = {i for r in self._all_roots() if (i := r.get("data-composition-id"))} - self.never_registered()
        code = "\n".join(scan.script_code for scan in (self.entry, *self.sub_files.values()))
        named: set[str] = set()
        for m in _REGISTRATION.finditer(code):
            if m["computed"]:
                return frozenset()
            named.add(m["quoted"] or m["prop"])
        return frozenset(ids - named)

    def _all_hosts(self) -> list[Element]:
        """Every sub-composition host: the entry's, then those inside sub-composition files."""
        return [*self.entry.hosts, *(h for _, h in self.nested_hosts)]

    def _all_roots(self) -> list[Element]:
        subs = (r for scan in self.sub_files.values() for r in scan.roots)
        return [*self.entry.roots, *self._all_hosts(), *subs]

    @property
    def fps(self) -> str | None:
        """The root's data-fps as written, or None."""
        v = self.root.get("data-fps")
        return v.strip() if v and v.strip() else None

    def to_dict(self) -> dict[str, Any]:
        """Return a JSON-friendly summary (used by ``renderd inspect``)."""
        subs = []
        for host in self._all_hosts():
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


def _read_scripts(scan: HtmlScan, base: Path) -> None:
    """Fill ``scan.script_code`` and ``scan.may_register`` from its inline and local scripts.

    Script sources resolve against the project directory ``base`` (the entry document's URL), as
    the runtime mounts sub-composition markup into the entry. A source that is remote, missing
    or outside the project may register, as far as anyone can tell before the page runs.
    """
    code = list(scan.inline_code)
    unreadable = False
    root = base.resolve()
    for src in scan.script_srcs:
        rel = urlsplit(src).path
        text = None if _is_remote(src) or not rel else read_text_inside(root, base / rel.lstrip("/"))
        if text is None:
            unreadable = True
            continue
        code.append(text)
    scan.script_code = "\n".join(code)
    scan.may_register = unreadable or mentions_registry(scan.script_code)


def read_project(entry: Path) -> HyperFramesProject | None:
    """Return the HyperFrames view of ``entry``, or None if it has no composition root."""
    # Only files inside the project directory are read, never through a symlink out of it.
    text = read_text_inside(entry.parent.resolve(), entry)
    if text is None:
        return None
    scan = scan_html(text)
    if not scan.roots:
        return None
    _read_scripts(scan, entry.parent)
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
        sub_text = read_text_inside(base.resolve(), base / rel)
        if sub_text is None:
            missing.append(src)
            continue
        subs[src] = scan_html(sub_text)
        _read_scripts(subs[src], base)
        queue += [(src, h) for h in subs[src].hosts]
    return HyperFramesProject(root.get("data-composition-id") or "", root, scan, subs, tuple(missing), tuple(nested))
