"""Stand-in for MicroPython's `machine` on ESP boards (runs in the Unix port, for tests).

``machine.deepsleep(ms)`` exists on both ports. The ESP8266 computes the microseconds as an
unsigned 32-bit number (ms * 1000 wraps above about 71.6 minutes) and wakes by the RTC pulling
GPIO16, wired to RST (ports/esp8266/modmachine.c); the ESP32 wakes by its RTC timer.

``RTC().memory()`` as the ports keep it (ports/esp8266/machine_rtc.c, ports/esp32/machine_rtc.c):
up to 492 bytes on the ESP8266, 2048 on the ESP32 (MICROPY_HW_RTC_USER_MEM_MAX), a ValueError
"buffer too long" beyond; ``b''`` until written. It lives in the file ``scenario["rtc"]``, which
survives a deep sleep (the next ``boot()``) and is gone after a power loss (board.power_loss(), or a
power cut of ``kill_at_write``). An ESP32 also loses it on ``machine.reset()`` (RTC_DATA_ATTR is set
up again on every start but a wake from deep sleep); an ESP8266 keeps it (its magic word stays).

``ADC`` as the ports have it (ports/esp8266/machine_adc.c, ports/esp32/machine_adc.c):

- ESP8266: ``ADC(0)`` is A0, ``read()`` 0-1024 for 0-1.0 V at the chip's pin (``scenario["a0"]``,
  volts there); ``ADC(1)`` is the SDK's system_get_vdd33(): VCC in 1/1024 V when the firmware's
  init data is set for it (byte 107 = 0xFF; ``scenario["vcc"]``, volts), else 65535, as MicroPython's
  own init data (byte 107 = 0) gives. No ``atten``. Any other channel: ValueError.
- ESP32: ``ADC(Pin(n))`` on ADC pins only (ADC1: 32-39, ADC2: 0, 2, 4, 12-15, 25-27), attenuation
  ATTN_0DB at first; ``atten(a)``; ``read_uv()`` the microvolts at the pin (``scenario["adc"]
  [str(n)]``, volts) clipped to the attenuation's range (950 mV, 1.25, 1.75, 2.45 V), ``read()``
  12 bits of it.

``I2C`` and ``SoftI2C`` with ``scan``, ``writeto`` and ``writevto``, and the SSD1306 OLED the
scenario's ``"oled"`` wires to them (_oled.py).

``Timer(id)`` as the ports have it (ports/esp8266/machine_timer.c, ports/esp32/machine_timer.c):
the ESP8266's one virtual timer -1; on the ESP32 hardware timers 0-3 (and -1, virtual, on newer
builds), anything else a ValueError. ``init(*, mode=PERIODIC, period=ms, callback=f)`` (keyword
arguments only), ``deinit()``; each recorded (``timer``, ``timer_deinit``). On the boards the
callback is scheduled (``micropython.schedule``) and runs between bytecodes and while a blocking
socket read or connect waits (their wait loops run pending callbacks). The Unix port's blocking
``recv()`` runs none, so this stand-in calls the callback from a thread of its own once the period
has passed, as if the main task ran it there (a deep sleep from it ends the process: _scenario.py).
``scenario["timer_scale"]`` (e.g. 0.05) makes the periods pass that much faster, so a 90 s bound
is tested in seconds; the period the firmware asked for is what is recorded.
"""
from _scenario import ESP32, check_int, deep_sleep, record, scenario


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


class RTC:
    def __init__(self):
        self._max = 2048 if ESP32 else 492

    def memory(self, data=None):
        path = scenario["rtc"]
        if data is None:
            try:
                with open(path, "rb") as f:
                    return f.read()
            except OSError:
                return b""
        data = bytes(data)
        if len(data) > self._max:
            raise ValueError("buffer too long")
        with open(path, "wb") as f:
            f.write(data)


def lose_rtc_memory():
    import os

    try:
        os.remove(scenario["rtc"])
    except OSError:
        pass


_ESP32_ADC_PINS = [0, 2, 4, 12, 13, 14, 15, 25, 26, 27, 32, 33, 34, 35, 36, 37, 38, 39]
_RANGE_UV = (950000, 1250000, 1750000, 2450000)


class _ESP8266ADC:
    def __init__(self, channel):
        check_int(channel)
        if channel not in (0, 1):
            raise ValueError("ADC(%d) doesn't exist" % channel)
        self.channel = channel
        record("adc", channel=channel)

    def read(self):
        if self.channel == 1:
            vcc = scenario.get("vcc")
            return 65535 if vcc is None else int(vcc * 1024)
        return max(0, min(1024, int(scenario.get("a0", 0) * 1024)))

    def read_u16(self):
        return self.read() * 65535 // 1024


class _ESP32ADC:
    ATTN_0DB = 0
    ATTN_2_5DB = 1
    ATTN_6DB = 2
    ATTN_11DB = 3

    def __init__(self, pin, atten=None):
        n = pin.pin if isinstance(pin, Pin) else pin
        check_int(n)
        if n not in _ESP32_ADC_PINS:
            raise ValueError("invalid Pin for ADC")
        self.pin = n
        self._atten = 0 if atten is None else atten
        record("adc", pin=n)

    def atten(self, atten):
        check_int(atten)
        if not 0 <= atten <= 3:
            raise ValueError("invalid atten")
        self._atten = atten
        record("atten", pin=self.pin, atten=atten)

    def read_uv(self):
        volts = scenario.get("adc", {}).get(str(self.pin), 0)
        return max(0, min(_RANGE_UV[self._atten], int(volts * 1000000)))

    def read(self):
        return self.read_uv() * 4095 // _RANGE_UV[self._atten]

    def read_u16(self):
        return self.read_uv() * 65535 // _RANGE_UV[self._atten]


ADC = _ESP32ADC if ESP32 else _ESP8266ADC


# machine.Timer: the stand-in (_timer.py) is imported when a timer is made, as the I2C buses below.
class Timer:
    ONE_SHOT = 0
    PERIODIC = 1

    def __new__(cls, id):
        from _timer import Timer

        return Timer(id)


def reset():
    record("reset")
    if ESP32:
        lose_rtc_memory()
    import sys

    sys.exit(0)


# I2C buses, with what the scenario wires to them (an SSD1306 OLED: _oled.py), imported only when a
# bus is made: a sensor node's tests measure its heap, and this stand-in's code is none of the node's.
def I2C(*args, **kwargs):
    from _oled import I2C

    return I2C(*args, **kwargs)


def SoftI2C(*args, **kwargs):
    from _oled import SoftI2C

    return SoftI2C(*args, **kwargs)
