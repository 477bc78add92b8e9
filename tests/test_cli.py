"""The `tswarm` command (service/cli.py): each subcommand's effect, checked through the journal, its errors
(exit codes, one Error: line), `export -o` and the progress bar. What an export holds: tests/test_export.py."""
import base64
import fcntl
import json
import os
import pty
import queue
import re
import signal
import struct
import subprocess
import termios
import threading
import time

import pytest
from hypothesis import HealthCheck, example, given, settings, strategies as st

from tswarm import auth
from tswarm.timefmt import rfc3339
from tests.conftest import ALL_CSV, add_readings, fill_a_and_b, open_journal
from tests.servers import TSWARM, PostgreSQL, VictoriaMetrics, free_port, run_cli, tswarm_env
from tests.test_settings import assert_one_error_line, without_root_powers
from tests.test_settings import run as run_tswarm

pytestmark = pytest.mark.engines  # every command the same on SQLite and PostgreSQL

COMMANDS = [
    ["serve"], ["node"], ["node", "add"], ["node", "passwd"], ["node", "list"], ["node", "remove"],
    ["halt"], ["resume"], ["export"],
]


@pytest.mark.parametrize("command", COMMANDS, ids=" ".join)
def test_every_command_has_help(run, command):
    result = run(*command, "--help")
    assert result.exit_code == 0
    assert "Usage: " in result.output and len(result.output.splitlines()) > 3


def test_flash_help_says_what_sleep_is_on_a_master(run):
    """A master does not sleep nor redraw every --sleep: it reads the swarm's summary that often."""
    text = " ".join(run("flash", "--help").output.split())
    assert "a master's between refreshes of the swarm's summary" in text


def test_node_add_generates_a_strong_password_and_prints_svconf(run, data_dir):
    result = run("node", "add", "kitchen")
    assert result.exit_code == 0, result.output
    conf = json.loads(result.stdout)
    assert set(conf) == {"url", "url_local", "login", "xauth"}
    assert conf["login"] == "kitchen" and conf["url"].endswith("/api/nodes/kitchen")
    login, password = base64.b64decode(conf["xauth"]).decode().split(":", 1)
    assert login == "kitchen" and len(password) >= 24
    with open_journal(data_dir) as journal:
        stored = journal.node_auth("kitchen").password_hash
    assert stored.startswith("scrypt$") and password not in stored
    assert auth.verify_password(password, stored)


def test_node_add_and_passwd_hash_a_generated_password_cheaply_and_a_chosen_one_with_scrypt_2_13(run, data_dir):
    def stored_n(name):
        with open_journal(data_dir) as journal:
            return int(journal.node_auth(name).password_hash.split("$")[1])

    run("node", "add", "generated")
    run("node", "add", "chosen", "--password", "hunter2")
    assert (stored_n("generated"), stored_n("chosen")) == (auth.SCRYPT_N_GENERATED, 2**13)
    run("node", "passwd", "generated", "--password", "hunter3")
    conf = json.loads(run("node", "passwd", "chosen").stdout)
    assert (stored_n("generated"), stored_n("chosen")) == (2**13, auth.SCRYPT_N_GENERATED)
    password = base64.b64decode(conf["xauth"]).decode().split(":", 1)[1]
    with open_journal(data_dir) as journal:
        assert auth.verify_password(password, journal.node_auth("chosen").password_hash)


def test_node_add_with_password_and_public_url(run, data_dir, monkeypatch):
    monkeypatch.setenv("TSWARM_PUBLIC_URL", "https://example.org")
    conf = json.loads(run("node", "add", "attic", "--password", "hunter2").output)
    assert conf["url"] == "https://example.org/api/nodes/attic"
    assert conf["xauth"] == base64.b64encode(b"attic:hunter2").decode()


def test_node_add_twice_is_a_clear_error(run):
    run("node", "add", "a")
    result = run("node", "add", "a")
    assert result.exit_code == 1
    assert "already exists" in result.output and "Traceback" not in result.output


@pytest.mark.parametrize("name", ["../etc", "a b", "", "x" * 65, "-a", "é"])
def test_bad_node_names_are_refused(run, name, data_dir):
    result = run("node", "add", "--", name)
    assert result.exit_code == 2 and "node names are" in result.output
    with open_journal(data_dir) as journal:
        assert journal.list_nodes() == []


def test_node_passwd_changes_the_password(run, data_dir):
    run("node", "add", "a", "--password", "old")
    conf = json.loads(run("node", "passwd", "a", "--password", "new").stdout)
    assert conf["xauth"] == base64.b64encode(b"a:new").decode()
    with open_journal(data_dir) as journal:
        assert auth.verify_password("new", journal.node_auth("a").password_hash)
    assert run("node", "passwd", "ghost").exit_code == 1


