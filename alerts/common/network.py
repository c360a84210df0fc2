"""Where a request came from, when the newsroom's reverse proxies stand in front of us.

Behind a proxy, REMOTE_ADDR is the proxy and the reader's address is in
X-Forwarded-For, where anyone can write anything: each proxy appends the address it
saw, so only the entries our own proxies appended can be believed. TRUSTED_PROXIES
says which those are, either as a count (the last N hops are ours) or as networks
(hops inside them are ours). `client_address` is the one place that reads it; the
rate limiter and the consent record both use it, so they always agree.
"""

from __future__ import annotations

import ipaddress
from functools import lru_cache

from django.conf import settings
from django.http import HttpRequest

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address

# A header is a few entries; past this it is junk, and parsing it is wasted work.
MAX_FORWARDED_ENTRIES = 20


def client_address(request: HttpRequest) -> str | None:
    """The reader's IP address as the trusted proxies saw it, or None if it cannot be
    told (a malformed header from our own proxy side). Never raises. Worked out once
    per request: the rate limit and the consent record both ask."""
    try:
        return request._client_address
    except AttributeError:
        request._client_address = address = _client_address(request)
        return address


def _client_address(request: HttpRequest) -> str | None:
    remote = _parse(request.META.get("REMOTE_ADDR", ""))
    trusted = settings.TRUSTED_PROXIES
    if remote is None or not trusted:
        return _text(remote)
    hops = _forwarded_for(request.META.get("HTTP_X_FORWARDED_FOR", ""))
    if isinstance(trusted, int):
        return _text(_by_count(hops, remote, trusted))
    return _text(_by_networks(hops, remote, _networks(tuple(trusted))))


def _by_count(hops: list[IPAddress | None], remote: IPAddress, count: int) -> IPAddress | None:
    # With N proxies the last N entries were written by them, and the first of those
    # is the address the outermost proxy saw: the client. Fewer entries than proxies
    # means the request did not come through all of them; trust only REMOTE_ADDR then
    # (as Werkzeug's ProxyFix does).
    if len(hops) < count:
        return remote
    return hops[-count]


def _by_networks(hops: list[IPAddress | None], remote: IPAddress, networks) -> IPAddress | None:
    # Walk back from the nearest hop while it is one of ours: the first address that
    # is not is the client. Junk in that walk means it is not ours to believe.
    chain = [*hops, remote]
    for index in range(len(chain) - 1, -1, -1):
        hop = chain[index]
        if hop is None:
            return None
        if not any(hop in network for network in networks):
            return hop
    return chain[0]


def _forwarded_for(header: str) -> list[IPAddress | None]:
    if not isinstance(header, str) or not header.strip():
        return []
    entries = header.split(",")[-MAX_FORWARDED_ENTRIES:]
    return [_parse(entry) for entry in entries]


def _parse(value: str) -> IPAddress | None:
    """One address as proxies write it: bare, or with a port (`1.2.3.4:80`,
    `[2001:db8::1]:443`). None for anything else."""
    value = value.strip() if isinstance(value, str) else ""
    if value.startswith("["):
        value = value[1:].partition("]")[0]
    elif value.count(":") == 1:
        value = value.partition(":")[0]
    try:
        address = ipaddress.ip_address(value)
    except ValueError:
        return None
    # An IPv4 client seen by an IPv6 socket: the same reader either way.
    mapped = getattr(address, "ipv4_mapped", None)
    return mapped or address


def _text(address: IPAddress | None) -> str | None:
    return None if address is None else str(address)


@lru_cache(maxsize=8)
def _networks(specs: tuple[str, ...]) -> tuple:
    return tuple(ipaddress.ip_network(spec, strict=False) for spec in specs)


def ratelimit_key(group: str, request: HttpRequest) -> str:
    """django-ratelimit's key: the client address, an IPv6 reader counted by their /64
    (one home network has billions of addresses), as django-ratelimit's own "ip" key
    does. Requests whose address cannot be told share one budget."""
    address = client_address(request)
    if address is None:
        return "unknown"
    parsed = ipaddress.ip_address(address)
    if parsed.version == 6:
        return str(ipaddress.ip_network(f"{parsed}/64", strict=False).network_address)
    return address
