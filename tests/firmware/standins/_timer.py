"""The stand-in ``machine.Timer`` (machine.py says how it behaves), in a module of its own: imported
only when the firmware makes a timer, so that a wake's heap holds no more of the stand-in than that."""
from _scenario import ESP32, check_int, record, scenario


class Timer:
    ONE_SHOT = 0
    PERIODIC = 1

    def __init__(self, id):
        check_int(id)
        if id not in ((-1, 0, 1, 2, 3) if ESP32 else (-1,)):
            raise ValueError("invalid Timer number")
        self.id = id
        self._armed = 0  # which init() is armed; 0: none (a thread whose init() is not armed ends)

    def init(self, *, mode=PERIODIC, period=-1, callback=None, freq=-1, tick_hz=1000):
        check_int(mode)
        check_int(period)
        self.deinit(record_it=False)
        record("timer", id=self.id, mode="one_shot" if mode == Timer.ONE_SHOT else "periodic", period=period)
        _serial[0] += 1
        self._armed = armed = _serial[0]
        import _thread

        _thread.start_new_thread(self._run, (armed, mode, period, callback))

    def deinit(self, record_it=True):
        if record_it:
            record("timer_deinit", id=self.id)
        self._armed = 0

    def _run(self, armed, mode, period, callback):
        import time

        wait_ms = max(1, int(period * scenario.get("timer_scale", 1)))
        while True:
            start = time.ticks_ms()
            while time.ticks_diff(time.ticks_ms(), start) < wait_ms:
                if self._armed != armed:
                    return
                time.sleep_ms(min(20, wait_ms))
            if self._armed != armed:
                return
            if mode == Timer.ONE_SHOT:
                self._armed = 0
            record("timer_fired", id=self.id)
            if callback is not None:
                try:
                    callback(self)
                except Exception as exc:  # what the ports print for a scheduled callback that raised
                    print("Unhandled exception in callback handler:", repr(exc))
            if mode == Timer.ONE_SHOT:
                return


_serial = [0]
