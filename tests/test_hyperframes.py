"""HyperFrames projects render unchanged through the vendored HyperFrames runtime."""

from __future__ import annotations

import hashlib
import json
import shutil
from pathlib import Path

import pytest
from conftest import FIXTURES, run_renderd
from videotools import RGB, close, decode_frames, ffprobe, pixel

from renderd.engine.hyperframes import fonts as hf_fonts
from renderd.engine.hyperframes import runtime as hf_runtime
from renderd.hyperframes.project import read_project

PROJECT = FIXTURES / "hf-project"
W, H = 320, 240
GREY: RGB = (128, 128, 128)
RED: RGB = (255, 0, 0)
GREEN: RGB = (0, 255, 0)
BLUE: RGB = (0, 0, 255)
WHITE: RGB = (255, 255, 255)
ORANGE: RGB = (255, 128, 0)
YELLOW: RGB = (255, 255, 0)


def _at(frame: bytes, x: int, y: int) -> RGB:
    return pixel(frame, W, x, y)


@pytest.fixture(scope="module")
def project_frames(tmp_path_factory: pytest.TempPathFactory) -> list[bytes]:
    out = tmp_path_factory.mktemp("hf") / "out.mp4"
    r = run_renderd("render", PROJECT, "-o", out, "--chunks", "3", "--workers", "2", "--crf", "10")
    assert r.returncode == 0, r.stderr
    frames = decode_frames(out, W, H)
    assert len(frames) == 90
    return frames


# (frame, what is shown there): clip-a [0, 1) s, clip-b starts "clip-a + 0.5" = 1.5 s for 1 s,
# the sub-composition is mounted at 1 s for 1.5 s and moves its box 100 px in its first second.
@pytest.mark.parametrize(
    ("frame", "clip_a", "clip_b"),
    [(0, True, False), (29, True, False), (30, False, False), (44, False, False), (45, False, True),
     (74, False, True), (75, False, False)],
)  # fmt: skip
def test_timed_clips_appear_and_disappear(project_frames: list[bytes], frame: int, clip_a: bool, clip_b: bool) -> None:
    got = _at(project_frames[frame], 20, 20)
    want = RED if clip_a else GREEN if clip_b else GREY
    assert close(got, want), (frame, got, want)


@pytest.mark.parametrize(
    ("frame", "x"),
    [(29, None), (30, 0), (45, 50), (60, 100), (74, 100), (75, None)],
)
def test_sub_composition_from_template_runs_on_its_own_clock(
    project_frames: list[bytes], frame: int, x: int | None
) -> None:
    """The sub-composition's timeline is local: at 1.5 s it is 0.5 s in, so its box is at 50 px."""
    row = [_at(project_frames[frame], px, 100) for px in range(0, 160)]
    blue = [px for px, c in enumerate(row) if close(c, BLUE, 40)]
    if x is None:
        assert not blue, (frame, blue[:3])
    else:
        assert blue and abs(blue[0] - x) <= 1 and abs(blue[-1] - (x + 39)) <= 1, (frame, blue[:1], blue[-1:])


@pytest.mark.parametrize(("frame", "x"), [(0, 0), (15, 50), (30, 100), (45, 150), (60, 200), (85, 200)])
def test_css_and_waapi_animations_follow_the_composition_clock(project_frames: list[bytes], frame: int, x: int) -> None:
    for y, colour in ((180, ORANGE), (220, YELLOW)):
        assert close(_at(project_frames[frame], x + 20, y), colour, 30), (
            frame,
            y,
            _at(project_frames[frame], x + 20, y),
        )
        if x >= 45:
            assert close(_at(project_frames[frame], x - 5, y), GREY), (frame, y)


def test_root_timeline_registered_without_the_page_creating_the_registry(project_frames: list[bytes]) -> None:
    # y = 150 * t / 3: frame 30 (1 s) -> 50 px, frame 60 -> 100 px.
    for frame, y in ((0, 0), (30, 50), (60, 100)):
        assert close(_at(project_frames[frame], 300, y + 20), WHITE), frame
        if y:
            assert close(_at(project_frames[frame], 300, y - 5), GREY), frame


