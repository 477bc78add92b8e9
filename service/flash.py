"""Put the firmware on a board: the boot loader ``main.py``, the bundle it runs (``node.py``,
``ota.py``, their ``version``), the node's ``config.json`` and ``ota.json`` (the loader's state: run
the bundle just flashed), copied with the real ``mpremote`` (a subprocess of the mpremote installed
next to this Python).

``tswarm flash`` calls :func:`flash` and ``tswarm node config`` :func:`node_config`; no click here.
Both check everything first and write the journal last (:func:`register`), so a refused or failed
run changes nothing.

The service keeps only scrypt hashes of node passwords, so a config for a node that already
exists needs a new password (or the one the user passes again).
"""
from __future__ import annotations

import hashlib
import ipaddress
import json
import os
import subprocess
import sys
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Optional, Union

from . import bundles
from .nodes import EmptyPassword, Registration, password_or_generated, register as register_node
from .storage import DB_FILENAME, StorageUnavailable, StorageUnusable, check_data_dir, storage_for
from .settings import Config
from .svconf import loopback_problem, svconf


def firmware_dir() -> Path:
    """The board's files shipped with this tswarm: the package data ``tswarm.firmware`` beside this
    module in an installed wheel (pyproject.toml maps the checkout's ``firmware/`` folder there), or
    that folder itself, beside ``service/``, in a checkout or an editable install.

    Not ``importlib.resources.files("tswarm.firmware")``: a folder without ``__init__.py`` is a
    namespace package, whose MultiplexedPath is no file-system path (mpremote needs real files).
    """
    here = Path(__file__).resolve().parent
    if not (here / "firmware").is_dir() and (here.parent / "pyproject.toml").is_file():
        return here.parent / "firmware"  # the checkout
    return here / "firmware"  # if missing, firmware_files says so


FIRMWARE_FILES = ("node.py", "main.py", "ota.py", "keep.py")  # checked and copied in this order, then any other
# file of the bundle (bundles.shipped()), its ``version``, config.json (a board with new code and an
# old config still works, a board with a new config and old code may not), and last ota.json, which
# points the boot loader (main.py) at these files: a copy cut short before it leaves the board
# running what it ran before (an update in a/ or b/ included).
VERSION_FILE = "version"
STATE_FILE = "ota.json"
FLASHED_STATE = b'{"active": ""}\n'  # the bundle at the top of the file system, not on trial

BOARDS = ("esp8266", "esp32")
SENSORS = ("dht11", "dht22")
DEFAULT_DHT_PIN = {"esp8266": 5, "esp32": 4}  # GPIO numbers; GPIO16 is RST's on an ESP8266
DEFAULT_LEDS = {"esp8266": (15, 12, 13), "esp32": None}  # RGB LED of the Witty Cloud ESP8266 board
DEFAULT_SLEEP_S = 300
BOARD_TIMEOUT_S = 15.0  # waiting for the board's REPL; mpremote itself waits forever on a pty
COPY_TIMEOUT_S = 120.0  # one file at 115200 baud takes a second or two


class FlashError(Exception):
    """Something the user must fix (port, board, options); the message is one line."""


