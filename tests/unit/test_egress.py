"""The egress policy behind the SSRF guard: which addresses and URLs are refused (no DNS)."""

from __future__ import annotations

import ipaddress

import pytest

from router.egress import UnsafeURL, check_url, is_blocked


@pytest.mark.parametrize(("address", "blocked"), [
    ("10.1.2.3", True), ("172.16.0.1", True), ("192.168.1.1", True), ("127.0.0.1", True),
    ("169.254.169.254", True), ("100.64.0.1", True), ("0.0.0.0", True), ("224.0.0.1", True),
    ("192.0.2.1", True), ("::1", True), ("fe80::1", True), ("fc00::1", True),
    ("::ffff:10.0.0.1", True), ("2002:a00:1::", True), ("::ffff:8.8.8.8", False),
    ("8.8.8.8", False), ("2606:4700:4700::1111", False),
])
def test_only_public_unicast_addresses_pass(address, blocked):
    assert blocked == is_blocked(ipaddress.ip_address(address))


@pytest.mark.parametrize(("url", "mode", "allow", "problem"), [
    ("http://portal.example.com/h", "production", False, "https only"),
    ("http://portal.example.com/h", "development", False, "loopback"),
    ("http://127.0.0.1:8000/h", "development", False, "loopback"),
    ("https://user:pw@portal.example.com/h", "production", False, "credentials"),
    ("ftp://portal.example.com/h", "production", False, "scheme"),
    ("https://[fe80::1]/h", "production", False, "link-local"),
    ("http://0x7f.1/h", "development", True, "numeric host"),
    ("https://2130706433/h", "production", False, "2130706433"),
    ("https://169.254.169.254/latest?token=s3cr3t", "production", False, "169.254.169.254"),
    ("https:///nohost", "production", False, "no host"),
])
def test_refused_urls_say_why(url, mode, allow, problem):
    with pytest.raises(UnsafeURL) as info:
        check_url(url, mode=mode, allow_private=allow)
    assert problem in str(info.value)
    assert "s3cr3t" not in str(info.value)


@pytest.mark.parametrize(("url", "mode", "allow"), [
    ("https://portal.example.com/h", "production", False),
    ("http://127.0.0.1:8000/h", "development", True),
    ("http://localhost:8000/h", "development", True),
    ("https://10.0.0.5/h", "production", True),
])
def test_allowed_urls(url, mode, allow):
    check_url(url, mode=mode, allow_private=allow)
