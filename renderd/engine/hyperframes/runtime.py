"""The vendored HyperFrames page runtime and how a HyperFrames page is prepared for it.

renderd renders HyperFrames projects with HyperFrames' own runtime (clip visibility,
sub-composition mounting, relative starts, the GSAP/CSS/WAAPI/anime.js/Lottie/three.js
adapters) instead of a re-implementation, so that a project looks the same here as with the
HyperFrames CLI. The runtime is the unmodified ``dist/hyperframe.runtime.iife.js`` of the npm
package ``hyperframes`` (Apache-2.0), vendored with scripts/vendor-hf-runtime; its checksum is
verified on first use so that a corrupted install fails loudly instead of rendering wrongly.
"""

from __future__ import annotations

import functools
import hashlib
import json
import re
from importlib import resources

from renderd.errors import RuntimeMissing as RuntimeMissing
from renderd.frames import Fps

# Served on the page's private origin; a composition has no file there (the path is ours).
RUNTIME_PATH = "/__renderd/hyperframe.runtime.iife.js"
_VENDOR = "vendor/hyperframes"
_RUNTIME_FILE = "hyperframe.runtime.iife.js"

# Projects exported from HyperFrames Studio may carry their own copy of the runtime (or its
# bootstrap flags); two runtimes in one page fight over the timeline, so those are removed,
# as the HyperFrames producer does.
_SCRIPT_BLOCK = re.compile(r"<script\b[^>]*>.*?</script\s*>", re.IGNORECASE | re.DOTALL)
_RUNTIME_SRC_MARKERS = (
    "hyperframe.runtime.iife.js",
    "hyperframes-runtime.modular.inline.js",
    "hyperframe-runtime.modular-runtime.inline.js",
    "data-hyperframes-runtime",
)
_RUNTIME_INLINE_MARKERS = (
    "__hyperframeRuntimeBootstrapped",
    "__hyperframeRuntime",
    "__hyperframeRuntimeTeardown",
    "__HF_EXPORT_RENDER_SEEK_CONFIG",
    "window.__player =",
)
_RUNTIME_FLAG_ONLY = re.compile(
    r"<script\b[^>]*>\s*window\.__(?:player|render)Ready\s*=\s*(?:true|false)\s*;?\s*</script\s*>", re.IGNORECASE
)


@functools.cache
def runtime_version() -> str:
    """Return the version of the ``hyperframes`` package the runtime was taken from."""
    return _vendor_text("VERSION").strip()


@functools.cache
def runtime_source() -> bytes:
    """Return the runtime's bytes, verified against the recorded sha256."""
    data = _vendor_bytes(_RUNTIME_FILE)
    expected = _vendor_text("SHA256SUMS").split()[0]
    actual = hashlib.sha256(data).hexdigest()
    if actual != expected:
        raise RuntimeMissing(
            f"vendored HyperFrames runtime {_RUNTIME_FILE} has sha256 {actual[:12]}, expected {expected[:12]}; "
            "reinstall renderd or run scripts/vendor-hf-runtime"
        )
    return data


def _vendor_bytes(name: str) -> bytes:
    try:
        return resources.files("renderd.engine").joinpath(_VENDOR, name).read_bytes()
    except OSError:
        raise RuntimeMissing(f"vendored HyperFrames runtime file {name} is missing; reinstall renderd") from None


def _vendor_text(name: str) -> str:
    return _vendor_bytes(name).decode("utf-8")


def render_config_script(fps: Fps) -> str:
    """Return the script that puts the runtime in render mode at ``fps`` (runs before page scripts)."""
    config = {
        # The producer's defaults: seek by the preview phase, quantised to the render rate.
        "mode": "preview-phase",
        "diagnostics": False,
        "step": 1 / 120,
        "offsetFraction": 0.5,
        "fps": float(fps.fraction),
        "fpsSource": "render-options",
        "owner": "runtime",
    }
    return (
        f"globalThis.__HF_RENDER_CAPTURE_MODE = true;\nwindow.__HF_EXPORT_RENDER_SEEK_CONFIG = {json.dumps(config)};\n"
    )


def strip_embedded_runtime(html: str) -> str:
    """Remove copies of the runtime (and its bootstrap flags) a project carries itself."""

    def keep(m: re.Match[str]) -> str:
        block = m.group(0)
        lowered = block.lower()
        if any(marker in lowered for marker in _RUNTIME_SRC_MARKERS):
            return ""
        if any(marker in block for marker in _RUNTIME_INLINE_MARKERS):
            return ""
        return block

    return _RUNTIME_FLAG_ONLY.sub("", _SCRIPT_BLOCK.sub(keep, html))


def inject_runtime(html: str) -> str:
    """Return the entry document with the runtime loaded at the end of ``<head>``.

    After the author's head scripts (GSAP and friends, loaded in <head> by convention) and
    before the body's scripts, which is where the HyperFrames producer puts it.
    """
    html = strip_embedded_runtime(html)
    tag = f'<script src="{RUNTIME_PATH}"></script>'
    lowered = html.lower()
    i = lowered.find("</head>")
    if i >= 0:
        return f"{html[:i]}{tag}\n{html[i:]}"
    j = lowered.find("<body")
    if j >= 0:
        return f"{html[:j]}{tag}\n{html[j:]}"
    return f"{tag}\n{html}"
