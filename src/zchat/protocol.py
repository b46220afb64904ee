"""The zchat wire format: frames in, typed records out, and back.

Pure: no sockets, no clocks, no globals. Every frame after the topic is UTF-8 JSON
carrying ``"v": PROTOCOL_VERSION`` and a ``"type"``; docs/protocol.md is the reference.

Client -> broker (PUSH -> PULL), exactly one frame::

    join   {"v","type":"join","name","secret","inbox","rooms":[room, ...]}
    say    {"v","type":"say","secret","room","text","id"}
    ping   {"v","type":"ping","secret","inbox"}
    leave  {"v","type":"leave","secret","reason"}

Broker -> clients (XPUB -> SUB), exactly two frames, ``[topic, json]``::

    room/<room>/     message {"v","type":"message","room","seq","ts","sender","text","id"}
                     join    {"v","type":"join","room","seq","ts","sender"}
                     leave   {"v","type":"leave","room","seq","ts","sender","reason"}
    to/<inbox>/      welcome {"v","type":"welcome","name","epoch","rooms":{room:{"seq","members"}}}
                     refused {"v","type":"refused","code","text"}
                     error   {"v","type":"error","code","text","id"}
    sys/             heartbeat {"v","type":"heartbeat","epoch","ts"}
                     shutdown  {"v","type":"shutdown","epoch","ts","text"}

Topics end with "/", which no name may contain, so SUB's prefix match never lets
room ``gen`` see room ``general``. ``ts`` is UTC with microseconds
(``2025-03-01T14:30:15.123456Z``); ``seq`` counts the events of one room from 1.
"""

from __future__ import annotations

import json
import re
import unicodedata
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, TypeAlias

from zchat.errors import InvalidInput, ProtocolError

PROTOCOL_VERSION = 1

MAX_NAME_CHARS = 32
MAX_ROOM_CHARS = 32
MAX_TEXT_BYTES = 4096
MAX_REASON_CHARS = 200
MAX_ROOMS_PER_JOIN = 32
MAX_ID_CHARS = 64
# Largest frame the broker accepts on its in-socket (ZMQ_MAXMSGSIZE); libzmq closes the
# connection of a peer that sends more. JSON escapes a control character as 6 bytes, so a
# maximal text takes at most 6 * MAX_TEXT_BYTES = 24 KiB, plus an envelope under 1 KiB.
MAX_FRAME_BYTES = 32 * 1024

DEFAULT_ROOM = "general"

ROOM_PREFIX = b"room/"
# A SUB socket sends its subscriptions in byte order when it (re)connects, so the inbox
# prefix must sort after every other topic: that keeps "inbox subscribed last" true.
INBOX_PREFIX = b"to/"
SYS_TOPIC = b"sys/"

_NAME_RE = re.compile(r"[A-Za-z0-9_.\-]+")
_ROOM_RE = re.compile(r"[A-Za-z0-9_.\-]+")
_TOKEN_RE = re.compile(r"[0-9a-f]{32}")
_ID_RE = re.compile(r"[A-Za-z0-9_.\-]+")
# Bidirectional overrides and isolates can make a line read differently from what
# it says; they are replaced like control characters.
_BIDI = frozenset("\u202a\u202b\u202c\u202d\u202e\u2066\u2067\u2068\u2069")


# --- validation of the values people type ------------------------------------------------


def check_name(name: str) -> str:
    """Return ``name`` if it is a valid user name, else raise InvalidInput."""
    if not name:
        raise InvalidInput("name is empty: use 1 to 32 letters, digits, '_', '-' or '.'")
    if len(name) > MAX_NAME_CHARS:
        raise InvalidInput(f"name is {len(name)} characters long, the limit is {MAX_NAME_CHARS}")
    if not _NAME_RE.fullmatch(name):
        raise InvalidInput(
            f"name {name!r} is not allowed: use only letters, digits, '_', '-' and '.'"
        )
    return name


def check_room(room: str) -> str:
    """Return the canonical form of a room name (lower case, no '#'), or raise."""
    bare = room.removeprefix("#")
    if not bare:
        raise InvalidInput("room name is empty")
    if len(bare) > MAX_ROOM_CHARS:
        raise InvalidInput(
            f"room name is {len(bare)} characters long, the limit is {MAX_ROOM_CHARS}"
        )
    # checked before lower-casing: "\u212a".lower() is an ASCII "k"
    if not _ROOM_RE.fullmatch(bare):
        raise InvalidInput(
            f"room name {room!r} is not allowed: use only letters, digits, '_', '-' and '.'"
        )
    return bare.lower()


