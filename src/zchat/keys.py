"""CURVE key files for secure mode: making them, and reading the broker's keys folder.

A key pair is two files in ZeroMQ's certificate format (what ``zmq.auth`` reads):
``NAME.key`` holds the public key and may be shared; ``NAME.key_secret`` holds both
halves and is readable by its owner only. The broker's folder looks like this::

    keys/
      broker.key_secret     the broker's pair (clients are given broker.key)
      users/alice.key       one public key per allowed user; the file name is the name
      admins                optional: names of the users who may /kick, /ban, /unban

A key's name is a user name that does not start with '.' (``check_key_name``):
``zchat keygen`` makes no other, and the broker skips, with a warning naming it, any
file in ``users/`` whose name it could not have made (``.hidden.key``, ``..key``), or
too long to be a key file (``MAX_KEY_FILE_BYTES``: one is some 300 bytes).

The folder decides who gets in and who is admin, so nobody but the broker's user (or
root) may change it, as OpenSSH's StrictModes has it (filemodes.py): the folder,
``users/``, each key file and ``admins`` must belong to one of them and be writable by
nobody else, ``broker.key_secret`` readable by its owner alone, and no folder above may
let others rename the folder. ``load_keyring`` refuses anything else, naming the path
and the ``chmod`` (or ``chown``) that fixes it. Files are read up to a bound only.

Reading keys never imports zmq at module level, so ``zchat --help`` stays fast.
"""

from __future__ import annotations

import contextlib
import logging
import os
import stat
from dataclasses import dataclass
from pathlib import Path

from zchat.errors import ConfigError, InvalidInput
from zchat.filemodes import check_folders_above, check_secret, check_unchangeable
from zchat.values import check_name

BROKER_KEY = "broker"  # the broker's key pair: broker.key and broker.key_secret
USERS_DIR = "users"
ADMINS_FILE = "admins"
PUBLIC_SUFFIX = ".key"
# What is read of a key file (one is some 300 bytes) and of the admins file (names, one
# a line): a bigger one is not read at all, so that no file can make loading slow.
MAX_KEY_FILE_BYTES = 4096
MAX_ADMINS_BYTES = 64 * 1024

log = logging.getLogger(__name__)


def check_key_name(name: str) -> str:
    """Return ``name`` if a key may be named so, else raise InvalidInput: a user name
    (values.check_name) that does not start with '.', so that no key file is hidden
    and none is named after a folder ('.', '..')."""
    name = check_name(name)
    if name.startswith("."):
        raise InvalidInput(
            f"name {name!r} starts with '.': its key files would be hidden; start it "
            "with a letter, a digit, '_' or '-'"
        )
    return name


def keygen(name: str, directory: str | Path = ".") -> tuple[Path, Path]:
    """Write NAME.key and NAME.key_secret (mode 0600) into ``directory``; never
    overwrite an existing pair. Returns the two paths."""
    import zmq.auth

    try:
        name = check_key_name(name)
    except InvalidInput as exc:
        raise ConfigError(f"cannot name a key {name!r}: {exc}") from None
    folder = Path(directory)
    public, secret = folder / f"{name}{PUBLIC_SUFFIX}", folder / f"{name}.key_secret"
    for path in (public, secret):
        if path.exists():
            raise ConfigError(f"{path} exists already: move it away first, or pick another name")
    folder.mkdir(parents=True, exist_ok=True)
    old_umask = os.umask(0o077)  # the secret is never readable by others, not even briefly
    try:
        made_public, made_secret = zmq.auth.create_certificates(folder, name)
    finally:
        os.umask(old_umask)
    Path(made_public).chmod(0o644)
    return Path(made_public), Path(made_secret)


def load_public(path: str | Path) -> bytes:
    """The public key (Z85, 40 bytes) in a .key or .key_secret file."""
    public, _ = _load(path)
    return public