def test_rational_fps_override_reaches_the_runtime(tmp_path: Path) -> None:
    out = tmp_path / "ntsc.mp4"
    r = run_renderd("render", PROJECT, "-o", out, "--fps", "30000/1001", "--frames", "40:50")
    assert r.returncode == 0, r.stderr
    s = ffprobe(out, "-show_streams")["streams"][0]
    assert s["r_frame_rate"] == "30000/1001" and int(s["nb_frames"]) == 10
    # Frame 45 at 29.97 fps is t = 1.5015 s: clip-b (from 1.5 s) is already showing.
    frames = decode_frames(out, W, H)
    assert close(_at(frames[5], 20, 20), GREEN) and close(_at(frames[4], 20, 20), GREY)


def test_inspect_reports_the_project(tmp_path: Path) -> None:
    r = run_renderd("inspect", PROJECT, "--json")
    assert r.returncode == 0, r.stderr
    info = json.loads(r.stdout)
    assert (info["kind"], info["width"], info["height"], info["fps"], info["total_frames"]) == (
        "hyperframes", 320, 240, "30", 90
    )  # fmt: skip
    hf = info["hyperframes"]
    assert hf["runtime_version"] == hf_runtime.runtime_version()
    assert [s["src"] for s in hf["sub_compositions"]] == ["compositions/sub.html"]
    assert hf["remote_urls"] == []
    text = run_renderd("inspect", PROJECT)
    assert text.returncode == 0 and "frames: 90" in text.stdout and "compositions/sub.html" in text.stdout


def test_inspect_names_missing_sub_composition_and_remote_urls(tmp_path: Path) -> None:
    comp = tmp_path / "p"
    comp.mkdir()
    (comp / "index.html").write_text(
        '<html><head><script src="https://cdn.example.invalid/gsap.min.js"></script></head><body>'
        '<div data-composition-id="main" data-width="320" data-height="240" data-duration="1">'
        '<div data-composition-id="s" data-composition-src="nope/s.html" data-start="0" data-duration="1"></div>'
        "</div></body></html>"
    )
    r = run_renderd("inspect", comp, "--ready-timeout", "3")
    assert "nope/s.html (id s, start 0, duration 1)  MISSING" in r.stdout
    assert "https://cdn.example.invalid/gsap.min.js" in r.stdout and "renderd prepare" in r.stdout


def test_runtime_is_injected_once_before_head_ends() -> None:
    html = (
        "<html><head><script src='gsap.min.js'></script>"
        '<script src="https://cdn.example/hyperframe.runtime.iife.js"></script>'
        "<script>window.__renderReady = true;</script></head><body><script>x()</script></body></html>"
    )
    out = hf_runtime.inject_runtime(html)
    assert "cdn.example" not in out and "__renderReady" not in out
    assert out.count(hf_runtime.RUNTIME_PATH) == 1
    assert out.index("gsap.min.js") < out.index(hf_runtime.RUNTIME_PATH) < out.index("</head>") < out.index("x()")


def test_vendored_runtime_matches_its_recorded_checksum() -> None:
    data = hf_runtime.runtime_source()
    vendor = Path(hf_runtime.__file__).parents[1] / "vendor" / "hyperframes"
    assert hashlib.sha256(data).hexdigest() == (vendor / "SHA256SUMS").read_text().split()[0]
    assert (vendor / "VERSION").read_text().strip() == hf_runtime.runtime_version()
    assert "Apache License" in (vendor / "LICENSE").read_text()


def test_static_scan_finds_project_parts() -> None:
    project = read_project(PROJECT / "index.html")
    assert project is not None and project.composition_id == "main" and project.fps == "30"
    assert list(project.sub_files) == ["compositions/sub.html"] and not project.missing_sub_files
    assert read_project(FIXTURES / "frame-index-hook" / "index.html") is None


def test_duration_from_the_runtime_when_the_root_states_none(tmp_path: Path) -> None:
    comp = tmp_path / "p"
    shutil.copytree(PROJECT, comp)
    index = comp / "index.html"
    index.write_text(index.read_text().replace('data-start="0" data-duration="3"', 'data-start="0"', 1))
    r = run_renderd("inspect", comp, "--json")
    assert r.returncode == 0, r.stderr
    info = json.loads(r.stdout)
    # The root timeline's tween runs 3 s; the sub-composition ends at 2.5 s.
    assert (info["duration"], info["total_frames"]) == (3.0, 90)


