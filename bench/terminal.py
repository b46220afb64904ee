"""The terminal under a flood: `zchat join` in a pty while the room gets LINES_PER_SECOND
formatted lines, and a person types. Is every key kept, and how long does a key take
to show at the prompt?

    python bench/terminal.py [--seconds S] [--rate N]

One spawned broker (``--db :memory: --rate 0``), one `zchat join` in a pty of 100 x 24
(colours on, as in a terminal), one client sending lines with markup (bold, code, a
mention of someone else) at the rate asked, and keys typed one at a time, each waited
for on the screen before the next. At the end the typed line is sent and must arrive
whole. Loopback only; bounded in time.
"""

from __future__ import annotations

import argparse
import contextlib
import functools
import os
import shutil
import statistics
import sys
import tempfile
import threading
import time
from collections.abc import Callable
from pathlib import Path

import pexpect
import pyte

sys.path.insert(0, str(Path(__file__).resolve().parent))
from systems import Zchat

from zchat.client.sync import Client

COLS, ROWS = 100, 24
TYPED = "the quick brown fox jumps over the lazy dog"
KEY_DEADLINE = 5.0  # seconds a key may take to show before it counts as lost


def flood(port: int, rate: float, stop: threading.Event, sent: list[int]) -> None:
    with Client("flooder", port=port, history=0) as client:
        period, due, n = 1.0 / rate, time.monotonic(), 0
        while not stop.is_set():
            client.send(f"**line {n}** with `code` for @carol and _more_ text")
            n += 1
            due += period
            while (left := due - time.monotonic()) > 0:  # paces, and reads the echoes
                client.receive(timeout=left)
        sent.append(n)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--seconds", type=float, default=5.0, help="how long the flood lasts")
    parser.add_argument("--rate", type=float, default=1000.0, help="lines a second")
    args = parser.parse_args()
    broker = Zchat()
    broker.start()
    try:
        run(broker.port, args.seconds, args.rate)
    finally:
        broker.stop()


class Pty:
    """`zchat join` in a pty, its output fed to a screen."""

    def __init__(self, port: int, data: str) -> None:
        argv = [sys.executable, "-m", "zchat", "join", "--name", "typist", "--port", str(port)]
        env = {"TERM": "xterm-256color", "XDG_DATA_HOME": data, "PATH": os.environ["PATH"]}
        self.child = pexpect.spawn(argv[0], argv[1:], dimensions=(ROWS, COLS), env=env)
        self.screen = pyte.Screen(COLS, ROWS)
        self.stream = pyte.ByteStream(self.screen)

    def pump(self, until: float) -> None:
        with contextlib.suppress(pexpect.TIMEOUT):
            left = max(0.0, until - time.monotonic())
            self.stream.feed(self.child.read_nonblocking(1 << 16, timeout=left))

    def before_cursor(self) -> str:
        cursor = self.screen.cursor
        return self.screen.display[cursor.y][: cursor.x]

    def shows(self, typed: str) -> bool:
        """Is ``typed`` what is just before the cursor?"""
        return self.before_cursor().endswith(typed)

    def wait(self, holds: Callable[[], bool], seconds: float) -> bool:
        until = time.monotonic() + seconds
        while not holds() and time.monotonic() < until:
            self.pump(until)
        return holds()


def run(port: int, seconds: float, rate: float) -> None:
    data = tempfile.mkdtemp(prefix="zchat-bench-terminal-")  # its sent lines go here
    term = Pty(port, data)
    if not term.wait(lambda: term.before_cursor() == "#general> ", 10):
        raise SystemExit("zchat join did not show its prompt")
    stop, sent = threading.Event(), list[int]()
    flooder = threading.Thread(target=flood, args=(port, rate, stop, sent))
    flooder.start()
    started = time.monotonic()
    delays, lost, typed = [], 0, ""
    for key in TYPED:
        if time.monotonic() - started > seconds:
            break
        term.child.send(key)
        typed += key
        sent_at = time.monotonic()
        if term.wait(functools.partial(term.shows, typed), KEY_DEADLINE):
            delays.append(time.monotonic() - sent_at)
        else:
            lost += 1
        term.wait(lambda: False, sent_at + 0.2 - time.monotonic())  # ~5 keys a second
    stop.set()
    flooder.join()
    took = time.monotonic() - started
    term.child.send("\r")  # the line typed, sent: it must come back whole
    mine = f"typist: {typed}".rstrip()
    if not term.wait(lambda: any(r.rstrip().endswith(mine) for r in term.screen.display), 10):
        raise SystemExit(f"the line typed did not come back whole: {mine!r}")
    term.child.send("/quit\r")
    term.child.expect(pexpect.EOF, timeout=30)
    shutil.rmtree(data, ignore_errors=True)
    delays.sort()
    nan = float("nan")
    p50 = statistics.median(delays) * 1000 if delays else nan
    p99 = delays[int(0.99 * (len(delays) - 1))] * 1000 if delays else nan
    print(
        f"{sent[0] if sent else 0:,} lines in {took:.1f} s ({rate:g} asked a second); "
        f"{len(typed)} keys typed, {lost} not shown within {KEY_DEADLINE:g} s; "
        f"a key shown after: p50 {p50:.1f} ms, p99 {p99:.1f} ms, "
        f"max {delays[-1] * 1000 if delays else nan:.1f} ms"
    )


if __name__ == "__main__":
    main()
