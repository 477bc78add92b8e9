"""Stand-in SSD1306 OLED controller on the stand-in I2C bus (machine.I2C / machine.SoftI2C; runs
in the MicroPython Unix port, for tests).

The scenario's ``"oled"`` says what is wired to the bus: ``{"address": 60, "height": 64, "sda": 4,
"scl": 5}`` (a 128x``height`` panel; sda/scl default to the board's usual I2C pins: 4/5 on an
ESP8266, 21/22 on an ESP32). Without it nothing answers on I2C: ``scan()`` is ``[]`` and a write
raises OSError(19) (ENODEV), as the ports do when no device acknowledges its address.

The chip decodes what the real driver (micropython-lib's ssd1306.py) sends, as the datasheet says:
each I2C write starts with a control byte (Co, D/C#): Co=1 carries one byte and another control
byte follows, Co=0 makes the rest of the write all commands (D/C#=0) or all display data
(D/C#=1). Commands: memory addressing mode (0x20: horizontal, vertical, page), column and page
address (0x21, 0x22: the window data fills and wraps in), the page-mode addresses (0x00-0x1F,
0xB0-0xB7), display on/off (0xAE/0xAF), segment remap (0xA0/0xA1) and COM scan direction
(0xC0/0xC8), which rotate the picture, start line (0x40-0x7F), display offset (0xD3), multiplex
ratio (0xA8), normal/inverse (0xA6/0xA7), entire display on (0xA4/0xA5), the charge pump (0x8D:
without it a panel on internal VCC stays dark), and the timing commands, whose arguments are
taken and ignored. The display RAM is the chip's 128 x 64 bits (8 pages of 128 column bytes,
bit 0 the top row of a page) whatever the panel.

After each write the chip's state goes to the file ``scenario["oled_ram"]`` (written beside it and
renamed, so a reader never sees half of it): 16 bytes of registers, then the 1024 bytes of RAM
(tests/firmware/screen.py reads it, renders the panel as a person sees it and reads its text).
The file outlives a boot, as the panel keeps its picture while the ESP sleeps: the chip starts from
it when it is there.
"""
import os

from _scenario import ESP32, record, scenario

_PATH = scenario.get("oled_ram")
# the scenario's ``"oled"`` may say ``"fail_data_writes": [2]``: the 2nd write of display data (a
# driver's show(): control byte 0x40, then the frame buffer) raises OSError(5), EIO, as a loose wire does
_data_writes = [0]
# command: number of argument bytes that follow it
_ARGS = {0x20: 1, 0x21: 2, 0x22: 2, 0x26: 6, 0x27: 6, 0x29: 5, 0x2A: 5, 0x81: 1, 0x8D: 1, 0xA3: 2, 0xA8: 1,
         0xAD: 1, 0xD3: 1, 0xD5: 1, 0xD6: 1, 0xD9: 1, 0xDA: 1, 0xDB: 1}

# the register bytes of the file, in this order (tests/firmware/screen.py reads them by these offsets)
_ON, _MUX, _SEG, _COM, _START, _OFFSET, _INVERT, _ENTIRE, _PANEL, _PUMP, _MODE, _CONTRAST = range(12)


