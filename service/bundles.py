"""Firmware bundles for over-the-air updates: what one is, its version, and what a node is told.

A **bundle** is a few board files (``node.py`` and the other ``.py`` files of the firmware, or a
``config-patch.json``) that replace the board's files of the same name; the board keeps the others.
Its **version** is the hash of its contents (:func:`version_of`), so the same files are the same
version wherever they are staged, and ``tswarm flash`` writes the version of the files it copies.

The boot loader (``main.py``, and the port's ``boot.py``) is never part of a bundle: it is what
switches bundles and rolls them back, and it never changes (docs/flashing.md).

``config-patch.json`` is a JSON object merged on the board into the ``config.json`` it has
(:func:`merge_config` is the rule, the firmware does the same): objects merge key by key, anything
else replaces. The node's credentials (``svconf.login``, ``svconf.xauth``) are never in a patch.

No aiohttp and no storage here: the CLI, the admin API and the protocol call these.
"""
from __future__ import annotations

import hashlib
import json
import re
from pathlib import Path
from typing import Any, Iterable, Optional

from .storage import BundleFile, FirmwareState, NodeAuth
from .timefmt import rfc3339

CONFIG_PATCH = "config-patch.json"
LOADER_FILES = ("main.py", "boot.py")  # on the board, never in a bundle
FILE_NAME = re.compile(r"[A-Za-z0-9_][A-Za-z0-9_.-]{0,39}\Z")  # no folders: a board writes it as is
VERSION = re.compile(r"[A-Za-z0-9._-]{1,64}\Z")  # what a node may report in X-Tswarm-Firmware
MAX_FILES = 16
MAX_FILE_BYTES = 64 * 1024  # node.py is ~14 KB; a board streams each file in small chunks
MAX_BUNDLE_BYTES = 256 * 1024  # an ESP8266's file system is 1-3 MB and must hold two bundles
FORBIDDEN_PATCH_KEYS = (("svconf", "login"), ("svconf", "xauth"))  # a patch never changes credentials
PATCH_SECTIONS = ("modules", "netconf", "svconf")  # config.json's objects: a patch merges into them
ADDRESS_KEYS = ("ip", "netmask", "gateway", "dns", "mask")  # netconf's static address (mask: the seed's netmask)
ENTRY_MODULE = "node.py"  # what the boot loader imports from the bundle


class BundleError(ValueError):
    """A bundle that cannot be staged; the message is one line saying what to fix."""


def version_of(files: Iterable[tuple[str, bytes]]) -> str:
    """The version of a bundle: the first 16 hex digits of the SHA-256 of its files' names and
    SHA-256s, one ``name NUL sha256-hex LF`` line per file in name order (independent of order
    given, of time stamps and of where the files came from)."""
    lines = sorted(f"{name}\0{hashlib.sha256(content).hexdigest()}\n" for name, content in files)
    return hashlib.sha256("".join(lines).encode()).hexdigest()[:16]


def manifest(files: Iterable[tuple[str, bytes]]) -> list[BundleFile]:
    """The files as an update offer lists them, by name."""
    return [BundleFile(name, len(content), hashlib.sha256(content).hexdigest()) for name, content in sorted(files)]


