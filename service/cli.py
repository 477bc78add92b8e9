"""The ``tswarm`` command: thin click wrappers, each calling one function of the service."""
from __future__ import annotations

import contextlib
import dataclasses
import json
import logging
import os
import sys
import time
from pathlib import Path
from typing import Callable, Optional

import click

from .health import MAX_INTERVAL_S, MIN_INTERVAL_S
from .names import NODE_NAME_HELP, valid_node_name
from .settings import SETTINGS_BY_NAME, Config, ConfigError, flag_help, settings_help
from .storage import (
    DB_FILENAME, NodeExists, NodeNotFound, Storage, StorageUnavailable, StorageUnusable, check_data_dir, storage_for,
)
from .datadir import check_journal_files
from .svconf import svconf
from .timefmt import parse_time, rfc3339

SETTINGS_HELP = settings_help()
_PORT = SETTINGS_BY_NAME["TSWARM_PORT"].parser  # its range is the --port flag's
_WORKERS = SETTINGS_BY_NAME["TSWARM_WORKERS"].parser  # and this one --workers'


def data_dir_option(func):
    return click.option(
        "--data-dir",
        type=click.Path(path_type=Path),  # checked where the journal opens, as TSWARM_DATA_DIR is: one line
        default=None,
        help=flag_help("Folder of the SQLite journal", "TSWARM_DATA_DIR"),
    )(func)


def load_config(**overrides) -> Config:
    """The settings (a bad one is a ConfigError: one ``Error:`` line, see :class:`Cli`)."""
    return Config.from_env(**overrides)


def open_journal(data_dir: Optional[Path]) -> Storage:
    """The existing journal of ``--data-dir`` (only `node add`, `node config`, `flash` and `serve` create one)."""
    return existing_journal(load_config(data_dir=data_dir))


def existing_journal(config: Config) -> Storage:
    if config.database_url:  # PostgreSQL: the database must hold a journal already
        return storage_for(config, existing=True)
    check_data_dir(config.data_dir, create=False)
    check_journal_files(config.data_dir)
    if not (config.data_dir / DB_FILENAME).exists():
        raise click.ClickException(
            f"no journal in {config.data_dir}: 'tswarm node add' or 'tswarm serve' creates it"
            " (is --data-dir or TSWARM_DATA_DIR right?)"
        )
    return storage_for(config, existing=True)


def new_or_existing_journal(config: Config) -> Storage:
    """The journal of ``config``, made if there is none (`node add`; `flash` and `node config` in flash.py)."""
    if not config.database_url:
        check_journal_files(config.data_dir)
    return storage_for(config)


def node_name_arg(func):
    def check(ctx, param, value):
        if value is not None and not valid_node_name(value):
            raise click.BadParameter(f"{value!r}: node names are {NODE_NAME_HELP}")
        return value

    return click.argument("name", callback=check)(func)


class Cli(click.Group):
    """What a user can get wrong in any command (a setting, the data dir, the journal file) is one
    ``Error:`` line and exit 1, never a traceback."""

    def invoke(self, ctx):
        try:
            return super().invoke(ctx)
        except (ConfigError, StorageUnusable, StorageUnavailable) as exc:
            raise click.ClickException(str(exc)) from None


@click.group(cls=Cli, epilog="Settings (environment variables; a flag wins over its variable):\n\n\b\n" + SETTINGS_HELP)
@click.version_option(package_name="tswarm")
def cli():
    """tswarm: collect readings from a swarm of MicroPython sensor nodes."""


def _host_param(value: Optional[str]) -> Optional[str]:
    """``--host``, refused as TSWARM_HOST is (a text no resolver takes), quoted as click quotes an option."""
    if value is not None:
        try:
            SETTINGS_BY_NAME["TSWARM_HOST"].check(value)
        except ConfigError as exc:
            raise click.BadParameter(str(exc).replace("TSWARM_HOST ", "", 1)) from None
    return value


