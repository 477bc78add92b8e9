# tswarm node: the board functions the boot loader (main.py) calls on every wake; part of the
# bundle an update replaces (with ota.py, which it imports only when there is an update to take).
#
# Comments, not docstrings, on purpose: MicroPython parses a whole module before compiling it and
# holds every string of it meanwhile, docstrings too; an ESP8266 has about 30 KB of heap.
#
# Plain MicroPython, stdlib only; runs on ESP8266 and ESP32 with a DHT11 or DHT22. Imports on
# CPython too (the board-only modules are imported inside the functions that need them), so
# ``payload`` can be tested on the host.
#
# Flash and forget: every sensor, network and sleep call is wrapped, and whatever fails (a
# missing or broken config.json, a value of the wrong type, the sensor, Wi-Fi, the server), the
# board goes back to deep sleep and tries again on the next wake. The only way to stay awake is a
# 423 from the service (the node is halted so that it can be reflashed), and that for
# ``netconf.awake`` seconds at most (Ctrl-C ends the wait and leaves the REPL free). Whatever a
# peer does (trickling its answer, redirecting), a wake ends _ONLINE_S after Wi-Fi joined (bound).
#
# config.json comes in two shapes, and both are read (docs/flashing.md): the project's
# (config_sample.json: ``modules.sensor``, ``modules.pins.dht``, ``modules.leds``, one password per
# network, ``netconf.netmask``) and the seed article's (``modules.dht11`` or ``modules.dht22`` with
# ``gpio: [pin]``, ``modules.rgbled.gpio: [red, green, blue]``, one password for all networks,
# ``netconf.mask``).
#
# RGB LED (``modules.leds`` pins; all off at start, and off while asleep):
#
#     colour   meaning
#     off      asleep, or awake and all is well so far
#     blue     joining Wi-Fi
#     green    sending the reading
#     red      this wake failed (sensor, Wi-Fi or server); about to sleep
#     magenta  halted (423): awake with the REPL reachable, waiting to be reflashed
#
# Each reading goes with what keep.py knows (the battery when ``modules.battery`` says how to
# measure it, the RSSI, how long the previous wake took, a boot identity and sequence), through RTC
# memory: a reading that cannot be delivered stays there and goes out, oldest first, on the next
# wake that works.
try:
    from micropython import const
except ImportError:  # CPython, for tests on the host
    def const(value):
        return value

try:
    import ujson as json
except ImportError:
    import json

import sys
import time

ACCEPTED = const(202)
NOT_CREATED = const(405)
HALTED = const(423)

SLEEP_S = const(300)  # between wakes, unless netconf.sleep says otherwise
AWAKE_S = const(600)  # a halted node waits this long to be reflashed, unless netconf.awake says otherwise
_MAX_SLEEP_S = const(2147483)  # machine.deepsleep(ms) takes a signed 32-bit ms: about 24.8 days
_MIN_INTERVAL_S = const(10)  # a node's interval as the service allows it (service/health.py): a 202's
_MAX_INTERVAL_S = const(604800)  # "sleep" of 1 s would drain the battery, one of 24 days lose the node
_ESP8266_MAX_SLEEP_S = const(4294)  # the ESP8266 SDK takes an unsigned 32-bit µs: about 71.6 minutes
_ESP_DEEPSLEEP_MAX_S = const(2147)  # esp.deepsleep(us) a signed 32-bit µs: about 35.8 minutes
_SENSOR_TRIES = const(3)
_SENSOR_PAUSE_MS = const(2000)  # a DHT22 needs 2 s between reads (a DHT11 1 s)
_WIFI_TIMEOUT_S = const(10)  # per network in the ssid list
_HTTP_TIMEOUT_S = const(10)  # per socket read: a peer that trickles its answer never reaches it (_ONLINE_S)
_ONLINE_S = const(90)  # once Wi-Fi is joined, the rest of a wake (its requests, an update) at most

