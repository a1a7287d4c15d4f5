"""HyperFrames' deterministic fonts, applied to HyperFrames projects so text renders as there.

The HyperFrames CLI does not draw system fonts: a family it knows (Inter, Roboto, ...) or an
alias of one ("DejaVu Sans", Arial, Helvetica -> Inter; Menlo -> JetBrains Mono; Georgia -> EB
Garamond ...) gets @font-face rules pointing at fonts it embeds, and a declaration that starts
with a generic family (``font-family: sans-serif``) gets Inter put in front. Render hosts then draw
the same glyphs whatever fonts they have installed, and renderd matches the CLI's pixels. The
faces and the alias table are vendored from the same npm package as the runtime
(scripts/vendor-hf-runtime); a project's own @font-face rules always win.
"""

from __future__ import annotations

import functools
import json
import re
from dataclasses import dataclass
from importlib import resources

FONTS_PATH = "/__renderd/fonts/"
DETERMINISTIC_PRIMARY = "Inter"
_GENERIC = {
    "sans-serif", "serif", "monospace", "cursive", "fantasy", "system-ui", "ui-sans-serif", "ui-serif",
    "ui-monospace", "emoji", "math", "fangsong", "-apple-system", "blinkmacsystemfont",
}  # fmt: skip
_STYLE_BLOCK = re.compile(r"(<style\b[^>]*>)(.*?)(</style\s*>)", re.IGNORECASE | re.DOTALL)
_STYLE_ATTR = re.compile(r"""(\sstyle\s*=\s*)(["'])(.*?)\2""", re.IGNORECASE | re.DOTALL)
_FONT_FACE = re.compile(r"@font-face\s*\{[^}]*\}", re.IGNORECASE)
_DECL = re.compile(r"(?P<prop>font-family|--[A-Za-z0-9_-]+)(?P<sep>\s*:\s*)(?P<value>[^;{}]+)", re.IGNORECASE)
_FACE_FAMILY = re.compile(r"font-family\s*:\s*([^;}]+)", re.IGNORECASE)
_VAR_NAME = re.compile(r"--[A-Za-z0-9_-]+")
# HyperFrames follows var() through at most this many custom properties or fallbacks.
_MAX_VAR_DEPTH = 8


@dataclass(frozen=True, slots=True)
class Face:
    """One vendored font face."""

    canonical: str
    weight: str
    style: str
    file: str


@functools.cache
def _table() -> tuple[dict[str, str], dict[str, list[Face]], str | None]:
    vendor = resources.files("renderd.engine").joinpath("vendor/hyperframes/fonts")
    data = json.loads(vendor.joinpath("fonts.json").read_text(encoding="utf-8"))
    faces: dict[str, list[Face]] = {}
    for f in data["faces"]:
        faces.setdefault(f["canonical"], []).append(Face(f["canonical"], f["weight"], f["style"], f["file"]))
    return dict(data["aliases"]), faces, data.get("unicode_range")


def font_file(name: str) -> bytes | None:
    """Return the bytes of vendored font ``name`` (a bare file name), or None."""
    if "/" in name or not name.endswith(".woff2"):
        return None
    try:
        return resources.files("renderd.engine").joinpath("vendor/hyperframes/fonts", name).read_bytes()
    except OSError:
        return None


def split_families(value: str) -> list[str]:
    """Split a font-family value into family names, unquoted, ignoring commas inside parentheses."""
    out, depth, quote, cur = [], 0, "", []
    for ch in value:
        if quote:
            if ch == quote:
                quote = ""
            cur.append(ch)
            continue
        if ch in "'\"":
            quote = ch
        elif ch == "(":
            depth += 1
        elif ch == ")":
            depth = max(0, depth - 1)
        elif ch == "," and depth == 0:
            out.append("".join(cur))
            cur = []
            continue
        cur.append(ch)
    out.append("".join(cur))
    return [p.strip().strip("'\"").strip() for p in out if p.strip()]


def _outside_font_faces(css: str) -> str:
    return _FONT_FACE.sub("", css)


def _css_sources(html: str) -> list[str]:
    return [m.group(2) for m in _STYLE_BLOCK.finditer(html)] + [
        "*{" + m.group(3) + "}" for m in _STYLE_ATTR.finditer(html)
    ]


def _primary_var(value: str) -> tuple[str, str | None, str] | None:
    """Split a value that starts with ``var(--name[, fallback])`` into (name, fallback, rest after it)."""
    text = value.strip()
    if not text.lower().startswith("var("):
        return None
    depth = 0
    for i, ch in enumerate(text):
        if ch == "(":
            depth += 1
        elif ch == ")":
            depth -= 1
            if depth == 0:
                inner = text[4:i].strip()
                name, comma, fallback = inner.partition(",")
                if not _VAR_NAME.fullmatch(name.strip()):
                    return None
                return name.strip(), fallback if comma else None, text[i + 1 :]
    return None


def custom_properties(htmls: list[str]) -> dict[str, str]:
    """Return the custom properties (``--name: value``) the documents declare, the last one winning."""
    custom: dict[str, str] = {}
    for html in htmls:
        for css in _css_sources(html):
            for d in _DECL.finditer(_outside_font_faces(css)):
                if d.group("prop").startswith("--"):
                    custom[d.group("prop")] = d.group("value").strip()
    return custom


def resolve_families(value: str, custom: dict[str, str], depth: int = 0) -> list[str]:
    """Return the families a font-family value names, through a leading var() as HyperFrames does.

    A custom property the documents declare stands for its value, an undeclared one for its
    fallback (``var(--font-display, "Helvetica Neue", Arial)``), followed by what comes after.
    """
    families = split_families(value)
    var = _primary_var(value) if depth < _MAX_VAR_DEPTH else None
    if var is None:
        return families
    name, fallback, _rest = var
    source = custom.get(name) or fallback
    if source is None:
        return families
    primary = resolve_families(source, custom, depth + 1)
    return primary + families[1:] if primary else []


