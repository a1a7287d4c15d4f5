"""Find the remote URLs a composition's HTML and CSS load, with the exact text span of each.

HTML is tokenised with the standard library's HTMLParser only to locate tags; the files are
never re-serialised, so a rewrite changes the URL text and nothing else. What counts as a load:
``src``/``srcset``/``poster`` of media and scripts, ``<link href>`` for stylesheets, preloads and
icons, SVG ``href``, ``<object data>``, CSS ``url()`` and ``@import`` in ``<style>``, ``style=""``
and CSS files; in inline scripts and local script files, the specifiers of ES module imports
(``import ... from``, ``export ... from``, ``import()``), the URLs of an import map, and string
literals holding a whole remote URL of a file type pages load (``fetch("https://.../x.json")``,
``d3.json(...)``, ``img.src = "..."``: data, images, media, fonts, models, scripts, styles).
Links to other pages, ``preconnect`` hints, namespaces such as ``http://www.w3.org/2000/svg``
and URLs built at run time are left alone.
"""

from __future__ import annotations

import bisect
import html
import posixpath
import re
from dataclasses import dataclass, field
from html.parser import HTMLParser
from pathlib import Path
from urllib.parse import unquote, urldefrag, urljoin, urlsplit

from renderd.hyperframes.project import JS_IMPORT, JS_TYPES
from renderd.prepare.model import Ref

_SKIP_PREFIXES = ("data:", "blob:", "about:", "javascript:", "#")
# Tag -> attributes whose value is a URL the page loads.
_URL_ATTRS: dict[str, tuple[str, ...]] = {
    "script": ("src",),
    "img": ("src", "srcset"),
    "source": ("src", "srcset"),
    "video": ("src", "poster"),
    "audio": ("src",),
    "track": ("src",),
    "iframe": ("src",),
    "embed": ("src",),
    "input": ("src",),
    "object": ("data",),
    "image": ("href", "xlink:href"),
    "use": ("href", "xlink:href"),
    "feimage": ("href", "xlink:href"),
}
_LINK_LOADS = {"stylesheet", "preload", "modulepreload", "prefetch", "icon", "apple-touch-icon", "mask-icon"}
_ATTR = re.compile(r"""([^\s"'<>/=]+)(?:\s*=\s*("[^"]*"|'[^']*'|[^\s"'>]+))?""")
_CSS_COMMENT = re.compile(r"/\*.*?\*/", re.S)
_CSS_IMPORT = re.compile(
    r"""@import\s+(?:url\(\s*(?:"(?P<a>[^"]*)"|'(?P<b>[^']*)'|(?P<c>[^)"'\s]*))\s*\)|"(?P<d>[^"]*)"|'(?P<e>[^']*)')""",
    re.I,
)
_CSS_URL = re.compile(r"""url\(\s*(?:"(?P<a>[^"]*)"|'(?P<b>[^']*)'|(?P<c>[^)"'\s]*))\s*\)""", re.I)
_JSON_STRING = re.compile(r'"(?P<spec>[^"\\\n]+)"')
# A string literal that is one whole absolute URL (template literals only without substitutions).
_JS_URL_LITERAL = re.compile(r"""(?P<q>["'`])(?P<spec>https?://[^"'`\s\\{}<>]+)(?P=q)""")
# File types a script loads by URL; other URLs in scripts are links, namespaces or API endpoints.
_SCRIPT_LOADS = frozenset(
    ".json .geojson .topojson .csv .tsv .txt .xml .svg .png .jpg .jpeg .gif .webp .avif .ico .bmp "
    ".mp4 .webm .mov .m4v .mp3 .wav .ogg .oga .m4a .aac .flac .woff .woff2 .ttf .otf .glb .gltf .bin "
    ".hdr .exr .ktx2 .obj .fbx .wasm .js .mjs .css .lottie".split()
)
_LOCAL_SPEC = ("./", "../", "/")
_SRCSET_ITEM = re.compile(r"\s*([^\s,][^\s]*?)(?:,|\s[^,]*(?:,|$)|$)")


def remote_url(raw: str, base: str | None = None) -> str | None:
    """Return the absolute http(s) URL ``raw`` loads (resolved against a remote ``base``), or None if local."""
    raw = raw.strip()
    if not raw or raw.lower().startswith(_SKIP_PREFIXES):
        return None
    if raw.startswith("//"):
        return "https:" + raw
    try:
        scheme = urlsplit(raw).scheme.lower()
    except ValueError:  # a malformed host such as "http://[...]": nothing a browser would load
        return None
    if scheme in ("http", "https"):
        return raw
    if scheme:
        return None
    if base is not None:
        return urljoin(base, raw)
    return None


