"""Put the firmware on a board: the boot loader ``main.py``, the bundle it runs (``node.py``,
``ota.py``, their ``version``), the node's ``config.json`` and ``ota.json`` (the loader's state: run
the bundle just flashed), copied with the real ``mpremote`` (a subprocess of the mpremote installed
next to this Python).

``tswarm flash`` calls :func:`flash` and ``tswarm node config`` :func:`node_config`; no click here.
Both write a whole config.json, so both need a Wi-Fi network (:func:`check_networks`; a config
push does not), and both check everything first and write the journal last (:func:`register`), so a
refused or failed run changes nothing.

A master node (``--master``: a board with an SSD1306 screen that shows the swarm) gets
``modules.screen`` in its config.json, micropython-lib's ``ssd1306`` driver in its ``/lib`` through
``mpremote mip install`` (before any tswarm file is copied, so a driver that cannot be fetched leaves
the board as it was), and the display right when it is registered.

The service keeps only scrypt hashes of node passwords, so a config for a node that already
exists needs a new password (or the one the user passes again).
"""
from __future__ import annotations

import hashlib
import ipaddress
import os
import subprocess
import sys
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Optional, Union

from . import bundles
from .datadir import check_journal_files
from .nodes import BadPassword, Registration, password_or_generated, register as register_node
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
MASTER_SLEEP_S = 60  # a master redraws the swarm this often (it is on USB power)
BOARD_TIMEOUT_S = 15.0  # waiting for the board's REPL; mpremote itself waits forever on a pty
COPY_TIMEOUT_S = 120.0  # one file at 115200 baud takes a second or two


# GPIOs a board has for a sensor, an LED or a screen. 6-11 drive the flash chip on both; an ESP32 has
# no 20, 24, 28-31. The screen's I2C lines further need a pin that can drive (not an ESP32's
# input-only 34-39, not an ESP8266's GPIO16, which has no open-drain mode) and that is not the serial
# console (GPIO1 TX, GPIO3 RX: the REPL that mpremote talks to).
BOARD_GPIOS = {
    "esp8266": (0, 1, 2, 3, 4, 5, 12, 13, 14, 15, 16),
    "esp32": (0, 1, 2, 3, 4, 5, *range(12, 20), 21, 22, 23, 25, 26, 27, *range(32, 40)),
}
GPIO_RANGES = {"esp8266": "0-5 and 12-16", "esp32": "0-5, 12-19, 21-23, 25-27 and 32-39"}
SERIAL_GPIOS = (1, 3)
NO_I2C_GPIOS = {"esp8266": (16,), "esp32": tuple(range(34, 40))}

# The master's screen: an SSD1306 I2C OLED, config.json's modules.screen (the firmware's master.py reads it).
DEFAULT_SCREEN_PINS = {"esp8266": (4, 5), "esp32": (21, 22)}  # (SDA, SCL): D2/D1 on a NodeMCU or D1 mini
SCREEN_WIDTHS = (128,)
SCREEN_HEIGHTS = (64, 32)
SCREEN_ADDRESSES = (0x3C, 0x3D)  # the module's solder jumper picks one; 0x3C nearly always
SCREEN_ROTATIONS = (0, 180)
DEFAULT_SCREEN = {"width": 128, "height": 64, "address": 0x3C, "rotate": 0}

# The screen's driver: micropython-lib's ssd1306, installed by `mpremote mip install` into the board's
# lib folder (a bare "lib": relative to the root the board starts in, which is /lib on an ESP board;
# an absolute /lib would be the host's own on a MicroPython Unix port). mip's default: the .mpy of the
# board's bytecode version, which an ESP8266 loads without compiling the source in its ~30 KB of heap.
SCREEN_DRIVER = "ssd1306"
MIP_INDEX = "https://micropython.org/pi/v2"  # micropython-lib's index, mpremote's own default
LIB_DIR = "lib"
MIP_TIMEOUT_S = 120.0


class FlashError(Exception):
    """Something the user must fix (port, board, options); the message is one line."""


