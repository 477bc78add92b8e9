"""What tests/firmware/board.py's ``boot()`` sets up in the MicroPython Unix port before it runs
main.py (runs in MicroPython, not CPython). Nothing of the firmware is changed; two things are
watched through the override of builtins that MicroPython offers:

- ``import``: the Unix port's ``sys.platform`` is 'linux' and read-only, so every ``node`` module
  the boot loader imports (from whichever bundle) gets its one question about the port,
  ``node.port()``, answered with the scenario's board;
- the flash: every file write (``open`` for writing, each ``write()`` to such a file, and
  ``os.rename``, ``os.remove``, ``os.mkdir`` through the ``os`` module the firmware imports) is
  counted and recorded as a "write" event ``{"n", "op", "path"}``. With the scenario's ``"kill_at_write": N`` the process is killed with SIGKILL
  just before write N, as a power cut would (nothing of write N happens, nothing after it runs,
  and RTC memory is gone);
  with ``"pause_at_write": N`` it prints ``tswarm-test: paused before write N`` and waits until
  the file ``scenario["resume"]`` exists (the test does something meanwhile, such as stopping the
  service);
- with ``"virtual_sleep": true``, node.py's ``time.sleep``/``sleep_ms`` return at once and move its
  ``ticks_ms`` on by that long (a halted node awake for an hour, in no time): ``time`` in the
  ``node`` module alone, so a wake's length (node.clockOn) counts the wait; keep.py and the
  stand-ins keep the real clock.
"""
import builtins
import os as _real_os
import time

from _scenario import record, scenario

BOARD = scenario["board"]
_import = builtins.__import__
_open = builtins.open
_writes = [0]
_ours = (scenario["record"], scenario["rtc"]) + (
    (scenario["oled_ram"], scenario["oled_ram"] + ".tmp") if scenario.get("oled_ram") else ())  # the OLED's RAM (_oled.py)


def _write(op, path):
    if path in _ours:
        return
    _writes[0] += 1
    n = _writes[0]
    if scenario.get("kill_at_write") == n:
        print("tswarm-test: power cut before write", n, op, path)
        import machine

        machine.lose_rtc_memory()  # RTC memory does not outlive a power loss
        _real_os.system("kill -9 $PPID")  # the shell's parent: this MicroPython process
        time.sleep(60)
    if scenario.get("pause_at_write") == n:
        print("tswarm-test: paused before write", n, op, path)
        while True:
            try:
                _real_os.stat(scenario["resume"])
                break
            except OSError:
                time.sleep(0.02)
    record("write", n=n, op=op, path=path)


class _Written:
    """A file open for writing: each write() is counted too (a power cut inside a file)."""

    def __init__(self, f, path):
        self._f = f
        self._path = path

    def write(self, data):
        _write("write", self._path)
        return self._f.write(data)

    def close(self):
        self._f.close()

    def flush(self):
        self._f.flush()

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self._f.close()


def _hooked_open(path, mode="r", *args, **kwargs):
    if "w" in mode or "a" in mode or "+" in mode:
        _write("open", path)
        return _Written(_open(path, mode, *args, **kwargs), path)
    return _open(path, mode, *args, **kwargs)


class _Os:
    pass


_os = _Os()
for _name in dir(_real_os):
    if not _name.startswith("__"):
        setattr(_os, _name, getattr(_real_os, _name))


def _counted(fn, op):
    def counted(path, *args):
        _write(op, path)
        return fn(path, *args)

    return counted


_os.rename = _counted(_real_os.rename, "rename")
_os.remove = _counted(_real_os.remove, "remove")
_os.unlink = _counted(_real_os.unlink, "remove")
_os.mkdir = _counted(_real_os.mkdir, "mkdir")


class _VirtualTime:
    """``time`` whose sleeps pass at once and move ticks_ms on (``"virtual_sleep"``)."""

    def __init__(self):
        self._ms = 0
        for name in dir(time):
            if not name.startswith("__") and name not in ("ticks_ms", "sleep_ms", "sleep"):
                setattr(self, name, getattr(time, name))

    def ticks_ms(self):
        return time.ticks_add(time.ticks_ms(), self._ms)

    def sleep_ms(self, ms):
        self._ms += int(ms)

    def sleep(self, seconds):
        print("tswarm-test: slept", seconds, "s in no time")
        self._ms += int(seconds * 1000)


def _hooked_import(name, *args):
    module = _import(name, *args)
    if name == "node":
        module.port = lambda: BOARD
        if scenario.get("virtual_sleep") and not isinstance(module.time, _VirtualTime):
            module.time = _VirtualTime()
    elif name in ("os", "uos"):
        return _os
    return module


builtins.__import__ = _hooked_import
builtins.open = _hooked_open
