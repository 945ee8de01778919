"""Where outbound webhook deliveries may go: the URL and address policy behind the SSRF guard
(consumers.outbound.guard), pure and without DNS, so settings can check a subscription's URL
when they are loaded.

Subscriptions POST JSON to URLs that customers give us, so a URL must not be able to reach
anything inside our network: private ranges, loopback, link-local (169.254.169.254 and
fe80::/10, where cloud metadata endpoints live), multicast, reserved, shared (100.64/10) and
documentation ranges, unique-local and site-local IPv6, IPv6 forms that embed such an IPv4
address (IPv4-mapped, IPv4-compatible, NAT64, 6to4), and Teredo tunnels (whose embedded
addresses cannot be vetted). Only public unicast is allowed;
`allow_private` lifts the address rules (for tests and single-host deployments) but never the
scheme rules.

`check_url` (syntax and policy, no DNS) runs before every request: https only in
production; in development plain http is allowed to loopback hosts only; no credentials in
the URL; a literal IP or a loopback name (localhost) must not be blocked. aiohttp never asks
the resolver about a literal IP host, so this is the only check that sees one. The guard
applies the same address rules to what DNS answers, at start-up and at every connect.

Error messages name the URL's host and the reason, never the path, query or credentials,
which may hold tokens: they are safe to log and to show to the subscriber.
"""

from __future__ import annotations

import ipaddress
import re

from yarl import URL

__all__ = [
    "UnsafeURL",
    "address_reason",
    "check_url",
    "host_of",
    "host_reason",
    "is_blocked",
    "is_loopback_host",
    "parse_ip",
    "parse_url",
    "refused",
]

_Address = ipaddress.IPv4Address | ipaddress.IPv6Address

_MODES = ("production", "development")

# A DNS name: dot-separated labels of letters, digits, "-" and "_" (after IDNA encoding).
_LABEL = re.compile(r"[a-z0-9_-]{1,63}")
# A last label that URL parsers and inet_aton() read as a number (WHATWG "ends in a number").
_NUMERIC_LABEL = re.compile(r"0x[0-9a-f]*|[0-9]+")


class UnsafeURL(ValueError):
    """A subscription URL the policy refuses; str() says why."""



# Special-purpose ranges (IANA registries), most specific first: the first match names the
# reason. Listed explicitly because `is_global` differs between Python patch releases (3.11.7
# calls fec0::/10 and 192.88.99.0/24 global, for instance); `_blocked_reason` still falls back
# to `not is_global` for anything missing here.
_SPECIAL: tuple[tuple[ipaddress.IPv4Network | ipaddress.IPv6Network, str], ...] = tuple(
    (ipaddress.ip_network(cidr), reason)
    for cidr, reason in (
        ("0.0.0.0/8", "'this network' address"),
        ("10.0.0.0/8", "private address"),
        ("100.64.0.0/10", "shared address space (carrier-grade NAT)"),
        ("127.0.0.0/8", "loopback address"),
        ("169.254.0.0/16", "link-local address (cloud metadata lives there)"),
        ("172.16.0.0/12", "private address"),
        ("192.0.0.0/24", "IETF protocol assignment"),
        ("192.0.2.0/24", "documentation address"),
        ("192.88.99.0/24", "6to4 relay anycast address"),
        ("192.168.0.0/16", "private address"),
        ("198.18.0.0/15", "benchmarking address"),
        ("198.51.100.0/24", "documentation address"),
        ("203.0.113.0/24", "documentation address"),
        ("224.0.0.0/4", "multicast address"),
        ("240.0.0.0/4", "reserved address"),
        ("::/128", "unspecified address"),
        ("::1/128", "loopback address"),
        ("64:ff9b:1::/48", "local-use NAT64 address"),
        ("100::/64", "discard-only address"),
        ("2001::/32", "Teredo tunnel address"),
        ("2001::/23", "IETF protocol assignment"),
        ("2001:db8::/32", "documentation address"),
        ("3fff::/20", "documentation address"),
        ("5f00::/16", "segment routing (SRv6) address"),
        ("fc00::/7", "unique local address"),
        ("fe80::/10", "link-local address (cloud metadata lives there)"),
        ("fec0::/10", "site-local address"),
        ("ff00::/8", "multicast address"),
    )
)

_NAT64 = ipaddress.IPv6Network("64:ff9b::/96")


def _embedded_ipv4(address: ipaddress.IPv6Address) -> tuple[str, ipaddress.IPv4Address] | None:
    """The IPv4 address an IPv6 form carries, with the form's name; None if it carries none."""
    if address.ipv4_mapped is not None:
        return "IPv4-mapped", address.ipv4_mapped
    if address.sixtofour is not None:
        return "6to4", address.sixtofour
    value = int(address)
    if value >> 32 == 0 and value > 1:  # ::a.b.c.d, but not :: or ::1
        return "IPv4-compatible", ipaddress.IPv4Address(value)
    if address in _NAT64:
        return "NAT64", ipaddress.IPv4Address(value & 0xFFFFFFFF)
    return None


