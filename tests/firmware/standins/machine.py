"""Stand-in for MicroPython's `machine` on ESP boards (runs in the Unix port, for tests)."""
from _scenario import deep_sleep, record, scenario


class Pin:
    IN = 0
    OUT = 1

    def __init__(self, pin, mode=-1, pull=-1):
        self.pin = pin
        self.mode = mode

    def value(self, v=None):
        if v is None:
            return 0
        record("pin", pin=self.pin, value=1 if v else 0)


def deepsleep(ms=0):
    if scenario.get("board") != "esp32":
        raise AttributeError("this stand-in is an ESP8266: machine.deepsleep would not wake via GPIO16")
    deep_sleep(ms, "machine.deepsleep")


def reset():
    record("reset")
    import sys

    sys.exit(0)
