"""Which addresses prepare may fetch from: public internet addresses, plus what the operator allows.

Compositions are untrusted, and prepare runs outside the browser's empty network namespace: in
`renderd prepare`, in `renderd render`, and in the daemon at submit. A URL in a composition must
not make renderd fetch from loopback, the LAN or a cloud metadata address and draw the answer
into a video (server-side request forgery). So a host is fetched from only when every address it
resolves to is public, and the connection is made to an address that was checked (see
``renderd.prepare.fetch``): a second lookup, which a hostile DNS server could answer differently,
never decides where to connect.

An operator whose asset mirror is on a private network allows it by network or by host name:
``RENDERD_PREPARE_ALLOW=10.0.0.0/8,assets.lan`` for `renderd prepare`/`render`, ``[prepare] allow``
in the daemon's config. Nothing extra is allowed by default.

It lives outside renderd.prepare and needs neither httpx nor httpcore: the daemon's config loads it,
and every `renderd agent` run imports the config module.
"""

from __future__ import annotations

import ipaddress
import os
import re
import socket
from collections.abc import Iterable
from dataclasses import dataclass, field

from renderd.errors import AddressRefused, PrepareError

ALLOW_ENV = "RENDERD_PREPARE_ALLOW"

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address
IPNetwork = ipaddress.IPv4Network | ipaddress.IPv6Network

_HOST_NAME = re.compile(r"(?:[a-z0-9_](?:[a-z0-9_-]*[a-z0-9_])?\.)*[a-z0-9_](?:[a-z0-9_-]*[a-z0-9_])?")
# NAT64 (RFC 6052): the last 32 bits are the IPv4 address the gateway connects to.
_NAT64 = ipaddress.IPv6Network("64:ff9b::/96")
# Not global in IANA's special-purpose registries, yet is_global in some Python versions (3.11
# treats 192.0.0.8 and site-local fec0::1 as global): refused whatever Python says.
_NOT_PUBLIC: tuple[IPNetwork, ...] = (
    ipaddress.IPv4Network("192.0.0.0/24"),  # IETF protocol assignments
    ipaddress.IPv6Network("fec0::/10"),  # site-local (deprecated, still routed inside some sites)
    ipaddress.IPv6Network("64:ff9b:1::/48"),  # local-use NAT64
    ipaddress.IPv6Network("5f00::/16"),  # SRv6 SIDs
    ipaddress.IPv6Network("3fff::/20"),  # documentation
)


def is_public(ip: IPAddress) -> bool:
    """Return whether ``ip`` is a public internet address that prepare may connect to.

    ``is_global`` alone is not enough: Python counts multicast and some reserved ranges as global,
    and (before 3.13) does not look into IPv6 forms that carry an IPv4 address, such as
    ``::ffff:127.0.0.1`` or 6to4 ``2002:7f00:1::``; those are judged by the IPv4 address inside.
    """
    if isinstance(ip, ipaddress.IPv6Address):
        inner = ip.ipv4_mapped or ip.sixtofour
        if inner is None and ip in _NAT64:
            inner = ipaddress.IPv4Address(int(ip) & 0xFFFFFFFF)
        if inner is not None:
            return is_public(inner)
    if any(ip in net for net in _NOT_PUBLIC if net.version == ip.version):
        return False
    return ip.is_global and not (
        ip.is_multicast or ip.is_reserved or ip.is_loopback or ip.is_link_local or ip.is_unspecified
    )


def _parse_entry(entry: str) -> IPNetwork | str:
    text = entry.strip()
    try:
        return ipaddress.ip_network(text, strict=False)
    except ValueError:
        pass
    name = text.lower().removesuffix(".")
    if "/" not in text and _HOST_NAME.fullmatch(name):
        return name
    raise ValueError(f"{entry!r} is not an address, a network (CIDR such as 10.0.0.0/8) or a host name")