@dataclass(frozen=True)
class BoardOptions:
    board: str = "esp8266"
    sensor: Optional[str] = None  # None: dht22 on a sensor node, none on a master
    dht_pin: Optional[int] = None  # None: DEFAULT_DHT_PIN of the board
    leds: Optional[tuple[int, int, int]] = None  # None: DEFAULT_LEDS of the board; () : no LED
    leds_active_low: bool = False
    ssids: tuple[str, ...] = ()
    passwords: tuple[str, ...] = ()
    ip: Optional[str] = None  # None: DHCP
    netmask: str = "255.255.255.0"
    gateway: Optional[str] = None
    dns: Optional[str] = None
    sleep: Optional[int] = None  # None: DEFAULT_SLEEP_S, MASTER_SLEEP_S on a master
    battery: Optional[Union[str, int]] = None  # None: no vbat; "vcc" (ESP8266's own supply) or an ADC GPIO
    battery_ratio: float = 1.0  # the divider in front of the ADC pin: volts at the battery / volts at the pin
    master: bool = False  # a board with a screen that shows the swarm (modules.screen)
    screen_sda: Optional[int] = None  # None, here and below: DEFAULT_SCREEN_PINS, DEFAULT_SCREEN
    screen_scl: Optional[int] = None
    screen_width: Optional[int] = None
    screen_height: Optional[int] = None
    screen_address: Optional[Union[int, str]] = None  # 60, "60" or "0x3c"
    screen_rotate: Optional[int] = None

    @property
    def sensor_kind(self) -> Optional[str]:
        """The board's DHT, None for none (a master not given ``sensor``)."""
        return self.sensor if self.sensor is not None or self.master else "dht22"

    @property
    def interval(self) -> int:
        """Seconds between wakes (a node's readings, a master's refreshes)."""
        return self.sleep if self.sleep is not None else MASTER_SLEEP_S if self.master else DEFAULT_SLEEP_S

    def validate(self) -> None:
        if self.board not in BOARDS:
            raise FlashError(f"board must be one of {', '.join(BOARDS)}, got {self.board!r}")
        if self.sensor is not None and self.sensor not in SENSORS:
            raise FlashError(f"sensor must be one of {', '.join(SENSORS)}, got {self.sensor!r}")
        check_master(self)
        if len(self.passwords) != len(self.ssids):
            raise FlashError(
                f"{len(self.ssids)} --wifi-ssid but {len(self.passwords)} --wifi-password: give one password per "
                "network, in the same order ('' for an open network)"
            )
        check_wifi(self.ssids, self.passwords)
        for what, value in (("--ip", self.ip), ("--netmask", self.netmask), ("--gateway", self.gateway),
                            ("--dns", self.dns)):  # each value first, then what they need of each other
            problem = address_problem(value, netmask=what == "--netmask") if value is not None else None
            if problem:
                raise FlashError(f"{what} {problem}")
        if self.ip is not None and self.gateway is None:
            raise FlashError("--ip needs --gateway (and --netmask unless it is 255.255.255.0)")
        check_battery(self.battery, self.battery_ratio, self.board)
        check_pins(self)
        if self.interval < 10:
            raise FlashError(f"--sleep must be at least 10 seconds, got {self.interval}")
        if self.board == "esp8266" and self.interval > 4200:
            raise FlashError("an ESP8266 cannot deep-sleep longer than about 71 minutes; --sleep at most 4200")


MAX_SSID_BYTES = 32  # 802.11's limit
MAX_WIFI_PASSWORD_BYTES = 64  # WPA's: a passphrase of 8-63 characters, or 64 hex digits


def check_wifi(ssids: tuple[str, ...], passwords: tuple[str, ...],
               names: tuple[str, str] = ("--wifi-ssid", "--wifi-password")) -> None:
    """Each ``--wifi-ssid`` a network name a board can join, each ``--wifi-password`` one it can send
    (in a whole config.json, in a push, and in a config patch of the admin API or a bundle, which
    name them ``names``: service/bundles.py's check_patch)."""
    ssid_name, password_name = names
    for option, values, low, high in ((ssid_name, ssids, 1, MAX_SSID_BYTES),
                                      (password_name, passwords, 0, MAX_WIFI_PASSWORD_BYTES)):
        for value in values:
            try:
                size = len(value.encode("utf-8"))
            except UnicodeEncodeError:  # bytes of the command line that are not UTF-8, a JSON "\udcff"
                shown = f" {value!r}" if option == ssid_name else ""  # a password is never quoted
                raise FlashError(f"{option}{shown} is not UTF-8 text") from None
            if not low <= size <= high:
                what = "a network name" if option == ssid_name else "a Wi-Fi password"
                raise FlashError(f"{option} must be {low} to {high} bytes ({what}), got {size}")


