"""The history's writes: one transaction per batch, and what a full disk does to it.

The socket loop commits once per batch of frames, before it publishes the batch, so a
write is durable before anyone sees what it stored. A full disk must not stop the
broker, nor let it publish what it did not store:

* A write that SQLite cannot make (SQLITE_FULL: no room; SQLITE_IOERR: a failing disk)
  is undone, all of it (each write is a savepoint), and raises StorageFull: an Answer,
  which goes back to whoever asked for the write.
* A commit that fails takes its whole batch with it: ``commit`` raises StorageFull with
  the batch's room events (``lost``), and the loop publishes none of them.
* Lines are written in one statement per batch (``defer``, then ``flush`` before the
  commit): a flush that fails takes its batch with it, as a failed commit does.
* After a failure each write is committed at once, so that each one fails alone (and
  is refused to its sender) rather than with a batch, until one succeeds: the disk has
  room again, and batches resume. Nobody has to restart anything.
* The operator is told at most once a minute, and once when writes succeed again.

The states, and what moves them:

    writing ──a write or a commit fails──▶ full ──a write commits──▶ writing
    writing, full ──a failure undoes earlier writes of the batch──▶ lost
    lost (every write refused) ──commit() reports the batch──▶ full
"""

from __future__ import annotations

import contextlib
import logging
import sqlite3
import time
from collections.abc import Callable, Sequence
from typing import TypeVar

from zchat import protocol as p
from zchat.broker.actions import Answer

log = logging.getLogger("zchat.broker")
T = TypeVar("T")

# While writes are refused, at most one warning in this many seconds.
FULL_WARN_SECONDS = 60.0
# What SQLite says when a write cannot be made: no room, or a failing disk.
_WRITE_FAILURES = frozenset({sqlite3.SQLITE_FULL, sqlite3.SQLITE_IOERR})


class StorageFull(Answer):
    """A write the history could not keep: its disk is full (or failing). Raised by the
    write itself, which was undone, or by ``commit`` with the room events of the batch
    it could not keep (``lost``): none of those may be published."""

    def __init__(self, cause: str, lost: Sequence[p.RoomEvent] = ()) -> None:
        super().__init__(
            "storage-full",
            f"the broker cannot store anything ({cause}), and says nothing it has not "
            "stored: try again later, or tell its operator",
        )
        self.lost = tuple(lost)