# Set by the boot loader (main.py) before loadConfig: a copy of ota.json, {"active": "" | "a" | "b",
# ...} (see ota.py). None under a main.py without the loader: the node then sends no version and
# takes no update, as the firmware before it.
STATE = None
# What the last 202/423 said beyond its status: "sleep" and "awake" (seconds), which win over
# netconf.sleep and bound netconf.awake.
ANSWER = {}
# The one-shot machine.Timer that ends a wake _ONLINE_S after Wi-Fi joined (bound), and the config
# whose sleep it then takes; a module global: a timer is freed (and stopped) with its last reference.
_TIMER = None
_CONFIG = None
try:
    _T0 = time.ticks_ms()  # this wake began (about) here: the boot loader imports this first
except AttributeError:  # CPython, for tests on the host
    _T0 = 0

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


def port():
    # The MicroPython port this runs on: 'esp8266', 'esp32', ... (``sys.platform``, which each
    # port sets itself). The firmware's one question about the board; tests/firmware points it at
    # the board its stand-ins play, as the Unix port's own answer is 'linux'.
    return sys.platform


def _get(section, key, default=None):
    # section[key], or ``default`` when the section is not a dict or lacks the key: config.json
    # may hold anything.
    return section.get(key, default) if isinstance(section, dict) else default


def _int(value, default, low, high):
    # ``value`` as a whole number up to ``high``; ``default`` when it is not a number (or a numeric
    # string) or below ``low``. A bool is no number (int(True) is 1: a "sleep": true would sleep 1 s).
    if isinstance(value, bool):
        return default
    try:
        value = int(value)
    except Exception:  # None, "soon", [], nan
        return default
    return default if value < low else min(value, high)


def _plain(text, low):
    # ``text`` is a str of printable ASCII from ``low`` on (up to "~"), and not empty.
    if not isinstance(text, str) or not text:
        return False
    for c in text:
        if not low <= c <= "~":
            return False
    return True


def loadConfig(path="config.json"):
    # config.json as a dict, or None when it is missing or broken (the board then just sleeps).
    try:
        with open(path) as f:
            return json.load(f)
    except Exception as exc:
        log("cannot read", path, repr(exc))
        return None


def ledPins(modules):
    # (red, green, blue, active_low) of the RGB LED, or None: ``modules.leds`` (the project's) or
    # ``modules.rgbled.gpio`` (the seed's, [red, green, blue], active high).
    leds = _get(modules, "leds")
    if isinstance(leds, dict):
        return leds.get("red"), leds.get("green"), leds.get("blue"), bool(leds.get("active_low"))
    gpio = leds if isinstance(leds, list) else _get(_get(modules, "rgbled"), "gpio")
    if isinstance(gpio, list) and len(gpio) == 3:
        return gpio[0], gpio[1], gpio[2], False
    return None


def showColour(modules, name):
    # Light the RGB LED in one colour of COLOURS; boards without LEDs configured do nothing.
    try:
        pins = ledPins(modules)
        if pins is None:
            return
        import machine

        for pin, on in zip(pins, COLOURS[name]):  # zip stops after blue
            if pin is not None:
                machine.Pin(pin, machine.Pin.OUT).value(on != pins[3])
    except Exception as exc:  # a LED is never worth a wake
        log("leds:", repr(exc))


def sensorSettings(modules):
    # ("dht11" or "dht22", data GPIO): the seed's ``modules.dht11``/``dht22`` with ``gpio: [pin]``,
    # or the project's ``modules.sensor`` and ``modules.pins.dht``.
    for kind in ("dht22", "dht11"):
        seed = _get(modules, kind)
        if seed is not None:
            gpio = _get(seed, "gpio")
            return kind, gpio[0] if isinstance(gpio, list) and gpio else gpio
    return ("dht22" if _get(modules, "sensor") == "dht22" else "dht11"), _get(_get(modules, "pins"), "dht")


