"""Who may read the broker's files: the history is private.

The history database, the files SQLite keeps beside it (``-wal``, ``-shm``,
``-journal``) and its lock file hold every room line, in both modes. They are made
readable by the broker's user only: made under umask 077 (``private_umask``), so files
are 0600 and folders 0700. A file found with permissions for others is made private at
start if it is the broker's user's (``make_private`` says what it changed); if it is
someone else's it is refused, since its owner could read it, or open it up again. A
refusal is a ConfigError that names the path and the commands that fix it.
"""

from __future__ import annotations

import contextlib
import os
import pwd
import stat
from collections.abc import Iterable, Iterator
from pathlib import Path

from zchat.errors import ConfigError

PRIVATE_UMASK = 0o077  # what is made while it is set is its user's only
OTHERS = 0o077  # group and others' permission bits


@contextlib.contextmanager
def private_umask() -> Iterator[None]:
    """While inside: files are made 0600 at most, folders 0700 (the umask is the
    process's: it is put back on the way out)."""
    old = os.umask(PRIVATE_UMASK)
    try:
        yield
    finally:
        os.umask(old)


def make_private(paths: Iterable[Path], what: str) -> list[str]:
    """Take group and others' permissions off each of ``paths`` that exists (a file or
    a folder). Returns what was changed (``PATH (was 644)``). ConfigError if one with
    such permissions belongs to another user, or cannot be changed. ``what``: what the
    files are, for the refusal ("history database")."""
    changed = []
    for path in paths:
        try:
            info = path.stat()
        except FileNotFoundError:
            continue
        mode = stat.S_IMODE(info.st_mode)
        if not mode & OTHERS:
            continue
        private = "700" if stat.S_ISDIR(info.st_mode) else "600"
        me = user_name(os.geteuid())
        if info.st_uid != os.geteuid():
            owner = user_name(info.st_uid)
            raise ConfigError(
                f"{what}: {path} belongs to {owner}, not to {me} who runs the broker, and "
                f"other users may use it (mode {mode:o}): they could read the history. "
                f"Make it {me}'s and private (chown {me} {path}; chmod {private} {path}), "
                "or pass --db with another path"
            )
        try:
            path.chmod(mode & ~OTHERS)
        except OSError as exc:
            raise ConfigError(
                f"{what}: other users may use {path} (mode {mode:o}) and it cannot be made "
                f"private ({exc.strerror or exc}): run chmod {private} {path}, or pass --db "
                "with another path"
            ) from None
        changed.append(f"{path} (was {mode:o})")
    return changed


def user_name(uid: int) -> str:
    """The login name of ``uid``, or ``uid N`` if it has none."""
    try:
        return pwd.getpwuid(uid).pw_name
    except KeyError:
        return f"uid {uid}"