def check_files(files: Iterable[tuple[str, bytes]]) -> list[tuple[str, bytes]]:
    """The files by name, checked: names a board can write, no loader, no duplicates, sizes a board
    can take; :class:`BundleError` otherwise."""
    files = sorted(files)
    if not files:
        raise BundleError("a bundle needs at least one file")
    if len(files) > MAX_FILES:
        raise BundleError(f"a bundle holds at most {MAX_FILES} files, got {len(files)}")
    seen = set()
    folded = {loader.casefold(): loader for loader in LOADER_FILES}
    for name, content in files:
        if not FILE_NAME.match(name) or name in (".", ".."):
            raise BundleError(f"file name {name!r}: letters, digits, '_', '.', '-', at most 40, no folders")
        if name in LOADER_FILES:
            raise BundleError(f"{name} is the board's boot loader, which never changes over the air; leave it out")
        if not (name.endswith(".py") or name == CONFIG_PATCH):
            raise BundleError(f"{name}: a bundle holds .py files and {CONFIG_PATCH} only")
        if name in seen:
            raise BundleError(f"{name} is in the bundle twice")
        # A board's FAT file system matches names whatever their case: two such names are one file there
        if name.casefold() in folded:
            other = folded[name.casefold()]
            raise BundleError(f"{name} and {other} differ only in case: one file on a board's FAT file system"
                              f"{' (' + other + ' is the boot loader)' if other in LOADER_FILES else ''}; rename one")
        folded[name.casefold()] = name
        seen.add(name)
        if len(content) > MAX_FILE_BYTES:
            raise BundleError(f"{name} is {len(content)} bytes; a board takes at most {MAX_FILE_BYTES} per file")
        if name.endswith(".py"):
            check_source(name, content)
    total = sum(len(content) for _, content in files)
    if total > MAX_BUNDLE_BYTES:
        raise BundleError(f"the bundle is {total} bytes; a board takes at most {MAX_BUNDLE_BYTES}")
    if CONFIG_PATCH in seen:
        check_patch(json_object(dict(files)[CONFIG_PATCH]))
    return files


def check_source(name: str, content: bytes) -> None:
    """A ``.py`` file a board can run: UTF-8 text (MicroPython reads source as UTF-8), and for
    ``node.py``, what the boot loader imports, not empty; :class:`BundleError` otherwise."""
    try:
        text = content.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise BundleError(f"{name} is not UTF-8 text (byte {exc.start}): MicroPython reads source as UTF-8") from None
    if name == ENTRY_MODULE and not text.strip():
        raise BundleError(f"{name} is empty: it is what the boot loader runs on every wake")


def json_object(content: bytes) -> dict:
    try:
        value = json.loads(content)
    except (UnicodeDecodeError, ValueError) as exc:
        raise BundleError(f"{CONFIG_PATCH} is not JSON: {exc}") from None
    if not isinstance(value, dict):
        raise BundleError(f"{CONFIG_PATCH} must be a JSON object, like config.json")
    return value


def read_dir(path: Path) -> list[tuple[str, bytes]]:
    """The bundle of folder ``path``: its ``.py`` files (not the loader's), checked."""
    path = Path(path)
    if not path.is_dir():
        raise BundleError(f"{path} is not a folder")
    try:
        files = [(p.name, p.read_bytes()) for p in sorted(path.glob("*.py")) if p.is_file() and p.name not in LOADER_FILES]
    except OSError as exc:
        raise BundleError(f"cannot read {path}: {exc.strerror or exc}") from None
    if not files:
        raise BundleError(f"{path} holds no .py file besides the boot loader ({', '.join(LOADER_FILES)})")
    return check_files(files)


def shipped() -> list[tuple[str, bytes]]:
    """The firmware shipped with this tswarm, as a bundle (what ``tswarm flash`` copies, less the loader)."""
    from .flash import firmware_dir

    return read_dir(firmware_dir())


def check_patch(patch: dict) -> dict:
    """``patch`` when it may be merged into a node's config.json; :class:`BundleError` otherwise.

    The one rule for every config push (``tswarm node config --push``, the admin API, a bundle's
    ``config-patch.json``): config.json's sections stay objects, the node's credentials stay, every
    string is UTF-8 text, and what ``netconf`` sets passes the checks of a whole config.json
    (service/flash.py's ``check_wifi`` and ``address_problem``; the interval's range for ``sleep``)."""
    if not patch:
        raise BundleError("the config change is empty: give at least one setting to change")
    for section in PATCH_SECTIONS:
        if section in patch and not isinstance(patch[section], dict):
            also = " and the node's credentials with it" if section == "svconf" else ""
            raise BundleError(f"{section} must be an object: the board merges it key by key into config.json's"
                              f" {section}; anything else would replace it whole{also}")
    for section, key in FORBIDDEN_PATCH_KEYS:
        if isinstance(patch.get(section), dict) and key in patch[section]:
            raise BundleError(f"{section}.{key} is the node's credential: a config push never changes it "
                              "('tswarm node passwd' and a reflash do)")
    if "netconf" in patch:
        _check_netconf(patch["netconf"])
    _check_text(patch, "")
    return patch


