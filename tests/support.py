"""Helpers for tests: processes whose output is read line by line, with deadlines."""

from __future__ import annotations

import contextlib
import os
import queue
import re
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import IO

import pytest
import zmq

from zchat import Client, Message


def expect_message(
    client: Client, predicate: Callable[[Message], bool], timeout: float = 5.0
) -> Message:
    """Receive until a message matches; fail with everything seen on timeout."""
    seen: list[Message] = []
    end = time.monotonic() + timeout
    while (left := end - time.monotonic()) > 0:
        msg = client.receive(timeout=left)
        if msg is None:
            break
        if predicate(msg):
            return msg
        seen.append(msg)
    raise AssertionError(f"{client.name}: no matching message in {timeout} s; saw {seen}")


def zchat_command(*args: str) -> list[str]:
    return [sys.executable, "-m", "zchat", *args]


def child_env(**extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("ZCHAT_")}
    env.update({"TZ": "UTC", "PYTHONUNBUFFERED": "1", "COLUMNS": "100"}, **extra)
    return env


def run_zchat(
    *args: str, stdin: str = "", timeout: float = 30.0, **env: str
) -> subprocess.CompletedProcess[str]:
    """`zchat ARGS` to its end, stdin given, stdout and stderr kept, env as child_env."""
    return subprocess.run(
        zchat_command(*args),
        input=stdin,
        capture_output=True,
        text=True,
        env=child_env(**env),
        timeout=timeout,
        check=False,
    )


class Proc:
    """A child process whose stdout and stderr lines are collected as they come."""

    def __init__(
        self, argv: Sequence[str], stdin: int | None = subprocess.PIPE, **env: str
    ) -> None:
        self.argv = list(argv)
        self.popen = subprocess.Popen(
            self.argv,
            stdin=stdin,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            env=child_env(**env),
            text=True,
            encoding="utf-8",
        )
        self.lines: dict[str, list[str]] = {"stdout": [], "stderr": []}
        self._queues: dict[str, queue.Queue[str | None]] = {}
        self._pos = {"stdout": 0, "stderr": 0}
        for name, stream in (("stdout", self.popen.stdout), ("stderr", self.popen.stderr)):
            q: queue.Queue[str | None] = queue.Queue()
            self._queues[name] = q
            threading.Thread(target=self._pump, args=(stream, q), daemon=True).start()

    @staticmethod
    def _pump(stream: IO[str] | None, q: queue.Queue[str | None]) -> None:
        assert stream is not None
        for line in stream:
            q.put(line.rstrip("\n"))
        q.put(None)

    def expect(self, pattern: str, stream: str = "stdout", timeout: float = 10.0) -> re.Match[str]:
        """The first line not yet consumed that matches ``pattern`` (a regex search)."""
        regex = re.compile(pattern)
        lines = self.lines[stream]
        end = time.monotonic() + timeout
        while True:
            while self._pos[stream] < len(lines):
                line = lines[self._pos[stream]]
                self._pos[stream] += 1
                if match := regex.search(line):
                    return match
            left = end - time.monotonic()
            if left <= 0:
                break
            try:
                line_or_end = self._queues[stream].get(timeout=left)
            except queue.Empty:
                break
            if line_or_end is None:
                self._queues[stream].put(None)  # keep reporting the end
                if self._pos[stream] >= len(lines):
                    break
            else:
                lines.append(line_or_end)
        raise AssertionError(
            f"{self.argv[3:]}: no {stream} line matching {pattern!r} within {timeout} s;\n"
            f"stdout: {self.lines['stdout']}\nstderr: {self.lines['stderr']}"
        )

    def send_line(self, text: str) -> None:
        assert self.popen.stdin is not None
        self.popen.stdin.write(text + "\n")
        self.popen.stdin.flush()

    def close_stdin(self) -> None:
        assert self.popen.stdin is not None
        self.popen.stdin.close()

    def signal(self, sig: int) -> None:
        self.popen.send_signal(sig)

    def wait(self, timeout: float = 10.0) -> int:
        return self.popen.wait(timeout)

    def collect(self) -> None:
        """After exit: gather every remaining line."""
        for name, q in self._queues.items():
            while (line := q.get(timeout=5)) is not None:
                self.lines[name].append(line)
            q.put(None)

    def stop(self) -> None:
        if self.popen.poll() is None:
            self.popen.send_signal(signal.SIGKILL)
            self.popen.wait(10)
        for stream in (self.popen.stdin, self.popen.stdout, self.popen.stderr):
            if stream is not None:
                with contextlib.suppress(OSError):
                    stream.close()