def load_pair(path: str | Path) -> tuple[bytes, bytes]:
    """The public and secret keys in a .key_secret file."""
    public, secret = _load(path)
    if secret is None:
        raise ConfigError(
            f"{path} holds no secret key: give the .key_secret file (the .key file is "
            "the public half, for the broker's operator)"
        )
    return public, secret


def _load(path: str | Path) -> tuple[bytes, bytes | None]:
    """The keys in a certificate file, read as ``zmq.auth.load_certificate`` reads
    them (``public-key = "..."`` and ``secret-key = "..."`` lines), but read only up to
    MAX_KEY_FILE_BYTES."""
    file = Path(path)
    if not file.is_file():
        raise ConfigError(f"no key file at {file}")
    public: bytes | None = None
    secret: bytes | None = None
    for raw in read_bounded(file, MAX_KEY_FILE_BYTES, "a key file").splitlines():
        line = raw.strip()
        if line.startswith(b"public-key"):
            public = _value(line)
        elif line.startswith(b"secret-key"):
            secret = _value(line)
        if public and secret:
            break
    if public is None:
        raise ConfigError(f"{file} is not a zchat key file: no public-key in it")
    if len(public) != 40 or (secret is not None and len(secret) != 40):
        raise ConfigError(f"{file} is not a zchat key file: no 40-character Z85 key in it")
    return public, secret


def _value(line: bytes) -> bytes:
    return line.partition(b"=")[2].strip(b" \t'\"")


def read_bounded(path: Path, limit: int, what: str) -> bytes:
    """The bytes of the regular file ``path``; ConfigError if it holds more than
    ``limit`` (what it holds past that is never read), or cannot be read. ``what``:
    what it should be, for the error ("a key file")."""
    try:  # not blocked by a FIFO put in its place: it is refused as not a regular file
        fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK | os.O_CLOEXEC)
    except OSError as exc:
        raise ConfigError(f"cannot read {path}: {exc.strerror or exc}") from None
    with os.fdopen(fd, "rb") as file:
        info = os.fstat(fd)
        if not stat.S_ISREG(info.st_mode):
            raise ConfigError(f"{path} is not a regular file")
        if info.st_size > limit:
            raise ConfigError(_too_big(path, info.st_size, limit, what))
        data = file.read(limit + 1)
    if len(data) > limit:  # it grew since fstat
        raise ConfigError(_too_big(path, len(data), limit, what))
    return data


def _too_big(path: Path, size: int, limit: int, what: str) -> str:
    more = "more than " if size == limit + 1 else ""
    return (
        f"{path} holds {more}{size:,} bytes, and {what} holds at most {limit:,}: it is not "
        "one zchat made"
    )


@dataclass(frozen=True)
class KeyRing:
    """What a secure broker knows: its own pair, who may connect, and who is admin."""

    public: bytes
    secret: bytes
    users: dict[bytes, str]  # Z85 public key -> user name
    admins: frozenset[str]  # lower-case names
    skipped: tuple[Path, ...] = ()  # files in users/ that were not read (each logged)

    def name_of(self, public: bytes) -> str | None:
        return self.users.get(public)