def test_node_list_shows_last_reading_and_last_seen(run, data_dir):
    run("node", "add", "a")
    run("node", "add", "b")
    with open_journal(data_dir) as journal:
        add_readings(journal, "a", [(1_764_000_000_000_000_000, 21.5, 40)])
    lines = run("node", "list").output.splitlines()
    assert lines[0].split() == ["NAME", "STATE", "DISPLAY", "TEMP", "°C", "RH", "%", "LAST", "SEEN", "FIRMWARE", "UPDATE"]
    assert lines[1].split()[:6] == ["a", "registered", "-", "21.5", "40", "2025-11-24T16:00:00Z"]
    assert lines[2].split() == ["b", "registered", "-", "-", "-", "never", "-", "-"]
    doc = json.loads(run("node", "list", "--json").output)
    with open_journal(data_dir) as journal:
        registered = rfc3339(journal.list_nodes()[0].registered_at)
    assert doc[0] == {"name": "a", "created": False, "halted": False, "last_seen": "2025-11-24T16:00:00.000000000Z",
                      "temperature": 21.5, "humidity": 40.0,  # and the rest of GET /api/nodes' summary:
                      "vbat": None, "rssi": None, "awake_ms": None, "battery_low": None,  # sent no telemetry
                      "health": "silent", "readings_24h": 0, "interval_s": 300, "registered": registered,
                      "display": False, "age_s": doc[0]["age_s"], "firmware": {
                          "running": None, "reported_at": None, "staged": None, "staged_at": None,
                          "outcome": "current", "outcome_at": None, "rolled_back_from": None, "summary": "current"}}
    assert doc[0]["age_s"] > 3600  # the reading is from 2025-11-24: silent


def test_node_remove_revokes_and_keeps_history(run, data_dir):
    run("node", "add", "a")
    assert run("node", "remove", "a").output.strip() == "removed a"
    with open_journal(data_dir) as journal:
        assert journal.node_auth("a") is None
    result = run("node", "remove", "a")
    assert result.exit_code == 1 and "no node named 'a'" in result.output


def test_halt_and_resume_one_or_all(run, data_dir):
    run("node", "add", "a")
    assert run("halt", "a").output.strip() == "halted a"
    with open_journal(data_dir) as journal:
        assert journal.node_auth("a").halted
    assert run("resume", "a").exit_code == 0
    assert run("halt").output.strip() == "halted all nodes"
    with open_journal(data_dir) as journal:
        assert journal.halted_all()
    run("resume")
    with open_journal(data_dir) as journal:
        assert not journal.halted_all() and not journal.node_auth("a").halted
    assert run("halt", "ghost").exit_code == 1


@pytest.mark.parametrize("args, what", [((), "all nodes"), (("a",), "a")], ids=["all", "one"])
def test_resume_under_tswarm_halt_says_every_node_stays_halted(run, data_dir, monkeypatch, args, what):
    run("node", "add", "a")
    run("halt", *args)
    monkeypatch.setenv("TSWARM_HALT", "1")
    result = run("resume", *args)
    assert (result.exit_code, result.stdout) == (0, f"resumed {what}; TSWARM_HALT=1 still halts every node until it is unset\n")
    with open_journal(data_dir) as journal:  # the journal's halt is undone all the same
        assert not journal.halted_all() and not journal.node_auth("a").halted
    assert run("halt", *args).stdout == f"halted {what}\n"


def test_resume_of_one_node_while_every_node_is_halted_says_so(run, data_dir):
    run("node", "add", "a")
    run("halt")
    result = run("resume", "a")
    assert result.stdout == "resumed a; 'tswarm halt' still halts every node until 'tswarm resume' without a name\n"
    assert run("resume").stdout == "resumed all nodes\n"
    with open_journal(data_dir) as journal:
        assert not journal.halted_all()


def test_forward_until_before_since_is_a_usage_error_quoted_as_the_others(run):
    result = run("forward", "--since", "2025-01-02", "--until", "2025-01-01")
    assert result.exit_code == 2
    assert result.stderr.splitlines()[-1] == "Error: Invalid value for '--until': must be after --since"


@pytest.mark.parametrize("given", [("--token", ""), ("--token", "  "), ("GRAFANA_TOKEN", " ")], ids=["empty", "blank", "env"])
def test_grafana_provision_refuses_an_empty_token_before_connecting(run, monkeypatch, given):
    def connect(*args, **kwargs):
        raise AssertionError("connected with an empty token")

    monkeypatch.setattr("tswarm.grafana_provision.connect", connect)
    monkeypatch.delenv("GRAFANA_TOKEN", raising=False)
    option, value = given
    if option == "GRAFANA_TOKEN":
        monkeypatch.setenv(option, value)
    result = run("grafana", "provision", "--url", "http://127.0.0.1:9", *(given if option == "--token" else ()))
    assert result.exit_code == 2
    assert result.stderr.splitlines()[-1] == (
        "Error: Invalid value for '--token': must not be empty: give a Grafana service account token with the Admin role")


