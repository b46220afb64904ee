"""A client's file transfers: the rules of the file port's flow, without sockets.

The sync and asyncio clients own a DEALER socket on the broker's port + 2; they hand
every message from it to ``Transfers.on_answer`` and send what ``take_outbox`` gives.
Each transfer is known by its ``ask`` (protocol/transfer.py).

* **Upload**: ``offer`` (name, size, where), then one ``chunk`` for each ``want``,
  read from the file at that moment and hashed as it goes: the broker's asking is the
  flow control, and the last chunk carries the file's SHA-256 (no pass over the file
  before the first byte moves). Done when the broker answers ``stored``.
* **Download**: ``open``, then ``get`` a chunk at a time, WINDOW ahead of what has been
  written, into a part file beside the target (``.NAME.HASH.zchat-part``). Each chunk
  is written in order and hashed as it lands. When all bytes are in and their SHA-256
  is the one the broker announced, the part file takes its final name, which is never
  one in use (``free_path``); a mismatch deletes it.
* **Resuming**: a part file found at the start is hashed and continued from its end, so
  a download killed half-way resumes on the next ``get_file``. A transfer that hears
  nothing for STALL_SECONDS (its broker restarted, its connection dropped) offers or
  opens again: the broker answers with where to go on from.
"""

from __future__ import annotations

import errno
import hashlib
import os
import secrets
import stat
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from zchat import protocol as p
from zchat.errors import BrokerUnreachable, InvalidInput, ProtocolError, TransferFailed
from zchat.protocol import check_name, check_room
from zchat.protocol import transfer as t
from zchat.sharing.disk import write_all
from zchat.sharing.naming import free_path, part_name, safe_name

# Seconds without an answer before a transfer offers or opens again.
STALL_SECONDS = 5.0
# Seconds without progress before a transfer gives up.
GIVE_UP_SECONDS = 120.0
# The broker's refusals that mean "start again from what you hold" (a broker restart,
# a new connection), not "this transfer is over".
RESYNC = frozenset({"unknown-session", "not-yours", "not-open", "bad-chunk", "busy"})
HASH_BLOCK = 1024 * 1024

Progress = Callable[[int, int], None]  # (bytes done, bytes in all)


@dataclass
class Transfer:
    """What both directions share: the ask, progress, and how it ended."""

    ask: str
    progress: Progress | None
    size: int = 0
    done_bytes: int = 0
    heard: float = 0.0  # when the broker last answered about it (monotonic)
    moved: float = 0.0  # when it last made progress
    error: TransferFailed | None = None
    finished: bool = False
    started: float = field(default_factory=time.monotonic)

    @property
    def over(self) -> bool:
        return self.finished or self.error is not None

    def _advance(self, done: int, now: float) -> None:
        self.done_bytes = done
        self.heard = self.moved = now
        if self.progress is not None:
            try:
                self.progress(done, self.size)
            except Exception as exc:  # the caller's: it ends this transfer, not the client
                raise ProgressFailed(exc) from exc

    def fail(self, code: str, text: str, room: str = "") -> None:
        if not self.over:
            self.error = TransferFailed(code, text, room)


class ProgressFailed(Exception):
    """A progress callback raised: the transfer ends with its error."""


