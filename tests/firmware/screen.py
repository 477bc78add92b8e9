"""What the stand-in SSD1306 (standins/_oled.py) shows, on the host: :func:`read_panel` turns the
chip's registers and display RAM into the panel's pixels as a person in front of it sees them
(segment remap and COM scan direction, start line, display offset, inverse, display on/off, the
charge pump); :func:`read_text` reads the text back from those pixels, cell by cell of the 8x8
font, against the glyphs MicroPython's own ``framebuf`` draws (rendered once by the Unix port);
:func:`save_png` writes them as a PNG (pypng), upscaled with a dark gap between the pixels so
that it looks like the OLED.
"""
from __future__ import annotations

import functools
import subprocess
from dataclasses import dataclass
from pathlib import Path

from .board import micropython_binary

WIDTH = 128
CELL = 8  # framebuf's font: 8x8 pixels a character
UNKNOWN = "\ufffd"  # a cell that is no character of the font

# the register block of the chip's file (standins/_oled.py)
_ON, _MUX, _SEG, _COM, _START, _OFFSET, _INVERT, _ENTIRE, _PANEL, _PUMP = range(10)


@dataclass
class Panel:
    """The lit pixels of the panel, ``rows[y][x]`` (0 or 1), ``height`` rows of 128."""

    rows: list[list[int]]

    @property
    def height(self) -> int:
        return len(self.rows)

    def rotated(self) -> "Panel":
        """The panel turned by 180 degrees (as someone sees a board mounted upside down)."""
        return Panel([row[::-1] for row in self.rows[::-1]])

    def lit(self) -> int:
        return sum(map(sum, self.rows))


def read_panel(path: Path) -> Panel | None:
    """The panel of the chip whose state is in ``path`` (board.screen_path), None when the chip was
    never written."""
    try:
        raw = Path(path).read_bytes()
    except FileNotFoundError:
        return None
    if len(raw) != 16 + 1024:
        raise AssertionError(f"{path}: {len(raw)} bytes, not a stand-in SSD1306's 1040")
    reg, ram = raw[:16], raw[16:]
    height = reg[_PANEL]
    mux = reg[_MUX] + 1
    dark = not reg[_ON] or not reg[_PUMP]
    rows = []
    for y in range(height):
        # COM scan from COM[N-1] down to COM0 (0xC8, the driver's default) shows RAM row 0 at the
        # top; 0xC0 turns it upside down. Segment remap 0xA1 (the default) shows column 0 at the
        # left; 0xA0 mirrors it. Both at once: the picture turned by 180 degrees.
        com = y if reg[_COM] else mux - 1 - y
        row = []
        for x in range(WIDTH):
            if dark or com >= mux:
                row.append(0)
                continue
            line = (com + reg[_START] + reg[_OFFSET]) % 64
            col = x if reg[_SEG] else WIDTH - 1 - x
            bit = 1 if reg[_ENTIRE] else (ram[(line // 8) * WIDTH + col] >> (line % 8)) & 1
            row.append(bit ^ reg[_INVERT])
        rows.append(row)
    return Panel(rows)


@functools.lru_cache(maxsize=1)
def glyphs() -> dict[tuple[int, ...], str]:
    """Each printable ASCII character's 8x8 cell as MicroPython's framebuf draws it (the Unix
    port renders them): {64 pixels, row by row: character}."""
    script = (
        "import framebuf\n"
        "b = bytearray(8)\n"
        "f = framebuf.FrameBuffer(b, 8, 8, framebuf.MONO_VLSB)\n"
        "for c in range(32, 127):\n"
        "    f.fill(0)\n"
        "    f.text(chr(c), 0, 0, 1)\n"
        "    print(c, ' '.join(str(x) for x in b))\n"
    )
    out = subprocess.run([micropython_binary(), "-c", script], capture_output=True, text=True, check=True).stdout
    table: dict[tuple[int, ...], str] = {}
    for line in out.splitlines():
        code, *columns = map(int, line.split())
        cell = tuple((columns[x] >> y) & 1 for y in range(CELL) for x in range(CELL))
        table.setdefault(cell, chr(code))
    return table


@dataclass
class Text:
    """The text on a panel: ``lines[i]`` the i-th line of 16 characters; ``inverse[i]`` marks the
    characters drawn dark on a lit cell with ``#`` (else a space)."""

    lines: list[str]
    inverse: list[str]

    def __str__(self) -> str:
        return "\n".join(self.lines)


def read_text(panel: Panel) -> Text:
    """Read the panel as lines of 8x8 characters on the font's grid (UNKNOWN for a cell that is
    no character, drawn either way)."""
    table = glyphs()
    lines, inverse = [], []
    for top in range(0, panel.height - CELL + 1, CELL):
        chars, marks = [], []
        for left in range(0, WIDTH, CELL):
            cell = tuple(panel.rows[top + y][left + x] for y in range(CELL) for x in range(CELL))
            if cell in table:
                chars.append(table[cell])
                marks.append(" ")
            else:
                flipped = tuple(1 - p for p in cell)
                chars.append(table.get(flipped, UNKNOWN))
                marks.append("#" if flipped in table else " ")
        lines.append("".join(chars))
        inverse.append("".join(marks))
    return Text(lines, inverse)


def save_png(panel: Panel, path: Path, scale: int = 5) -> Path:
    """Write the panel as an RGB PNG, each pixel ``scale`` x ``scale`` (lit: the pale blue-white of
    an SSD1306; a one-pixel dark gap between pixels, as on the glass) inside a black border."""
    import png

    lit, off, gap = (215, 235, 255), (13, 16, 22), (3, 4, 6)
    border = 2 * scale
    width = WIDTH * scale + 2 * border
    rows = [[c for _ in range(width) for c in gap] for _ in range(border)]
    for y in range(panel.height):
        for sub in range(scale):
            row = [c for _ in range(border) for c in gap]
            for x in range(WIDTH):
                colour = lit if panel.rows[y][x] else off
                for dx in range(scale):
                    row.extend(gap if (sub == scale - 1 or dx == scale - 1) else colour)
            row.extend(c for _ in range(border) for c in gap)
            rows.append(row)
    rows.extend([c for _ in range(width) for c in gap] for _ in range(border))
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "wb") as f:
        png.Writer(width, len(rows), greyscale=False).write(f, rows)
    return path
