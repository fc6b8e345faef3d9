"""Where a webhook may go: http(s) only, to the hosts RAG_WEBHOOK_HOSTS allows, and never to a
loopback, private, link-local or multicast address unless the operator listed that host.

A job's URL is checked when the job is accepted (`check_url`: the scheme, the host, and an IP
literal's address), and the addresses its host resolves to are checked again at each delivery
(`addresses`), as a name may point anywhere by then (DNS rebinding). The delivery then
connects to the very address checked here, not to whatever a second lookup would give.

A host is judged as the address the resolver reads it as: the IPv4 shorthands that
`getaddrinfo` (like `inet_aton`) accepts, `127.1`, `2130706433`, `0x7f000001`, `0177.0.0.1`
(octal) or `0`, are that address at acceptance already, not names left for delivery to refuse.
An IPv6 address that carries an IPv4 one (IPv4-mapped `::ffff:a.b.c.d`, IPv4-compatible
`::a.b.c.d`, NAT64 `64:ff9b::a.b.c.d`, 6to4 `2002:AABB:CCDD::`) reaches that IPv4 address, so
it is public only if that address is; a network's own NAT64 prefix (`64:ff9b:1::/48`) never is.
"""

from __future__ import annotations

import asyncio
import ipaddress
import socket
from dataclasses import dataclass
from urllib.parse import SplitResult, urlsplit

import httpx

from rag_async.domain.errors import RagError

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address

_MAX_URL = 2048
# What an IPv4 shorthand may be made of (decimal, octal, hex parts); anything else is a name.
_SHORTHAND = frozenset("0123456789abcdefx.")
# IPv6 ranges whose last 32 bits are an IPv4 address that the packets go on to.
_CARRIERS = {
    "an IPv4-compatible": ipaddress.IPv6Network("::/96"),
    "a NAT64": ipaddress.IPv6Network("64:ff9b::/96"),
}
_LOCAL_NAT64 = ipaddress.IPv6Network("64:ff9b:1::/48")  # RFC 8215: a network's own


class WebhookRefused(RagError):
    """A webhook URL this service will not call: 400 when a job asks for it."""

    status_code = 400
    code = "webhook_refused"


@dataclass(frozen=True, slots=True)
class Target:
    """A webhook URL taken apart, as the delivery needs it."""

    url: str
    scheme: str
    host: str  # lower case, an IPv6 literal without its brackets
    port: int


class HostPolicy:
    """RAG_WEBHOOK_HOSTS: names, "*.suffix" wildcards, IP literals, and "*" (any host whose
    addresses are public). A host the list names (or a wildcard covers) may be anywhere."""

    def __init__(self, hosts: str | None) -> None:
        entries = [entry.strip().lower() for entry in (hosts or "*").split(",")]
        entries = [entry for entry in entries if entry]
        self._any_public = "*" in entries
        self._names = {_bare(entry) for entry in entries if not entry.startswith("*")}
        self._suffixes = tuple(entry[1:] for entry in entries if entry.startswith("*."))

    def listed(self, host: str) -> bool:
        return host in self._names or host.endswith(self._suffixes)

    def check_url(self, url: str) -> Target:
        """The URL taken apart, or `WebhookRefused` saying what is wrong with it."""
        target = _parse(url)
        host = target.host
        if self.listed(host):
            return target
        if not self._any_public:
            raise WebhookRefused(f"webhooks may not go to {host}: it is not in RAG_WEBHOOK_HOSTS")
        if host == "localhost" or host.endswith(".localhost"):
            raise WebhookRefused(_not_public(host, "a loopback name"))
        address = _ip(host)
        if address is not None and not is_public(address):
            shorthand = address.version == 4 and str(address) != host
            shown = f"{host} (that is {address})" if shorthand else host
            raise WebhookRefused(_not_public(shown, _kind(address)))
        return target

    async def addresses(self, target: Target) -> list[IPAddress]:
        """The addresses of the target's host, every one allowed, or `WebhookRefused`.
        Raises OSError when the name does not resolve (worth another try later)."""
        loop = asyncio.get_running_loop()
        infos = await loop.getaddrinfo(target.host, target.port, type=socket.SOCK_STREAM)
        found = list(dict.fromkeys(ipaddress.ip_address(info[4][0]) for info in infos))
        if not self.listed(target.host):
            for address in found:
                if not is_public(address):
                    raise WebhookRefused(_not_public(f"{target.host} ({address})", _kind(address)))
        if not found:
            raise OSError(f"{target.host} has no address")
        return found


