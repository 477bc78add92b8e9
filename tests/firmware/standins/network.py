"""Stand-in for MicroPython's `network` on ESP boards (runs in the Unix port, for tests).

Only the SSIDs listed in the scenario's "ssids" exist; joining any other reports
STAT_NO_AP_FOUND at once, as the ESP8266 does after its scan. ``status("rssi")`` gives the joined
network's RSSI (``scenario["rssi"]``, dBm; -61 unless it says), as both ports do.
"""
from _scenario import ESP32, record, scenario

STA_IF = 0
AP_IF = 1
STAT_IDLE = 0
STAT_CONNECTING = 1
STAT_WRONG_PASSWORD = 2
STAT_NO_AP_FOUND = 3
STAT_CONNECT_FAIL = 4
STAT_GOT_IP = 5

_state = {"ifconfig": ("0.0.0.0", "0.0.0.0", "0.0.0.0", "0.0.0.0")}


class WLAN:
    def __init__(self, interface):
        self.interface = interface
        self._status = STAT_IDLE
        # "saved": the network an ESP8266 rejoins by itself after a wake (connecting at first).
        if interface == STA_IF and scenario.get("saved"):
            self._status = STAT_CONNECTING
            self._saved = scenario["saved"]

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
        self._status = STAT_GOT_IP if ssid in scenario.get("ssids", []) else STAT_NO_AP_FOUND

    def disconnect(self):
        self._status = STAT_IDLE

    def isconnected(self):
        return self._status == STAT_GOT_IP

    def status(self, param=None):
        if param is not None:  # only "rssi" here: the joined network's, in dBm
            if param != "rssi":
                raise ValueError("unknown status param")
            if self._status == STAT_GOT_IP:
                return scenario.get("rssi", -61)
            if ESP32:
                raise OSError("STA is not connected")  # esp_wifi_sta_get_ap_info fails
            return 31  # what the ESP8266 SDK says when it cannot tell
        if self._status == STAT_CONNECTING:  # the rejoin ends at the first look
            self._status = STAT_GOT_IP if self._saved in scenario.get("ssids", []) else STAT_NO_AP_FOUND
            return STAT_CONNECTING
        return self._status
