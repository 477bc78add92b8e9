"""Every bad ``TSWARM_*`` value and every unusable path is one ``Error:`` line at start, never a traceback.

One table per kind of mistake, run through the real ``tswarm`` command (``python -m tswarm`` in a child
process, as a user types it): a setting (service/settings.py), the data dir and its ``tswarm.db``
(service/storage/), for ``serve`` and for every command that opens the journal.
"""
from __future__ import annotations

import os
import subprocess

import pytest

from tswarm.storage import DB_FILENAME, open_storage
from tswarm.settings import Config, ConfigError, parse_duration
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