def is_public(address: IPAddress) -> bool:
    """A global unicast address: not loopback, private, link-local, shared, reserved or
    multicast. An IPv6 address carrying an IPv4 one is public only if that one is too (an
    IPv4-mapped address is judged as that one alone)."""
    if isinstance(address, ipaddress.IPv6Address):
        if address in _LOCAL_NAT64:
            return False
        carried = embedded_ipv4(address)
        if carried is not None:
            if not is_public(carried[1]):
                return False
            if address.ipv4_mapped is not None:
                return True
    return address.is_global and not address.is_multicast


def embedded_ipv4(address: ipaddress.IPv6Address) -> tuple[str, ipaddress.IPv4Address] | None:
    """The IPv4 address an IPv6 one carries, and how ("a 6to4", "a NAT64", ...), if it does."""
    if address.ipv4_mapped is not None:
        return "an IPv4-mapped", address.ipv4_mapped
    if address.sixtofour is not None:
        return "a 6to4", address.sixtofour
    if address.is_loopback or address.is_unspecified:
        return None  # ::1 and ::, themselves, not IPv4-compatible ones
    for how, network in _CARRIERS.items():
        if address in network:
            return how, ipaddress.IPv4Address(int(address) & 0xFFFFFFFF)
    return None


def _parse(url: str) -> Target:
    if len(url) > _MAX_URL:
        raise WebhookRefused(f"the webhook URL is {len(url)} characters long; at most {_MAX_URL}")
    # Before parsing: urlsplit drops tabs and newlines silently.
    if any(ord(char) < 0x21 or ord(char) == 0x7F for char in url):
        raise WebhookRefused("the webhook URL may not hold spaces or control characters")
    try:
        parts = urlsplit(url)
        port = parts.port
    except ValueError as error:
        raise WebhookRefused(f"the webhook URL is not a valid URL: {error}") from None
    if parts.scheme not in ("http", "https"):
        raise WebhookRefused("the webhook URL must be http:// or https://")
    if not parts.hostname:
        raise WebhookRefused("the webhook URL names no host")
    if parts.username is not None or parts.password is not None:
        raise WebhookRefused(
            "the webhook URL may not hold credentials: deliveries are signed (webhook-signature)"
        )
    host = _host(parts)
    if not host.isascii():
        raise WebhookRefused("the webhook URL's host must be ASCII (a name's xn-- form)")
    try:
        httpx.URL(url)  # what the delivery will build its request from
    except httpx.InvalidURL as error:
        raise WebhookRefused(f"the webhook URL is not a valid URL: {error}") from None
    default = 443 if parts.scheme == "https" else 80
    return Target(url, parts.scheme, host, port or default)


def _host(parts: SplitResult) -> str:
    return (parts.hostname or "").rstrip(".").lower()


def _bare(entry: str) -> str:
    """A listed host as `Target.host` spells it: an IPv6 literal without brackets."""
    return entry.removeprefix("[").removesuffix("]").rstrip(".")


def _ip(host: str) -> IPAddress | None:
    """The address `host` is, as the resolver reads it (IPv4 shorthands included), or None
    for a name."""
    try:
        return ipaddress.ip_address(host)
    except ValueError:
        pass
    if not set(host) <= _SHORTHAND:
        return None
    try:
        return ipaddress.IPv4Address(socket.inet_aton(host))
    except OSError:
        return None  # a name after all (say "cafe"): judged when resolved


def _kind(address: IPAddress) -> str:
    if isinstance(address, ipaddress.IPv6Address):
        if address in _LOCAL_NAT64:
            return "a local NAT64 address"
        carried = embedded_ipv4(address)
        if carried is not None and not is_public(carried[1]):
            how, inner = carried
            return f"{_kind(inner)} ({inner}) inside {how} address"
    if address.is_loopback:
        return "a loopback address"
    if address.is_link_local:
        return "a link-local address"
    if address.is_multicast:
        return "a multicast address"
    if address.is_private:
        return "a private address"
    return "not a public address"


def _not_public(host: str, kind: str) -> str:
    return f"webhooks may not go to {host}: {kind}; list the host in RAG_WEBHOOK_HOSTS to allow it"