def address_problem(value: str, netmask: bool = False) -> Optional[str]:
    """Why ``value`` is no IPv4 address (``netmask``: no netmask, whose ones come first), or None.
    The rule of ``--ip``, ``--netmask``, ``--gateway`` and ``--dns``, in a whole config.json and in a push."""
    try:
        address = ipaddress.IPv4Address(value)
    except ValueError:
        return f"{value!r} is not an IPv4 address like 192.168.1.50"
    if netmask:
        try:  # "0.0.0.255" is a network too, read as a host mask: the netmask must be the value itself
            contiguous = ipaddress.IPv4Network(f"0.0.0.0/{value}").netmask == address
        except ValueError:
            contiguous = False
        if not contiguous:
            return f"{value!r} is not a netmask: its ones come first, like 255.255.255.0 (/24) or 255.255.0.0 (/16)"
    return None


def check_networks(options: BoardOptions) -> None:
    """A whole new config.json (``flash``, ``node config``) names at least one Wi-Fi network; a config
    push (a patch, the CLI's ``config_patch_of``) may leave the board's networks as they are."""
    if not options.ssids:
        raise FlashError("give at least one --wifi-ssid (and its --wifi-password): the node must join a network")


SCREEN_OPTIONS = ("screen_sda", "screen_scl", "screen_width", "screen_height", "screen_address", "screen_rotate")


def option_name(field: str) -> str:
    return "--" + field.replace("_", "-")


def check_master(options: BoardOptions) -> None:
    """The screen's options (a master's alone), and what a master without a sensor cannot have."""
    if not options.master:
        given = [option_name(f) for f in SCREEN_OPTIONS if getattr(options, f) is not None]
        if given:
            raise FlashError(f"{given[0]} without --master: only a master node has a screen")
        return
    if options.sensor is None:
        if options.dht_pin is not None:
            raise FlashError("--dht-pin on a master without --sensor: a master has no sensor unless --sensor is given")
        if options.battery is not None:
            raise FlashError("--battery on a master without --sensor: the voltage goes with readings, and a master"
                             " without a sensor sends none")
    screen = screen_module(options)
    if screen["width"] not in SCREEN_WIDTHS:
        raise FlashError(f"--screen-width must be 128 (an SSD1306 module is 128 pixels wide), got {screen['width']}")
    if screen["height"] not in SCREEN_HEIGHTS:
        raise FlashError(f"--screen-height must be 64 or 32 (128x64 or 128x32 SSD1306), got {screen['height']}")
    if screen["rotate"] not in SCREEN_ROTATIONS:
        raise FlashError(f"--screen-rotate must be 0 or 180 (degrees), got {screen['rotate']}")


def screen_address(value: Union[int, str, None]) -> int:
    """The I2C address of ``--screen-address``: 60 or 61, written in decimal or hex (0x3c, 0x3d)."""
    if value is None:
        return DEFAULT_SCREEN["address"]
    try:
        address = value if isinstance(value, int) else int(value.strip(), 0)
    except ValueError:
        address = None
    if address not in SCREEN_ADDRESSES:
        raise FlashError(f"--screen-address must be 0x3c or 0x3d (60 or 61), the SSD1306's two I2C addresses, got {value!r}")
    return address


def screen_module(options: BoardOptions) -> dict:
    """``modules.screen`` of a master's config.json, every key written (defaults filled in)."""
    sda, scl = DEFAULT_SCREEN_PINS[options.board]
    return {
        "sda": sda if options.screen_sda is None else options.screen_sda,
        "scl": scl if options.screen_scl is None else options.screen_scl,
        "width": DEFAULT_SCREEN["width"] if options.screen_width is None else options.screen_width,
        "height": DEFAULT_SCREEN["height"] if options.screen_height is None else options.screen_height,
        "address": screen_address(options.screen_address),
        "rotate": DEFAULT_SCREEN["rotate"] if options.screen_rotate is None else options.screen_rotate,
    }