def _text_page(directory: Path, family: str, *, hyperframes: bool, text: str = "Hamburgefonts 0123") -> Path:
    directory.mkdir()
    root = 'data-composition-id="main" data-no-timeline' if hyperframes else 'id="main"'
    (directory / "index.html").write_text(
        '<html><head><meta charset="utf-8"><style>body{margin:0;background:#fff}'
        f"#t{{font-family:{family};font-size:40px;color:#000;padding:20px}}</style></head><body>"
        f'<div {root} data-width="320" data-height="120" data-duration="1"><div id="t">{text}</div>'
        "</div></body></html>",
        encoding="utf-8",
    )
    return directory


def _first_frame(tmp_path: Path, comp: Path) -> bytes:
    out = tmp_path / f"{comp.name}.mp4"
    r = run_renderd("render", comp, "-o", out, "--frames", "0:1", "--crf", "0")
    assert r.returncode == 0, r.stderr
    return decode_frames(out, 320, 120)[0]


def test_hyperframes_fonts_are_the_clis_deterministic_faces(tmp_path: Path) -> None:
    """ "DejaVu Sans" in a HyperFrames project is drawn with Inter, as the HyperFrames CLI does."""
    dejavu = _first_frame(tmp_path, _text_page(tmp_path / "dejavu", '"DejaVu Sans"', hyperframes=True))
    inter = _first_frame(tmp_path, _text_page(tmp_path / "inter", "Inter", hyperframes=True))
    generic = _first_frame(tmp_path, _text_page(tmp_path / "generic", "sans-serif", hyperframes=True))
    plain = _first_frame(tmp_path, _text_page(tmp_path / "plain", '"DejaVu Sans"', hyperframes=False))
    assert dejavu == inter, "an alias is drawn with its canonical face"
    assert inter == generic, "a generic family gets Inter first"
    assert plain != dejavu  # outside HyperFrames projects the system font is used
    assert any(p < 128 for p in dejavu[::3]), "no text drawn"


def test_a_var_fallback_is_drawn_with_the_clis_faces(tmp_path: Path) -> None:
    """HyperFrames' apple-money-count block: ``font-family: var(--font-display, -apple-system, ...
    "Helvetica Neue", Arial, sans-serif)`` with --font-display declared nowhere. The CLI follows
    the fallback (Inter in front of -apple-system, Arial as Inter); renderd drew a system font.
    """
    inter = _first_frame(tmp_path, _text_page(tmp_path / "inter", "Inter", hyperframes=True))
    family = 'var(--font-display, -apple-system, BlinkMacSystemFont, "Helvetica Neue", Arial, sans-serif)'
    fallback = _first_frame(tmp_path, _text_page(tmp_path / "fallback", family, hyperframes=True))
    alias = 'var(--font-display, "DejaVu Sans")'
    aliased = _first_frame(tmp_path, _text_page(tmp_path / "aliased", alias, hyperframes=True))
    plain = _first_frame(tmp_path, _text_page(tmp_path / "plain", '"DejaVu Sans"', hyperframes=False))
    assert fallback == inter, "a generic family first in the fallback gets Inter in front"
    assert aliased == inter, "an alias in the fallback gets its canonical face"
    assert plain != inter


def test_characters_outside_the_embedded_faces_fall_back_as_in_the_cli(tmp_path: Path) -> None:
    """HyperFrames' message-thread-reveal block: emoji in an Inter paragraph, on a host without an
    emoji font. The CLI's embedded faces carry the latin subset's unicode-range, so Inter is not
    asked for them and the system font's empty box is drawn; renderd drew Inter's own "NO GLYPH"
    box (22.9 dB on those frames).
    """
    emoji = "\U0001f92f\U0001f440"
    hf = _first_frame(tmp_path, _text_page(tmp_path / "hf", "Inter", hyperframes=True, text=emoji))
    system = _first_frame(tmp_path, _text_page(tmp_path / "system", "sans-serif", hyperframes=False, text=emoji))
    # Both draw the system font's empty boxes, placed by different line metrics; Inter's boxes are
    # filled with their lettering (measured: 184 and 149 dark pixels, 942 with Inter's).
    dark_hf, dark_system = (sum(1 for v in f[::3] if v < 128) for f in (hf, system))
    assert 0 < dark_system and dark_hf < 2 * dark_system, (dark_hf, dark_system)