@dataclass(frozen=True)
class BoardOptions:
    board: str = "esp8266"
    sensor: str = "dht22"
    dht_pin: Optional[int] = None  # None: DEFAULT_DHT_PIN of the board
    leds: Optional[tuple[int, int, int]] = None  # None: DEFAULT_LEDS of the board; () : no LED
    leds_active_low: bool = False
    ssids: tuple[str, ...] = ()
    passwords: tuple[str, ...] = ()
    ip: Optional[str] = None  # None: DHCP
    netmask: str = "255.255.255.0"
    gateway: Optional[str] = None
    dns: Optional[str] = None
    sleep: int = DEFAULT_SLEEP_S
    battery: Optional[Union[str, int]] = None  # None: no vbat; "vcc" (ESP8266's own supply) or an ADC GPIO
    battery_ratio: float = 1.0  # the divider in front of the ADC pin: volts at the battery / volts at the pin

    def validate(self) -> None:
        if self.board not in BOARDS:
            raise FlashError(f"board must be one of {', '.join(BOARDS)}, got {self.board!r}")
        if self.sensor not in SENSORS:
            raise FlashError(f"sensor must be one of {', '.join(SENSORS)}, got {self.sensor!r}")
        if len(self.passwords) != len(self.ssids):
            raise FlashError(
                f"{len(self.ssids)} --wifi-ssid but {len(self.passwords)} --wifi-password: give one password per "
                "network, in the same order ('' for an open network)"
            )
        if self.ip is not None:
            if self.gateway is None:
                raise FlashError("--ip needs --gateway (and --netmask unless it is 255.255.255.0)")
            for what, value in (("--ip", self.ip), ("--netmask", self.netmask), ("--gateway", self.gateway),
                                ("--dns", self.dns)):
                if value is not None:
                    try:
                        ipaddress.IPv4Address(value)
                    except ValueError:
                        raise FlashError(f"{what} {value!r} is not an IPv4 address like 192.168.1.50") from None
        check_battery(self.battery, self.battery_ratio, self.board)
        if self.sleep < 10:
            raise FlashError(f"--sleep must be at least 10 seconds, got {self.sleep}")
        if self.board == "esp8266" and self.sleep > 4200:
            raise FlashError("an ESP8266 cannot deep-sleep longer than about 71 minutes; --sleep at most 4200")


ESP32_ADC_PINS = (32, 33, 34, 35, 36, 37, 38, 39, 0, 2, 4, 12, 13, 14, 15, 25, 26, 27)  # ADC1, then ADC2


def check_battery(source, ratio: float, board: Optional[str]) -> None:
    """``--battery`` and ``--battery-ratio`` for ``board`` (None: a config push, the board not known)."""
    if not 0 < ratio <= 20:
        raise FlashError(f"--battery-ratio must be above 0 and at most 20 (volts at the battery per volt at the pin), got {ratio:g}")
    if source is None:
        return
    if source == "vcc":
        if board == "esp32":
            raise FlashError("--battery vcc is the ESP8266's own supply; on an ESP32 give the ADC pin of the divider, e.g. 35")
        return
    if board == "esp8266" and source != 0:
        raise FlashError(f"an ESP8266 has one ADC pin, A0: --battery 0 (or vcc), got {source}")
    if board == "esp32" and source not in ESP32_ADC_PINS:
        raise FlashError(f"GPIO{source} of an ESP32 is no ADC pin; use one of GPIO32-39 (ADC1), e.g. --battery 35")


def battery_module(source, ratio: float) -> dict:
    """``modules.battery`` of config.json (the firmware's keep.py reads it; atten stays its default, 11 dB)."""
    return {"adc": "vcc"} if source == "vcc" else {"adc": source, "ratio": ratio}


def build_config(node_svconf: dict, options: BoardOptions) -> dict:
    """The board's config.json: modules, netconf, svconf (see firmware/config_sample.json)."""
    options.validate()
    pin = options.dht_pin if options.dht_pin is not None else DEFAULT_DHT_PIN[options.board]
    leds = options.leds if options.leds is not None else DEFAULT_LEDS[options.board]
    modules = {"board": options.board, "sensor": options.sensor, "pins": {"dht": pin}}
    if leds:
        red, green, blue = leds
        modules["leds"] = {"red": red, "green": green, "blue": blue, "active_low": options.leds_active_low}
    if options.battery is not None:
        modules["battery"] = battery_module(options.battery, options.battery_ratio)
    netconf: dict = {"ssid": list(options.ssids), "password": list(options.passwords)}
    if options.ip is not None:
        netconf.update(ip=options.ip, netmask=options.netmask, gateway=options.gateway,
                       dns=options.dns or options.gateway)
    netconf["sleep"] = options.sleep
    return {"modules": modules, "netconf": netconf, "svconf": dict(node_svconf)}


def config_json(config: dict) -> str:
    return json.dumps(config, indent=2) + "\n"


