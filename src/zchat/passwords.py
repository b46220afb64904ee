"""Passwords: how they are hashed, checked, made and judged. Pure: no sockets.

A password is stored only as a salted, slow hash: ``hashlib.scrypt`` from the standard
library (OpenSSL's), with the cost OWASP's Password Storage Cheat Sheet gives as its
least for scrypt at an equal cost to N=2^17, r=8, p=1: N=2^14 (``ln=14``), r=8, p=5, a
16-byte random salt and a 32-byte key. One check takes some 160 ms of one core and 16 MiB
of memory, for the broker and for whoever stole its database alike. The stored string
says its own cost, PHC-style::

    $scrypt$ln=14,r=8,p=5$<salt, base64>$<key, base64>

so that a later cost can be used for new passwords while old ones still check. The
broker checks hashes in a thread of their own (hashlib.scrypt lets go of the GIL), never
in its poll loop (broker/logins.py).
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import secrets
from dataclasses import dataclass

from zchat.errors import InvalidInput

# The cost of new hashes (see the module's docstring).
LOG2_N = 14
BLOCK_SIZE = 8
PARALLELISM = 5
SALT_BYTES = 16
KEY_BYTES = 32
# The most a hash may ask of memory: scrypt needs 128 * r * N * p bytes at most at once
# (r * N * 128 per lane, one lane at a time in OpenSSL), and a stored hash with more is
# refused rather than checked.
MAX_MEMORY = 256 * 2**20
MAX_LOG2_N = 20
# What a password may be: long enough not to be guessed at once, short enough that
# hashing it costs what any other does.
MIN_PASSWORD_CHARS = 8
MAX_PASSWORD_BYTES = 1024
GENERATED_BYTES = 15  # `zchat user add --generate`: 20 characters, 120 bits
SCHEME = "scrypt"


@dataclass(frozen=True)
class Cost:
    log2_n: int = LOG2_N
    r: int = BLOCK_SIZE
    p: int = PARALLELISM


def hash_password(password: str, cost: Cost = Cost()) -> str:
    """The string to store for ``password``: a fresh salt, and the scrypt key."""
    salt = secrets.token_bytes(SALT_BYTES)
    key = _scrypt(password, salt, cost)
    params = f"ln={cost.log2_n},r={cost.r},p={cost.p}"
    return f"${SCHEME}${params}${_b64(salt)}${_b64(key)}"


def verify_password(password: str, stored: str) -> bool:
    """Whether ``password`` is the one ``stored`` was made from. A stored string that is
    not one hash_password makes never matches (and costs no hashing)."""
    parsed = _parse(stored)
    if parsed is None:
        return False
    cost, salt, key = parsed
    return hmac.compare_digest(_scrypt(password, salt, cost, len(key)), key)


def waste_time(password: str) -> None:
    """Hash as a check would, for a name without an account: a refusal takes as long
    whether the name has an account or not, so timing tells no one which names do."""
    _scrypt(password, b"\0" * SALT_BYTES, Cost())


def is_hash(stored: str) -> bool:
    """Whether ``stored`` is a hash this module can check (the admin socket's check)."""
    return _parse(stored) is not None


def check_new_password(name: str, password: str) -> str:
    """``password``, if it may be someone's new password; else InvalidInput, saying why."""
    if len(password) < MIN_PASSWORD_CHARS:
        raise InvalidInput(
            f"the password is {len(password)} characters long: it needs at least "
            f"{MIN_PASSWORD_CHARS}"
        )
    if len(password.encode("utf-8", "surrogatepass")) > MAX_PASSWORD_BYTES:
        raise InvalidInput(f"the password is longer than {MAX_PASSWORD_BYTES} bytes")
    if password.strip() != password:
        raise InvalidInput("the password starts or ends with a space: it would be lost easily")
    if password.lower() == name.lower():
        raise InvalidInput("the password is the name: it would be the first one guessed")
    return password


def generate_password() -> str:
    """A random password of 20 URL-safe characters (120 bits)."""
    return secrets.token_urlsafe(GENERATED_BYTES)


def _scrypt(password: str, salt: bytes, cost: Cost, length: int = KEY_BYTES) -> bytes:
    data = password.encode("utf-8", "surrogatepass")[: MAX_PASSWORD_BYTES + 1]
    return hashlib.scrypt(
        data, salt=salt, n=2**cost.log2_n, r=cost.r, p=cost.p, maxmem=MAX_MEMORY, dklen=length
    )


def _parse(stored: str) -> tuple[Cost, bytes, bytes] | None:
    parts = stored.split("$")
    if len(parts) != 5 or parts[0] or parts[1] != SCHEME:
        return None
    try:
        params = dict(item.split("=", 1) for item in parts[2].split(","))
        cost = Cost(int(params["ln"]), int(params["r"]), int(params["p"]))
        salt, key = _unb64(parts[3]), _unb64(parts[4])
    except (ValueError, KeyError):
        return None
    fits = 128 * cost.r * 2**cost.log2_n <= MAX_MEMORY // 2
    if not (1 <= cost.log2_n <= MAX_LOG2_N and 1 <= cost.r <= 32 and 1 <= cost.p <= 16 and fits):
        return None
    if len(salt) < 8 or not 16 <= len(key) <= 64:
        return None
    return cost, salt, key


def _b64(data: bytes) -> str:
    return base64.b64encode(data).decode("ascii").rstrip("=")


def _unb64(text: str) -> bytes:
    return base64.b64decode(text + "=" * (-len(text) % 4), validate=True)
