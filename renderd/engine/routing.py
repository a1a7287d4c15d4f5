"""The page's only file server: the composition's directory on a private origin, nothing else.

Every request of the page (documents, iframes, workers, ``fetch``, ``import()``, CSS ``url()``,
fonts, media) is intercepted; a request on ORIGIN is answered from a regular file whose fully
resolved path lies inside the composition root (renderd.confine), every other one is refused.
Files served whole are held in memory on their way through the browser driver, so they are
capped (``max_asset_bytes``, the operator's --max-asset-size): a larger one fails the render with
one line naming it. Media are read by byte ranges of at most RANGE_CHUNK, whatever their size.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import mimetypes
from pathlib import Path
from typing import BinaryIO, Protocol
from urllib.parse import unquote, urlsplit

from playwright.async_api import Error as PlaywrightError
from playwright.async_api import Route

from renderd.composition import Composition
from renderd.confine import DEFAULT_MAX_ASSET_BYTES, asset_too_large_text, inside, open_inside
from renderd.engine.hyperframes import fonts as hf_fonts
from renderd.engine.hyperframes import runtime as hf_runtime
from renderd.engine.hyperframes.media_frames import URL_PREFIX as MEDIA_URL_PREFIX
from renderd.engine.hyperframes.media_frames import MediaFrames
from renderd.errors import AssetTooLarge, Refused, RenderdError

ORIGIN = "http://composition.renderd.invalid"
# Largest slice of a media file sent for one request (Chrome asks for the rest as it needs it).
RANGE_CHUNK = 4 << 20
_BLOCKED_KEPT = 100
log = logging.getLogger(__name__)


class Documents(Protocol):
    """Rewrites the HTML documents of a HyperFrames project (engine/hyperframes/document.py)."""

    def serve(self, path: Path, body: bytes) -> bytes:
        """Return the bytes to serve for HTML file ``path`` read as ``body``."""
        ...


def serve_path(root: Path, url: str) -> Path | None:
    """Map a request URL on ORIGIN to the resolved path inside ``root`` it names, or None.

    A directory stands for its index.html, itself resolved again (it may be a symlink). The
    result still has to be opened with renderd.confine.open_inside, which re-checks it.
    """
    parts = urlsplit(url)
    if f"{parts.scheme}://{parts.netloc}" != ORIGIN:
        return None
    candidate = inside(root, root / unquote(parts.path).lstrip("/"))
    if candidate is not None and candidate.is_dir():
        candidate = inside(root, candidate / "index.html")
    return candidate


def read_range(
    f: BinaryIO, size: int, header: str | None, limit: int | None = None
) -> tuple[int, bytes, dict[str, str]]:
    """Answer a request for an open media file of ``size`` bytes: (status, body, extra headers).

    Honours a single ``Range: bytes=a-b`` (206, at most RANGE_CHUNK bytes); without one the
    whole file is sent (200), which ``limit`` caps (AssetTooLarge). An unsatisfiable range gets 416.
    """
    base = {"accept-ranges": "bytes", "cache-control": "no-store"}
    spec = (header or "").strip().lower()
    first = last = -1
    if spec.startswith("bytes=") and "," not in spec:
        first_s, _, last_s = spec[len("bytes=") :].partition("-")
        try:
            if first_s:
                first = int(first_s)
                last = int(last_s) if last_s else size - 1
            else:  # suffix range: the last N bytes
                first, last = max(0, size - int(last_s)), size - 1
        except ValueError:
            first = -1
    if first < 0:
        if limit is not None and size > limit:
            raise AssetTooLarge(Path(), size, limit)  # the caller names the file
        return 200, f.read(size), base
    if first >= size or last < first:
        return 416, b"", {**base, "content-range": f"bytes */{size}"}
    last = min(last, size - 1, first + RANGE_CHUNK - 1)
    f.seek(first)
    body = f.read(last - first + 1)
    return 206, body, {**base, "content-range": f"bytes {first}-{first + len(body) - 1}/{size}"}


class ServeFailures:
    """The first request of a page that renderd's request handler failed on, and a flag to wake the loader."""

    def __init__(self) -> None:
        self.first: str | None = None
        self.event = asyncio.Event()

    def add(self, url: str, exc: Exception) -> None:
        """Record a request renderd could not answer (only the first one is kept)."""
        if self.first is None:
            text = str(exc).strip().splitlines()[0] if str(exc).strip() else ""
            what = str(exc) if isinstance(exc, RenderdError) else f"{type(exc).__name__}: {text}"
            self.first = f"cannot serve {urlsplit(url).path or url}: {what}"
            self.event.set()