def check_entry(entry: str) -> str:
    """Return ``entry`` if it is a valid allow-list entry, else raise ValueError saying why."""
    _parse_entry(entry)
    return entry


@dataclass(frozen=True, slots=True)
class AddressPolicy:
    """Non-public addresses and host names the operator allows prepare to fetch from (default: none)."""

    networks: tuple[IPNetwork, ...] = ()
    hosts: frozenset[str] = field(default_factory=frozenset)

    @classmethod
    def parse(cls, entries: Iterable[str]) -> AddressPolicy:
        """Build a policy from addresses, CIDR networks and host names; raise ValueError on a bad entry."""
        networks: list[IPNetwork] = []
        hosts: set[str] = set()
        for entry in entries:
            parsed = _parse_entry(entry)
            if isinstance(parsed, str):
                hosts.add(parsed)
            else:
                networks.append(parsed)
        return cls(tuple(networks), frozenset(hosts))

    @classmethod
    def from_env(cls) -> AddressPolicy:
        """Return the policy of ``$RENDERD_PREPARE_ALLOW`` (comma-separated); raise PrepareError naming a bad entry."""
        raw = os.environ.get(ALLOW_ENV, "")
        try:
            return cls.parse(e for e in raw.split(",") if e.strip())
        except ValueError as exc:
            raise PrepareError(message=f"{ALLOW_ENV}: {exc}") from None

    def allows_host(self, host: str) -> bool:
        """Return whether the operator allows ``host`` by name, whatever it resolves to."""
        return host.lower().removesuffix(".") in self.hosts

    def allows_address(self, ip: IPAddress) -> bool:
        """Return whether prepare may connect to ``ip``: public, or in an allowed network."""
        if is_public(ip):
            return True
        forms = [ip] + ([ip.ipv4_mapped] if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped else [])
        return any(f in net for f in forms for net in self.networks if f.version == net.version)

    def refusal(self, host: str, ip: IPAddress) -> str | None:
        """Return why connecting to ``ip`` (what ``host`` resolved to) is refused, or None if it is allowed."""
        if self.allows_host(host) or self.allows_address(ip):
            return None
        if literal_address(host) is not None:
            return f"{_show(ip)} is not a public address"
        return f"{host} resolves to {_show(ip)}, not a public address"


def _show(ip: IPAddress) -> str:
    # Python before 3.13 prints ::ffff:127.0.0.1 as ::ffff:7f00:1, which hides the IPv4 address.
    if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped is not None:
        return f"::ffff:{ip.ipv4_mapped}"
    return str(ip)


def literal_address(host: str) -> IPAddress | None:
    """Return ``host`` as an IP address if it is written as one in the standard form, else None."""
    try:
        return ipaddress.ip_address(host.strip("[]"))
    except ValueError:
        return None


def resolve(host: str, port: int) -> list[IPAddress]:
    """Return every address ``host`` resolves to for TCP, in the resolver's order (blocking: run in a thread).

    The system resolver also reads the numeric shorthands a URL may carry (``2130706433``,
    ``0x7f.1``), so they are judged by the address they really are.
    """
    seen: list[IPAddress] = []
    for _family, _type, _proto, _canon, sockaddr in socket.getaddrinfo(host, port, type=socket.SOCK_STREAM):
        ip = ipaddress.ip_address(str(sockaddr[0]).split("%", 1)[0])
        if ip not in seen:
            seen.append(ip)
    return seen


def check_addresses(policy: AddressPolicy, host: str, addresses: list[IPAddress]) -> None:
    """Raise AddressRefused unless every address ``host`` resolved to is allowed."""
    for ip in addresses:
        reason = policy.refusal(host, ip)
        if reason is not None:
            raise AddressRefused(reason)


def is_loopback_name(host: str) -> bool:
    """Whether ``host`` (an IP address or a name, no port) names this machine only: ``localhost`` or a loopback IP."""
    if host.lower() == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False