@cli.command()
@click.option("--host", default=None, callback=lambda c, p, v: _host_param(v), help=flag_help("Listen address", "TSWARM_HOST"))
@click.option(
    "--port", type=click.IntRange(_PORT.low, _PORT.high), default=None, help=flag_help("Listen port", "TSWARM_PORT"),
)
@click.option(
    "--workers", type=click.IntRange(_WORKERS.low, _WORKERS.high), default=None,
    help=flag_help("Processes sharing the port", "TSWARM_WORKERS") + " With more than one, a supervisor"
    " starts them and restarts any that dies; worker 0 alone forwards and prunes. Per worker: the"
    " failed-login guard (an address may try workers x TSWARM_AUTH_MAX_FAILURES times), the credential"
    " cache (one scrypt per node per worker) and /metrics (the worker that answered).",
)
@data_dir_option
def serve(host, port, workers, data_dir):
    """Run the service: the node protocol, health check and readers.

    One service per data dir: a second 'tswarm serve' on a data dir that a running one holds is
    refused (the other commands work beside it)."""
    from .workers import DataDirInUse, ListenError, serve as run

    if os.environ.get("PORT"):
        port = None  # Heroku's PORT wins over --port
    config = load_config(host=host, port=port, data_dir=data_dir, workers=workers)
    if not config.database_url:
        check_journal_files(config.data_dir)  # one line, before a service that would answer every reading 503
    logging.basicConfig(level=config.log_level, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    try:
        status = run(config, started=lambda port: _announce_read_token(dataclasses.replace(config, port=port)))
    except (ListenError, DataDirInUse) as exc:
        raise click.ClickException(str(exc)) from None
    sys.exit(status)


def _announce_read_token(config: Config) -> None:
    """With no TSWARM_READ_TOKEN: make the data dir's read token (before any worker starts) and say
    where the page is; the URL with the token only the first time (service/tokens.py)."""
    from .svconf import lan_address
    from .tokens import TokenFileError, announce

    try:
        message = announce(config, lan_address())
    except TokenFileError as exc:
        raise click.ClickException(str(exc)) from None
    if message:
        click.echo(message, err=True)


@cli.group()
def node():
    """Register nodes and look after them: add, list, remove, passwd, interval, display, config."""


def _print_svconf(config: Config, name: str, password: str) -> None:
    from .svconf import loopback_problem

    conf = svconf(config, name, password)
    click.echo(json.dumps(conf, indent=2))
    problem = loopback_problem(config, conf)
    if problem:  # printed for a person to paste, so a warning; flash and node config refuse
        click.echo(f"warning: {problem}, then run 'tswarm node passwd {name}' again", err=True)


def _password_or_generated(password: Optional[str]) -> str:
    from .nodes import BadPassword, password_or_generated

    try:
        return password_or_generated(password)
    except BadPassword as exc:
        raise click.BadParameter(str(exc), param_hint="'--password'") from None


@node.command("add")
@node_name_arg
@click.option("--password", default=None, help="The node's password; a strong one is generated when omitted.")
@click.option("--display", is_flag=True,
              help="Give it the display right: a master node, whose screen reads the swarm's summary"
              " (GET /api/nodes/NAME/swarm).")
@data_dir_option
def node_add(name, password, display, data_dir):
    """Register node NAME and print its svconf JSON for the firmware's config.json."""
    from .nodes import Registration, register

    config = load_config(data_dir=data_dir)
    generated = password is None
    password = _password_or_generated(password)
    with new_or_existing_journal(config) as journal:
        try:
            register(journal, config, name, password, Registration.NEW, generated=generated, display=display or None)
        except NodeExists:
            raise click.ClickException(
                f"node {name!r} already exists; 'tswarm node passwd {name}' gives it a new password"
            ) from None
    _print_svconf(config, name, password)


@node.command("passwd")
@node_name_arg
@click.option("--password", default=None, help="The new password; a strong one is generated when omitted.")
@data_dir_option
def node_passwd(name, password, data_dir):
    """Give node NAME a new password and print its new svconf JSON."""
    from .nodes import Registration, register

    config = load_config(data_dir=data_dir)
    generated = password is None
    password = _password_or_generated(password)
    with existing_journal(config) as journal:
        try:
            register(journal, config, name, password, Registration.EXISTING, generated=generated)
        except NodeNotFound:
            raise click.ClickException(f"no node named {name!r}; 'tswarm node list' shows them") from None
    _print_svconf(config, name, password)


def _ago(age_s: float) -> str:
    seconds = max(0, int(age_s))
    for unit, size in (("d", 86400), ("h", 3600), ("min", 60)):
        if seconds >= size:
            return f"{seconds // size} {unit} ago"
    return f"{seconds} s ago"


def _update_cell(firmware: dict) -> str:
    """The UPDATE column of `node list`: ``-`` with nothing staged, ``pending V``, else the outcome."""
    if firmware["staged"] is None:
        return "-"
    if firmware["outcome"] == "pending":
        return f"pending {firmware['staged']}"
    return firmware["summary"]


@node.command("list")
@click.option("--json", "as_json", is_flag=True, help="Print JSON instead of a table.")
@data_dir_option
def node_list(as_json, data_dir):
    """List nodes with their last reading, when they were last seen, the firmware each runs (as it last
    reported), its over-the-air update (staged, pending, updated, rolled back) and whether it may read
    the swarm's summary (DISPLAY: a master node)."""
    from .nodes import nodes_report

    config = load_config(data_dir=data_dir)
    with existing_journal(config) as journal:
        nodes = nodes_report(journal, config, time.time_ns())["nodes"]
    if as_json:
        click.echo(json.dumps(nodes, indent=2))  # each node as GET /api/nodes shows it
        return
    if not nodes:
        click.echo("no nodes yet; 'tswarm node add NAME' registers one")
        return
    rows = [("NAME", "STATE", "DISPLAY", "TEMP °C", "RH %", "LAST SEEN", "FIRMWARE", "UPDATE")]
    for n in nodes:
        state = "halted" if n["halted"] else ("active" if n["created"] else "registered")
        seen = n["last_seen"]
        last = (f"{n['temperature']:g}", f"{n['humidity']:g}") if seen else ("-", "-")
        rows.append((n["name"], state, "yes" if n["display"] else "-", *last,
                     f"{seen[:19]}Z ({_ago(n['age_s'])})" if seen else "never",
                     n["firmware"]["running"] or "-", _update_cell(n["firmware"])))
    widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]))]
    for r in rows:
        click.echo("  ".join(cell.ljust(w) for cell, w in zip(r, widths)).rstrip())


@node.command("remove")
@node_name_arg
@data_dir_option
def node_remove(name, data_dir):
    """Revoke node NAME's credentials; its readings stay in the history."""
    with open_journal(data_dir) as journal:
        try:
            journal.remove_node(name)
        except NodeNotFound:
            raise click.ClickException(f"no node named {name!r}; 'tswarm node list' shows them") from None
    click.echo(f"removed {name}")


@node.command("interval")
@node_name_arg
@click.argument("seconds", type=click.IntRange(MIN_INTERVAL_S, MAX_INTERVAL_S))
@data_dir_option
def node_interval(name, seconds, data_dir):
    """Expect node NAME to send a reading every SECONDS (default 300); its health is judged by it.

    SECONDS is 10 to 604800 (a week); every answer tells the node to sleep that long."""
    with open_journal(data_dir) as journal:
        try:
            journal.set_interval(name, seconds)
        except NodeNotFound:
            raise click.ClickException(f"no node named {name!r}; 'tswarm node list' shows them") from None
    click.echo(f"{name}: a reading expected every {seconds} s")


@node.command("display")
@node_name_arg
@click.argument("state", type=click.Choice(["on", "off"]))
@data_dir_option
def node_display(name, state, data_dir):
    """Let node NAME read the swarm's summary (on: a master node with a screen) or no longer (off).

    With the right, its own credentials read GET /api/nodes/NAME/swarm (the next request sees the change)."""
    on = state == "on"
    with open_journal(data_dir) as journal:
        try:
            journal.set_display(name, on)
        except NodeNotFound:
            raise click.ClickException(f"no node named {name!r}; 'tswarm node list' shows them") from None
    if on:
        click.echo(f"node {name} may read the swarm summary (GET /api/nodes/{name}/swarm)")
    else:
        click.echo(f"node {name} may no longer read the swarm summary")


