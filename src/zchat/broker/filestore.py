"""Where the broker keeps shared files: their bytes on disk, what they are in SQLite.

The bytes are named by their SHA-256 (``ab/abcdef…``), so a file shared twice is kept
once; each share is a row of ``files`` (its number is the id people type in ``/get``),
in the history database beside the events that announce it. An upload in progress is
a file under ``partial/`` named by its token, and a row of ``uploads``: both outlive a
broker restart, so the upload resumes where it stopped, and both go when it is done,
cancelled, or idle past the upload timeout.

The folder is private to the broker's user, as the history is (filemodes.py): made
0700 under umask 077, its files 0600. By default it is beside the history database
(``history.db`` -> ``history-files/``); with ``:memory:`` it is a temporary folder,
removed when the broker stops. Nothing is ever written outside it: every path is made
here, from a hash or a token that the protocol checked to be hex digits.

Storage is bounded by a quota: when a new file would pass it, the oldest files expire
(their bytes go, their rows and events say "expired") until it fits.
"""

from __future__ import annotations

import contextlib
import fcntl
import logging
import os
import shutil
import sqlite3
import tempfile
from dataclasses import dataclass, replace
from datetime import datetime
from pathlib import Path
from typing import Any

from zchat import protocol as p
from zchat.broker.store import HistoryStore
from zchat.errors import ConfigError
from zchat.filemodes import make_private, private_umask
from zchat.protocol import transfer as t

log = logging.getLogger("zchat.broker")

PARTIAL = "partial"  # the sub-folder of uploads in progress
LOCK_NAME = ".lock"  # held (flock) by the broker that uses the folder
_FILE_COLUMNS = (
    "id, sha256, size, name, media, width, height, sender, room, recipient, ts, seq, expired"
)


@dataclass(frozen=True)
class StoredFile:
    """One share of a file: a row of ``files``."""

    id: int
    sha256: str
    size: int
    name: str
    media: str
    width: int
    height: int
    sender: str
    room: str  # "" for a private file
    to: str  # "" for a room's file
    ts: datetime
    seq: int
    expired: bool

    @property
    def shared(self) -> p.SharedFile:
        return p.SharedFile(
            self.id, self.name, self.size, self.sha256, self.media, self.width, self.height,
            self.expired,
        )  # fmt: skip

    def may_fetch(self, name: str, rooms: list[str]) -> bool:
        """Whether the session named ``name``, in ``rooms``, may fetch it."""
        if self.to:
            return name.lower() in (self.sender.lower(), self.to.lower())
        return self.room in rooms


@dataclass(frozen=True)
class UploadRow:
    """An upload in progress, as kept across restarts."""

    token: str
    sender: str  # lower case
    sha256: str
    size: int
    name: str
    room: str
    to: str
    touched: float


def default_folder(db: str) -> Path | None:
    """The files folder beside history database ``db``; None for ``:memory:``."""
    if db == ":memory:":
        return None
    path = Path(db)
    return path.with_name(f"{path.stem}-files")


