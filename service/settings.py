"""Every setting of the service in one table: the docs and `--help` are drawn from it.

Configuration comes from ``TSWARM_*`` environment variables (12-factor); a command-line
flag, where there is one, wins over its variable, and ``PORT`` (Heroku) wins over both.
"""
from __future__ import annotations

import os
import re
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Mapping, Optional
from urllib.parse import urlsplit

from .auth import SCRYPT_N


@dataclass(frozen=True)
class Setting:
    name: str
    default: str
    help: str


SETTINGS: tuple[Setting, ...] = (
    Setting(
        "TSWARM_DATA_DIR", "./data",
        "Folder of the SQLite journal (created if missing; it must be writable). One `tswarm serve` at a time may use it"
        " (a second is refused while `tswarm.lock` in it is held); the other commands work beside a running service.",
    ),
    Setting("TSWARM_HOST", "0.0.0.0", "Address `tswarm serve` listens on (a name must resolve)."),
    Setting("TSWARM_PORT", "8080", "Port `tswarm serve` listens on, 0 to 65535 (`PORT` wins, as on Heroku)."),
    Setting(
        "TSWARM_WORKERS", "1",
        "Processes `tswarm serve` runs, sharing the port, 1 to 256 (`--workers` wins); `1`: one process, no supervisor."
        " Each worker keeps its own brute-force guard, credential cache and `/metrics` (docs/deployment.md).",
    ),
    Setting("TSWARM_HALT", "0", "`1`: every node is answered 423 and stays awake (readings are still stored)."),
    Setting("TSWARM_STORE", "sqlite", "`sqlite`: the journal is the store; `influxdb`: forward to InfluxDB."),
    Setting("TSWARM_INFLUX_URL", "http://localhost:8086", "InfluxDB base URL, `http://` or `https://`."),
    Setting("TSWARM_INFLUX_API", "2", "`2`: v2 write API (InfluxDB 2.x/3.x); `1`: v1 API (InfluxDB 1.x)."),
    Setting("TSWARM_INFLUX_TOKEN", "", "v2 API token."),
    Setting("TSWARM_INFLUX_ORG", "", "v2 API organisation (needed with `TSWARM_STORE=influxdb` and the v2 API)."),
    Setting("TSWARM_INFLUX_BUCKET", "tswarm", "v2 API bucket."),
    Setting("TSWARM_INFLUX_DB", "tswarm", "v1 API database (InfluxDB 1.x)."),
    Setting("TSWARM_INFLUX_USER", "", "v1 API user (optional)."),
    Setting("TSWARM_INFLUX_PASSWORD", "", "v1 API password (optional)."),
    Setting("TSWARM_ADMIN_TOKEN", "", "Bearer token for admin routes; empty: admin routes are off."),
    Setting(
        "TSWARM_READ_TOKEN", "",
        "Bearer token for reader routes and the status page, needed from loopback too; empty: loopback reads"
        " without one, and the first `serve` makes one for other devices, keeps it in `<data dir>/read-token`"
        " and prints once the page's URL with it (docs/api.md).",
    ),
    Setting("TSWARM_PUBLIC_URL", "", "Base URL nodes use (printed in `svconf`); empty: this machine's address."),
    Setting(
        "TSWARM_TRUSTED_PROXIES", "",
        "Comma-separated addresses/CIDRs of reverse proxies whose `X-Forwarded-For`/`X-Forwarded-Proto` are believed"
        " (e.g. `127.0.0.1` for nginx on the same box); from any other peer these headers are ignored.",
    ),
    Setting(
        "TSWARM_FORCE_HTTPS", "0",
        "`1`: redirect the status page (`GET /`, `/static/`) to HTTPS and send HSTS; `/api/nodes/*` is never redirected."
        " Only with a TLS proxy in front, listed in `TSWARM_TRUSTED_PROXIES`: tswarm itself has no TLS.",
    ),
    Setting("TSWARM_LOG_LEVEL", "INFO", "Log level: DEBUG, INFO, WARNING, ERROR or CRITICAL."),
    Setting("TSWARM_MAX_BODY", "4096", "Largest node request body in bytes (64 to 16777216); larger gets 413."),
    Setting("TSWARM_AUTH_MAX_FAILURES", "30", "Failed logins from one address within the window before it gets 429 (1 to 1000000)."),
    Setting("TSWARM_AUTH_WINDOW", "60", "Seconds over which failed logins are counted, and how long an address then waits (1 to 86400)."),
    Setting(
        "TSWARM_JOURNAL_RETENTION", "30d",
        "How long readings stay in the journal once forwarded (`30d`, `12h`, `90m`, `45s` or seconds, up to `36500d`; `0`: forever)."
        " With `TSWARM_STORE=sqlite` the journal is the store: nothing is pruned unless this is set.",
    ),
    Setting("TSWARM_FORWARD_BATCH", "5000", "Most readings per InfluxDB write (one gzipped line-protocol body), 1 to 100000."),
    Setting(
        "TSWARM_FORWARD_MAX_BACKOFF", "60",
        "Longest wait in seconds between retries of a failed InfluxDB write, 1 to 86400 (doubling from 0.5 s; a `Retry-After` wins).",
    ),
)

