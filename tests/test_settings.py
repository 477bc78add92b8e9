"""Every bad ``TSWARM_*`` value and every unusable path is one ``Error:`` line at start, never a traceback.

One table per kind of mistake, run through the real ``tswarm`` command (``python -m tswarm`` in a child
process, as a user types it): a setting (service/settings.py), the data dir and its ``tswarm.db``
(service/storage/), for ``serve`` and for every command that opens the journal.
"""
from __future__ import annotations

import dataclasses
import os
import subprocess
import sys
from pathlib import Path

import pytest

from tswarm.settings import SETTINGS, SETTINGS_BY_NAME, Config, ConfigError, parse_duration
from tswarm.storage import DB_FILENAME, open_storage
from tests.servers import TSWARM, tswarm_env

# Commands that open the journal, each with the arguments it needs; `serve` last.
JOURNAL_COMMANDS = [
    ("node", "add", "n1"), ("node", "passwd", "n1"), ("node", "list"), ("node", "remove", "n1"),
    ("node", "interval", "n1", "300"), ("node", "config", "n1"), ("halt",), ("resume",), ("export",),
    ("status",), ("forward", "--since", "2000-01-01"), ("serve",),
]


def run(args, env, prefix=(), timeout=30) -> subprocess.CompletedProcess:
    """``tswarm ARGS`` with ``env``; a command still running after ``timeout`` took the bad value (serve serves)."""
    try:
        return subprocess.run([*prefix, *TSWARM, *args], env=env, capture_output=True, text=True, timeout=timeout)
    except subprocess.TimeoutExpired:
        pytest.fail(f"tswarm {' '.join(args)} was still running after {timeout} s: the bad value was taken")


def assert_one_error_line(proc: subprocess.CompletedProcess, *names: str) -> str:
    """Non-zero exit, standard error exactly one ``Error:`` line naming each of ``names``; returns the line."""
    assert "Traceback" not in proc.stderr, proc.stderr
    assert proc.returncode != 0, (proc.stdout, proc.stderr)
    lines = proc.stderr.splitlines()
    assert len(lines) == 1 and lines[0].startswith("Error: "), proc.stderr
    for name in names:
        assert name in lines[0], lines[0]
    return lines[0]


def without_root_powers() -> list[str]:
    """Folder permissions do not stop root; ``setpriv`` (util-linux) runs the command without the
    capabilities that override them, so a read-only folder is read-only for it too."""
    return ["setpriv", "--bounding-set", "-dac_override,-dac_read_search"] if os.geteuid() == 0 else []


# -- settings ------------------------------------------------------------------------------------