def getThermalData(modules, tries=_SENSOR_TRIES):
    # (temperature, humidity) from the DHT sensor, or None after ``tries`` failed reads. A pin that is
    # no number (missing, "5") is the board's default one, as for any field of the wrong type.
    import dht
    import machine

    kind, pin = sensorSettings(modules)
    if not isinstance(pin, int) or isinstance(pin, bool):
        pin = 4 if port() == "esp32" else 5  # tswarm flash's defaults
    pin = machine.Pin(pin)
    sensor = dht.DHT22(pin) if kind == "dht22" else dht.DHT11(pin)
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
    # Wait until ``sta`` is connected (True), reports a failure status or ``wait_ms`` passed.
    start = time.ticks_ms()
    while not sta.isconnected():
        if sta.status() in failed or time.ticks_diff(time.ticks_ms(), start) > wait_ms:
            return False
        time.sleep_ms(100)
    return True


def networkSetup(netconf):
    # Join the first reachable network of ``netconf.ssid`` as a station; the WLAN, or None.
    #
    # ``netconf.password`` is a list, one per network (the project's), or one string for all (the
    # seed's); a static address (``ip``) takes ``netmask`` or the seed's ``mask``.
    import network

    network.WLAN(network.AP_IF).active(False)
    sta = network.WLAN(network.STA_IF)
    sta.active(True)
    ip = _get(netconf, "ip")
    if ip:
        gateway = _get(netconf, "gateway")
        mask = _get(netconf, "netmask") or _get(netconf, "mask") or "255.255.255.0"
        try:
            sta.ifconfig((ip, mask, gateway, _get(netconf, "dns") or gateway))
        except Exception as exc:  # a wrong address in config.json: DHCP still joins
            log("static address refused, using DHCP:", repr(exc))
    failed = [getattr(network, s) for s in ("STAT_NO_AP_FOUND", "STAT_WRONG_PASSWORD", "STAT_CONNECT_FAIL")
              if hasattr(network, s)]
    wait_ms = _int(_get(netconf, "wifi_timeout"), _WIFI_TIMEOUT_S, 1, 60) * 1000
    # The ESP8266 rejoins the last network by itself after a wake: use that (connect() would
    # write the credentials to flash again, and flash wears out).
    if sta.isconnected() or (sta.status() == getattr(network, "STAT_CONNECTING", None) and _joined(sta, failed, wait_ms)):
        log("rejoined", sta.ifconfig()[0])
        return sta
    ssids = _get(netconf, "ssid") or []
    if isinstance(ssids, str):
        ssids = [ssids]
    passwords = _get(netconf, "password") or ""
    if not isinstance(passwords, (str, list)):  # 5, {"a": 1}: the default, no password
        passwords = ""
    for i, ssid in enumerate(ssids if isinstance(ssids, list) else []):
        if not isinstance(ssid, str):
            continue
        password = passwords if isinstance(passwords, str) else passwords[i] if i < len(passwords) else ""
        try:
            sta.connect(ssid, password if isinstance(password, str) else "")
        except Exception as exc:  # the ESP32's raises what its SDK refuses (OSError "Wifi Internal Error"): the next one
            log("could not join", ssid, repr(exc))
            continue
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


def payload(name, temperature, humidity, more=""):
    # The request body of the node protocol: {"name": "<login>", "data": "<t> <h>"}, and ``more``
    # (', "key": value' pairs: the optional fields of docs/protocol.md) before the closing brace.
    return '{"name": %s, "data": "%s %s"%s}' % (json.dumps(name), _number(temperature), _number(humidity), more)


def _redirected(*args, **kwargs):
    raise OSError("a redirect, never followed")


def request(method, url, headers, body=None):
    # requests.request with the wake's timeout, for the reading and the master's GET of the swarm.
    #
    # Never a redirect (the node protocol has none): requests follows a 3xx by calling its module's
    # request() again, looked up when it is called, without the timeout (a Location that never
    # answers keeps the board awake), a 301's PUT as a GET without the reading, and the
    # Authorization header to the Location's host. While this request runs that request() is
    # _redirected, so a 3xx raises OSError before any byte goes to the Location: a failed send.
    #
    # requests writes the URL and the header values as they are: a space, CR or LF from config.json
    # would make a request line the service answers 400 (which drops the reading for good) or add a
    # header line of its own. Such a request is not sent (ValueError: url_local is tried, the reading kept).
    if not (_plain(url, "!") and _plain("".join(headers.values()), " ")):
        raise ValueError("not plain ASCII: not sent")
    try:
        import requests
    except ImportError:  # older firmware freezes it as urequests
        import urequests as requests
    send = requests.request
    requests.request = _redirected
    try:
        try:
            return send(method, url, data=body, headers=headers, timeout=_HTTP_TIMEOUT_S)
        except TypeError:  # requests of MicroPython before ~1.23 takes no timeout (checked before any I/O)
            return send(method, url, data=body, headers=headers)
    finally:
        requests.request = send  # ota.py (of another bundle, maybe) calls it too