@dataclass
class Upload(Transfer):
    path: Path = Path()
    name: str = ""
    sha256: str = ""
    room: str = ""
    to: str = ""
    token: str = ""
    shared: p.SharedFile | None = None
    # the SHA-256 of the bytes sent so far, in order (when the offer gave none)
    _digest: hashlib._Hash = field(default_factory=hashlib.sha256)
    _hashed: int = 0

    def chunk(self, secret: str, offset: int, size: int) -> t.Chunk | None:
        """The bytes a ``want`` asks for, read now (None if the file is shorter than
        it was); the last chunk carries the whole file's SHA-256 when the offer did not.
        Chunks are asked for in order: one asked for again (the broker restarted) has
        the file hashed up to it anew."""
        with self.path.open("rb") as stream:
            if not self.sha256 and offset != self._hashed:
                self._digest, self._hashed = hashlib.sha256(), 0
                while self._hashed < offset and (
                    block := stream.read(min(HASH_BLOCK, offset - self._hashed))
                ):
                    self._digest.update(block)
                    self._hashed += len(block)
            stream.seek(offset)
            data = stream.read(size)
        if len(data) != size:
            return None
        sha256 = ""
        if not self.sha256:
            self._digest.update(data)
            self._hashed = offset + size
            if self._hashed == self.size:
                sha256 = self._digest.hexdigest()
        return t.Chunk(
            secret=secret, ask=self.ask, upload=self.token, offset=offset, data=data,
            sha256=sha256,
        )  # fmt: skip

    def offer(self, secret: str) -> t.Offer:
        return t.Offer(
            secret=secret, ask=self.ask, name=self.name, size=self.size, sha256=self.sha256,
            room=self.room, to=self.to,
        )  # fmt: skip


@dataclass
class Download(Transfer):
    file: int = 0
    folder: Path = Path()
    chosen: Path | None = None  # a name asked for (``get_file(id, dest)``)
    info: p.SharedFile | None = None
    part: Path | None = None
    _fd: int | None = None  # the part file, open from start to end (no path followed twice)
    path: Path | None = None  # where the file is, once done
    asked: int = 0  # bytes asked for (done_bytes <= asked <= size)
    chunk: int = t.CHUNK_BYTES
    _digest: hashlib._Hash | None = None


