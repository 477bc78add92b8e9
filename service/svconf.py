"""A node's ``svconf``: what its firmware's config.json needs to reach this service.

Printed by ``tswarm node add``/``node passwd``, written into a board's config.json by ``tswarm flash``
and ``tswarm node config``, and returned by the admin API's node routes.

``url`` is ``TSWARM_PUBLIC_URL`` when it is set; ``url_local`` (which the firmware tries only when
``url`` cannot be reached) is this machine's LAN address with the port ``serve`` listens on: the
running service's own (it keeps it in its data dir's lock, service/datadir.py), else the setting
``serve`` reads (``TSWARM_PORT``, ``PORT`` wins). The LAN address is the source
address of the default route, as the kernel picks it; never the host name, which Debian and
Raspberry Pi OS map to 127.0.1.1 in /etc/hosts.
"""
from __future__ import annotations

import ipaddress
import socket
from typing import Optional
from urllib.parse import urlsplit

from . import auth
from .settings import Config

# Any address outside the LAN: its route is the default route. connect() on a UDP socket sends
# nothing; it only makes the kernel choose the route and so the source address.
ROUTE_PROBE = ("8.8.8.8", 53)


def source_address(destination: tuple[str, int] = ROUTE_PROBE) -> str:
    """The address this machine would send from to reach ``destination`` (OSError without a route)."""
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
        sock.connect(destination)
        return sock.getsockname()[0]


def unreachable_host(host: str) -> bool:
    """True for a host no board can reach this machine at: loopback, ``localhost``, 0.0.0.0."""
    host = host.strip("[]").lower().rstrip(".")
    if host == "localhost" or host.endswith(".localhost"):
        return True
    try:
        address = ipaddress.ip_address(host)
    except ValueError:
        return False  # a name: resolved by the board's DNS, not ours
    return address.is_loopback or address.is_unspecified


def lan_address() -> Optional[str]:
    """This machine's address on its default route, or None (no route, or only loopback)."""
    try:
        address = source_address()
    except OSError:
        return None
    return None if unreachable_host(address) else address


def service_port(config: Config) -> int:
    """The port nodes must send to: that of the ``tswarm serve`` running on this data dir, else the
    one ``serve`` would take from the settings."""
    from .datadir import serving_port

    return serving_port(config.data_dir) or config.port


def local_base_url(config: Config) -> Optional[str]:
    """``http://<LAN address>:<port serve uses>``, or None when this machine has no LAN address."""
    address = lan_address()
    return f"http://{address}:{service_port(config)}" if address else None


def svconf(config: Config, name: str, password: str) -> dict:
    local = local_base_url(config)
    base = config.public_url or local or f"http://127.0.0.1:{service_port(config)}"
    return {
        "url": f"{base}/api/nodes/{name}",
        # Without a LAN address, url_local repeats url (the firmware then skips it): never a loopback URL
        # beside a reachable one.
        "url_local": f"{local or base}/api/nodes/{name}",
        "login": name,
        "xauth": auth.xauth(name, password),
    }


def loopback_problem(config: Config, conf: dict) -> Optional[str]:
    """Why ``conf`` points a board at an address it cannot reach, in one sentence, or None."""
    url = conf["url"]
    if not unreachable_host(urlsplit(url).hostname or ""):
        return None
    example = local_base_url(config) or f"http://192.168.1.20:{config.port}"  # this machine's, when it has one
    if config.public_url:
        return (f"TSWARM_PUBLIC_URL {config.public_url} is this machine's loopback, which a board cannot reach:"
                f" set it to the address or name nodes reach this machine at (e.g. {example})")
    return (f"this machine has no LAN address (no default route), so the node's url would be {url}, which a board"
            f" cannot reach: set TSWARM_PUBLIC_URL to the address nodes reach this machine at (e.g. {example})")
