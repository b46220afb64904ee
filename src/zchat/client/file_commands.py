"""``zchat join``'s file commands: /send, /get, /files, /cancel, and the transfers they
start, told on the status line under the prompt.

Design rules:

* **A transfer never holds the prompt.** Each runs as a task of its own; the chat and
  the prompt go on meanwhile, several transfers at once. What is wrong with a command
  as typed (no such file, a folder) is said at once, and nothing is started.
* **Each transfer has a short number**, shown with its direction (``↑1`` an upload,
  ``↓2`` a download). /cancel takes it, or a download's file id.
* **The status line is prompt_toolkit's bottom toolbar**, one part per transfer,
  redrawn at most every REDRAW_SECONDS while bytes move, and at once when a transfer
  starts or ends; there is none while nothing runs. prompt_toolkit draws it, so the
  line being typed stays as it is. Without a terminal (a script) a transfer is told
  in a line when it starts and when it ends.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import os
import stat
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any

from zchat.client.aio import AsyncClient
from zchat.client.transfers import Download, Upload
from zchat.errors import BrokerUnreachable, ClientClosed, InvalidInput, TransferFailed
from zchat.protocol import check_room
from zchat.protocol.transfer import Listed
from zchat.sharing.naming import human_size
from zchat.sharing.progress import describe

# Seconds between two redraws of the status line while bytes move.
REDRAW_SECONDS = 0.2
# Characters of a file's name on the status line and in /files; a longer one is cut.
MAX_NAME_SHOWN = 40

COMMANDS = (
    ("/send [#room] PATH", "share a file here, or in #room (/send @NAME PATH: privately)"),
    ("/get ID [PATH]", "fetch a shared file into the downloads folder, or to PATH"),
    ("/files [#room|@]", "the files shared in a room (@: your private ones)"),
    ("/cancel N", "stop a transfer: its number (↑1, ↓2), or a download's file id"),
)
USAGE = {usage.split()[0][1:]: usage for usage, _ in COMMANDS}  # "get": "/get ID [PATH]"


@dataclass
class Running:
    """One transfer this session started: its number, and the task that runs it."""

    number: int
    arrow: str  # "↑" an upload, "↓" a download
    named: str  # the file's name; a download's, until the broker tells it: "file 7"
    file: int = 0  # a download's file id
    transfer: Upload | Download | None = None  # None while an upload's file is hashed
    task: asyncio.Task[None] | None = None

    @property
    def name(self) -> str:
        info = self.transfer.info if isinstance(self.transfer, Download) else None
        return _cut(info.name if info is not None else self.named)

    @property
    def label(self) -> str:
        return f"{self.arrow}{self.number} {self.name}"

    def status(self, now: float) -> str:
        """``↑1 tugas3.pdf 1.2 MB of 3.4 MB (35%), 12 MB/s, 0:02 left``."""
        moving = self.transfer
        if moving is None:
            return f"{self.label} (checking)"
        if isinstance(moving, Download) and moving.info is None:
            return f"{self.label} (opening)"
        return f"{self.label} {describe(moving.done_bytes, moving.size, now - moving.started)}"


class FileCommands:
    """The file commands of one ``zchat join``, and the transfers they run. ``note``
    says one line to the user (a system notice); ``out`` prints a plain line."""

    def __init__(
        self,
        client: AsyncClient,
        downloads: Path,
        note: Callable[[str], None],
        out: Callable[[str], None],
    ) -> None:
        self.client = client
        self.downloads = downloads
        self.note = note
        self.out = out
        self.running: dict[int, Running] = {}
        self.failed = 0  # transfers that did not end whole: a script's exit code says so
        self._numbers = itertools.count(1)
        self._redraw: Callable[[], None] | None = None  # None: no status line (a script)
        self._drawn = 0.0

    def show_on(self, session: Any) -> None:
        """Keep ``session``'s (a PromptSession) bottom toolbar showing what runs."""

        def redraw() -> None:
            session.bottom_toolbar = self.status if self.running else None
            session.app.invalidate()  # nothing while no prompt is shown: the next one draws

        self._redraw = redraw

    def status(self) -> str:
        now = time.monotonic()
        return "  ".join(running.status(now) for running in self.running.values())

    async def command(self, command: str, rest: str, room: str | None) -> None:
        """One of /send, /get, /files, /cancel (``rest``: what follows it); ``room``:
        the current room."""
        match command:
            case "send":
                self.send(rest, room)
            case "get":
                self.get(rest)
            case "files":
                await self.files(rest.strip() or room)
            case "cancel":
                await self.cancel(rest.strip())

    # --- uploads ----------------------------------------------------------------------

    def send(self, rest: str, room: str | None) -> None:
        first, _, more = rest.strip().partition(" ")
        to = None
        if first.startswith("#"):
            room, rest = first, more
        elif first.startswith("@") and len(first) > 1:
            to, rest = first[1:], more
        path = _typed_path(rest)
        if path is None:
            self.note(f"usage: {USAGE['send']}")
            return
        problem = _unreadable(path)
        if problem:
            self.note(f"not sent: {problem}")
            return
        running = self._start("↑", path.name)
        where = f"@{to}" if to else f"#{room}" if room else "the current room"
        self._tell(f"sending {path.name} to {where} (↑{running.number})")
        running.task = asyncio.get_running_loop().create_task(self._upload(running, path, room, to))

    async def _upload(self, running: Running, path: Path, room: str | None, to: str | None) -> None:
        try:
            up = await self.client.start_upload(path, room, to, progress=self._moved)
            running.transfer = up
            self._changed()
            await self.client.finish(up)
        except (TransferFailed, InvalidInput, ClientClosed) as exc:
            self._failed(f"not sent: {running.name}: {exc}")
        except OSError as exc:  # the file went, or became unreadable, since it was typed
            self._failed(f"not sent: cannot read {path}: {exc.strerror or exc}")
        else:
            assert up.shared is not None  # the shared line itself says so in a terminal
            self._tell(f"sent {running.label} ({human_size(up.size)}): /get {up.shared.id}")
        finally:
            self._end(running)

    # --- downloads --------------------------------------------------------------------

    def get(self, rest: str) -> None:
        first, _, more = rest.strip().partition(" ")
        if not first.isdigit() or int(first) < 1:
            self.note(f"usage: {USAGE['get']}")
            return
        file = int(first)
        dest = _typed_path(more) if more.strip() else None
        folder = self.downloads if dest is None else dest if dest.is_dir() else dest.parent
        if not folder.is_dir():
            self.note(f"not saved: there is no folder {folder}")
            return
        running = self._start("↓", f"file {file}", file)
        try:
            down = self.client.start_download(file, dest or self.downloads, progress=self._moved)
        except ClientClosed as exc:
            self._end(running)
            self.note(f"not saved: {exc}")
            return
        running.transfer = down
        self._tell(f"getting file {file} (↓{running.number})")
        running.task = asyncio.get_running_loop().create_task(self._download(running, down))

    async def _download(self, running: Running, down: Download) -> None:
        try:
            await self.client.finish(down)
        except TransferFailed as exc:
            if exc.code == "not-in-room" and exc.room:
                room = f"#{exc.room}"
                self._failed(f"not saved: file {down.file} is in {room}: /join {room} to get it")
            else:
                self._failed(f"not saved: file {down.file}: {exc}")
        else:
            assert down.path is not None and down.info is not None
            size = human_size(down.info.size)
            self.note(f"saved {down.info.name} ({size}) to {_shown(down.path)}, SHA-256 checked")
        finally:
            self._end(running)

    # --- listing, cancelling ----------------------------------------------------------

    async def files(self, room: str | None) -> None:
        if not room:
            self.note(f"usage: {USAGE['files']}")
            return
        private = room.startswith("@")
        try:
            where = "your private files" if private else f"#{check_room(room)}"
            listed = await self.client.list_files(room)
        except (InvalidInput, BrokerUnreachable, TransferFailed) as exc:
            self.note(f"error: {exc}")
            return
        if not listed:
            self.note("no private files" if private else f"no files in {where}")
            return
        self.note(f"{where}:" if private else f"files in {where}:")
        for row in _table(listed):
            self.out(f"  {row}")

    async def cancel(self, typed: str) -> None:
        if not self.running:
            self.note("no transfer is running")
            return
        running = self._find(typed)
        if running is None:
            shown = ", ".join(running.label for running in self.running.values())
            self.note(f"usage: {USAGE['cancel']}; running: {shown}")
            return
        if running.task is not None:  # its task cancels the transfer, a part file goes
            running.task.cancel()
            await asyncio.wait({running.task})
        self._end(running)
        self.note(
            f"cancelled {running.label}: "
            + ("not shared" if running.arrow == "↑" else "nothing saved")
        )

    def _find(self, typed: str) -> Running | None:
        """The transfer numbered ``typed``, else the download of file ``typed``."""
        if not typed.isdigit():
            return None
        number = int(typed)
        if number in self.running:
            return self.running[number]
        downloads = (r for r in self.running.values() if r.arrow == "↓" and r.file == number)
        return next(downloads, None)

    async def wait(self, stop: asyncio.Event) -> None:
        """Until every transfer has ended (a script's, before it leaves), or ``stop``."""
        stopper = asyncio.get_running_loop().create_task(stop.wait())
        try:
            while tasks := {running.task for running in self.running.values() if running.task}:
                await asyncio.wait({*tasks, stopper}, return_when="FIRST_COMPLETED")
                if stopper.done():
                    return
        finally:
            stopper.cancel()

    async def stop(self) -> None:
        """Cancel what still runs: the chat is left."""
        for running in list(self.running.values()):
            if running.task is not None:
                running.task.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await running.task

    # --- the status line --------------------------------------------------------------

    def _start(self, arrow: str, name: str, file: int = 0) -> Running:
        running = Running(next(self._numbers), arrow, name, file)
        self.running[running.number] = running
        self._changed()
        return running

    def _end(self, running: Running) -> None:
        if self.running.pop(running.number, None) is not None:
            self._changed()

    def _moved(self, done: int, total: int) -> None:
        """Progress (called by the client's pump): the status line, a few times a second."""
        if self._redraw is not None and time.monotonic() - self._drawn >= REDRAW_SECONDS:
            self._changed()

    def _changed(self) -> None:
        if self._redraw is not None:
            self._drawn = time.monotonic()
            self._redraw()

    def _tell(self, text: str) -> None:
        """A transfer's start or end, where there is no status line to show it."""
        if self._redraw is None:
            self.note(text)

    def _failed(self, text: str) -> None:
        self.failed += 1
        self.note(text)