# (environment, the variable the error must name). Passed to `serve` (which would otherwise start on
# 127.0.0.1 and a free port) and to `node list` (every command reads the settings).
BAD_SETTINGS = [
    ({"TSWARM_LOG_LEVEL": "LOUD"}, "TSWARM_LOG_LEVEL"),
    ({"TSWARM_LOG_LEVEL": ""}, "TSWARM_LOG_LEVEL"),
    ({"TSWARM_PORT": "abc"}, "TSWARM_PORT"),  # guard: was already one line
    ({"TSWARM_PORT": "70000"}, "TSWARM_PORT"),
    ({"TSWARM_PORT": "-1"}, "TSWARM_PORT"),
    ({"TSWARM_PORT": "٨٠٨٠"}, "TSWARM_PORT"),  # Arabic-Indic digits: int() takes them, a setting does not
    ({"PORT": "http"}, "PORT"),  # guard
    ({"TSWARM_WORKERS": "0"}, "TSWARM_WORKERS"),  # guard
    ({"TSWARM_WORKERS": "many"}, "TSWARM_WORKERS"),  # guard
    ({"TSWARM_WORKERS": "100000"}, "TSWARM_WORKERS"),
    ({"TSWARM_DATABASE_POOL": "1"}, "TSWARM_DATABASE_POOL"),  # a stream and a lookup of one thread need two
    ({"TSWARM_MAX_BODY": "10"}, "TSWARM_MAX_BODY"),  # guard
    ({"TSWARM_MAX_BODY": "4k"}, "TSWARM_MAX_BODY"),  # guard
    ({"TSWARM_AUTH_MAX_FAILURES": "0"}, "TSWARM_AUTH_MAX_FAILURES"),
    ({"TSWARM_AUTH_MAX_FAILURES": "-5"}, "TSWARM_AUTH_MAX_FAILURES"),
    ({"TSWARM_AUTH_WINDOW": "-1"}, "TSWARM_AUTH_WINDOW"),
    ({"TSWARM_AUTH_WINDOW": "0"}, "TSWARM_AUTH_WINDOW"),
    ({"TSWARM_AUTH_WINDOW": "1m"}, "TSWARM_AUTH_WINDOW"),  # guard
    ({"TSWARM_JOURNAL_RETENTION": "forever"}, "TSWARM_JOURNAL_RETENTION"),  # guard
    ({"TSWARM_JOURNAL_RETENTION": "-1d"}, "TSWARM_JOURNAL_RETENTION"),  # guard
    ({"TSWARM_JOURNAL_RETENTION": "1.5d"}, "TSWARM_JOURNAL_RETENTION"),  # guard
    ({"TSWARM_JOURNAL_RETENTION": "99999999999999d"}, "TSWARM_JOURNAL_RETENTION"),
    ({"TSWARM_FORWARD_BATCH": "0"}, "TSWARM_FORWARD_BATCH"),  # guard
    ({"TSWARM_FORWARD_BATCH": "lots"}, "TSWARM_FORWARD_BATCH"),  # guard
    ({"TSWARM_FORWARD_MAX_BACKOFF": "0"}, "TSWARM_FORWARD_MAX_BACKOFF"),
    ({"TSWARM_FORWARD_MAX_BACKOFF": "-60"}, "TSWARM_FORWARD_MAX_BACKOFF"),
    ({"TSWARM_FORWARD_MAX_BACKOFF": "1.5"}, "TSWARM_FORWARD_MAX_BACKOFF"),  # guard
    ({"TSWARM_HALT": "maybe"}, "TSWARM_HALT"),
    ({"TSWARM_HALT_AWAKE": "29"}, "TSWARM_HALT_AWAKE"),
    ({"TSWARM_HALT_AWAKE": "86401"}, "TSWARM_HALT_AWAKE"),
    ({"TSWARM_HALT_AWAKE": "10m"}, "TSWARM_HALT_AWAKE"),
    ({"TSWARM_FORCE_HTTPS": "yes please"}, "TSWARM_FORCE_HTTPS"),
    ({"TSWARM_STORE": "mysql"}, "TSWARM_STORE"),  # guard
    ({"TSWARM_INFLUX_API": "3"}, "TSWARM_INFLUX_API"),  # guard
    ({"TSWARM_INFLUX_URL": "localhost:8086"}, "TSWARM_INFLUX_URL"),
    ({"TSWARM_STORE": "influxdb", "TSWARM_INFLUX_URL": "localhost:8086", "TSWARM_INFLUX_ORG": "home"}, "TSWARM_INFLUX_URL"),
    ({"TSWARM_INFLUX_URL": "ftp://localhost:8086"}, "TSWARM_INFLUX_URL"),
    ({"TSWARM_INFLUX_URL": "http://localhost:port"}, "TSWARM_INFLUX_URL"),
    ({"TSWARM_INFLUX_URL": "http://"}, "TSWARM_INFLUX_URL"),
    ({"TSWARM_STORE": "influxdb", "TSWARM_INFLUX_ORG": ""}, "TSWARM_INFLUX_ORG"),
    ({"TSWARM_STORE": "influxdb", "TSWARM_INFLUX_API": "2"}, "TSWARM_INFLUX_ORG"),  # unset is empty too
    ({"TSWARM_STORE": "influxdb", "TSWARM_INFLUX_ORG": "home", "TSWARM_INFLUX_BUCKET": ""}, "TSWARM_INFLUX_BUCKET"),
    ({"TSWARM_STORE": "influxdb", "TSWARM_INFLUX_API": "1", "TSWARM_INFLUX_DB": " "}, "TSWARM_INFLUX_DB"),
    ({"TSWARM_TRUSTED_PROXIES": "cloudflare"}, "TSWARM_TRUSTED_PROXIES"),  # guard
    ({"TSWARM_BATTERY_LOW_V": "0"}, "TSWARM_BATTERY_LOW_V"),
    ({"TSWARM_BATTERY_LOW_V": "20.5"}, "TSWARM_BATTERY_LOW_V"),
    ({"TSWARM_BATTERY_LOW_V": "3,3"}, "TSWARM_BATTERY_LOW_V"),
    ({"TSWARM_BATTERY_LOW_V": "nan"}, "TSWARM_BATTERY_LOW_V"),
]