def load_keyring(folder: str | Path) -> KeyRing:
    """Read a keys folder (see the module docstring); every problem is a ConfigError
    that names the file, but a user key file whose name no key could have, or too long
    to be one, which is skipped with a warning."""
    root = Path(folder)
    if not root.is_dir():
        raise ConfigError(
            f"no keys folder at {root}: make one with `zchat keygen broker --dir {root}`"
        )
    check_folders_above(root, "choose who gets in")
    check_unchangeable(root, "replace the broker's keys, or make themselves admin")
    secret_file = root / f"{BROKER_KEY}.key_secret"
    if secret_file.exists():
        check_unchangeable(secret_file, "replace the broker's key")
        check_secret(secret_file, "pose as this broker to its users")
    public, secret = load_pair(secret_file)
    users: dict[bytes, str] = {}
    names: dict[str, Path] = {}
    skipped: list[Path] = []
    user_dir = root / USERS_DIR
    if user_dir.is_dir():
        check_unchangeable(user_dir, "add a key")
    for path in sorted(user_dir.glob(f"*{PUBLIC_SUFFIX}")) if user_dir.is_dir() else []:
        name = _user_of(path)
        if name is None:
            skipped.append(path)
            continue
        check_unchangeable(path, f"put their own key in place of {name}'s")
        key = load_public(path)
        if key in users:
            raise ConfigError(f"{path} and {names[users[key].lower()]} hold the same key")
        if name.lower() in names:
            raise ConfigError(f"{path} and {names[name.lower()]} name the same user")
        users[key] = name
        names[name.lower()] = path
    if not users:
        raise ConfigError(
            f"no user keys in {user_dir}: copy each user's NAME.key there "
            "(made with `zchat keygen NAME`)"
        )
    admins = _load_admins(root / ADMINS_FILE, names)
    return KeyRing(public, secret, users, admins, tuple(skipped))


def _user_of(path: Path) -> str | None:
    """The user a file in users/ is the key of; None (and a warning) if it cannot be a
    key file: a name keygen would not make, or too long."""
    try:
        name = check_key_name(path.name.removesuffix(PUBLIC_SUFFIX))
    except InvalidInput as exc:
        log.warning(
            "%s skipped: the file name must be its user's name, as `zchat keygen NAME` "
            "makes it (%s); rename it to NAME.key",
            path,
            exc,
        )
        return None
    with contextlib.suppress(OSError):  # not there any more, or unreadable: load says so
        size = path.stat().st_size
        if size > MAX_KEY_FILE_BYTES:
            log.warning(
                "%s skipped: it holds %s bytes, and a key file at most %s (`zchat keygen` "
                "makes them of some 300 bytes); replace it with the one `zchat keygen %s` made",
                path,
                f"{size:,}",
                f"{MAX_KEY_FILE_BYTES:,}",
                name,
            )
            return None
    return name


def _load_admins(path: Path, known: dict[str, Path]) -> frozenset[str]:
    if not path.exists():
        return frozenset()
    check_unchangeable(path, "make themselves admin")
    text = read_bounded(path, MAX_ADMINS_BYTES, "an admins file (names, one a line)")
    admins = set()
    for number, line in enumerate(_text(path, text).splitlines(), 1):
        name = line.split("#", 1)[0].strip()
        if not name:
            continue
        if name.lower() not in known:
            raise ConfigError(
                f"{path}, line {number}: {name!r} has no key in {path.parent / USERS_DIR}"
            )
        admins.add(name.lower())
    return frozenset(admins)


def _text(path: Path, data: bytes) -> str:
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise ConfigError(f"{path} is not UTF-8 text ({exc.reason} at byte {exc.start})") from None


def own_keyring(db: str) -> KeyRing:
    """An accounts broker without a keys folder: its own pair alone (``broker_pair``)."""
    public, secret = broker_pair(db)
    return KeyRing(public, secret, {}, frozenset())


def broker_pair(db: str) -> tuple[bytes, bytes]:
    """The key pair of an accounts broker without a keys folder: DB-STEM-broker.key_secret
    beside the history database, made at its first start (mode 0600), and the same at
    every start after, so that clients that trusted it go on trusting it. With
    ``:memory:`` (nothing kept) a new pair each start."""
    if db == ":memory:":
        import zmq

        return zmq.curve_keypair()
    history = Path(db)
    name = f"{history.stem}-broker"
    secret_file = history.with_name(f"{name}.key_secret")
    if not secret_file.exists():
        keygen(name, history.parent)
        log.info("made the broker's key pair: %s", secret_file)
    check_unchangeable(secret_file, "replace the broker's key")
    check_secret(secret_file, "pose as this broker to its users")
    return load_pair(secret_file)