def _halt(name, data_dir, halted: bool):
    config = load_config(data_dir=data_dir)
    with existing_journal(config) as journal:
        try:
            journal.set_halt(name, halted)
        except NodeNotFound:
            raise click.ClickException(f"no node named {name!r}; 'tswarm node list' shows them") from None
        halted_all = journal.halted_all()
    what = name or "all nodes"
    click.echo(f"{'halted' if halted else 'resumed'} {what}" + ("" if halted else _still_halted(config, halted_all)))


def _still_halted(config: Config, halted_all: bool) -> str:
    """What a resume leaves halted (every node, :func:`tswarm.nodes.is_halted`), said after it."""
    if config.halt:
        return "; TSWARM_HALT=1 still halts every node until it is unset"
    if halted_all:  # a resume of one node while 'tswarm halt' holds them all
        return "; 'tswarm halt' still halts every node until 'tswarm resume' without a name"
    return ""


def optional_node_name(func):
    def check(ctx, param, value):
        if value is not None and not valid_node_name(value):
            raise click.BadParameter(f"{value!r}: node names are {NODE_NAME_HELP}")
        return value

    return click.argument("name", required=False, callback=check)(func)


@cli.command()
@optional_node_name
@data_dir_option
def halt(name, data_dir):
    """Halt node NAME, or every node: they get 423 and stay awake for reflashing (readings are kept)."""
    _halt(name, data_dir, True)


@cli.command()
@optional_node_name
@data_dir_option
def resume(name, data_dir):
    """Resume node NAME, or every node halted with 'tswarm halt' (TSWARM_HALT=1 is not undone)."""
    _halt(name, data_dir, False)


class TimeParam(click.ParamType):
    """RFC 3339 or epoch seconds, as nanoseconds; the same parser as the API's (service/timefmt.py)."""

    name = "TIME"

    def convert(self, value, param, ctx):
        if isinstance(value, int):
            return value
        try:
            return parse_time(value)
        except ValueError as exc:
            self.fail(str(exc), param, ctx)


def writable_file(path: Optional[Path], option: str = "-o") -> Optional[Path]:
    """``path`` if a file can be written there (its folder exists, it is not a folder); a one-line error
    naming ``option`` otherwise, before anything is read or written."""
    if path is None:
        return path
    folder = path.parent
    if path.is_dir():
        raise click.ClickException(f"{option} {path}: that is a folder; give a file name in it")
    if not folder.is_dir():
        raise click.ClickException(f"{option} {path}: the folder {folder} does not exist")
    if not os.access(path if path.exists() else folder, os.W_OK):
        raise click.ClickException(f"{option} {path}: not writable by this user")
    return path


def _show_progress(output: Optional[Path]) -> bool:
    """A bar on standard error when it is a terminal, unless the rows go to that terminal too."""
    return sys.stderr.isatty() and (output is not None or not sys.stdout.isatty())


@cli.command()
@click.option("--node", "node_name", default=None, help="Only this node.")
@click.option("--start", type=TimeParam(), default=None, help="From this time, inclusive (RFC 3339 or epoch seconds).")
@click.option("--stop", type=TimeParam(), default=None, help="Until this time, exclusive (RFC 3339 or epoch seconds).")
@click.option("--format", "fmt", type=click.Choice(["csv", "ndjson"]), default="csv", show_default=True)
@click.option("-o", "--output", type=click.Path(path_type=Path), default=None,
              callback=lambda c, p, v: None if v is not None and str(v) == "-" else writable_file(v),  # -: standard output
              help="Write to FILE instead of standard output (- is standard output).")
@click.option("--cursor-file", type=click.Path(path_type=Path), callback=lambda c, p, v: writable_file(v, "--cursor-file"), default=None,
              help="Catch up: export only what FILE's cursor has not had (everything when FILE does not exist yet),"
                   " then keep the cursor after this export in FILE for the next run.")
@data_dir_option
def export(node_name, start, stop, fmt, output, cursor_file, data_dir):
    """Stream readings as CSV or NDJSON, oldest first (times in RFC 3339 UTC).

    A progress bar goes to standard error when it is a terminal (and the rows do not go to that
    same terminal); piped or redirected, there is none."""
    from .export import BadParameter, UnknownNode, check_node, encode_cursor, export_args, export_chunks
    from .history import CursorExpired, HistoryUnavailable, open_history, plan

    token = read_cursor_file(cursor_file)
    try:  # the checks of GET /api/readings, before anything is opened
        args = export_args(fmt=fmt, node=node_name, start=start, stop=stop, cursor=token)
    except BadParameter as exc:
        hint = f"'--{exc.param}'" if exc.param != "cursor" else f"'--cursor-file' ({cursor_file})"
        raise click.BadParameter(str(exc), param_hint=hint) from None
    config = load_config(data_dir=data_dir)
    with existing_journal(config) as journal, open_history(config) or contextlib.nullcontext() as influx, \
            journal.snapshot():  # the export and the cursor after it agree
        try:
            check_node(journal, node_name)
        except UnknownNode as exc:
            raise click.ClickException(f"{exc}; 'tswarm node list' shows them") from None
        try:
            page = plan(journal, influx, node=node_name, start_ns=args["start_ns"], stop_ns=args["stop_ns"],
                        after=args.get("after"))
        except (CursorExpired, HistoryUnavailable) as exc:
            raise click.ClickException(str(exc)) from None
        where = f"-o {output}" if output else "standard output"
        try:
            out = open(output, "w", encoding="utf-8", newline="") if output else sys.stdout
        except OSError as exc:
            raise click.ClickException(f"{where}: cannot be written ({exc.strerror or exc})") from None
        cut = _removing_a_cut_export(output)
        show = _show_progress(output)
        # With readings pruned from the journal (store=influxdb), or a cursor, the total is not known up front.
        pruned = influx is not None and journal.pruned_before() is not None
        total = journal.count_readings_in(node_name, start, stop) if show and not pruned and token is None else None
        try:
            if show:  # tqdm imported only then: its import is a tenth of a second of every export
                from tqdm import tqdm

                bar = tqdm(total=total, unit=" rows", unit_scale=True, file=sys.stderr)
            with bar if show else contextlib.nullcontext():
                for chunk in export_chunks(journal, **args, on_rows=bar.update if show else None, influx=influx, page=page):
                    out.write(chunk)
            out.flush()  # a full disk or an I/O error shows here, not at exit
            if cursor_file is not None:  # the rows are on disk before the cursor that says so
                with contextlib.suppress(OSError, ValueError):  # a pipe or a terminal cannot be synced
                    os.fsync(out.fileno())
            if output:
                out.close()
        except BrokenPipeError:
            _discard_stdout()
            sys.stderr.close()  # `tswarm export | head`: stop quietly
            return
        except HistoryUnavailable as exc:
            raise click.ClickException(f"{exc}{cut(out)}") from None  # one line on standard error, exit 1
        except OSError as exc:  # a full disk, an I/O error: one line, and no cursor written
            if not output:
                _discard_stdout()
            raise click.ClickException(
                f"{where}: the export could not be written ({exc.strerror or exc}){cut(out)}") from None
        finally:
            if output and not out.closed:
                with contextlib.suppress(OSError):
                    out.close()
        if cursor_file is not None:  # only once every row is written: a failed run is simply run again
            try:
                write_cursor_file(cursor_file, encode_cursor(page.resume))
            except OSError as exc:
                raise click.ClickException(
                    f"--cursor-file {cursor_file}: cannot be written ({exc.strerror or exc}); every row was"
                    " exported, and the next run with it exports them again"
                ) from None


