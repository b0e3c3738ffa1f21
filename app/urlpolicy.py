"""Where a callback may be sent: ``http``/``https`` URLs whose host resolves to public addresses.

A callback URL is a request the service makes on a client's behalf, so without a policy a
client could aim it at the service's own network (RabbitMQ, the Docker host, a cloud
metadata address). :func:`parse` checks the URL's form (pure); :func:`check` resolves its host
with the event loop's ``getaddrinfo`` and refuses loopback, link-local, private,
unspecified, multicast and reserved addresses unless the operator allowed their range
(``RUNBOX_CALLBACK_ALLOW_CIDRS``). Every address the name resolves to must pass, and the
caller gets them back: the gateway checks at submission, and the sender checks again at
delivery and connects to a checked address, so a name that changes its answer (DNS
rebinding) cannot redirect a delivery.
"""

from __future__ import annotations

import asyncio
import ipaddress
import socket
from collections.abc import Iterable
from dataclasses import dataclass
from urllib.parse import SplitResult, urlsplit

MAX_URL_LENGTH = 2048
Address = ipaddress.IPv4Address | ipaddress.IPv6Address
Network = ipaddress.IPv4Network | ipaddress.IPv6Network


class UrlRefused(ValueError):
    """The URL may not be called; the message says why, in words fit for the client."""


@dataclass(frozen=True)
class Target:
    """A parsed callback URL: where to connect and what to send."""

    url: str
    scheme: str
    host: str
    port: int


def parse(url: str) -> Target:
    """Check a URL's form (pure): http or https, a host, no credentials, a sane length."""
    if len(url) > MAX_URL_LENGTH:
        raise UrlRefused(f"the URL is longer than {MAX_URL_LENGTH} characters")
    if any(ch.isspace() or ord(ch) < 0x20 for ch in url):
        raise UrlRefused("the URL contains whitespace or control characters")
    try:
        parts: SplitResult = urlsplit(url)
        port = parts.port
    except ValueError as exc:
        raise UrlRefused(f"the URL cannot be parsed: {exc}") from exc
    scheme = parts.scheme.lower()
    if scheme not in ("http", "https"):
        raise UrlRefused("the URL must start with http:// or https://")
    host = parts.hostname or ""
    if not host:
        raise UrlRefused("the URL has no host")
    if parts.username is not None or parts.password is not None:
        raise UrlRefused("the URL must not carry credentials")
    return Target(url, scheme, host, port or (443 if scheme == "https" else 80))


def networks(cidrs: Iterable[str]) -> tuple[Network, ...]:
    """Allowed ranges from configuration strings (already validated by Settings)."""
    return tuple(ipaddress.ip_network(c, strict=False) for c in cidrs)


def address_refusal(address: Address, allowed: tuple[Network, ...]) -> str | None:
    """Why ``address`` may not be called, or None when it may (pure)."""
    if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is not None:
        address = address.ipv4_mapped
    if any(address in net for net in allowed):
        return None
    kinds = (
        ("loopback", address.is_loopback),
        ("link-local", address.is_link_local),
        ("unspecified", address.is_unspecified),
        ("multicast", address.is_multicast),
        ("private", address.is_private),
        ("reserved", address.is_reserved),
        ("non-global", not address.is_global),
    )
    for kind, hit in kinds:
        if hit:
            return f"{address} is a {kind} address"
    return None


async def resolve(host: str, port: int) -> list[Address]:
    """Every address ``host`` resolves to, through the running loop's resolver."""
    try:
        return [ipaddress.ip_address(host.strip("[]"))]
    except ValueError:
        pass
    loop = asyncio.get_running_loop()
    try:
        infos = await loop.getaddrinfo(host, port, type=socket.SOCK_STREAM)
    except (socket.gaierror, UnicodeError) as exc:
        raise UrlRefused(f"the host {host!r} does not resolve") from exc
    out: list[Address] = []
    for info in infos:
        raw = str(info[4][0]).split("%")[0]
        address = ipaddress.ip_address(raw)
        if address not in out:
            out.append(address)
    if not out:
        raise UrlRefused(f"the host {host!r} does not resolve")
    return out


async def check(url: str, allowed: tuple[Network, ...] = ()) -> tuple[Target, list[Address]]:
    """Parse and resolve ``url``; :class:`UrlRefused` unless every address it names may be called."""
    target = parse(url)
    addresses = await resolve(target.host, target.port)
    for address in addresses:
        why = address_refusal(address, allowed)
        if why is not None:
            raise UrlRefused(
                f"callbacks may not target {target.host} ({why}); the operator can allow a range with "
                "RUNBOX_CALLBACK_ALLOW_CIDRS"
            )
    return target, addresses