def _check_netconf(netconf: dict) -> None:
    from .flash import FlashError, address_problem, check_wifi
    from .health import MAX_INTERVAL_S, MIN_INTERVAL_S

    if "ssid" in netconf or "password" in netconf:
        if "ssid" not in netconf or "password" not in netconf:
            given, missing = ("ssid", "password") if "ssid" in netconf else ("password", "ssid")
            raise BundleError(f"netconf.{given} without netconf.{missing}: a push replaces the board's networks,"
                              " so give every network with its password, in order ('' for an open one)")
        ssids, passwords = netconf["ssid"], netconf["password"]
        ssids = [ssids] if isinstance(ssids, str) else ssids  # one network, as the seed's config.json
        if not isinstance(ssids, list) or not ssids or not all(isinstance(s, str) for s in ssids):
            raise BundleError("netconf.ssid must be a list of network names (strings), at least one")
        if isinstance(passwords, str):  # one password for every network, as the seed's config.json
            passwords = [passwords]
        elif not isinstance(passwords, list) or not all(isinstance(p, str) for p in passwords):
            raise BundleError("netconf.password must be a list of strings, one per network ('' for an open one)")
        elif len(passwords) != len(ssids):
            raise BundleError(f"{len(ssids)} netconf.ssid but {len(passwords)} netconf.password: give one password"
                              " per network, in the same order ('' for an open one)")
        try:
            check_wifi(tuple(ssids), tuple(passwords), names=("netconf.ssid", "netconf.password"))
        except FlashError as exc:
            raise BundleError(str(exc)) from None
    for key in ADDRESS_KEYS:
        value = netconf.get(key)
        if value is None:  # left out, or null: the board's default (DHCP without an ip)
            continue
        if not isinstance(value, str):
            raise BundleError(f"netconf.{key} must be an IPv4 address as a string, like \"192.168.1.50\", or null")
        problem = address_problem(value, netmask=key in ("netmask", "mask"))
        if problem:
            raise BundleError(f"netconf.{key} {problem}")
    sleep = netconf.get("sleep")
    if sleep is not None and (type(sleep) is not int or not MIN_INTERVAL_S <= sleep <= MAX_INTERVAL_S):
        raise BundleError(f"netconf.sleep must be a whole number of seconds, {MIN_INTERVAL_S} to {MAX_INTERVAL_S}"
                          " (the node's interval), or null")


def _check_text(value: Any, where: str) -> None:
    """Every key and string of ``value`` UTF-8 text (a JSON ``"\\udcff"`` is not: the board's json
    would make bytes of it that are no text). Says where, never what (it may be a password)."""
    if isinstance(value, str):
        if not _is_text(value):
            raise BundleError(f"{where} is not UTF-8 text (it holds a lone surrogate)")
    elif isinstance(value, dict):
        for key, item in value.items():
            if not _is_text(key):
                raise BundleError(f"a key of {where or 'the patch'} is not UTF-8 text (it holds a lone surrogate)")
            _check_text(item, f"{where}.{key}" if where else key)
    elif isinstance(value, list):
        for i, item in enumerate(value):
            _check_text(item, f"{where}[{i}]")


def _is_text(text: str) -> bool:
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        return False
    return True


# MicroPython's json reads a "\\ud83c\\udfe0" (a character beyond U+FFFF written as a surrogate pair) as
# the two halves' bytes, not the character: such characters go in as UTF-8; the others stay "\\u00e9"
# as they always were (the same patch is the same file, the same version).
_ESCAPED_AS_ASCII = re.compile("[\u007f-\uffff]")  # what ensure_ascii escapes (DEL too)


