"""`renderd prepare`: Google Fonts families renderd ships come from its own font files, with no
network; `--allow-missing` localises what it can and lists the rest.
"""

from __future__ import annotations

import hashlib
import json
import re
from pathlib import Path

import pytest
from conftest import ROOT, run_renderd

from renderd.prepare.gfonts import shipped_faces

FONTS = ROOT / "renderd" / "engine" / "vendor" / "hyperframes" / "fonts"
# httpx takes proxies from the environment: a closed local port stands for "no network".
NO_NETWORK = {"https_proxy": "http://127.0.0.1:9", "http_proxy": "http://127.0.0.1:9", "no_proxy": ""}

PAGE = """<!doctype html>
<html><head>
<link rel="preconnect" href="https://fonts.gstatic.com">
<link rel="stylesheet" href="https://fonts.googleapis.com/css2?family=Inter:wght@400;700&family=Open+Sans&display=swap">
{extra}
</head><body data-composition-id="main" data-width="160" data-height="120" data-duration="1">
<p style="font-family: Inter">Hello</p>
</body></html>
"""


def _comp(tmp_path: Path, extra: str = "") -> Path:
    comp = tmp_path / "comp"
    comp.mkdir()
    (comp / "index.html").write_text(PAGE.format(extra=extra))
    return comp


def test_shipped_google_fonts_are_localised_without_network(tmp_path: Path) -> None:
    comp = _comp(tmp_path)
    out = tmp_path / "prepared"
    env = {**NO_NETWORK, "RENDERD_CACHE_DIR": str(tmp_path / "cache")}
    r = run_renderd("prepare", comp, "-o", out, "--json", env=env)
    assert r.returncode == 0, r.stderr
    result = json.loads(r.stdout)
    assert result["sources"] == {"shipped": 4}, result  # the stylesheet and three faces
    html = (out / "index.html").read_text()
    assert "fonts.googleapis.com" not in html
    css_name = re.search(r'href="_renderd_assets/([^"]+\.css)"', html)
    assert css_name, html
    css = (out / "_renderd_assets" / css_name.group(1)).read_text()
    faces = re.findall(r"font-family: '([^']+)';\s*font-style: (\w+);\s*font-weight: (\d+);", css)
    assert faces == [("Inter", "normal", "400"), ("Inter", "normal", "700"), ("Open Sans", "normal", "400")]
    shipped = {
        "inter-latin-400-normal.woff2",
        "inter-latin-700-normal.woff2",
        "open-sans-latin-400-normal.woff2",
    }
    for url in re.findall(r"url\(([^)]+)\)", css):
        local = out / "_renderd_assets" / url
        assert local.is_file(), url
        original = next(n for n in shipped if url.endswith(n))
        assert hashlib.sha256(local.read_bytes()).digest() == hashlib.sha256((FONTS / original).read_bytes()).digest()
    assert len(re.findall(r"url\(", css)) == 3
    # The same with --offline: nothing here needs the network or the cache.
    r = run_renderd("prepare", comp, "--offline", env={"RENDERD_CACHE_DIR": str(tmp_path / "cache2")})
    assert r.returncode == 0, r.stderr


CSS1_FACES = ["Lato 400 normal", "Lato 700 normal", "Poppins 400 normal"]


@pytest.mark.parametrize(
    ("url", "faces"),
    [
        ("https://fonts.googleapis.com/css2?family=Inter", ["Inter 400 normal"]),
        ("https://fonts.googleapis.com/css2?family=Roboto:wght@700;900", ["Roboto 700 normal", "Roboto 900 normal"]),
        ("https://fonts.googleapis.com/css?family=Lato:400,bold|Poppins", CSS1_FACES),
        ("https://fonts.googleapis.com/css?family=Lato:400,700italic", None),  # italic not shipped
        ("https://fonts.googleapis.com/css2?family=Inter:wght@100..900", None),  # variable: not shipped
        ("https://fonts.googleapis.com/css2?family=Inter:wght@500", None),  # weight not shipped
        ("https://fonts.googleapis.com/css2?family=Inter:ital,wght@1,400", None),  # italic not shipped
        ("https://fonts.googleapis.com/css2?family=Arial", None),  # an alias of Inter, not a Google family
        ("https://fonts.googleapis.com/css2?family=Inter&family=Lobster", None),  # one of them not shipped
        ("https://example.com/css2?family=Inter", None),
    ],
)  # fmt: skip
def test_google_fonts_urls_answered_only_when_shipped_exactly(url: str, faces: list[str] | None) -> None:
    got = shipped_faces(url)
    assert (None if got is None else [f"{f.family} {f.weight} {f.style}" for f in got]) == faces


