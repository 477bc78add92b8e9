"""Stand-in for MicroPython's `esp` (ESP8266 only; runs in the Unix port, for tests)."""
from _scenario import deep_sleep, scenario

if scenario.get("board") == "esp32":
    raise ImportError("no module named 'esp'")  # the ESP32 port has esp32, not esp.deepsleep


def deepsleep(us=0):
    deep_sleep(us // 1000, "esp.deepsleep")
