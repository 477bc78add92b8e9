"""InfluxDB, in one room: which one ``TSWARM_INFLUX_*`` name, and how tswarm talks to it.

Every reading is one point of measurement ``climate``, tag ``node``, float fields ``temperature``
and ``humidity``, and the telemetry the node sent with it, each only when present: ``vbat`` (float,
volts), ``rssi`` (integer, dBm), ``awake_ms`` and ``lost`` (integers); at the reading's nanosecond
timestamp. Two APIs:

- ``TSWARM_INFLUX_API=2`` (:class:`V2Endpoint`): InfluxDB 2.x/3.x, or anything that speaks
  ``/api/v2/write``; token, organisation and bucket;
- ``TSWARM_INFLUX_API=1`` (:class:`V1Endpoint`): InfluxDB 1.x's ``/write`` and InfluxQL
  ``/query``; database, optional user and password.

:func:`endpoint` is the one place the API is chosen; what each side needs is built from the
endpoint it returns:

- :mod:`.lines`: a reading as line protocol (what influxdb-client's ``Point`` writes, fast);
- :mod:`.write`: the write targets the forwarder and the backfill send batches to;
- :mod:`.query`: the history reads (InfluxQL chunked on 1.x, Flux ``query_stream`` on 2.x) that
  give back what the journal pruned (see :mod:`tswarm.history`).

This module imports neither aiohttp nor influxdb-client: :mod:`tswarm.export` and the CLI's
reading commands import it without paying for them. The submodules are imported when used.
"""
from __future__ import annotations

import json
import re
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Union
from urllib.parse import unquote, urlsplit, urlunsplit

if TYPE_CHECKING:
    from ..settings import Config
    from .query import InfluxHistory
    from .write import InfluxTarget

MEASUREMENT = "climate"
TAG_NODE = "node"
# The field type of each of the storage's EXTRA_FIELDS, in their order (vbat, rssi, awake_ms, lost).
EXTRA_TYPES = (float, int, int, int)
MAX_ERROR_CHARS = 500  # of what InfluxDB says in an error answer


def split_credentials(url: str) -> tuple[str, str, str]:
    """``url`` without its ``user:password@`` if it has one (so no log line, ``/healthz`` or
    ``tswarm status`` shows them, and aiohttp does not refuse them beside a user of its own), and
    that user and password ("" when none)."""
    url = url.strip()
    parts = urlsplit(url)
    if "@" not in parts.netloc:
        return url, "", ""
    userinfo, _, host = parts.netloc.rpartition("@")
    user, _, password = userinfo.partition(":")
    return urlunsplit(parts._replace(netloc=host)), unquote(user), unquote(password)


@dataclass(frozen=True)
class V1Endpoint:
    """InfluxDB 1.x: ``/write?db=...`` and InfluxQL ``/query``, as ``user`` (none when empty)."""

    url: str
    db: str
    user: str = ""
    password: str = field(default="", repr=False)

    def __post_init__(self) -> None:
        """A ``user:password@`` in the URL is the user and password, unless ``user`` is given."""
        url, user, password = split_credentials(self.url)
        object.__setattr__(self, "url", url.rstrip("/"))
        if user and not self.user:
            object.__setattr__(self, "user", user)
            object.__setattr__(self, "password", password)

    @property
    def where(self) -> str:
        """``v1 API at URL, database 'DB'`` (``tswarm status``, ``/healthz``)."""
        return f"v1 API at {self.url}, database {self.db!r}"

    @property
    def description(self) -> str:
        """``InfluxDB v1 API at URL, database 'DB'`` (log lines and error messages)."""
        return f"InfluxDB {self.where}"

    def open_target(self) -> "InfluxTarget":
        """The write target (call inside a running event loop)."""
        from .write import V1Target

        return V1Target(self.url, self.db, self.user, self.password)

    def open_history(self) -> "InfluxHistory":
        from .query import V1History

        return V1History(self.url, self.db, self.user, self.password)


@dataclass(frozen=True)
class V2Endpoint:
    """The v2 API (InfluxDB 2.x/3.x) through influxdb-client: ``org`` and ``bucket``, with ``token``."""

    url: str
    token: str = field(repr=False)
    org: str
    bucket: str

    def __post_init__(self) -> None:
        """A ``user:password@`` in the URL is dropped: the token authenticates."""
        object.__setattr__(self, "url", split_credentials(self.url)[0])

    @property
    def where(self) -> str:
        """``v2 API at URL, bucket 'BUCKET'`` (``tswarm status``, ``/healthz``)."""
        return f"v2 API at {self.url}, bucket {self.bucket!r}"

    @property
    def description(self) -> str:
        """``InfluxDB v2 API at URL, bucket 'BUCKET'`` (log lines and error messages)."""
        return f"InfluxDB {self.where}"

    def open_target(self) -> "InfluxTarget":
        """The write target (call inside a running event loop)."""
        from .write import V2Target

        return V2Target(self.url, self.token, self.org, self.bucket)

    def open_history(self) -> "InfluxHistory":
        from .query import V2History

        return V2History(self.url, self.token, self.org, self.bucket)


Endpoint = Union[V1Endpoint, V2Endpoint]


def endpoint(config: "Config") -> Endpoint:
    """The InfluxDB that ``TSWARM_INFLUX_*`` describe: the one place the v1/v2 choice is made."""
    if config.influx_api == "1":
        return V1Endpoint(config.influx_url, config.influx_db, config.influx_user, config.influx_password)
    return V2Endpoint(config.influx_url, config.influx_token, config.influx_org, config.influx_bucket)


def _said(body: Union[bytes, str, None]) -> tuple[str, object]:
    """The body as text, and its JSON (None when it is not JSON)."""
    text = body.decode("utf-8", "replace") if isinstance(body, bytes) else str(body or "")
    try:
        return text, json.loads(text)
    except ValueError:
        return text, None


def is_influx_error(body: Union[bytes, str, None]) -> bool:
    """Whether an error answer is InfluxDB's own: a JSON object with its ``"error"`` (1.x, 3.x) or
    ``"message"`` (2.x). A proxy's or another server's answer (a page, plain text) is not."""
    data = _said(body)[1]
    return isinstance(data, dict) and bool(data.get("error") or data.get("message"))


def error_text(body: Union[bytes, str, None]) -> str:
    """What an InfluxDB error answer says, on one line: the ``"error"`` (1.x) or ``"message"`` (2.x)
    of its JSON, the title of an HTML page (a proxy's), else the body as it is; white space
    collapsed, at most ``MAX_ERROR_CHARS``."""
    text, data = _said(body)
    if isinstance(data, dict):
        text = str(data.get("error") or data.get("message") or text)
    elif text.lstrip().startswith("<"):
        title = re.search(r"<title[^>]*>(.*?)</title>", text, re.IGNORECASE | re.DOTALL)
        text = f"an HTML page ({title.group(1).strip()})" if title and title.group(1).strip() else "an HTML page"
    return " ".join(text.split())[:MAX_ERROR_CHARS]