def local_target(raw: str, file_dir: Path, root: Path) -> Path | None:
    """Return the file inside ``root`` a relative ``raw`` URL names (as the engine serves it), or None."""
    raw = raw.strip()
    parts = urlsplit(raw)
    if not raw or parts.scheme or parts.netloc or raw.lower().startswith(_SKIP_PREFIXES):
        return None
    path = unquote(parts.path)
    if not path:
        return None
    target = (root / path.lstrip("/")) if path.startswith("/") else (file_dir / path)
    target = target.resolve()
    return target if target.is_relative_to(root) and target.is_file() else None


class _Lines:
    """Map character offsets in a text to 1-based line numbers."""

    def __init__(self, text: str) -> None:
        self.starts = [0] + [m.end() for m in re.finditer("\n", text)]

    def line(self, offset: int) -> int:
        return bisect.bisect_right(self.starts, offset)

    def offset(self, line: int, col: int) -> int:
        return self.starts[line - 1] + col


def _make_ref(
    raw: str,
    start: int,
    end: int,
    lines: _Lines,
    kind: str,
    base: str | None,
    *,
    in_html: bool,
    required: bool = True,
) -> Ref | None:
    """Return a Ref for the URL text ``raw`` at ``[start, end)`` if it is remote (``in_html``: entities decoded)."""
    url = remote_url(html.unescape(raw) if in_html else raw, base)
    if url is None:
        return None
    bare, frag = urldefrag(url)
    return Ref(bare, start, end, lines.line(start), kind, f"#{frag}" if frag else "", required)


@dataclass(slots=True)
class CssScan:
    """Remote references and local ``@import`` targets found in a piece of CSS."""

    refs: list[Ref] = field(default_factory=list)
    local_imports: list[str] = field(default_factory=list)


def scan_css(
    text: str, *, base: str | None = None, offset: int = 0, lines: _Lines | None = None, in_html: bool = False
) -> CssScan:
    """Scan CSS ``text`` (placed at ``offset`` in its file) for ``@import`` and ``url()``.

    With ``base`` (the URL of a remote stylesheet) relative URLs are remote too; ``in_html`` says
    the CSS sits in an HTML file, where character references (``&amp;``) are decoded.
    """
    lines = lines or _Lines(text)
    # Blank out comments, keeping offsets, so commented-out URLs are not loads.
    clean = _CSS_COMMENT.sub(lambda m: " " * len(m.group()), text)
    out = CssScan()
    imports: list[tuple[int, int]] = []
    for m in _CSS_IMPORT.finditer(clean):
        group = next(g for g in "abcde" if m.group(g) is not None)
        s, e = m.span(group)
        imports.append(m.span())
        raw = text[s:e]
        ref = _make_ref(raw, offset + s, offset + e, lines, "stylesheet", base, in_html=in_html)
        if ref is not None:
            out.refs.append(ref)
        elif raw.strip() and not raw.strip().lower().startswith(_SKIP_PREFIXES):
            out.local_imports.append(raw)
    for m in _CSS_URL.finditer(clean):
        if any(a <= m.start() < b for a, b in imports):
            continue  # the argument of an @import, handled above
        group = next(g for g in "abc" if m.group(g) is not None)
        s, e = m.span(group)
        ref = _make_ref(text[s:e], offset + s, offset + e, lines, "asset", base, in_html=in_html)
        if ref is not None:
            out.refs.append(ref)
    return out


@dataclass(slots=True)
class JsScan:
    """Remote references and local module imports found in JavaScript."""

    refs: list[Ref] = field(default_factory=list)
    local_imports: list[str] = field(default_factory=list)


def scan_js(text: str, *, offset: int = 0, lines: _Lines | None = None) -> JsScan:
    """Scan JavaScript ``text`` (placed at ``offset`` in its file) for remote module imports and URL literals.

    Module specifiers get kind ``module``; a string literal that is a whole remote URL of a file
    type pages load (``_SCRIPT_LOADS``) gets ``stylesheet`` for CSS, else ``asset``, and is not
    required (naming a URL is not loading it). Never HTML-decoded: script text is raw.
    """
    lines = lines or _Lines(text)
    out = JsScan()
    taken: set[tuple[int, int]] = set()
    for m in JS_IMPORT.finditer(text):
        s, e = m.span("spec")
        spec = text[s:e]
        taken.add((s, e))
        ref = _make_ref(spec, offset + s, offset + e, lines, "module", None, in_html=False)
        if ref is not None:
            out.refs.append(ref)
        elif spec.startswith(_LOCAL_SPEC):
            out.local_imports.append(spec)
    for m in _JS_URL_LITERAL.finditer(text):
        s, e = m.span("spec")
        if (s, e) in taken:
            continue
        try:
            suffix = posixpath.splitext(urlsplit(text[s:e]).path.lower())[1]
        except ValueError:  # a malformed host such as "http://[...]": nothing a browser would load
            continue
        if suffix not in _SCRIPT_LOADS:
            continue
        kind = "stylesheet" if suffix == ".css" else "asset"
        ref = _make_ref(text[s:e], offset + s, offset + e, lines, kind, None, in_html=False, required=False)
        if ref is not None:
            out.refs.append(ref)
    return out


