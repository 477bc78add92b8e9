"""Stand-in for MicroPython's `dht` driver (runs in the Unix port, for tests).

It returns values the way the real driver computes them from the sensor's bytes: DHT11
integers, DHT22 tenths multiplied by 0.1 (so 23.4 arrives as 23.400000000000002).
"""
from _scenario import record, scenario

_failures = [int(scenario.get("sensor_failures", 0))]


class DHTBase:
    def __init__(self, pin):
        self.pin = pin
        record("dht", sensor=type(self).__name__, pin=pin.pin)

    def measure(self):
        record("measure", sensor=type(self).__name__)
        if _failures[0] > 0:
            _failures[0] -= 1
            raise OSError(110)  # ETIMEDOUT, as the real driver raises when the sensor is silent


class DHT11(DHTBase):
    def temperature(self):
        return int(scenario.get("temperature", 20))

    def humidity(self):
        return int(scenario.get("humidity", 45))


class DHT22(DHTBase):
    def temperature(self):
        tenths = round(scenario.get("temperature", 20.0) * 10)
        return -(abs(tenths) * 0.1) if tenths < 0 else tenths * 0.1

    def humidity(self):
        return round(scenario.get("humidity", 45.0) * 10) * 0.1
