# tswarm node: what a wake knows beyond its reading (battery, signal, how long the last wake took)
# and the readings kept in RTC memory through outages (docs/flashing.md, "Telemetry" and "Readings
# kept through outages"). Part of the bundle, beside node.py, which imports this in every wake that
# has a reading (a module of its own because MicroPython holds a module's whole parse tree while it
# compiles it: two halves need about half the heap of one whole; an ESP8266 has about 30 KB).
#
# Every reading carries ``boot`` (6 random bytes as 12 hex digits, made when RTC memory holds
# nothing of ours: after a power loss) and ``seq`` (one more per reading of that boot). A reading
# that cannot be delivered (no Wi-Fi, the service down, a 5xx, a timeout) stays in RTC memory,
# which survives deep sleep but not a power loss (flash is never used: it wears out), and is sent
# on the next wake that works, oldest first, with its ``age``; a full RTC memory drops the oldest,
# counted in ``lost``. A reading leaves RTC memory only after its 202/423: one whose answer was lost
# goes again with the same boot and seq, and the service stores it once.
#
# Stdlib-only MicroPython; imports on CPython too. Comments, not docstrings (see node.py).
try:
    from micropython import const
except ImportError:  # CPython
    def const(value):
        return value

import struct
import time

_ACCEPTED = const(202)
_HALTED = const(423)
_REFUSED = (400, 413, 422)  # the service will never take this reading: it gives way to the next
SEND_MAX = const(8)  # readings sent in one wake at most, the kept ones first; the rest wait
SEND_MS = const(20000)  # no further reading starts once sending took this long
_NONE = 0xFFFFFFFF  # awake ms not known (the first wake after a power loss)
_MAX_AGE_MS = 2592000000  # 30 days: an older kept reading is dropped (counted in lost)
_MAX_AWAKE_MS = const(3600000)  # the most awake_ms the service takes (docs/protocol.md): a longer wake says this
_ESP8266_BYTES = const(492)  # RTC user memory of the ports (a ValueError beyond)
_ESP32_BYTES = const(2048)
# RTC memory: b"ts1", a check byte (the sum of the rest), _HEAD, then one _REC per kept reading,
# oldest first (their seqs run up to the next seq - 1).
_FORMAT = b"ts1"
_HEAD = "<6sIIII"  # boot, next seq, clock (ms), awake ms of the previous wake, lost
_REC = "<IhHHbI"  # clock when taken, temperature and humidity in tenths (humidity + 0x8000: the
# sensor gives decimals, a DHT22), battery mV (0: none), rssi (1: none), awake ms of the wake before.
# A value beyond its field (a garbled DHT22 humidity of 3276.8 or more, a temperature beyond
# +-3276.7) is kept as the field's extreme, not wrapped round into a plausible one: the service
# refuses it (422, impossible) and it gives way to the next (tenths).
_T_LOW = const(-32767)  # temperature: int16 tenths; humidity: 15 bits, 0.._T_HIGH
_T_HIGH = const(32767)
_HEAD_SIZE = const(26)
_REC_SIZE = const(15)
_RSSI_AT = const(10)

KEPT = None  # the Kept of this wake (load)


def log(*args):
    print("tswarm:", *args)


def load(esp8266, t0):
    # The Kept of this wake (RTC memory read on the first call); ``t0``: ticks_ms when it began.
    global KEPT
    if KEPT is None:
        KEPT = Kept(esp8266, t0)
    return KEPT


