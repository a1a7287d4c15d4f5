"""Fetch remote assets over HTTP(S) with bounded time and size, from allowed addresses only.

Requests carry a desktop Chrome User-Agent: Google Fonts chooses the font format by it, and
only a modern browser's gets woff2 (others get TrueType or even no ``@font-face`` ranges).

Where a request may connect is decided where the connection is made (see
``renderd.netguard``): direct connections go through :class:`GuardedBackend`, which
resolves the host once, refuses unless every address is allowed, and connects to the checked
address itself, so no later DNS answer can point it elsewhere. TLS still verifies the URL's host
name (httpcore takes SNI and the certificate name from the request, not from the address).
Every redirect hop is a new request and is checked the same way. Through a proxy from
``HTTPS_PROXY``/``HTTP_PROXY`` (the operator's), the proxy connects: the target is checked here
first (IP literals, and names that resolve here), and the proxy's own rules do the rest.
"""

from __future__ import annotations

import asyncio
from collections.abc import Iterable
from typing import Any
from urllib.parse import urlsplit

import httpcore
import httpx

from renderd.errors import AddressRefused, FetchFailed
from renderd.netguard import AddressPolicy, check_addresses, literal_address, resolve
from renderd.prepare.model import FetchLimits

BROWSER_USER_AGENT = (
    "Mozilla/5.0 (X11; Linux x86_64) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/126.0.0.0 Safari/537.36"
)
_SCHEMES = ("http", "https")


class GuardedBackend(httpcore.AsyncNetworkBackend):
    """An httpcore network backend that connects only to addresses the policy allows."""

    def __init__(self, policy: AddressPolicy) -> None:
        self._policy = policy
        self._inner = httpcore.AnyIOBackend()

    async def connect_tcp(
        self,
        host: str,
        port: int,
        timeout: float | None = None,
        local_address: str | None = None,
        socket_options: Iterable[Any] | None = None,
    ) -> httpcore.AsyncNetworkStream:
        """Resolve ``host``, check every address, and connect to the first checked one that answers."""
        try:
            async with asyncio.timeout(timeout):
                addresses = await asyncio.to_thread(resolve, host, port)
        except TimeoutError:
            raise httpcore.ConnectTimeout(f"resolving {host} took longer than {timeout:g} s") from None
        except OSError as exc:
            raise httpcore.ConnectError(f"cannot resolve {host}: {exc.strerror or exc}") from None
        check_addresses(self._policy, host, addresses)
        last: Exception = httpcore.ConnectError(f"{host} has no address")
        for ip in addresses:
            try:
                return await self._inner.connect_tcp(str(ip), port, timeout, local_address, socket_options)
            except httpcore.ConnectError as exc:
                last = exc
        raise last

    async def connect_unix_socket(
        self, path: str, timeout: float | None = None, socket_options: Iterable[Any] | None = None
    ) -> httpcore.AsyncNetworkStream:
        """Refuse: prepare never talks to a Unix socket."""
        raise AddressRefused(f"Unix socket {path}")

    async def sleep(self, seconds: float) -> None:
        """Sleep as the wrapped backend does (httpcore's retry back-off)."""
        await self._inner.sleep(seconds)


class GuardedTransport(httpx.AsyncHTTPTransport):
    """httpx's transport with :class:`GuardedBackend` for direct connections, or a target check before a proxy."""

    def __init__(
        self,
        policy: AddressPolicy,
        *,
        verify: Any = True,
        cert: Any = None,
        trust_env: bool = True,
        http1: bool = True,
        http2: bool = False,
        limits: httpx.Limits | None = None,
        proxy: httpx.Proxy | None = None,
    ) -> None:
        limits = limits or httpx.Limits(max_connections=100, max_keepalive_connections=20)  # httpx's default
        super().__init__(
            verify=verify, cert=cert, trust_env=trust_env, http1=http1, http2=http2, limits=limits, proxy=proxy
        )
        self._policy = policy
        self._proxied = proxy is not None
        if proxy is None:
            # httpx has no parameter for the network backend, so the pool it built (still unused)
            # is replaced by the same pool on ours; httpcore's constructor is public API.
            self._pool = httpcore.AsyncConnectionPool(
                ssl_context=httpx.create_ssl_context(verify=verify, cert=cert, trust_env=trust_env),
                max_connections=limits.max_connections,
                max_keepalive_connections=limits.max_keepalive_connections,
                keepalive_expiry=limits.keepalive_expiry,
                http1=http1,
                http2=http2,
                network_backend=GuardedBackend(policy),
            )

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        """Refuse a request the policy forbids; send the rest."""
        try:
            if request.url.scheme not in _SCHEMES:
                raise AddressRefused(f"{request.url.scheme}: is not http or https")
            if self._proxied:
                await _check_target(self._policy, request.url.host, request.url.port or 443)
            return await super().handle_async_request(request)
        except AddressRefused as exc:
            exc.url = exc.url or str(request.url)  # names the hop when a redirect led there
            raise


async def _check_target(policy: AddressPolicy, host: str, port: int) -> None:
    """Check a proxied request's host as far as this machine can (the proxy resolves it again)."""
    ip = literal_address(host)
    if ip is not None:
        check_addresses(policy, host, [ip])
        return
    try:
        addresses = await asyncio.wait_for(asyncio.to_thread(resolve, host, port), 10)
    except (OSError, TimeoutError):
        return  # proxy-only networks often cannot resolve public names: the proxy decides
    check_addresses(policy, host, addresses)


class GuardedClient(httpx.AsyncClient):
    """An httpx client whose every transport, the proxies from the environment included, is guarded."""

    def __init__(self, policy: AddressPolicy, **kwargs: Any) -> None:
        self._policy = policy  # read by the _init_* hooks, which httpx calls from __init__
        super().__init__(**kwargs)
        # The hooks are httpx internals: should a new httpx stop calling them, fail closed
        # instead of fetching through an unguarded transport.
        transports = [getattr(self, "_transport", None), *getattr(self, "_mounts", {None: None}).values()]
        if not isinstance(transports[0], GuardedTransport) or not all(
            t is None or isinstance(t, GuardedTransport) for t in transports
        ):
            raise RuntimeError("this httpx version bypasses renderd's address check; prepare cannot fetch safely")

    def _init_transport(self, *args: Any, **kwargs: Any) -> httpx.AsyncBaseTransport:
        kwargs.pop("transport", None)
        return GuardedTransport(self._policy, **kwargs)

    def _init_proxy_transport(self, proxy: httpx.Proxy, *args: Any, **kwargs: Any) -> httpx.AsyncBaseTransport:
        return GuardedTransport(self._policy, proxy=proxy, **kwargs)


class Fetcher:
    """An HTTP client for one prepare run; close it with :meth:`aclose`."""

    def __init__(self, limits: FetchLimits | None = None, policy: AddressPolicy | None = None) -> None:
        self.limits = limits or FetchLimits()
        self._sem = asyncio.Semaphore(self.limits.parallel)
        self._client = GuardedClient(
            policy or AddressPolicy(),
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
        if urlsplit(url).scheme.lower() not in _SCHEMES:
            raise FetchFailed("refused: only http and https URLs are fetched")
        async with self._sem:
            try:
                async with asyncio.timeout(self.limits.timeout_s):
                    return await self._get(url, accept)
            except TimeoutError:
                raise FetchFailed(f"no complete answer within {self.limits.timeout_s:g} s") from None
            except AddressRefused as exc:
                hop = f"redirected to {exc.url}: " if exc.url and exc.url != str(httpx.URL(url)) else ""
                raise FetchFailed(f"refused: {hop}{exc}") from None
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