def requested_families(htmls: list[str]) -> dict[str, str]:
    """Return the families the documents ask for (lower-case -> as written), minus their own @font-faces."""
    custom = custom_properties(htmls)
    declared: list[str] = []
    existing: set[str] = set()
    for html in htmls:
        for css in _css_sources(html):
            for face in _FONT_FACE.finditer(css):
                m = _FACE_FAMILY.search(face.group(0))
                if m:
                    existing.update(f.lower() for f in split_families(m.group(1)))
            for d in _DECL.finditer(_outside_font_faces(css)):
                if not d.group("prop").startswith("--"):
                    declared.append(d.group("value").strip())
    requested: dict[str, str] = {}
    for value in declared:
        for fam in resolve_families(value, custom):
            low = fam.lower()
            if not low or low in _GENERIC or low.startswith("var("):
                continue
            requested.setdefault(low, fam)
    return {k: v for k, v in requested.items() if k not in existing}


def font_face_css(htmls: list[str]) -> str:
    """Return the @font-face rules HyperFrames would inject for these documents ('' if none)."""
    aliases, faces, unicode_range = _table()
    # The embedded faces are latin subsets: the CLI limits them to that range, so other
    # characters (emoji, arrows, CJK) fall back to the system's fonts, not to the face's .notdef.
    ranged = f"  unicode-range: {unicode_range};\n" if unicode_range else ""
    rules = []
    for low, fam in requested_families(htmls).items():
        canonical = aliases.get(low)
        if canonical is None:
            continue
        for face in faces.get(canonical, []):
            name = fam.replace("\\", "\\\\").replace('"', '\\"')
            rules.append(
                f'@font-face {{\n  font-family: "{name}";\n  src: url("{FONTS_PATH}{face.file}") format("woff2");\n'
                f"  font-style: {face.style};\n  font-weight: {face.weight};\n  font-display: block;\n{ranged}}}"
            )
    return "\n\n".join(rules)


def _prefix_generic(value: str, custom: dict[str, str]) -> str | None:
    var = _primary_var(value)
    if var is not None:
        # An undeclared custom property falls back to its fallback: that gets Inter in front.
        name, fallback, rest = var
        if custom.get(name) or fallback is None:
            return None
        inner = _prefix_generic(fallback, custom)
        return f"var({name}, {inner}){rest}" if inner else None
    families = split_families(value)
    if not families or families[0].lower() not in _GENERIC:
        return None
    return f"{DETERMINISTIC_PRIMARY}, {value.strip()}"


def _normalize_css(css: str, custom: dict[str, str]) -> str:
    # Declarations inside @font-face are not font choices; leave those blocks untouched.
    pieces, last = [], 0
    for face in _FONT_FACE.finditer(css):
        pieces.append(_normalize_decls(css[last : face.start()], custom))
        pieces.append(face.group(0))
        last = face.end()
    pieces.append(_normalize_decls(css[last:], custom))
    return "".join(pieces)


def _normalize_decls(css: str, custom: dict[str, str]) -> str:
    def repl(m: re.Match[str]) -> str:
        new = _prefix_generic(m.group("value"), custom)
        if new is None:
            return m.group(0)
        trailing = m.group("value")[len(m.group("value").rstrip()) :]
        return f"{m.group('prop')}{m.group('sep')}{new}{trailing}"

    return _DECL.sub(repl, css)


def normalize_generic_primary(html: str, custom: dict[str, str] | None = None) -> str:
    """Put Inter in front of font-family values that start with a generic family, as HyperFrames does.

    ``custom``: the custom properties in force (default: those ``html`` declares); a value that
    starts with var() of an undeclared one gets Inter in front of its fallback.
    """
    props = custom_properties([html]) if custom is None else custom
    html = _STYLE_BLOCK.sub(lambda m: m.group(1) + _normalize_css(m.group(2), props) + m.group(3), html)
    return _STYLE_ATTR.sub(lambda m: m.group(1) + m.group(2) + _normalize_css(m.group(3), props) + m.group(2), html)


TEXT_RENDERING_RULE = "html,body,*{text-rendering:geometricPrecision}"


def inject_text_rendering(html: str) -> str:
    """Make text use unhinted glyph advances, as HyperFrames' compiler does for every render.

    Chrome's default (``auto``) rounds advances in some builds and not in others (headless shell
    vs full Chrome), which shifts whole lines of text by a pixel or more; HyperFrames pins
    ``geometricPrecision`` as the first rule of ``<head>`` so a project's own rules still win.
    """
    if "data-hyperframes-text-rendering" in html:
        return html
    return _at_head_start(html, f'<style data-hyperframes-text-rendering="true">{TEXT_RENDERING_RULE}</style>')


def inject_font_faces(html: str, css: str) -> str:
    """Insert ``css`` as the first element of ``<head>`` (HyperFrames' place for it)."""
    if not css:
        return html
    return _at_head_start(html, f"<style data-renderd-deterministic-fonts>\n{css}\n</style>", after_tag="\n")


def _at_head_start(html: str, markup: str, *, after_tag: str = "") -> str:
    """Insert ``markup`` right after the ``<head>`` tag (``after_tag`` between them), else first."""
    m = re.search(r"<head\b[^>]*>", html, re.IGNORECASE)
    if m:
        return f"{html[: m.end()]}{after_tag}{markup}{html[m.end() :]}"
    return f"{markup}\n{html}"