def board_json(value, **dumps) -> str:
    """``json.dumps(value, **dumps)`` as a board's json reads it back: characters beyond U+FFFF as
    themselves (UTF-8 once encoded), every other one as ``json.dumps`` writes it (see above)."""
    text = json.dumps(value, ensure_ascii=False, **dumps)
    return _ESCAPED_AS_ASCII.sub(lambda m: f"\\u{ord(m.group()):04x}", text)


def config_patch(patch: dict) -> list[tuple[str, bytes]]:
    """The bundle that merges ``patch`` into a node's config.json."""
    content = board_json(check_patch(patch), sort_keys=True, separators=(",", ":")).encode("utf-8")
    return check_files([(CONFIG_PATCH, content)])


def masked(patch: Any) -> Any:
    """``patch`` as it may be shown (CLI output, logs): every ``password`` value as ``***`` (a list of
    them, one per network, as a list of as many)."""
    if isinstance(patch, dict):
        return {k: (["***"] * len(v) if isinstance(v, list) else "***") if k == "password" else masked(v)
                for k, v in patch.items()}
    if isinstance(patch, list):
        return [masked(v) for v in patch]
    return patch


def merge_config(config: Any, patch: dict) -> dict:
    """``config`` with ``patch`` merged in: objects key by key (recursively), anything else replaced.
    The board does the same with the config.json it has (firmware/), credentials left alone."""
    merged = dict(config) if isinstance(config, dict) else {}
    for key, value in patch.items():
        if isinstance(value, dict) and isinstance(merged.get(key), dict):
            merged[key] = merge_config(merged[key], value)
        else:
            merged[key] = value
    return merged


# -- what a node is told, and what an operator sees --------------------------------------------


def offered(node: NodeAuth, reported: Optional[str], rolled_back_from: Optional[str]) -> Optional[str]:
    """The version to offer a node on this request, or None: only to a board that said what it runs
    (old firmware sends no version and sees no change), when a bundle is staged for it, differs from
    what it runs and is not the one it rolled back from (this request's or an earlier one's)."""
    staged = node.fw_staged
    if reported is None or staged is None or staged == reported:
        return None
    if staged in (rolled_back_from, node.fw_rolled_back):
        return None
    return staged


def outcome(state: FirmwareState) -> tuple[str, Optional[int]]:
    """``(code, at_ns)``: ``current`` (nothing staged, or it ran the staged version already),
    ``pending`` (staged, not yet running), ``updated`` (it reported running the staged version at
    ``at``, even after giving it up once: a board reflashed with it), ``rolled_back`` (it gave the
    staged version up at ``at`` and runs another; not offered again until staged again)."""
    if state.staged is None:
        return "current", None
    if state.running == state.staged:  # what it reports running now wins over an earlier rollback
        if state.updated_at is None:
            return "current", None
        again = (state.rolled_back == state.staged and state.rolled_back_at is not None
                 and state.reported_at is not None and state.updated_at < state.rolled_back_at)
        # it gave the version up after its trial, then came back with it (reflashed): updated since then
        return "updated", state.reported_at if again else state.updated_at
    if state.rolled_back == state.staged:
        return "rolled_back", state.rolled_back_at
    return "pending", None


def outcome_text(state: FirmwareState) -> str:
    """The outcome as ``tswarm firmware status`` prints it: ``current``, ``pending``,
    ``updated <time>``, ``rolled back from V <time>``."""
    code, at = outcome(state)
    if code == "updated":
        return f"updated {rfc3339(at)}"
    if code == "rolled_back":
        return f"rolled back from {state.staged} {rfc3339(at)}"
    return code


def firmware_json(state: FirmwareState) -> dict:
    """A node's update state as ``/api/nodes``, ``tswarm node list --json`` and the admin API give it."""
    code, at = outcome(state)

    def when(ns: Optional[int]) -> Optional[str]:
        return rfc3339(ns) if ns is not None else None

    return {
        "running": state.running, "reported_at": when(state.reported_at),
        "staged": state.staged, "staged_at": when(state.staged_at),
        "outcome": code, "outcome_at": when(at), "rolled_back_from": state.rolled_back,
        "summary": outcome_text(state),
    }
