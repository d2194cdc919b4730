"""Where a webhook may go: the URL's shape, the host's addresses, and the policy on those addresses.

A webhook is a request the service makes on a client's behalf, to a place the client names: without a
policy, a job could make the webhook worker call the cluster's inside (SSRF): the cloud metadata
service at 169.254.169.254, an admin port on 127.0.0.1, a database on 10.x. So every address a
webhook host resolves to must be public, unless ``allow_private`` (``MASKQ_WEBHOOK_ALLOW_PRIVATE``,
for tests and ``maskq up`` on a laptop; off in production) says otherwise.

Checking the name once is not enough: a DNS answer can change between the check and the request
(DNS rebinding: public at submit, 127.0.0.1 at delivery). So the same check runs at submit (a clear
422 for the caller) and again at every delivery, where :func:`checked_addresses` returns the
addresses the deliverer then connects to itself: what was checked is what is called, with no second
resolution in between.

Pure logic except for the resolver, which is injectable (tests answer differently at each call).
Imports neither Celery nor FastAPI: the API and the worker both use it.
"""

from __future__ import annotations

import ipaddress
import socket
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from urllib.parse import urlsplit

from maskq.errors import InvalidParameterError

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address
# host, port -> the addresses a connection to them would try, in order (getaddrinfo's answer)
Resolver = Callable[[str, int], Sequence[str]]

FIELD = "webhook_url"
_DEFAULT_PORTS = {"http": 80, "https": 443}
# Cloud metadata services, named in refusals so an operator reading the log sees what was aimed at:
# AWS/GCP/Azure/OpenStack (169.254.169.254, also link-local), AWS over IPv6, Alibaba (100.100.100.200,
# in the shared 100.64/10 range).
METADATA_ADDRESSES = frozenset(ipaddress.ip_address(a) for a in
                               ("169.254.169.254", "fd00:ec2::254", "100.100.100.200"))
# NAT64's well-known prefix (RFC 6052): on an IPv6-only cluster DNS64 answers 64:ff9b::a.b.c.d for a
# public IPv4 a.b.c.d, so the policy judges the embedded IPv4 (refusing the prefix itself would
# refuse every IPv4-only receiver there; letting it through would let 64:ff9b::127.0.0.1 pass).
_NAT64 = ipaddress.ip_network("64:ff9b::/96")


class WebhookAddressRefusedError(InvalidParameterError):
    """The webhook host resolves to an address the policy refuses. Same code as any bad parameter
    (``invalid_parameter``, field ``webhook_url``): at submit clients see what they always saw; the
    worker tells it apart by class. ``details``: ``host``, ``address``, ``reason``."""


class WebhookHostUnresolvedError(InvalidParameterError):
    """The webhook host has no address now. The caller's fault at submit; at delivery it may be a
    DNS outage, which is why it has a class of its own (the worker retries it)."""


@dataclass(frozen=True)
class WebhookTarget:
    """A webhook URL taken apart for a deliverer that connects to a checked IP itself."""

    scheme: str  # http or https
    host: str  # the name (or literal) to resolve, to verify TLS against, and for SNI: ASCII, no brackets
    port: int
    host_header: str  # the Host header a client going by the URL would send
    path: str  # the request target: path and query ("/" when empty), no fragment

    @property
    def is_https(self) -> bool:
        return self.scheme == "https"


def _invalid(message: str) -> InvalidParameterError:
    return InvalidParameterError(message, field=FIELD)


def parse(url: str) -> WebhookTarget:
    """http(s), a host, no credentials (they would be sent to whoever the name points at and be
    logged with the URL). Raises :class:`InvalidParameterError` (field ``webhook_url``)."""
    try:
        parts = urlsplit(url)
        port = parts.port
        host = parts.hostname
        if host and not host.isascii():
            host = host.encode("idna").decode("ascii")  # what DNS, SNI and the Host header carry
    except (ValueError, UnicodeError):
        raise _invalid(f"webhook_url is not a valid URL: {url!r}") from None
    if parts.scheme not in _DEFAULT_PORTS or not host:
        raise _invalid("webhook_url must be an http(s) URL with a host")
    if parts.username or parts.password:
        raise _invalid("webhook_url must not carry credentials")
    port = port or _DEFAULT_PORTS[parts.scheme]
    shown = f"[{host}]" if ":" in host else host
    host_header = shown if port == _DEFAULT_PORTS[parts.scheme] else f"{shown}:{port}"
    path = (parts.path or "/") + (f"?{parts.query}" if parts.query else "")
    return WebhookTarget(parts.scheme, host, port, host_header, path)


