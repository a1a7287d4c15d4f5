"""Fetch remote assets over HTTP(S) with bounded time and size.

Requests carry a desktop Chrome User-Agent: Google Fonts chooses the font format by it, and
only a modern browser's gets woff2 (others get TrueType or even no ``@font-face`` ranges).
"""

from __future__ import annotations

import asyncio

import httpx

from renderd.errors import FetchFailed
from renderd.prepare.model import FetchLimits

BROWSER_USER_AGENT = (
    "Mozilla/5.0 (X11; Linux x86_64) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/126.0.0.0 Safari/537.36"
)


class Fetcher:
    """An HTTP client for one prepare run; close it with :meth:`aclose`."""

    def __init__(self, limits: FetchLimits | None = None) -> None:
        self.limits = limits or FetchLimits()
        self._sem = asyncio.Semaphore(self.limits.parallel)
        self._client = httpx.AsyncClient(
            follow_redirects=True,
            max_redirects=5,
            timeout=httpx.Timeout(self.limits.timeout_s, connect=self.limits.connect_timeout_s),
            headers={"User-Agent": BROWSER_USER_AGENT, "Accept": "*/*"},
            trust_env=True,  # honour HTTPS_PROXY/NO_PROXY of the coordinator
        )

    async def aclose(self) -> None:
        """Close the connections."""
        await self._client.aclose()

    async def get(self, url: str, *, accept: str = "*/*") -> tuple[bytes, str]:
        """Return the body of ``url`` and its content type (without parameters)."""
        async with self._sem:
            try:
                async with asyncio.timeout(self.limits.timeout_s):
                    return await self._get(url, accept)
            except TimeoutError:
                raise FetchFailed(f"no complete answer within {self.limits.timeout_s:g} s") from None
            except httpx.HTTPError as exc:
                raise FetchFailed(_http_reason(exc)) from None
            except (httpx.InvalidURL, ValueError) as exc:
                raise FetchFailed(f"not a valid URL: {exc}") from None

    async def _get(self, url: str, accept: str) -> tuple[bytes, str]:
        limit = self.limits.max_bytes
        async with self._client.stream("GET", url, headers={"Accept": accept}) as resp:
            if resp.status_code != 200:
                raise FetchFailed(f"HTTP {resp.status_code} {resp.reason_phrase}".strip())
            declared = resp.headers.get("content-length")
            if declared and declared.isdigit() and int(declared) > limit:
                raise FetchFailed(f"{int(declared)} bytes is more than the {limit >> 20} MiB limit")
            chunks: list[bytes] = []
            size = 0
            async for chunk in resp.aiter_bytes():
                size += len(chunk)
                if size > limit:
                    raise FetchFailed(f"more than the {limit >> 20} MiB limit")
                chunks.append(chunk)
            ctype = resp.headers.get("content-type", "").split(";")[0].strip().lower()
            return b"".join(chunks), ctype


def _http_reason(exc: httpx.HTTPError) -> str:
    text = str(exc).strip() or type(exc).__name__
    if isinstance(exc, httpx.ConnectError):
        return f"cannot connect: {text}"
    if isinstance(exc, httpx.TimeoutException):
        return f"timed out: {type(exc).__name__}"
    return text.splitlines()[0]
