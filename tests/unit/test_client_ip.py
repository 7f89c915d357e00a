"""The pass-through's view of who the client is: the peer address, or X-Forwarded-For read from the right
through the trusted proxies only."""

from __future__ import annotations

from ipaddress import IPv4Address, IPv6Address

import pytest

from service.auth.passthrough.client_ip import Client, client_address, networks, parse_address

PROXIES = networks(["10.0.0.0/8", "2001:db8:ffff::/48"])


@pytest.mark.parametrize(
    ("text", "address"),
    [
        ("198.51.100.7", IPv4Address("198.51.100.7")),
        (" 198.51.100.7 ", IPv4Address("198.51.100.7")),
        ("198.51.100.7:4711", IPv4Address("198.51.100.7")),
        ("2001:db8::1", IPv6Address("2001:db8::1")),
        ("[2001:db8::1]:443", IPv6Address("2001:db8::1")),
        ("[2001:db8::1]", IPv6Address("2001:db8::1")),
        ("::ffff:198.51.100.7", IPv4Address("198.51.100.7")),
        ("fe80::1%eth0", IPv6Address("fe80::1")),
        ("unknown", None),
        ("", None),
        ("testclient", None),
        ("[2001:db8::1", None),
        ("198.51.100.7.1", None),
    ],
)
def test_parse_address(text: str, address: IPv4Address | IPv6Address | None) -> None:
    assert parse_address(text) == address


@pytest.mark.parametrize(
    ("peer", "forwarded_for", "client"),
    [
        # No trusted proxy in the way: the header is the client's to write, so it is ignored.
        ("198.51.100.7", ["1.2.3.4"], "198.51.100.7"),
        # Behind our proxies: the first address from the right that is not one of them.
        ("10.0.0.2", ["198.51.100.7"], "198.51.100.7"),
        ("10.0.0.2", ["1.2.3.4, 198.51.100.7, 10.1.2.3"], "198.51.100.7"),
        ("10.0.0.2", ["1.2.3.4", "198.51.100.7, 10.1.2.3"], "198.51.100.7"),  # several header lines are one list
        ("10.0.0.2", ["198.51.100.7:5123"], "198.51.100.7"),
        ("2001:db8:ffff::2", ["[2001:db8:1::7]:443"], "2001:db8:1::7"),
        # Nothing (or nothing usable) from the proxy: the last hop we can vouch for.
        ("10.0.0.2", [], "10.0.0.2"),
        ("10.0.0.2", [" , "], "10.0.0.2"),
        ("10.0.0.2", ["unknown"], "10.0.0.2"),
        ("10.0.0.2", ["garbage, 10.1.2.3"], "10.1.2.3"),
        # Only proxies: the request started at the leftmost.
        ("10.0.0.2", ["10.9.9.9, 10.1.2.3"], "10.9.9.9"),
    ],
)
def test_client_address_trusts_the_header_only_through_trusted_proxies(
    peer: str, forwarded_for: list[str], client: str
) -> None:
    assert str(client_address(peer, forwarded_for, PROXIES)) == client


def test_without_trusted_proxies_the_peer_is_the_client() -> None:
    assert str(client_address("10.0.0.2", ["198.51.100.7"], ())) == "10.0.0.2"


def test_a_peer_that_is_not_an_ip_is_no_address() -> None:
    assert client_address("testclient", ["198.51.100.7"], PROXIES) is None
    assert client_address(None, ["198.51.100.7"], PROXIES) is None


def test_the_subject_of_the_per_ip_limits() -> None:
    assert Client(IPv4Address("198.51.100.7"), "198.51.100.7").subject == "198.51.100.7"
    # An IPv6 client is counted by its /64: the addresses it can rotate through without asking anyone.
    first = Client(IPv6Address("2001:db8:1:2::a"), None)
    same = Client(IPv6Address("2001:db8:1:2:ffff:ffff:ffff:ffff"), None)
    assert first.subject == same.subject == "2001:db8:1:2::/64"
    assert Client(IPv6Address("2001:db8:1:3::a"), None).subject != first.subject
    # What Supabase Auth is told is the address itself.
    assert first.forwarded_for == "2001:db8:1:2::a"
    # No address: the peer's name (all such clients share one bucket), and nothing is forwarded.
    assert Client(None, "testclient").subject == "peer:testclient"
    assert Client(None, None).subject == "peer:unknown"
    assert Client(None, "testclient").forwarded_for is None
