"""Who the client is, by network address: the peer's, or X-Forwarded-For's when the peer is a proxy we trust.

``X-Forwarded-For: a, b, c`` is a list anyone can start: each proxy appends the address it received the request
from. Only the part written by our own proxies can be believed, so it is read from the right, skipping the
addresses of trusted proxies (``TRUSTED_PROXIES``); the first address that is not one is the client. When the
peer itself is not a trusted proxy the header is ignored altogether: a client cannot pick its own address, and
so cannot pick its own rate-limit bucket.

uvicorn applies the same rule before us for a proxy on 127.0.0.1 (its ``FORWARDED_ALLOW_IPS``), replacing the peer
address with the client's; what we then see as the peer is already the client, which is still right.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from ipaddress import IPv4Address, IPv4Network, IPv6Address, IPv6Network, ip_address, ip_network

Address = IPv4Address | IPv6Address
Network = IPv4Network | IPv6Network

# An IPv6 client usually holds a whole /64 (SLAAC, privacy addresses): counting per address would let it rotate
# through 2^64 rate-limit buckets.
IPV6_SUBJECT_PREFIX = 64


def networks(cidrs: Iterable[str]) -> tuple[Network, ...]:
    """``TRUSTED_PROXIES`` (validated by the settings) as networks."""
    return tuple(ip_network(cidr, strict=False) for cidr in cidrs)


def parse_address(text: str) -> Address | None:
    """An address as peers and proxies write it: ``192.0.2.1``, ``192.0.2.1:443``, ``2001:db8::1`` or
    ``[2001:db8::1]:443``; an IPv4-mapped IPv6 address is its IPv4 address. ``None`` for anything else."""
    text = text.strip()
    if text.startswith("["):
        text = text[1 : text.find("]")] if "]" in text else ""
    elif text.count(":") == 1:
        text = text.partition(":")[0]
    try:
        address = ip_address(text)
    except ValueError:
        return None
    if isinstance(address, IPv6Address):
        if address.ipv4_mapped is not None:
            return address.ipv4_mapped
        if address.scope_id is not None:
            return IPv6Address(int(address))  # fe80::1%eth0: the zone means nothing beyond this host
    return address


def _trusted(address: Address, trusted: Sequence[Network]) -> bool:
    return any(address in network for network in trusted)


def client_address(peer: str | None, forwarded_for: Sequence[str], trusted: Sequence[Network]) -> Address | None:
    """The client's address, from the peer's ``peer`` and the ``X-Forwarded-For`` header lines ``forwarded_for``.

    ``None`` when the peer is not an IP address (a Unix socket, a test client) and no trusted proxy said more.
    """
    address = parse_address(peer) if peer else None
    if address is None or not _trusted(address, trusted):
        return address
    hops = [hop for line in forwarded_for for hop in line.split(",")]
    for hop in reversed(hops):
        hop_address = parse_address(hop)
        if hop_address is None:
            # Not an address (garbage, "unknown"): nothing to its left can be believed; the proxy that wrote it
            # is the last hop we know.
            return address
        address = hop_address
        if not _trusted(address, trusted):
            return address
    return address  # every hop is one of our proxies: the request started at the leftmost


@dataclass(frozen=True, slots=True)
class Client:
    """A caller of the pass-through, by address."""

    address: Address | None
    peer: str | None

    @property
    def subject(self) -> str:
        """What its per-IP limits count: the address, the /64 for IPv6, else the peer's name."""
        if isinstance(self.address, IPv6Address):
            return str(IPv6Network((self.address, IPV6_SUBJECT_PREFIX), strict=False))
        if self.address is not None:
            return str(self.address)
        return f"peer:{self.peer or 'unknown'}"

    @property
    def forwarded_for(self) -> str | None:
        """The address Supabase Auth is told (Sb-Forwarded-For): a plain IP, or nothing when there is none."""
        return str(self.address) if self.address is not None else None


def client_of(peer: str | None, forwarded_for: Sequence[str], trusted: Sequence[Network]) -> Client:
    return Client(client_address(peer, forwarded_for, trusted), peer)
