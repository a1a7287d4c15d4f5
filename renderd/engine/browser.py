"""Launch headless Chromium through Playwright (the one module that knows Chromium's flags)."""

from __future__ import annotations

import asyncio
import os
import shutil
from dataclasses import dataclass, field
from pathlib import Path

from playwright.async_api import Browser, Playwright
from playwright.async_api import Error as PlaywrightError

from renderd.engine import sandbox
from renderd.errors import BrowserError

# Playwright's own browser download is not something render hosts can count on; the
# distribution's Chromium is.
CHROMIUM_CANDIDATES = ("/usr/bin/chromium", "chromium", "chromium-browser", "google-chrome", "chrome")
# The headless shell (Debian's chromium-headless-shell, Google's chrome-headless-shell) is the build
# that honours BeginFrame control: the cheapest capture path measured (docs/performance.md).
HEADLESS_SHELL_CANDIDATES = ("/usr/bin/chromium-headless-shell", "chromium-headless-shell", "chrome-headless-shell")
# A host's say on the headless shell: a path to use, or "off" to capture with Chromium screenshots
# even where the shell is installed (a host whose shell build differs from the farm's).
HEADLESS_SHELL_ENV = "RENDERD_HEADLESS_SHELL"

_COMMON_FLAGS = (
    "--no-first-run",
    "--no-default-browser-check",
    # Render hosts may have no network at all; these stop Chromium's own background traffic.
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--disable-quic",
    "--disable-default-apps",
    "--disable-extensions",
    "--metrics-recording-only",
    # A hidden or occluded page must keep rendering at full speed.
    "--disable-background-timer-throttling",
    "--disable-renderer-backgrounding",
    "--disable-backgrounding-occluded-windows",
    "--disable-features=Translate,MediaRouter,OptimizationHints,CalculateNativeWinOcclusion",
    # Same pixels on every host: no LCD subpixel text, no hinting, sRGB output.
    "--font-render-hinting=none",
    "--disable-lcd-text",
    "--force-color-profile=srgb",
    "--hide-scrollbars",
    "--mute-audio",
    "--autoplay-policy=no-user-gesture-required",
    # /dev/shm is tiny in many containers; Chromium then crashes on large frames.
    "--disable-dev-shm-usage",
)
# Plain DOM captures 3-4x faster without GL; WebGL content needs SwiftShader.
_NO_GL_FLAGS = (
    "--disable-gpu",
    # Draw only after every compositor stage (raster included) is done: one software composite
    # per captured frame instead of several partial ones. Measured on the 1080p bench: GPU-process
    # CPU 104 -> 65 ms/frame, byte-identical PNGs. Not yet checked with SwiftShader GL.
    "--run-all-compositor-stages-before-draw",
)
# Frames are drawn only on HeadlessExperimental.beginFrame (engine/beginframe.py); the rest makes
# each of those frames complete: every compositor stage on the main thread, no checkerboarding,
# no image-animation resync, no timeout that draws a blank frame while content loads.
_BEGIN_FRAME_FLAGS = (
    "--deterministic-mode",
    "--enable-begin-frame-control",
    "--disable-new-content-rendering-timeout",
    "--run-all-compositor-stages-before-draw",
    "--disable-threaded-animation",
    "--disable-threaded-scrolling",
    "--disable-checker-imaging",
    "--disable-image-animation-resync",
    "--enable-surface-synchronization",
)
_GL_FLAGS = ("--use-angle=swiftshader", "--enable-unsafe-swiftshader", "--ignore-gpu-blocklist")


@dataclass(frozen=True, slots=True)
class BrowserOptions:
    """How to start Chromium."""

    executable: str | None = None
    gl: bool = False
    # The headless shell under BeginFrame control (capture through beginFrame), else Chromium.
    begin_frame: bool = False
    # Device pixels per CSS pixel of every page (--scale). BeginFrame pictures are drawn at the
    # browser's own scale factor, not at a page's emulated one: the flag sets it for them.
    scale: float = 1.0
    launch_timeout_s: float = 60.0
    # Refuse to start Chromium when it cannot get its own empty network namespace (default: the
    # host's RENDERD_CONFINEMENT=require). Without it renderd warns once and renders unconfined.
    require_confinement: bool = field(default_factory=lambda: sandbox.policy() == "require")


def find_chromium(explicit: str | None = None, *, headless_shell: bool = False) -> str:
    """Return the Chromium (or headless shell) executable to use, or raise BrowserError naming what was tried."""
    candidates: tuple[str | None, ...] = (explicit,) if explicit else CHROMIUM_CANDIDATES
    if headless_shell and not explicit:
        chosen = os.environ.get(HEADLESS_SHELL_ENV, "").strip()
        if chosen.lower() == "off":
            raise BrowserError(f"the headless shell is turned off on this host ({HEADLESS_SHELL_ENV}=off)")
        candidates = (chosen,) if chosen else HEADLESS_SHELL_CANDIDATES
    for c in candidates:
        if not c:
            continue
        path = c if Path(c).is_absolute() else shutil.which(c)
        if path and Path(path).is_file():
            return str(path)
    tried = ", ".join(c for c in candidates if c)
    package = "chromium-headless-shell" if headless_shell else "chromium"
    raise BrowserError(f"Chromium not found (tried {tried}); install the '{package}' package or pass --chromium PATH")


def uses_begin_frame(browser: str, executable: str | None) -> bool:
    """Return whether ``browser`` ("auto", "chromium", "headless-shell") means BeginFrame capture here.

    ``auto`` takes the headless shell when this host has one: the executable given, if its name
    says it is a headless shell, else one of HEADLESS_SHELL_CANDIDATES (file lookups: blocking).
    """
    if browser != "auto":
        return browser == "headless-shell"
    if executable:
        return "headless-shell" in Path(executable).name or "headless_shell" in Path(executable).name
    try:
        find_chromium(headless_shell=True)
    except BrowserError:
        return False
    return True


def chromium_args(gl: bool, begin_frame: bool = False, scale: float = 1.0) -> list[str]:
    """Return the command-line flags for a render browser."""
    flags = (*_COMMON_FLAGS, *(_GL_FLAGS if gl else _NO_GL_FLAGS), *(_BEGIN_FRAME_FLAGS if begin_frame else ()))
    if begin_frame and scale != 1:
        flags = (*flags, f"--force-device-scale-factor={scale:g}")
    return list(dict.fromkeys(flags))


async def launch_browser(pw: Playwright, options: BrowserOptions) -> Browser:
    """Start one headless Chromium, with no network and its own sandbox where the host allows."""
    exe = find_chromium(options.executable, headless_shell=options.begin_frame)
    confinement = await asyncio.to_thread(sandbox.host_confinement, warn=not options.require_confinement)
    if options.require_confinement and not confinement.network_isolated:
        raise BrowserError(
            f"cannot confine Chromium to an empty network namespace ({confinement.problem}) "
            f"and {sandbox.POLICY_ENV}=require is set"
        )
    launched = await asyncio.to_thread(sandbox.confined_executable, exe, confinement)
    try:
        return await pw.chromium.launch(
            executable_path=launched,
            headless=True,
            args=chromium_args(options.gl, options.begin_frame, options.scale),
            # Playwright adds --no-sandbox itself when the sandbox is off: as uid 0 (root without
            # a user namespace) Chromium will not start otherwise.
            chromium_sandbox=confinement.sandbox,
            timeout=options.launch_timeout_s * 1000,
            handle_sigint=False,
            handle_sigterm=False,
            handle_sighup=False,
        )
    except PlaywrightError as exc:
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise BrowserError(f"cannot start Chromium ({exe}): {first}") from exc