def test_var_fallbacks_are_followed_as_hyperframes_does() -> None:
    html = (
        '<style>#a{font-family: var(\n  --font-display,\n  -apple-system,\n  "Helvetica Neue",\n  Arial\n)}'
        ":root{--set: Georgia} h1{font-family: var(--set, Menlo), serif}"
        "h2{font-family: var(--outer, var(--inner, Menlo))}</style>"
    )
    assert hf_fonts.requested_families([html]) == {
        "helvetica neue": "Helvetica Neue",
        "arial": "Arial",
        "georgia": "Georgia",
        "menlo": "Menlo",
    }
    out = hf_fonts.normalize_generic_primary(html)
    # The fallback is trimmed, as HyperFrames' compiler writes it.
    assert 'font-family: var(--font-display, Inter, -apple-system,\n  "Helvetica Neue",\n  Arial)}' in out
    # A declared property decides by its own value; a fallback without a generic first is left alone.
    assert "font-family: var(--set, Menlo), serif" in out and "var(--outer, var(--inner, Menlo))" in out


def test_font_family_scan_and_generic_prefix() -> None:
    html = (
        "<style>@font-face{font-family:'Own Font';src:url(x.woff2)}"
        ":root{--f: 'Helvetica Neue', Arial}"
        "h1{font-family: var(--f), serif} p{font-family:'Own Font', Menlo} b{font-family: monospace}</style>"
        '<span style="font-family: sans-serif">x</span>'
    )
    assert hf_fonts.requested_families([html]) == {
        "helvetica neue": "Helvetica Neue",
        "arial": "Arial",
        "menlo": "Menlo",
    }
    css = hf_fonts.font_face_css([html])
    assert 'font-family: "Helvetica Neue";' in css and "inter-latin-700-normal.woff2" in css
    assert 'font-family: "Menlo";' in css and "jetbrains-mono-latin-400-normal.woff2" in css
    out = hf_fonts.normalize_generic_primary(html)
    assert "font-family: Inter, monospace" in out and "font-family: Inter, sans-serif" in out
    assert "font-family:'Own Font';src" in out and "font-family: var(--f), serif" in out


def _bold_text_page(directory: Path, rule: str) -> Path:
    directory.mkdir()
    (directory / "index.html").write_text(
        f"<html><head><style>body{{margin:0;background:#fff}}{rule}"
        "#t{font-family:Inter;font-size:31px;font-weight:bold;letter-spacing:-1px;color:#000;padding:20px}"
        '</style></head><body><div data-composition-id="main" data-no-timeline data-width="320" data-height="120" '
        'data-duration="1"><div id="t">Hamburgefonts 0123</div></div></body></html>'
    )
    return directory


def test_text_is_laid_out_with_geometric_precision_as_hyperframes_does(tmp_path: Path) -> None:
    """HyperFrames' compiler makes every element use text-rendering: geometricPrecision; so does renderd."""
    plain = _first_frame(tmp_path, _bold_text_page(tmp_path / "plain", ""))
    stated = _first_frame(tmp_path, _bold_text_page(tmp_path / "stated", "*{text-rendering:geometricPrecision}"))
    auto = _first_frame(tmp_path, _bold_text_page(tmp_path / "auto", "*{text-rendering:auto}"))
    assert plain == stated
    assert plain != auto, "Chrome's default lays this text out the same way; the check proves nothing"


def test_a_missing_sub_composition_file_is_named_at_once(tmp_path: Path) -> None:
    comp = tmp_path / "proj"
    shutil.copytree(PROJECT, comp)
    (comp / "compositions" / "sub.html").unlink()
    r = run_renderd("render", comp, "-o", tmp_path / "out.mp4", "--ready-timeout", "120")
    assert r.returncode == 2
    assert r.stderr.strip() == "renderd: error: index.html: sub-composition file not found: compositions/sub.html"
    assert not (tmp_path / "out.mp4").exists()


def test_an_unfilled_template_duration_is_quoted_as_written(tmp_path: Path) -> None:
    comp = tmp_path / "proj"
    shutil.copytree(PROJECT, comp)
    index = comp / "index.html"
    index.write_text(index.read_text().replace('data-duration="3"', 'data-duration="__VIDEO_DURATION__"', 1))
    r = run_renderd("render", comp, "-o", tmp_path / "out.mp4")
    assert r.returncode == 2
    assert r.stderr.strip() == "renderd: error: index.html: duration '__VIDEO_DURATION__' is not a number"