def _discard_stdout() -> None:
    """Standard output that can take no more: what is left in its buffer goes nowhere, so the exit's
    flush raises nothing (Python's advice for a closed pipe)."""
    with contextlib.suppress(OSError, ValueError):
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())


def _removing_a_cut_export(output: Optional[Path]) -> Callable:
    """``cut(out)``: after an export to ``output`` failed midway, removes the file when it is a regular
    one (part of an export must not pass for the whole), and says so, as the end of the error line."""
    regular = output is not None and Path(output).is_file()

    def cut(out) -> str:
        if not regular:
            return ""
        with contextlib.suppress(OSError):
            out.close()
        try:
            Path(output).unlink()
        except OSError:
            return f"; {output} holds part of the export only"
        return f"; {output} was removed (it held part of the export)"

    return cut


def read_cursor_file(path: Optional[Path]) -> Optional[str]:
    """The cursor kept in ``path`` by an earlier ``export --cursor-file`` (None: no file yet)."""
    if path is None or not path.exists():
        return None
    try:  # not ASCII: no cursor of this service, which export_args says as of any other text
        return path.read_bytes().decode("ascii", "replace").strip()
    except OSError as exc:
        raise click.ClickException(f"--cursor-file {path}: cannot be read ({exc})") from None


def write_cursor_file(path: Path, token: str) -> None:
    """Keep ``token`` in ``path``, replaced whole (a crash leaves the old cursor or the new one)."""
    temporary = path.with_name(f".{path.name}.tmp")
    temporary.write_text(token + "\n", encoding="ascii")
    os.replace(temporary, path)


@cli.command()
@click.option("--markdown", is_flag=True, help="Print the table as Markdown (as in docs/configuration.md).")
def settings(markdown):
    """List every TSWARM_* setting with its default and meaning (values are never printed)."""
    from .settings import settings_list, settings_markdown

    click.echo(settings_markdown() if markdown else settings_list(os.environ), nl=False)


# -- firmware: tswarm flash, tswarm node config (the work is in service/flash.py) --------------


def _battery_param(value):
    if value is None or value.lower() == "vcc":
        return None if value is None else "vcc"
    if not value.isascii() or not value.isdigit():
        raise click.BadParameter(f"give 'vcc' or an ADC pin number like 0 or 35, got {value!r}", param_hint="'--battery'")
    return int(value)


GPIO = click.IntRange(min=0)  # a GPIO number; which ones a board has, flash.check_pins says


def _leds_param(value):
    if value is None:
        return None  # the board's default
    if value.lower() == "none":
        return ()
    pins = value.split(",")
    if len(pins) != 3 or not all(pin.strip().isascii() and pin.strip().isdigit() for pin in pins):
        raise click.BadParameter("give three GPIO numbers R,G,B like 15,12,13, or 'none'", param_hint="'--leds'")
    red, green, blue = (int(pin) for pin in pins)
    return (red, green, blue)


def board_options(func):
    """The options that shape a node's config.json (shared by `flash` and `node config`)."""
    options = [
        click.option("--wifi-ssid", "ssids", multiple=True, help="A Wi-Fi network, tried in the order given (repeat)."),
        click.option("--wifi-password", "passwords", multiple=True, help="The password of each --wifi-ssid, same order (repeat)."),
        click.option("--ip", default=None, help="Static IPv4 address (faster wakes); DHCP when omitted."),
        click.option("--netmask", default="255.255.255.0", show_default=True, help="Netmask with --ip."),
        click.option("--gateway", default=None, help="Gateway with --ip."),
        click.option("--dns", default=None, help="DNS server with --ip [default: the gateway]."),
        click.option("--board", type=click.Choice(["esp8266", "esp32"]), default="esp8266", show_default=True),
        click.option("--sensor", type=click.Choice(["dht11", "dht22"]), default=None,
                     help="The DHT on the board [default: dht22; none with --master]."),
        click.option("--dht-pin", type=GPIO, default=None, help="GPIO of the DHT data line [default: 5 on esp8266, 4 on esp32]."),
        click.option("--leds", default=None, help="GPIOs of the RGB LED as R,G,B, or 'none' [default: 15,12,13 on esp8266, none on esp32]."),
        click.option("--leds-active-low", is_flag=True, help="The LED lights when its pin is low (common anode)."),
        click.option("--sleep", type=int, default=None,
                     help="Seconds of deep sleep between readings; a master's between refreshes of the swarm's summary"
                     " [default: 300; 60 with --master]."),
        click.option("--battery", default=None, callback=lambda c, p, v: _battery_param(v), metavar="vcc|PIN",
                     help="Send the battery or supply voltage with each reading: 'vcc' (an ESP8266's own supply) or the"
                     " ADC pin of a divider (0: an ESP8266's A0; an ESP32 GPIO such as 35) [default: none]."),
        click.option("--battery-ratio", type=float, default=1.0, show_default=True,
                     help="The divider in front of --battery's pin: volts at the battery per volt at the pin, e.g. 2."),
        click.option("--password", default=None, help="The node's password; a new one is generated when omitted."),
        click.option("--master", is_flag=True,
                     help="A master node: a board with an SSD1306 screen showing the swarm (modules.screen); it gets the"
                     " display right, and no sensor unless --sensor is given."),
        click.option("--screen-sda", type=GPIO, default=None, help="GPIO of the screen's SDA [default: 4 (D2) on esp8266, 21 on esp32]."),
        click.option("--screen-scl", type=GPIO, default=None, help="GPIO of the screen's SCL [default: 5 (D1) on esp8266, 22 on esp32]."),
        click.option("--screen-width", type=int, default=None, help="The screen's width in pixels [default: 128]."),
        click.option("--screen-height", type=int, default=None, metavar="64|32", help="The screen's height in pixels [default: 64]."),
        click.option("--screen-address", default=None, metavar="ADDR",
                     help="The screen's I2C address, 0x3c or 0x3d (60 or 61) [default: 0x3c]."),
        click.option("--screen-rotate", type=int, default=None, metavar="0|180", help="Turn the picture by 180 degrees [default: 0]."),
    ]
    for option in reversed(options):
        func = option(func)
    return func


