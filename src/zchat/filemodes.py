"""Who may read and change the broker's files: the history is private, and the keys
folder can be changed by the broker's user (or root) alone.

Two kinds of files, two rules:

* **Private data**: the history database, the files SQLite keeps beside it (``-wal``,
  ``-shm``, ``-journal``) and its lock file hold every room line, in both modes. They
  are made readable by the broker's user only: made under umask 077
  (``private_umask``), so files are 0600 and folders 0700. A file found with
  permissions for others is made private at start if it is the broker's user's
  (``make_private`` says what it changed); if it is someone else's it is refused, since
  its owner could read it, or open it up again.
* **What decides who gets in** (the keys folder): as OpenSSH's StrictModes, a file or
  folder in it that another user may change is refused (``check_unchangeable``): one
  that group or others may write, one that belongs to a user other than the broker's
  and root, one under a folder that others may write and that is not sticky (they
  could rename it and put their own in its place). The broker's secret key must be
  for its user's eyes only (``check_secret``).

Every refusal is a ConfigError that names the path and the command that fixes it.
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
OTHERS_WRITE = stat.S_IWGRP | stat.S_IWOTH
OTHERS_READ = stat.S_IRGRP | stat.S_IROTH


def data_folder() -> Path:
    """$XDG_DATA_HOME/zchat, or ~/.local/share/zchat: where the broker keeps its history
    and ``zchat join`` the lines a user sent (made private, 0700, when made)."""
    base = os.environ.get("XDG_DATA_HOME") or Path.home() / ".local" / "share"
    return Path(base) / "zchat"


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
                f"{what}: {path} belongs to {owner}, not to {me} (who runs the broker), and "
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


def check_unchangeable(path: Path, could: str) -> None:
    """ConfigError unless ``path`` may be changed by this user or root alone: it belongs
    to one of them, and neither group nor others may write to it. ``could``: what
    another user could do then ("add a key")."""
    info = path.stat()
    me = os.geteuid()
    if info.st_uid not in (me, 0):
        owner, broker = user_name(info.st_uid), user_name(me)
        allowed = f"{broker} (who runs the broker)" + ("" if me == 0 else " or root")
        raise ConfigError(
            f"{path} belongs to {owner}, not to {allowed}: {owner} could {could}; "
            f"run chown {broker} {path}"
        )
    if info.st_mode & OTHERS_WRITE:
        raise ConfigError(
            f"{path} is writable by other users: any of them could {could}; run chmod go-w {path}"
        )


def check_folders_above(path: Path, could: str) -> None:
    """ConfigError if a folder above ``path`` lets other users rename what is in it
    (they may write to it, and it is not sticky as /tmp is)."""
    for above in path.absolute().parents:
        mode = above.stat().st_mode
        if mode & OTHERS_WRITE and not mode & stat.S_ISVTX:
            raise ConfigError(
                f"{above} is writable by other users and not sticky (mode "
                f"{stat.S_IMODE(mode):o}): any of them could rename {path} and put their "
                f"own in its place, to {could}; run chmod go-w {above}, or move {path} "
                "under folders only you can write to"
            )


def check_secret(path: Path, could: str) -> None:
    """ConfigError if group or others have any permission on the secret file ``path``."""
    mode = stat.S_IMODE(path.stat().st_mode)
    if mode & OTHERS:
        how = "readable" if mode & OTHERS_READ else "writable"
        raise ConfigError(
            f"{path} is {how} by other users (mode {mode:o}): any of them could {could}; "
            f"run chmod 600 {path}"
        )


def user_name(uid: int) -> str:
    """The login name of ``uid``, or ``uid N`` if it has none."""
    try:
        return pwd.getpwuid(uid).pw_name
    except KeyError:
        return f"uid {uid}"
