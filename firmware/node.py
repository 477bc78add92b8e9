"""tswarm node: the board functions main.py calls on every wake.

Plain MicroPython, stdlib only; runs on ESP8266 and ESP32 with a DHT11 or DHT22. Imports on
CPython too (the board-only modules are imported inside the functions that need them), so
``payload`` can be tested on the host.

Flash and forget: every sensor and network call is wrapped, and whatever fails, the board
goes back to deep sleep and tries again on the next wake. The only way to stay awake is a
423 from the service (the node is halted so that it can be reflashed).

RGB LED (``modules.leds`` pins; all off at start, and off while asleep):

    colour   meaning
    off      asleep, or awake and all is well so far
    blue     joining Wi-Fi
    green    sending the reading
    red      this wake failed (sensor, Wi-Fi or server); about to sleep
    magenta  halted (423): awake with the REPL reachable, waiting to be reflashed
"""
try:
    from micropython import const
except ImportError:  # CPython, for tests on the host
    def const(value):
        return value

try:
    import ujson as json
except ImportError:
    import json

import time

ACCEPTED = const(202)
NOT_CREATED = const(405)
HALTED = const(423)

SLEEP_S = const(300)  # between wakes, unless netconf.sleep says otherwise
_SENSOR_TRIES = const(3)
_SENSOR_PAUSE_MS = const(2000)  # a DHT22 needs 2 s between reads (a DHT11 1 s)
_WIFI_TIMEOUT_S = const(10)  # per network in the ssid list
_HTTP_TIMEOUT_S = const(10)

# name: (red, green, blue)
COLOURS = {
    "off": (0, 0, 0),
    "blue": (0, 0, 1),
    "green": (0, 1, 0),
    "red": (1, 0, 0),
    "magenta": (1, 0, 1),
}


def log(*args):
    print("tswarm:", *args)


def loadConfig(path="config.json"):
    """config.json as a dict, or None when it is missing or broken (the board then just sleeps)."""
    try:
        with open(path) as f:
            return json.load(f)
    except Exception as exc:
        log("cannot read", path, repr(exc))
        return None


def showColour(modules, name):
    """Light the RGB LED in one colour of COLOURS; boards without LEDs configured do nothing."""
    leds = (modules or {}).get("leds") or {}
    if not leds:
        return
    try:
        import machine

        low = leds.get("active_low", False)
        for pin, on in zip((leds.get("red"), leds.get("green"), leds.get("blue")), COLOURS[name]):
            if pin is not None:
                machine.Pin(pin, machine.Pin.OUT).value(on != low)
    except Exception as exc:  # a LED is never worth a wake
        log("leds:", repr(exc))


def getThermalData(modules, tries=_SENSOR_TRIES):
    """(temperature, humidity) from the DHT sensor, or None after ``tries`` failed reads."""
    import dht
    import machine

    pin = machine.Pin(modules["pins"]["dht"])
    sensor = dht.DHT22(pin) if modules.get("sensor") == "dht22" else dht.DHT11(pin)
    for attempt in range(tries):
        if attempt:
            time.sleep_ms(_SENSOR_PAUSE_MS)
        try:
            sensor.measure()
            return sensor.temperature(), sensor.humidity()
        except Exception as exc:  # OSError on timeout, Exception("checksum error")
            log("sensor read", attempt + 1, "of", tries, "failed:", repr(exc))
    return None


def _joined(sta, failed, wait_ms):
    """Wait until ``sta`` is connected (True), reports a failure status or ``wait_ms`` passed."""
    start = time.ticks_ms()
    while not sta.isconnected():
        if sta.status() in failed or time.ticks_diff(time.ticks_ms(), start) > wait_ms:
            return False
        time.sleep_ms(100)
    return True


