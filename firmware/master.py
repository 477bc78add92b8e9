# tswarm master node: a board with an SSD1306 OLED (128x64 or 128x32, on I2C) that shows the whole
# swarm: every node's latest temperature and humidity and which nodes need attention. Part of the
# bundle, like node.py, whose functions it uses (Wi-Fi with several networks and a static address,
# config.json, the LED, the sensor and the PUT of its own reading); the boot loader (main.py) runs
# ``run(node, config)`` instead of a wake when config.json has ``modules.screen``.
#
# Comments, not docstrings (see node.py: an ESP8266 has about 30 KB of heap). The screen is drawn
# with MicroPython's framebuf through micropython-lib's SSD1306 driver (``import ssd1306``, which
# ``tswarm flash --master`` installs into /lib with mip); rotation is the chip's own (its segment
# remap and COM scan direction), so it costs no RAM.
#
# A master is on USB power and stays awake: it refreshes every ``sleep`` s (the ``sleep`` of the
# swarm's answer, its interval on the service; ``netconf.sleep`` until then), and turns the pages of
# nodes every ``modules.screen.page_s`` s (default 5). A refresh joins Wi-Fi when it is not joined,
# reads its own DHT and PUTs the reading when it has ``modules.sensor`` (it is then a sensor node
# too), and reads the summary page by page (GET url/swarm?offset=&limit=, a screenful of nodes a
# request, so each answer stays small), keeping each node as one line of 17 bytes. It never crashes
# to a blank screen: whatever fails (Wi-Fi, the service unreachable, 401/403/5xx, an answer that is
# no JSON, a MemoryError, the sensor) is shown on the screen, in the header, with how long it has
# lasted, and tried again after min(sleep, 30) s; the last nodes it read stay on screen meanwhile
# (not after a 401/403: the service no longer lets it read them). A screen that does not answer on
# I2C (or no ssd1306 driver) is logged and the board deep-sleeps, to try again on the next wake.
#
# The screen (16 characters a line of the 8x8 font; 8 lines on 128x64, 4 on 128x32):
#
#     header   "7 nodes 2!   1/2": registered nodes, how many are not ok, page k of n;
#              in inverse video instead when something fails: "no wifi 5m", "no service 12s",
#              "login 401 3m", "no right 403 1m", "HTTP 500 2m", "busy 503 4s", "bad JSON 1m",
#              "bad answer 2s" (no HTTP), "no memory 10s", "reading 503 1m" (its own PUT), "sensor fail 3m"
#     a node   "?attic   21.5 40": a mark, the name (as much as fits), temperature, humidity
#
#     mark     ' ' ok, '?' late, '!' silent, 'H' halted, '-' never sent a reading; drawn in
#              inverse video (a lit square) when its battery is low
#
# Over-the-air updates: the service's yes to a master is a 200 from /swarm (or a 202/423 to its own
# reading). A bundle on trial is confirmed by the first one (ota.confirm); until then a refresh that
# gets none ends the boot (the failure stays on screen): after min(sleep, 30) s the master resets,
# and the loader counts that boot as a wake of the trial and rolls the bundle back after
# TRIAL_WAKES of them, as it does for a sensor node; a master.py that does not import, or a run()
# that raises, rolls back as a broken node.py does. Update offers come only with a 202/423, so a
# master takes them only when it has its own sensor: node.answered fetches the new bundle, and the
# master resets into it. A master without a sensor is updated by `tswarm flash`; a rollback it
# had is confirmed by its next 200 but, sending no reading, it never reports it to the service.
try:
    from micropython import const
except ImportError:  # CPython, for tests on the host
    def const(value):
        return value

try:
    import ujson as json
except ImportError:
    import json

import gc
import time

_ROW = const(17)  # a node on screen: flags, then its 16 characters
_LOW = const(1)  # flags: battery low
_MAX_NODES = const(100)  # nodes kept for the pages (1.7 KB); the header still counts them all
_RETRY_S = const(30)  # after a failed refresh, at most this long until the next
_PAGE_S = const(5)
_MAX_BODY = const(4096)  # of a page's answer (7 nodes are about 1.3 KB): more is never read
_BOUND_S = const(90)  # a refresh at most this long once Wi-Fi is joined: requests' timeout bounds
# each socket read, not an answer trickled a byte at a time; past it the board resets (_overdue)

