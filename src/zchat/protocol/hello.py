"""The key port's wire format: how a client learns an accounts broker's public key.

Pure, as the rest of the protocol: no sockets, and no zmq (its Z85 is redone here).

An accounts broker speaks CURVE, so a client must know the broker's public key before
it can connect at all. It asks for it on the key port: the broker binds a ROUTER on
port + KEY_PORT_OFFSET with NULL security, since the key is public and what the answer
says is only trusted once the person has checked its fingerprint (trust.py keeps the
ones they trusted, as SSH's known_hosts does). One frame each way, UTF-8 JSON::

    client -> broker (DEALER -> ROUTER)   {"v": 1, "type": "hello"}
    broker -> client                      {"v": 1, "type": "broker", "mode": "accounts",
                                           "key": Z85 public key (40 characters),
                                           "fingerprint": "SHA256:...",
                                           "register": true | false}

``register`` says whether people may make their own accounts. The fingerprint is the
SSH one: ``SHA256:`` and the unpadded base64 of the SHA-256 of the 32-byte key. It is
sent so that a person can compare it with what the operator told them; a client never
believes it, it computes it from the key and refuses an answer where the two differ.
Both sides bound what they read: a request past MAX_HELLO_BYTES is never answered, an
answer past MAX_BROKER_HELLO_BYTES never parsed.
"""

from __future__ import annotations

import base64
import hashlib
import json
from dataclasses import dataclass

from zchat.errors import ProtocolError
from zchat.protocol import decode
from zchat.protocol.topics import PROTOCOL_VERSION

KEY_PORT_OFFSET = 3  # the key port is the broker's port + 3
MAX_HELLO_BYTES = 256  # a request, at most (the broker's socket drops a longer one)
MAX_BROKER_HELLO_BYTES = 1024  # an answer, at most (some 150 bytes)
MODES = frozenset({"accounts"})  # the modes a broker may say it runs in
KEY_CHARS = 40  # a CURVE public key in Z85
KEY_BYTES = 32  # ... and raw

HELLO_REQUEST = b'{"v":1,"type":"hello"}'

# --- Z85 and fingerprints --------------------------------------------------------------

# ZeroMQ's RFC 32: each 5 characters are a big-endian 32-bit number in base 85.
Z85_CHARS = b"0123456789abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ.-:+=^!/*?&<>()[]{}@%$#"
_Z85_VALUES = {char: value for value, char in enumerate(Z85_CHARS)}


def z85_decode(text: bytes) -> bytes:
    """The bytes that Z85 ``text`` stands for. ProtocolError if it is not Z85: a
    length that is not a multiple of 5, a character outside the alphabet, or a group
    of five past 2**32 - 1 (pyzmq's decoder lets that one through to struct)."""
    if len(text) % 5:
        raise ProtocolError("z85", f"Z85 comes in groups of 5 characters, not {len(text)}")
    raw = bytearray()
    for start in range(0, len(text), 5):
        value = 0
        for char in text[start : start + 5]:
            digit = _Z85_VALUES.get(char)
            if digit is None:
                shown = repr(chr(char)) if char < 128 else f"byte {char:#04x}"
                raise ProtocolError("z85", f"{shown} is not a Z85 character")
            value = value * 85 + digit
        if value >= 1 << 32:
            raise ProtocolError("z85", f"{text[start : start + 5]!r} is not a Z85 group")
        raw += value.to_bytes(4, "big")
    return bytes(raw)


def check_key(key: bytes) -> bytes:
    """The raw 32 bytes of a Z85 public key; ProtocolError unless ``key`` is 40
    characters of valid Z85."""
    if len(key) != KEY_CHARS:
        raise ProtocolError(
            "key", f"a public key is {KEY_CHARS} characters of Z85, and this one has {len(key)}"
        )
    return z85_decode(key)


def fingerprint(key: bytes) -> str:
    """SSH's fingerprint of a Z85 public key: ``SHA256:`` and the base64 of the SHA-256
    of its 32 bytes, without the '=' padding. ProtocolError if it is no key."""
    digest = hashlib.sha256(check_key(key)).digest()
    return "SHA256:" + base64.b64encode(digest).decode("ascii").rstrip("=")


# --- the request -----------------------------------------------------------------------


def is_hello(data: bytes) -> bool:
    """Whether a request on the key port is a hello (the broker answers those only):
    at most MAX_HELLO_BYTES of a JSON object of this version with type "hello"."""
    if len(data) > MAX_HELLO_BYTES:
        return False
    try:
        kind, _ = decode._load(data)
    except ProtocolError:
        return False
    return kind == "hello"


# --- the answer ------------------------------------------------------------------------


@dataclass(frozen=True)
class BrokerHello:
    """What a broker says of itself on its key port, checked (decode_broker_hello)."""

    mode: str  # one of MODES
    key: bytes  # its CURVE public key, Z85
    fingerprint: str  # the key's, as computed here
    register: bool  # whether people may make their own accounts


def encode_broker_hello(key: bytes, register: bool) -> bytes:
    """The broker's answer to a hello, made once when it starts (KeyPort's ``reply``)."""
    checked = fingerprint(key)  # a key that is not Z85 is refused before it is sent
    body = {
        "v": PROTOCOL_VERSION,
        "type": "broker",
        "mode": "accounts",
        "key": key.decode("ascii"),
        "fingerprint": checked,
        "register": register,
    }
    return json.dumps(body, separators=(",", ":")).encode("ascii")


def decode_broker_hello(data: bytes) -> BrokerHello:
    """A broker's answer on the key port, every field checked; ProtocolError says which
    one is wrong. The fingerprint sent must be the key's."""
    if len(data) > MAX_BROKER_HELLO_BYTES:
        raise ProtocolError(
            "size", f"the answer holds {len(data)} bytes, more than {MAX_BROKER_HELLO_BYTES}"
        )
    kind, f = decode._load(data)
    if kind != "broker":
        raise ProtocolError("type", f"the answer's type is {kind!r}, not 'broker'")
    mode = f.text("mode")
    if mode not in MODES:
        raise ProtocolError(
            "mode", f"the broker runs in mode {mode[:32]!r}, which this zchat does not know"
        )
    key = f.text("key").encode("utf-8")
    try:
        computed = fingerprint(key)
    except ProtocolError as exc:
        raise ProtocolError("key", f"field 'key' is not a public key: {exc}") from None
    sent = f.text("fingerprint")
    if sent != computed:
        raise ProtocolError(
            "fingerprint", f"the fingerprint sent ({sent[:60]!r}) is not its key's ({computed})"
        )
    register = f.obj.get("register")
    if not isinstance(register, bool):
        raise ProtocolError("field", "field 'register' is missing or not true or false")
    return BrokerHello(mode, key, computed, register)