def _board(options: dict):
    """BoardOptions from the click options of `board_options`, checked."""
    from .flash import BoardOptions

    options = {k: v for k, v in options.items() if k != "password"}
    board = BoardOptions(leds=_leds_param(options.pop("leds")), **options)
    board.validate()
    return board


MAX_BOARD_TIMEOUT_S = 3600


def _timeout_param(value: float) -> float:
    if not 0 < value <= MAX_BOARD_TIMEOUT_S:  # nan and inf too (no comparison holds for nan)
        raise click.BadParameter(f"must be above 0 and at most {MAX_BOARD_TIMEOUT_S} seconds, got {value:g}",
                                 param_hint="'--timeout'")
    return value


ALLOW_LOOPBACK_HELP = (
    "Write a loopback URL (127.0.0.1, localhost) into the config all the same: for a board that runs on"
    " this machine. Without it, such a URL is refused: no board can reach it."
)


@node.command("config")
@node_name_arg
@board_options
@click.option("--allow-loopback", is_flag=True, help=ALLOW_LOOPBACK_HELP)
@click.option("--push", is_flag=True,
              help="Stage the options given (only those) as an over-the-air change of the registered node's"
              " config.json instead of printing it; the node merges it into the config it has on its next wake."
              " Never registers the node nor changes its password.")
@data_dir_option
@click.pass_context
def node_config(ctx, name, data_dir, allow_loopback, push, **options):
    """Print node NAME's config.json (registering NAME if needed), for flashing another way; give at
    least one --wifi-ssid, as to flash. With --push, stage a change of its config.json over the air
    instead: only the options given, so the board keeps its networks unless --wifi-ssid is given."""
    from .flash import FlashError, node_config as make

    if push:
        _push_config(ctx, name, data_dir, options)
        return
    config = load_config(data_dir=data_dir)
    try:
        text = make(config, name, options["password"], _board(options), allow_loopback=allow_loopback,
                    report=lambda line: click.echo(line, err=True))
    except FlashError as exc:
        raise click.ClickException(str(exc)) from None
    click.echo(text, nl=False)


def _given(ctx: click.Context, option: str) -> bool:
    return ctx.get_parameter_source(option) is click.core.ParameterSource.COMMANDLINE


def _ipv4(option: str, value: str) -> str:
    """``value`` of ``option``, checked as a whole config.json's is (:func:`tswarm.flash.address_problem`)."""
    from .flash import address_problem

    problem = address_problem(value, netmask=option == "--netmask")
    if problem:
        raise click.BadParameter(problem, param_hint=f"'{option}'")
    return value


def config_patch_of(ctx: click.Context, options: dict) -> dict:
    """The part of config.json that the board options given on the command line set (and only
    those: the service does not know the rest of the board's config, and need not)."""
    if _given(ctx, "password"):
        raise click.UsageError("--password with --push: a config push never changes the node's password"
                               " ('tswarm node passwd' and a reflash do)")
    if _given(ctx, "board"):
        raise click.UsageError("--board with --push: a board does not change kind; leave --board out")
    screen = [o for o in ("master", "screen_sda", "screen_scl", "screen_width", "screen_height", "screen_address",
                          "screen_rotate") if _given(ctx, o)]
    if screen:
        raise click.UsageError(f"--{screen[0].replace('_', '-')} with --push: a board becomes a master, or changes its"
                               " screen, with 'tswarm flash --master', which also installs the screen's driver")
    netconf, modules = {}, {}
    if _given(ctx, "ssids") or _given(ctx, "passwords"):
        if len(options["ssids"]) != len(options["passwords"]) or not options["ssids"]:
            raise click.UsageError(
                f"{len(options['ssids'])} --wifi-ssid but {len(options['passwords'])} --wifi-password: a push replaces"
                " the board's networks, so give every network with its password, in order ('' for an open one)")
        from .flash import FlashError, check_wifi

        try:
            check_wifi(options["ssids"], options["passwords"])
        except FlashError as exc:
            raise click.UsageError(str(exc)) from None
        netconf.update(ssid=list(options["ssids"]), password=list(options["passwords"]))
    for option in ("ip", "netmask", "gateway", "dns"):
        if _given(ctx, option):
            netconf[option] = _ipv4(f"--{option}", options[option])
    if _given(ctx, "sleep"):
        if not MIN_INTERVAL_S <= options["sleep"] <= MAX_INTERVAL_S:
            raise click.BadParameter(f"must be {MIN_INTERVAL_S} to {MAX_INTERVAL_S} seconds (the node's interval),"
                                     f" got {options['sleep']}", param_hint="'--sleep'")
        netconf["sleep"] = options["sleep"]
    if _given(ctx, "sensor"):
        modules["sensor"] = options["sensor"]
    if _given(ctx, "dht_pin"):
        _pin_of_some_board("--dht-pin", options["dht_pin"])
        modules["pins"] = {"dht": options["dht_pin"]}
    if _given(ctx, "leds"):
        leds = _leds_param(options["leds"])
        for pin in leds or ():
            _pin_of_some_board("--leds", pin)
        modules["leds"] = [] if not leds else dict(zip(("red", "green", "blue"), leds))
    if _given(ctx, "battery") or _given(ctx, "battery_ratio"):
        from .flash import FlashError, battery_module, check_battery

        if options["battery"] is None:
            raise click.UsageError("--battery-ratio with --push needs --battery (the pin it divides for)")
        try:
            check_battery(options["battery"], options["battery_ratio"], None)
        except FlashError as exc:
            raise click.UsageError(str(exc)) from None
        modules["battery"] = battery_module(options["battery"], options["battery_ratio"])
    if _given(ctx, "leds_active_low"):
        if modules.get("leds") == []:
            raise click.UsageError("--leds-active-low with --leds none: there is no LED")
        modules.setdefault("leds", {})["active_low"] = True
    patch = {key: value for key, value in (("netconf", netconf), ("modules", modules)) if value}
    if not patch:
        raise click.UsageError("--push needs at least one board option to change (--wifi-ssid/--wifi-password,"
                               " --ip, --netmask, --gateway, --dns, --sensor, --dht-pin, --leds, --leds-active-low, --sleep, --battery)")
    return patch