def test_allow_missing_localises_the_rest_and_lists_what_is_missing(tmp_path: Path) -> None:
    comp = _comp(
        tmp_path,
        '<link rel="stylesheet" href="https://example.invalid/missing.css">\n'
        '<script src="https://example.invalid/lib.js"></script>',
    )
    env = {"RENDERD_CACHE_DIR": str(tmp_path / "cache")}
    # Without the flag: refused as before, nothing written.
    r = run_renderd("prepare", comp, "-o", tmp_path / "refused", "--offline", env=env)
    assert r.returncode == 2 and "missing.css" in r.stderr and "lib.js" in r.stderr, r.stderr
    assert not (tmp_path / "refused").exists()
    out = tmp_path / "prepared"
    r = run_renderd("prepare", comp, "-o", out, "--offline", "--allow-missing", env=env)
    assert r.returncode == 0, r.stderr
    missing = [ln for ln in r.stderr.splitlines() if ln.startswith("renderd: missing: ")]
    assert len(missing) == 2, r.stderr
    assert "index.html:5: https://example.invalid/missing.css" in missing[0]
    assert "index.html:6: https://example.invalid/lib.js" in missing[1]
    assert "renderd: warning: 2 remote reference(s) could not be fetched" in r.stderr
    assert "Traceback" not in r.stderr
    assert r.stdout.strip() == str(out)
    html = (out / "index.html").read_text()
    # What could be had is local, what could not is left as written.
    assert "fonts.googleapis.com" not in html and "_renderd_assets/" in html
    assert 'href="https://example.invalid/missing.css"' in html and 'src="https://example.invalid/lib.js"' in html
    j = run_renderd("prepare", comp, "--offline", "--allow-missing", "--json", env=env)
    assert j.returncode == 0 and len(json.loads(j.stdout)["missing"]) == 2


TEXT_PAGE = """<!doctype html>
<html><head>{font}
<style>
  html, body {{ margin: 0; background: #fff; }}
  #root {{ width: 320px; height: 120px; }}
  p {{ margin: 20px; font: 700 40px 'Inter', monospace; color: #000; }}
</style>
</head><body>
<div id="root" data-start="0" data-duration="1" data-width="320" data-height="120" data-fps="30"><p>Hamburg 42</p></div>
</body></html>
"""
GOOGLE_LINK = '<link rel="stylesheet" href="https://fonts.googleapis.com/css2?family=Inter:wght@700&display=swap">'
LOCAL_FACE = (
    "<style>@font-face { font-family: 'Inter'; font-weight: 700; src: url(inter.woff2) format('woff2'); }</style>"
)


def _still(tmp_path: Path, name: str, font: str) -> bytes:
    from PIL import Image

    comp = tmp_path / name
    comp.mkdir()
    (comp / "index.html").write_text(TEXT_PAGE.format(font=font))
    (comp / "inter.woff2").write_bytes((FONTS / "inter-latin-700-normal.woff2").read_bytes())
    out = tmp_path / f"{name}.png"
    env = {**NO_NETWORK, "RENDERD_CACHE_DIR": str(tmp_path / "cache")}
    r = run_renderd("still", comp, "-o", out, "--frame", "0", env=env)
    assert r.returncode == 0, r.stderr
    with Image.open(out) as im:
        return im.convert("RGB").tobytes()


@pytest.mark.browser
def test_a_google_fonts_link_draws_the_shipped_face_without_network(tmp_path: Path) -> None:
    google = _still(tmp_path, "google", GOOGLE_LINK)
    local = _still(tmp_path, "local", LOCAL_FACE)
    fallback = _still(tmp_path, "fallback", "")
    assert google == local, "the prepared Google Fonts link must draw renderd's own Inter 700"
    assert google != fallback, "the text must not be drawn in the fallback font"