def used_pins(options: BoardOptions) -> list[tuple[str, str, int, bool]]:
    """``(part, option, GPIO, an I2C line)`` for every GPIO the config gives a part, defaults included;
    ``option`` says where the pin came from (``--dht-pin 14``, ``the default of --dht-pin on an esp8266``)."""
    board = options.board

    def said(option: str, given, pin: int) -> str:
        return f"{option} {pin}" if given else f"the default of {option} on an {board}"

    pins = []
    if options.sensor_kind is not None:
        pin = options.dht_pin if options.dht_pin is not None else DEFAULT_DHT_PIN[board]
        pins.append(("the DHT", said("--dht-pin", options.dht_pin is not None, pin), pin, False))
    leds = options.leds if options.leds is not None else DEFAULT_LEDS[board]
    for colour, pin in zip(("red", "green", "blue"), leds or ()):
        pins.append((f"the {colour} LED", "--leds" if options.leds is not None else said("--leds", False, pin), pin, False))
    if board == "esp32" and isinstance(options.battery, int):  # an ESP8266's 0 is A0, no GPIO
        pins.append(("the battery divider", f"--battery {options.battery}", options.battery, False))
    if options.master:
        screen = screen_module(options)
        for line in ("sda", "scl"):
            given = getattr(options, f"screen_{line}") is not None
            pins.append((f"the screen's {line.upper()}", said(f"--screen-{line}", given, screen[line]), screen[line], True))
    return pins


def check_pins(options: BoardOptions) -> None:
    """Every pin one the board has, no pin given two parts, the screen's lines on pins that can do I2C."""
    board = options.board
    seen: dict[int, str] = {}
    for part, option, pin, i2c in used_pins(options):
        if pin not in BOARD_GPIOS[board]:
            raise FlashError(f"{option}: an {board} has no GPIO{pin} to use (its GPIOs are {GPIO_RANGES[board]};"
                             " 6-11 drive the flash chip)")
        if i2c and pin in SERIAL_GPIOS:
            raise FlashError(f"{option}: GPIO{pin} is the serial console (the REPL tswarm flash talks to);"
                             " give the screen other pins")
        if i2c and pin in NO_I2C_GPIOS[board]:
            why = "has no open-drain mode" if board == "esp8266" else "is input-only"
            raise FlashError(f"{option}: GPIO{pin} of an {board} {why}, and I2C must drive the line; give another pin")
        if pin in seen:
            raise FlashError(f"GPIO{pin} is used twice, by {seen[pin]} and {part} ({option}): give one of them another pin")
        seen[pin] = f"{part} ({option})"


def check_pin_of_some_board(option: str, pin: int) -> None:
    """A pin of a config push, whose board is not known here: one that some board has to use."""
    if not any(pin in gpios for gpios in BOARD_GPIOS.values()):
        ranges = "; ".join(f"an {board}'s are {GPIO_RANGES[board]}" for board in BOARD_GPIOS)
        raise FlashError(f"{option} {pin}: no board has a GPIO{pin} to use ({ranges}; 6-11 drive the flash chip)")


ESP32_ADC_PINS = (32, 33, 34, 35, 36, 37, 38, 39, 0, 2, 4, 12, 13, 14, 15, 25, 26, 27)  # ADC1, then ADC2