def batteryVolts(modules, esp8266):
    # The supply or battery voltage, in volts, that ``modules.battery`` says how to measure, or
    # None (not configured, or no plausible value: 0 < v <= 20). The mean of four samples:
    #   {"adc": "vcc"}                         ESP8266: its own supply, ADC(1); only on firmware
    #                                          whose init data is set for it (else it reads 65535)
    #   {"adc": 0, "ratio": 4.2}               ESP8266: A0 (0-1.0 V at the chip) behind a divider
    #   {"adc": 35, "ratio": 2.0, "atten": 3}  ESP32: an ADC pin, attenuation 0-3 (3: 11 dB, default)
    battery = modules.get("battery") if isinstance(modules, dict) else None
    if not isinstance(battery, dict):
        return None
    try:
        import machine

        adc = battery.get("adc")
        ratio = float(battery.get("ratio", 1))
        total = 0
        if esp8266:
            channel = machine.ADC(1 if adc == "vcc" else adc)
            for _ in range(4):
                total += channel.read()
            if total >= 4 * 65535:
                log("battery: ADC(1) reads no VCC on this firmware")
                return None
            volts = total / 4096 * (1 if adc == "vcc" else ratio)
        else:
            channel = machine.ADC(machine.Pin(adc))
            atten = battery.get("atten", 3)
            channel.atten(atten)
            for _ in range(4):
                try:
                    total += channel.read_uv()
                except AttributeError:  # MicroPython before 1.19: 12 bits of the nominal range
                    total += channel.read() * (1000, 1340, 2000, 3600)[atten] * 1000 // 4095
            volts = total / 4000000 * ratio
        if 0 < volts <= 20:
            return volts
        log("battery:", volts, "V is no voltage")
    except Exception as exc:  # a wrong pin or ratio in config.json: the reading still goes
        log("battery:", repr(exc))
    return None


def signal(sta):
    # RSSI of the joined network in dBm, or None (the ESP8266 says 31 when it cannot tell).
    try:
        rssi = sta.status("rssi")
        if isinstance(rssi, int) and -127 <= rssi <= 0:
            return rssi
    except Exception as exc:
        log("rssi:", repr(exc))
    return None