def test_export_ndjson_filtered_to_a_file(run, data_dir, tmp_path):
    fill_a_and_b(data_dir)
    out = tmp_path / "a.ndjson"
    result = run("export", "--node", "a", "--start", "2025-11-24T16:00:00.5Z", "--format", "ndjson", "-o", str(out))
    assert result.exit_code == 0 and result.output == ""
    assert out.read_text() == '{"time": "2025-11-24T16:01:00.000000000Z", "node": "a", "temperature": 22.0, "humidity": 41.5}\n'


@pytest.mark.parametrize(
    "args, message",
    [(["--start", "yesterday"], "not an RFC 3339 time"), (["--format", "xml"], "'xml' is not one of"),
     (["--start", "2025-01-02", "--stop", "2025-01-01"], "stop must be after start"),
     (["--node", "../x"], "node names are")],
)
def test_export_bad_input_is_a_usage_error(run, data_dir, args, message):
    result = run("export", *args)
    assert result.exit_code == 2 and message in result.output


@pytest.fixture
def a_and_b(data_dir):
    """``fill_a_and_b`` once for the test (every example of a hypothesis test shares it)."""
    fill_a_and_b(data_dir)
    return data_dir


edge_times = st.one_of(
    st.text("0123456789", min_size=1, max_size=25),
    st.builds("-{}".format, st.text("0123456789", min_size=1, max_size=25)),
    st.text(st.characters(categories=["Nd"]), min_size=1, max_size=4),
    st.builds("{:04d}-{:02d}-{:02d}T00:00:00{}".format, st.integers(0, 9999), st.integers(1, 12), st.integers(1, 28),
              st.sampled_from(["", "Z", "+01:00", "-23:59"])),
    st.text(max_size=8),
)