def _without_surrogates(text: str) -> str:
    # a lone surrogate (JSON "\ud800") cannot be encoded as UTF-8: it would break encoding
    return "".join("\ufffd" if "\ud800" <= ch <= "\udfff" else ch for ch in text)


def clean_text(text: str) -> str:
    """Replace what could steer a terminal (control characters, escape sequences,
    bidirectional overrides) or break encoding (lone surrogates) with U+FFFD; a tab
    becomes a space."""
    if text.isprintable():
        return text
    out = []
    for ch in _without_surrogates(text):
        if ch == "\t":
            out.append(" ")
        elif ch in _BIDI or unicodedata.category(ch) == "Cc":
            out.append("\ufffd")
        else:
            out.append(ch)
    return "".join(out)


def check_text(text: str) -> str:
    """Return ``text`` ready to encode, or raise InvalidInput if empty or too long.
    The broker cleans it for display (``clean_text``) when it publishes it."""
    if not text.strip():
        raise InvalidInput("message is empty")
    size = len(text.encode("utf-8", "surrogatepass"))
    if size > MAX_TEXT_BYTES:
        raise InvalidInput(f"message is {size} bytes long, the limit is {MAX_TEXT_BYTES}")
    return _without_surrogates(text)


def check_reason(reason: str) -> str:
    if len(reason) > MAX_REASON_CHARS:
        raise InvalidInput(
            f"reason is {len(reason)} characters long, the limit is {MAX_REASON_CHARS}"
        )
    return clean_text(reason)


# --- topics ---------------------------------------------------------------------------


def room_topic(room: str) -> bytes:
    return ROOM_PREFIX + room.encode("ascii") + b"/"


def inbox_topic(inbox: str) -> bytes:
    return INBOX_PREFIX + inbox.encode("ascii") + b"/"


def inbox_of_topic(topic: bytes) -> str | None:
    """The inbox token if ``topic`` is exactly one inbox topic, else None."""
    if topic.startswith(INBOX_PREFIX) and topic.endswith(b"/"):
        token = topic[len(INBOX_PREFIX) : -1].decode("ascii", "replace")
        if _TOKEN_RE.fullmatch(token):
            return token
    return None


def room_of_topic(topic: bytes) -> str | None:
    if topic.startswith(ROOM_PREFIX) and topic.endswith(b"/"):
        room = topic[len(ROOM_PREFIX) : -1].decode("ascii", "replace")
        if _ROOM_RE.fullmatch(room) and room == room.lower() and len(room) <= MAX_ROOM_CHARS:
            return room
    return None


# --- time -----------------------------------------------------------------------------


def format_ts(ts: datetime) -> str:
    return ts.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def parse_ts(value: str) -> datetime:
    try:
        return datetime.strptime(value, "%Y-%m-%dT%H:%M:%S.%fZ").replace(tzinfo=UTC)
    except ValueError:
        raise ProtocolError("field", f"ts {value!r} is not a UTC timestamp") from None


# --- records: client -> broker -------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Join:
    name: str
    secret: str
    inbox: str
    rooms: tuple[str, ...]


@dataclass(frozen=True, slots=True)
class Say:
    secret: str
    room: str
    text: str
    id: str = ""


@dataclass(frozen=True, slots=True)
class Ping:
    secret: str
    inbox: str


@dataclass(frozen=True, slots=True)
class Leave:
    secret: str
    reason: str = ""


ClientMessage: TypeAlias = Join | Say | Ping | Leave


# --- records: broker -> clients --------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Chat:
    room: str
    seq: int
    ts: datetime
    sender: str
    text: str
    id: str = ""


@dataclass(frozen=True, slots=True)
class Joined:
    room: str
    seq: int
    ts: datetime
    sender: str


@dataclass(frozen=True, slots=True)
class Left:
    room: str
    seq: int
    ts: datetime
    sender: str
    reason: str


@dataclass(frozen=True, slots=True)
class RoomState:
    seq: int
    members: tuple[str, ...]


@dataclass(frozen=True, slots=True)
class Welcome:
    name: str
    epoch: str
    rooms: Mapping[str, RoomState]


@dataclass(frozen=True, slots=True)
class Refused:
    code: str
    text: str