class FileStore:
    def __init__(self, history: HistoryStore, folder: str | Path | None = None) -> None:
        """``folder``: where the bytes go (None: beside the history, or a temporary
        folder for a history in memory)."""
        self.history = history
        self._temporary = False
        chosen = Path(folder) if folder is not None else default_folder(history.path)
        if chosen is None:
            with private_umask():
                chosen = Path(tempfile.mkdtemp(prefix="zchat-files-"))
            self._temporary = True
        self.folder = chosen
        self._prepare()
        self._lock = self._take_folder()
        # bytes held: each distinct content of a file that has not expired, once
        rows = history.rows(
            "SELECT SUM(size) FROM (SELECT DISTINCT sha256, size FROM files WHERE expired = 0)"
        )
        self.stored = int(rows[0][0] or 0)

    def _prepare(self) -> None:
        try:
            with private_umask():
                self.folder.mkdir(exist_ok=True)
                (self.folder / PARTIAL).mkdir(exist_ok=True)
        except OSError as exc:
            raise ConfigError(
                f"files folder {self.folder} cannot be made ({exc.strerror or exc}): make "
                "its parent folder first, or pass --files DIR"
            ) from None
        changed = make_private([self.folder, self.folder / PARTIAL], f"files folder {self.folder}")
        if changed:
            log.warning("the files folder was open to other users; made private: %s", changed)

    def _take_folder(self) -> int:
        """One broker per folder: another's partial uploads would look like strays."""
        path = self.folder / LOCK_NAME
        with private_umask():
            fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            os.close(fd)
            raise ConfigError(
                f"files folder {self.folder} is in use by another broker: give this one its "
                "own with --files DIR"
            ) from None
        return fd

    # --- bytes ------------------------------------------------------------------------

    def content(self, sha256: str) -> Path:
        return self.folder / sha256[:2] / sha256

    def partial(self, token: str) -> Path:
        return self.folder / PARTIAL / token

    def has_content(self, sha256: str) -> bool:
        return self.content(sha256).is_file()

    def keep(self, token: str, sha256: str, size: int) -> bool:
        """Move a checked upload to its place; False if those bytes were there already
        (the upload's copy is deleted). A copy there of another size (a disk that
        failed it) is replaced by the checked one."""
        target = self.content(sha256)
        if target.is_file() and target.stat().st_size == size:
            self.partial(token).unlink(missing_ok=True)
            return False
        with private_umask():
            target.parent.mkdir(exist_ok=True)
        os.replace(self.partial(token), target)
        return True

    def close(self) -> None:
        os.close(self._lock)
        if self._temporary:
            shutil.rmtree(self.folder, ignore_errors=True)

    # --- shares -----------------------------------------------------------------------

    def add(self, share: StoredFile) -> StoredFile:
        """Record a share (its ``id`` is ignored): the stored row, with its number."""

        def insert(db: sqlite3.Connection) -> int:
            cursor = db.execute(
                "INSERT INTO files (sha256, size, name, media, width, height, sender, room, "
                "recipient, ts, seq) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
                (
                    share.sha256, share.size, share.name, share.media, share.width,
                    share.height, share.sender, share.room, share.to, p.format_ts(share.ts),
                    share.seq,
                ),
            )  # fmt: skip
            return int(cursor.lastrowid or 0)

        fresh = not self.held(share.sha256)
        number = self.history.write(insert)
        if fresh:
            self.stored += share.size
        return replace(share, id=number)

    def numbered(self, file_id: int, seq: int) -> None:
        """The room event that announced file ``file_id`` has number ``seq``."""
        self.history.write(
            lambda db: db.execute("UPDATE files SET seq = ? WHERE id = ?", (seq, file_id))
        )

    def get(self, file_id: int) -> StoredFile | None:
        rows = self.history.rows(f"SELECT {_FILE_COLUMNS} FROM files WHERE id = ?", (file_id,))
        return _stored(rows[0]) if rows else None

    def held(self, sha256: str) -> bool:
        """Whether a share that has not expired holds these bytes."""
        rows = self.history.rows(
            "SELECT 1 FROM files WHERE sha256 = ? AND expired = 0 LIMIT 1", (sha256,)
        )
        return bool(rows)

    def in_room(self, room: str, limit: int) -> list[StoredFile]:
        """The newest ``limit`` files shared in ``room``, oldest first."""
        rows = self.history.rows(
            f"SELECT {_FILE_COLUMNS} FROM files WHERE room = ? ORDER BY id DESC LIMIT ?",
            (room, limit),
        )
        return [_stored(row) for row in reversed(rows)]

    def between(self, name: str, limit: int) -> list[StoredFile]:
        """The newest ``limit`` files shared privately by or with ``name``."""
        rows = self.history.rows(
            f"SELECT {_FILE_COLUMNS} FROM files WHERE recipient != '' AND "
            "(lower(sender) = ? OR lower(recipient) = ?) ORDER BY id DESC LIMIT ?",
            (name.lower(), name.lower(), limit),
        )
        return [_stored(row) for row in reversed(rows)]

    def oldest(self) -> StoredFile | None:
        """The oldest share that has not expired."""
        rows = self.history.rows(
            f"SELECT {_FILE_COLUMNS} FROM files WHERE expired = 0 ORDER BY id LIMIT 1"
        )
        return _stored(rows[0]) if rows else None

    def expire(self, share: StoredFile) -> None:
        """Mark ``share`` expired; its bytes go if no other share holds them."""
        self.history.write(
            lambda db: db.execute("UPDATE files SET expired = 1 WHERE id = ?", (share.id,))
        )
        if not self.held(share.sha256):
            self.stored -= share.size
            with contextlib.suppress(FileNotFoundError):
                self.content(share.sha256).unlink()

    # --- uploads ----------------------------------------------------------------------

    def upload_of(self, sender: str, offer: t.Offer, room: str, to: str) -> UploadRow | None:
        """The upload in progress of the offered file by ``sender`` to the same place:
        the same SHA-256, or (an offer without one) the same name; and the same size."""
        rows = self.history.rows(
            "SELECT token, sender, sha256, size, name, room, recipient, touched FROM uploads "
            "WHERE sender = ? AND size = ? AND room = ? AND recipient = ? AND "
            "(sha256 = ? AND sha256 != '' OR sha256 = '' AND ? = '' AND name = ?)",
            (sender.lower(), offer.size, room, to, offer.sha256, offer.sha256, offer.name),
        )
        return UploadRow(*rows[0]) if rows else None

    def begin(self, row: UploadRow) -> None:
        self.history.write(
            lambda db: db.execute(
                "INSERT INTO uploads (token, sender, sha256, size, name, room, recipient, "
                "touched) VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
                (row.token, row.sender, row.sha256, row.size, row.name, row.room, row.to,
                 row.touched),
            )
        )  # fmt: skip
        with private_umask():
            self.partial(row.token).touch()

    def touch(self, token: str, when: float) -> None:
        self.history.write(
            lambda db: db.execute("UPDATE uploads SET touched = ? WHERE token = ?", (when, token))
        )

    def end(self, token: str, keep_bytes: bool = False) -> None:
        """Forget an upload, and delete its bytes unless they were kept (``keep``)."""
        self.history.write(lambda db: db.execute("DELETE FROM uploads WHERE token = ?", (token,)))
        if not keep_bytes:
            self.partial(token).unlink(missing_ok=True)

    def reserved(self) -> int:
        """Bytes the uploads in progress will take when done."""
        rows = self.history.rows("SELECT SUM(size) FROM uploads")
        return int(rows[0][0] or 0)

    def idle_since(self, before: float) -> list[UploadRow]:
        rows = self.history.rows(
            "SELECT token, sender, sha256, size, name, room, recipient, touched FROM uploads "
            "WHERE touched < ?",
            (before,),
        )
        return [UploadRow(*row) for row in rows]

    def strays(self) -> list[Path]:
        """Partial files no upload holds (the broker stopped between the two writes)."""
        held = {row[0] for row in self.history.rows("SELECT token FROM uploads")}
        return [path for path in (self.folder / PARTIAL).iterdir() if path.name not in held]


def _stored(row: tuple[Any, ...]) -> StoredFile:
    id_, sha, size, name, media, width, height, sender, room, to, ts, seq, expired = row
    return StoredFile(
        int(id_), str(sha), int(size), str(name), str(media), int(width), int(height),
        str(sender), str(room), str(to), p.parse_ts(str(ts)), int(seq), bool(expired),
    )  # fmt: skip
