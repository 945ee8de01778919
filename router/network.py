"""Who is calling: the real client address behind trusted proxies, IP allowlists, and the
key a client is rate-limited under.

Both are built once from settings (bad CIDRs raise ValueError naming the entry) and are
pure afterwards: strings in, a string or a bool out.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Sequence

_Address = ipaddress.IPv4Address | ipaddress.IPv6Address
_Network = ipaddress.IPv4Network | ipaddress.IPv6Network


def _parse_address(text: str) -> _Address | None:
    """An address, IPv4-mapped IPv6 (`::ffff:1.2.3.4`) as IPv4; None if it is not one."""
    try:
        address = ipaddress.ip_address(text.strip())
    except ValueError:
        return None
    if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is not None:
        return address.ipv4_mapped
    return address


def _parse_forwarded(entry: str) -> _Address | None:
    """One X-Forwarded-For entry; some proxies add a port (`1.2.3.4:80`, `[2001:db8::1]:80`)."""
    entry = entry.strip()
    if entry.startswith("["):
        entry = entry[1 : entry.find("]")]
    elif entry.count(":") == 1:
        entry = entry.partition(":")[0]
    return _parse_address(entry)


def rate_limit_key(ip: str) -> str:
    """What a client's token bucket is keyed by: an IPv4 address, or an IPv6 address's /64.

    One IPv6 subscriber (a home line, a VM) is routinely given a whole /64, so keying by
    address would hand it 2**64 buckets.  IPv4-mapped IPv6 counts as its IPv4 address; what
    is not an address (an unknown peer: "") is its own key.
    """
    if ":" not in ip:
        return ip  # IPv4 (or nothing): the common case, without parsing
    address = _parse_address(ip)
    if isinstance(address, ipaddress.IPv6Address):
        return str(ipaddress.IPv6Network((address, 64), strict=False))
    return ip if address is None else str(address)


class _Networks:
    """A set of CIDRs (bare addresses mean /32 or /128) with fast membership."""

    __slots__ = ("_networks",)

    def __init__(self, cidrs: Sequence[str], what: str) -> None:
        networks: list[_Network] = []
        for cidr in cidrs:
            try:
                # Not strict, like the settings check: "10.1.2.3/8" means 10.0.0.0/8.
                networks.append(ipaddress.ip_network(cidr.strip(), strict=False))
            except (ValueError, TypeError, AttributeError) as exc:
                raise ValueError(f"{what}: {cidr!r} is not a CIDR or an address ({exc})") from None
        self._networks = tuple(networks)

    def __bool__(self) -> bool:
        return bool(self._networks)

    def __contains__(self, address: _Address) -> bool:
        # ipaddress answers False, not an error, when v4 meets v6.
        return any(address in network for network in self._networks)


class ClientAddress:
    """Resolves the real client address from the peer and X-Forwarded-For."""

    __slots__ = ("_trusted",)

    def __init__(self, trusted_proxies: Sequence[str]) -> None:
        """`trusted_proxies`: CIDRs of the proxies whose X-Forwarded-For is believed."""
        self._trusted = _Networks(trusted_proxies, "trusted proxy")

    def resolve(self, peer: str | None, x_forwarded_for: str | None) -> str:
        """The client address, or "" when the peer is unknown.

        X-Forwarded-For is honoured only when the peer is a trusted proxy; it is walked from
        the right past trusted proxies to the first untrusted address (the leftmost if all are
        trusted). A garbage entry stops the walk at the last good address. Pass every
        X-Forwarded-For header, joined with ",". Without trusted proxies the peer is returned
        as given.
        """
        if not self._trusted:
            return peer or ""
        address = _parse_address(peer) if peer else None
        if address is None:
            return peer or ""
        if not x_forwarded_for or address not in self._trusted:
            return str(address)
        for entry in reversed(x_forwarded_for.split(",")):
            forwarded = _parse_forwarded(entry)
            if forwarded is None:
                break
            address = forwarded
            if address not in self._trusted:
                break
        return str(address)


class IpAllowlist:
    """Addresses allowed to call a source; an empty list allows nobody."""

    __slots__ = ("_allowed",)

    def __init__(self, cidrs: Sequence[str]) -> None:
        self._allowed = _Networks(cidrs, "allowlist")

    def allows(self, ip: str) -> bool:
        """True if `ip` is in one of the CIDRs; an address that does not parse is refused."""
        address = _parse_address(ip)
        return address is not None and address in self._allowed
