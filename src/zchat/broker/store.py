"""The broker's history: every room event and each room's sequence and topic, in SQLite.

Durability: the socket loop commits once per batch of frames, before it publishes that
batch. So whatever a client has seen (its own echo included) is in the WAL file: a
killed broker (kill -9) loses nothing it published, and never numbers two events
alike. With ``synchronous=NORMAL`` a power cut may lose the last commits; the file
stays consistent either way.

Bans are kept here too, so they outlast a restart.

Who is in each room, as its stored events tell it, is kept too (``present``): a join
adds a name, a leave removes it, a nick renames it, each in the same write as its
event. A broker that ended without announcing who left (stopped, or killed) leaves
names there: the next broker reads them (``present()``) and closes those sessions, or
lets them go on silently when their clients come back (orphans.py). A file from before
this table is upgraded on opening: its table is made from the stored events.

Private messages are never stored: in open mode a name is not an identity (whoever
takes "bob" tomorrow is not today's Bob), so no stored DM could be kept readable by its
two parties alone.

Opening a file changes nothing in it until it has passed every check: it is a
database, intact (``quick_check``), of this broker's mode, and no other broker holds
it (lockfile.py). Then a write proves it can be written. A folder given for it must
exist; only the default folder is made.

The history is for the broker's user only, in both modes (filemodes.py): the file, the
ones SQLite keeps beside it and the lock file are made 0600, the default folder 0700.
Ones found open to other users are made private at start (one warning says which), or
refused if they belong to another user. Its permissions are the only change made to a
file before its checks.

A full disk does not stop the broker: writing.py says what happens instead.
"""

from __future__ import annotations

import contextlib
import logging
import sqlite3
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any, TypeVar

from zchat import protocol as p
from zchat.broker.lockfile import LOCK_SUFFIX, HistoryLock
from zchat.broker.writing import StorageFull, Writer
from zchat.errors import ConfigError, ProtocolError
from zchat.filemodes import data_folder, make_private, private_umask

__all__ = ["DEFAULT_RETENTION", "Ban", "HistoryStore", "StorageFull", "default_path"]

DEFAULT_RETENTION = 10_000  # events kept per room
# Old events are deleted once a room has this many more than it keeps, in one statement.
PRUNE_SLACK = 500
# The broker on this port keeps the history file name it always had (history.db); one
# on any other port has its own (history-PORT.db), so that two brokers started with
# their defaults never share a file.
DEFAULT_PORT = 5005
# The files of a history: the database, SQLite's beside it, and the broker's lock file.
PRIVATE_FILE_ENDINGS = ("", "-wal", "-shm", "-journal", LOCK_SUFFIX)

log = logging.getLogger("zchat.broker")
T = TypeVar("T")

_SCHEMA = """
CREATE TABLE IF NOT EXISTS rooms (
    room  TEXT PRIMARY KEY,
    seq   INTEGER NOT NULL,
    topic TEXT NOT NULL DEFAULT ''
) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS events (
    room TEXT NOT NULL,
    seq  INTEGER NOT NULL,
    body TEXT NOT NULL,
    PRIMARY KEY (room, seq)
) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS meta (
    key   TEXT PRIMARY KEY,
    value TEXT NOT NULL
) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS files (
    id        INTEGER PRIMARY KEY,
    sha256    TEXT NOT NULL,
    size      INTEGER NOT NULL,
    name      TEXT NOT NULL,
    media     TEXT NOT NULL DEFAULT '',
    width     INTEGER NOT NULL DEFAULT 0,
    height    INTEGER NOT NULL DEFAULT 0,
    sender    TEXT NOT NULL,
    room      TEXT NOT NULL DEFAULT '',  -- shared in a room, or
    recipient TEXT NOT NULL DEFAULT '',  -- privately with one user
    ts        TEXT NOT NULL,
    seq       INTEGER NOT NULL DEFAULT 0,  -- its event in the room's history
    expired   INTEGER NOT NULL DEFAULT 0
);
CREATE INDEX IF NOT EXISTS files_by_sha256 ON files (sha256);
CREATE TABLE IF NOT EXISTS uploads (
    token     TEXT PRIMARY KEY,
    sender    TEXT NOT NULL,  -- lower case
    sha256    TEXT NOT NULL,
    size      INTEGER NOT NULL,
    name      TEXT NOT NULL,
    room      TEXT NOT NULL DEFAULT '',
    recipient TEXT NOT NULL DEFAULT '',
    touched   REAL NOT NULL  -- wall clock: an upload outlives the broker
) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS accounts (
    name    TEXT PRIMARY KEY,  -- lower case
    shown   TEXT NOT NULL,
    hash    TEXT NOT NULL,     -- passwords.py: scrypt, salted; never the password
    admin   INTEGER NOT NULL DEFAULT 0,
    created TEXT NOT NULL,
    failed  INTEGER NOT NULL DEFAULT 0,  -- logins refused since the last one
    last    TEXT NOT NULL DEFAULT '',    -- when the last login was
    seen_from TEXT NOT NULL DEFAULT ''   -- the address it came from
) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS bans (
    name   TEXT PRIMARY KEY,  -- lower case
    shown  TEXT NOT NULL,
    reason TEXT NOT NULL,
    by     TEXT NOT NULL,
    ts     TEXT NOT NULL
) WITHOUT ROWID;
"""
# Made apart from _SCHEMA, with its rows, in one transaction: see _upgrade.
_PRESENT = """
CREATE TABLE present (
    room  TEXT NOT NULL,
    name  TEXT NOT NULL,  -- lower case
    shown TEXT NOT NULL,
    PRIMARY KEY (room, name)
) WITHOUT ROWID
"""
# The stored events that change who is present (their bodies start with their type).
# stored bodies as json.dumps wrote them before, and as msgspec does; a line that only
# quotes one is decoded, found to be a line, and left alone
_PRESENCE_EVENTS = tuple(
    f'%"type":{space}"{kind}"%' for kind in ("join", "leave", "nick") for space in ("", " ")
)


