"""A node's ``svconf``: what its firmware's config.json needs to reach this service.

Printed by ``tswarm node add``/``node passwd`` and returned by the admin API's node routes.
"""
from __future__ import annotations

import socket

from . import auth
from .settings import Config


def local_address() -> str:
    """This machine's address as the LAN sees it, best effort, without sending anything."""
    try:
        for info in socket.getaddrinfo(socket.gethostname(), None, socket.AF_INET):
            address = info[4][0]
            if not address.startswith("127."):
                return address
    except OSError:
        pass
    return "127.0.0.1"


def svconf(config: Config, name: str, password: str) -> dict:
    local = f"http://{local_address()}:{config.port}"
    base = config.public_url or local
    return {
        "url": f"{base}/api/nodes/{name}",
        "url_local": f"{local}/api/nodes/{name}",
        "login": name,
        "xauth": auth.xauth(name, password),
    }