def _id(case):
    env, _ = case
    return " ".join(f"{k}={v}" for k, v in env.items())


@pytest.fixture
def journal_dir(tmp_path):
    data_dir = tmp_path / "data"
    open_storage(data_dir).close()
    return data_dir


@pytest.mark.parametrize("command", [("serve",), ("node", "list")], ids=" ".join)
@pytest.mark.parametrize("case", BAD_SETTINGS, ids=[_id(c) for c in BAD_SETTINGS])
def test_a_bad_setting_is_one_error_line_naming_it(journal_dir, case, command):
    env, name = case
    proc = run(command, tswarm_env(journal_dir, **{"TSWARM_HOST": "127.0.0.1", "TSWARM_PORT": "0", **env}))
    assert_one_error_line(proc, name)


def test_a_host_that_does_not_resolve_is_one_error_line_for_serve(journal_dir):
    proc = run(["serve"], tswarm_env(journal_dir, TSWARM_HOST="no-such-host.invalid", TSWARM_PORT="0"))
    assert_one_error_line(proc, "TSWARM_HOST", "no-such-host.invalid")


@pytest.mark.parametrize("workers", ["1", "2"])
def test_a_host_given_with_the_flag_that_does_not_resolve_is_one_error_line(journal_dir, workers):
    proc = run(["serve", "--host", "no-such-host.invalid", "--port", "0", "--workers", workers], tswarm_env(journal_dir))
    assert_one_error_line(proc, "--host", "no-such-host.invalid")


def test_the_settings_that_are_good_still_read_as_before():
    config = Config.from_env({
        "TSWARM_PORT": " 8081 ", "TSWARM_WORKERS": "4", "TSWARM_HALT": "yes", "TSWARM_FORCE_HTTPS": "off",
        "TSWARM_LOG_LEVEL": "debug", "TSWARM_AUTH_WINDOW": "1", "TSWARM_JOURNAL_RETENTION": "36500d",
        "TSWARM_STORE": "influxdb", "TSWARM_INFLUX_URL": "https://influx.example.org", "TSWARM_INFLUX_ORG": "home",
        "TSWARM_FORWARD_MAX_BACKOFF": "1",
    })
    assert (config.port, config.workers, config.halt, config.force_https, config.log_level) == (8081, 4, True, False, "DEBUG")
    assert (config.auth_window, config.retention_s, config.forward_max_backoff) == (1, 36500 * 86400, 1.0)
    assert Config.from_env({"TSWARM_STORE": "influxdb", "TSWARM_INFLUX_API": "1"}).influx_org == ""  # 1.x has none
    assert Config.from_env({"TSWARM_HALT": ""}).halt is False


def test_a_flag_out_of_range_is_refused_by_the_config_too():
    """What the CLI's flags do not check themselves (``--workers`` has no upper bound) the config does."""
    with pytest.raises(ConfigError, match="TSWARM_WORKERS must be between 1 and 256"):
        Config.from_env({}, workers=1000)


@pytest.mark.parametrize("value, seconds", [("30d", 30 * 86400), ("12h", 43200), ("90m", 5400), ("45s", 45), ("0", 0)])
def test_durations(value, seconds):
    assert parse_duration("X", value) == seconds


# -- each setting declared once -------------------------------------------------------------------

# The Config fields that no variable sets (knobs for tests and benchmarks, the worker's index).
NOT_SETTINGS = {"scrypt_n", "journal_synchronous", "journal_max_batch", "alert_check_s", "alert_first_backoff_s", "worker"}


