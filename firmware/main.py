# tswarm boot loader: runs after every reset and every wake from deep sleep. It never changes over
# the air (bundles leave main.py and boot.py alone); everything else is a bundle: node.py, ota.py,
# config.json and version, at the top of the file system as `tswarm flash` wrote them, or in the
# folder a/ or b/ an update was written to (docs/flashing.md, "Updating nodes in the field").
#
# ota.json names the bundle that runs ({"active": "" | "a" | "b"}). A new bundle runs on trial
# ({"trial": wakes so far, "previous": slot, "version": V}) until the service answers 202 or 423;
# the loader puts the previous bundle, config.json included, back by itself when the new one does
# not import, raises out of a wake, or had TRIAL_WAKES wakes without a 202/423, and the bundle then
# reports {"rolled_back": V} until a 202/423. An update that had done well but no longer imports
# (its files damaged) gives way to the flashed bundle the same way. Whatever fails, the board deep-sleeps; only a 423
# keeps it awake, for a while, or until Ctrl-C leaves the REPL free to reflash it.
#
# What a bundle's node.py offers the loader: STATE (set here, a copy of ota.json), loadConfig(path),
# wake(config) -> HTTP status or None, stayAwake(s), awakeSeconds(config), goToSleep(s),
# sleepSeconds(config). A config.json with ``modules.screen`` makes the board a
# master node: the bundle's master.py then runs, run(node, config) in place of wake(config); it
# loops on USB power and returns only when its screen cannot be used (the board then deep-sleeps
# and tries again on the next wake). Its trial ends as a wake's does (master.py says how), and a
# master.py that does not import or a run() that raises rolls back like a node.py that fails.
import os
import sys

try:
    import ujson as json
except ImportError:
    import json

STATE = "ota.json"
TRIAL_WAKES = 3
SLOTS = ("", "a", "b")


def readState():
    # ota.json; when a rename was cut short (FAT removes the old file first) only ota.json.tmp is
    # left, and it is whole: it was closed before the old file went. Nothing usable: the flashed bundle.
    for path in (STATE, STATE + ".tmp"):
        try:
            with open(path) as f:
                state = json.load(f)
            if isinstance(state, dict) and state.get("active") in SLOTS:
                return state
        except Exception:
            pass
    return {"active": ""}


def writeState(state):
    with open(STATE + ".tmp", "w") as f:
        f.write(json.dumps(state))
    try:
        os.rename(STATE + ".tmp", STATE)
    except OSError:  # a file system that will not rename over a file
        os.remove(STATE)
        os.rename(STATE + ".tmp", STATE)


def validVersion(version):
    # node.py's rule (the service's X-Tswarm-Rolled-Back takes 1 to 64 of A-Z a-z 0-9 . _ -), kept
    # here too: the boot loader cannot rely on the bundle it is rolling back from
    if not isinstance(version, str) or not 0 < len(version) <= 64:
        return False
    for c in version:
        if not (c.isalpha() or c.isdigit() or c in "._-"):
            return False
    return True


def rollBack(state, why):
    # to the previous bundle (the flashed one when none is known), saying which version failed
    version = state.get("version")
    if not version:
        try:
            with open(state["active"] + "/version") as f:
                version = f.read().strip()
        except Exception:
            version = "unknown"
    if not validVersion(version):  # damaged: sent as it is, every reading would get a 400
        version = "unknown"
    back = state.get("previous")
    back = {"active": back if back in SLOTS and back != state["active"] else "", "rolled_back": version}
    print("tswarm: bundle", back["rolled_back"], why, "- rolling back to", repr(back["active"]))
    try:
        writeState(back)
    except Exception as exc:
        print("tswarm: cannot write", STATE, repr(exc))
    return back


def isMaster(config):
    # config.json has a ``modules.screen`` object (read here: an older node.py has no helper for it)
    modules = config.get("modules") if isinstance(config, dict) else None
    return isinstance(modules, dict) and isinstance(modules.get("screen"), dict)


def run(state):
    # import the bundle of state["active"] alone (its folder first on sys.path, the top one out)
    slot = state["active"]
    for path in SLOTS:
        while path in sys.path:
            sys.path.remove(path)
    sys.path.insert(0, slot)
    import node

    node.STATE = dict(state)
    return node, node.loadConfig(slot + "/config.json" if slot else "config.json")


state = readState()
trial = "trial" in state
if trial:
    tries = state["trial"]
    if not isinstance(tries, int) or tries >= TRIAL_WAKES:
        state = rollBack(state, "had %d wakes without a 202/423" % TRIAL_WAKES)
        trial = False
    else:
        state = dict(state)
        state["trial"] = tries + 1
        try:
            writeState(state)
        except Exception as exc:
            print("tswarm: cannot write", STATE, repr(exc))

node = config = status = None
loaded = dict(sys.modules)
while True:
    try:
        node, config = run(state)
        if isMaster(config):
            import master  # a master node (master.py): it loops, and returns only to sleep

            status = master.run(node, config)
        else:
            status = node.wake(config)
        break
    except Exception as exc:  # a KeyboardInterrupt (Ctrl-C) still leaves for the REPL
        print("tswarm: cannot import node.py:" if node is None else "tswarm: wake raised:", repr(exc))
        failed, node = node, None
        if not (trial or (failed is None and state["active"])):
            break  # the flashed bundle itself, or a wake of a bundle that had done well: just sleep
        state, trial = rollBack(state, "failed"), False
        for name in list(sys.modules):
            if name not in loaded:
                del sys.modules[name]
try:
    if node is not None:
        if status == 423:
            node.stayAwake(node.awakeSeconds(config))
        node.goToSleep(node.sleepSeconds(config))
except Exception as exc:
    print("tswarm: bundle failed:", repr(exc))
    if trial and readState().get("active") == state["active"]:
        rollBack(state, "failed")
import machine
import time

try:
    machine.deepsleep(300000)  # an ESP8266 wakes through GPIO16 here too
except Exception:
    time.sleep(300)
    machine.reset()