def _send(method, url, body, headers):
    # The HTTP status; a 202's or 423's JSON body goes to ANSWER (a body that is no JSON object
    # is ignored: the status is what counts).
    response = request(method, url, headers, body)
    try:
        status = response.status_code
        if status in (ACCEPTED, HALTED):
            try:
                answer = json.loads(response.content)
                ANSWER.clear()
                if isinstance(answer, dict):
                    ANSWER.update(answer)
            except Exception as exc:
                log("answer not read:", repr(exc))
        return status
    finally:
        response.close()


def validVersion(version):
    # A version the service takes in X-Tswarm-Firmware and X-Tswarm-Rolled-Back (1 to 64 of A-Z a-z
    # 0-9 . _ -; service/bundles.py VERSION): any other value would get every reading a 400, which
    # the board drops. main.py keeps its own copy: it must run whatever this file has become.
    if not isinstance(version, str) or not 0 < len(version) <= 64:
        return False
    for c in version:
        if not (c.isalpha() or c.isdigit() or c in "._-"):  # MicroPython's: ASCII letters and digits only
            return False
    return True


def firmwareVersion():
    # The version of the running bundle: its ``version`` file (``tswarm flash`` and every update
    # write one), or ``unknown``.
    try:
        with open(_bundlePath("version")) as f:
            version = f.read().strip()
        if validVersion(version):
            return version
    except Exception:
        pass
    return "unknown"


def _bundlePath(name):
    slot = _get(STATE, "active") or ""
    return slot + "/" + name if slot else name


def firmwareHeaders(headers):
    # ``headers`` with X-Tswarm-Firmware (and X-Tswarm-Rolled-Back after a rollback, until a
    # 202/423), when a boot loader runs this bundle.
    if STATE is not None:
        headers["X-Tswarm-Firmware"] = firmwareVersion()
        if _get(STATE, "rolled_back"):  # from a damaged or hand-edited ota.json: "unknown"
            rolled = STATE["rolled_back"]
            headers["X-Tswarm-Rolled-Back"] = rolled if validVersion(rolled) else "unknown"
    return headers


def uploadData(svconf, body):
    # Send one reading: PUT (POST when the service answers 405). (the final HTTP status, the URL
    # that answered); the caller confirms the bundle on a 202/423 (answered).
    #
    # ``svconf.url`` first; ``svconf.url_local`` only when ``url`` fails: OSError (unreachable,
    # TLS refused) or whatever else requests raises (ValueError for a scheme it does not know,
    # ImportError without TLS, RuntimeError for a redirect loop).
    headers = firmwareHeaders({"Authorization": " Basic %s" % svconf["xauth"], "Content-Type": "application/json"})
    body = body.encode()
    url = svconf["url"]
    try:
        status = _send("PUT", url, body, headers)
    except Exception as exc:
        local = svconf.get("url_local")
        if not local or local == url:
            raise
        log("cannot reach", url, repr(exc), "- trying", local)
        url = local
        status = _send("PUT", url, body, headers)
    if status == NOT_CREATED:
        status = _send("POST", url, body, headers)
    log(url, "answered", status)
    return status, url


