"""Stand-in for MicroPython's `machine` on ESP boards (runs in the Unix port, for tests).

``machine.deepsleep(ms)`` exists on both ports. The ESP8266 computes the microseconds as an
unsigned 32-bit number (ms * 1000 wraps above about 71.6 minutes) and wakes by the RTC pulling
GPIO16, wired to RST (ports/esp8266/modmachine.c); the ESP32 wakes by its RTC timer.
"""
from _scenario import ESP32, check_int, deep_sleep, record


# GPIOs that exist (ESP8266: 6-11 drive the flash chip; ESP32: 0-39 with gaps)
_PINS = [p for p in range(40) if p not in (20, 24, 28, 29, 30, 31)] if ESP32 else [0, 1, 2, 3, 4, 5, 12, 13, 14, 15, 16]


class Pin:
    IN = 0
    OUT = 1

    def __init__(self, pin, mode=-1, pull=-1):
        check_int(pin)
        if pin not in _PINS:
            raise ValueError("invalid pin")
        self.pin = pin
        self.mode = mode

    def value(self, v=None):
        if v is None:
            return 0
        record("pin", pin=self.pin, value=1 if v else 0)


def deepsleep(ms=0):
    check_int(ms)
    if not ESP32:
        ms = (max(ms, 1) * 1000 & 0xFFFFFFFF) // 1000
    deep_sleep(ms, "machine.deepsleep")


def reset():
    record("reset")
    import sys

    sys.exit(0)
