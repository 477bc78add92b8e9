"""Every setting of the service, each declared once: the docs, `--help` and `tswarm settings` are drawn from it.

Configuration comes from ``TSWARM_*`` environment variables (12-factor); a command-line
flag, where there is one, wins over its variable, and ``PORT`` (Heroku) wins over both.

A setting is one field of :class:`Config`, declared with :func:`setting`: its variable, its default
(as it would be typed in the environment), the parser that reads it (with its range or choices) and
its help. The field's default is the parser's reading of that default, so ``Config()`` and
``Config.from_env({})`` are the same configuration. The fields below the settings are not read from
the environment.
"""
from __future__ import annotations

import ipaddress
import os
import re
from dataclasses import dataclass, field, fields, replace
from pathlib import Path
from typing import Any, Callable, Iterable, Mapping, Optional
from urllib.parse import urlsplit

from .auth import SCRYPT_N


class ConfigError(ValueError):
    """A setting has a value the service cannot use."""


# -- parsers: the text of a variable -> its value ---------------------------------------------------


class Parser:
    """How a setting's text becomes its value.

    ``read`` takes the environment's text and refuses text it cannot take (the error quotes the
    text); ``check`` refuses a value however it came, from the environment, a flag or an override.
    ``words`` fill the ``{placeholders}`` of the setting's help (its range, its choices)."""

    def read(self, name: str, text: str) -> Any:
        return text

    def check(self, name: str, value: Any) -> None:
        pass

    def words(self) -> dict[str, str]:
        return {}


class Text(Parser):
    """Any text, as given."""


class Host(Parser):
    """An address or a host name, as given; a text that no resolver can take (not IDNA: an empty
    label, one longer than 63 characters, bytes that are not UTF-8) is refused here, not at bind."""

    def check(self, name: str, value: Any) -> None:
        try:
            value.encode("idna")
        except UnicodeError:
            raise ConfigError(f"{name} must be an address or a host name like 0.0.0.0, :: or myhost.lan,"
                              f" got {value!r}") from None


class Folder(Parser):
    """A path, as given (whether it is usable is checked where the journal opens)."""

    def read(self, name: str, text: str) -> Path:
        return Path(text)


_TRUE = {"1", "true", "yes", "on"}
_FALSE = {"0", "false", "no", "off", ""}


class Flag(Parser):
    """``1``/``0``, ``true``/``false``, ``yes``/``no``, ``on``/``off`` (any case); empty is off."""

    def read(self, name: str, text: str) -> bool:
        word = text.strip().lower()
        if word not in _TRUE | _FALSE:
            raise ConfigError(f"{name} must be 1 or 0 (or true/false, yes/no, on/off), got {text!r}")
        return word in _TRUE


@dataclass(frozen=True)
class Whole(Parser):
    """A whole number of ASCII digits between ``low`` and ``high``, as ``to`` (``int`` or ``float``)."""

    low: int
    high: int
    to: Callable[[int], Any] = int

    def read(self, name: str, text: str) -> Any:
        digits = text.strip()
        if not re.fullmatch(r"[+-]?[0-9]{1,20}", digits):
            raise ConfigError(f"{name} must be a whole number between {self.low} and {self.high}, got {text!r}")
        number = int(digits)
        if not self.low <= number <= self.high:
            raise ConfigError(f"{name} must be between {self.low} and {self.high}, got {text!r}")
        return self.to(number)

    def check(self, name: str, value: Any) -> None:
        if not self.low <= value <= self.high:
            raise ConfigError(f"{name} must be between {self.low} and {self.high}, got {value}")

    def words(self) -> dict[str, str]:
        return {"range": f"{self.low} to {self.high}"}