_UNREACHABLE = ("cannot reach", "the service")
_HELLO = ("tswarm master", "joining Wi-Fi")
MARKS = {"ok": " ", "late": "?", "silent": "!", "halted": "H", "never": "-"}

# what the screen shows; set by run(), read by draw()
rows = bytearray(0)  # _ROW bytes a node, in the service's order (by name)
shown = 0  # nodes in rows
total = 0  # registered nodes, as the last summary said
attention = 0  # of them not ok
trouble = None  # what failed last ("no wifi", ...), or None
troubleMs = 0  # for how long (ms, summed tick by tick: no wrap-around)
body = None  # lines shown instead of nodes (no summary yet, or refused)
lowest = None  # the least free heap seen while drawing (gc.mem_free, logged with each refresh)
drawn = 0  # the most a drawing allocated (bytes)
guard = None  # the Timer of _BOUND_S, and what _overdue draws with (a module global: see node.bound)
on = None


def age(ms):
    s = ms // 1000
    if s < 60:
        return "%ds" % s
    if s < 3600:
        return "%dm" % (s // 60)
    if s < 172800:
        return "%dh" % (s // 3600)
    return "%dd" % (s // 86400)


def screenSettings(node, modules):
    # (sda, scl, width, height, address, rotate, page_s) from ``modules.screen``, with the defaults
    # of docs/flashing.md for what is missing or not a number.
    screen = node._get(modules, "screen")
    esp32 = node._get(modules, "board") == "esp32" or node.port() == "esp32"
    height = node._int(node._get(screen, "height"), 64, 16, 64)
    return (node._int(node._get(screen, "sda"), 21 if esp32 else 4, 0, 39),
            node._int(node._get(screen, "scl"), 22 if esp32 else 5, 0, 39),
            node._int(node._get(screen, "width"), 128, 64, 128),
            32 if height < 64 else 64,
            node._int(node._get(screen, "address"), 60, 8, 119),
            180 if node._get(screen, "rotate") == 180 else 0,
            node._int(node._get(screen, "page_s"), _PAGE_S, 1, 3600))


def openScreen(node, settings):
    # The SSD1306_I2C driver of the screen, drawn blank and turned as configured; None (logged)
    # when nothing answers on I2C or the driver is missing.
    sda, scl, width, height, address, rotate = settings[:6]
    try:
        import machine

        if node.port() == "esp32":
            i2c = machine.I2C(0, scl=machine.Pin(scl), sda=machine.Pin(sda))
        else:
            i2c = machine.SoftI2C(scl=machine.Pin(scl), sda=machine.Pin(sda))
    except Exception as exc:
        node.log("screen: no I2C on sda", sda, "scl", scl, repr(exc))
        return None
    try:
        import ssd1306
    except ImportError as exc:
        node.log("screen: no ssd1306 driver (tswarm flash --master installs it):", repr(exc))
        return None
    try:
        display = ssd1306.SSD1306_I2C(width, height, i2c, address)
        # the driver's rotate(1) is its default orientation, rotate(0) turns the picture by 180
        display.rotate(0 if rotate == 180 else 1)
        return display
    except Exception as exc:  # OSError(19), ENODEV: no screen at that address
        try:
            found = i2c.scan()
        except Exception:
            found = "?"
        node.log("screen: nothing answers at I2C address", hex(address), "on sda", sda, "scl", scl, "- found", found)
        return None


def nodeLine(n):
    # A node of the summary as (16 characters, flags): mark, name (cut to fit), temperature, humidity.
    t = n.get("temperature")
    h = n.get("humidity")
    # a number out of any sensor's range (1e999, nan) is unknown: round(inf) would raise
    ts = "%.1f" % t if isinstance(t, (int, float)) and -1000 < t < 1000 else "--"
    hs = "%d" % round(h) if isinstance(h, (int, float)) and -1000 < h < 1000 else "--"
    if len(ts) > 5:
        ts = "%d" % round(t)
    values = "%5s%3s" % (ts, hs) if len(hs) < 3 else "%5s %s" % (ts, hs)
    pad = 15 - len(values)
    name = n.get("name")
    name = name[:pad - (values[0] != " ")] if isinstance(name, str) else "?"
    line = MARKS.get(n.get("health"), "?") + name + " " * (pad - len(name)) + values
    return line, (_LOW if n.get("low") is True else 0)


def keep(index, n):
    global shown
    line, flags = nodeLine(n)
    at = index * _ROW
    rows[at] = flags
    for i in range(16):
        c = ord(line[i]) if i < len(line) else 32
        rows[at + 1 + i] = c if 32 <= c < 127 else 63
    shown = max(shown, index + 1)


def failed(what, message=None):
    # Note a failure: ``what`` is shown in the header with how long it has lasted, ``message`` in
    # place of the nodes while there are none to show.
    global trouble, troubleMs, body
    if trouble != what:
        trouble = what
        troubleMs = 0
    if message is None and body is _HELLO:  # Wi-Fi is joined: say so no more
        message = ("no summary yet",)
    if message is not None and not shown:
        body = message
    return False


def fetchPage(node, svconf, offset, limit):
    # GET one page of the summary: (status, the JSON object or None, an error code or None).
    headers = {"Authorization": " Basic %s" % svconf["xauth"]}
    path = "/swarm?offset=%d&limit=%d" % (offset, limit)
    url = svconf["url"]
    try:
        response = node.request("GET", url + path, headers)
    except Exception as exc:
        local = svconf.get("url_local")
        if not local or local == url:
            raise
        node.log("cannot reach", url, repr(exc), "- trying", local)
        response = node.request("GET", local + path, headers)
    try:
        status = response.status_code
        content = response.raw.read(_MAX_BODY + 1)  # bounded: a huge answer is no page of ours
    finally:
        response.close()
    if len(content) > _MAX_BODY:
        return status, None, None
    try:
        answer = json.loads(content)
    except ValueError:
        return status, None, None
    content = None
    if status == 200:
        return status, answer if isinstance(answer, dict) else None, None
    return status, None, answer.get("error") if isinstance(answer, dict) else None


def readSwarm(node, config, lines):
    # Read every page of the summary into ``rows``: True when all went well; the refresh interval
    # the service gave goes to node.ANSWER["sleep"] (node.sleepSeconds reads it).
    global rows, shown, total, attention, body
    svconf = config["svconf"]
    offset = 0
    count = 0
    while True:
        status, answer, error = fetchPage(node, svconf, offset, lines)
        if status in (401, 403):
            rows = bytearray(0)
            shown = total = 0
            name = svconf.get("login") or "NAME"
            if status == 403 and error == "no_display_right":
                body = ("no display right", "on the service:", "tswarm node", "display", name[:13] + " on")
                return failed("no right 403")
            body = ("login refused:", "check svconf", "login and xauth") if status == 401 else ("refused:", str(error)[:16])
            return failed("login 401" if status == 401 else "refused 403")
        if status in (429, 503):
            return failed("busy %d" % status)
        if status != 200:
            return failed("HTTP %d" % status)
        if answer is None:
            return failed("bad JSON")
        nodes = answer.get("nodes")
        count = answer.get("total")
        if not isinstance(nodes, list) or not isinstance(count, int) or count < 0:
            return failed("bad JSON")
        if offset == 0:
            total = count
            counts = answer.get("counts")
            ok = counts.get("ok") if isinstance(counts, dict) else None
            attention = count - ok if isinstance(ok, int) else 0
            sleep = answer.get("sleep")
            if isinstance(sleep, int) and sleep > 0:
                node.ANSWER["sleep"] = sleep
            keepRows = min(count, _MAX_NODES)
            if len(rows) != keepRows * _ROW:
                rows = None
                gc.collect()
                rows = bytearray(keepRows * _ROW)
                shown = 0  # else the nodes of a page that fails below stay as last read
        got = len(nodes)
        for n in nodes:
            if offset >= len(rows) // _ROW:
                break
            if isinstance(n, dict):
                keep(offset, n)
            offset += 1
        answer = nodes = None
        if not got or offset >= len(rows) // _ROW:
            body = None if count else ("no nodes yet:", "tswarm node add")
            return True
        gc.collect()


def hasSensor(node, modules):
    return node._get(modules, "sensor") is not None or node._get(modules, "dht11") is not None \
        or node._get(modules, "dht22") is not None


def sendReading(node, config):
    # The master's own reading, as a sensor node sends it: the HTTP status (None when the sensor
    # failed); a 202/423 confirms the bundle and takes an update offered (node.answered).
    modules = config["modules"]
    reading = node.getThermalData(modules)
    if reading is None:
        return None
    svconf = config["svconf"]
    node.showColour(modules, "green")
    status, url = node.uploadData(svconf, node.payload(svconf["login"], reading[0], reading[1]))
    if status in (node.ACCEPTED, node.HALTED):
        node.answered(url, svconf["xauth"])
    return status


def refresh(node, config, state, lines):
    # One refresh: Wi-Fi, the master's own reading (with a sensor), the summary. True when the
    # service said yes to all of it; ``state["sta"]`` keeps the joined WLAN.
    global trouble
    modules = config["modules"]
    sta = state.get("sta")
    if sta is None or not sta.isconnected():
        node.showColour(modules, "blue")
        sta = state["sta"] = node.networkSetup(config["netconf"])
        if sta is None:
            node.showColour(modules, "red")
            return failed("no wifi", ("Wi-Fi: none of", "netconf.ssid", "answers"))
    arm(node)
    problem = None
    if hasSensor(node, modules):
        try:
            status = sendReading(node, config)
            if status is None:
                problem = "sensor fail"
            elif status not in (node.ACCEPTED, node.HALTED):
                problem = "reading %d" % status
            else:
                state["yes"] = True
        except MemoryError:
            raise
        except Exception as exc:
            node.log("reading not sent:", repr(exc))
            if isinstance(exc, OSError):
                node.showColour(modules, "red")
                return failed("no service", _UNREACHABLE)
            problem = "bad answer"  # no HTTP (requests' ValueError): the summary may still come
        gc.collect()
    try:
        good = readSwarm(node, config, lines)
    except MemoryError:
        raise
    except Exception as exc:
        node.log("swarm not read:", repr(exc))
        # unreachable, refused, timed out; else an answer that is no HTTP (a garbled status line)
        good = failed("no service", _UNREACHABLE) if isinstance(exc, OSError) else failed("bad answer")
    if good:
        state["yes"] = True
        if problem:
            good = failed(problem)
        else:
            trouble = None
    node.showColour(modules, "off" if good else "red")
    return good


def arm(node):
    # The refresh's bound (_BOUND_S), as node.bound does for a wake; run() disarms it. Never raises.
    global guard
    try:
        import machine

        if guard is None:
            guard = machine.Timer(0 if node.port() == "esp32" else -1)
        guard.init(mode=machine.Timer.ONE_SHOT, period=_BOUND_S * 1000, callback=_overdue)
    except Exception as exc:
        node.log("timer:", repr(exc))


def disarm():
    try:
        guard.deinit()
    except Exception:  # None: no timer
        pass


def _overdue(timer):
    # A refresh stuck past _BOUND_S (a trickled answer): shown, then a reset starts the master again
    node, display, lines = on
    node.log("refresh took over", _BOUND_S, "s: the service trickles its answer; restarting")
    failed("no service", _UNREACHABLE)
    try:
        draw(display, lines, 0, 1)
    except Exception:
        pass
    _reset(node)


def header(page, pages):
    right = "%d/%d" % (page + 1, pages) if pages > 1 else ""
    if trouble is not None:
        left = trouble + " " + age(troubleMs)
    else:
        left = "%d node%s %s" % (total, "" if total == 1 else "s", "%d!" % attention if attention else "ok")
        if len(left) + len(right) >= 16:
            left = "%d %s" % (total, "%d!" % attention if attention else "ok")
    if len(left) + 1 + len(right) > 16:
        right = ""
    return left + " " * (16 - len(left) - len(right)) + right


def draw(display, lines, page, pages):
    # The screen: the header, then a page of nodes (or the lines of ``body``), shown at once.
    global lowest, drawn
    gc.collect()
    before = gc.mem_free()
    display.fill(0)
    text = header(page, pages)
    if trouble is not None:
        display.fill_rect(0, 0, 128, 8, 1)
        display.text(text, 0, 0, 0)
    else:
        display.text(text, 0, 0, 1)
    if body is not None and not shown:
        y = 8
        for line in body:
            if y >= lines * 8 + 8:
                break
            display.text(line, 0, y, 1)
            y += 8
    else:
        first = page * lines
        for i in range(min(lines, shown - first)):
            at = (first + i) * _ROW
            y = 8 + 8 * i
            text = bytes(rows[at + 1:at + _ROW]).decode()
            display.text(text, 0, y, 1)
            if rows[at] & _LOW:
                display.fill_rect(0, y, 8, 8, 1)
                display.text(text[0], 0, y, 0)
    free = gc.mem_free()
    if lowest is None or free < lowest:
        lowest = free
    drawn = max(drawn, before - free)
    display.show()


def redraw(node, display, settings, lines, page, pages):
    # draw(); a screen that stopped answering (OSError on I2C) is opened again: the display, or
    # None when it cannot be (run() then returns). The first drawing too: a failure never escapes.
    try:
        draw(display, lines, page, pages)
    except MemoryError:
        failed("no memory")
    except Exception as exc:
        node.log("screen failed:", repr(exc))
        return openScreen(node, settings)
    return display


def _reset(node):
    try:
        import machine

        machine.reset()
    except Exception as exc:
        node.log("reset failed:", repr(exc))
        node.goToSleep(1)


def _switched(node):
    # An update was taken (ota.json now names another bundle): True.
    try:
        with open("ota.json") as f:
            return json.load(f).get("active") != node._get(node.STATE, "active")
    except Exception:
        return False


def run(node, config):
    # The master's loop; returns (None: the loader then deep-sleeps) only when the screen cannot be
    # used. Never raises an Exception (a KeyboardInterrupt from mpremote still does).
    global troubleMs, body, trouble, on
    modules = config["modules"]
    node.showColour(modules, "off")
    settings = screenSettings(node, modules)
    display = openScreen(node, settings)
    if display is None:
        return None
    lines = settings[3] // 8 - 1
    pageMs = settings[6] * 1000
    onTrial = "trial" in (node.STATE or {})
    body = _HELLO
    state = {}
    page = 0
    due = 0  # ms until the next refresh
    last = time.ticks_ms()
    gc.collect()
    node.log("master: screen", settings[2], "x", settings[3], "- heap free", gc.mem_free())
    display = redraw(node, display, settings, lines, 0, 1)
    if display is None:
        return None
    while True:
        if due <= 0:
            on = (node, display, lines)
            try:
                good = refresh(node, config, state, lines)
            except MemoryError:
                good = failed("no memory")
            except Exception as exc:
                node.log("refresh failed:", repr(exc))
                good = failed("error")
            disarm()
            gc.collect()
            interval = node.sleepSeconds(config)
            due = (interval if good else min(interval, _RETRY_S)) * 1000
            node.log("refreshed:", "ok" if good else trouble, "- next in", due // 1000, "s; heap free", gc.mem_free(),
                     "lowest while drawing", lowest, "drawing took", drawn)
            if state.pop("yes", False) and onTrial:
                onTrial = False
                if "trial" in (node.STATE or {}):
                    try:
                        import ota

                        node.STATE = ota.confirm(node.STATE)
                    except Exception as exc:
                        node.log("confirm failed:", repr(exc))
            if _switched(node):
                node.log("an update was taken: restarting into it")
                _reset(node)
                return None
        pages = max(1, (shown + lines - 1) // lines) if (body is None or shown) else 1
        if page >= pages:
            page = 0
        display = redraw(node, display, settings, lines, page, pages)
        if display is None:
            return None
        if onTrial and trouble is not None and due > 0:
            # on trial, a refresh without the service's yes ends this boot (see the top)
            time.sleep_ms(due)
            node.log("on trial without the service's yes: restarting (a wake of the trial)")
            _reset(node)
            return None
        wait = max(0, min(pageMs, due))  # a refresh that took longer than the interval: due < 0
        time.sleep_ms(wait)
        now = time.ticks_ms()
        passed = time.ticks_diff(now, last)
        last = now
        due -= passed
        if trouble is not None:
            troubleMs += passed
        if wait == pageMs:
            page += 1
