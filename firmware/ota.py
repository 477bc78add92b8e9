# tswarm node: over-the-air updates, on the board (docs/flashing.md, "Updating nodes in the field").
#
# Part of the bundle, like node.py (which imports this only when there is something to do); the
# boot loader (main.py) never changes and picks the bundle to run from ``ota.json``:
#
#     {"active": ""}                    the bundle at the top of the file system (as flashed)
#     {"active": "a"}                   the bundle in folder a/ (or b/)
#     {"active": "b", "previous": "a", "trial": 1, "version": V}
#                                       b/ on trial since the switch (1 wake so far), a/ its way back
#     {"active": "a", "rolled_back": V} put back from V; said in every request until a 202/423
#
# An update goes to the slot that is not running (a/ or b/): the offered files are streamed to it
# in small chunks, each checked for size and SHA-256 on the way, the running bundle's other ``.py``
# files are copied beside them, config.json is copied or merged with ``config-patch.json``, then
# ``version``; only then does one atomic write of ota.json switch to it. A power cut or a failure
# before that switch leaves the running bundle as it was (the next offer starts the slot afresh);
# after it, the new bundle runs on trial.
#
# Stdlib-only MicroPython; an ESP8266 has about 30 KB of free heap, so no file is ever held whole
# (and comments, not docstrings: see node.py).
try:
    from micropython import const
except ImportError:  # CPython
    def const(value):
        return value

try:
    import ujson as json
except ImportError:
    import json

import os

STATE = "ota.json"
CONFIG_PATCH = "config-patch.json"
LOADER_FILES = ("main.py", "boot.py")
_CHUNK = const(512)
_HTTP_TIMEOUT_S = const(10)


def log(*args):
    print("tswarm:", *args)


def writeState(state):
    # ota.json, atomically: the whole new state is written to ota.json.tmp and closed, then renamed
    # over ota.json (where a file system will not rename over a file, ota.json goes first and the
    # loader reads the .tmp until the rename is done).
    with open(STATE + ".tmp", "w") as f:
        f.write(json.dumps(state))
    try:
        os.rename(STATE + ".tmp", STATE)
    except OSError:
        os.remove(STATE)
        os.rename(STATE + ".tmp", STATE)


def confirm(state):
    # A 202/423 reached the running bundle: it stays (no longer on trial) and its rollback has been
    # heard. ``state`` is the loader's (node.STATE); returns it as it now is.
    if "trial" in state or "rolled_back" in state:
        state = {"active": state["active"]}
        writeState(state)
        log("bundle", repr(state["active"]), "confirmed")
    return state


def path(slot, name):
    return slot + "/" + name if slot else name


def _listdir(slot):
    return os.listdir(slot) if slot else os.listdir()


def _valid(name):
    if not isinstance(name, str) or not 0 < len(name) <= 40 or name in LOADER_FILES or name[0] == ".":
        return False
    for c in name:
        if not (c.isalpha() or c.isdigit() or c in "_.-"):
            return False
    return name.endswith(".py") or name == CONFIG_PATCH


def _redirected(*args, **kwargs):
    raise OSError("a redirect, never followed")


def _request(url, headers):
    # GET with the timeout, never following a redirect: requests follows a 3xx by calling its
    # module's request() again (looked up then), without the timeout and with the Authorization
    # header, so while this runs that is _redirected and a 3xx raises before any byte goes to the
    # Location (node.request does the same; this file must not need node.py of its own bundle).
    try:
        import requests
    except ImportError:
        import urequests as requests
    send = requests.request
    requests.request = _redirected
    try:
        try:
            return send("GET", url, headers=headers, timeout=_HTTP_TIMEOUT_S)
        except TypeError:  # requests before ~1.23 takes no timeout
            return send("GET", url, headers=headers)
    finally:
        requests.request = send


def _hex(digest):
    import binascii

    return binascii.hexlify(digest).decode()


