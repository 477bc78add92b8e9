"""Every setting of the service in one table: the docs and `--help` are drawn from it.

Configuration comes from ``TSWARM_*`` environment variables (12-factor); a command-line
flag, where there is one, wins over its variable, and ``PORT`` (Heroku) wins over both.
"""
from __future__ import annotations

import os
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Mapping, Optional

from .auth import SCRYPT_N


@dataclass(frozen=True)
class Setting:
    name: str
    default: str
    help: str


SETTINGS: tuple[Setting, ...] = (
    Setting("TSWARM_DATA_DIR", "./data", "Folder of the SQLite journal (created if missing)."),
    Setting("TSWARM_HOST", "0.0.0.0", "Address `tswarm serve` listens on."),
    Setting("TSWARM_PORT", "8080", "Port `tswarm serve` listens on (`PORT` wins, as on Heroku)."),
    Setting(
        "TSWARM_WORKERS", "1",
        "Processes `tswarm serve` runs, sharing the port (`--workers` wins); `1`: one process, no supervisor."
        " Each worker keeps its own brute-force guard, credential cache and `/metrics` (docs/deployment.md).",
    ),
    Setting("TSWARM_HALT", "0", "`1`: every node is answered 423 and stays awake (readings are still stored)."),
    Setting("TSWARM_STORE", "sqlite", "`sqlite`: the journal is the store; `influxdb`: forward to InfluxDB."),
    Setting("TSWARM_INFLUX_URL", "http://localhost:8086", "InfluxDB base URL."),
    Setting("TSWARM_INFLUX_API", "2", "`2`: v2 write API (InfluxDB 2.x/3.x); `1`: v1 API (InfluxDB 1.x)."),
    Setting("TSWARM_INFLUX_TOKEN", "", "v2 API token."),
    Setting("TSWARM_INFLUX_ORG", "", "v2 API organisation."),
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
    Setting("TSWARM_LOG_LEVEL", "INFO", "Log level: DEBUG, INFO, WARNING, ERROR."),
    Setting("TSWARM_MAX_BODY", "4096", "Largest node request body in bytes; larger gets 413."),
    Setting("TSWARM_AUTH_MAX_FAILURES", "30", "Failed logins from one address within the window before it gets 429."),
    Setting("TSWARM_AUTH_WINDOW", "60", "Seconds over which failed logins are counted, and how long an address then waits."),
    Setting(
        "TSWARM_JOURNAL_RETENTION", "30d",
        "How long readings stay in the journal once forwarded (`30d`, `12h`, `90m`, `45s` or seconds; `0`: forever)."
        " With `TSWARM_STORE=sqlite` the journal is the store: nothing is pruned unless this is set.",
    ),
    Setting("TSWARM_FORWARD_BATCH", "5000", "Most readings per InfluxDB write (one gzipped line-protocol body)."),
    Setting(
        "TSWARM_FORWARD_MAX_BACKOFF", "60",
        "Longest wait in seconds between retries of a failed InfluxDB write (doubling from 0.5 s; a `Retry-After` wins).",
    ),
)

SETTINGS_BY_NAME = {s.name: s for s in SETTINGS}


def _truthy(value: str) -> bool:
    return value.strip().lower() in {"1", "true", "yes", "on"}


def _int(name: str, value: str) -> int:
    try:
        return int(value)
    except ValueError:
        raise ConfigError(f"{name} must be a whole number, got {value!r}") from None


_DURATION_UNITS = {"s": 1, "m": 60, "h": 3600, "d": 86400}


def parse_duration(name: str, value: str) -> int:
    """``30d``, ``12h``, ``90m``, ``45s`` or plain seconds -> seconds."""
    text = value.strip().lower()
    number, unit = (text[:-1], text[-1]) if text[-1:] in _DURATION_UNITS else (text, "s")
    try:
        seconds = int(number) * _DURATION_UNITS[unit]
    except ValueError:
        raise ConfigError(f"{name} must be a duration like 30d, 12h, 90m, 45s or seconds, got {value!r}") from None
    if seconds < 0:
        raise ConfigError(f"{name} must not be negative, got {value!r}")
    return seconds


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

        values = dict(
            data_dir=Path(get("TSWARM_DATA_DIR")),
            host=get("TSWARM_HOST"),
            port=_int("TSWARM_PORT", get("TSWARM_PORT")),
            workers=_int("TSWARM_WORKERS", get("TSWARM_WORKERS")),
            halt=_truthy(get("TSWARM_HALT")),
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
            force_https=_truthy(get("TSWARM_FORCE_HTTPS")),
            log_level=get("TSWARM_LOG_LEVEL").upper(),
            max_body=_int("TSWARM_MAX_BODY", get("TSWARM_MAX_BODY")),
            auth_max_failures=_int("TSWARM_AUTH_MAX_FAILURES", get("TSWARM_AUTH_MAX_FAILURES")),
            auth_window=_int("TSWARM_AUTH_WINDOW", get("TSWARM_AUTH_WINDOW")),
            journal_retention=(
                parse_duration("TSWARM_JOURNAL_RETENTION", env["TSWARM_JOURNAL_RETENTION"])
                if env.get("TSWARM_JOURNAL_RETENTION", "").strip() else None
            ),
            forward_batch=_int("TSWARM_FORWARD_BATCH", get("TSWARM_FORWARD_BATCH")),
            forward_max_backoff=float(_int("TSWARM_FORWARD_MAX_BACKOFF", get("TSWARM_FORWARD_MAX_BACKOFF"))),
        )
        if env.get("PORT"):
            values["port"] = _int("PORT", env["PORT"])
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
        if not 0 <= self.port <= 65535:
            raise ConfigError(f"port must be between 0 and 65535, got {self.port}")
        if self.workers < 1:
            raise ConfigError(f"TSWARM_WORKERS must be at least 1, got {self.workers}")
        if self.max_body < 64:
            raise ConfigError(f"TSWARM_MAX_BODY must be at least 64, got {self.max_body}")
        if not 1 <= self.forward_batch <= 100_000:
            raise ConfigError(f"TSWARM_FORWARD_BATCH must be between 1 and 100000, got {self.forward_batch}")
        if self.public_url:
            _check_public_url(self.public_url)

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