def check_battery(source, ratio: float, board: Optional[str]) -> None:
    """``--battery`` and ``--battery-ratio`` for ``board`` (None: a config push, the board not known)."""
    if not 0 < ratio <= 20:
        raise FlashError(f"--battery-ratio must be above 0 and at most 20 (volts at the battery per volt at the pin), got {ratio:g}")
    if source is None:
        return
    if board is None and source != "vcc" and source != 0 and source not in ESP32_ADC_PINS:
        raise FlashError(f"--battery {source}: no ADC pin of any board (an ESP8266 has A0: 0 or vcc; an ESP32"
                         " GPIO32-39, e.g. 35)")
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
    modules: dict = {"board": options.board}
    if options.master:
        modules["screen"] = screen_module(options)
    if options.sensor_kind is not None:  # a master without one sends no reading
        modules.update(sensor=options.sensor_kind, pins={"dht": pin})
    if leds:
        red, green, blue = leds
        modules["leds"] = {"red": red, "green": green, "blue": blue, "active_low": options.leds_active_low}
    if options.battery is not None:
        modules["battery"] = battery_module(options.battery, options.battery_ratio)
    netconf: dict = {"ssid": list(options.ssids), "password": list(options.passwords)}
    if options.ip is not None:
        netconf.update(ip=options.ip, netmask=options.netmask, gateway=options.gateway,
                       dns=options.dns or options.gateway)
    netconf["sleep"] = options.interval
    return {"modules": modules, "netconf": netconf, "svconf": dict(node_svconf)}


def config_json(config: dict) -> str:
    """config.json's text, as the board's json reads it back (bundles.board_json: a Wi-Fi name with a
    character beyond U+FFFF, an emoji, would otherwise reach the board as other bytes)."""
    return bundles.board_json(config, indent=2) + "\n"


def credentials(config: Config, name: str, password: Optional[str], allow_loopback: bool = False) -> tuple[dict, str]:
    """``(svconf, password)`` for node ``name``, checked, without touching the journal.

    ``password`` None: a new generated one. A svconf whose ``url`` a board cannot reach (this machine's
    loopback) is refused unless ``allow_loopback`` (a board that runs on this machine, as in the tests).
    """
    try:
        password = password_or_generated(password)
    except BadPassword as exc:
        raise FlashError(f"--password {exc}") from None
    conf = svconf(config, name, password)
    problem = loopback_problem(config, conf)
    if problem and not allow_loopback:
        raise FlashError(f"{problem}; or pass --allow-loopback for a board that runs on this machine")
    return conf, password


def register(config: Config, name: str, password: str, given: bool, sleep: int = DEFAULT_SLEEP_S,
             display: Optional[bool] = None) -> Optional[str]:
    """Register ``name`` with ``password``, or give the existing node that password, and expect it
    every ``sleep`` seconds (its interval, which every 202/423 tells the board as its ``"sleep"``: the
    board's ``netconf.sleep`` is what it sleeps when no answer comes). ``display`` True gives it the
    right to read the swarm's summary (a master), None leaves the right as it was.

    Returns a note for stderr when an existing node got a new generated password (``given`` False):
    its old one cannot be recovered from the hash. The last step of a flash: nothing changes before
    the board holds its files.
    """
    with storage_for(config) as journal:
        added = register_node(journal, config, name, password, Registration.EITHER, generated=not given,
                              display=display).added
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
        check_journal_files(data_dir)
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
    """Node ``name``'s config.json text; registers the node (or sets its password) once all is checked,
    as :func:`flash` checks it (the networks after the journal: a data dir that cannot be used is
    said first, as every command that opens the journal says it)."""
    conf, new_password = credentials(config, name, password, allow_loopback)
    text = config_json(build_config(conf, options))
    check_journal(config)
    check_networks(options)
    report(destination(conf))
    registered(config, name, new_password, password is not None, options, report)
    return text


def registered(config: Config, name: str, new_password: str, given: bool, options: BoardOptions,
               report: Callable[[str], None]) -> None:
    """The last step of a flash or a node config: :func:`register`, a master with the display right."""
    note = register(config, name, new_password, given=given, sleep=options.interval,
                    display=True if options.master else None)
    if options.master:
        report(f"node {name} may read the swarm summary (GET /api/nodes/{name}/swarm)")
    if note:
        report(f"note: {note}")