class Kept:
    # What RTC memory keeps across deep sleep. There is no wall clock across deep sleep (not on an
    # ESP8266), so the clock is virtual: each wake adds its own length and the sleep it then plans
    # (node.clockOn, which knows where _HEAD keeps the clock and awake ms). A reading is stamped
    # with the clock at the start of its wake; its age is the clock now less that.
    def __init__(self, esp8266, t0):
        self.t0 = t0
        self.size = _ESP8266_BYTES if esp8266 else _ESP32_BYTES
        self.fresh = 0  # the readings of this wake, last in records (sent without an age)
        self.rtc = None
        data = b""
        try:
            import machine

            self.rtc = machine.RTC()
            data = self.rtc.memory()
        except Exception as exc:  # a port without RTC memory: nothing outlives a sleep
            log("no RTC memory:", repr(exc))
        n = len(data) - _HEAD_SIZE
        if n >= 0 and n % _REC_SIZE == 0 and data[:3] == _FORMAT and data[3] == sum(data[4:]) & 0xFF:
            self.boot, self.seq, self.clock, self.awake, self.lost = struct.unpack_from(_HEAD, data, 4)
            self.records = [data[i:i + _REC_SIZE] for i in range(_HEAD_SIZE, len(data), _REC_SIZE)]
            return
        try:  # nothing of ours (a power loss, or never used): a new boot identity
            import os

            self.boot = os.urandom(6)
        except Exception:
            import random

            self.boot = bytes([random.getrandbits(8) for _ in range(6)])
        self.seq = self.clock = self.lost = 0
        self.awake = _NONE
        self.records = []
        log("new boot", self.bootId())

    def bootId(self):
        return "%02x%02x%02x%02x%02x%02x" % tuple(self.boot)

    def elapsed(self):
        # ms since this wake began
        return time.ticks_diff(time.ticks_ms(), self.t0)

    def save(self):
        if self.rtc is None:
            return
        body = struct.pack(_HEAD, self.boot, self.seq, self.clock, self.awake, self.lost) + b"".join(self.records)
        try:
            self.rtc.memory(_FORMAT + bytes([sum(body) & 0xFF]) + body)
        except ValueError:  # "buffer too long": a build with less RTC memory than its port's
            if self.size > _ESP8266_BYTES:
                self.size = _ESP8266_BYTES
                self.drop()
                self.save()
        except Exception as exc:
            log("RTC memory:", repr(exc))

    def drop(self):
        # the oldest readings give way until the rest fit, each counted in lost
        while self.records and _HEAD_SIZE + len(self.records) * _REC_SIZE > self.size:
            self.pop()
            self.lost = min(self.lost + 1, 1000000)

    def pop(self):
        self.records.pop(0)
        self.fresh = min(self.fresh, len(self.records))

    def add(self, reading, vbat):
        # Keep this wake's reading, in RTC memory at once (a crash later does not lose it).
        t, h = reading
        decimals = 0 if isinstance(t, int) and isinstance(h, int) else 0x8000
        mv = min(int(vbat * 1000 + 0.5), 65535) if vbat else 0
        self.records.append(struct.pack(_REC, self.clock, _tenths(t, _T_LOW), _tenths(h, 0) | decimals, mv, 1, self.awake))
        self.seq += 1
        self.fresh += 1
        self.drop()
        self.save()

    def heard(self, rssi):
        # the RSSI of the network this wake joined, for this wake's reading
        if self.fresh and rssi is not None:
            last = self.records[-1]
            self.records[-1] = last[:_RSSI_AT] + bytes([rssi & 0xFF]) + last[_RSSI_AT + 1:]
            self.save()

    def oldest(self):
        # (temperature, humidity, more) of the oldest kept reading, ``more`` the body's other
        # fields (', "key": value'); None when it is too old to send (then dropped, counted in lost).
        taken, t, h, mv, rssi, awake = struct.unpack(_REC, self.records[0])
        age = (self.clock + self.elapsed() - taken) & 0xFFFFFFFF
        if age > _MAX_AGE_MS:
            self.pop()
            self.lost = min(self.lost + 1, 1000000)
            return None
        more = [', "boot": "%s", "seq": %d' % (self.bootId(), self.seq - len(self.records))]
        if mv:
            more.append(', "vbat": %d.%03d' % (mv // 1000, mv % 1000))
        if rssi <= 0:
            more.append(', "rssi": %d' % rssi)
        if awake != _NONE:  # a halted wake may have lasted a day
            more.append(', "awake_ms": %d' % min(awake, _MAX_AWAKE_MS))
        if len(self.records) > self.fresh:
            more.append(', "age": %d.%03d' % (age // 1000, age % 1000))
        if self.lost:
            more.append(', "lost": %d' % self.lost)
        if h & 0x8000:
            return t / 10, (h & 0x7FFF) / 10, "".join(more)
        return t // 10, h // 10, "".join(more)

    def sent(self, status):
        # The oldest reading was answered ``status``: 202/423 (stored) or _REFUSED (never will be).
        self.pop()
        if status in (_ACCEPTED, _HALTED):
            self.lost = 0
        self.save()


def _tenths(value, low):
    # ``value`` in tenths for its field of _REC, ``low``.._T_HIGH; beyond it the nearer extreme, and
    # a negative humidity the high one (0 %RH would be plausible): values no sensor can mean.
    tenths = round(value * 10)
    return tenths if low <= tenths <= _T_HIGH else (_T_LOW if low and tenths < low else _T_HIGH)


def deliver(kept, login, upload, payload):
    # Send the readings ``kept`` holds, oldest first (this wake's last), each with
    # ``upload(body) -> (status, url)``, each removed once its 202/423 came (or a refusal for good),
    # until one cannot be delivered (it stays for the next wake), SEND_MAX went or SEND_MS passed.
    # (status, url): the last status (423 if any said so; None when nothing answered) and the URL
    # of the first 202/423 (None without one).
    status = halted = url = None
    start = time.ticks_ms()
    for _ in range(SEND_MAX):
        if not kept.records or time.ticks_diff(time.ticks_ms(), start) > SEND_MS:
            break
        fields = kept.oldest()
        if fields is None:
            log("a kept reading older than 30 days gave way")
            continue
        try:
            status, where = upload(payload(login, fields[0], fields[1], fields[2]))
        except Exception as exc:
            log("cannot send:", repr(exc))
            break
        if status not in (_ACCEPTED, _HALTED) and status not in _REFUSED:
            break
        kept.sent(status)
        if status in (_ACCEPTED, _HALTED):
            url = url or where
            halted = halted or status == _HALTED
    if len(kept.records):
        log(len(kept.records), "reading(s) kept for the next wake")
    return (_HALTED if halted else status), url