class Transfers:
    """The transfers of one client."""

    def __init__(self, secret: Callable[[], str], clock: Callable[[], float] = time.monotonic):
        self._secret = secret
        self._clock = clock
        self.active: dict[str, Upload | Download] = {}
        self.listings: set[str] = set()  # listings asked for and not answered
        self.answered: dict[str, t.Answer] = {}  # listings answered and not taken, by ask
        self._outbox: list[list[bytes | memoryview]] = []

    # --- starting ---------------------------------------------------------------------

    def upload(
        self,
        path: Path,
        sha256: str = "",
        *,
        room: str = "",
        to: str = "",
        progress: Progress | None = None,
        name: str = "",
    ) -> Upload:
        """Share the file at ``path`` in ``room`` or with ``to``. Its SHA-256 is made
        as its chunks are sent, and goes with the last one (or give it: ``sha256``).
        InvalidInput if it cannot be read or named."""
        size = shareable(path)
        shown = name or path.name
        try:
            shown = t.check_file_name(shown)
        except ProtocolError as exc:
            raise InvalidInput(f"cannot share {path}: {exc}") from None
        now = self._clock()
        up = Upload(_ask(), progress, size, path=path, name=shown, sha256=sha256, room=room, to=to)
        up.heard = up.moved = now
        self.active[up.ask] = up
        self._send(up.offer(self._secret()))
        return up

    def download(
        self,
        file: int,
        folder: Path,
        chosen: Path | None = None,
        progress: Progress | None = None,
    ) -> Download:
        """Fetch file ``file`` into ``folder`` (under its own name made safe, or
        ``chosen``)."""
        now = self._clock()
        down = Download(_ask(), progress, file=file, folder=folder, chosen=chosen)
        down.heard = down.moved = now
        self.active[down.ask] = down
        self._send(t.Open(secret=self._secret(), ask=down.ask, file=file))
        return down

    def cancel(self, ask: str, keep: bool = False) -> bool:
        """Stop a transfer; False if there is none by that name. A download's part
        file is deleted, unless ``keep`` (interrupted: the next get resumes it)."""
        transfer = self.active.pop(ask, None)
        if transfer is None:
            return False
        transfer.fail("cancelled", "cancelled")
        self._send(t.Cancel(secret=self._secret(), ask=ask))
        if isinstance(transfer, Download):
            _close(transfer, delete=not keep)  # a cancelled download leaves nothing
        return True

    def listing(self, room: str) -> str:
        """Ask for the files of ``room`` (``@`` for private ones); returns the ask that
        ``take_listing`` gives the answer for, once ``answered`` holds it."""
        ask = _ask()
        self._send(t.ListFiles(secret=self._secret(), ask=ask, room=room))
        self.listings.add(ask)
        return ask

    # --- the socket's side ------------------------------------------------------------

    def take_outbox(self) -> list[list[bytes | memoryview]]:
        out, self._outbox = self._outbox, []
        return out

    @property
    def has_outbox(self) -> bool:
        return bool(self._outbox)

    def take_listing(self, ask: str) -> tuple[t.Listed, ...]:
        """The files of listing ``ask`` once answered; BrokerUnreachable if it was not,
        TransferFailed if it was refused."""
        self.listings.discard(ask)
        return listing_of(self.answered.pop(ask, None))

    def on_answer(self, frames: list[bytes]) -> None:
        """One message from the file socket. The answer to a listing (or its refusal)
        is kept for ``take_listing``; what concerns a transfer that is over (a chunk
        still in flight when it was cancelled) is dropped."""
        try:
            answer = t.decode_answer(frames)
        except ProtocolError:
            return
        if answer.ask in self.listings:
            self.listings.discard(answer.ask)
            self.answered[answer.ask] = answer
            return
        transfer = self.active.get(answer.ask)
        if transfer is None:
            return
        now = self._clock()
        transfer.heard = now
        try:
            if isinstance(transfer, Upload):
                self._on_upload(transfer, answer, now)
            else:
                self._on_download(transfer, answer, now)
        except OSError as exc:
            where = f"{exc.strerror or exc}: {exc.filename or ''}".strip(": ")
            self._end(transfer, "local", where, tell=True)
        except ProgressFailed as failed:
            self._end(transfer, "progress", f"the progress callback failed: {failed}", tell=True)

    def tick(self, now: float) -> None:
        """Offer or open again what has stalled; give up on what has not moved."""
        for transfer in list(self.active.values()):
            if now - transfer.moved >= GIVE_UP_SECONDS:
                text = "no progress for two minutes: stopped"
                self._end(transfer, "unreachable", text, tell=True)
            elif now - transfer.heard >= STALL_SECONDS:
                transfer.heard = now
                self._again(transfer)

    def deadline(self) -> float:
        if not self.active:
            return float("inf")
        return min(t_.heard for t_ in self.active.values()) + STALL_SECONDS

    # --- uploads ----------------------------------------------------------------------

    def _on_upload(self, up: Upload, answer: t.Answer, now: float) -> None:
        match answer:
            case t.Accepted(upload=token, offset=offset):
                up.token = token
                up._advance(offset, now)
            case t.Want(upload=token, offset=offset, size=size) if token == up.token:
                chunk = up.chunk(self._secret(), offset, size)
                if chunk is None:
                    text = f"{up.path} changed while it was being sent"
                    self._end(up, "changed", text, tell=True)
                    return
                self._send(chunk)
                up._advance(offset + size, now)
            case t.Stored(file=file):
                up.shared = file
                up.finished = True
                up._advance(up.size, now)
                del self.active[up.ask]
            case t.Refusal(code=code, text=text):
                if code in RESYNC:
                    return  # offered again when the stall timer says
                self._end(up, code, text)

    # --- downloads --------------------------------------------------------------------

    def _on_download(self, down: Download, answer: t.Answer, now: float) -> None:
        match answer:
            case t.Opened(file=info, chunk=chunk):
                self._opened(down, info, min(chunk, t.CHUNK_BYTES), now)
            case t.Data(file=number, offset=offset, data=data) if number == down.file:
                if offset != down.done_bytes or down._fd is None or down._digest is None:
                    return  # a chunk asked for before a restart: asked again since
                write_all(down._fd, data, offset)
                down._digest.update(data)
                down._advance(offset + len(data), now)
                self._ask_more(down)
            case t.Refusal(code=code, text=text, room=room):
                if code in RESYNC:
                    return
                self._end(down, code, text, room)

    def _opened(self, down: Download, info: p.SharedFile, chunk: int, now: float) -> None:
        if down.info is not None and down.info.sha256 != info.sha256:
            self._end(down, "changed", f"file {down.file} is not the file it was")
            return
        down.info, down.size, down.chunk = info, info.size, chunk
        if down.part is None:
            down.part = self._part_of(down, info)
            down._fd, down.done_bytes, down._digest = _resume(down.part, info.size)
        down.asked = down.done_bytes  # whatever was asked before is asked again
        down._advance(down.done_bytes, now)
        if down.done_bytes == down.size and info.size:  # all held: no get frees the slot
            self._send(t.Cancel(secret=self._secret(), ask=down.ask))
        self._ask_more(down)

    def _part_of(self, down: Download, info: p.SharedFile) -> Path:
        folder = down.chosen.parent if down.chosen is not None else down.folder
        name = down.chosen.name if down.chosen is not None else safe_name(info.name)
        return folder / part_name(f"{name}.{info.sha256[:16]}")

    def _ask_more(self, down: Download) -> None:
        ahead = t.WINDOW * down.chunk
        while down.asked < down.size and down.asked - down.done_bytes < ahead:
            size = min(down.chunk, down.size - down.asked)
            get = t.Get(
                secret=self._secret(), ask=down.ask, file=down.file, offset=down.asked, size=size
            )
            self._send(get)
            down.asked += size
        if down.done_bytes == down.size:
            self._finish(down)

    def _finish(self, down: Download) -> None:
        assert down.info is not None and down.part is not None and down._digest is not None
        assert down._fd is not None
        held = os.fstat(down._fd)
        if down._digest.hexdigest() != down.info.sha256 or held.st_size != down.size:
            self._end(
                down, "hash-mismatch",
                f"file {down.file} arrived with the wrong SHA-256: deleted, nothing was saved",
            )  # fmt: skip
            return
        now = os.lstat(down.part)
        if (now.st_dev, now.st_ino) != (held.st_dev, held.st_ino):
            self._end(down, "local", f"{down.part} was replaced while it was written")
            return
        folder = down.chosen.parent if down.chosen is not None else down.folder
        name = down.chosen.name if down.chosen is not None else safe_name(down.info.name)
        down.path = _claim(down.part, folder, name)
        _close(down, delete=False)
        down.finished = True
        del self.active[down.ask]

    # --- both -------------------------------------------------------------------------

    def _again(self, transfer: Upload | Download) -> None:
        if isinstance(transfer, Upload):
            self._send(transfer.offer(self._secret()))
        else:
            self._send(t.Open(secret=self._secret(), ask=transfer.ask, file=transfer.file))

    def _end(
        self,
        transfer: Upload | Download,
        code: str,
        text: str,
        room: str = "",
        *,
        tell: bool = False,
    ) -> None:
        """End a transfer with an error; ``tell``: the broker does not know yet (a
        failure here), so it is cancelled there too and frees what it held."""
        transfer.fail(code, text, room)
        self.active.pop(transfer.ask, None)
        if tell:
            self._send(t.Cancel(secret=self._secret(), ask=transfer.ask))
        if isinstance(transfer, Download):
            _close(transfer, delete=code in ("hash-mismatch", "changed"))

    def _send(self, request: t.Request) -> None:
        self._outbox.append(t.encode_request(request))