@settings(deadline=None, max_examples=150, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(start=st.none() | edge_times, stop=st.none() | edge_times, node=st.sampled_from([None, "a", "garage", "../x", "é"]))
@example(start="99999999999999999999", stop=None, node=None)
@example(start="2300-01-01", stop=None, node=None)
@example(start=None, stop="0001-01-01T00:00:00+01:00", node=None)
@example(start=None, stop=None, node="garage")
def test_export_answers_every_input_whole_or_with_one_error_line(run, a_and_b, start, stop, node):
    args = [f"--start={start}"] * (start is not None) + [f"--stop={stop}"] * (stop is not None) + ["--node", node] * (node is not None)
    result = run("export", *args)  # an exception here would be a traceback for the user
    if result.exit_code == 0:
        assert result.stdout.startswith("time,node,temperature,humidity,vbat,rssi,awake_ms,lost\n") and result.stderr == ""
        return
    assert result.exit_code in (1, 2), result.output
    assert result.stdout == "" and result.stderr.splitlines()[-1].startswith("Error: "), result.output


def test_export_of_an_unknown_node_fails_as_the_api_does(run, data_dir, tmp_path):
    fill_a_and_b(data_dir)
    out = tmp_path / "garage.csv"
    result = run("export", "--node", "garage", "-o", str(out))
    assert result.exit_code == 1
    assert result.stderr == "Error: no node named 'garage' was ever registered; 'tswarm node list' shows them\n"
    assert not out.exists()
    with open_journal(data_dir) as journal:
        journal.remove_node("b")
    assert run("export", "--node", "b").stdout.count(",b,") == 1  # a removed node keeps its history


@pytest.mark.parametrize(
    "value, message",
    [("99999999999999999999", "'99999999999999999999' is outside the times tswarm can hold"),
     ("2300-01-01", "'2300-01-01' is outside the times tswarm can hold"),
     ("١٧٦٤٠٠٠٠٠٠", "is not an RFC 3339 time")],
)
def test_export_refuses_times_it_cannot_hold(run, data_dir, value, message):
    fill_a_and_b(data_dir)
    result = run("export", f"--start={value}")
    assert result.exit_code == 2 and message in result.stderr and "Invalid value for '--start'" in result.stderr


def test_bad_setting_is_a_one_line_error(run, monkeypatch):
    monkeypatch.setenv("TSWARM_STORE", "mysql")
    result = run("node", "list")
    assert result.exit_code == 1
    assert result.output.strip() == "Error: TSWARM_STORE must be 'sqlite' or 'influxdb', got 'mysql'"


def test_settings_marks_the_database_url_as_set_and_never_prints_it(run, engine):
    listed = run("settings").output
    mark = "*" if engine == "postgres" else " "
    assert f"{mark} TSWARM_DATABASE_URL" in listed and PostgreSQL.PASSWORD not in listed


@pytest.mark.parametrize("command", ["add", "passwd"])
def test_an_empty_password_is_refused(run, command):
    run("node", "add", "existing")
    result = run("node", command, "new" if command == "add" else "existing", "--password", "")
    assert result.exit_code == 2 and "must not be empty" in result.output


@pytest.mark.parametrize("command", ["add", "passwd"])
@pytest.mark.parametrize("password, problem", [
    ("pw\udcff", "must be UTF-8 text"),  # a byte of the command line that is not UTF-8, as Python decodes it
    ("pw\x00", "must not contain a NUL character"),
    ("p" * 1025, "must be at most 1024 bytes"),  # before: stored, and the node's every request a 400 (header too large)
])
def test_a_password_no_board_can_send_is_refused_in_one_line(run, journal, command, password, problem):
    """Before: a traceback (UnicodeEncodeError in scrypt, quoting the byte) for the first, and a
    password that "pw" also opened (scrypt's HMAC pads with NULs) for the second."""
    run("node", "add", "existing")
    result = run("node", command, "new" if command == "add" else "existing", "--password", password)
    assert result.exit_code == 2 and problem in result.output and "Traceback" not in result.output
    assert [n.name for n in journal.list_nodes()] == ["existing"]


def no_default_route(destination=None):
    raise OSError(101, "Network is unreachable")


@pytest.mark.parametrize("command", ["add", "passwd"])
def test_node_add_and_passwd_warn_when_the_url_is_loopback_and_not_when_public_url_is_set(run, monkeypatch, command):
    """`node add`/`node passwd` print the svconf for a person to paste, so they warn (flash and node config refuse)."""
    monkeypatch.setattr("tswarm.svconf.source_address", no_default_route)
    if command == "passwd":
        run("node", "add", "a")
    result = run("node", command, "a")
    assert result.exit_code == 0
    assert json.loads(result.stdout)["url"] == "http://127.0.0.1:8080/api/nodes/a"
    assert result.stderr == (
        "warning: this machine has no LAN address (no default route), so the node's url would be "
        "http://127.0.0.1:8080/api/nodes/a, which a board cannot reach: set TSWARM_PUBLIC_URL to the address nodes "
        "reach this machine at (e.g. http://192.168.1.20:8080), then run 'tswarm node passwd a' again\n"
    )
    monkeypatch.setenv("TSWARM_PUBLIC_URL", "http://192.168.1.20:8080")
    result = run("node", "passwd", "a")
    assert json.loads(result.stdout)["url"] == "http://192.168.1.20:8080/api/nodes/a" and result.stderr == ""


def test_node_add_uses_the_lan_address_and_the_port_serve_uses(run, monkeypatch):
    monkeypatch.setattr("tswarm.svconf.source_address", lambda destination=None: "192.168.1.20")
    monkeypatch.setenv("TSWARM_PORT", "9000")
    conf = json.loads(run("node", "add", "a").stdout)
    assert conf["url"] == conf["url_local"] == "http://192.168.1.20:9000/api/nodes/a"


@pytest.mark.parametrize("url", [
    "192.168.1.20:8080", "ftp://example.org", "http://", "https://:8080", "http://example.org:99999",
    "http://example.org:port", "http://example.org/?a=1", "http://example.org/#top", "http://exa mple.org",
])
def test_a_bad_public_url_is_a_one_line_error_before_anything_changes(run, monkeypatch, data_dir, url):
    monkeypatch.setenv("TSWARM_PUBLIC_URL", url)
    result = run("node", "add", "a")
    assert result.exit_code == 1
    assert result.output.startswith("Error: TSWARM_PUBLIC_URL must be an http:// or https:// URL with a host, like "
                                    "http://192.168.1.20:8080 (a path is allowed, no ?query or #fragment), got ")
    assert len(result.output.splitlines()) == 1
    assert not data_dir.exists()


@pytest.mark.parametrize("url", ["http://192.168.1.20:8080", "https://swarm.example.org/tswarm/", "http://[fd00::2]:80"])
def test_a_good_public_url_is_used_as_is(run, monkeypatch, url):
    monkeypatch.setenv("TSWARM_PUBLIC_URL", url)
    assert json.loads(run("node", "add", "a").stdout)["url"] == url.rstrip("/") + "/api/nodes/a"


READING_COMMANDS = [["node", "list"], ["export"], ["halt"], ["node", "remove", "a"], ["node", "passwd", "a"], ["status"]]


@pytest.mark.engines("sqlite")
@pytest.mark.parametrize("command", READING_COMMANDS)
def test_commands_that_read_refuse_a_data_dir_without_a_journal(run, data_dir, command):
    """SQLite's journal is a file of the data dir; PostgreSQL's counterpart is the test below."""
    result = run(*command)
    assert result.exit_code == 1
    assert f"no journal in {data_dir}" in result.output and "Traceback" not in result.output
    assert not data_dir.exists()  # nothing was created by the typo


@pytest.mark.engines("postgres")
@pytest.mark.parametrize("command", READING_COMMANDS)
def test_commands_that_read_refuse_a_database_without_a_journal(run, data_dir, monkeypatch, postgres_url, command):
    import psycopg

    monkeypatch.setenv("TSWARM_DATABASE_URL", postgres_url)  # an empty database, not the test's journal
    result = run(*command)
    assert result.exit_code == 1
    where = postgres_url.replace(f":{PostgreSQL.PASSWORD}@", ":***@")
    assert result.output == (f"Error: no journal in {where}: 'tswarm node add' or 'tswarm serve' creates it"
                             " (is DATABASE_URL or TSWARM_DATABASE_URL right?)\n")
    with psycopg.connect(postgres_url) as conn:  # nothing was created by the typo
        assert conn.execute("SELECT count(*) FROM pg_tables WHERE schemaname = 'public'").fetchone() == (0,)
    assert not data_dir.exists()


@pytest.mark.parametrize("value", ["0", "-1", "abc", "257"])  # 257: before, an Error naming TSWARM_WORKERS, exit 1
def test_serve_refuses_a_worker_count_below_one(run, value):
    result = run("serve", "--workers", value)
    assert result.exit_code == 2 and "Invalid value for '--workers'" in result.output


def test_serve_refuses_tswarm_workers_below_one(run, monkeypatch):
    monkeypatch.setenv("TSWARM_WORKERS", "0")
    result = run("serve")
    assert result.exit_code == 1
    assert result.output.strip() == "Error: TSWARM_WORKERS must be between 1 and 256, got '0'"


# -- through the real command: the progress bar, `node interval` ----------------------------------------


@pytest.fixture
def filled(three_nodes, data_dir):
    """``data_dir`` holding ``three_nodes`` (see tests/conftest.py)."""
    return data_dir


def test_no_progress_bar_when_piped(filled):
    proc = run_cli(filled, "export", "--format", "ndjson")
    assert proc.stderr == ""
    assert len(proc.stdout.splitlines()) == 4


def on_a_terminal(args: list[str], env: dict) -> tuple[int, str]:
    """Run `tswarm ARGS` with its standard error on a pseudo-terminal of 30 x 100, as a person's
    shell has it; its exit code and what the terminal showed."""
    controller, terminal = pty.openpty()
    fcntl.ioctl(terminal, termios.TIOCSWINSZ, struct.pack("HHHH", 30, 100, 0, 0))
    try:
        proc = subprocess.run(TSWARM + args, env=env, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                              stderr=terminal, timeout=60)
        os.close(terminal)
        shown = b""
        while True:
            try:
                data = os.read(controller, 4096)
            except OSError:  # EIO: the terminal is closed and drained
                break
            if not data:
                break
            shown += data
    finally:
        os.close(controller)
    return proc.returncode, shown.decode()


def test_a_progress_bar_on_a_terminal(filled, tmp_path):
    out = tmp_path / "out.csv"
    code, text = on_a_terminal(["export", "-o", str(out)], tswarm_env(filled))
    assert code == 0
    assert out.read_bytes().decode() == ALL_CSV
    assert "100%" in text and "4.00/4.00" in text and "rows/s" in text, text


def test_forward_shows_a_progress_bar_on_a_terminal_and_none_when_piped(tmp_path, influxdb1):
    """The real InfluxDB 1.x: the bar counts the readings sent; piped, standard error stays empty."""
    data_dir = tmp_path / "data"
    fill_a_and_b(data_dir)
    db = influxdb1.new_database()
    env = tswarm_env(data_dir, TSWARM_STORE="influxdb", TSWARM_INFLUX_API="1", TSWARM_INFLUX_URL=influxdb1.url,
                     TSWARM_INFLUX_DB=db)
    code, text = on_a_terminal(["forward", "--since", "2000-01-01"], env)
    assert code == 0
    assert "100%" in text and "3/3" in text and "reading/s" in text, text
    assert influxdb1.rows("SELECT count(temperature) FROM climate", db)[0][1] == 3
    piped = run_tswarm(["forward", "--since", "2000-01-01"], env)
    assert (piped.returncode, piped.stderr, piped.stdout) == (0, "", "sent 3 reading(s) to InfluxDB\n")


def test_node_interval_sets_the_expected_interval(filled):
    assert run_cli(filled, "node", "interval", "attic", "900").stdout == "attic: a reading expected every 900 s\n"
    with open_journal(filled) as journal:
        assert {n.name: n.interval_s for n in journal.list_nodes()} == {"attic": 900, "cellar": 300, "kitchen": 300}
    assert run_cli(filled, "node", "interval", "attic", "5", check=False).returncode == 2
    missing = run_cli(filled, "node", "interval", "garage", "600", check=False)
    assert missing.returncode == 1 and "no node named 'garage'" in missing.stderr


# -- through the real command: `export -o` paths, `forward` against a real InfluxDB that does not answer --


def _export_to(tmp_path, output, prefix=()):
    data_dir = tmp_path / "data"
    fill_a_and_b(data_dir)
    return run_tswarm(["export", "-o", str(output)], tswarm_env(data_dir), prefix=prefix)


def test_export_into_a_missing_folder_is_one_error_line_and_reads_nothing(tmp_path):
    output = tmp_path / "no-such-folder" / "readings.csv"
    proc = _export_to(tmp_path, output)
    assert_one_error_line(proc, str(output), f"the folder {output.parent} does not exist")
    assert not output.parent.exists()


def test_export_to_a_folder_is_one_error_line(tmp_path):
    proc = _export_to(tmp_path, tmp_path)
    assert_one_error_line(proc, str(tmp_path), "is a folder")


def test_export_into_a_folder_that_is_not_writable_is_one_error_line(tmp_path):
    folder = tmp_path / "locked"
    folder.mkdir()
    folder.chmod(0o555)
    try:
        proc = _export_to(tmp_path, folder / "readings.csv", prefix=without_root_powers())
    finally:
        folder.chmod(0o755)
    assert_one_error_line(proc, str(folder / "readings.csv"), "not writable")
    assert list(folder.iterdir()) == []


@pytest.mark.engines("sqlite")
def test_an_export_the_disk_cannot_take_is_one_error_line(tmp_path):
    """/dev/full: every write fails with ENOSPC, as a full disk does; to a file and to standard output."""
    proc = _export_to(tmp_path, "/dev/full")
    assert_one_error_line(proc, "-o /dev/full", "No space left on device")
    with open("/dev/full", "w") as full:
        proc = subprocess.run([*TSWARM, "export"], env=tswarm_env(tmp_path / "data"), stdout=full,
                              stderr=subprocess.PIPE, text=True, timeout=30)
    assert_one_error_line(proc, "standard output", "No space left on device")


@pytest.mark.engines("sqlite")
def test_a_cursor_file_error_names_the_cursor_file(tmp_path):
    fill_a_and_b(tmp_path / "data")
    proc = run_tswarm(["export", "--cursor-file", str(tmp_path)], tswarm_env(tmp_path / "data"))
    assert_one_error_line(proc, f"--cursor-file {tmp_path}", "is a folder")


@pytest.mark.engines("sqlite")
def test_export_to_dash_writes_standard_output(tmp_path):
    output = tmp_path / "-"
    data_dir = tmp_path / "data"
    fill_a_and_b(data_dir)
    proc = subprocess.run([*TSWARM, "export", "-o", "-"], env=tswarm_env(data_dir), cwd=tmp_path,
                          capture_output=True, text=True, timeout=30)
    assert proc.returncode == 0 and len(proc.stdout.splitlines()) == 4 and not output.exists()


@pytest.mark.engines("sqlite")
def test_forward_with_no_influxdb_named_is_one_error_line(tmp_path):
    """The defaults name no organisation: nothing to wait for, so no retrying for ever."""
    fill_a_and_b(tmp_path / "data")
    proc = run_tswarm(["forward", "--since", "2000-01-01"], tswarm_env(tmp_path / "data"))
    assert_one_error_line(proc, "TSWARM_INFLUX_ORG is empty")


@pytest.mark.engines("sqlite")
@pytest.mark.parametrize("option, value", [("--dht-pin", "999"), ("--dht-pin", "7"),
                                           ("--leds", "15,12,7"), ("--battery", "999")])
def test_a_config_push_refuses_a_pin_no_board_has(run, data_dir, option, value):
    assert run("node", "add", "a").exit_code == 0
    result = run("node", "config", "a", "--push", option, value)
    assert result.exit_code == 2 and "Traceback" not in result.output
    assert f"{option} {value.split(',')[-1]}: no " in result.output, result.output  # the pin named: no board has it
    with open_journal(data_dir) as journal:
        assert journal.node_auth("a").fw_staged is None  # nothing staged


@pytest.mark.engines("sqlite")
def test_a_new_journal_is_readable_by_its_owner_alone(run, data_dir):
    """It holds password hashes and staged Wi-Fi passwords; SQLite gives -wal and -shm its mode."""
    assert run("node", "add", "a").exit_code == 0
    assert (data_dir / "tswarm.db").stat().st_mode & 0o777 == 0o600


@pytest.mark.engines("sqlite")
@pytest.mark.parametrize("command", READING_COMMANDS)
def test_commands_that_read_leave_an_empty_journal_file_without_tables(run, data_dir, command):
    data_dir.mkdir()
    (data_dir / "tswarm.db").write_bytes(b"")
    result = run(*command)
    assert result.exit_code == 1 and "Traceback" not in result.output
    assert f"no journal in {data_dir} (tswarm.db is empty)" in result.output
    import sqlite3

    with sqlite3.connect(data_dir / "tswarm.db") as conn:
        assert conn.execute("SELECT count(*) FROM sqlite_master").fetchone() == (0,)


@pytest.mark.engines("sqlite")
@pytest.mark.parametrize("command", [*READING_COMMANDS, ["node", "add", "a"]])
def test_a_sqlite_database_of_something_else_is_never_written_to(run, data_dir, command):
    import sqlite3

    data_dir.mkdir()
    with sqlite3.connect(data_dir / "tswarm.db") as conn:
        conn.execute("CREATE TABLE foo (x)")
    result = run(*command)
    assert result.exit_code == 1 and "Traceback" not in result.output
    assert "is not a tswarm journal (a SQLite database of something else)" in result.output
    with sqlite3.connect(data_dir / "tswarm.db") as conn:
        assert [r[0] for r in conn.execute("SELECT name FROM sqlite_master")] == ["foo"]


def test_export_to_a_file_still_writes_it(tmp_path):
    output = tmp_path / "readings.csv"
    proc = _export_to(tmp_path, output)
    assert (proc.returncode, proc.stderr) == (0, "")
    assert output.read_text().splitlines()[0] == "time,node,temperature,humidity,vbat,rssi,awake_ms,lost" and len(output.read_text().splitlines()) == 4


def _forward_until_it_says(env, wanted: str, within_s: float = 60):
    """Start `tswarm forward`; return (process, stderr lines up to the first one holding ``wanted``)."""
    proc = subprocess.Popen([*TSWARM, "forward", "--since", "2000-01-01"], env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    lines: queue.Queue = queue.Queue()
    threading.Thread(target=lambda: [lines.put(line) for line in proc.stderr] + [lines.put(None)], daemon=True).start()
    seen: list[str] = []
    deadline = time.monotonic() + within_s
    while not seen or wanted not in seen[-1]:
        try:
            line = lines.get(timeout=max(0.0, deadline - time.monotonic()))
        except queue.Empty:
            proc.kill()
            pytest.fail(f"tswarm forward said nothing with {wanted!r} within {within_s} s; it said: {seen}")
        if line is None:
            pytest.fail(f"tswarm forward exited {proc.wait()} before saying {wanted!r}: {seen}")
        seen.append(line.rstrip("\n"))
    return proc, seen, lines


def _stop_with_ctrl_c(proc, lines):
    proc.send_signal(signal.SIGINT)
    code = proc.wait(30)
    rest = []
    while (line := lines.get(timeout=30)) is not None:
        rest.append(line.rstrip("\n"))
    return code, rest


@pytest.mark.parametrize("api", ["1", "2"])
def test_forward_to_an_influxdb_that_never_answers_says_it_waits_and_stops_on_ctrl_c(tmp_path, api, influxdb1_factory):
    """A real InfluxDB 1.x (v1 API) or VictoriaMetrics (v2 write API), paused with SIGSTOP: its port
    still accepts connections, and nothing is answered."""
    data_dir = tmp_path / "data"
    fill_a_and_b(data_dir)
    if api == "1":
        influx = influxdb1_factory()
    else:
        (tmp_path / "vm").mkdir()
        influx = VictoriaMetrics(tmp_path / "vm").start()
    influx.pause()
    try:
        env = tswarm_env(data_dir, TSWARM_INFLUX_URL=influx.url, TSWARM_INFLUX_API=api, TSWARM_INFLUX_ORG="home")
        proc, said, lines = _forward_until_it_says(env, "Ctrl-C to stop")
        code, rest = _stop_with_ctrl_c(proc, lines)
    finally:
        influx.stop()
    assert said[-1].startswith(f"waiting for InfluxDB v{api} API at {influx.url}") and "to answer" in said[-1]
    assert code == 130
    assert rest == ["stopped: 0 of 3 reading(s) sent; the same command sends them all again"]
    assert not any("Traceback" in line for line in said + rest)


def test_forward_to_a_closed_port_says_why_it_waits_and_when_it_retries(tmp_path):
    data_dir = tmp_path / "data"
    fill_a_and_b(data_dir)
    url = f"http://127.0.0.1:{free_port()}"
    env = tswarm_env(data_dir, TSWARM_INFLUX_URL=url, TSWARM_INFLUX_API="1")
    proc, said, lines = _forward_until_it_says(env, "Ctrl-C to stop")
    code, rest = _stop_with_ctrl_c(proc, lines)
    assert re.fullmatch(
        rf"waiting for InfluxDB v1 API at {url}, database 'tswarm': .*Connect.*; retrying in \d+\.\d s \(Ctrl-C to stop\)", said[-1]
    ), said[-1]
    assert said == said[-1:]  # nothing before it: not the service's log line as well
    assert code == 130 and not any("Traceback" in line for line in rest)


# -- what a careless or hostile command line gets: one line, never a traceback --------------------------


@pytest.mark.engines("sqlite")
@pytest.mark.parametrize("command", [["node", "list"], ["node", "list", "--json"], ["node", "add", "a"], ["settings"],
                                     ["--help"], ["status", "--json"]])
def test_standard_output_that_cannot_be_written_is_one_error_line(tmp_path, command):
    """/dev/full, as a full disk: before, a traceback (OSError out of click.echo) for every command but export."""
    data_dir = tmp_path / "data"
    run_cli(data_dir, "node", "add", "b")
    with open("/dev/full", "w") as full:
        proc = subprocess.run([*TSWARM, *command], env=tswarm_env(data_dir), stdout=full, stderr=subprocess.PIPE,
                              text=True, timeout=60)
    assert proc.returncode == 1
    assert_one_error_line(proc, "Error: standard output cannot be written (No space left on device)")


@pytest.mark.parametrize("host", ["x..y", "a" * 64 + ".lan", "h\udcff"])
def test_serve_refuses_a_host_no_resolver_takes_in_one_line(run, monkeypatch, host):
    """Before: a traceback (UnicodeError of the idna codec in getaddrinfo)."""
    result = run("serve", "--host", host, "--port", "0")
    assert result.exit_code == 2 and "Traceback" not in result.output
    assert result.stderr.splitlines()[-1] == (
        f"Error: Invalid value for '--host': must be an address or a host name like 0.0.0.0, :: or myhost.lan, got {host!r}")
    monkeypatch.setenv("TSWARM_HOST", host)  # every command reads every setting
    result = run("node", "list")
    assert (result.exit_code, result.stderr) == (
        1, f"Error: TSWARM_HOST must be an address or a host name like 0.0.0.0, :: or myhost.lan, got {host!r}\n")


def test_a_database_url_that_is_not_utf8_is_one_line_that_does_not_quote_it(run, monkeypatch):
    """A byte of the command line that is not UTF-8: before, a traceback out of libpq's conninfo parser."""
    url = "postgres://u:s3cret\udcff@127.0.0.1:1/db"
    result = run("migrate", "--to", url)
    assert result.exit_code == 1 and "s3cret" not in result.output
    assert result.stderr == ("Error: --to must be a postgres:// or postgresql:// URL like postgres://user:password@host:5432/db;"
                             " the one given is not UTF-8 text (not shown: it may hold a password)\n")
    monkeypatch.setenv("TSWARM_DATABASE_URL", url)
    result = run("node", "list")
    assert result.exit_code == 1 and "s3cret" not in result.output and "TSWARM_DATABASE_URL" in result.stderr
    assert len(result.stderr.splitlines()) == 1 and "is not UTF-8 text" in result.stderr


@pytest.mark.parametrize("token", ["t\udcff", "tök", "a b", "a\x7fb"])
def test_grafana_provision_refuses_a_token_no_header_can_carry_before_connecting(run, monkeypatch, token):
    """Before: a traceback (UnicodeEncodeError in http.client) once Grafana answered."""
    def connect(*args, **kwargs):
        raise AssertionError("connected with a token that cannot be sent")

    monkeypatch.setattr("tswarm.grafana_provision.connect", connect)
    result = run("grafana", "provision", "--url", "http://127.0.0.1:9", "--token", token)
    assert result.exit_code == 2
    assert result.stderr.splitlines()[-1] == ("Error: Invalid value for '--token': must be ASCII without spaces or control"
                                              " characters, as Grafana shows a service account token (glsa_...)")


def test_grafana_provision_sends_a_pasted_token_without_its_newline(run, monkeypatch):
    seen = []

    def connect(url, token):
        seen.append(token)
        raise SystemExit(0)

    monkeypatch.setattr("tswarm.grafana_provision.connect", connect)
    run("grafana", "provision", "--url", "http://127.0.0.1:9", "--token", " glsa_abc\n")
    assert seen == ["glsa_abc"]


@pytest.mark.engines("sqlite")
@pytest.mark.parametrize("command", [["node", "add", "b"], ["halt"], ["node", "passwd", "a"], ["export"],
                                     ["serve", "--host", "127.0.0.1", "--port", "0"]])
@pytest.mark.parametrize("name", ["tswarm.db", "tswarm.db-wal"])
def test_a_journal_file_this_user_cannot_write_is_one_error_line(tmp_path, command, name):
    """SQLite opens such a file read-only without a word: before, the first write was a traceback
    ("attempt to write a readonly database"), and `serve` ran, answering every reading 503."""
    data_dir = tmp_path / "data"
    run_cli(data_dir, "node", "add", "a")
    (data_dir / name).touch()
    (data_dir / name).chmod(0o400)
    proc = run_tswarm(command, tswarm_env(data_dir), prefix=without_root_powers())
    assert_one_error_line(proc, f"journal file {data_dir / name} cannot be read and written by this user (mode 400")
    (data_dir / name).chmod(0o600)
    with open_journal(data_dir) as journal:
        assert [n.name for n in journal.list_nodes()] == ["a"] and not journal.halted_all()


@pytest.mark.engines("sqlite")
def test_a_cursor_file_that_is_not_ascii_is_refused_as_any_other_bad_cursor(tmp_path):
    """Before: exit 1 and the codec's words ('ascii' codec can't decode byte 0xff ...)."""
    fill_a_and_b(tmp_path / "data")
    cursor = tmp_path / "cursor"
    cursor.write_bytes(b"\xff\xfe")
    proc = run_tswarm(["export", "--cursor-file", str(cursor)], tswarm_env(tmp_path / "data"))
    assert proc.returncode == 2 and proc.stdout == ""
    assert proc.stderr.splitlines()[-1] == (f"Error: Invalid value for '--cursor-file' ({cursor}): cursor is not one this"
                                            " service handed out; pass it back exactly as received")