class SSD1306:
    def __init__(self, height):
        self.ram = bytearray(1024)
        self.reg = bytearray(16)
        self.reg[15] = 1  # the file's format
        self.reg[_MUX] = 63
        self.reg[_PANEL] = height
        self.reg[_MODE] = 2  # page addressing after a reset
        self.reg[_CONTRAST] = 0x7F
        self.col = self.page = 0
        self.cols = [0, 127]
        self.pages = [0, 7]
        self.cmd = bytearray(7)
        self.got = 0  # bytes of the command being collected
        self.want = 0
        if _PATH:
            try:
                with open(_PATH, "rb") as f:
                    saved = f.read()
                if len(saved) == 1040:
                    self.reg[:] = saved[:16]
                    self.ram[:] = saved[16:]
                    self.reg[_PANEL] = height
            except OSError:
                pass

    # one I2C write: buffers of the bytes after the address
    def write(self, buffers):
        stream = -1  # -1: a control byte comes next; 0/1: the rest is commands/data; 2/3: one byte
        for buf in buffers:
            for b in buf:
                if stream == -1:
                    dc = 1 if b & 0x40 else 0
                    stream = dc + 2 if b & 0x80 else dc
                elif stream >= 2:
                    self._byte(stream - 2, b)
                    stream = -1
                else:
                    self._byte(stream, b)
        self.save()

    def _byte(self, data, b):
        if data:
            self._data(b)
        elif self.want:
            self.cmd[self.got] = b
            self.got += 1
            if self.got > self.want:
                self._command(self.cmd)
                self.want = self.got = 0
        elif b in _ARGS:
            self.cmd[0] = b
            self.got = 1
            self.want = _ARGS[b]
        else:
            self.cmd[0] = b
            self._command(self.cmd)

    def _data(self, b):
        self.ram[self.page * 128 + self.col] = b
        mode = self.reg[_MODE]
        if mode == 0:  # horizontal: along the columns of the window, then the next page
            self.col += 1
            if self.col > self.cols[1]:
                self.col = self.cols[0]
                self.page = self.pages[0] if self.page >= self.pages[1] else self.page + 1
        elif mode == 1:  # vertical: down the pages of the window, then the next column
            self.page += 1
            if self.page > self.pages[1]:
                self.page = self.pages[0]
                self.col = self.cols[0] if self.col >= self.cols[1] else self.col + 1
        else:  # page addressing: along the page, back to its start
            self.col = (self.col + 1) & 0x7F

    def _command(self, cmd):
        c = cmd[0]
        reg = self.reg
        if c < 0x10:
            self.col = (self.col & 0xF0) | c
        elif c < 0x20:
            self.col = (self.col & 0x0F) | ((c & 0x07) << 4)
        elif c == 0x20:
            reg[_MODE] = cmd[1] & 3 if cmd[1] & 3 != 3 else reg[_MODE]
        elif c == 0x21:
            self.cols = [cmd[1] & 0x7F, cmd[2] & 0x7F]
            self.col = self.cols[0]
        elif c == 0x22:
            self.pages = [cmd[1] & 7, cmd[2] & 7]
            self.page = self.pages[0]
        elif 0x40 <= c < 0x80:
            reg[_START] = c & 0x3F
        elif c == 0x81:
            reg[_CONTRAST] = cmd[1]
        elif c == 0x8D:
            reg[_PUMP] = 1 if cmd[1] & 0x04 else 0
        elif c in (0xA0, 0xA1):
            reg[_SEG] = c & 1
        elif c in (0xA4, 0xA5):
            reg[_ENTIRE] = c & 1
        elif c in (0xA6, 0xA7):
            reg[_INVERT] = c & 1
        elif c == 0xA8:
            if cmd[1] & 0x3F >= 15:
                reg[_MUX] = cmd[1] & 0x3F
        elif c in (0xAE, 0xAF):
            reg[_ON] = c & 1
        elif 0xB0 <= c <= 0xB7:
            self.page = c & 7
        elif c in (0xC0, 0xC8):
            reg[_COM] = 1 if c & 0x08 else 0
        elif c == 0xD3:
            reg[_OFFSET] = cmd[1] & 0x3F
        # everything else (timing, pins, scrolling, IREF) changes nothing this stand-in shows

    def save(self):
        if not _PATH:
            return
        with open(_PATH + ".tmp", "wb") as f:
            f.write(self.reg)
            f.write(self.ram)
        os.rename(_PATH + ".tmp", _PATH)


_wired = scenario.get("oled")
_chip = []  # the one chip of this board, made on first use (its RAM lives as long as its power)


def chip(sda, scl, addr):
    """The SSD1306 at ``addr`` on the bus of pins ``sda``/``scl``, or None."""
    if not isinstance(_wired, dict):
        return None
    if (sda, scl) != (_wired.get("sda", 21 if ESP32 else 4), _wired.get("scl", 22 if ESP32 else 5)):
        return None
    if addr != _wired.get("address", 60):
        return None
    if not _chip:
        _chip.append(SSD1306(_wired.get("height", 64)))
    return _chip[0]


class SoftI2C:
    """machine.SoftI2C(scl, sda, *, freq=400000, timeout=50000), as on both ESP ports."""

    def __init__(self, scl, sda, *, freq=400000, timeout=50000):
        self.scl = scl.pin
        self.sda = sda.pin
        record("i2c", scl=self.scl, sda=self.sda, freq=freq)

    def scan(self):
        found = [a for a in range(0x08, 0x78) if chip(self.sda, self.scl, a) is not None]
        record("i2c_scan", found=found)
        return found

    def writeto(self, addr, buf, stop=True):
        return self.writevto(addr, (buf,), stop)

    def writevto(self, addr, vector, stop=True):
        target = chip(self.sda, self.scl, addr)
        if target is None:
            raise OSError(19)  # ENODEV: nothing acknowledged the address
        if vector and len(vector[0]) and vector[0][0] == 0x40:
            _data_writes[0] += 1
            if _data_writes[0] in _wired.get("fail_data_writes", ()):
                record("i2c_failed", write=_data_writes[0])
                raise OSError(5)  # EIO: the write was not acknowledged
        target.write(vector)
        return sum(len(b) for b in vector) + 1  # the acknowledgements: the address and each byte


class I2C(SoftI2C):
    """machine.I2C: on the ESP32 hardware I2C ``I2C(0 or 1, scl=, sda=)``; on the ESP8266 the
    same bit-banged bus as SoftI2C (``I2C(scl=, sda=)``, id -1 or none)."""

    def __init__(self, id=-1, *, scl=None, sda=None, freq=400000, timeout=50000):
        if ESP32 and id not in (0, 1):
            raise ValueError("I2C(%s) doesn't exist" % id)
        if not ESP32 and id != -1:
            raise ValueError("I2C(%s) doesn't exist" % id)
        if scl is None or sda is None:
            raise TypeError("scl and sda are needed")
        super().__init__(scl, sda, freq=freq, timeout=timeout)