def test_an_iframe_animated_by_its_own_raf_follows_the_composition_clock(tmp_path: Path) -> None:
    """HyperFrames' iframe-render-compat: a same-origin iframe's rAF timestamps are composition time."""
    out = tmp_path / "out.mp4"
    r = run_renderd("render", FIXTURES / "iframe-raf", "-o", out, "--workers", "2", "--chunks", "2", "--crf", "0")
    assert r.returncode == 0, r.stderr
    frames = decode_frames(out, 160, 120)
    assert len(frames) == 60

    def box_x(frame: bytes) -> int | None:
        lit = [x for x in range(160) if min(pixel(frame, 160, x, 60)) > 128]
        return lit[0] if lit else None

    got = {i: box_x(frames[i]) for i in (0, 15, 30, 45, 59)}
    assert all(got[i] is not None and abs(got[i] - 2 * i) <= 1 for i in got), got


def test_a_project_without_scripts_renders_without_waiting_for_timelines(tmp_path: Path) -> None:
    """No script can register a timeline there (HyperFrames waits 45 s, then renders anyway)."""
    static = FIXTURES / "hf-static"
    project = read_project(static / "index.html")
    assert project is not None and project.never_registered() == {"main", "overlay"}
    out = tmp_path / "out.mp4"
    r = run_renderd("render", static, "-o", out, "--ready-timeout", "10", "--crf", "0")
    assert r.returncode == 0, r.stderr
    frames = decode_frames(out, 160, 120)
    assert len(frames) == 30
    assert close(pixel(frames[0], 160, 20, 20), GREEN, 8) and close(pixel(frames[29], 160, 120, 100), BLUE, 8)


def test_a_sub_composition_that_loads_gsap_again_nests_into_the_root_timeline(tmp_path: Path) -> None:
    """HyperFrames' vscode-theme-visualizer: each sub-composition file has its own <script src=gsap>.

    HyperFrames' render loads it once; loaded again, window.gsap was another GSAP, the
    sub-compositions' timelines could not be nested into the root's, and the root (no
    data-duration) stayed visible to the end instead of hiding once its 1.9 s timeline ended.
    """
    out = tmp_path / "out.mp4"
    r = run_renderd("render", FIXTURES / "hf-sub-gsap", "-o", out, "--crf", "0")
    assert r.returncode == 0, r.stderr
    frames = decode_frames(out, 160, 120)
    assert len(frames) == 60
    assert [close(pixel(f, 160, 150, 5), GREY, 8) for f in frames] == [True] * 57 + [False] * 3
    assert all(close(pixel(f, 160, 150, 5), BLUE, 8) for f in frames[57:])
    # Each sub-composition's box moves 3 px per frame from its host's start.
    assert close(pixel(frames[26], 160, 20 + 78, 60), GREEN, 8)
    assert close(pixel(frames[40], 160, 20 + 30, 60), YELLOW, 8)


def test_a_page_that_only_sets_up_the_registry_renders_without_waiting(tmp_path: Path) -> None:
    """HyperFrames' render-video-overlay-stretch: `__timelines = __timelines || {}` and no timeline."""
    comp = tmp_path / "proj"
    shutil.copytree(FIXTURES / "hf-static", comp)
    index = comp / "index.html"
    idiom = "<script>window.__timelines = window.__timelines || {};</script>"
    index.write_text(index.read_text().replace("</body>", idiom + "</body>"))
    out = tmp_path / "out.mp4"
    r = run_renderd("render", comp, "-o", out, "--ready-timeout", "10", "--crf", "0")
    assert r.returncode == 0, r.stderr
    frames = decode_frames(out, 160, 120)
    assert len(frames) == 30 and close(pixel(frames[0], 160, 20, 20), GREEN, 8)