def _pin_of_some_board(option: str, pin: int) -> None:
    """A pin a config push names: one that some board has (the board is not known here)."""
    from .flash import FlashError, check_pin_of_some_board

    try:
        check_pin_of_some_board(option, pin)
    except FlashError as exc:
        raise click.UsageError(str(exc)) from None


def _push_config(ctx: click.Context, name: str, data_dir, options: dict) -> None:
    from .bundles import BundleError, config_patch, masked

    patch = config_patch_of(ctx, options)
    try:
        files = config_patch(patch)
    except BundleError as exc:
        raise click.ClickException(str(exc)) from None
    staged = _stage(data_dir, files, [name])
    click.echo(f"staged config change {staged.version} for {name}: {json.dumps(masked(patch), sort_keys=True)}")
    _say_replaced(staged)
    sleep = patch.get("netconf", {}).get("sleep")
    if sleep is not None:  # the "sleep" of every 202/423 (the node's interval) is what the board sleeps
        with open_journal(data_dir) as journal:
            journal.set_interval(name, sleep)
        click.echo(f"{name}'s interval is now {sleep} s ('tswarm node interval'): said in its next answer,"
                   " which the board sleeps by (the patch's netconf.sleep serves when no answer comes)")
    click.echo(f"{name} merges it into its config.json on its next wake ('tswarm firmware status' shows how it went)")


def _stage(data_dir, files, names):
    """:func:`tswarm.nodes.stage_update`, its refusals as one Error: line each."""
    from .bundles import BundleError
    from .nodes import NoNodes, stage_update

    with open_journal(data_dir) as journal:
        try:
            return stage_update(journal, files, names, time.time_ns())
        except NodeNotFound as exc:
            raise click.ClickException(f"no node named {exc.args[0]!r}; 'tswarm node list' shows them; nothing staged") from None
        except (BundleError, NoNodes) as exc:
            raise click.ClickException(str(exc)) from None


def _say_replaced(staged) -> None:
    for node, old in sorted(staged.replaced.items()):
        click.echo(f"  {node}: replaces {old}, which was pending (not yet running)")


@cli.command()
@node_name_arg
@click.option("--port", required=True, help="The board's serial device, e.g. /dev/ttyUSB0.")
@click.option("--timeout", type=float, default=15, show_default=True, callback=lambda c, p, v: _timeout_param(v),
              help=f"Seconds to wait for the board to answer (above 0, at most {MAX_BOARD_TIMEOUT_S}).")
@board_options
@click.option("--mip-index", default=None, metavar="URL|DIR",
              help="With --master: the mip index the screen's driver (micropython-lib's ssd1306) comes from; a mirror,"
              " or a folder laid out as one on an offline machine [default: https://micropython.org/pi/v2,"
              " micropython-lib's, as mpremote's own].")
@click.option("--allow-loopback", is_flag=True, help=ALLOW_LOOPBACK_HELP)
@data_dir_option
def flash(name, port, timeout, data_dir, allow_loopback, mip_index, **options):
    """Flash node NAME's board on PORT with mpremote, then register NAME.

    Checks everything first, then copies the boot loader main.py, the bundle (node.py, ota.py,
    keep.py, master.py and its version), NAME's config.json and ota.json; a failed flash changes nothing. Give
    at least one --wifi-ssid. With --master, first installs the screen's driver with mpremote mip."""
    from .flash import FlashError, flash as run

    config = load_config(data_dir=data_dir)
    try:
        run(config, name, port, options["password"], _board(options), allow_loopback=allow_loopback, timeout=timeout,
            report=lambda line: click.echo(line, err=True), mip_index=mip_index)
    except FlashError as exc:
        raise click.ClickException(str(exc)) from None
    click.echo(f"flashed {name} on {port}; press the board's reset button to start it")


# -- over the air: tswarm firmware push / status (the work is in service/nodes.py, service/bundles.py) --


@cli.group()
def firmware():
    """Update nodes over the air: stage a bundle, see what each node runs."""


def _node_names(ctx, param, values):
    for value in values:
        if not valid_node_name(value):
            raise click.BadParameter(f"{value!r}: node names are {NODE_NAME_HELP}")
    return values


@firmware.command("push")
@click.argument("folder", required=False, type=click.Path(path_type=Path))
@click.option("--node", "names", multiple=True, callback=_node_names, metavar="NAME",
              help="A node to update (repeat for several).")
@click.option("--all", "every", is_flag=True, help="Every registered node.")
@data_dir_option
def firmware_push(folder, names, every, data_dir):
    """Stage the .py files of FOLDER (the firmware shipped with this tswarm when omitted; never
    main.py, the boot loader) for the nodes given: each fetches, checks and boots it on its next
    wake, and goes back to what it ran if the new code fails. Replaces what was staged for them."""
    from .bundles import BundleError, read_dir, shipped

    if bool(names) == every:
        raise click.UsageError("give --node NAME (repeat for several) or --all, not both")
    if folder is not None and not folder.exists():  # read_dir says "is not a folder" of a file
        raise click.ClickException(f"{folder} does not exist")
    try:
        files = read_dir(folder) if folder is not None else shipped()
    except BundleError as exc:
        raise click.ClickException(str(exc)) from None
    staged = _stage(data_dir, files, None if every else names)
    total = sum(f.size for f in staged.files)
    click.echo(f"bundle {staged.version}: {len(staged.files)} file(s), {total} bytes")
    for f in staged.files:
        click.echo(f"  {f.name}  {f.size}  sha256 {f.sha256[:16]}")
    click.echo(f"staged for {len(staged.nodes)} node(s): {', '.join(staged.nodes)}")
    _say_replaced(staged)
    click.echo("each fetches it on its next wake ('tswarm firmware status' shows how it went)")