@dataclass(frozen=True)
class Decimal(Parser):
    """A decimal number (``3.3``, ``12``) above ``above`` and at most ``high``, as a float."""

    above: float
    high: float

    def read(self, name: str, text: str) -> float:
        digits = text.strip()
        if not re.fullmatch(r"[+-]?[0-9]{1,20}(\.[0-9]{1,20})?|[+-]?\.[0-9]{1,20}", digits):
            raise ConfigError(f"{name} must be a decimal number above {self.above:g} and at most {self.high:g}, got {text!r}")
        number = float(digits)
        if not self.above < number <= self.high:
            raise ConfigError(f"{name} must be above {self.above:g} and at most {self.high:g}, got {text!r}")
        return number

    def check(self, name: str, value: Any) -> None:
        if not self.above < value <= self.high:
            raise ConfigError(f"{name} must be above {self.above:g} and at most {self.high:g}, got {value}")

    def words(self) -> dict[str, str]:
        return {"range": f"above {self.above:g}, at most {self.high:g}"}


@dataclass(frozen=True)
class Choice(Parser):
    """One of a few words, compared once ``normalize`` has tidied the text."""

    choices: tuple[str, ...]
    normalize: Callable[[str], str] = str.strip

    def read(self, name: str, text: str) -> str:
        return self.normalize(text)

    def check(self, name: str, value: Any) -> None:
        if value not in self.choices:
            raise ConfigError(f"{name} must be {' or '.join(map(repr, self.choices))}, got {value!r}")


LOG_LEVELS = ("DEBUG", "INFO", "WARNING", "ERROR", "CRITICAL")


class LogLevel(Parser):
    """One of :data:`LOG_LEVELS`, in any case."""

    def read(self, name: str, text: str) -> str:
        if text.strip().upper() not in LOG_LEVELS:
            raise ConfigError(f"{name} must be one of {', '.join(LOG_LEVELS)}, got {text!r}")
        return text.strip().upper()

    def check(self, name: str, value: Any) -> None:
        if value not in LOG_LEVELS:
            raise ConfigError(f"{name} must be one of {', '.join(LOG_LEVELS)}, got {value!r}")

    def words(self) -> dict[str, str]:
        return {"levels": f"{', '.join(LOG_LEVELS[:-1])} or {LOG_LEVELS[-1]}"}


_DURATION_UNITS = {"s": 1, "m": 60, "h": 3600, "d": 86400}
MAX_RETENTION_S = 36500 * 86400  # a hundred years: beyond it the cut-off would leave 64-bit nanoseconds


def parse_duration(name: str, value: str) -> int:
    """``30d``, ``12h``, ``90m``, ``45s`` or plain seconds -> seconds (up to a hundred years)."""
    text = value.strip().lower()
    number, unit = (text[:-1], text[-1]) if text[-1:] in _DURATION_UNITS else (text, "s")
    if not re.fullmatch(r"[+-]?[0-9]{1,20}", number):
        raise ConfigError(f"{name} must be a duration like 30d, 12h, 90m, 45s or seconds, got {value!r}")
    seconds = int(number) * _DURATION_UNITS[unit]
    if seconds < 0:
        raise ConfigError(f"{name} must not be negative, got {value!r}")
    if seconds > MAX_RETENTION_S:
        raise ConfigError(f"{name} must be at most 36500d (a hundred years), got {value!r}")
    return seconds


class Duration(Parser):
    """A duration (:func:`parse_duration`) in seconds; empty is not set (``None``)."""

    def read(self, name: str, text: str) -> Optional[int]:
        return parse_duration(name, text) if text.strip() else None

    def words(self) -> dict[str, str]:
        return {"most": f"{MAX_RETENTION_S // 86400}d"}


Network = ipaddress.IPv4Network | ipaddress.IPv6Network


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


class Networks(Parser):
    """Comma-separated addresses and networks (CIDR), kept as the texts (the middleware parses them)."""

    def read(self, name: str, text: str) -> tuple[str, ...]:
        return tuple(item.strip() for item in text.split(",") if item.strip())

    def check(self, name: str, value: Any) -> None:
        try:
            parse_networks(value)
        except ValueError as exc:
            raise ConfigError(f"{name}: {exc}") from None


