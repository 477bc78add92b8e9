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
  ``/healthz``, ``/metrics``) answer over plain HTTP as before. Where to: tswarm has no TLS of its
  own, so HTTPS is the proxy's. Through a trusted proxy, the redirect goes to the host (and port)
  the proxy says, ``X-Forwarded-Host`` or else ``Host`` (a plain-HTTP ``:80`` dropped); a request
  that reached tswarm's own port directly goes to the HTTPS port (443) of the same host name, never
  to tswarm's port, where nothing speaks TLS. Without trusted proxies tswarm can never learn that
  a request was HTTPS (every page answer would redirect again), so that is a warning at start.

aiohttp-remotes was considered: its ``XForwardedFiltered`` does not check the TCP peer (any client
could choose its address), and ``XForwardedStrict`` answers 400 to requests that did not pass the
proxy (a node on the LAN talking to the Pi directly), so this is a small middleware of our own.
"""
from __future__ import annotations

import ipaddress
import logging
from typing import Optional, Sequence

from aiohttp import web
from yarl import URL

from .errors import json_error
from .settings import Config, Network, parse_networks  # TSWARM_TRUSTED_PROXIES is read there

log = logging.getLogger("tswarm.proxy")

HSTS = "max-age=31536000"  # one year; not includeSubDomains: other hosts of the domain are not ours to decide
PAGE_PATHS = ("/",)
PAGE_PREFIXES = ("/static/",)
VIA_TRUSTED_PROXY = web.RequestKey("via_trusted_proxy", bool)  # the TCP peer is a trusted proxy


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
        request = request.clone(**changes) if changes else request
        request[VIA_TRUSTED_PROXY] = True
        return await handler(request)

    return forwarded


def is_page(request: web.Request) -> bool:
    return request.method in ("GET", "HEAD") and (
        request.path in PAGE_PATHS or request.path.startswith(PAGE_PREFIXES)
    )


def https_location(request: web.Request) -> Optional[str]:
    """Where the page is over HTTPS: the host (and port) a trusted proxy says, else the HTTPS port of
    the host name the request was sent to; the same path and query. None when the host is no host."""
    proxied = request.get(VIA_TRUSTED_PROXY, False)
    authority = request.host
    if proxied:
        authority = request.headers.get("X-Forwarded-Host", "").split(",")[0].strip() or authority
    try:
        if any(c in authority for c in "/?#@\\"):
            raise ValueError(authority)
        asked = URL("http://" + authority)
        port = asked.explicit_port if proxied and asked.explicit_port != 80 else None
        base = URL.build(scheme="https", host=asked.host or "", port=port)
    except (ValueError, TypeError, UnicodeError):
        return None
    return str(base) + request.raw_path if base.host else None


@web.middleware
async def force_https(request: web.Request, handler):
    """Redirect the page to HTTPS; never anything else. HSTS on HTTPS answers (those not already
    streaming: a browser learns it from the page)."""
    if not request.secure and is_page(request):
        location = https_location(request)
        if location is None:
            return json_error(400, "bad_request", "the Host (or X-Forwarded-Host) header is not a host name;"
                              " the page is redirected to HTTPS on that host")
        raise web.HTTPPermanentRedirect(location)
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
        if not config.trusted_proxies and config.worker == 0:
            log.warning(
                "TSWARM_FORCE_HTTPS=1 without TSWARM_TRUSTED_PROXIES: tswarm has no TLS of its own and believes no"
                " proxy's X-Forwarded-Proto, so the page is redirected to HTTPS on every request, also when it came"
                " over HTTPS; set TSWARM_TRUSTED_PROXIES to the TLS proxy's address, or TSWARM_FORCE_HTTPS=0"
            )
        chain.append(force_https)
    return chain