def test_an_empty_environment_is_the_default_config():
    assert Config() == Config.from_env({})


def test_every_config_field_is_one_setting_or_a_knob_named_as_not_a_setting():
    names = [s.name for s in SETTINGS]
    assert len(names) == len(set(names)) and len({s.field for s in SETTINGS}) == len(SETTINGS)
    assert {f.name for f in dataclasses.fields(Config)} == {s.field for s in SETTINGS} | NOT_SETTINGS
    assert not {s.field for s in SETTINGS} & NOT_SETTINGS


def test_the_defaults_are_as_before():
    assert {s.name: getattr(Config(), s.field) for s in SETTINGS} == {
        "TSWARM_DATA_DIR": Path("./data"), "TSWARM_DATABASE_URL": "", "TSWARM_DATABASE_POOL": 5, "TSWARM_HOST": "0.0.0.0", "TSWARM_PORT": 8080, "TSWARM_WORKERS": 1,
        "TSWARM_HALT": False, "TSWARM_HALT_AWAKE": 600, "TSWARM_STORE": "sqlite", "TSWARM_INFLUX_URL": "http://localhost:8086",
        "TSWARM_INFLUX_API": "2", "TSWARM_INFLUX_TOKEN": "", "TSWARM_INFLUX_ORG": "", "TSWARM_INFLUX_BUCKET": "tswarm",
        "TSWARM_INFLUX_DB": "tswarm", "TSWARM_INFLUX_USER": "", "TSWARM_INFLUX_PASSWORD": "", "TSWARM_ADMIN_TOKEN": "",
        "TSWARM_READ_TOKEN": "", "TSWARM_PUBLIC_URL": "", "TSWARM_TRUSTED_PROXIES": (), "TSWARM_FORCE_HTTPS": False,
        "TSWARM_LOG_LEVEL": "INFO", "TSWARM_ACCESS_LOG": False, "TSWARM_MAX_BODY": 4096, "TSWARM_AUTH_MAX_FAILURES": 30, "TSWARM_AUTH_WINDOW": 60,
        "TSWARM_JOURNAL_RETENTION": None, "TSWARM_FORWARD_BATCH": 5000, "TSWARM_FORWARD_MAX_BACKOFF": 60.0,
        "TSWARM_BATTERY_LOW_V": 3.3,
        "TSWARM_ALERT_WEBHOOK": "",
    }


def test_each_default_as_typed_in_the_environment_reads_as_the_field_default():
    """Setting every variable to the default the docs show changes nothing, but retention: unset, its
    default applies only with store=influxdb (sqlite keeps readings for ever)."""
    typed = Config.from_env({s.name: s.default for s in SETTINGS})
    assert typed == Config(journal_retention=30 * 86400)
    assert Config.from_env({"TSWARM_STORE": "influxdb", "TSWARM_INFLUX_ORG": "home"}).retention_s == 30 * 86400