def _check_public_url(url: str) -> None:
    """TSWARM_PUBLIC_URL is what boards are flashed with: an http(s) URL with a host, nothing after its path."""
    try:
        parts = urlsplit(url)
        parts.port  # noqa: B018 (raises ValueError for a port that is not a number in 0-65535)
    except ValueError:
        parts = None
    if (parts is None or any(c.isspace() for c in url) or parts.scheme not in ("http", "https")
            or not parts.hostname or parts.query or parts.fragment):
        raise ConfigError(
            f"TSWARM_PUBLIC_URL must be an http:// or https:// URL with a host, like http://192.168.1.20:8080"
            f" (a path is allowed, no ?query or #fragment), got {url!r}"
        )


class PublicUrl(Parser):
    """Empty, or the base URL boards are flashed with (:func:`_check_public_url`), without a trailing ``/``."""

    def read(self, name: str, text: str) -> str:
        return text.rstrip("/")

    def check(self, name: str, value: Any) -> None:
        if value:
            _check_public_url(value)


class InfluxUrl(Parser):
    """An ``http://`` or ``https://`` URL with a host (and a port above 0, if any), no white space, no
    ``?query`` or ``#fragment`` (the API's paths are added to it). Quoted back without the password of
    a ``user:password@`` in it."""

    def check(self, name: str, value: Any) -> None:
        text = value.strip()
        try:
            url = urlsplit(text)
            good = url.scheme in ("http", "https") and bool(url.hostname) and (url.port is None or url.port > 0)
        except ValueError:  # a [ without its ], a port that is no number
            good = False
        if not good or any(c.isspace() for c in text) or url.query or url.fragment:
            start, at = text.find("://") + 3, text.rfind("@")
            shown = text[:start] + "***" + text[at:] if start > 2 and at > start else value
            raise ConfigError(f"{name} must be an http:// or https:// URL like http://localhost:8086, got {shown!r}")


class WebhookUrl(Parser):
    """Empty, or an ``http://`` / ``https://`` URL with a host. Its text is never quoted back: a webhook's
    URL is often its secret (Slack's, a token in the query)."""

    def read(self, name: str, text: str) -> str:
        return text.strip()

    def check(self, name: str, value: Any) -> None:
        if not value:
            return
        try:
            url = urlsplit(value)
            port_ok = url.port is None or url.port > 0
        except ValueError:
            port_ok = False
        if not port_ok or url.scheme not in ("http", "https") or not url.hostname or any(c.isspace() for c in value):
            raise ConfigError(
                f"{name} must be an http:// or https:// URL like https://ntfy.sh/my-swarm (or empty: no alerts);"
                " the value given is not one (not shown: it may hold a secret)"
            )


class DatabaseUrl(Parser):
    """Empty, or a ``postgres://`` / ``postgresql://`` URL that names its server. Its text is never quoted
    back: it holds a password. (``tswarm migrate --to`` checks its URL with :meth:`fault` too.)"""

    OTHER_SCHEME = "is not one"  # what fault says of a URL of another scheme (or no URL)

    @classmethod
    def fault(cls, url: str) -> str:
        """What is wrong with ``url`` as the URL of a PostgreSQL server, in words that quote none of it
        ("" when nothing is). A URL without a host (``postgres://``) is one: libpq would try a local
        socket the service never has, and say so only after the checks passed. Neither can the user
        part hold an ``@`` as written: libpq ends it at the first, urlsplit at the last, so the
        password's tail would be taken for the host, and quoted as such in libpq's errors; nor a
        / ? or # (Heroku's generated passwords have none, a pasted one may): the user part would end
        there, and libpq try the user's name as the host."""
        try:
            parts = urlsplit(url)
            host = parts.hostname
        except ValueError:  # a [ of an IPv6 address without its ]
            return "cannot be read (an IPv6 address's [ without its ]?)"
        if parts.scheme.lower() not in ("postgres", "postgresql"):
            return cls.OTHER_SCHEME
        try:
            url.encode("utf-8")
        except UnicodeEncodeError:  # bytes of a command line that are not UTF-8: libpq takes none
            return "is not UTF-8 text"
        if parts.netloc.count("@") > 1:
            return "has an @ in its user or password (write it %40)"
        before_at, at, _ = parts.query.partition("@")
        if "@" in parts.path or "@" in parts.fragment or (at and "=" not in before_at):
            # an unencoded / ? or # in the password ends the user part there (a parameter is key=value)
            return "has a / ? or # in its password (write them %2F %3F %23)"
        if not host and not re.search(r"(?:^|&)host(?:addr)?=[^&]", parts.query):
            return "names no host"
        return ""

    def read(self, name: str, text: str) -> str:
        self.check(name, text.strip())
        return text.strip()

    def check(self, name: str, value: Any) -> None:
        fault = self.fault(value) if value else ""
        if fault:
            raise ConfigError(
                f"{name} must be a postgres:// or postgresql:// URL like postgres://user:password@host:5432/db"
                f" (or empty); the value given {fault} (not shown: it may hold a password)"
            )