@dataclass(frozen=True, slots=True)
class Error:
    code: str
    text: str
    id: str = ""


@dataclass(frozen=True, slots=True)
class Heartbeat:
    epoch: str
    ts: datetime


@dataclass(frozen=True, slots=True)
class Shutdown:
    epoch: str
    ts: datetime
    text: str


RoomEvent: TypeAlias = Chat | Joined | Left
ServerMessage: TypeAlias = Chat | Joined | Left | Welcome | Refused | Error | Heartbeat | Shutdown


# --- encoding --------------------------------------------------------------------------


def _dump(obj: dict[str, Any]) -> bytes:
    return json.dumps({"v": PROTOCOL_VERSION, **obj}, ensure_ascii=False).encode("utf-8")


def encode_client(msg: ClientMessage) -> list[bytes]:
    match msg:
        case Join(name, secret, inbox, rooms):
            body = {"type": "join", "name": name, "secret": secret, "inbox": inbox}
            return [_dump({**body, "rooms": list(rooms)})]
        case Say(secret, room, text, id_):
            return [_dump({"type": "say", "secret": secret, "room": room, "text": text, "id": id_})]
        case Ping(secret, inbox):
            return [_dump({"type": "ping", "secret": secret, "inbox": inbox})]
        case Leave(secret, reason):
            return [_dump({"type": "leave", "secret": secret, "reason": reason})]


def encode_server(topic: bytes, msg: ServerMessage) -> list[bytes]:
    body: dict[str, Any]
    match msg:
        case Chat(room, seq, ts, sender, text, id_):
            body = {"type": "message", "room": room, "seq": seq, "ts": format_ts(ts)}
            body |= {"sender": sender, "text": text, "id": id_}
        case Joined(room, seq, ts, sender):
            body = {"type": "join", "room": room, "seq": seq, "ts": format_ts(ts), "sender": sender}
        case Left(room, seq, ts, sender, reason):
            body = {"type": "leave", "room": room, "seq": seq, "ts": format_ts(ts)}
            body |= {"sender": sender, "reason": reason}
        case Welcome(name, epoch, rooms):
            states = {r: {"seq": s.seq, "members": list(s.members)} for r, s in rooms.items()}
            body = {"type": "welcome", "name": name, "epoch": epoch, "rooms": states}
        case Refused(code, text):
            body = {"type": "refused", "code": code, "text": text}
        case Error(code, text, id_):
            body = {"type": "error", "code": code, "text": text, "id": id_}
        case Heartbeat(epoch, ts):
            body = {"type": "heartbeat", "epoch": epoch, "ts": format_ts(ts)}
        case Shutdown(epoch, ts, text):
            body = {"type": "shutdown", "epoch": epoch, "ts": format_ts(ts), "text": text}
    return [topic, _dump(body)]


# --- decoding --------------------------------------------------------------------------


class _Fields:
    """Typed access to one decoded JSON object; every miss is a ProtocolError."""

    def __init__(self, obj: dict[str, Any]) -> None:
        self.obj = obj

    def _get(self, key: str, kind: type, default: Any) -> Any:
        value = self.obj.get(key, default)
        if value is None or not isinstance(value, kind) or isinstance(value, bool):
            raise ProtocolError("field", f"field {key!r} is missing or not a {kind.__name__}")
        return value

    def text(self, key: str, default: str | None = None) -> str:
        value: str = self._get(key, str, default)
        return value

    def count(self, key: str) -> int:
        value: int = self._get(key, int, None)
        if value < 0:
            raise ProtocolError("field", f"field {key!r} is negative")
        return value

    def token(self, key: str) -> str:
        value = self.text(key)
        if not _TOKEN_RE.fullmatch(value):
            raise ProtocolError("field", f"field {key!r} is not 32 lower-case hex digits")
        return value

    def id(self) -> str:
        value = self.text("id", "")
        if value and (len(value) > MAX_ID_CHARS or not _ID_RE.fullmatch(value)):
            raise ProtocolError("field", f"field 'id' must be 1 to {MAX_ID_CHARS} safe characters")
        return value

    def room(self, key: str = "room") -> str:
        return _checked(check_room, self.text(key))

    def name(self, key: str) -> str:
        return _checked(check_name, self.text(key))


def _checked(check: Any, value: str) -> str:
    try:
        result: str = check(value)
    except InvalidInput as exc:
        raise ProtocolError("field", str(exc)) from None
    return result