# A good value for every setting that is not its default, and the field's value then.
GOOD = {
    "TSWARM_DATA_DIR": ("/srv/tswarm", Path("/srv/tswarm")), "TSWARM_HOST": ("::1", "::1"),
    "TSWARM_DATABASE_URL": (" postgres://u:pw@db:5432/t ", "postgres://u:pw@db:5432/t"),
    "TSWARM_DATABASE_POOL": ("2", 2),
    "TSWARM_PORT": ("+0", 0), "TSWARM_WORKERS": ("256", 256), "TSWARM_HALT": (" ON ", True),
    "TSWARM_HALT_AWAKE": ("86400", 86400),
    "TSWARM_STORE": (" InfluxDB ", "influxdb"), "TSWARM_INFLUX_URL": ("https://influx:8443", "https://influx:8443"),
    "TSWARM_INFLUX_API": (" 1 ", "1"), "TSWARM_INFLUX_TOKEN": ("tok", "tok"), "TSWARM_INFLUX_ORG": ("home", "home"),
    "TSWARM_INFLUX_BUCKET": ("b", "b"), "TSWARM_INFLUX_DB": ("d", "d"), "TSWARM_INFLUX_USER": ("u", "u"),
    "TSWARM_INFLUX_PASSWORD": ("p", "p"), "TSWARM_ADMIN_TOKEN": ("a", "a"), "TSWARM_READ_TOKEN": ("r", "r"),
    "TSWARM_PUBLIC_URL": ("https://t.example.org/x//", "https://t.example.org/x"),
    "TSWARM_TRUSTED_PROXIES": (",::1, 10.0.0.0/8,", ("::1", "10.0.0.0/8")), "TSWARM_FORCE_HTTPS": ("true", True),
    "TSWARM_LOG_LEVEL": (" warning", "WARNING"), "TSWARM_ACCESS_LOG": (" Yes", True), "TSWARM_MAX_BODY": ("16777216", 16777216),
    "TSWARM_AUTH_MAX_FAILURES": ("1", 1), "TSWARM_AUTH_WINDOW": ("86400", 86400),
    "TSWARM_JOURNAL_RETENTION": ("12H", 43200), "TSWARM_FORWARD_BATCH": ("100000", 100000),
    "TSWARM_FORWARD_MAX_BACKOFF": ("86400", 86400.0),
    "TSWARM_BATTERY_LOW_V": (" 2.95 ", 2.95),
    "TSWARM_ALERT_WEBHOOK": (" https://ntfy.sh/swarm?tpl=1 ", "https://ntfy.sh/swarm?tpl=1"),
}


@pytest.mark.parametrize("setting", SETTINGS, ids=[s.name for s in SETTINGS])
def test_each_variable_fills_its_own_field_and_no_other(setting):
    text, value = GOOD[setting.name]
    besides = {"TSWARM_INFLUX_ORG": "home"} if setting.name == "TSWARM_STORE" else {}  # what store=influxdb needs too
    expected = Config(**{setting.field: value}, **{SETTINGS_BY_NAME[n].field: v for n, v in besides.items()})
    assert Config.from_env({setting.name: text, **besides}) == expected


def test_good_values_cover_every_setting():
    assert set(GOOD) == set(SETTINGS_BY_NAME)


def test_database_url_is_read_unless_tswarm_database_url_is_set():
    assert Config.from_env({"DATABASE_URL": "postgres://h/a"}).database_url == "postgres://h/a"
    both = {"DATABASE_URL": "postgres://h/a", "TSWARM_DATABASE_URL": "postgresql://h/b"}
    assert Config.from_env(both).database_url == "postgresql://h/b"
    assert Config.from_env({**both, "TSWARM_DATABASE_URL": ""}).database_url == "postgres://h/a"


@pytest.mark.parametrize("name", ["DATABASE_URL", "TSWARM_DATABASE_URL"])
def test_a_database_url_of_another_scheme_is_one_line_without_its_password(name):
    with pytest.raises(ConfigError) as refused:
        Config.from_env({name: "mysql://u:hunter22@db/t"})
    assert str(refused.value) == (
        f"{name} must be a postgres:// or postgresql:// URL like postgres://user:password@host:5432/db"
        " (or empty); the value given is not one (not shown: it may hold a password)"
    )


@pytest.mark.parametrize("url, fault", [
    ("postgres://", "names no host"),
    ("postgresql://u:hunter22@:5432/t", "names no host"),
    ("postgres://u:hunter22@[::1/t", "cannot be read (an IPv6 address's [ without its ]?)"),
    ("postgres://u:hun@ter22@db/t", "has an @ in its user or password (write it %40)"),
    ("postgres://u:hun/ter22@db:5432/t", "has a / ? or # in its password (write them %2F %3F %23)"),
    ("postgres://u:hun?ter22@db/t", "has a / ? or # in its password (write them %2F %3F %23)"),
    ("postgres://u:hun#ter22@db/t", "has a / ? or # in its password (write them %2F %3F %23)"),
], ids=["bare", "port-only", "unclosed-bracket", "unencoded-at", "unencoded-slash", "unencoded-question-mark",
        "unencoded-hash"])
