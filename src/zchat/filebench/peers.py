"""zchat's side of a file benchmark, each client in a process of its own: one that
shares the file and one that fetches it (``file_peer``, told what to do through a
queue), one that says a line every few milliseconds (``speaker``) and one that hears
them and keeps their latencies (``listener``). ``Watch`` reads processes' RSS while a
file moves.

Every loop is bounded by a deadline; a client waiting for its next command keeps
reading, so that its session stays alive.
"""

from __future__ import annotations

import os
import queue
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from zchat.client.sync import Client
from zchat.errors import ZchatError

FILE_ROOM = "files"
CHAT_ROOM = "chat"
SPEAKER = "carol"
# How often Watch reads each process's RSS.
SAMPLE_SECONDS = 0.1


@dataclass(frozen=True)
class Moved:
    """One ``send_file`` or ``get_file``, timed in the client's process (monotonic)."""

    start: float
    first: float  # the broker's first answer: accepted (after the client's hash), opened
    last_byte: float  # the last chunk sent (upload) or written (download)
    end: float  # send_file or get_file returned: stored, or checked and named
    file_id: int
    path: str  # what get_file saved


@dataclass
class Marks:
    """A transfer's progress callback: when the broker first answered (the first call)
    and when the last byte went or came (the first call with all done)."""

    first: float = 0.0
    last_byte: float = 0.0

    def __call__(self, done: int, total: int) -> None:
        now = time.monotonic()
        self.first = self.first or now
        if done >= total and not self.last_byte:
            self.last_byte = now


def file_peer(name: str, host: str, port: int, commands: Any, results: Any, limit: float) -> None:
    """A joined client that runs ``("send", path)``, ``("get", file_id, folder)`` and
    ``("stop",)`` as they come, and puts a Moved for each transfer, or the error that
    ended it (``limit``: seconds this process lives at most)."""
    end = time.monotonic() + limit
    with Client(name, host, port, [FILE_ROOM], history=0) as client:
        results.put(os.getpid())
        while time.monotonic() < end:
            client.receive(timeout=0.02)  # pings, and the room's news
            try:
                command = commands.get_nowait()
            except queue.Empty:
                continue
            if command[0] == "stop":
                return
            marks = Marks()
            start = time.monotonic()
            try:
                if command[0] == "send":
                    shared = client.send_file(command[1], FILE_ROOM, progress=marks)
                    file_id, path = shared.id, ""
                else:
                    file_id = command[1]
                    path = str(client.get_file(file_id, command[2], progress=marks))
            except ZchatError as exc:
                results.put(f"{type(exc).__name__}: {exc}")  # the harness says it and stops
                return
            done = time.monotonic()
            first, last_byte = marks.first or start, marks.last_byte or done
            results.put(Moved(start, first, last_byte, done, file_id, path))


def speaker(host: str, port: int, every: float, stop: Any, limit: float) -> None:
    """Say a line every ``every`` seconds, its send time (ns) first, until ``stop``."""
    end = time.monotonic() + limit
    with Client(SPEAKER, host, port, [CHAT_ROOM], history=0) as client:
        next_at = time.monotonic()
        count = 0
        while not stop.is_set() and time.monotonic() < end:
            client.send(f"{time.monotonic_ns()} line {count}")
            count += 1
            next_at = max(next_at + every, time.monotonic())  # late: no burst to catch up
            while (pause := next_at - time.monotonic()) > 0:
                client.receive(timeout=pause)  # its own lines, read as they come


def listener(host: str, port: int, hearing: Any, stop: Any, results: Any, limit: float) -> None:
    """Hear the speaker's lines; set ``hearing`` at the first; at ``stop``, put
    [(send time in ns, latency in ms)] of every line heard."""
    end = time.monotonic() + limit
    heard: list[tuple[int, float]] = []
    with Client("dave", host, port, [CHAT_ROOM], history=0) as client:
        while not stop.is_set() and time.monotonic() < end:
            msg = client.receive(timeout=0.1)
            now = time.monotonic_ns()
            if msg is None or msg.kind != "message" or msg.sender != SPEAKER:
                continue
            stamp = int(msg.text.split(" ", 1)[0])
            heard.append((stamp, (now - stamp) / 1e6))
            hearing.set()
    results.put(heard)


# --- memory -------------------------------------------------------------------------


def status_kib(pid: int, key: str) -> int:
    """A figure of /proc/PID/status in KiB (VmRSS, VmHWM)."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith(key + ":"):
            return int(line.split()[1])
    raise KeyError(key)


@dataclass
class Watch:
    """The RSS of some processes while something runs: their VmRSS read before, then
    every SAMPLE_SECONDS by a thread, and their VmHWM (the kernel's peak) before and
    after, which catches a peak between two readings."""

    pids: dict[str, int]
    before: dict[str, int] = field(default_factory=dict)
    peak: dict[str, int] = field(default_factory=dict)
    _hwm: dict[str, int] = field(default_factory=dict)
    _stop: threading.Event = field(default_factory=threading.Event)
    _thread: threading.Thread | None = None

    def __enter__(self) -> Watch:
        for role, pid in self.pids.items():
            self.before[role] = self.peak[role] = status_kib(pid, "VmRSS")
            self._hwm[role] = status_kib(pid, "VmHWM")
        self._thread = threading.Thread(target=self._sample, daemon=True)
        self._thread.start()
        return self

    def __exit__(self, *_: object) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(5)
        self._read()
        for role, pid in self.pids.items():
            hwm = status_kib(pid, "VmHWM")
            if hwm > self._hwm[role]:  # a new peak of the process's life: it was now
                self.peak[role] = max(self.peak[role], hwm)

    def growth_mib(self) -> dict[str, float]:
        return {role: (self.peak[role] - self.before[role]) / 1024 for role in self.pids}

    def _sample(self) -> None:
        while not self._stop.wait(SAMPLE_SECONDS):
            self._read()

    def _read(self) -> None:
        for role, pid in self.pids.items():
            self.peak[role] = max(self.peak[role], status_kib(pid, "VmRSS"))