# -- the declaration ---------------------------------------------------------------------------------

_READ_DEFAULT: Any = object()  # the field's value when its variable is not set: the parser's reading of the default


@dataclass(frozen=True)
class Setting:
    """One ``TSWARM_*`` variable and the :class:`Config` field it fills."""

    name: str
    default: str  # as typed in the environment; what `--help`, `tswarm settings` and the docs show
    parser: Parser
    help: str
    field: str = ""  # the Config attribute (filled in from the class below)
    unset: Any = _READ_DEFAULT  # the field's value when the variable is not set, if not the default read
    wins: str = ""  # another variable that wins over this one when set and not empty (Heroku's PORT)
    fallback: str = ""  # another variable read when this one is not set or empty (Heroku's DATABASE_URL)

    def read(self, text: str, name: Optional[str] = None) -> Any:
        return self.parser.read(name or self.name, text)

    def check(self, value: Any) -> None:
        self.parser.check(self.name, value)

    @property
    def value_unset(self) -> Any:
        return self.read(self.default) if self.unset is _READ_DEFAULT else self.unset


_SETTING = "tswarm.setting"  # the key of a field's metadata that holds its Setting


def setting(name: str, default: str, parser: Parser, help: str, *, unset: Any = _READ_DEFAULT, wins: str = "",
            fallback: str = "", secret: bool = False) -> Any:
    """A :class:`Config` field read from the variable ``name``; ``secret`` keeps it out of ``repr``.

    ``help`` may name the parser's ``words`` (``{range}``, ``{levels}``, ``{most}``) instead of repeating them."""
    declared = Setting(name, default, parser, help.format(**parser.words()), unset=unset, wins=wins, fallback=fallback)
    return field(default=declared.value_unset, repr=not secret, metadata={_SETTING: declared})


