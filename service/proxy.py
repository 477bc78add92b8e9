"""Behind a TLS proxy (Cloudflare and Heroku's router, nginx on a Pi): who the client is, and HTTPS.

Two middlewares, both off unless configured:

- ``TSWARM_TRUSTED_PROXIES`` (addresses and CIDRs): when the TCP peer is one of them, the client's
  address is taken from ``X-Forwarded-For`` (walking from the right past further trusted proxies)
  and the scheme from ``X-Forwarded-Proto``. From any other peer both headers are ignored, so
  nobody can pick their own address by sending the header. Everything downstream sees the result as
  ``request.remote`` and ``request.secure``: the brute-force guard counts failures per real client,
  not per proxy, and "readers on loopback only" stays true behind a local nginx.
- ``TSWARM_FORCE_HTTPS``: the page (``GET``/``HEAD /`` and ``/static/*``) over plain HTTP is
  redirected to HTTPS, and HTTPS answers carry ``Strict-Transport-Security``. Nothing else is ever
  redirected: firmware in the field does not follow redirects, so ``/api/nodes/*`` (and the API,
  ``/healthz``, ``/metrics``) answer over plain HTTP as before.

aiohttp-remotes was considered: its ``XForwardedFiltered`` does not check the TCP peer (any client
could choose its address), and ``XForwardedStrict`` answers 400 to requests that did not pass the
proxy (a node on the LAN talking to the Pi directly), so this is a small middleware of our own.
"""
from __future__ import annotations

import ipaddress
from typing import Iterable, Optional, Sequence

from aiohttp import web

from .settings import Config

Network = ipaddress.IPv4Network | ipaddress.IPv6Network
HSTS = "max-age=31536000"  # one year; not includeSubDomains: other hosts of the domain are not ours to decide
PAGE_PATHS = ("/",)
PAGE_PREFIXES = ("/static/",)


def parse_networks(value: str | Iterable[str]) -> tuple[Network, ...]:
    """``"10.0.0.0/8, 127.0.0.1"`` -> networks; raises ValueError naming a bad entry."""
    items = value.split(",") if isinstance(value, str) else value
    networks = []
    for item in (i.strip() for i in items):
        if not item:
            continue
        try:
            networks.append(ipaddress.ip_network(item, strict=False))
        except ValueError:
            raise ValueError(f"{item!r} is not an IP address or network (CIDR)") from None
    return tuple(networks)


def _address(text: str) -> Optional[ipaddress.IPv4Address | ipaddress.IPv6Address]:
    text = text.strip()
    if text.startswith("[") and "]" in text:  # [v6]:port
        text = text[1 : text.index("]")]
    elif text.count(":") == 1:  # v4:port
        text = text.split(":")[0]
    try:
        address = ipaddress.ip_address(text.split("%")[0])
    except ValueError:
        return None
    return address.ipv4_mapped or address if isinstance(address, ipaddress.IPv6Address) else address


def _trusted(address, networks: Sequence[Network]) -> bool:
    return address is not None and any(address in network for network in networks)


def client_address(peer: Optional[str], forwarded_for: Sequence[str], networks: Sequence[Network]) -> Optional[str]:
    """The client's address: ``peer`` unless it is a trusted proxy; then the right-most address of
    ``X-Forwarded-For`` that is not a trusted proxy (or the left-most one, if all are)."""
    if not _trusted(_address(peer or ""), networks):
        return peer
    hops = [h for value in forwarded_for for h in value.split(",") if h.strip()]
    client = peer
    for hop in reversed(hops):
        address = _address(hop)
        if address is None:
            break  # garbage: trust nothing further left
        client = str(address)
        if not _trusted(address, networks):
            break
    return client


def proxy_middleware(networks: Sequence[Network]):
    @web.middleware
    async def forwarded(request: web.Request, handler):
        peer = request.remote
        if not _trusted(_address(peer or ""), networks):
            return await handler(request)
        changes = {}
        remote = client_address(peer, request.headers.getall("X-Forwarded-For", []), networks)
        if remote != peer:
            changes["remote"] = remote
        proto = request.headers.get("X-Forwarded-Proto", "").split(",")[0].strip().lower()
        if proto in ("http", "https"):
            changes["scheme"] = proto
        return await handler(request.clone(**changes) if changes else request)

    return forwarded


def is_page(request: web.Request) -> bool:
    return request.method in ("GET", "HEAD") and (
        request.path in PAGE_PATHS or request.path.startswith(PAGE_PREFIXES)
    )


@web.middleware
async def force_https(request: web.Request, handler):
    """Redirect the page to HTTPS; never anything else. HSTS on HTTPS answers (those not already
    streaming: a browser learns it from the page)."""
    if not request.secure and is_page(request):
        raise web.HTTPPermanentRedirect(request.url.with_scheme("https").with_port(None))
    response = await handler(request)
    if request.secure and not response.prepared:
        response.headers.setdefault("Strict-Transport-Security", HSTS)
    return response


def middlewares(config: Config) -> list:
    """The middlewares ``create_app`` puts first (forwarded headers before anything reads the peer)."""
    chain = []
    if config.trusted_proxies:
        chain.append(proxy_middleware(parse_networks(config.trusted_proxies)))
    if config.force_https:
        chain.append(force_https)
    return chain