@dataclass(slots=True)
class HtmlScan:
    """Remote references in an HTML file and the local files it pulls in."""

    refs: list[Ref] = field(default_factory=list)
    local_html: list[str] = field(default_factory=list)  # data-composition-src values
    local_css: list[str] = field(default_factory=list)  # local stylesheet hrefs
    local_js: list[str] = field(default_factory=list)  # local script srcs and module imports


class _HtmlScanner(HTMLParser):
    def __init__(self, text: str) -> None:
        super().__init__(convert_charrefs=False)
        self.text = text
        self.lines = _Lines(text)
        self.out = HtmlScan()
        self._in_style = False
        self._script: str | None = None  # inside <script>: "js" or "importmap"

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        self._tag(tag, attrs)
        if tag == "style":
            self._in_style = True
        if tag == "script":
            kind = (dict(attrs).get("type") or "").strip().lower()
            self._script = "importmap" if kind == "importmap" else "js" if kind in JS_TYPES else None

    def handle_startendtag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        self._tag(tag, attrs)

    def handle_endtag(self, tag: str) -> None:
        if tag == "style":
            self._in_style = False
        if tag == "script":
            self._script = None

    def handle_data(self, data: str) -> None:
        offset = self.lines.offset(*self.getpos())
        if self._in_style:
            self._css(data, offset)
        elif self._script == "js":
            found = scan_js(data, offset=offset, lines=self.lines)
            self.out.refs.extend(found.refs)
            self.out.local_js.extend(found.local_imports)
        elif self._script == "importmap":
            for m in _JSON_STRING.finditer(data):
                s, e = m.span("spec")
                ref = _make_ref(data[s:e], offset + s, offset + e, self.lines, "module", None, in_html=False)
                if ref is not None:
                    self.out.refs.append(ref)

    def _css(self, css: str, offset: int) -> None:
        found = scan_css(css, offset=offset, lines=self.lines, in_html=True)
        self.out.refs.extend(found.refs)
        self.out.local_css.extend(found.local_imports)

    def _tag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        values = {k: v or "" for k, v in attrs}
        wanted = dict.fromkeys(_URL_ATTRS.get(tag, ()), "asset")
        if tag == "link":
            rel = set(values.get("rel", "").lower().split())
            if rel & _LINK_LOADS:
                is_css = "stylesheet" in rel or values.get("as", "").lower() == "style"
                wanted["href"] = "stylesheet" if is_css else "asset"
                if is_css and remote_url(values.get("href", "")) is None:
                    self.out.local_css.append(html.unescape(values.get("href", "")))
        if tag == "script" and values.get("src") and remote_url(values["src"]) is None:
            self.out.local_js.append(html.unescape(values["src"]))
        src = values.get("data-composition-src")
        if src and remote_url(src) is None:
            self.out.local_html.append(html.unescape(src))
        elif src:
            wanted["data-composition-src"] = "asset"
        if "style" not in values and not wanted:
            return
        raw_tag = self.get_starttag_text() or ""
        tag_start = self.lines.offset(*self.getpos())
        name_end = re.match(r"<\s*[^\s/>]+", raw_tag)
        for m in _ATTR.finditer(raw_tag, name_end.end() if name_end else 0):
            name, value = m.group(1).lower(), m.group(2)
            if value is None or (name not in wanted and name != "style"):
                continue
            quoted = value[:1] in ("'", '"')
            s = tag_start + m.start(2) + (1 if quoted else 0)
            e = tag_start + m.end(2) - (1 if quoted else 0)
            if name == "style":
                self._css(self.text[s:e], s)
            elif name == "srcset":
                self._srcset(s, e)
            else:
                ref = _make_ref(self.text[s:e], s, e, self.lines, wanted[name], None, in_html=True)
                if ref is not None:
                    self.out.refs.append(ref)

    def _srcset(self, s: int, e: int) -> None:
        for m in _SRCSET_ITEM.finditer(self.text, s, e):
            if not m.group(1):
                continue
            a, b = m.span(1)
            ref = _make_ref(self.text[a:b], a, b, self.lines, "asset", None, in_html=True)
            if ref is not None:
                self.out.refs.append(ref)


def scan_html(text: str) -> HtmlScan:
    """Scan HTML ``text`` for remote loads, sub-composition files and local stylesheets."""
    scanner = _HtmlScanner(text)
    scanner.feed(text)
    scanner.close()
    refs = sorted({(r.start, r.end): r for r in scanner.out.refs}.values(), key=lambda r: r.start)
    scanner.out.refs = refs
    return scanner.out