@dataclass(frozen=True)
class Config:
    """The service's configuration: every setting (one ``TSWARM_*`` variable each, declared here once)
    and, below them, the few knobs no variable sets."""

    # -- the settings, in the order the docs list them -------------------------------------------
    data_dir: Path = setting(
        "TSWARM_DATA_DIR", "./data", Folder(),
        "Folder of the SQLite journal (created if missing; it must be writable). One `tswarm serve` at a time may use it"
        " (a second is refused while `tswarm.lock` in it is held); the other commands work beside a running service.",
    )
    database_url: str = setting(
        "TSWARM_DATABASE_URL", "", DatabaseUrl(),
        "A `postgres://` or `postgresql://` URL (`postgres://user:password@host:5432/db`): the registry and the journal"
        " live in that PostgreSQL database, shared by any number of instances, instead of SQLite in the data dir;"
        " empty: SQLite. `DATABASE_URL` (Heroku's name) is read when this is not set; this one wins when both are.",
        fallback="DATABASE_URL", secret=True,
    )
    database_pool: int = setting(
        "TSWARM_DATABASE_POOL", "5", Whole(2, 100),
        "Most connections to PostgreSQL that one process shares among its reads, admin writes, forwarder, pruner and"
        " exports ({range}; an export holds one while it streams); the readings writer has one more of its own, the"
        " forwarder's lock another and the listener that keeps the nodes' cache exact a third, so a process holds at"
        " most this + 3 (`--workers N`: N times that). Heroku's small plans allow 20 (docs/deployment.md).",
    )
    host: str = setting("TSWARM_HOST", "0.0.0.0", Host(), "Address `tswarm serve` listens on (a name must resolve).")
    port: int = setting(
        "TSWARM_PORT", "8080", Whole(0, 65535), "Port `tswarm serve` listens on, {range} (`PORT` wins, as on Heroku).",
        wins="PORT",
    )
    workers: int = setting(
        "TSWARM_WORKERS", "1", Whole(1, 256),
        "Processes `tswarm serve` runs, sharing the port, {range} (`--workers` wins); `1`: one process, no supervisor."
        " Each worker keeps its own brute-force guard, credential cache and `/metrics` (docs/deployment.md).",
    )
    halt: bool = setting("TSWARM_HALT", "0", Flag(), "`1`: every node is answered 423 and stays awake (readings are still stored).")
    halt_awake: int = setting(
        "TSWARM_HALT_AWAKE", "600", Whole(30, 86400),
        "Seconds a halted node stays awake for reflashing before it sleeps again ({range}): the 423's `\"awake\"`, which"
        " firmware with over-the-air updates honours (older firmware stays awake until resumed).",
    )
    store: str = setting(
        "TSWARM_STORE", "sqlite", Choice(("sqlite", "influxdb"), lambda text: text.strip().lower()),
        "`sqlite`: the journal is the store; `influxdb`: forward to InfluxDB.",
    )
    influx_url: str = setting("TSWARM_INFLUX_URL", "http://localhost:8086", InfluxUrl(), "InfluxDB base URL, `http://` or `https://`.")
    influx_api: str = setting(
        "TSWARM_INFLUX_API", "2", Choice(("1", "2")), "`2`: v2 write API (InfluxDB 2.x/3.x); `1`: v1 API (InfluxDB 1.x).",
    )
    influx_token: str = setting("TSWARM_INFLUX_TOKEN", "", Text(), "v2 API token.", secret=True)
    influx_org: str = setting(
        "TSWARM_INFLUX_ORG", "", Text(), "v2 API organisation (needed with `TSWARM_STORE=influxdb` and the v2 API).",
    )
    influx_bucket: str = setting("TSWARM_INFLUX_BUCKET", "tswarm", Text(), "v2 API bucket.")
    influx_db: str = setting("TSWARM_INFLUX_DB", "tswarm", Text(), "v1 API database (InfluxDB 1.x).")
    influx_user: str = setting("TSWARM_INFLUX_USER", "", Text(), "v1 API user (optional).")
    influx_password: str = setting("TSWARM_INFLUX_PASSWORD", "", Text(), "v1 API password (optional).", secret=True)
    admin_token: str = setting(
        "TSWARM_ADMIN_TOKEN", "", Text(), "Bearer token for admin routes; empty: admin routes are off.", secret=True,
    )
    read_token: str = setting(
        "TSWARM_READ_TOKEN", "", Text(),
        "Bearer token for reader routes and the status page, needed from loopback too; empty: loopback reads"
        " without one, and the first `serve` makes one for other devices, keeps it in `<data dir>/read-token`"
        " and prints once the page's URL with it (docs/api.md).",
        secret=True,
    )
    public_url: str = setting(
        "TSWARM_PUBLIC_URL", "", PublicUrl(), "Base URL nodes use (printed in `svconf`); empty: this machine's address.",
    )
    trusted_proxies: tuple[str, ...] = setting(
        "TSWARM_TRUSTED_PROXIES", "", Networks(),
        "Comma-separated addresses/CIDRs of reverse proxies whose `X-Forwarded-For`/`X-Forwarded-Proto` are believed"
        " (e.g. `127.0.0.1` for nginx on the same box); from any other peer these headers are ignored.",
    )
    force_https: bool = setting(
        "TSWARM_FORCE_HTTPS", "0", Flag(),
        "`1`: redirect the status page (`GET /`, `/static/`) to HTTPS and send HSTS; `/api/nodes/*` is never redirected."
        " Only with a TLS proxy in front, listed in `TSWARM_TRUSTED_PROXIES`: tswarm itself has no TLS.",
    )
    log_level: str = setting("TSWARM_LOG_LEVEL", "INFO", LogLevel(), "Log level: {levels}.")
    access_log: bool = setting(
        "TSWARM_ACCESS_LOG", "0", Flag(),
        "`1`: one access-log line per answer (logger `aiohttp.access`, INFO: peer, request line with secret query values"
        " masked, status, size, seconds); `0`: none, so a request costs no log line (warnings, the line for a malformed"
        " request and every count in `/metrics` stay).",
    )
    max_body: int = setting(
        "TSWARM_MAX_BODY", "4096", Whole(64, 16 * 1024 * 1024),
        "Largest node request body in bytes ({range}); larger gets 413.",
    )
    auth_max_failures: int = setting(
        "TSWARM_AUTH_MAX_FAILURES", "30", Whole(1, 1_000_000),
        "Failed logins from one address within the window before it gets 429 ({range}).",
    )
    auth_window: int = setting(
        "TSWARM_AUTH_WINDOW", "60", Whole(1, 86400),
        "Seconds over which failed logins are counted, and how long an address then waits ({range}).",
    )
    journal_retention: Optional[int] = setting(
        "TSWARM_JOURNAL_RETENTION", "30d", Duration(),
        "How long readings stay in the journal once forwarded (`30d`, `12h`, `90m`, `45s` or seconds, up to `{most}`;"
        " `0`: forever). With `TSWARM_STORE=sqlite` the journal is the store: nothing is pruned unless this is set.",
        unset=None,  # not set (or empty): the default with store=influxdb, forever with sqlite (see retention_s)
    )
    forward_batch: int = setting(
        "TSWARM_FORWARD_BATCH", "5000", Whole(1, 100_000),
        "Most readings per InfluxDB write (one gzipped line-protocol body), {range}.",
    )
    forward_max_backoff: float = setting(
        "TSWARM_FORWARD_MAX_BACKOFF", "60", Whole(1, 86400, float),
        "Longest wait in seconds between retries of a failed InfluxDB write, {range} (doubling from 0.5 s;"
        " a `Retry-After` wins).",
    )
    battery_low_v: float = setting(
        "TSWARM_BATTERY_LOW_V", "3.3", Decimal(0, 20),
        "Volts ({range}): a node whose newest reading's `vbat` is below this has a low battery (`battery_low` in"
        " `/api/nodes`, marked on the status page; the alerts and Grafana's alert rule use it too).",
    )
    alert_webhook: str = setting(
        "TSWARM_ALERT_WEBHOOK", "", WebhookUrl(),
        "An `http://` or `https://` URL that gets a JSON POST when a node turns late, silent or back to ok, or its"
        " battery falls below `TSWARM_BATTERY_LOW_V` or recovers: once per change, retried with backoff until a 2xx,"
        " kept in the journal across restarts (docs/alerts.md); empty: no alerts.",
        secret=True,
    )

    # -- not settings: no variable sets these -----------------------------------------------------
    # Knobs for tests and benchmarks.
    scrypt_n: int = SCRYPT_N
    journal_synchronous: str = "FULL"  # benchmarks compare with "OFF" (the ceiling)
    journal_max_batch: int = 5000  # benchmarks compare with 1 (one commit per request, the naive design)
    alert_check_s: float = 5.0  # how often the alerts judge every node (service/alerts.py)
    alert_first_backoff_s: float = 1.0  # the first wait before an alert's delivery is tried again (then doubling)
    # Set by the supervisor (service/workers.py) in each worker: which one this process is, from 0.
    worker: int = 0

    @classmethod
    def from_env(cls, env: Optional[Mapping[str, str]] = None, **overrides) -> "Config":
        """Read every ``TSWARM_*`` variable (unset: its default); ``overrides`` that are not None win."""
        env = os.environ if env is None else env
        values = {}
        for s in SETTINGS:
            if s.name in env:
                values[s.field] = s.read(env[s.name])
            if s.fallback and not env.get(s.name, "").strip() and env.get(s.fallback):
                values[s.field] = s.read(env[s.fallback], name=s.fallback)
            if s.wins and env.get(s.wins):
                values[s.field] = s.read(env[s.wins], name=s.wins)
        values.update({k: v for k, v in overrides.items() if v is not None})
        config = cls(**values)
        config.validate()
        return config

    def validate(self) -> None:
        """Check every setting's value (flags and overrides too), then what settings ask of each other."""
        for s in SETTINGS:
            s.check(getattr(self, s.field))
        self._validate_influx()

    def _validate_influx(self) -> None:
        """With ``store=influxdb``, the target the chosen API writes into must be named."""
        if self.store == "influxdb":
            self.check_influx_target()

    def check_influx_target(self) -> None:
        """:class:`ConfigError` unless the InfluxDB target of the chosen API is named (``tswarm
        forward`` asks whatever the store)."""
        if self.influx_api == "2" and not self.influx_org.strip():
            raise ConfigError(
                "TSWARM_INFLUX_ORG is empty: the v2 API needs the organisation of the bucket"
                " (InfluxDB 1.x: set TSWARM_INFLUX_API=1 instead)"
            )
        if self.influx_api == "2" and not self.influx_bucket.strip():
            raise ConfigError("TSWARM_INFLUX_BUCKET is empty: the v2 API writes into a bucket")
        if self.influx_api == "1" and not self.influx_db.strip():
            raise ConfigError("TSWARM_INFLUX_DB is empty: the v1 API writes into a database")

    @property
    def retention_s(self) -> int:
        """Seconds readings stay in the journal, 0 for ever.

        Unset, it is the setting's default (30 days) with ``store=influxdb`` (forwarded readings live on
        in InfluxDB) and forever with ``store=sqlite`` (the journal is the only copy).
        """
        if self.journal_retention is not None:
            return self.journal_retention
        if self.store == "sqlite":
            return 0
        retention = SETTINGS_BY_NAME["TSWARM_JOURNAL_RETENTION"]
        return retention.read(retention.default)

    @property
    def runs_singletons(self) -> bool:
        """True in a process that competes for what must not run twice, the forwarder and the pruner
        (service/leader.py): on PostgreSQL every process of every instance does, and the database's
        lock picks one; on SQLite worker 0, the one process of the service holding the data dir."""
        return bool(self.database_url) or self.worker == 0

    def with_(self, **changes) -> "Config":
        return replace(self, **changes)