SETTINGS_BY_NAME = {s.name: s for s in SETTINGS}


_TRUE = {"1", "true", "yes", "on"}
_FALSE = {"0", "false", "no", "off", ""}


def _bool(name: str, value: str) -> bool:
    text = value.strip().lower()
    if text not in _TRUE | _FALSE:
        raise ConfigError(f"{name} must be 1 or 0 (or true/false, yes/no, on/off), got {value!r}")
    return text in _TRUE


def _int(name: str, value: str, low: int, high: int) -> int:
    """A whole number of ASCII digits between ``low`` and ``high``."""
    text = value.strip()
    if not re.fullmatch(r"[+-]?[0-9]{1,20}", text):
        raise ConfigError(f"{name} must be a whole number between {low} and {high}, got {value!r}")
    number = int(text)
    if not low <= number <= high:
        raise ConfigError(f"{name} must be between {low} and {high}, got {value!r}")
    return number


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


LOG_LEVELS = ("DEBUG", "INFO", "WARNING", "ERROR", "CRITICAL")


def _log_level(value: str) -> str:
    if value.strip().upper() not in LOG_LEVELS:
        raise ConfigError(f"TSWARM_LOG_LEVEL must be one of {', '.join(LOG_LEVELS)}, got {value!r}")
    return value.strip().upper()

# name: (lowest, highest) of every whole-number setting
INT_RANGES = {
    "TSWARM_PORT": (0, 65535),
    "PORT": (0, 65535),
    "TSWARM_WORKERS": (1, 256),
    "TSWARM_MAX_BODY": (64, 16 * 1024 * 1024),
    "TSWARM_AUTH_MAX_FAILURES": (1, 1_000_000),
    "TSWARM_AUTH_WINDOW": (1, 86400),
    "TSWARM_FORWARD_BATCH": (1, 100_000),
    "TSWARM_FORWARD_MAX_BACKOFF": (1, 86400),
}


class ConfigError(ValueError):
    """A setting has a value the service cannot use."""


def _check_public_url(url: str) -> None:
    """TSWARM_PUBLIC_URL is what boards are flashed with: an http(s) URL with a host, nothing after its path."""
    from urllib.parse import urlsplit

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