@firmware.command("cancel")
@click.option("--node", "names", multiple=True, callback=_node_names, metavar="NAME",
              help="A node whose staged update to cancel (repeat for several).")
@click.option("--all", "every", is_flag=True, help="Every registered node.")
@data_dir_option
def firmware_cancel(names, every, data_dir):
    """Unstage the update of the nodes given: they are offered nothing more (a board that fetched it
    already keeps what it runs; push the old bundle to go back)."""
    if bool(names) == every:
        raise click.UsageError("give --node NAME (repeat for several) or --all, not both")
    with open_journal(data_dir) as journal:
        try:
            cancelled = journal.stage_bundle(None, None if every else names, time.time_ns())
        except NodeNotFound as exc:
            raise click.ClickException(f"no node named {exc.args[0]!r}; 'tswarm node list' shows them; nothing cancelled") from None
    if not cancelled:
        raise click.ClickException("no nodes yet; 'tswarm node add NAME' registers one")
    click.echo(f"nothing staged now for {len(cancelled)} node(s): {', '.join(cancelled)}")


@firmware.command("status")
@click.option("--json", "as_json", is_flag=True, help="Print JSON (each node's firmware as in GET /api/nodes).")
@data_dir_option
def firmware_status(as_json, data_dir):
    """Per node: the firmware it runs (as it last reported), the update staged for it, and the
    outcome: current, pending, updated TIME, or rolled back from V TIME."""
    from .bundles import outcome_text
    from .nodes import firmware_report

    with open_journal(data_dir) as journal:
        if as_json:
            click.echo(json.dumps(firmware_report(journal), indent=2))
            return
        nodes = journal.list_nodes()
    if not nodes:
        click.echo("no nodes yet; 'tswarm node add NAME' registers one")
        return
    rows = [("NAME", "RUNNING", "STAGED", "OUTCOME")]
    rows += [(n.name, n.firmware.running or "-", n.firmware.staged or "-", outcome_text(n.firmware)) for n in nodes]
    widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]))]
    for r in rows:
        click.echo("  ".join(cell.ljust(w) for cell, w in zip(r, widths)).rstrip())


def _duration(seconds: float) -> str:
    for unit, size in (("d", 86400), ("h", 3600), ("min", 60)):
        if seconds >= size:
            return f"{seconds / size:.1f} {unit}"
    return f"{seconds:.1f} s"


@cli.command()
@click.option("--json", "as_json", is_flag=True,
              help="Print JSON: a subset of /healthz's fields (store, backlog, oldest_age_s, last_error, storage.engine,"
              " storage.where; with InfluxDB also influxdb, rejected, forward_cursor, retention_s).")
@data_dir_option
def status(as_json, data_dir):
    """Show the journal (SQLite or PostgreSQL), the store and, with InfluxDB, the backlog: readings
    waiting, the oldest's age, the last error."""
    from .store_status import store_status

    config = load_config(data_dir=data_dir)
    with existing_journal(config) as journal:
        info = {**store_status(journal, config), "storage": {"engine": journal.engine, "where": journal.where}}
        rejected = journal.rejected_readings(limit=5) if info.get("rejected") else []
    if as_json:
        click.echo(json.dumps(info, indent=2))
        return
    click.echo(f"journal     {journal.engine}, {journal.where}")
    if config.store != "influxdb":
        click.echo("store       sqlite (the journal is the store; nothing to forward)")
        return
    click.echo(f"store       influxdb, {info['influxdb']}")
    oldest = f", oldest waiting {_duration(info['oldest_age_s'])}" if info["oldest_age_s"] is not None else ""
    click.echo(f"backlog     {info['backlog']} reading(s) not yet in InfluxDB{oldest}")
    error = info["last_error"]
    click.echo(f"last error  {rfc3339(error['at'])[:19]}Z {error['message']}" if error else "last error  none")
    click.echo(f"rejected    {info['rejected']} reading(s) InfluxDB refused for good")
    for reading, reason, _ in rejected:
        click.echo(f"  {reading.node} {rfc3339(reading.ts)} {reading.temperature:g} {reading.humidity:g}: {reason}")
    keep = _duration(info["retention_s"]) if info["retention_s"] else "for ever"
    click.echo(f"retention   forwarded readings are kept in the journal {keep}")


@cli.command()
@click.option("--since", "start", type=TimeParam(), required=True, help="From this time, inclusive (RFC 3339 or epoch seconds).")
@click.option("--until", "stop", type=TimeParam(), default=None, help="Until this time, exclusive (default: now).")
@data_dir_option
def forward(start, stop, data_dir):
    """Send readings already in the journal to the InfluxDB of TSWARM_INFLUX_* again (a backfill).

    While InfluxDB does not answer it waits and retries, saying so on standard error; Ctrl-C stops it
    (what was sent stays sent; running the same command again is harmless)."""
    import asyncio

    from .forwarder import backfill

    if stop is not None and stop <= start:  # quoted as click quotes an option, as export's --stop is
        raise click.BadParameter("must be after --since", param_hint="'--until'")
    config = load_config(data_dir=data_dir)
    with existing_journal(config) as journal:
        config.check_influx_target()  # nothing to wait for if no InfluxDB is named (TSWARM_STORE=sqlite too)
        # The bar, and the count it needs, only on a terminal: piped, tqdm's import and the count of a
        # million readings would be ~45 ms of a start that takes ~270 ms (benchmarks/README.md, Forward).
        bar = None
        if sys.stderr.isatty():
            from tqdm import tqdm

            bar = tqdm(total=journal.count_outbox(0, start, stop), unit="reading", file=sys.stderr)
        done = 0

        def progress(n: int) -> None:
            nonlocal done
            done += n
            if bar is not None:
                bar.update(n)

        def waiting(why: str) -> None:
            line = f"{why} (Ctrl-C to stop)"
            if bar is not None:
                tqdm.write(line, file=sys.stderr)  # above the bar, which stays the last line
            else:
                click.echo(line, err=True)

        with bar if bar is not None else contextlib.nullcontext():  # not `bar or`: an empty tqdm is falsy
            try:
                sent, refused = asyncio.run(backfill(journal, config, start, stop, progress=progress, on_wait=waiting))
            except KeyboardInterrupt:
                if bar is not None:
                    bar.close()
                total = journal.count_outbox(0, start, stop)
                click.echo(f"stopped: {done} of {total} reading(s) sent; the same command sends them all again", err=True)
                sys.exit(130)
    click.echo(f"sent {sent} reading(s) to InfluxDB" + (f"; {refused} refused (see 'tswarm status')" if refused else ""))