SETTINGS: tuple[Setting, ...] = tuple(
    replace(f.metadata[_SETTING], field=f.name) for f in fields(Config) if _SETTING in f.metadata
)
SETTINGS_BY_NAME = {s.name: s for s in SETTINGS}


# -- what people read: `--help`, `tswarm settings`, docs/configuration.md ----------------------------


def flag_help(text: str, name: str) -> str:
    """The help of a flag that stands for the setting ``name``: ``text [env NAME, default D; PORT wins].``"""
    s = SETTINGS_BY_NAME[name]
    wins = f"; {s.wins} wins" if s.wins else ""
    return f"{text} [env {s.name}, default {s.default}{wins}]."


def settings_help() -> str:
    """One line a setting, for the epilog of `tswarm --help`."""
    return "\n".join(f"  {s.name} (default {s.default!r}): {s.help}" for s in SETTINGS)


def settings_list(environ: Mapping[str, str]) -> str:
    """What `tswarm settings` prints: every setting, ``*`` where ``environ`` sets it (values are never shown)."""
    lines = [f"{'*' if s.name in environ or s.fallback in environ else ' '} {s.name:<26} default {s.default!r}: {s.help}" for s in SETTINGS]
    return "\n".join([*lines, "(* set in this environment)"]) + "\n"


def settings_markdown() -> str:
    """The settings table as Markdown, for docs/configuration.md (a test keeps the two equal)."""
    lines = ["| variable | default | meaning |", "|---|---|---|"]
    for s in SETTINGS:
        default = f"`{s.default}`" if s.default else "(empty)"
        lines.append(f"| `{s.name}` | {default} | {s.help} |")
    return "\n".join(lines) + "\n"