def _typed_path(typed: str) -> Path | None:
    """A path as typed: the rest of the line, spaces and all, without the quotes around
    it if it is quoted whole; ``~`` expanded."""
    text = typed.strip()
    if len(text) >= 2 and text[0] == text[-1] and text[0] in "\"'":
        text = text[1:-1]
    return Path(text).expanduser() if text else None


def _unreadable(path: Path) -> str:
    """Why the file at ``path`` cannot be shared; "" if it can."""
    try:
        mode = path.stat().st_mode
    except FileNotFoundError:
        return f"there is no file {path}"
    except OSError as exc:
        return f"cannot read {path}: {exc.strerror or exc}"
    if stat.S_ISDIR(mode):
        return f"{path} is a folder: give a file"
    if not stat.S_ISREG(mode):
        return f"{path} is not a regular file"
    try:
        with path.open("rb"):
            return ""
    except OSError as exc:
        return f"cannot read {path}: {exc.strerror or exc}"


def _shown(path: Path) -> str:
    """A path as the user gave its folder: ``./tugas3 (1).pdf`` in the current one."""
    if path.is_absolute() or path.parts[:1] == ("..",):
        return str(path)
    return os.path.join(".", path)


def _cut(name: str) -> str:
    return name if len(name) <= MAX_NAME_SHOWN else name[: MAX_NAME_SHOWN - 1] + "…"


def _table(listed: tuple[Listed, ...]) -> list[str]:
    """``7  tugas3.pdf  1.2 MB  Alice  14:30``, one row per file, in columns."""
    today = datetime.now().astimezone().date()
    rows = []
    for item in listed:
        when = item.ts.astimezone()
        shown = when.strftime("%H:%M" if when.date() == today else "%Y-%m-%d %H:%M")
        size = "expired" if item.file.expired else human_size(item.file.size)
        who = f"{item.sender} → {item.to}" if item.to else item.sender
        rows.append((str(item.file.id), _cut(item.file.name), size, who, shown))
    widths = [max(len(row[column]) for row in rows) for column in range(4)]
    return [
        f"{id_:>{widths[0]}}  {name:<{widths[1]}}  {size:>{widths[2]}}  {who:<{widths[3]}}  {when}"
        for id_, name, size, who, when in rows
    ]
