"""One broker per history file: an OS lock on a file beside it (``history.db.lock``).

Two brokers on one history file would number their rooms' events alike, mix their
chats and then fail on a duplicate number. So a broker takes ``fcntl.flock`` on
``PATH.lock`` before it touches ``PATH``, and holds it until it stops. The kernel
lets go of the lock when its process ends, however it ends (``kill -9`` included),
so a lock file left by a dead broker never blocks the next one. The file holds the
owner's pid and port, for a refusal to name.

The holder removes the file when it stops. Another broker may have opened the file
just before, and get its lock just after: so whoever gets the lock checks that the
file it locked is still the one at the path, and starts again if not.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
from pathlib import Path

from zchat.errors import ConfigError

LOCK_SUFFIX = ".lock"
MAX_LOCK_BYTES = 200  # what is read of another broker's lock file
# Tries at locking the file at the path when each locked file was removed meanwhile.
LOCK_TRIES = 10


class HistoryLock:
    """Holds the lock of the history file ``db`` for the broker on ``port`` (0: not
    known yet) until ``release``. Raises ConfigError if another broker holds it, or if
    the lock file cannot be made (the folder cannot be written)."""

    def __init__(self, db: Path, port: int = 0) -> None:
        self.path = db.with_name(db.name + LOCK_SUFFIX)
        for _ in range(LOCK_TRIES):
            fd = self._lock(db)
            if _same_file(fd, self.path):
                break
            os.close(fd)  # its holder removed it as it stopped: lock the one there now
        else:
            raise ConfigError(
                f"history database {db}: its lock file {self.path} was removed {LOCK_TRIES} "
                "times as this broker locked it (other brokers starting and stopping on "
                "it?); try again"
            )
        self._fd: int | None = fd
        self.owner(port)

    def owner(self, port: int) -> None:
        """Write who holds the lock: this process, serving ``port``."""
        if self._fd is None:
            return
        with contextlib.suppress(OSError):  # only said to the next one: a full disk may refuse
            os.ftruncate(self._fd, 0)
            os.pwrite(self._fd, json.dumps({"pid": os.getpid(), "port": port}).encode(), 0)

    def _lock(self, db: Path) -> int:
        try:
            fd = os.open(self.path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
        except OSError as exc:
            raise ConfigError(
                f"history database {db} cannot be written (its lock file {self.path}: "
                f"{exc.strerror or exc}): check the permissions of the file and of its "
                "folder, or pass --db PATH"
            ) from None
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            owner = _read_owner(fd)
            os.close(fd)
            raise ConfigError(
                f"history database {db} is in use by another broker ({owner}): two brokers "
                "on one file would mix their chats. Stop that one, or give this one its "
                "own file with --db PATH (by default each --port has its own)"
            ) from None
        return fd

    def release(self) -> None:
        """Remove the lock file, then let go of the lock (by closing it)."""
        if self._fd is not None:
            with contextlib.suppress(OSError):
                self.path.unlink()
            os.close(self._fd)
            self._fd = None


def _same_file(fd: int, path: Path) -> bool:
    try:
        there = path.stat()
    except FileNotFoundError:
        return False
    held = os.fstat(fd)
    return (held.st_dev, held.st_ino) == (there.st_dev, there.st_ino)


def _read_owner(fd: int) -> str:
    """The other broker, as its lock file describes it."""
    with contextlib.suppress(OSError, ValueError, KeyError, TypeError):
        owner = json.loads(os.pread(fd, MAX_LOCK_BYTES, 0))
        pid, port = int(owner["pid"]), int(owner["port"])
        return f"pid {pid}, port {port}" if port else f"pid {pid}"
    return "it has not said which yet"