def flash(config: Config, name: str, port: str, password: Optional[str], options: BoardOptions,
          allow_loopback: bool = False, timeout: float = BOARD_TIMEOUT_S,
          report: Callable[[str], None] = lambda line: None, mip_index: Optional[str] = None) -> None:
    """Copy the firmware (:func:`firmware_files`) and the node's config.json to the board on ``port``;
    on a master, first install the screen's driver from the mip index ``mip_index`` (None: :data:`MIP_INDEX`;
:func:`install_driver`).

    Everything is checked first (options, the node's URL, the firmware files, the journal's folder,
    the board answering); the node is registered, or gets its new password, only once the board
    holds the files and their SHA-256 matched: a failed flash changes nothing in the journal.
    """
    options.validate()
    check_networks(options)
    if mip_index is not None and not options.master:
        raise FlashError("--mip-index without --master: only a master's screen needs a driver")
    index = check_mip_index(mip_index or MIP_INDEX) if options.master else None
    conf, new_password = credentials(config, name, password, allow_loopback)
    files = firmware_files(config_json(build_config(conf, options)))
    check_journal(config)
    probe(port, timeout=timeout, node=name)
    report(f"board on {port} answers")
    report(destination(conf))
    if index is not None:
        install_driver(port, index, progress=report)
    copy_files(port, files, progress=report)
    registered(config, name, new_password, password is not None, options, report)


# -- mpremote ---------------------------------------------------------------------------------


def mpremote(port: str, *args: str, timeout: float, node: str = "NAME", check: bool = True) -> subprocess.CompletedProcess:
    """``mpremote connect PORT resume ARGS`` (resume: no soft reset first; the copy needs none,
    and the files take effect at the next reset anyway). ``check`` False: a failure is the caller's."""
    command = [sys.executable, "-m", "mpremote", "connect", port, "resume", *args]
    try:
        proc = subprocess.run(command, capture_output=True, text=True, timeout=timeout, stdin=subprocess.DEVNULL)
    except subprocess.TimeoutExpired:
        raise FlashError(
            f"the board on {port} does not answer (waited {timeout:g} s): it may be in deep sleep; press its reset "
            f"button and run this again at once, or 'tswarm halt {node}' and wait for its next wake"
        ) from None
    if proc.returncode != 0 and check:
        raise FlashError(f"mpremote failed on {port}: {failure(proc)}")
    return proc


def failure(proc: subprocess.CompletedProcess) -> str:
    """What a failed mpremote said: the last line of its stderr (stdout holds the progress before it)."""
    lines = [line.strip() for line in (proc.stderr.strip() or proc.stdout).splitlines() if line.strip()]
    return lines[-1] if lines else "exit status %d" % proc.returncode


def check_mip_index(index: str) -> str:
    """``--mip-index``: an http(s) URL, or a folder laid out as one (an offline machine's mirror),
    which mpremote reads as files (made absolute here)."""
    if index.startswith(("http://", "https://")):
        if not index.split("://", 1)[1].strip("/"):
            raise FlashError(f"--mip-index {index!r} has no host; give a URL like {MIP_INDEX} or a folder")
        return index.rstrip("/")
    path = Path(index).expanduser()
    if not (path / "package").is_dir():
        raise FlashError(f"--mip-index {index!r} is neither an http:// or https:// URL nor a folder laid out as a mip"
                         " index (with package/ and file/ in it); micropython-lib's is " + MIP_INDEX)
    return str(path.resolve())


def install_driver(port: str, index: str, progress: Callable[[str], None], timeout: float = MIP_TIMEOUT_S) -> None:
    """``mpremote mip install --target lib --index INDEX ssd1306``: the screen's driver into the board's
    /lib, the .mpy of the board's bytecode version (mip asks the board), fetched before it is written."""
    proc = mpremote(port, "mip", "install", "--target", LIB_DIR, "--index", index, SCREEN_DRIVER,
                    timeout=timeout, check=False)
    if proc.returncode != 0:
        reason = failure(proc).removeprefix("mpremote: ")
        raise FlashError(f"cannot install the screen's driver ({SCREEN_DRIVER}) from {index}: {reason}; nothing was"
                         " flashed. Check this machine's internet connection, or give --mip-index a mirror or a"
                         " folder laid out as a mip index")
    said = False
    for line in proc.stdout.splitlines():
        for prefix, done in (("Installing: ", f"installed from {index}"), ("Exists: ", "already on the board")):
            if line.startswith(prefix):
                progress(f"{line[len(prefix):].strip()}: the screen's driver, {done}")
                said = True
    if not said:
        progress(f"{SCREEN_DRIVER}: the screen's driver, installed from {index}")


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