def credentials(config: Config, name: str, password: Optional[str], allow_loopback: bool = False) -> tuple[dict, str]:
    """``(svconf, password)`` for node ``name``, checked, without touching the journal.

    ``password`` None: a new generated one. A svconf whose ``url`` a board cannot reach (this machine's
    loopback) is refused unless ``allow_loopback`` (a board that runs on this machine, as in the tests).
    """
    try:
        password = password_or_generated(password)
    except EmptyPassword:
        raise FlashError("--password must not be empty") from None
    conf = svconf(config, name, password)
    problem = loopback_problem(config, conf)
    if problem and not allow_loopback:
        raise FlashError(f"{problem}; or pass --allow-loopback for a board that runs on this machine")
    return conf, password


def register(config: Config, name: str, password: str, given: bool, sleep: int = DEFAULT_SLEEP_S) -> Optional[str]:
    """Register ``name`` with ``password``, or give the existing node that password, and expect it
    every ``sleep`` seconds (its interval, which every 202/423 tells the board as its ``"sleep"``: the
    board's ``netconf.sleep`` is what it sleeps when no answer comes).

    Returns a note for stderr when an existing node got a new generated password (``given`` False):
    its old one cannot be recovered from the hash. The last step of a flash: nothing changes before
    the board holds its files.
    """
    with storage_for(config) as journal:
        added = register_node(journal, config, name, password, Registration.EITHER, generated=not given).added
        journal.set_interval(name, sleep)
        if added:
            return None
    if given:
        return None
    return (f"node {name!r} exists and its password cannot be recovered: it now has a new one, in this "
            "config.json; a board still running the old config gets 401 until it is flashed with this one")


def destination(conf: dict) -> str:
    """Where the board will send its readings, for the user (one line)."""
    line = f"{conf['login']} will send to {conf['url']}"
    if conf["url_local"] != conf["url"]:
        line += f" (or {conf['url_local']} when that cannot be reached)"
    return line


def check_journal(config: Config) -> None:
    """Fail early unless the journal of ``config`` opens and can be written, creating nothing
    (the data dir's rules are the journal's own: :func:`~tswarm.storage.check_data_dir`; a
    PostgreSQL journal must open, its server reachable)."""
    if config.database_url:
        try:
            storage_for(config).close()
        except (StorageUnusable, StorageUnavailable) as exc:
            raise FlashError(str(exc)) from None
        return
    data_dir = config.data_dir
    try:
        check_data_dir(data_dir, create=False)
        if (Path(data_dir) / DB_FILENAME).exists():
            storage_for(config).close()
    except StorageUnusable as exc:
        raise FlashError(str(exc)) from None
    path = Path(data_dir)
    while not path.exists() and path != path.parent:  # to be created: its nearest folder must take it
        path = path.parent
    if not os.access(path, os.W_OK | os.X_OK):
        raise FlashError(f"cannot create data dir {data_dir}: {path} is not writable by this user")


def node_config(config: Config, name: str, password: Optional[str], options: BoardOptions,
                allow_loopback: bool = False, report: Callable[[str], None] = lambda line: None) -> str:
    """Node ``name``'s config.json text; registers the node (or sets its password) once all is checked."""
    conf, new_password = credentials(config, name, password, allow_loopback)
    text = config_json(build_config(conf, options))
    check_journal(config)
    report(destination(conf))
    note = register(config, name, new_password, given=password is not None, sleep=options.sleep)
    if note:
        report(f"note: {note}")
    return text


def flash(config: Config, name: str, port: str, password: Optional[str], options: BoardOptions,
          allow_loopback: bool = False, timeout: float = BOARD_TIMEOUT_S,
          report: Callable[[str], None] = lambda line: None) -> None:
    """Copy the firmware (:func:`firmware_files`) and the node's config.json to the board on ``port``.

    Everything is checked first (options, the node's URL, the firmware files, the journal's folder,
    the board answering); the node is registered, or gets its new password, only once the board
    holds the files and their SHA-256 matched: a failed flash changes nothing in the journal.
    """
    options.validate()
    if not options.ssids:
        raise FlashError("give at least one --wifi-ssid (and its --wifi-password): the node must join a network")
    conf, new_password = credentials(config, name, password, allow_loopback)
    files = firmware_files(config_json(build_config(conf, options)))
    check_journal(config)
    probe(port, timeout=timeout, node=name)
    report(f"board on {port} answers")
    report(destination(conf))
    copy_files(port, files, progress=report)
    note = register(config, name, new_password, given=password is not None, sleep=options.sleep)
    if note:
        report(f"note: {note}")