def destination(dest: str | Path | None) -> tuple[Path, Path | None]:
    """(folder, None) to save under the file's own name, or (folder, name) for a name."""
    if dest is None:
        return Path.cwd(), None
    path = Path(dest).expanduser()
    if path.is_dir():
        return path, None
    return path.parent, path


def share_place(room: str | None, to: str | None, rooms: list[str]) -> dict[str, str]:
    """Where a file is shared: privately with ``to``, or in ``room`` (checked; default
    the first of ``rooms``), as Transfers.upload takes it."""
    if to:
        return {"to": check_name(to)}
    return {"room": listed_room(room, rooms)}


def listed_room(room: str | None, rooms: list[str]) -> str:
    """A room to list the files of (default the first of ``rooms``), or ``@``."""
    if room is not None and room.startswith("@"):
        return "@"
    return check_room(room) if room else (rooms or [""])[0]


def listing_of(answer: t.Answer | None) -> tuple[t.Listed, ...]:
    match answer:
        case None:
            raise BrokerUnreachable("the broker did not answer the listing in time")
        case t.Listing(files=files):
            return files
        case t.Refusal(code=code, text=text):
            raise TransferFailed(code, text)
    raise TransferFailed("protocol", f"unexpected answer {type(answer).__name__}")


def _claim(part: Path, folder: Path, name: str) -> Path:
    """Give ``part`` a free name in ``folder``, never one in use, even one taken a
    moment ago: a hard link fails on a name that exists. Where there are no hard links
    (FAT, some network folders) the name is made (O_EXCL) and the part renamed onto it
    (slower: ext4 writes a file renamed over another to disk at once)."""
    while True:
        target = free_path(folder, name)
        try:
            os.link(part, target)
        except FileExistsError:
            continue
        except OSError:
            try:
                os.close(os.open(target, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o666))
            except FileExistsError:
                continue
            os.replace(part, target)
            return target
        part.unlink()
        return target