def test_a_database_url_libpq_would_misread_is_refused_in_one_line_without_its_password(url, fault):
    """A URL without a host would have libpq try a local socket, found missing only after every check
    passed; an @ in the password as written would have it take the password's tail for the host (and
    quote it in its errors), a / ? or # would end the user part there (libpq then tried the user's name
    as the host: "failed to resolve host 'u'")."""
    with pytest.raises(ConfigError) as refused:
        Config.from_env({"TSWARM_DATABASE_URL": url})
    assert str(refused.value) == (
        "TSWARM_DATABASE_URL must be a postgres:// or postgresql:// URL like postgres://user:password@host:5432/db"
        f" (or empty); the value given {fault} (not shown: it may hold a password)"
    )


@pytest.mark.parametrize("url", [
    "postgres://db/t", "postgres://u:p%40ss@db:5432/t", "postgres://u:p@h1:5432,h2:5433/t", "postgres://u:p@[::1]:5432/t",
    "postgresql:///t?host=/var/run/postgresql", "postgres://%2Fvar%2Frun%2Fpostgresql/t",
    "postgres://u:hun%2Fter22@db/t?sslmode=require&application_name=a@b",
])
def test_a_database_url_that_names_its_server_is_taken(url):
    """Several hosts, an IPv6 address, a socket folder given as the host or as ?host= all name one."""
    assert Config.from_env({"TSWARM_DATABASE_URL": url}).database_url == url


def test_the_database_url_stays_out_of_the_config_repr():
    assert "hunter22" not in repr(Config.from_env({"DATABASE_URL": "postgres://u:hunter22@db/t"}))


def test_port_wins_over_tswarm_port_unless_empty():
    assert Config.from_env({"TSWARM_PORT": "1", "PORT": "2"}).port == 2
    assert Config.from_env({"TSWARM_PORT": "1", "PORT": ""}).port == 1


# Exact messages, one or more per kind of value (the table above checks only that each is named).
EXACT_ERRORS = [
    ({"TSWARM_PORT": "abc"}, "TSWARM_PORT must be a whole number between 0 and 65535, got 'abc'"),
    ({"TSWARM_PORT": "70000"}, "TSWARM_PORT must be between 0 and 65535, got '70000'"),
    ({"PORT": "http"}, "PORT must be a whole number between 0 and 65535, got 'http'"),
    ({"TSWARM_AUTH_WINDOW": "-1"}, "TSWARM_AUTH_WINDOW must be between 1 and 86400, got '-1'"),
    ({"TSWARM_HALT": "maybe"}, "TSWARM_HALT must be 1 or 0 (or true/false, yes/no, on/off), got 'maybe'"),
    ({"TSWARM_STORE": " MySQL"}, "TSWARM_STORE must be 'sqlite' or 'influxdb', got 'mysql'"),
    ({"TSWARM_INFLUX_API": " 3 "}, "TSWARM_INFLUX_API must be '1' or '2', got '3'"),
    ({"TSWARM_LOG_LEVEL": " loud"}, "TSWARM_LOG_LEVEL must be one of DEBUG, INFO, WARNING, ERROR, CRITICAL, got ' loud'"),
    ({"TSWARM_JOURNAL_RETENTION": "1.5d"},
     "TSWARM_JOURNAL_RETENTION must be a duration like 30d, 12h, 90m, 45s or seconds, got '1.5d'"),
    ({"TSWARM_JOURNAL_RETENTION": "-1d"}, "TSWARM_JOURNAL_RETENTION must not be negative, got '-1d'"),
    ({"TSWARM_JOURNAL_RETENTION": "36501d"}, "TSWARM_JOURNAL_RETENTION must be at most 36500d (a hundred years), got '36501d'"),
    ({"TSWARM_TRUSTED_PROXIES": "127.0.0.1, cloudflare"},
     "TSWARM_TRUSTED_PROXIES: 'cloudflare' is not an IP address or network (CIDR)"),
    ({"TSWARM_PUBLIC_URL": "ftp://a/"}, "TSWARM_PUBLIC_URL must be an http:// or https:// URL with a host, like"
     " http://192.168.1.20:8080 (a path is allowed, no ?query or #fragment), got 'ftp://a'"),
    ({"TSWARM_INFLUX_URL": " localhost:8086"},
     "TSWARM_INFLUX_URL must be an http:// or https:// URL like http://localhost:8086, got ' localhost:8086'"),
    ({"TSWARM_INFLUX_URL": "http://[::1"},  # urlsplit raises: a traceback at start-up before
     "TSWARM_INFLUX_URL must be an http:// or https:// URL like http://localhost:8086, got 'http://[::1'"),
    ({"TSWARM_INFLUX_URL": "http://influx db:8086"},
     "TSWARM_INFLUX_URL must be an http:// or https:// URL like http://localhost:8086, got 'http://influx db:8086'"),
    ({"TSWARM_INFLUX_URL": "http://tswarm:hunter22@pi.local:8086?db=x"},  # the password is not quoted back
     "TSWARM_INFLUX_URL must be an http:// or https:// URL like http://localhost:8086, got 'http://***@pi.local:8086?db=x'"),
    ({"TSWARM_STORE": "influxdb"}, "TSWARM_INFLUX_ORG is empty: the v2 API needs the organisation of the bucket"
     " (InfluxDB 1.x: set TSWARM_INFLUX_API=1 instead)"),
    ({"TSWARM_STORE": "influxdb", "TSWARM_INFLUX_ORG": "o", "TSWARM_INFLUX_BUCKET": " "},
     "TSWARM_INFLUX_BUCKET is empty: the v2 API writes into a bucket"),
    ({"TSWARM_STORE": "influxdb", "TSWARM_INFLUX_API": "1", "TSWARM_INFLUX_DB": ""},
     "TSWARM_INFLUX_DB is empty: the v1 API writes into a database"),
    ({"TSWARM_BATTERY_LOW_V": "3,3"}, "TSWARM_BATTERY_LOW_V must be a decimal number above 0 and at most 20, got '3,3'"),
    ({"TSWARM_BATTERY_LOW_V": "-1"}, "TSWARM_BATTERY_LOW_V must be above 0 and at most 20, got '-1'"),
    ({"TSWARM_BATTERY_LOW_V": "inf"}, "TSWARM_BATTERY_LOW_V must be a decimal number above 0 and at most 20, got 'inf'"),
]