# -- mpremote ---------------------------------------------------------------------------------


def mpremote(port: str, *args: str, timeout: float, node: str = "NAME") -> subprocess.CompletedProcess:
    """``mpremote connect PORT resume ARGS`` (resume: no soft reset first; the copy needs none,
    and the files take effect at the next reset anyway)."""
    command = [sys.executable, "-m", "mpremote", "connect", port, "resume", *args]
    try:
        proc = subprocess.run(command, capture_output=True, text=True, timeout=timeout, stdin=subprocess.DEVNULL)
    except subprocess.TimeoutExpired:
        raise FlashError(
            f"the board on {port} does not answer (waited {timeout:g} s): it may be in deep sleep; press its reset "
            f"button and run this again at once, or 'tswarm halt {node}' and wait for its next wake"
        ) from None
    if proc.returncode != 0:
        # mpremote says what failed on stderr; stdout holds the progress ("cp a :a") before it
        lines = [line.strip() for line in (proc.stderr.strip() or proc.stdout).splitlines() if line.strip()]
        raise FlashError(f"mpremote failed on {port}: {lines[-1] if lines else 'exit status %d' % proc.returncode}")
    return proc


def check_port(port: str) -> None:
    if not os.path.exists(port):
        raise FlashError(f"no such port: {port} (is the board plugged in? see 'ls /dev/ttyUSB* /dev/ttyACM*')")


def probe(port: str, timeout: float = BOARD_TIMEOUT_S, node: str = "NAME") -> None:
    """Fail early (before any password changes) unless a MicroPython REPL answers on ``port``."""
    check_port(port)
    proc = mpremote(port, "exec", "print('tswarm-probe', 6 * 7)", timeout=timeout, node=node)
    if "tswarm-probe 42" not in proc.stdout:
        raise FlashError(f"the device on {port} did not answer like a MicroPython board: {proc.stdout.strip()[:80]!r}")


def firmware_files(config_text: str) -> list[tuple[str, bytes]]:
    """(name on the board, bytes) in the order they are copied: the boot loader and the shipped
    bundle, the bundle's ``version`` (bundles.version_of of bundles.shipped()), config.json, ota.json."""
    for name in FIRMWARE_FILES:
        path = firmware_dir() / name
        if not path.is_file():
            raise FlashError(f"firmware file missing: {path} (this tswarm was installed without its firmware: reinstall the package)")
    try:
        bundle = dict(bundles.shipped())
    except bundles.BundleError as exc:
        raise FlashError(f"the firmware of this tswarm cannot be flashed: {exc}") from None
    files = [(name, (firmware_dir() / name).read_bytes()) for name in FIRMWARE_FILES]
    files += sorted((name, content) for name, content in bundle.items() if name not in FIRMWARE_FILES)
    files.append((VERSION_FILE, bundles.version_of(bundle.items()).encode()))
    files.append(("config.json", config_text.encode("utf-8")))
    files.append((STATE_FILE, FLASHED_STATE))
    return files


def copy_files(port: str, files: list[tuple[str, bytes]], progress: Callable[[str], None],
               timeout: float = COPY_TIMEOUT_S) -> None:
    """Copy each file with ``mpremote fs cp`` and check its SHA-256 on the board."""
    with tempfile.TemporaryDirectory(prefix="tswarm-flash-") as tmp:
        for i, (name, data) in enumerate(files, 1):
            source = Path(tmp) / name
            source.write_bytes(data)
            mpremote(port, "fs", "cp", str(source), f":{name}", timeout=timeout)
            progress(f"[{i}/{len(files)}] {name}: {len(data)} bytes copied")
        names = [f":{name}" for name, _ in files]
        out = mpremote(port, "fs", "sha256sum", *names, timeout=timeout).stdout.split()
        for name, data in files:
            if hashlib.sha256(data).hexdigest() not in out:
                raise FlashError(f"{name} on the board differs from what was sent; run this again")
    progress(f"checked {len(files)} files on the board (SHA-256)")