def _load(frame: bytes) -> tuple[str, _Fields]:
    if not frame:
        raise ProtocolError("empty", "empty frame")
    try:
        obj = json.loads(frame.decode("utf-8"))
    except (UnicodeDecodeError, ValueError):
        raise ProtocolError("json", "frame is not UTF-8 JSON") from None
    if not isinstance(obj, dict):
        raise ProtocolError("json", "frame is not a JSON object")
    version = obj.get("v")
    if type(version) is not int or version != PROTOCOL_VERSION:  # True == 1 in Python
        raise ProtocolError(
            "version", f"protocol version {version!r} is not supported (this is {PROTOCOL_VERSION})"
        )
    kind = obj.get("type")
    if not isinstance(kind, str):
        raise ProtocolError("type", "field 'type' is missing")
    return kind, _Fields(obj)


def decode_client(frames: Sequence[bytes]) -> ClientMessage:
    """Decode what a client PUSHed. Field values are checked but texts are not:
    the broker answers an over-long text with an error to its sender."""
    if len(frames) != 1:
        raise ProtocolError("frames", f"expected 1 frame, got {len(frames)}")
    kind, f = _load(frames[0])
    match kind:
        case "join":
            rooms = f.obj.get("rooms", [DEFAULT_ROOM])
            if not isinstance(rooms, list) or not all(isinstance(r, str) for r in rooms):
                raise ProtocolError("field", "field 'rooms' is not a list of strings")
            if not 1 <= len(rooms) <= MAX_ROOMS_PER_JOIN:
                raise ProtocolError("field", f"a join names 1 to {MAX_ROOMS_PER_JOIN} rooms")
            # names and rooms are checked by the broker, which answers a bad one with a
            # refusal on the inbox: the client learns why instead of waiting in vain
            return Join(f.text("name"), f.token("secret"), f.token("inbox"), tuple(rooms))
        case "say":
            # the room and text are checked by the broker, which answers with an error
            return Say(f.token("secret"), f.text("room"), f.text("text"), f.id())
        case "ping":
            return Ping(f.token("secret"), f.token("inbox"))
        case "leave":
            # a leave is never refused: an over-long reason is cut to the limit
            reason = f.text("reason", "")[:MAX_REASON_CHARS]
            return Leave(f.token("secret"), clean_text(reason))
        case _:
            raise ProtocolError("type", f"unknown message type {kind!r}")


def decode_server(frames: Sequence[bytes]) -> tuple[bytes, ServerMessage]:
    """Decode what the broker published: the topic and the record."""
    if len(frames) != 2:
        raise ProtocolError("frames", f"expected 2 frames, got {len(frames)}")
    topic = frames[0]
    kind, f = _load(frames[1])
    msg: ServerMessage
    match kind:
        case "message":
            ts = parse_ts(f.text("ts"))
            msg = Chat(
                f.room(), f.count("seq"), ts, f.name("sender"), clean_text(f.text("text")), f.id()
            )
        case "join":
            msg = Joined(f.room(), f.count("seq"), parse_ts(f.text("ts")), f.name("sender"))
        case "leave":
            ts = parse_ts(f.text("ts"))
            reason = clean_text(f.text("reason", ""))
            msg = Left(f.room(), f.count("seq"), ts, f.name("sender"), reason)
        case "welcome":
            rooms = f.obj.get("rooms")
            if not isinstance(rooms, dict):
                raise ProtocolError("field", "field 'rooms' is not an object")
            states = {}
            for room, state in rooms.items():
                sf = _Fields(state if isinstance(state, dict) else {})
                members = sf.obj.get("members", [])
                if not isinstance(members, list):
                    raise ProtocolError("field", "field 'members' is not a list")
                names = tuple(_checked(check_name, str(m)) for m in members)
                states[_checked(check_room, room)] = RoomState(sf.count("seq"), names)
            msg = Welcome(f.name("name"), f.text("epoch"), states)
        case "refused":
            msg = Refused(f.text("code"), clean_text(f.text("text")))
        case "error":
            msg = Error(f.text("code"), clean_text(f.text("text")), f.id())
        case "heartbeat":
            msg = Heartbeat(f.text("epoch"), parse_ts(f.text("ts")))
        case "shutdown":
            msg = Shutdown(f.text("epoch"), parse_ts(f.text("ts")), clean_text(f.text("text", "")))
        case _:
            raise ProtocolError("type", f"unknown message type {kind!r}")
    return topic, msg