def start_broker(*args: str, port: int = 0, db: str = ":memory:") -> tuple[Proc, int]:
    """``zchat broker`` in a child process; returns it and its in-port once listening."""
    argv = zchat_command("broker", "--port", str(port), "--db", db, *args)
    proc = Proc(argv, stdin=subprocess.DEVNULL)
    match = proc.expect(r"listening: in tcp://[^ ]+:(\d+)", stream="stderr")
    return proc, int(match.group(1))


def speak_until_heard(
    speaker: Client, listeners: Sequence[Proc], pattern: str, text: str = "are you there"
) -> None:
    """A SUB socket hears only what is published after its subscription arrives, and
    nothing says when that is: speak (a bounded number of times) until every listener
    has shown one of the lines."""
    waiting = list(listeners)
    for attempt in range(50):
        speaker.send(f"{text} {attempt}")
        try:
            while waiting:
                waiting[0].expect(pattern, timeout=0.2)
                waiting.pop(0)
        except AssertionError:
            continue
        return
    raise AssertionError(f"{[p.argv for p in waiting]} never showed {pattern!r}")


@contextlib.contextmanager
def read_only(path: Path) -> Iterator[None]:
    """Make a file or folder that this process cannot write, whoever it runs as: root
    writes through permission bits, not through the immutable attribute."""
    if os.getuid() != 0:
        mode = path.stat().st_mode
        path.chmod(mode & ~0o222)
        try:
            yield
        finally:
            path.chmod(mode)
        return
    made = subprocess.run(["chattr", "+i", str(path)], capture_output=True, check=False)
    if made.returncode != 0:
        pytest.skip(f"root cannot make {path} read-only here (chattr +i: {made.stderr!r})")
    try:
        yield
    finally:
        subprocess.run(["chattr", "-i", str(path)], check=True)


def frames_until(sock: zmq.Socket[bytes], marker: bytes, timeout: float = 5.0) -> list[bytes]:
    """Every message ``sock`` receives (its frames joined by |) up to and including the
    first that contains ``marker``. One connection delivers in the order published, so
    whatever was published to it before the marker has arrived by then."""
    seen: list[bytes] = []
    end = time.monotonic() + timeout
    while not seen or marker not in seen[-1]:
        left = end - time.monotonic()
        if left <= 0 or not sock.poll(left * 1000):
            raise AssertionError(f"no {marker!r} within {timeout} s; saw {seen}")
        seen.append(b"|".join(sock.recv_multipart()))
    return seen


def listening_ports(pid: int) -> list[int]:
    """The TCP ports process ``pid`` listens on (Linux: its socket inodes, found in
    /proc/net/tcp and tcp6 in state 0A, LISTEN), lowest first."""
    inodes = set()
    for fd in Path(f"/proc/{pid}/fd").iterdir():
        with contextlib.suppress(OSError):
            link = os.readlink(fd)
            if link.startswith("socket:["):
                inodes.add(link[8:-1])
    ports = set()
    for table in ("tcp", "tcp6"):
        for row in Path(f"/proc/{pid}/net/{table}").read_text().splitlines()[1:]:
            fields = row.split()
            if fields[3] == "0A" and fields[9] in inodes:
                ports.add(int(fields[1].rsplit(":", 1)[1], 16))
    return sorted(ports)
