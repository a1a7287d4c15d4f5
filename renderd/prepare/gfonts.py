"""Google Fonts stylesheets served from the font files renderd ships, without the network.

renderd vendors HyperFrames' deterministic fonts (latin subsets of Inter, Roboto, Montserrat ...,
``renderd/engine/vendor/hyperframes/fonts``). A composition that links
``https://fonts.googleapis.com/css2?family=Inter:wght@400;700`` gets a stylesheet with one
@font-face per requested face pointing at those files, as `renderd prepare` would have got from
Google, but the same bytes on every host and every day, and with no network at all.

Only a request renderd can answer exactly is answered: every family must be shipped under that
name (not an alias: Arial is not Inter), and every weight and style asked for must be shipped
(a variable range such as ``wght@100..900`` is not). Anything else goes to the network as before.
"""

from __future__ import annotations

import functools
import json
from dataclasses import dataclass
from importlib import resources
from urllib.parse import parse_qsl, urlsplit

GOOGLE_CSS_HOST = "fonts.googleapis.com"
# The URL a shipped font file is recorded under in the prepared copy's manifest.
SHIPPED_URL = "renderd:fonts/"
_DEFAULT_FACE = ("400", "normal")


@dataclass(frozen=True, slots=True)
class ShippedFace:
    """One @font-face of a served stylesheet: the family as the page names it, and a shipped file."""

    family: str
    weight: str
    style: str
    file: str


@functools.cache
def _faces() -> tuple[dict[str, dict[tuple[str, str], str]], str | None]:
    """Shipped faces by family name (lower case, spaces) -> {(weight, style): file}, and their unicode-range."""
    vendor = resources.files("renderd").joinpath("engine/vendor/hyperframes/fonts")
    data = json.loads(vendor.joinpath("fonts.json").read_text(encoding="utf-8"))
    # The alias table maps each shipped family's own name to itself ("open sans" -> open-sans);
    # the other aliases (arial -> inter) are substitutes, which a Google Fonts URL never asks for.
    names = {canonical: alias for alias, canonical in data["aliases"].items() if alias.replace(" ", "-") == canonical}
    table: dict[str, dict[tuple[str, str], str]] = {}
    for f in data["faces"]:
        name = names.get(f["canonical"])
        if name is not None:
            table.setdefault(name, {})[(f["weight"], f["style"])] = f["file"]
    return table, data.get("unicode_range")


def font_bytes(file: str) -> bytes:
    """Return the bytes of a shipped font file named by :func:`shipped_faces`."""
    return resources.files("renderd").joinpath("engine/vendor/hyperframes/fonts", file).read_bytes()


def _css2_faces(spec: str) -> list[tuple[str, str]] | None:
    """Faces of one css2 ``family`` value's axes (``Inter:ital,wght@0,400;1,700``), None if not exact."""
    if ":" not in spec:
        return [_DEFAULT_FACE]
    axes, _, tuples = spec.partition(":")[2].partition("@")
    names = axes.split(",")
    if not tuples or any(n not in ("ital", "wght") for n in names):
        return None
    faces = []
    for t in tuples.split(";"):
        values = dict(zip(names, t.split(","), strict=False))
        weight, ital = values.get("wght", "400"), values.get("ital", "0")
        if not weight.isdigit() or ital not in ("0", "1"):
            return None  # a range ("100..900") asks for a variable font
        faces.append((weight, "italic" if ital == "1" else "normal"))
    return faces


def _css1_faces(spec: str) -> list[tuple[str, str]] | None:
    """Faces of one css (v1) family (``Roboto:400,700italic``), None if not exact."""
    if ":" not in spec:
        return [_DEFAULT_FACE]
    faces = []
    for v in spec.partition(":")[2].split(","):
        v = v.strip().lower()
        italic = v.endswith(("italic", "i"))
        v = v.removesuffix("italic") if v.endswith("italic") else v.removesuffix("i")
        weight = {"": "400", "regular": "400", "b": "700", "bold": "700"}.get(v, v)
        if not weight.isdigit():
            return None
        faces.append((weight, "italic" if italic else "normal"))
    return faces


def shipped_faces(url: str) -> list[ShippedFace] | None:
    """Return the faces a Google Fonts stylesheet URL asks for, if renderd ships every one; else None."""
    parts = urlsplit(url)
    if (parts.hostname or "").lower() != GOOGLE_CSS_HOST or parts.path not in ("/css", "/css2"):
        return None
    specs = [v for k, v in parse_qsl(parts.query) if k == "family"]
    if parts.path == "/css":
        specs = [s for v in specs for s in v.split("|")]
    if not specs:
        return None
    table, _ = _faces()
    out: list[ShippedFace] = []
    for spec in specs:
        family = spec.partition(":")[0].strip()
        shipped = table.get(family.lower())
        faces = (_css2_faces if parts.path == "/css2" else _css1_faces)(spec)
        if shipped is None or faces is None:
            return None
        for weight, style in dict.fromkeys(faces):
            file = shipped.get((weight, style))
            if file is None:
                return None
            out.append(ShippedFace(family, weight, style, file))
    return out


def stylesheet(faces: list[ShippedFace], names: dict[str, str]) -> bytes:
    """Return the @font-face rules for ``faces``, each file named by ``names`` (file -> asset name)."""
    _, unicode_range = _faces()
    # The shipped files are latin subsets: other characters fall back as with Google's own
    # per-subset rules when a subset is missing, instead of drawing the face's .notdef box.
    ranged = f"  unicode-range: {unicode_range};\n" if unicode_range else ""
    rules = []
    for f in faces:
        family = f.family.replace("\\", "\\\\").replace("'", "\\'")
        rules.append(
            f"@font-face {{\n  font-family: '{family}';\n  font-style: {f.style};\n  font-weight: {f.weight};\n"
            f"  font-display: block;\n  src: url({names[f.file]}) format('woff2');\n{ranged}}}\n"
        )
    return "".join(rules).encode()