def networkSetup(netconf):
    """Join the first reachable network of ``netconf.ssid`` as a station; the WLAN, or None."""
    import network

    network.WLAN(network.AP_IF).active(False)
    sta = network.WLAN(network.STA_IF)
    sta.active(True)
    if netconf.get("ip"):
        sta.ifconfig((netconf["ip"], netconf["netmask"], netconf["gateway"], netconf.get("dns") or netconf["gateway"]))
    failed = [getattr(network, s) for s in ("STAT_NO_AP_FOUND", "STAT_WRONG_PASSWORD", "STAT_CONNECT_FAIL")
              if hasattr(network, s)]
    wait_ms = int(netconf.get("wifi_timeout", _WIFI_TIMEOUT_S) * 1000)
    # The ESP8266 rejoins the last network by itself after a wake: use that (connect() would
    # write the credentials to flash again, and flash wears out).
    if sta.isconnected() or (sta.status() == getattr(network, "STAT_CONNECTING", None) and _joined(sta, failed, wait_ms)):
        log("rejoined", sta.ifconfig()[0])
        return sta
    passwords = netconf.get("password") or []
    for i, ssid in enumerate(netconf.get("ssid") or []):
        sta.connect(ssid, passwords[i] if i < len(passwords) else "")
        if _joined(sta, failed, wait_ms):
            log("joined", ssid, sta.ifconfig()[0])
            return sta
        log("could not join", ssid, "status", sta.status())
        sta.disconnect()
    return None


def _number(value):
    # DHT11 reports integers; DHT22 tenths, which arrive as floats like 23.400000000000002
    # (or float32 on the ESP8266): one decimal is exactly what the sensor measured.
    return "%d" % value if isinstance(value, int) else "%.1f" % value


def payload(name, temperature, humidity):
    """The request body of the node protocol: {"name": "<login>", "data": "<t> <h>"}."""
    return '{"name": %s, "data": "%s %s"}' % (json.dumps(name), _number(temperature), _number(humidity))


def _send(requests, method, url, body, headers):
    try:
        response = requests.request(method, url, data=body, headers=headers, timeout=_HTTP_TIMEOUT_S)
    except TypeError:  # requests of MicroPython before ~1.23 takes no timeout (checked before any I/O)
        response = requests.request(method, url, data=body, headers=headers)
    try:
        return response.status_code
    finally:
        response.close()


def uploadData(svconf, body):
    """PUT the reading (POST when the service answers 405); the final HTTP status.

    ``svconf.url`` first; ``svconf.url_local`` only when ``url`` cannot be reached (OSError).
    """
    try:
        import requests
    except ImportError:  # older firmware freezes it as urequests
        import urequests as requests

    headers = {"Authorization": " Basic %s" % svconf["xauth"], "Content-Type": "application/json"}
    body = body.encode()
    url = svconf["url"]
    try:
        status = _send(requests, "PUT", url, body, headers)
    except OSError as exc:
        local = svconf.get("url_local")
        if not local or local == url:
            raise
        log("cannot reach", url, repr(exc), "- trying", local)
        url = local
        status = _send(requests, "PUT", url, body, headers)
    if status == NOT_CREATED:
        status = _send(requests, "POST", url, body, headers)
    log(url, "answered", status)
    return status


def goToSleep(seconds=SLEEP_S, board=None):
    """Deep sleep; the board wakes up with a reset (ESP8266: GPIO16 wired to RST) and runs main.py."""
    log("deep sleep", seconds, "s")
    if board == "esp32":
        import machine

        machine.deepsleep(seconds * 1000)
    else:
        try:
            import esp
        except ImportError:  # not an ESP8266 after all (config.json missing or wrong)
            import machine

            machine.deepsleep(seconds * 1000)
        esp.deepsleep(seconds * 1000000)


def wake(config):
    """One wake: read the sensor, join Wi-Fi, send the reading. The HTTP status, or None when
    nothing was sent. Never raises an Exception (a KeyboardInterrupt from mpremote still does,
    so mpremote can always interrupt a wake)."""
    modules = None
    try:
        modules = config["modules"]
        showColour(modules, "off")
        reading = getThermalData(modules)
        if reading is None:
            showColour(modules, "red")
            return None
        showColour(modules, "blue")
        if networkSetup(config["netconf"]) is None:
            showColour(modules, "red")
            return None
        showColour(modules, "green")
        svconf = config["svconf"]
        status = uploadData(svconf, payload(svconf["login"], reading[0], reading[1]))
        showColour(modules, "magenta" if status == HALTED else "off" if status == ACCEPTED else "red")
        return status
    except Exception as exc:
        log("wake failed:", repr(exc))
        showColour(modules, "red")
        return None


def sleepSettings(config):
    """(seconds, board) for goToSleep; the defaults when the config lacks them."""
    try:
        return int(config["netconf"].get("sleep") or SLEEP_S), config["modules"].get("board")
    except Exception:
        return SLEEP_S, None