def effective(addr: IPAddress) -> IPAddress:
    """The IPv4 address an IPv6 one stands for, where it embeds one that decides where packets go
    (IPv4-mapped ``::ffff:a.b.c.d``, NAT64 ``64:ff9b::a.b.c.d``); else the address itself."""
    if isinstance(addr, ipaddress.IPv6Address):
        if addr.ipv4_mapped is not None:
            return addr.ipv4_mapped
        if addr in _NAT64:
            return ipaddress.IPv4Address(int(addr) & 0xFFFFFFFF)
    return addr


def refusal_reason(addr: IPAddress) -> str | None:
    """Why a webhook must not connect to ``addr`` (a short word for logs), or None when it is public.

    Judged on :func:`effective`; a 6to4 address (2002::/16) is also judged on the IPv4 it embeds.
    Anything not globally routable is refused, the named classes first so the log says which."""
    addr = effective(addr)
    if addr.is_unspecified:
        return "unspecified"
    if addr.is_loopback:
        return "loopback"
    if isinstance(addr, ipaddress.IPv6Address) and addr.scope_id:
        return "link-local"  # a zone id (fe80::1%eth0) only makes sense on a local link
    if addr in METADATA_ADDRESSES:
        return "metadata"
    if addr.is_link_local:
        return "link-local"
    if addr.is_multicast:
        return "multicast"
    if addr.is_reserved:
        return "reserved"
    if addr.is_private:
        return "private"
    if not addr.is_global:
        return "not-global"  # shared (100.64/10, carrier NAT) and other special-purpose ranges
    if isinstance(addr, ipaddress.IPv6Address) and addr.sixtofour is not None:
        return refusal_reason(addr.sixtofour)
    return None


def system_resolver(host: str, port: int) -> list[str]:
    """``socket.getaddrinfo`` for TCP, its addresses in its order, each once."""
    infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)
    return list(dict.fromkeys(str(info[4][0]) for info in infos))


def resolve(target: WebhookTarget, resolver: Resolver = system_resolver) -> list[IPAddress]:
    """The host's addresses: a literal is its own answer (no resolver call), a name asks ``resolver``.
    Raises :class:`WebhookHostUnresolvedError` when there is no answer."""
    try:
        return [ipaddress.ip_address(target.host)]
    except ValueError:
        pass
    try:
        answer = [ipaddress.ip_address(a) for a in resolver(target.host, target.port)]
    except (OSError, UnicodeError, ValueError):
        answer = []
    if not answer:
        raise WebhookHostUnresolvedError(f"webhook_url host {target.host!r} cannot be resolved", field=FIELD)
    return answer


def checked_addresses(target: WebhookTarget, *, allow_private: bool,
                      resolver: Resolver = system_resolver) -> list[str]:
    """Resolve once and check every answer; returns the addresses to connect to, in the resolver's
    order (as :func:`effective` gives them: what was judged is what is called).

    One refused address refuses the URL, even when others are public: connecting to the public ones
    only would be safe, but a name that answers with an inside address is either misconfigured or
    probing, and the answer to both is the same at submit and at delivery.
    ``allow_private`` keeps the resolution (the deliverer needs an address) and skips the policy."""
    addresses = [effective(a) for a in resolve(target, resolver)]
    if not allow_private:
        for addr in addresses:
            reason = refusal_reason(addr)
            if reason is not None:
                raise WebhookAddressRefusedError(
                    f"webhook_url host {target.host!r} resolves to a non-public address ({addr}, {reason}); refused",
                    field=FIELD, host=target.host, address=str(addr), reason=reason)
    return [str(a) for a in addresses]


def check_url(url: str, allow_private: bool) -> str:
    """What the API checks at submit: http(s) with a host and no credentials; unless
    ``allow_private``, every address the host resolves to must be public (SSRF). The worker applies
    the same rules again at every delivery (the answer may have changed: DNS rebinding)."""
    target = parse(url)
    if not allow_private:  # a laptop's receiver name need not resolve here; delivery resolves it
        checked_addresses(target, allow_private=False)
    return url
