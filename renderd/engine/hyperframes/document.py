"""HyperFrames documents as the HyperFrames CLI hands them to the browser.

The entry document gets the deterministic fonts and the runtime; nested sub-composition hosts
are turned into templates or inlined (the runtime mounts hosts once); sub-compositions lose the
<script src> elements the entry document already loads. Every project file read here is read
from inside the composition root only (renderd.confine).
"""

from __future__ import annotations

import re
from pathlib import Path
from urllib.parse import urljoin, urlsplit

from renderd.composition import Composition
from renderd.confine import inside, read_text_inside
from renderd.engine.hyperframes import fonts as hf_fonts
from renderd.engine.hyperframes import runtime as hf_runtime
from renderd.engine.routing import ORIGIN
from renderd.hyperframes.project import HyperFramesProject, composition_markup

# An opening tag with data-composition-src: (tag start)(quote)(src)(rest of the tag).
_NESTED_HOST = re.compile(r"""(<[a-zA-Z][^>]*?)\sdata-composition-src\s*=\s*(["'])(.*?)\2([^>]*>)""")
# A whole <script src=...></script> element: group 2 is the src as written.
_SCRIPT_SRC = re.compile(r"""<script\b[^>]*?\ssrc\s*=\s*(["'])(.*?)\1[^>]*>\s*</script\s*>""", re.IGNORECASE)


class HyperFramesDocuments:
    """The HTML of a HyperFrames project as the HyperFrames CLI would hand it to the browser."""

    def __init__(self, comp: Composition, project: HyperFramesProject) -> None:
        self._comp = comp
        self._root = comp.root
        # The entry as served (a symlinked index.html is served as the file it resolves to).
        self._entry = inside(comp.root, comp.entry) or comp.entry
        base = comp.entry.parent
        # Only files inside the root: a sub-composition src leading out of it is never read.
        self._subs = {p for src in project.sub_files if (p := inside(self._root, base / src)) is not None}
        self._font_css: str | None = None
        self._custom: dict[str, str] | None = None
        self._subs_read: list[str] | None = None
        # A sub-composition that hosts another one: the runtime mounts the hosts it finds in the
        # document once, so a host that only appears inside mounted content would stay empty
        # (HyperFrames' own render path inlines them beforehand). renderd serves such a host
        # without its data-composition-src and puts the file's markup in the entry document as
        # <template id="ID-template">, which the runtime's inline-template pass then mounts. That
        # pass runs once too, so hosts one level further down get their file's markup inlined
        # into that template, as HyperFrames' render path does for every level.
        top = {h.get("data-composition-src") for h in project.entry.hosts}
        # Scripts the entry document loads itself. HyperFrames' render path hoists a
        # sub-composition's <script src> into the document only when the document does not load
        # it already; the runtime mounting the file would load it again, and a second GSAP
        # replaces window.gsap, so the sub-composition's timelines belong to another GSAP than
        # the root's and cannot be nested into it (vscode-theme-visualizer: its root stayed
        # visible past its timeline's end). renderd serves sub-compositions without them.
        entry_url = f"{ORIGIN}/{comp.entry_relative}"
        self._entry_scripts = {urljoin(entry_url, src) for src in project.entry.script_srcs}
        self._templated: dict[str, str] = {}  # composition-src -> id: a template in the entry
        self._inlined: dict[str, str] = {}  # composition-src -> id: inlined into its host
        for container, host in project.nested_hosts:
            src, cid = host.get("data-composition-src") or "", host.get("data-composition-id") or ""
            if not cid or src not in project.sub_files:
                continue
            chosen = self._templated if container in top else self._inlined
            if src not in self._templated and src not in self._inlined and cid not in chosen.values():
                chosen[src] = cid

    def serve(self, path: Path, body: bytes) -> bytes:
        """Return the bytes to serve for HTML file ``path``: the entry gets fonts and the runtime."""
        if path != self._entry and path not in self._subs:
            return body
        custom = self._project_custom_properties()
        html = hf_fonts.normalize_generic_primary(body.decode("utf-8", errors="replace"), custom)
        if path == self._entry:
            if self._font_css is None:
                # Families asked for anywhere in the project count (after the generic-family
                # rewrite, which asks for Inter): the sub-compositions are mounted into this document.
                texts = [html]
                texts += [hf_fonts.normalize_generic_primary(text, custom) for text in self._sub_texts()]
                self._font_css = hf_fonts.font_face_css(texts)
            # Only the entry document gets the runtime: sub-composition files are fetched and
            # mounted by the runtime itself.
            html = hf_fonts.inject_text_rendering(hf_fonts.inject_font_faces(html, self._font_css))
            html = hf_runtime.inject_runtime(html)
            html = self._with_nested_templates(html)
        else:
            html = self._without_entry_scripts(html, self._url_of(path))
            if self._templated:
                html = _NESTED_HOST.sub(
                    lambda m: self._unsourced(m) if m.group(3) in self._templated else m.group(0), html
                )
        return html.encode("utf-8")

    def _sub_texts(self) -> list[str]:
        """The sub-composition files as written, read once."""
        if self._subs_read is None:
            texts = (read_text_inside(self._root, p) for p in sorted(self._subs))
            self._subs_read = [t for t in texts if t is not None]
        return self._subs_read

    def _project_custom_properties(self) -> dict[str, str]:
        """The custom properties the entry and its sub-compositions declare (one document in HyperFrames' render)."""
        if self._custom is None:
            entry = read_text_inside(self._root, self._comp.entry) or ""
            self._custom = hf_fonts.custom_properties([entry, *self._sub_texts()])
        return self._custom

    def _url_of(self, path: Path) -> str:
        """The URL the page fetches ``path`` (a resolved file of the composition) from."""
        try:
            rel = path.relative_to(self._root)
        except ValueError:
            return path.as_uri()  # outside the served tree: never fetched from ORIGIN
        return f"{ORIGIN}/{rel.as_posix()}"

    def _without_entry_scripts(self, html: str, url: str) -> str:
        """``html`` of the file at ``url`` without the <script src> elements the entry document loads too."""

        def keep(m: re.Match[str]) -> str:
            return "" if urljoin(url, m.group(2).strip()) in self._entry_scripts else m.group(0)

        return _SCRIPT_SRC.sub(keep, html)

    @staticmethod
    def _unsourced(m: re.Match[str]) -> str:
        """A nested host's opening tag with data-composition-src renamed to data-composition-file."""
        quote = m.group(2)
        return f"{m.group(1)} data-composition-file={quote}{m.group(3)}{quote}{m.group(4)}"

    def _markup(self, src: str, seen: frozenset[str]) -> str:
        """The markup of sub-composition ``src``, with the deeper nested hosts' markup inlined."""
        path = inside(self._root, self._comp.entry.parent / urlsplit(src).path)
        text = read_text_inside(self._root, path) if path is not None else None
        if path is None or text is None:
            return ""  # outside the root or gone: the host stays empty
        text = self._without_entry_scripts(text, self._url_of(path))
        seen = seen | {src}

        def inline(m: re.Match[str]) -> str:
            inner = m.group(3)
            if inner not in self._inlined or inner in seen:
                return m.group(0)
            return self._unsourced(m) + self._markup(inner, seen)

        return _NESTED_HOST.sub(inline, composition_markup(text))

    def _with_nested_templates(self, html: str) -> str:
        templates = "".join(
            f'<template id="{cid}-template">{self._markup(src, frozenset())}</template>'
            for src, cid in self._templated.items()
        )
        at = html.lower().rfind("</body")
        return html + templates if at < 0 else html[:at] + templates + html[at:]
