"""Client address behind trusted proxies, and IP allowlists."""

from __future__ import annotations

import pytest

from router.network import ClientAddress, IpAllowlist, rate_limit_key

PROXIES = ["10.0.0.0/8", "2001:db8:ffff::/48"]


class TestClientAddress:
    """X-Forwarded-For is believed only from trusted proxies, and walked from the right."""

    def test_no_trusted_proxies_returns_the_peer_as_given(self):
        """Without trusted proxies the peer is returned untouched, X-Forwarded-For ignored."""
        assert "::ffff:1.2.3.4" == ClientAddress([]).resolve("::ffff:1.2.3.4", "9.9.9.9")

    def test_untrusted_peer_is_the_client(self):
        """X-Forwarded-For from an untrusted peer is ignored."""
        assert "203.0.113.7" == ClientAddress(PROXIES).resolve("203.0.113.7", "9.9.9.9")

    def test_trusted_peer_without_header(self):
        """A trusted proxy without X-Forwarded-For is itself the client."""
        assert "10.1.1.1" == ClientAddress(PROXIES).resolve("10.1.1.1", None)

    @pytest.mark.parametrize(
        ("forwarded", "expected"),
        [
            ("198.51.100.1", "198.51.100.1"),
            ("198.51.100.1, 10.0.0.2", "198.51.100.1"),
            ("6.6.6.6, 198.51.100.1, 10.0.0.2", "198.51.100.1"),  # 6.6.6.6 is client-written
            ("10.0.0.3,10.0.0.2", "10.0.0.3"),  # all trusted: the leftmost
            (" 198.51.100.1 ,  10.0.0.2 ", "198.51.100.1"),
            ("2001:db8::5, 2001:db8:ffff::1", "2001:db8::5"),
            ("::ffff:198.51.100.1", "198.51.100.1"),
            ("198.51.100.1:5555", "198.51.100.1"),
            ("[2001:db8::5]:443", "2001:db8::5"),
        ],
    )
    def test_walks_forwarded_for_from_the_right(self, forwarded, expected):
        """The first untrusted address from the right is the client."""
        assert expected == ClientAddress(PROXIES).resolve("10.9.9.9", forwarded)

    @pytest.mark.parametrize(
        ("forwarded", "expected"),
        [
            ("198.51.100.1, unknown", "10.9.9.9"),
            ("198.51.100.1, garbage, 10.0.0.2", "10.0.0.2"),
            ("", "10.9.9.9"),
            (",,,", "10.9.9.9"),
            ("999.1.1.1", "10.9.9.9"),
        ],
    )
    def test_garbage_stops_the_walk(self, forwarded, expected):
        """A garbage entry stops the walk at the last good address (or the peer)."""
        assert expected == ClientAddress(PROXIES).resolve("10.9.9.9", forwarded)

    def test_ipv4_mapped_peer_is_ipv4(self):
        """A peer written as ::ffff:10.x is matched against IPv4 proxy ranges."""
        assert "198.51.100.1" == ClientAddress(PROXIES).resolve("::ffff:10.0.0.1", "198.51.100.1")

    def test_ipv6_peer(self):
        """A trusted IPv6 proxy's X-Forwarded-For is believed."""
        assert "198.51.100.1" == ClientAddress(PROXIES).resolve("2001:db8:ffff::9", "198.51.100.1")

    @pytest.mark.parametrize("peer", [None, "", "not-an-ip"])
    def test_unknown_peer(self, peer):
        """A missing or unparsable peer is returned as is (or ""), never trusted."""
        assert (peer or "") == ClientAddress(PROXIES).resolve(peer, "198.51.100.1")

    def test_bad_cidr_is_named(self):
        """A bad trusted proxy entry raises ValueError naming it."""
        with pytest.raises(ValueError, match="10.0.0.0/33"):
            ClientAddress(["10.0.0.0/33"])


class TestIpAllowlist:
    """Addresses in the configured CIDRs are allowed; everything else is not."""

    ALLOWLIST = ["192.0.2.0/24", "198.51.100.7", "2001:db8::/32"]

    @pytest.mark.parametrize(
        "ip", ["192.0.2.1", "192.0.2.255", "198.51.100.7", "2001:db8::1", "::ffff:192.0.2.9"]
    )
    def test_allowed(self, ip):
        """Addresses inside a CIDR, an exact address, IPv6 and IPv4-mapped IPv6 are allowed."""
        assert True is IpAllowlist(self.ALLOWLIST).allows(ip)

    @pytest.mark.parametrize(
        "ip", ["192.0.3.1", "198.51.100.8", "2001:db9::1", "::ffff:192.0.3.1", "", "garbage", "1"]
    )
    def test_refused(self, ip):
        """Addresses outside every CIDR, and strings that are not addresses, are refused."""
        assert False is IpAllowlist(self.ALLOWLIST).allows(ip)

    def test_empty_allows_nobody(self):
        """An empty allowlist allows no address."""
        assert False is IpAllowlist([]).allows("192.0.2.1")

    @pytest.mark.parametrize("bad", ["192.0.2.0/24x", "300.0.0.0/8", "fe80::/129", ""])
    def test_bad_entry_is_named(self, bad):
        """A bad allowlist entry raises ValueError naming it."""
        with pytest.raises(ValueError) as info:
            IpAllowlist(["10.0.0.0/8", bad])
        assert repr(bad) in str(info.value)


class TestRateLimitKey:
    """Token buckets are per IPv4 address and per IPv6 /64."""

    @pytest.mark.parametrize(
        ("address", "key"),
        [
            ("203.0.113.7", "203.0.113.7"),
            ("2001:db8:1:2::1", "2001:db8:1:2::/64"),
            ("2001:db8:1:2:ffff:ffff:ffff:ffff", "2001:db8:1:2::/64"),
            ("::ffff:203.0.113.7", "203.0.113.7"),
            ("", ""),
        ],
    )
    def test_key(self, address, key):
        """IPv4 by address; IPv6 by its /64; IPv4-mapped IPv6 as its IPv4 address."""
        assert key == rate_limit_key(address)

    def test_one_ipv6_subscriber_cannot_multiply_its_buckets(self):
        """Two addresses of one /64 share a key; the next /64 has its own."""
        assert rate_limit_key("2001:db8::1") == rate_limit_key("2001:db8::dead:beef")
        assert rate_limit_key("2001:db8::1") != rate_limit_key("2001:db8:0:1::1")
