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
file in ``users/`` whose name it could not have made (``.hidden.key``, ``..key``).

The folder decides who gets in and who is admin, so nobody but the broker's user (or
root) may change it, as OpenSSH's StrictModes has it (filemodes.py): the folder,
``users/``, each key file and ``admins`` must belong to one of them and be writable by
nobody else, ``broker.key_secret`` readable by its owner alone, and no folder above may
let others rename the folder. ``load_keyring`` refuses anything else, naming the path
and the ``chmod`` (or ``chown``) that fixes it.

Reading keys never imports zmq at module level, so ``zchat --help`` stays fast.
"""

from __future__ import annotations

import logging
import os
from dataclasses import dataclass
from pathlib import Path

from zchat.errors import ConfigError, InvalidInput
from zchat.filemodes import check_folders_above, check_secret, check_unchangeable
from zchat.values import check_name

BROKER_KEY = "broker"  # the broker's key pair: broker.key and broker.key_secret
USERS_DIR = "users"
ADMINS_FILE = "admins"
PUBLIC_SUFFIX = ".key"

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
    import zmq.auth

    file = Path(path)
    if not file.is_file():
        raise ConfigError(f"no key file at {file}")
    try:
        public, secret = zmq.auth.load_certificate(file)
    except (OSError, ValueError, UnicodeDecodeError) as exc:
        raise ConfigError(f"{file} is not a zchat key file: {exc}") from None
    if public is None or len(public) != 40 or (secret is not None and len(secret) != 40):
        raise ConfigError(f"{file} is not a zchat key file: no 40-character Z85 key in it")
    return public, secret


@dataclass(frozen=True)
class KeyRing:
    """What a secure broker knows: its own pair, who may connect, and who is admin."""

    public: bytes
    secret: bytes
    users: dict[bytes, str]  # Z85 public key -> user name
    admins: frozenset[str]  # lower-case names

    def name_of(self, public: bytes) -> str | None:
        return self.users.get(public)


def load_keyring(folder: str | Path) -> KeyRing:
    """Read a keys folder (see the module docstring); every problem is a ConfigError
    that names the file, but a user key file whose name no key could have, which is
    skipped with a warning."""
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
    user_dir = root / USERS_DIR
    if user_dir.is_dir():
        check_unchangeable(user_dir, "add a key")
    for path in sorted(user_dir.glob(f"*{PUBLIC_SUFFIX}")) if user_dir.is_dir() else []:
        try:
            name = check_key_name(path.name.removesuffix(PUBLIC_SUFFIX))
        except InvalidInput as exc:
            log.warning(
                "%s skipped: the file name must be its user's name, as `zchat keygen NAME` "
                "makes it (%s); rename it to NAME.key",
                path,
                exc,
            )
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
    return KeyRing(public, secret, users, _load_admins(root / ADMINS_FILE, names))


def _load_admins(path: Path, known: dict[str, Path]) -> frozenset[str]:
    if not path.exists():
        return frozenset()
    check_unchangeable(path, "make themselves admin")
    admins = set()
    for number, line in enumerate(path.read_text(encoding="utf-8").splitlines(), 1):
        name = line.split("#", 1)[0].strip()
        if not name:
            continue
        if name.lower() not in known:
            raise ConfigError(
                f"{path}, line {number}: {name!r} has no key in {path.parent / USERS_DIR}"
            )
        admins.add(name.lower())
    return frozenset(admins)
