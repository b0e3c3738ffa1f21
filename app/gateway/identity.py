"""Who is asking: an API key's hash, else the client's address (IPv6 grouped by /64).

The address is the socket's peer unless that peer is a trusted proxy; then
``X-Forwarded-For`` is walked from the right (the hop nearest to us) and the first address
that is not a trusted proxy is the client. Anything a client writes further left is never
believed, and a value that is not an address stops the walk at the last proxy seen.
IPv6 clients are limited per /64, the block one subscriber normally holds, so rotating
through addresses of one's own block does not multiply one's allowances.
"""

from __future__ import annotations

import hashlib
import ipaddress
from dataclasses import dataclass

from werkzeug.datastructures import Headers

from app.config import KeyTier, Settings, hash_key
from app.web.errors import ApiError

IPV6_GROUP_PREFIX = 64


@dataclass(frozen=True)
class Identity:
    """Who is asking: an API key's hash or a client address, with the tier that applies."""

    key: str  # "key:<sha256>" or "ip:<address or /64>"; never logged or labelled in metrics
    tier: KeyTier

    @property
    def tag(self) -> str:
        """A short, non-reversible tag stored with jobs to count them per identity."""
        return hashlib.sha256(self.key.encode()).hexdigest()[:20]

    @property
    def anonymous(self) -> bool:
        return self.key.startswith("ip:")


def group(address: str) -> str:
    """The unit limits apply to: the address itself (IPv4) or its /64 network (IPv6)."""
    try:
        ip = ipaddress.ip_address(address.split("%")[0])
    except ValueError:
        return address
    if isinstance(ip, ipaddress.IPv6Address):
        if ip.ipv4_mapped is not None:
            return str(ip.ipv4_mapped)
        return str(ipaddress.ip_network(f"{ip}/{IPV6_GROUP_PREFIX}", strict=False))
    return str(ip)


class Identities:
    """Resolves a request's identity from its headers and peer address."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.tiers = settings.tier_table()
        self.keys = settings.key_table()
        self.proxies = [ipaddress.ip_network(p, strict=False) for p in settings.trusted_proxies]

    def _trusted(self, address: str) -> bool:
        try:
            ip = ipaddress.ip_address(address.split("%")[0])
        except ValueError:
            return False
        if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped is not None:
            ip = ip.ipv4_mapped
        return any(ip in net for net in self.proxies)

    def client_address(self, peer: str | None, forwarded_for: str) -> str:
        """The right-most address of the forwarding chain that is not a trusted proxy."""
        address = peer or "unknown"
        if not self.proxies or not self._trusted(address):
            return address
        hops = [hop.strip() for hop in forwarded_for.split(",") if hop.strip()]
        for hop in reversed(hops):
            try:
                ipaddress.ip_address(hop.split("%")[0])
            except ValueError:
                return address  # garbage in the chain: the last proxy we trust is the client
            address = hop
            if not self._trusted(hop):
                return hop
        return address

    def identify(
        self, headers: Headers, peer: str | None, *, playground: bool = False, reading: bool = False,
        token_header: str | None = None, token_param: str = "",
    ) -> Identity:
        """Resolve the caller; 401 for an unknown key, or for no key when keys are required.

        ``token_header`` names a flavour's own key header (Judge0's ``X-Auth-Token``), read
        when there is no ``Authorization``; ``token_param`` is the same key sent as a query
        parameter of that name, which Judge0 also accepts, read when neither header is sent.
        ``reading`` lets a job's id stand in for a key;
        ``playground`` does only when the operator allows anonymous playground use.
        """
        header = headers.get("Authorization", "")
        if not header and token_header:
            token = headers.get(token_header, "").strip() or token_param.strip()
            if token:
                header = "Bearer " + token
        if header:
            scheme, _, token = header.partition(" ")
            if scheme.lower() != "bearer" or not token.strip():
                raise ApiError(401, "unauthorized", "The Authorization header must be 'Bearer <API key>'.")
            digest = hash_key(token.strip())
            tier_name = self.keys.get(digest)
            if tier_name is None:
                raise ApiError(401, "unauthorized", "The API key is not known to this service.")
            return Identity("key:" + digest, self.tiers[tier_name])
        anonymous_ok = reading or (playground and self.settings.allow_anonymous_playground)
        if self.settings.require_keys and not anonymous_ok:
            raise ApiError(
                401,
                "unauthorized",
                "This service requires an API key: send 'Authorization: Bearer <key>'.",
                {"WWW-Authenticate": "Bearer"},
            )
        address = self.client_address(peer, headers.get("X-Forwarded-For", ""))
        return Identity("ip:" + group(address), self.tiers["anonymous"])