def answered(url, xauth):
    # A 202/423 from ``url``: the running bundle is confirmed (ota.confirm), and an update the
    # answer offers is fetched now, from the URL that answered (ota.update). Nothing here changes the
    # status: a failed update leaves the running bundle as it was, and the next offer tries again.
    global STATE
    offer = ANSWER.get("update")
    if STATE is None or not (offer or "trial" in STATE or "rolled_back" in STATE):
        return
    try:
        sys.modules.pop("keep", None)  # this wake is done with it (wake): room for ota.py
        import gc

        gc.collect()  # first: else ota.py's compile can find the free heap in small pieces
        import ota

        STATE = ota.confirm(STATE)
        if isinstance(offer, dict):
            if not validVersion(offer.get("version")):  # it becomes a folder's file and a header
                raise ValueError("offer of version %r" % (offer.get("version"),))
            ota.update(STATE, url, {"Authorization": " Basic %s" % xauth}, offer)
    except Exception as exc:
        log("update failed:", repr(exc))


def goToSleep(seconds=SLEEP_S):
    # Deep sleep; the board wakes up with a reset and runs main.py again. Never raises.
    #
    # The port says how (sys.platform, never config.json): the ESP8266 sleeps with
    # ``esp.deepsleep(us)`` (its timer wakes it by pulling GPIO16, which must be wired to RST),
    # or ``machine.deepsleep(ms)`` for more than 35.8 minutes, at most 71.6; the ESP32 and every
    # other port with ``machine.deepsleep(ms)``. Should deep sleep itself fail, the board waits
    # the same time awake and resets, which starts a wake as a timer would: it drains the
    # battery faster but keeps to its interval.
    unbound()  # a deep sleep that fails waits awake: not to be cut short by the bound
    seconds = _int(seconds, SLEEP_S, 1, _MAX_SLEEP_S)
    esp8266 = port() == "esp8266"
    if esp8266:
        seconds = min(seconds, _ESP8266_MAX_SLEEP_S)
    clockOn(seconds)
    log("deep sleep", seconds, "s")
    if esp8266 and seconds <= _ESP_DEEPSLEEP_MAX_S:
        try:
            import esp

            esp.deepsleep(seconds * 1000000)
            time.sleep(1)  # the SDK puts the chip to sleep as soon as this task yields
        except Exception as exc:
            log("esp.deepsleep failed:", repr(exc))
    try:
        import machine

        machine.deepsleep(seconds * 1000)
    except Exception as exc:
        log("machine.deepsleep failed:", repr(exc), "- waiting", seconds, "s awake, then reset")
    try:
        time.sleep(seconds)
        import machine

        machine.reset()
    except Exception as exc:
        log("reset failed:", repr(exc))


def clockOn(seconds):
    # Before a deep sleep of ``seconds``: the clock RTC memory keeps (keep.py, whose layout this
    # knows: b"ts1", a check byte, boot, seq, then the clock and awake ms at 14) moves on by this
    # wake and that sleep, and this wake's length is kept for the next one's reading. Done here, not
    # in keep.py, so that a wake that took an update (ota.py and its buffers in the heap) need not
    # compile keep.py again. Never raises.
    try:
        import machine
        import struct

        rtc = machine.RTC()
        data = bytearray(rtc.memory())
        if len(data) < 26 or (len(data) - 26) % 15 or data[:3] != b"ts1" or data[3] != sum(data[4:]) & 0xFF:
            return  # nothing of ours
        awake = time.ticks_diff(time.ticks_ms(), _T0)
        struct.pack_into("<II", data, 14, (struct.unpack_from("<I", data, 14)[0] + awake + seconds * 1000) & 0xFFFFFFFF, awake)
        data[3] = sum(data[4:]) & 0xFF
        rtc.memory(data)
    except Exception as exc:
        log("RTC memory:", repr(exc))


def bound(config):
    # Arm a one-shot machine.Timer that ends this wake _ONLINE_S from now, whatever it is doing then:
    # requests' timeout bounds each socket read, not the answer, so a peer that trickles it (a byte,
    # or a header line, every few seconds) would keep the board awake for ever. Its callback is
    # scheduled, and both ports run scheduled callbacks while a socket read waits; it deep-sleeps
    # (RTC memory keeps every reading without its 202/423). ESP8266: the virtual Timer(-1); ESP32:
    # hardware timer 0 (Timer(-1) is virtual only on newer builds). Never raises.
    global _TIMER, _CONFIG
    _CONFIG = config
    try:
        import machine

        _TIMER = machine.Timer(0 if port() == "esp32" else -1)
        _TIMER.init(mode=machine.Timer.ONE_SHOT, period=_ONLINE_S * 1000, callback=_overdue)
    except Exception as exc:
        log("timer:", repr(exc))


