"""Stand-in for MicroPython's `network` on ESP boards (runs in the Unix port, for tests).

Only the SSIDs listed in the scenario's "ssids" exist; joining any other reports
STAT_NO_AP_FOUND at once, as the ESP8266 does after its scan. ``status("rssi")`` gives the joined
network's RSSI (``scenario["rssi"]``, dBm; -61 unless it says), as both ports do.

With ``scenario["wifi_down"]`` (a path), every network is out of reach while that file exists: a
joined station drops (``isconnected()`` False, status STAT_CONNECT_FAIL), and joining finds no
network, until the test removes the file (the master node, which stays awake, rejoins then).
"""
import os

from _scenario import ESP32, record, scenario

STA_IF = 0
AP_IF = 1
STAT_IDLE = 0
STAT_CONNECTING = 1
STAT_WRONG_PASSWORD = 2
STAT_NO_AP_FOUND = 3
STAT_CONNECT_FAIL = 4
STAT_GOT_IP = 5


def _reachable(ssid):
    down = scenario.get("wifi_down")
    if down:
        try:
            os.stat(down)
            return False
        except OSError:
            pass
    return ssid in scenario.get("ssids", [])


_state = {"ifconfig": ("0.0.0.0", "0.0.0.0", "0.0.0.0", "0.0.0.0")}


class WLAN:
    def __init__(self, interface):
        self.interface = interface
        self._status = STAT_IDLE
        # "saved": the network an ESP8266 rejoins by itself after a wake (connecting at first).
        if interface == STA_IF and scenario.get("saved"):
            self._status = STAT_CONNECTING
            self._saved = self._ssid = scenario["saved"]

    def active(self, on=None):
        if on is not None:
            record("active", interface="ap" if self.interface == AP_IF else "sta", on=bool(on))

    def ifconfig(self, config=None):
        if config is None:
            return _state["ifconfig"]
        _state["ifconfig"] = tuple(config)
        record("ifconfig", config=list(config))

    def connect(self, ssid, password=""):
        record("connect", ssid=ssid, password=password)
        self._ssid = ssid
        self._status = STAT_GOT_IP if _reachable(ssid) else STAT_NO_AP_FOUND

    def disconnect(self):
        self._status = STAT_IDLE

    def _lost(self):
        if self._status == STAT_GOT_IP and not _reachable(self._ssid):
            self._status = STAT_CONNECT_FAIL  # the access point went away

    def isconnected(self):
        self._lost()
        return self._status == STAT_GOT_IP

    def status(self, param=None):
        if param is not None:  # only "rssi" here: the joined network's, in dBm
            if param != "rssi":
                raise ValueError("unknown status param")
            self._lost()
            if self._status == STAT_GOT_IP:
                return scenario.get("rssi", -61)
            if ESP32:
                raise OSError("STA is not connected")  # esp_wifi_sta_get_ap_info fails
            return 31  # what the ESP8266 SDK says when it cannot tell
        if self._status == STAT_CONNECTING:  # the rejoin ends at the first look
            self._status = STAT_GOT_IP if _reachable(self._saved) else STAT_NO_AP_FOUND
            return STAT_CONNECTING
        self._lost()
        return self._status
