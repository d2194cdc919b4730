"""Where a webhook may go: the URL's shape, the address policy per address class, and resolution
through an injected resolver (a function standing for DNS, so a test can change its answer)."""

from __future__ import annotations

import ipaddress
import re

import pytest

from maskq.errors import InvalidParameterError
from maskq.service.webhook_address import (
    WebhookAddressRefusedError,
    WebhookHostUnresolvedError,
    checked_addresses,
    parse,
    refusal_reason,
)

REFUSED = {
    # IPv4
    "0.0.0.0": "unspecified",
    "127.0.0.1": "loopback",
    "127.255.0.9": "loopback",
    "10.1.2.3": "private",
    "172.16.0.1": "private",
    "192.168.0.1": "private",
    "169.254.169.254": "metadata",  # AWS, GCP, Azure, OpenStack
    "100.100.100.200": "metadata",  # Alibaba
    "169.254.1.1": "link-local",
    "224.0.0.1": "multicast",
    "240.0.0.1": "reserved",
    "255.255.255.255": "reserved",
    "100.64.0.1": "not-global",  # carrier-grade NAT
    "203.0.113.7": "private",  # documentation (TEST-NET-3)
    # IPv6
    "::": "unspecified",
    "::1": "loopback",
    "fc00::1": "private",
    "fd00:ec2::254": "metadata",  # AWS over IPv6
    "fe80::1": "link-local",
    "fe80::1%eth0": "link-local",
    "ff02::1": "multicast",
    "::7f00:1": "reserved",  # IPv4-compatible (deprecated) ::127.0.0.1
    "2001:db8::1": "private",  # documentation
    # IPv6 standing for an IPv4 address: judged on the IPv4
    "::ffff:127.0.0.1": "loopback",
    "::ffff:10.0.0.1": "private",
    "::ffff:169.254.169.254": "metadata",
    "64:ff9b::7f00:1": "loopback",  # NAT64 of 127.0.0.1
    "2002:a9fe:a9fe::": "metadata",  # 6to4 embedding 169.254.169.254
}
PUBLIC = ("8.8.8.8", "1.1.1.1", "93.184.216.34", "2606:4700:4700::1111", "::ffff:8.8.8.8",
          "64:ff9b::808:808", "2002:808:808::")


@pytest.mark.parametrize(("address", "reason"), sorted(REFUSED.items()))
def test_each_non_public_class_is_refused_with_its_reason(address: str, reason: str) -> None:
    assert refusal_reason(ipaddress.ip_address(address)) == reason


@pytest.mark.parametrize("address", PUBLIC)
def test_public_addresses_pass(address: str) -> None:
    assert refusal_reason(ipaddress.ip_address(address)) is None


def test_url_shape() -> None:
    t = parse("https://Hooks.Example.com/in/maskq?k=v#frag")
    assert (t.scheme, t.host, t.port, t.host_header, t.path) == ("https", "hooks.example.com", 443,
                                                                 "hooks.example.com", "/in/maskq?k=v")
    t = parse("http://[::1]:8080")
    assert (t.host, t.port, t.host_header, t.path) == ("::1", 8080, "[::1]:8080", "/")
    assert parse("http://bücher.example/h").host == "xn--bcher-kva.example"  # DNS, SNI and Host carry IDNA
    for url, says in (("ftp://x/y", "http(s)"), ("javascript:alert(1)", "http(s)"), ("http:///nohost", "http(s)"),
                      ("http://[bad/", "not a valid URL"), ("http://h:99999/", "not a valid URL"),
                      ("http://user:pw@example.com/h", "credentials")):
        with pytest.raises(InvalidParameterError, match=re.escape(says)) as e:
            parse(url)
        assert e.value.field == "webhook_url"


def answers(*addresses: str) -> tuple[list[tuple[str, int]], object]:
    """A resolver that always gives ``addresses``, and the list of the queries it got."""
    asked: list[tuple[str, int]] = []

    def resolver(host: str, port: int) -> list[str]:
        asked.append((host, port))
        return list(addresses)

    return asked, resolver


def test_checked_addresses_come_from_one_resolution_in_the_resolvers_order() -> None:
    asked, resolver = answers("2606:4700:4700::1111", "::ffff:8.8.8.8")
    got = checked_addresses(parse("https://hooks.example.com:8443/h"), allow_private=False, resolver=resolver)
    assert got == ["2606:4700:4700::1111", "8.8.8.8"]  # the mapped one as the IPv4 it stands for
    assert asked == [("hooks.example.com", 8443)]


def test_one_inside_answer_refuses_the_url() -> None:
    _, resolver = answers("8.8.8.8", "169.254.169.254")
    with pytest.raises(WebhookAddressRefusedError) as e:
        checked_addresses(parse("http://hooks.example.com/h"), allow_private=False, resolver=resolver)
    assert e.value.field == "webhook_url" and e.value.code == "invalid_parameter"
    assert e.value.details == {"field": "webhook_url", "host": "hooks.example.com", "address": "169.254.169.254",
                               "reason": "metadata"}
    assert "hooks.example.com" in e.value.message and "169.254.169.254" in e.value.message


def test_allow_private_skips_the_policy_not_the_resolution() -> None:
    asked, resolver = answers("127.0.0.1")
    assert checked_addresses(parse("http://receiver.local:9/h"), allow_private=True, resolver=resolver) == ["127.0.0.1"]
    assert asked == [("receiver.local", 9)]


def test_a_literal_is_its_own_answer() -> None:
    asked, resolver = answers("8.8.8.8")
    with pytest.raises(WebhookAddressRefusedError):
        checked_addresses(parse("http://[::ffff:127.0.0.1]/h"), allow_private=False, resolver=resolver)
    assert checked_addresses(parse("http://1.1.1.1/h"), allow_private=False, resolver=resolver) == ["1.1.1.1"]
    assert asked == []


def test_no_answer_is_unresolved() -> None:
    def nxdomain(host: str, port: int) -> list[str]:
        raise OSError(-2, "Name or service not known")

    for resolver in (nxdomain, answers()[1]):
        with pytest.raises(WebhookHostUnresolvedError, match="cannot be resolved"):
            checked_addresses(parse("http://nowhere.invalid/h"), allow_private=True, resolver=resolver)