class Writer:
    """The open transaction of one SQLite connection (autocommit off: BEGIN is ours)."""

    def __init__(
        self, db: sqlite3.Connection, path: str, clock: Callable[[], float] = time.monotonic
    ) -> None:
        self._db = db
        self._path = path
        self._clock = clock
        self.undone: Callable[[], None] = lambda: None  # told when a transaction is undone
        self._dirty = False
        self._unsaved: list[p.RoomEvent] = []  # room events written since the last commit
        self._lost: list[p.RoomEvent] | None = None  # the batch a failure undid ("lost")
        self._full = False  # a write failed: commit each at once till one succeeds ("full")
        self._cause = ""  # why the last write failed, in SQLite's words
        self._refused = 0  # writes refused since the disk was last writable
        self._warned = -FULL_WARN_SECONDS  # when a refusal was last logged
        self._told = False  # a refusal was logged since the disk was last writable
        db.execute("BEGIN")

    def write(self, statements: Callable[[], T], event: p.RoomEvent | None = None) -> T:
        """Run one write's statements, all or none of them; ``event``: the room event they
        store. StorageFull if the write cannot be made."""
        if self._lost is not None:  # this batch is gone: nothing more of it is kept
            raise self._refuse(self._cause)
        self._db.execute("SAVEPOINT write")
        try:
            done = statements()
            self._db.execute("RELEASE write")
        except BaseException as exc:
            self._undo_write()
            if isinstance(exc, sqlite3.OperationalError) and _failed_write(exc):
                self._full = True
                raise self._refuse(str(exc)) from None
            raise
        self._dirty = True
        if event is not None:
            self._unsaved.append(event)
        if self._full:
            lost = self._commit_now()
            if lost is not None:
                earlier = [e for e in lost if e is not event]
                if earlier:
                    self._lost = earlier
                raise self._refuse(self._cause)
        return done

    def defer(self, event: p.RoomEvent) -> bool:
        """Take the write of ``event`` to be made with its batch (by ``flush``, before
        the commit or anything else reads or writes): True; False if it must be made now,
        alone (the disk was full: each write is committed at once until one succeeds).
        StorageFull if this batch is already lost."""
        if self._full:
            return False
        if self._lost is not None:
            raise self._refuse(self._cause)
        self._dirty = True
        self._unsaved.append(event)
        return True

    def flush(self, statements: Callable[[], None]) -> None:
        """Make the deferred writes. Should SQLite fail to, the whole batch is lost, as
        when its commit fails: the next ``commit`` reports it."""
        try:
            statements()
        except sqlite3.OperationalError as exc:
            if not _failed_write(exc):
                raise
            if self._db.in_transaction:
                self._db.execute("ROLLBACK")
            self._restart()
            self._full = True
            self._refuse(str(exc))

    def commit(self) -> None:
        """Make the batch durable. StorageFull if it could not be: its ``lost`` events,
        stored no more, must not be published."""
        lost, self._lost = self._lost, None
        failed = self._commit_now()
        if failed is not None:
            self._refuse(self._cause, max(1, len(failed)))
            lost = [*(lost or []), *failed]
        if lost is not None:
            raise StorageFull(self._cause, lost)

    def close(self) -> None:
        """Commit what is left, and close the connection."""
        try:
            self.commit()
        except StorageFull as full:
            log.error(
                "history database %s: %d event(s) of the last batch could not be stored",
                self._path,
                len(full.lost),
            )
        try:
            if self._db.in_transaction:
                self._db.execute("COMMIT")  # the BEGIN of an empty transaction
        except sqlite3.Error:
            with contextlib.suppress(sqlite3.Error):
                self._db.execute("ROLLBACK")
        finally:
            self._db.close()

    def _commit_now(self) -> list[p.RoomEvent] | None:
        """Commit; None if done, else the room events the failed commit undid."""
        if not self._dirty:
            return None
        try:
            self._db.execute("COMMIT")
        except sqlite3.OperationalError as exc:
            if not _failed_write(exc):
                raise
            lost, self._unsaved = self._unsaved, []
            if self._db.in_transaction:
                self._db.execute("ROLLBACK")
            self._restart()
            self._full, self._cause = True, str(exc)
            return lost
        self._db.execute("BEGIN")
        self._dirty = False
        self._unsaved = []
        if self._full:
            self._full = False
            if self._told:  # no more often than the refusals were told
                log.warning(
                    "history database %s can be written again (%d write(s) were refused)",
                    self._path,
                    self._refused,
                )
            self._refused, self._told = 0, False
        return None

    def _undo_write(self) -> None:
        """Undo the failed write's statements; SQLite may have undone the whole
        transaction already, or must."""
        if self._db.in_transaction:
            try:
                self._db.execute("ROLLBACK TO write")
                self._db.execute("RELEASE write")
                return
            except sqlite3.Error:
                self._db.execute("ROLLBACK")
        self._restart()

    def _restart(self) -> None:
        """The open transaction was undone: what it held is lost; begin another."""
        if self._unsaved:
            self._lost = [*(self._lost or []), *self._unsaved]
        self._unsaved = []
        self._dirty = False
        self.undone()
        if not self._db.in_transaction:
            self._db.execute("BEGIN")

    def _refuse(self, cause: str, count: int = 1) -> StorageFull:
        """Count refused writes, warn at most once a minute, and say why."""
        self._cause = cause
        self._refused += count
        now = self._clock()
        if now - self._warned >= FULL_WARN_SECONDS:
            self._warned, self._told = now, True
            log.error(
                "history database %s cannot be written (%s): lines, topics and bans are "
                "refused, and join and leave notices go unannounced, until it can "
                "(%d write(s) refused so far; at most one such warning a minute)",
                self._path,
                cause,
                self._refused,
            )
        return StorageFull(cause)


def _failed_write(exc: sqlite3.OperationalError) -> bool:
    """SQLite could not write: no room (SQLITE_FULL), or a failing disk (SQLITE_IOERR)."""
    code: int = getattr(exc, "sqlite_errorcode", 0)
    return code & 0xFF in _WRITE_FAILURES