def _blocked_reason(address: _Address) -> str | None:
    """Why `address` is not public unicast (e.g. "private address"); None if it is.

    IPv6 forms embedding an IPv4 address are judged by that address alone (Python versions
    disagree on whether the IPv6 forms themselves are global). Teredo (2001::/32) is always
    refused: it tunnels to a NATed host through a relay, nothing a webhook should target.
    """
    if isinstance(address, ipaddress.IPv6Address):
        embedded = _embedded_ipv4(address)
        if embedded is not None:
            form, ipv4 = embedded
            reason = _blocked_reason(ipv4)
            return None if reason is None else f"{form} form of {ipv4}, {reason}"
    for network, reason in _SPECIAL:
        if address in network:
            return reason
    if not address.is_global or address.is_multicast:
        return "not a public unicast address"
    return None


def is_blocked(address: _Address) -> bool:
    """True for anything that is not a public unicast address.

    Private, loopback, link-local, multicast, reserved, unspecified, shared, documentation,
    unique-local and site-local addresses; IPv6 forms embedding an IPv4 address are judged by
    that address.
    """
    return _blocked_reason(address) is not None


def parse_ip(text: str) -> _Address | None:
    """An IP literal as a host (brackets, a trailing dot and an IPv6 zone are fine), or None."""
    text = text.strip()
    if text.startswith("[") and text.endswith("]"):
        text = text[1:-1]
    if text.endswith(".") and ":" not in text:
        text = text[:-1]
    try:
        return ipaddress.ip_address(text)
    except ValueError:
        return None


def address_reason(text: str) -> str | None:
    """`_blocked_reason` for an address given as text; text that is not an address is blocked."""
    address = parse_ip(text)
    if address is None:
        return "not an IP address"
    return _blocked_reason(address)


def is_loopback_host(host: str) -> bool:
    """True for "localhost", "*.localhost", 127.0.0.0/8 and ::1 (also IPv4-mapped)."""
    name = host.strip().lower().removesuffix(".")
    if name == "localhost" or name.endswith(".localhost"):
        return True
    address = parse_ip(name)
    if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is not None:
        address = address.ipv4_mapped
    return address is not None and address.is_loopback


def refused(host: str | None, reason: str) -> UnsafeURL:
    if not host:
        return UnsafeURL(f"URL is refused: {reason}")
    return UnsafeURL(f"URL host {host} is refused: {reason}")


def _redacted(message: str, url: str) -> str:
    """`message` unless it quotes the URL's query, fragment or credentials."""
    _, _, after_scheme = url.partition("://")
    authority = re.split(r"[/?#]", after_scheme, maxsplit=1)[0]
    secrets = (
        url.partition("?")[2],
        url.partition("#")[2],
        authority.rpartition("@")[0],
    )
    if any(secret and secret in message for secret in secrets):
        return "malformed"
    return message


def parse_url(url: str) -> URL:
    try:
        return URL(url)
    except (ValueError, TypeError) as exc:
        raise UnsafeURL(f"not a valid URL: {_redacted(str(exc), url)}") from None


def host_of(parsed: URL) -> str:
    """The host as it is sent to DNS (IDNA-encoded), after the syntax checks."""
    host = parsed.raw_host
    if not host:
        raise UnsafeURL("URL has no host")
    if parsed.raw_user is not None or parsed.raw_password is not None:
        raise refused(host, "credentials in the URL (user:password@) are not allowed")
    if parse_ip(parsed.host or host) is not None:
        return host
    labels = host.removesuffix(".").split(".")
    if _NUMERIC_LABEL.fullmatch(labels[-1]):
        raise refused(host, "numeric host that is not a canonical IP address")
    if len(host) > 253 or not all(_LABEL.fullmatch(label) for label in labels):
        raise refused(host, "not a valid host name")
    return host


def _check_scheme(scheme: str, host: str, mode: str) -> None:
    """https always; http in development to loopback hosts only (scheme is http or https)."""
    if scheme == "https":
        return
    if mode == "production":
        raise refused(host, "plain http is not allowed in production (https only)")
    if not is_loopback_host(host):
        raise refused(host, "plain http is allowed in development to loopback hosts only")


def host_reason(parsed: URL, host: str) -> str | None:
    """Why the host itself is blocked: a blocked IP literal or a loopback name; else None."""
    address = parse_ip(parsed.host or host)
    if address is not None:
        return _blocked_reason(address)
    if is_loopback_host(host):
        return "loopback host name"
    return None


def check_url(url: str, *, mode: str, allow_private: bool) -> None:
    """Refuse `url` (UnsafeURL) unless the policy allows it; no DNS.

    `mode` is "production" (https only) or "development" (https, or http to loopback hosts).
    Call it before every request: aiohttp does not resolve literal IP hosts, so the guarded
    resolver never sees them.
    """
    if mode not in _MODES:
        raise ValueError(f"mode must be one of {', '.join(_MODES)}, not {mode!r}")
    parsed = parse_url(url)
    if not parsed.scheme:
        raise UnsafeURL("URL has no scheme (https only)")
    if parsed.scheme not in ("http", "https"):
        raise refused(parsed.raw_host, f"scheme {parsed.scheme!r} is not allowed (https only)")
    host = host_of(parsed)
    _check_scheme(parsed.scheme, host, mode)
    if not allow_private:
        reason = host_reason(parsed, host)
        if reason is not None:
            raise refused(host, reason)