@cli.command()
@click.option("--to", "to", required=True, metavar="URL",
              help="An empty PostgreSQL database (postgres://user:password@host:5432/db); with DATABASE_URL set,"
              " a data dir without a journal (the way back).")
@data_dir_option
def migrate(to, data_dir):
    """Copy the journal (nodes with their password hashes, halts, intervals, display rights and firmware
    state, readings with their telemetry and keys, the forward cursor, rejected readings, the retention
    horizon, the staged firmware bundles) into an empty PostgreSQL database, or back into an empty data dir.

    Stop the service first. The target is written in one transaction and kept only when its counts
    match the source's: a target that holds a journal already is refused, and a failure leaves it as
    it was. A progress bar goes to standard error when it is a terminal."""
    from tqdm import tqdm

    from .migrate import MigrateError, migrate as run, summary, target_of

    config = load_config(data_dir=data_dir)
    try:
        target = target_of(to, bool(config.database_url))
        with existing_journal(config) as source, contextlib.ExitStack() as shown:
            bar = None

            def start(counts):  # the bar, once the readings are counted
                nonlocal bar
                bar = shown.enter_context(tqdm(total=counts.readings, unit=" readings", unit_scale=True,
                                               disable=not sys.stderr.isatty(), file=sys.stderr))

            moved = run(config, source, target, on_start=start, on_rows=lambda n: bar.update(n))
    except MigrateError as exc:
        raise click.ClickException(str(exc)) from None
    for line in summary(moved):
        click.echo(line)


# -- Grafana: tswarm grafana provision (the work is in service/grafana_provision.py) -------------


def _token_param(value: str) -> str:
    token = value.strip()  # pasted with a newline or a space around it
    if not token:
        raise click.BadParameter("must not be empty: give a Grafana service account token with the Admin role")
    if not token.isascii() or not token.isprintable() or " " in token:  # it goes into a header as it is
        raise click.BadParameter("must be ASCII without spaces or control characters, as Grafana shows a service"
                                 " account token (glsa_...)")
    return token


@cli.group()
def grafana():
    """Put tswarm's datasource, dashboards and alert rules into Grafana."""


@grafana.command("provision")
@click.option("--url", envvar="GRAFANA_URL", required=True, help="Grafana's address, e.g. http://localhost:3000 [env GRAFANA_URL].")
@click.option("--token", envvar="GRAFANA_TOKEN", required=True, callback=lambda c, p, v: _token_param(v),
              help="A Grafana service account token with the Admin role [env GRAFANA_TOKEN].")
@click.option("--influx-url", default=None, help="InfluxDB's URL as Grafana reaches it [default: TSWARM_INFLUX_URL].")
@click.option("--influx-api", type=click.Choice(["1", "2"]), default=None, help="1: InfluxDB 1.x; 2: InfluxDB 2.x [default: TSWARM_INFLUX_API].")
@click.option("--influx-db", default=None, help="InfluxDB 1.x database [default: TSWARM_INFLUX_DB].")
@click.option("--bucket", default=None, help="InfluxDB 2.x bucket [default: TSWARM_INFLUX_BUCKET].")
@click.option("--flux", is_flag=True, help="InfluxDB 2.x: a Flux datasource and the Flux dashboards (default: InfluxQL).")
@click.option("--force", is_flag=True, help="Write everything even when it looks unchanged (e.g. after a new InfluxDB token).")
def grafana_provision(url, token, influx_url, influx_api, influx_db, bucket, flux, force):
    """Create or update the InfluxDB datasource, a 'tswarm' folder, the dashboards and the alert rules; a second run changes nothing.

    The InfluxDB token, organisation, user and password come from TSWARM_INFLUX_*; the low-battery
    threshold from TSWARM_BATTERY_LOW_V.
    """
    from .grafana_provision import InfluxSource, ProvisionError, connect, provision

    config = load_config()
    source = InfluxSource(
        url=influx_url or config.influx_url, api=influx_api or config.influx_api,
        db=influx_db or config.influx_db, bucket=bucket or config.influx_bucket, token=config.influx_token,
        org=config.influx_org, user=config.influx_user, password=config.influx_password, flux=flux,
    )
    try:
        changed = provision(
            connect(url, token), source, force=force, report=click.echo,
            battery_low_v=config.battery_low_v,
        )
    except ProvisionError as exc:
        raise click.ClickException(str(exc)) from None
    click.echo(f"{len(changed)} change(s)" if changed else "Grafana already up to date")


def main() -> None:
    try:
        cli(prog_name="tswarm")
    except OSError as exc:  # click handles a closed pipe (EPIPE); a full disk or an I/O error is ours
        if not _writing_stdout(exc):
            raise
        _discard_stdout()  # what is left in its buffer would fail again at exit
        click.echo(f"Error: standard output cannot be written ({exc.strerror or exc})", err=True)
        sys.exit(1)


def _writing_stdout(exc: OSError) -> bool:
    """Whether ``exc`` came from writing a command's output (``click.echo`` to standard output:
    every command's and ``--help``'s), not from anything else the command did."""
    tb = exc.__traceback__
    while tb is not None and tb.tb_next is not None:
        tb = tb.tb_next
    return tb is not None and tb.tb_frame.f_code is click.echo.__code__ and not tb.tb_frame.f_locals.get("err")


if __name__ == "__main__":
    main()