@pytest.mark.parametrize("env, message", EXACT_ERRORS, ids=[_id((e, None)) for e, _ in EXACT_ERRORS])
def test_the_error_of_a_bad_value_says_exactly(env, message):
    with pytest.raises(ConfigError) as raised:
        Config.from_env(env)
    assert str(raised.value) == message


@pytest.mark.parametrize("overrides, message", [
    (dict(port=70000), "TSWARM_PORT must be between 0 and 65535, got 70000"),
    (dict(auth_window=0), "TSWARM_AUTH_WINDOW must be between 1 and 86400, got 0"),
    (dict(store="mysql"), "TSWARM_STORE must be 'sqlite' or 'influxdb', got 'mysql'"),
    (dict(log_level="debug"), "TSWARM_LOG_LEVEL must be one of DEBUG, INFO, WARNING, ERROR, CRITICAL, got 'debug'"),
    (dict(battery_low_v=0.0), "TSWARM_BATTERY_LOW_V must be above 0 and at most 20, got 0.0"),
    (dict(trusted_proxies=("cloudflare",)), "TSWARM_TRUSTED_PROXIES: 'cloudflare' is not an IP address or network (CIDR)"),
])
def test_a_value_given_as_an_override_is_checked_by_its_declaration_too(overrides, message):
    with pytest.raises(ConfigError) as raised:
        Config.from_env({}, **overrides)
    assert str(raised.value) == message


def test_settings_never_imports_proxy():
    """No import circle: settings reads TSWARM_TRUSTED_PROXIES itself (proxy.py imports it, not the other way),
    also when it checks them."""
    code = ("import sys, tswarm.settings as s; s.Config.from_env({'TSWARM_TRUSTED_PROXIES': '127.0.0.1'});"
            " print('tswarm.proxy' in sys.modules)")
    assert subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout == "False\n"


