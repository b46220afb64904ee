"""`zchat join` in a real pty, its output fed to a terminal emulator (pyte): the screen
a person would see, and the raw bytes (for what a screen does not keep, as the bell)."""

from __future__ import annotations

import re
import time
from collections.abc import Callable, Iterator
from typing import Any

import pexpect
import pyte
import pytest

from support import child_env, zchat_command

ROWS, COLS = 24, 100
PROMPT = "#general> "
STAMP = r"\[\d\d:\d\d:\d\d\] "
WAIT = 10.0


class _Screen(pyte.Screen):  # type: ignore[misc]
    """A pyte screen that answers the terminal's queries (cursor position) to the child,
    as a real terminal would."""

    def __init__(self, reply: Callable[[str], None]) -> None:
        super().__init__(COLS, ROWS)
        self._reply = reply

    def write_process_input(self, data: str) -> None:
        self._reply(data)


class Terminal:
    """`zchat join` in a pty of ROWS x COLS, everything it writes fed to a screen."""

    def __init__(self, name: str, port: int, *args: str, **env: str) -> None:
        argv = zchat_command("join", "--name", name, "--port", str(port), *args)
        self.child = pexpect.spawn(
            argv[0],
            argv[1:],
            env=child_env(TERM="xterm", LINES=str(ROWS), **env),
            dimensions=(ROWS, COLS),
            timeout=WAIT,
        )
        self.screen = _Screen(self._answer)
        self.stream = pyte.ByteStream(self.screen)
        self.raw = bytearray()  # all it wrote
        self.eof = False

    def _answer(self, data: str) -> None:
        if not self.eof and self.child.isalive():
            self.child.send(data.encode())

    # --- what is on the screen ------------------------------------------------------------

    @property
    def lines(self) -> list[str]:
        return [line.rstrip() for line in self.screen.display]

    @property
    def cursor_line(self) -> str:
        return self.lines[self.screen.cursor.y]

    def row_of(self, pattern: str) -> int | None:
        """The last row whose text matches ``pattern`` (a regex search), if any."""
        regex = re.compile(pattern)
        rows = [y for y, line in enumerate(self.lines) if regex.search(line)]
        return rows[-1] if rows else None

    def dump(self) -> str:
        cursor = self.screen.cursor
        body = "\n".join(f"{y:2} |{line}" for y, line in enumerate(self.lines))
        return f"cursor at row {cursor.y}, column {cursor.x}; eof={self.eof}\n{body}"

    # --- waiting -------------------------------------------------------------------------------

    def _pump(self, timeout: float) -> None:
        """Feed whatever the child writes within ``timeout`` seconds to the screen."""
        try:
            data = self.child.read_nonblocking(4096, timeout=timeout)
        except pexpect.TIMEOUT:
            return
        except pexpect.EOF:
            self.eof = True
            return
        self.raw += data
        self.stream.feed(data)

    def wait_for(
        self, predicate: Callable[[Terminal], bool], what: str, timeout: float = WAIT
    ) -> None:
        """Read output until ``predicate(self)`` holds; fail with the screen otherwise."""
        end = time.monotonic() + timeout
        while not predicate(self):
            left = end - time.monotonic()
            if left <= 0 or self.eof:
                raise AssertionError(
                    f"screen never showed {what} within {timeout} s:\n{self.dump()}"
                )
            self._pump(min(left, 0.1))

    def wait_prompt(self, typed: str = "") -> None:
        """The prompt with ``typed`` after it, on the cursor's row, cursor at its end."""
        expected = PROMPT + typed

        def ready(term: Terminal) -> bool:
            return term.cursor_line == expected.rstrip() and term.screen.cursor.x == len(expected)

        self.wait_for(ready, f"the prompt {expected!r} with the cursor at its end")

    def wait_exit(self, timeout: float = WAIT) -> int:
        """Read until the child closes the pty; its exit status."""
        self.wait_for(lambda term: term.eof, "the end of the program", timeout)
        status = self.child.wait()
        self.child.close()
        assert self.child.signalstatus is None, f"killed by signal {self.child.signalstatus}"
        assert isinstance(status, int)
        return status

    def type(self, keys: str) -> None:
        self.child.send(keys.encode())

    def stop(self) -> None:
        if self.child.isalive():
            self.child.terminate(force=True)
        self.child.close(force=True)


@pytest.fixture
def spawn(broker: Any) -> Iterator[Callable[..., Terminal]]:
    """spawn("Alice", *args, **env) -> `zchat join` in a pty, joined, showing its prompt;
    all stopped after the test."""
    started: list[Terminal] = []

    def start(name: str, *args: str, **env: str) -> Terminal:
        term = Terminal(name, broker.port, *args, **env)
        started.append(term)
        term.wait_prompt()
        return term

    yield start
    for term in started:
        term.stop()