@dataclass(frozen=True)
class Ban:
    name: str
    reason: str
    by: str
    ts: datetime


def default_folder() -> Path:
    """filemodes.data_folder(): the one folder made if missing."""
    return data_folder()


def default_path(secure: bool | str = False, port: int = DEFAULT_PORT) -> Path:
    """history.db in default_folder() for the broker on the default port, history-PORT.db
    for one on another port; a secure broker's is secure-history.db (secure-history-PORT.db)
    beside it, an accounts broker's accounts-history.db (the modes never share a
    history). ``secure``: True for "secure", or the mode's name."""
    mode = ("secure" if secure else "open") if isinstance(secure, bool) else secure
    name = "history" if mode == "open" else f"{mode}-history"
    return default_folder() / (f"{name}.db" if port == DEFAULT_PORT else f"{name}-{port}.db")


class HistoryStore:
    def __init__(
        self,
        path: str | Path = ":memory:",
        retention: int = DEFAULT_RETENTION,
        mode: str = "open",
        *,
        port: int = 0,
        clock: Callable[[], float] = time.monotonic,
    ):
        """``mode``: "open" or "secure", the broker's. A file keeps the history of one
        mode only: in open mode anyone may speak under any free name, so those lines
        must never be shown among lines whose names keys vouch for. ``port``: the
        broker's, for another broker refused the file to be told whose it is."""
        self.path = str(path)
        self.retention = retention
        self.mode = mode
        self._closed = False
        self._oldest: dict[str, int] = {}  # room -> its oldest seq kept
        # lines taken since the last flush: written in one statement before the commit,
        # or before anything else reads or writes (see Writer.defer)
        self._lines: list[tuple[str, int, str]] = []  # (room, seq, body)
        self._last: dict[str, tuple[int, str]] = {}  # room -> (seq, topic) after them
        self._lock: HistoryLock | None = None
        if self.path == ":memory:":
            self._db = self._open()
        else:
            self._db = self._open_private(self._folder_ready(Path(self.path)), port)
        self._writer = Writer(self._db, self.path, clock)
        self._writer.undone = self._oldest.clear  # the prunes of an undone batch are undone

    def serving(self, port: int) -> None:
        """The broker's port, once it is bound (``port`` 0 at start picks one): another
        broker refused this file is told it."""
        if self._lock is not None:
            self._lock.owner(port)

    def _open_private(self, path: Path, port: int) -> sqlite3.Connection:
        """Lock and open the file at ``path``, keeping it and the files beside it
        private (filemodes.py): what exists already is made so first, or refused."""
        files = [path.with_name(path.name + end) for end in PRIVATE_FILE_ENDINGS]
        if path.parent.absolute() == default_folder().absolute():
            files.append(path.parent)  # zchat's own folder; one given with --db is the user's
        changed = make_private(files, f"history database {path}")
        with private_umask():
            self._lock = HistoryLock(path, port)
            try:
                db = self._open()
            except BaseException:
                self._lock.release()
                raise
        # SQLite makes -wal and -shm with the database's mode, which is private by now
        changed += make_private(files, f"history database {path}")
        if changed:
            log.warning(
                "the history was readable by other users; made private (0600, folder 0700): %s",
                ", ".join(changed),
            )
        return db

    def _folder_ready(self, path: Path) -> Path:
        """``path``, once its folder exists: the default folder is made (private), any
        other must be there already (a mistyped --db must not make folders from the
        root down)."""
        folder = path.parent
        if folder.is_dir():
            return path
        if folder.absolute() == default_folder().absolute():
            try:
                folder.parent.mkdir(parents=True, exist_ok=True)
                with private_umask():
                    folder.mkdir(exist_ok=True)
            except OSError as exc:
                raise ConfigError(
                    f"history database {path} cannot be made: no folder {folder}, and "
                    f"making it failed ({exc.strerror or exc}); pass --db PATH"
                ) from None
            return path
        what = "is not a folder" if folder.exists() else "does not exist"
        raise ConfigError(
            f"history database {path} cannot be made: {folder} {what}. Make the folder "
            f"first (mkdir -p {folder}), or pass --db with another path"
        )

    def _open(self) -> sqlite3.Connection:
        where = self.path
        db: sqlite3.Connection | None = None
        unusable = (
            f"history database {where} cannot be used ({{}}); nothing was changed. "
            "Move the file away to start with an empty history, or pass --db PATH"
        )
        try:
            db = sqlite3.connect(where, isolation_level=None, check_same_thread=False)
            # read only, until the file has passed every check: a damaged file or
            # another mode's stays exactly as it was
            check = db.execute("PRAGMA quick_check").fetchone()[0]
            if check != "ok":
                raise ConfigError(
                    f"history database {where} is damaged ({check}); nothing was changed. "
                    "Move the file away to start with an empty history, or pass --db PATH"
                )
            tables = {name for (name,) in db.execute("SELECT name FROM sqlite_master")}
            used = "rooms" in tables and db.execute("SELECT 1 FROM rooms LIMIT 1").fetchone()
            kept = (
                db.execute("SELECT value FROM meta WHERE key = 'mode'").fetchone()
                if "meta" in tables
                else None
            )
            # a new file, or one from before modes were kept (open mode's)
            kept_mode = kept[0] if kept else ("open" if used else self.mode)
            if kept_mode != self.mode:
                raise ConfigError(
                    f"history database {where} holds the history of a broker in {kept_mode} "
                    f"mode; a broker in {self.mode} mode keeps its own: pass --db with "
                    "another file"
                )
        except sqlite3.DatabaseError as exc:
            if db is not None:
                db.close()
            if isinstance(exc, sqlite3.OperationalError) and not _damaged(exc):
                raise ConfigError(_unwritable(where, exc)) from None  # a locked folder, say
            raise ConfigError(unusable.format(exc)) from None
        except ConfigError:
            if db is not None:
                db.close()
            raise
        try:
            mode = db.execute("PRAGMA journal_mode=WAL").fetchone()[0]
            db.execute("PRAGMA synchronous=NORMAL")
            db.executescript(_SCHEMA)
            if "present" not in tables:
                _upgrade(db)
            # a write (the mode, kept or new) proves at once that the file can be written
            db.execute(
                "INSERT INTO meta (key, value) VALUES ('mode', ?) "
                "ON CONFLICT (key) DO UPDATE SET value = excluded.value",
                (self.mode,),
            )
        except sqlite3.DatabaseError as exc:
            db.close()
            raise ConfigError(_unwritable(where, exc)) from None
        if where != ":memory:" and mode.lower() != "wal":
            db.close()
            raise ConfigError(f"history database {where} cannot use WAL mode (got {mode})")
        return db

    # --- rooms ------------------------------------------------------------------------

    def room_state(self, room: str) -> tuple[int, str]:
        """(last seq, topic) of a room; (0, "") for a room never seen."""
        self._flush()
        row = self._db.execute("SELECT seq, topic FROM rooms WHERE room = ?", (room,)).fetchone()
        return (row[0], row[1]) if row else (0, "")

    def set_topic(self, room: str, seq: int, topic: str) -> None:
        self._flush()
        self._writer.write(lambda: self._save_room(room, seq, topic))

    # --- events -----------------------------------------------------------------------

    def append(self, event: p.RoomEvent, topic: str, frame: bytes = b"") -> None:
        """Store one event, in the open transaction; ``commit`` makes it durable.
        StorageFull if it cannot be stored: then nothing of it is. ``frame``: the event
        as published (encode_event), stored as it is; made here if not given."""
        body = (frame or p.encode_event(event)).decode("utf-8")
        if type(event) is p.Chat and self._writer.defer(event):  # a line: with its batch
            self._lines.append((event.room, event.seq, body))
            self._last[event.room] = (event.seq, topic)
            return
        self._flush()  # in order: a room's row never goes back
        self._writer.write(lambda: self._insert(event, topic, body), event)

    def _insert(self, event: p.RoomEvent, topic: str, body: str) -> None:
        self._db.execute(
            "INSERT INTO events (room, seq, body) VALUES (?, ?, ?)", (event.room, event.seq, body)
        )
        self._save_room(event.room, event.seq, topic)
        _track(self._db, event)
        self._prune(event.room, event.seq)

    def _flush(self) -> None:
        """Write the lines taken since the last flush: one statement for all of them,
        each room's row once."""
        if self._lines:
            self._writer.flush(self._write_lines)

    def _write_lines(self) -> None:
        lines, last = self._lines, self._last
        self._lines, self._last = [], {}  # written, or lost with their batch
        self._db.executemany("INSERT INTO events (room, seq, body) VALUES (?, ?, ?)", lines)
        for room, (seq, topic) in last.items():
            self._save_room(room, seq, topic)
            self._prune(room, seq)

    def _prune(self, room: str, seq: int) -> None:
        """Delete a room's events older than the retention, once it is PRUNE_SLACK past."""
        oldest = self._oldest.get(room)
        if oldest is None:
            row = self._db.execute("SELECT MIN(seq) FROM events WHERE room = ?", (room,))
            oldest = row.fetchone()[0] or seq
        if seq - oldest >= self.retention + PRUNE_SLACK:
            oldest = seq - self.retention + 1
            self._db.execute("DELETE FROM events WHERE room = ? AND seq < ?", (room, oldest))
        self._oldest[room] = oldest  # reached only if every statement succeeded

    def _save_room(self, room: str, seq: int, topic: str) -> None:
        self._db.execute(
            "INSERT INTO rooms (room, seq, topic) VALUES (?, ?, ?) "
            "ON CONFLICT (room) DO UPDATE SET seq = excluded.seq, topic = excluded.topic",
            (room, seq, topic),
        )

    def history(
        self, room: str, after: int, before: int, limit: int
    ) -> tuple[list[p.RoomEvent], int]:
        """The newest ``limit`` events with after < seq < before, oldest first, and how
        many wanted events are not among them: for a range (``after`` > 0) every seq in
        it, for the last ``limit`` (``after`` 0) only those. Pruned by the retention, or
        beyond ``limit``, they are lost to the asker."""
        self._flush()
        rows = self._db.execute(
            "SELECT body FROM events WHERE room = ? AND seq > ? AND seq < ? "
            "ORDER BY seq DESC LIMIT ?",
            (room, after, before, limit),
        ).fetchall()
        events = [p.decode_stored(body) for (body,) in reversed(rows)]
        # a range asked for (a gap, a rejoin) wants all of it; "the last N" only N
        wanted = max(0, before - after - 1) if after > 0 else min(limit, max(0, before - 1))
        return events, wanted - len(events)

    def present(self) -> dict[str, list[str]]:
        """Room -> the names its stored events leave in it (joined, never left), sorted."""
        self._flush()
        rows = self._db.execute("SELECT room, shown FROM present ORDER BY room, shown")
        found: dict[str, list[str]] = {}
        for room, shown in rows:
            found.setdefault(room, []).append(shown)
        return found

    def rewrite(self, event: p.RoomEvent) -> None:
        """Store ``event`` in place of the stored event with its room and seq (a shared
        file's, once the file has expired)."""
        body = p.encode_event(event).decode("utf-8")
        self._flush()
        self._writer.write(
            lambda: self._db.execute(
                "UPDATE events SET body = ? WHERE room = ? AND seq = ?",
                (body, event.room, event.seq),
            )
        )

    def event(self, room: str, seq: int) -> p.RoomEvent | None:
        self._flush()
        row = self._db.execute(
            "SELECT body FROM events WHERE room = ? AND seq = ?", (room, seq)
        ).fetchone()
        return p.decode_stored(row[0]) if row else None

    # --- the other tables: shared files (broker/filestore.py) ------------------------

    def write(self, statements: Callable[[sqlite3.Connection], T]) -> T:
        """Run a write's statements in the open transaction (all or none of them);
        ``commit`` makes them durable with the batch. StorageFull if they cannot be."""
        self._flush()
        return self._writer.write(lambda: statements(self._db))

    def rows(self, sql: str, args: tuple[object, ...] = ()) -> list[tuple[Any, ...]]:
        self._flush()
        return self._db.execute(sql, args).fetchall()

    # --- bans -------------------------------------------------------------------------

    def ban(self, name: str, reason: str, by: str, ts: datetime) -> None:
        self._writer.write(
            lambda: self._db.execute(
                "INSERT INTO bans (name, shown, reason, by, ts) VALUES (?, ?, ?, ?, ?) "
                "ON CONFLICT (name) DO UPDATE SET shown = excluded.shown, "
                "reason = excluded.reason, by = excluded.by, ts = excluded.ts",
                (name.lower(), name, reason, by, p.format_ts(ts)),
            )
        )

    def unban(self, name: str) -> bool:
        """Lift a ban; False if there was none."""
        gone = self._writer.write(
            lambda: self._db.execute("DELETE FROM bans WHERE name = ?", (name.lower(),)).rowcount
        )
        return gone > 0

    def ban_of(self, name: str) -> Ban | None:
        row = self._db.execute(
            "SELECT shown, reason, by, ts FROM bans WHERE name = ?", (name.lower(),)
        ).fetchone()
        return Ban(row[0], row[1], row[2], p.parse_ts(row[3])) if row else None

    def bans(self) -> list[Ban]:
        rows = self._db.execute("SELECT shown, reason, by, ts FROM bans ORDER BY name")
        return [Ban(shown, reason, by, p.parse_ts(ts)) for shown, reason, by, ts in rows]

    # --- transactions -----------------------------------------------------------------

    def commit(self) -> None:
        """Make the batch durable; StorageFull if it could not be (writing.py)."""
        self._flush()
        self._writer.commit()

    def close(self) -> None:
        if self._closed:
            return
        self._closed = True
        try:
            self._flush()
            self._writer.close()
        finally:
            if self._lock is not None:
                self._lock.release()