def test_tswarm_settings_lists_every_setting_marks_those_set_and_never_prints_a_value():
    from click.testing import CliRunner

    from tswarm.cli import cli
    from tswarm.settings import settings_markdown

    runner = CliRunner()
    listed = runner.invoke(cli, ["settings"], env={"TSWARM_ADMIN_TOKEN": "s3cret-value", "TSWARM_HALT": None}).output
    lines = listed.splitlines()
    assert [line.split()[1] if line.startswith("*") else line.split()[0] for line in lines[:-1]] == [s.name for s in SETTINGS]
    assert "* TSWARM_ADMIN_TOKEN" in listed and "  TSWARM_HALT" in listed and "s3cret-value" not in listed
    assert runner.invoke(cli, ["settings", "--markdown"]).output == settings_markdown()
    epilog = runner.invoke(cli, ["--help"]).output
    assert all(f"{s.name} (default {s.default!r})" in epilog for s in SETTINGS)


# -- the data dir and its journal ----------------------------------------------------------------


# Each makes a data dir that cannot be used and returns it, the path the error must name and what it must say.


def data_dir_is_a_file(tmp_path):
    path = tmp_path / "data"
    path.write_text("not a folder")
    return path, path, "is a file"


def data_dir_under_a_file(tmp_path):
    (tmp_path / "file").write_text("not a folder")
    path = tmp_path / "file" / "data"
    return path, path, "is a file"


def data_dir_not_writable(tmp_path):
    path = tmp_path / "data"
    with open_storage(path) as journal:
        journal.add_node("n1", "scrypt$h")
    path.chmod(0o555)
    return path, path, "not writable"


def journal_of_random_bytes(tmp_path):
    path = tmp_path / "data"
    path.mkdir()
    (path / DB_FILENAME).write_bytes(bytes(range(256)) * 20)
    return path, path / DB_FILENAME, "not a tswarm journal"


def journal_of_text(tmp_path):
    path = tmp_path / "data"
    path.mkdir()
    (path / DB_FILENAME).write_text("node,temperature\nkitchen,21.5\n")
    return path, path / DB_FILENAME, "not a tswarm journal"


def journal_is_a_folder(tmp_path):
    path = tmp_path / "data"
    (path / DB_FILENAME).mkdir(parents=True)
    return path, path / DB_FILENAME, "is a folder"


BAD_PATHS = [data_dir_is_a_file, data_dir_under_a_file, data_dir_not_writable, journal_of_random_bytes,
             journal_of_text, journal_is_a_folder]


@pytest.mark.parametrize("command", JOURNAL_COMMANDS, ids=" ".join)
@pytest.mark.parametrize("make", BAD_PATHS, ids=lambda f: f.__name__.replace("_", " "))
def test_an_unusable_data_dir_or_journal_is_one_error_line_naming_it(tmp_path, make, command):
    data_dir, named, says = make(tmp_path)
    prefix = without_root_powers() if make is data_dir_not_writable else []
    env = tswarm_env(data_dir, TSWARM_HOST="127.0.0.1", TSWARM_PORT="0", TSWARM_INFLUX_URL="http://127.0.0.1:9",
                     TSWARM_PUBLIC_URL="http://192.168.1.20:8080")
    try:
        proc = run(command, env, prefix=prefix)
    finally:
        if data_dir.is_dir():
            data_dir.chmod(0o755)
    assert_one_error_line(proc, str(named), says)


@pytest.mark.parametrize("command", [("node", "list"), ("node", "add", "n1"), ("serve",)], ids=" ".join)
def test_a_data_dir_flag_that_is_a_file_is_the_same_one_line(tmp_path, command):
    data_dir, _, _ = data_dir_is_a_file(tmp_path)
    proc = run([*command, "--data-dir", str(data_dir)], tswarm_env(tmp_path / "elsewhere", TSWARM_PORT="0"))
    assert_one_error_line(proc, str(data_dir), "is a file")


def test_a_journal_that_is_not_sqlite_is_left_as_it_was(tmp_path):
    data_dir, db, _ = journal_of_text(tmp_path)
    before = db.read_bytes()
    run(["node", "add", "n1"], tswarm_env(data_dir))
    assert db.read_bytes() == before and sorted(p.name for p in data_dir.iterdir()) == [DB_FILENAME]