def unbound():
    # The wake's bound off: it goes to sleep, or on to the 423's wait or the REPL. Never raises.
    global _TIMER
    try:
        _TIMER.deinit()
    except Exception:  # None: no bound
        pass
    _TIMER = None


def _overdue(timer):
    log("wake took too long (over", _ONLINE_S, "s online): going to sleep")
    showColour(_get(_CONFIG, "modules"), "red")
    goToSleep(sleepSeconds(_CONFIG))


def stayAwake(seconds=AWAKE_S):
    # Halted (423): stay awake ``seconds`` for reflashing, then return (main.py then sleeps).
    # Ctrl-C, which mpremote sends when it connects, ends the wait at once and leaves the REPL free.
    unbound()  # the one phase of a wake that may last longer: awakeSeconds bounds it
    log("halted: awake for", seconds, "s to be reflashed (Ctrl-C for the REPL)")
    time.sleep(seconds)


def wake(config):
    # One wake: read the sensor (and the battery), join Wi-Fi, send the readings RTC memory keeps
    # and this one (keep.py). The HTTP status, or None when nothing was answered. Never raises an
    # Exception (a KeyboardInterrupt from mpremote still does, so mpremote can always interrupt).
    modules = None
    try:
        modules = config["modules"]
        showColour(modules, "off")
        reading = getThermalData(modules)
        if reading is None:
            showColour(modules, "red")
            return None
        import keep

        esp8266 = port() == "esp8266"
        kept = keep.load(esp8266, _T0)
        kept.add(reading, keep.batteryVolts(modules, esp8266))
        svconf = config["svconf"]
        if not _plain(svconf["login"], "!"):  # the body's name: {"name": 5} is a 400, the reading dropped for good
            raise ValueError("svconf.login")
        showColour(modules, "blue")
        sta = networkSetup(config["netconf"])
        if sta is None:
            showColour(modules, "red")
            return None
        kept.heard(keep.signal(sta))
        bound(config)  # from here on the peer decides how long a request takes: not for ever
        showColour(modules, "green")
        status, url = keep.deliver(kept, svconf["login"], lambda body: uploadData(svconf, body), payload)
        kept = keep = None  # done with (RTC memory holds it all): room for ota.py
        if url:  # the readings went first; now the bundle is confirmed, an update taken
            answered(url, svconf["xauth"])
        showColour(modules, "magenta" if status == HALTED else "off" if status == ACCEPTED else "red")
        return status
    except KeyboardInterrupt:  # Ctrl-C (mpremote connecting): the REPL is theirs, for as long as they need
        unbound()
        raise
    except Exception as exc:
        log("wake failed:", repr(exc))
        showColour(modules, "red")
        return None


def sleepSeconds(config):
    # The ``sleep`` of the service's last answer (the node's interval), else ``netconf.sleep``, or
    # SLEEP_S. The answer's within the service's own bounds (10 s to a week: below, it is not taken),
    # config.json's at most a week (``tswarm flash`` writes none below 10 s).
    told = _int(ANSWER.get("sleep"), None, _MIN_INTERVAL_S, _MAX_INTERVAL_S)
    return told or _int(_get(_get(config, "netconf"), "sleep"), SLEEP_S, 1, _MAX_INTERVAL_S)


def awakeSeconds(config):
    # How long a halted node stays awake: ``netconf.awake`` or the 423's ``awake``, the shorter when
    # both are given, else AWAKE_S; at most a day.
    mine = _int(_get(_get(config, "netconf"), "awake"), None, 1, 86400)
    told = _int(ANSWER.get("awake"), None, 1, 86400)
    if mine and told:
        return min(mine, told)
    return mine or told or AWAKE_S
