"""Stand-in for MicroPython's `esp` module (runs in the Unix port, for tests).

Both ESP ports have an `esp` module, but only the ESP8266's has ``deepsleep``: on the ESP32 the
module imports and ``esp.deepsleep`` is an AttributeError, as on the real board.

ESP8266: ``esp.deepsleep(us)`` reads ``us`` as a signed 32-bit machine word (an OverflowError
above 2**31 - 1 µs, about 35.8 minutes) and hands it to the SDK as unsigned, so a negative
number sleeps for about 71 minutes (ports/esp8266/modesp.c).
"""
from _scenario import ESP32, check_int, deep_sleep


def flash_size():
    return 4 * 1024 * 1024


def osdebug(level):
    pass


if not ESP32:

    def deepsleep(us=0, option=0):
        check_int(us)
        if not -0x80000000 <= us <= 0x7FFFFFFF:
            raise OverflowError("overflow converting long int to machine word")
        deep_sleep((us & 0xFFFFFFFF) // 1000, "esp.deepsleep")