def fetch(url, headers, dest, size, sha256, buf):
    # GET ``url`` into file ``dest``, ``len(buf)`` bytes at a time; ValueError/OSError unless it is
    # exactly ``size`` bytes with that SHA-256.
    import hashlib

    response = _request(url, headers)
    got = 0
    digest = hashlib.sha256()
    view = memoryview(buf)
    try:
        if response.status_code != 200:
            raise ValueError("HTTP %d" % response.status_code)
        with open(dest, "wb") as f:
            while True:
                n = response.raw.readinto(buf)
                if not n:
                    break
                got += n
                if got > size:
                    raise ValueError("longer than %d bytes" % size)
                digest.update(view[:n])
                f.write(view[:n])
    finally:
        response.close()
    if got != size:
        raise ValueError("cut off after %d of %d bytes" % (got, size))
    if _hex(digest.digest()) != sha256:
        raise ValueError("SHA-256 differs")


def copy(source, dest, buf):
    view = memoryview(buf)
    with open(source, "rb") as a:
        with open(dest, "wb") as b:
            while True:
                n = a.readinto(buf)
                if not n:
                    break
                b.write(view[:n])


def merge(config, patch):
    # config.json with ``patch`` merged in: objects key by key, anything else replaced (the
    # service's bundles.merge_config).
    merged = dict(config) if isinstance(config, dict) else {}
    for key, value in patch.items():
        if isinstance(value, dict) and isinstance(merged.get(key), dict):
            merged[key] = merge(merged[key], value)
        else:
            merged[key] = value
    return merged


def _readJson(name):
    try:
        with open(name) as f:
            return json.load(f)
    except Exception:
        return None


def update(state, url, headers, offer):
    # Fetch the bundle ``offer`` ({"version", "files": [{"name", "size", "sha256"}]}) from
    # ``url``/firmware/V/NAME into the slot not running, and switch to it on trial. Raises on any
    # failure, leaving the running bundle (and ota.json) as they were.
    version = offer["version"]
    files = offer["files"]
    if not isinstance(version, str) or not isinstance(files, list) or not files:
        raise ValueError("offer without version or files")
    names = []
    for entry in files:
        if not _valid(entry["name"]) or entry["name"] in names:
            raise ValueError("offer names %r" % entry["name"])
        names.append(entry["name"])
    active = state["active"]
    slot = "b" if active == "a" else "a"
    log("update", version, "into", slot + "/:", len(files), "files")
    try:
        os.mkdir(slot)
    except OSError:  # there already
        pass
    for name in os.listdir(slot):
        os.remove(slot + "/" + name)
    buf = bytearray(_CHUNK)
    base = url.rstrip("/") + "/firmware/" + version + "/"
    for entry in files:
        fetch(base + entry["name"], headers, path(slot, entry["name"]), entry["size"], entry["sha256"], buf)
    for name in _listdir(active):  # the running bundle's other files come along
        if name.endswith(".py") and name not in LOADER_FILES and name not in names:
            copy(path(active, name), path(slot, name), buf)
    config = _readJson(path(active, "config.json"))
    if CONFIG_PATCH in names:
        patch = _readJson(path(slot, CONFIG_PATCH))
        if not isinstance(patch, dict):
            raise ValueError(CONFIG_PATCH + " is no JSON object")
        svconf = patch.get("svconf")
        if isinstance(svconf, dict):  # never the node's credentials
            svconf.pop("login", None)
            svconf.pop("xauth", None)
        with open(path(slot, "config.json"), "w") as f:
            f.write(json.dumps(merge(config, patch)))
        os.remove(path(slot, CONFIG_PATCH))
    else:
        copy(path(active, "config.json"), path(slot, "config.json"), buf)
    with open(path(slot, "version"), "w") as f:
        f.write(version)
    writeState({"active": slot, "previous": active, "trial": 0, "version": version})
    log("update", version, "ready: on trial from the next wake")