@dataclass(frozen=True)
class Config:
    data_dir: Path = Path("./data")
    host: str = "0.0.0.0"
    port: int = 8080
    workers: int = 1
    halt: bool = False
    store: str = "sqlite"
    influx_url: str = "http://localhost:8086"
    influx_api: str = "2"
    influx_token: str = field(default="", repr=False)
    influx_org: str = ""
    influx_bucket: str = "tswarm"
    influx_db: str = "tswarm"
    influx_user: str = ""
    influx_password: str = field(default="", repr=False)
    admin_token: str = field(default="", repr=False)
    read_token: str = field(default="", repr=False)
    public_url: str = ""
    trusted_proxies: tuple[str, ...] = ()
    force_https: bool = False
    log_level: str = "INFO"
    max_body: int = 4096
    auth_max_failures: int = 30
    auth_window: int = 60
    journal_retention: Optional[int] = None  # seconds; None: not set (see retention_s)
    forward_batch: int = 5000
    forward_max_backoff: float = 60.0
    # Not environment settings: knobs for tests and benchmarks.
    scrypt_n: int = SCRYPT_N
    journal_synchronous: str = "FULL"  # benchmarks compare with "OFF" (the ceiling)
    journal_max_batch: int = 5000  # benchmarks compare with 1 (one commit per request, the naive design)
    # Set by the supervisor (service/workers.py) in each worker: which one this process is, from 0.
    worker: int = 0

    @classmethod
    def from_env(cls, env: Mapping[str, str] | None = None, **overrides) -> "Config":
        """Read every ``TSWARM_*`` variable (defaults from SETTINGS); ``overrides`` win."""
        env = os.environ if env is None else env

        def get(name: str) -> str:
            return env.get(name, SETTINGS_BY_NAME[name].default)

        def number(name: str) -> int:
            return _int(name, get(name), *INT_RANGES[name])

        values = dict(
            data_dir=Path(get("TSWARM_DATA_DIR")),
            host=get("TSWARM_HOST"),
            port=number("TSWARM_PORT"),
            workers=number("TSWARM_WORKERS"),
            halt=_bool("TSWARM_HALT", get("TSWARM_HALT")),
            store=get("TSWARM_STORE").strip().lower(),
            influx_url=get("TSWARM_INFLUX_URL"),
            influx_api=get("TSWARM_INFLUX_API").strip(),
            influx_token=get("TSWARM_INFLUX_TOKEN"),
            influx_org=get("TSWARM_INFLUX_ORG"),
            influx_bucket=get("TSWARM_INFLUX_BUCKET"),
            influx_db=get("TSWARM_INFLUX_DB"),
            influx_user=get("TSWARM_INFLUX_USER"),
            influx_password=get("TSWARM_INFLUX_PASSWORD"),
            admin_token=get("TSWARM_ADMIN_TOKEN"),
            read_token=get("TSWARM_READ_TOKEN"),
            public_url=get("TSWARM_PUBLIC_URL").rstrip("/"),
            trusted_proxies=tuple(p.strip() for p in get("TSWARM_TRUSTED_PROXIES").split(",") if p.strip()),
            force_https=_bool("TSWARM_FORCE_HTTPS", get("TSWARM_FORCE_HTTPS")),
            log_level=_log_level(get("TSWARM_LOG_LEVEL")),
            max_body=number("TSWARM_MAX_BODY"),
            auth_max_failures=number("TSWARM_AUTH_MAX_FAILURES"),
            auth_window=number("TSWARM_AUTH_WINDOW"),
            journal_retention=(
                parse_duration("TSWARM_JOURNAL_RETENTION", env["TSWARM_JOURNAL_RETENTION"])
                if env.get("TSWARM_JOURNAL_RETENTION", "").strip() else None
            ),
            forward_batch=number("TSWARM_FORWARD_BATCH"),
            forward_max_backoff=float(number("TSWARM_FORWARD_MAX_BACKOFF")),
        )
        if env.get("PORT"):
            values["port"] = _int("PORT", env["PORT"], *INT_RANGES["PORT"])
        values.update({k: v for k, v in overrides.items() if v is not None})
        config = cls(**values)
        config.validate()
        return config

    def validate(self) -> None:
        from .proxy import parse_networks

        try:
            parse_networks(self.trusted_proxies)
        except ValueError as exc:
            raise ConfigError(f"TSWARM_TRUSTED_PROXIES: {exc}") from None
        if self.store not in ("sqlite", "influxdb"):
            raise ConfigError(f"TSWARM_STORE must be 'sqlite' or 'influxdb', got {self.store!r}")
        if self.influx_api not in ("1", "2"):
            raise ConfigError(f"TSWARM_INFLUX_API must be '1' or '2', got {self.influx_api!r}")
        # Values from the environment were checked as they were read; these catch the flags and overrides.
        for name, value in (("TSWARM_PORT", self.port), ("TSWARM_WORKERS", self.workers), ("TSWARM_MAX_BODY", self.max_body),
                            ("TSWARM_FORWARD_BATCH", self.forward_batch)):
            low, high = INT_RANGES[name]
            if not low <= value <= high:
                raise ConfigError(f"{name} must be between {low} and {high}, got {value}")
        if self.log_level not in LOG_LEVELS:
            raise ConfigError(f"TSWARM_LOG_LEVEL must be one of {', '.join(LOG_LEVELS)}, got {self.log_level!r}")
        if self.public_url:
            _check_public_url(self.public_url)
        self._validate_influx()

    def _validate_influx(self) -> None:
        url = urlsplit(self.influx_url.strip())
        try:
            port_ok = url.port is None or url.port > 0
        except ValueError:
            port_ok = False
        if url.scheme not in ("http", "https") or not url.hostname or not port_ok:
            raise ConfigError(
                f"TSWARM_INFLUX_URL must be an http:// or https:// URL like http://localhost:8086, got {self.influx_url!r}"
            )
        if self.store != "influxdb":
            return
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

        Unset, it is 30 days with ``store=influxdb`` (forwarded readings live on in InfluxDB) and
        forever with ``store=sqlite`` (the journal is the only copy).
        """
        if self.journal_retention is not None:
            return self.journal_retention
        if self.store == "sqlite":
            return 0
        return parse_duration("TSWARM_JOURNAL_RETENTION", SETTINGS_BY_NAME["TSWARM_JOURNAL_RETENTION"].default)

    @property
    def runs_singletons(self) -> bool:
        """True in the one process that runs what must not run twice: the forwarder and the pruner."""
        return self.worker == 0

    def with_(self, **changes) -> "Config":
        return replace(self, **changes)



def settings_markdown() -> str:
    """The settings table as Markdown, for docs/configuration.md (a test keeps the two equal)."""
    lines = ["| variable | default | meaning |", "|---|---|---|"]
    for s in SETTINGS:
        default = f"`{s.default}`" if s.default else "(empty)"
        lines.append(f"| `{s.name}` | {default} | {s.help} |")
    return "\n".join(lines) + "\n"