def test_a_deck_whose_scripts_register_only_the_root_renders_with_a_warning(tmp_path: Path) -> None:
    """HyperFrames' startup-pitch and airbnb-deck: one inline composition per slide, the root's
    timeline registered only. HyperFrames waits 45 s, warns and renders; renderd waits briefly."""
    comp = tmp_path / "deck"
    shutil.copytree(FIXTURES / "hf-static", comp)
    index = comp / "index.html"
    shutil.copy(FIXTURES / "hf-chase" / "gsap.min.js", comp)
    slides = '<div data-composition-id="slide-1"></div><div data-composition-id="slide-2"></div>'
    script = (
        '<script src="gsap.min.js"></script><script>window.__timelines = window.__timelines || {};'
        ' window.__timelines["main"] = gsap.timeline({ paused: true });</script>'
    )
    text = index.read_text()
    host_end = 'data-track-index="0"></div>'
    assert host_end in text
    index.write_text(text.replace("</body>", script + "</body>").replace(host_end, host_end + slides))
    project = read_project(index)
    assert project is not None and project.unnamed() == {"slide-1", "slide-2"}
    out = tmp_path / "out.mp4"
    r = run_renderd("render", comp, "-o", out, "--ready-timeout", "20", "--crf", "0")
    assert r.returncode == 0, r.stderr
    warnings = [line for line in r.stderr.splitlines() if "never registered" in line]
    assert len(warnings) == 1, r.stderr
    assert "window.__timelines['slide-1'], window.__timelines['slide-2'] never registered" in warnings[0]
    frames = decode_frames(out, 160, 120)
    assert len(frames) == 30 and close(pixel(frames[0], 160, 20, 20), GREEN, 8)
    # A computed key could register any id: then every one is waited for, as before.
    index.write_text(index.read_text().replace('window.__timelines["main"]', "window.__timelines[k]"))
    project = read_project(index)
    assert project is not None and project.unnamed() == set()


def test_only_compositions_of_files_without_scripts_skip_the_timeline_wait(tmp_path: Path) -> None:
    comp = tmp_path / "proj"
    shutil.copytree(FIXTURES / "hf-static", comp)
    index = comp / "index.html"
    index.write_text(index.read_text().replace("</body>", "<script>window.__timelines.main = null;</script></body>"))
    project = read_project(index)
    assert project is not None and project.never_registered() == {"overlay"}
    overlay = comp / "compositions" / "overlay.html"
    original = overlay.read_text()
    # Scripts that cannot register: empty, setting up the registry only, data, a local library.
    (comp / "lib.js").write_text("window.lib = 1;")
    inert = (
        "<script></script><script>window.__timelines = window.__timelines || {};</script>"
        '<script type="application/json">{"__timelines": 1}</script><script src="lib.js"></script>'
    )
    overlay.write_text(original.replace("</template>", inert + "</template>"))
    project = read_project(index)
    assert project is not None and project.never_registered() == {"overlay"}
    # Scripts that may: inline, a local file that mentions the registry, a remote one.
    (comp / "reg.js").write_text('window.__timelines["overlay"] = tl;')
    for script in (
        "<script>const T = window.__timelines; T.overlay = tl;</script>",
        '<script src="reg.js?v=2"></script>',
        '<script src="https://cdn.example.com/x.js"></script>',
    ):
        overlay.write_text(original.replace("</template>", inert + script + "</template>"))
        project = read_project(index)
        assert project is not None and project.never_registered() == set(), script


def test_sub_compositions_hosting_others_mount_them_with_their_timelines(tmp_path: Path) -> None:
    """HyperFrames' nested-subcomp-depth-3, one level deeper: root -> level 2 -> level 3 -> level 4."""
    nested = FIXTURES / "hf-nested"
    project = read_project(nested / "index.html")
    assert project is not None
    assert [(f, h.get("data-composition-id")) for f, h in project.nested_hosts] == [
        ("compositions/level2.html", "level3"),
        ("compositions/level3.html", "level4"),
    ]
    assert set(project.sub_files) == {f"compositions/level{n}.html" for n in (2, 3, 4)}
    out = tmp_path / "out.mp4"
    r = run_renderd("render", nested, "-o", out, "--workers", "2", "--chunks", "2", "--ready-timeout", "15")
    assert r.returncode == 0, r.stderr
    frames = decode_frames(out, 160, 120)
    assert len(frames) == 60
    magenta = (255, 0, 255)

    def box_x(frame: bytes) -> int | None:
        lit = [x for x in range(160) if close(pixel(frame, 160, x, 60), magenta, 40)]
        return lit[0] if lit else None

    def cyan_y(frame: bytes) -> int | None:
        lit = [y for y in range(120) if close(pixel(frame, 160, 130, y), (0, 255, 255), 40)]
        return lit[0] if lit else None

    got = {i: (box_x(frames[i]), cyan_y(frames[i])) for i in (0, 15, 30, 59)}
    assert all(None not in xy and abs(xy[0] - i) <= 1 and abs(xy[1] - i) <= 1 for i, xy in got.items()), got
    assert close(pixel(frames[30], 160, 60, 20), GREY, 12) and close(pixel(frames[30], 160, 100, 20), (0, 0, 0), 12)