def _track(db: sqlite3.Connection, event: p.RoomEvent) -> None:
    """Keep ``present`` as the stored events tell it, in the write of ``event``."""
    gone, came = None, None
    match event:
        case p.Joined():
            came = event.sender
        case p.Left():
            gone = event.sender
        case p.Renamed():
            gone, came = event.sender, event.name
    if gone is not None:
        db.execute("DELETE FROM present WHERE room = ? AND name = ?", (event.room, gone.lower()))
    if came is not None:
        db.execute(
            "INSERT INTO present (room, name, shown) VALUES (?, ?, ?) "
            "ON CONFLICT (room, name) DO UPDATE SET shown = excluded.shown",
            (event.room, came.lower(), came),
        )


def _upgrade(db: sqlite3.Connection) -> None:
    """Make ``present`` in a file from before it, from the events the file holds, all in
    one transaction (a broker killed meanwhile leaves the file as it was). Events the
    retention deleted are not there to tell: a session that began before them is
    missed, and goes unclosed in history as it did before."""
    db.execute("BEGIN")
    try:
        db.execute(_PRESENT)
        where = " OR ".join("body LIKE ?" for _ in _PRESENCE_EVENTS)
        rows = db.execute(
            f"SELECT body FROM events WHERE {where} ORDER BY room, seq", _PRESENCE_EVENTS
        )
        for (body,) in rows.fetchall():
            with contextlib.suppress(ValueError, ProtocolError):  # not ours to repair
                _track(db, p.decode_stored(body))
        db.execute("COMMIT")
    except BaseException:
        db.execute("ROLLBACK")
        raise


def _damaged(exc: sqlite3.DatabaseError) -> bool:
    """The file is not a database, or a damaged one (not a file we may not open)."""
    code: int = getattr(exc, "sqlite_errorcode", 0)
    return code & 0xFF in (sqlite3.SQLITE_CORRUPT, sqlite3.SQLITE_NOTADB)


def _unwritable(where: str, exc: sqlite3.DatabaseError) -> str:
    return (
        f"history database {where} cannot be written ({exc}): check the permissions of "
        "the file and of its folder, or pass --db PATH"
    )