class Router:
    """Answers the page's requests (``handle`` goes to ``page.route``); remembers what it refused."""

    def __init__(
        self,
        comp: Composition,
        *,
        documents: Documents | None = None,
        media: MediaFrames | None = None,
        max_asset_bytes: int = DEFAULT_MAX_ASSET_BYTES,
    ) -> None:
        self._root = comp.root
        self._documents = documents
        self._media = media
        self._limit = max_asset_bytes
        self.blocked: list[str] = []  # URLs refused (remote ones, and files not served)
        # Why the render must stop: an asset over the size limit (the page would only miss it).
        self.fatal: str | None = None
        self._runtime_url = f"{ORIGIN}{hf_runtime.RUNTIME_PATH}"
        self._fonts_prefix = f"{ORIGIN}{hf_fonts.FONTS_PATH}"
        self._media_url = f"{ORIGIN}{MEDIA_URL_PREFIX}"
        self._warned: set[str] = set()
        # A fault of this installation (its runtime or font files missing, say), not of the page.
        self.failures = ServeFailures()

    async def handle(self, route: Route) -> None:
        """Answer one intercepted request; a failure of renderd's own is recorded, never left hanging."""
        # Playwright only logs an exception raised here and leaves the request unanswered: the
        # page would wait for it until the ready timeout, which then hides the real error.
        try:
            await self._handle(route)
        except PlaywrightError:
            raise  # the route or page went away (a crash, a close): the page's own errors say so
        except Exception as exc:  # noqa: BLE001 - any failure to answer is the render's error
            self.failures.add(route.request.url, exc)
            with contextlib.suppress(PlaywrightError):
                await route.abort("failed")

    async def _handle(self, route: Route) -> None:
        url = route.request.url
        hyperframes = self._documents is not None
        if hyperframes and url == self._runtime_url:
            body = hf_runtime.runtime_source()
            await route.fulfill(status=200, body=body, headers={"content-type": "text/javascript"})
            return
        if hyperframes and url.startswith(self._fonts_prefix):
            font = hf_fonts.font_file(url[len(self._fonts_prefix) :])
            if font is None:
                await route.abort("blockedbyclient")
            else:
                await route.fulfill(status=200, body=font, headers={"content-type": "font/woff2"})
            return
        if hyperframes and url.startswith(self._media_url):
            # Reserved path: the render's extracted video frames and their plan.
            media = self._media
            served = await asyncio.to_thread(media.serve, urlsplit(url).path) if media is not None else None
            if served is None:
                await route.fulfill(status=404, body=b"")
            else:
                await route.fulfill(status=200, body=served[0], headers={"content-type": served[1]})
            return
        path = serve_path(self._root, url)
        if path is None:
            self._refuse(url, None)
            await route.abort("blockedbyclient")
            return
        try:
            status, body, headers = await asyncio.to_thread(self._answer, path, route.request.headers.get("range"))
        except Refused as exc:
            self._refuse(url, exc.reason)
            await route.abort("blockedbyclient")
            return
        except AssetTooLarge as exc:
            if self.fatal is None:
                self.fatal = asset_too_large_text(self._relative(path), exc.size, exc.limit)
            if len(self.blocked) < _BLOCKED_KEPT:
                self.blocked.append(url)
            await route.abort("blockedbyclient")
            return
        await route.fulfill(status=status, body=body, headers=headers)

    def _answer(self, path: Path, range_header: str | None) -> tuple[int, bytes, dict[str, str]]:
        """Read what to send for file ``path`` (blocking: runs in a thread)."""
        ctype = mimetypes.guess_type(path.name)[0] or "application/octet-stream"
        with open_inside(self._root, path) as (f, size):
            if ctype.startswith(("video/", "audio/")):
                # Chrome reads media by byte ranges; a whole large file per request would be
                # copied through the driver several times per page.
                status, body, headers = read_range(f, size, range_header, self._limit)
                return status, body, {"content-type": ctype, **headers}
            if size > self._limit:
                raise AssetTooLarge(path, size, self._limit)
            body = f.read(size)
        if self._documents is not None and path.suffix.lower() in (".html", ".htm"):
            body = self._documents.serve(path, body)
        return 200, body, {"content-type": ctype, "cache-control": "no-store"}

    def _relative(self, path: Path) -> str:
        try:
            return path.relative_to(self._root).as_posix()
        except ValueError:
            return str(path)

    def _refuse(self, url: str, reason: str | None) -> None:
        if len(self.blocked) < _BLOCKED_KEPT:
            self.blocked.append(url)
        # A file the composition names but may not read: say so once (a missing file is common).
        if url.startswith(ORIGIN) and url not in self._warned and reason != "No such file or directory":
            self._warned.add(url)
            log.warning("%s: refused: %s", unquote(urlsplit(url).path), reason or "outside the composition directory")