def _ask() -> str:
    return "f" + secrets.token_hex(8)


def shareable(path: Path) -> int:
    """The size of the file at ``path``; InvalidInput if it cannot be shared (missing,
    a folder, unreadable), before anything is read or sent."""
    size = _size_of(path)
    if not os.access(path, os.R_OK):
        raise InvalidInput(f"cannot share {path}: permission denied")
    return size


def _size_of(path: Path) -> int:
    try:
        info = path.stat()
    except OSError as exc:
        raise InvalidInput(f"cannot share {path}: {exc.strerror or exc}") from None
    if not path.is_file():
        raise InvalidInput(f"cannot share {path}: not a file")
    return info.st_size


def _resume(part: Path, size: int) -> tuple[int, int, hashlib._Hash]:
    """The part file, open; what it holds already, and its hash. One that is not there
    is made (O_EXCL); one there must be this user's own regular file with one name (a
    link planted in a shared folder must not make us write elsewhere), and one longer
    than the file starts again. OSError says what is wrong."""
    flags = os.O_RDWR | os.O_NOFOLLOW | os.O_CLOEXEC
    try:
        fd = os.open(part, flags | os.O_CREAT | os.O_EXCL, 0o666)  # the umask decides
    except FileExistsError:
        fd = os.open(part, flags)  # ELOOP for a symbolic link
        info = os.fstat(fd)
        if not stat.S_ISREG(info.st_mode) or info.st_uid != os.getuid() or info.st_nlink != 1:
            os.close(fd)
            raise OSError(errno.EPERM, "not this user's own part file", str(part)) from None
        if info.st_size > size:
            os.ftruncate(fd, 0)
    digest = hashlib.sha256()
    held = 0
    while block := os.pread(fd, HASH_BLOCK, held):
        digest.update(block)
        held += len(block)
    return fd, held, digest


def _close(down: Download, delete: bool) -> None:
    """Close a download's part file, and delete it if ``delete``."""
    if down._fd is not None:
        os.close(down._fd)
        down._fd = None
    if delete and down.part is not None:
        down.part.unlink(missing_ok=True)
