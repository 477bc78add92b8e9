"""The node-name rule: what a node may be called, everywhere a name is given (the node protocol's
URL, ``tswarm node ...``, the admin API, ``tswarm export --node``, ``/api/readings?node=``, flashing).

No aiohttp here: the CLI and the exporter import it without the server.
"""
from __future__ import annotations

import re

# Node names: letters, digits, '_', '-', '.', starting with a letter or digit, at most 64.
NODE_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]{0,63}", re.ASCII)
NODE_NAME_HELP = "1-64 characters of A-Z a-z 0-9 _ . -, starting with a letter or digit"


def valid_node_name(name: str) -> bool:
    return NODE_NAME.fullmatch(name) is not None
