"""The zchat wire format: frames in, typed records out, and back.

Pure: no sockets, no clocks, no globals. Every frame after the topic is UTF-8 JSON
carrying ``"v": PROTOCOL_VERSION`` and a ``"type"``; docs/protocol.md is the reference.

Client -> broker (PUSH -> PULL), exactly one frame. Every request but ``join`` carries
the session ``secret``::

    join    name, secret, inbox, rooms, history, since, mark   ping   inbox
    say     room, text, id, action                         leave  reason
    enter   room, mark, history    part   room, reason     msg    to, text, id
    nick    name                   topic  room, text       who    room, id
    rooms   id                     history room, after, before, limit, id

Broker -> clients (XPUB -> SUB), exactly two frames, ``[topic, json]``::

    room/<room>/   message | action  room, seq, ts, sender, text, id
                   join              room, seq, ts, sender
                   leave             room, seq, ts, sender, reason
                   nick              room, seq, ts, sender, name
                   topic             room, seq, ts, sender, text
                   tail              room, seq  (the room's last seq; once a second if busy)
    to/<inbox>/    welcome  name, epoch, rooms: {room: {seq, members, topic}}
                   refused  code, text          error    code, text, id
                   entered  room, seq, members, topic       parted   room
                   history  room, events: [room event, ...], lost, id
                   private  ts, sender, to, text, id
                   members  room, members, topic, id        renamed  name
                   rooms    rooms: [{room, members (a count), topic}], id
    sys/           heartbeat epoch, ts                      shutdown epoch, ts, text

Topics end with "/", which no name may contain, so SUB's prefix match never lets
room ``gen`` see room ``general``. ``ts`` is UTC with microseconds
(``2025-03-01T14:30:15.123456Z``); ``seq`` counts the events of one room from 1.
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any, TypeAlias

from zchat.errors import InvalidInput, ProtocolError
from zchat.values import (
    DEFAULT_ROOM,
    MAX_NAME_CHARS,
    MAX_REASON_CHARS,
    MAX_ROOM_CHARS,
    MAX_ROOMS_PER_SESSION,
    MAX_TEXT_BYTES,
    MAX_TOPIC_CHARS,
    check_name,
    check_reason,
    check_room,
    check_text,
    check_topic,
    clean_text,
    is_canonical_room,
)

__all__ = [  # the value checks are part of the wire format's vocabulary
    "DEFAULT_ROOM",
    "MAX_NAME_CHARS",
    "MAX_REASON_CHARS",
    "MAX_ROOMS_PER_SESSION",
    "MAX_ROOM_CHARS",
    "MAX_TEXT_BYTES",
    "MAX_TOPIC_CHARS",
    "check_name",
    "check_reason",
    "check_room",
    "check_text",
    "check_topic",
    "clean_text",
]

PROTOCOL_VERSION = 1

MAX_ID_CHARS = 64
MAX_HISTORY = 1000  # most events one history answer carries
DEFAULT_HISTORY = 50  # events a newcomer to a room is sent
# Largest frame the broker accepts on its in-socket (ZMQ_MAXMSGSIZE); libzmq closes the
# connection of a peer that sends more. JSON escapes a control character as 6 bytes, so a
# maximal text takes at most 6 * MAX_TEXT_BYTES = 24 KiB, plus an envelope under 1 KiB.
MAX_FRAME_BYTES = 32 * 1024

ROOM_PREFIX = b"room/"
# A SUB socket sends its subscriptions in byte order when it (re)connects, so the inbox
# prefix must sort after every other topic: that keeps "inbox subscribed last" true.
INBOX_PREFIX = b"to/"
SYS_TOPIC = b"sys/"

_TOKEN_RE = re.compile(r"[0-9a-f]{32}")
_ID_RE = re.compile(r"[A-Za-z0-9_.\-]+")
_MARK_RE = re.compile(r"[a-z0-9]{1,16}")


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


def marker_topic(inbox: str, mark: str) -> bytes:
    return inbox_topic(inbox) + mark.encode("ascii") + b"/"


def marker_of_topic(topic: bytes) -> tuple[str, str] | None:
    """(inbox, mark) if ``topic`` is exactly one marker topic ``to/<inbox>/<mark>/``."""
    parts = topic.split(b"/")
    if len(parts) == 4 and parts[0] + b"/" == INBOX_PREFIX and parts[3] == b"":
        inbox, mark = parts[1].decode("ascii", "replace"), parts[2].decode("ascii", "replace")
        if _TOKEN_RE.fullmatch(inbox) and _MARK_RE.fullmatch(mark):
            return inbox, mark
    return None


def room_of_topic(topic: bytes) -> str | None:
    if topic.startswith(ROOM_PREFIX) and topic.endswith(b"/"):
        room = topic[len(ROOM_PREFIX) : -1].decode("ascii", "replace")
        if is_canonical_room(room):
            return room
    return None


# --- time -----------------------------------------------------------------------------


_TS_RE = re.compile(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{6}Z")


def format_ts(ts: datetime) -> str:
    return ts.astimezone(UTC).isoformat(timespec="microseconds").replace("+00:00", "Z")


def parse_ts(value: str) -> datetime:
    # fromisoformat is 30 times faster than strptime, and every client parses every line;
    # the pattern keeps the format strict
    if _TS_RE.fullmatch(value):
        try:
            return datetime.fromisoformat(value)
        except ValueError:
            pass
    raise ProtocolError("field", f"ts {value!r} is not a UTC timestamp")


# --- records: client -> broker -------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Join:
    name: str
    secret: str
    inbox: str
    rooms: tuple[str, ...]
    history: int = DEFAULT_HISTORY  # lines of each room to send after the WELCOME
    since: Mapping[str, int] = field(default_factory=dict)  # rejoin: room -> last seq seen
    mark: str = ""  # a marker subscription that also completes the join (see Enter)


@dataclass(frozen=True, slots=True)
class Say:
    secret: str
    room: str
    text: str
    id: str = ""
    action: bool = False  # "/me waves"


@dataclass(frozen=True, slots=True)
class Ping:
    secret: str
    inbox: str


@dataclass(frozen=True, slots=True)
class Leave:
    secret: str
    reason: str = ""


@dataclass(frozen=True, slots=True)
class Enter:
    """Enter a room. The client first subscribes to the room's topic, then to a marker
    topic ``to/<inbox>/<mark>/``: the subscriptions of one connection arrive in order,
    so once the broker has seen the marker, the room subscription is in place and
    nothing the broker sends next can be missed."""

    secret: str
    room: str
    mark: str
    history: int = DEFAULT_HISTORY


@dataclass(frozen=True, slots=True)
class Part:
    secret: str
    room: str
    reason: str = ""


@dataclass(frozen=True, slots=True)
class Msg:
    secret: str
    to: str
    text: str
    id: str = ""


@dataclass(frozen=True, slots=True)
class Nick:
    secret: str
    name: str


@dataclass(frozen=True, slots=True)
class SetTopic:
    secret: str
    room: str
    text: str


@dataclass(frozen=True, slots=True)
class Who:
    secret: str
    room: str
    id: str = ""  # echoed in the Members answer


@dataclass(frozen=True, slots=True)
class ListRooms:
    secret: str
    id: str = ""  # echoed in the RoomList answer


@dataclass(frozen=True, slots=True)
class GetHistory:
    """The newest ``limit`` events with ``after < seq < before`` (before 0: no bound)."""

    secret: str
    room: str
    after: int = 0
    before: int = 0
    limit: int = DEFAULT_HISTORY
    id: str = ""  # echoed in the History answer


ClientMessage: TypeAlias = (
    Join | Say | Ping | Leave | Enter | Part | Msg | Nick | SetTopic | Who | ListRooms | GetHistory
)


# --- records: broker -> clients --------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Chat:
    room: str
    seq: int
    ts: datetime
    sender: str
    text: str
    id: str = ""
    action: bool = False


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
class Renamed:
    room: str
    seq: int
    ts: datetime
    sender: str  # the old name
    name: str  # the new name


@dataclass(frozen=True, slots=True)
class TopicChanged:
    room: str
    seq: int
    ts: datetime
    sender: str
    text: str


RoomEvent: TypeAlias = Chat | Joined | Left | Renamed | TopicChanged


@dataclass(frozen=True, slots=True)
class Tail:
    """The last sequence number of a room, published once a second while the room is
    busy: a reader whose last lines were dropped learns of the gap without waiting for
    the next line. Not an event: it is neither numbered nor stored."""

    room: str
    seq: int


@dataclass(frozen=True, slots=True)
class RoomState:
    seq: int
    members: tuple[str, ...]
    topic: str = ""


@dataclass(frozen=True, slots=True)
class RoomInfo:
    room: str
    members: int
    topic: str = ""


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
class Entered:
    room: str
    state: RoomState


@dataclass(frozen=True, slots=True)
class Parted:
    room: str


@dataclass(frozen=True, slots=True)
class History:
    room: str
    events: tuple[RoomEvent, ...]
    lost: int = 0  # events asked for that the store no longer holds
    id: str = ""  # the request's id; "" for the history sent on join and enter


@dataclass(frozen=True, slots=True)
class Private:
    ts: datetime
    sender: str
    to: str
    text: str
    id: str = ""


@dataclass(frozen=True, slots=True)
class Members:
    room: str
    members: tuple[str, ...]
    topic: str = ""
    id: str = ""


@dataclass(frozen=True, slots=True)
class RoomList:
    rooms: tuple[RoomInfo, ...]
    id: str = ""


@dataclass(frozen=True, slots=True)
class NickChanged:
    name: str


@dataclass(frozen=True, slots=True)
class Heartbeat:
    epoch: str
    ts: datetime


@dataclass(frozen=True, slots=True)
class Shutdown:
    epoch: str
    ts: datetime
    text: str


InboxMessage: TypeAlias = (
    Welcome | Refused | Error | Entered | Parted | History | Private | Members | RoomList
    | NickChanged
)  # fmt: skip
ServerMessage: TypeAlias = RoomEvent | Tail | InboxMessage | Heartbeat | Shutdown


# --- encoding --------------------------------------------------------------------------


def _dump(obj: dict[str, Any]) -> bytes:
    return json.dumps({"v": PROTOCOL_VERSION, **obj}, ensure_ascii=False).encode("utf-8")


def encode_client(msg: ClientMessage) -> list[bytes]:
    body: dict[str, Any]
    match msg:
        case Join(name, secret, inbox, rooms, history, since, mark):
            body = {"type": "join", "name": name, "secret": secret, "inbox": inbox}
            body |= {"rooms": list(rooms), "history": history, "since": dict(since), "mark": mark}
        case Say(secret, room, text, id_, action):
            body = {"type": "say", "secret": secret, "room": room, "text": text, "id": id_}
            if action:
                body["action"] = True
        case Ping(secret, inbox):
            body = {"type": "ping", "secret": secret, "inbox": inbox}
        case Leave(secret, reason):
            body = {"type": "leave", "secret": secret, "reason": reason}
        case Enter(secret, room, mark, history):
            body = {"type": "enter", "secret": secret, "room": room, "mark": mark}
            body["history"] = history
        case Part(secret, room, reason):
            body = {"type": "part", "secret": secret, "room": room, "reason": reason}
        case Msg(secret, to, text, id_):
            body = {"type": "msg", "secret": secret, "to": to, "text": text, "id": id_}
        case Nick(secret, name):
            body = {"type": "nick", "secret": secret, "name": name}
        case SetTopic(secret, room, text):
            body = {"type": "topic", "secret": secret, "room": room, "text": text}
        case Who(secret, room, id_):
            body = {"type": "who", "secret": secret, "room": room, "id": id_}
        case ListRooms(secret, id_):
            body = {"type": "rooms", "secret": secret, "id": id_}
        case GetHistory(secret, room, after, before, limit, id_):
            body = {"type": "history", "secret": secret, "room": room}
            body |= {"after": after, "before": before, "limit": limit, "id": id_}
    return [_dump(body)]


def event_body(event: RoomEvent) -> dict[str, Any]:
    """A room event as the JSON object published (and stored, and sent in history)."""
    head = {"room": event.room, "seq": event.seq, "ts": format_ts(event.ts), "sender": event.sender}
    match event:
        case Chat(text=text, id=id_, action=action):
            return {"type": "action" if action else "message", **head, "text": text, "id": id_}
        case Joined():
            return {"type": "join", **head}
        case Left(reason=reason):
            return {"type": "leave", **head, "reason": reason}
        case Renamed(name=name):
            return {"type": "nick", **head, "name": name}
        case TopicChanged(text=text):
            return {"type": "topic", **head, "text": text}


def _state_body(state: RoomState) -> dict[str, Any]:
    return {"seq": state.seq, "members": list(state.members), "topic": state.topic}


def encode_server(topic: bytes, msg: ServerMessage) -> list[bytes]:
    body: dict[str, Any]
    match msg:
        case Chat() | Joined() | Left() | Renamed() | TopicChanged():
            body = event_body(msg)
        case Tail(room, seq):
            body = {"type": "tail", "room": room, "seq": seq}
        case Welcome(name, epoch, rooms):
            states = {room: _state_body(state) for room, state in rooms.items()}
            body = {"type": "welcome", "name": name, "epoch": epoch, "rooms": states}
        case Refused(code, text):
            body = {"type": "refused", "code": code, "text": text}
        case Error(code, text, id_):
            body = {"type": "error", "code": code, "text": text, "id": id_}
        case Entered(room, state):
            body = {"type": "entered", "room": room, **_state_body(state)}
        case Parted(room):
            body = {"type": "parted", "room": room}
        case History(room, events, lost, id_):
            body = {"type": "history", "room": room, "lost": lost, "id": id_}
            body["events"] = [event_body(event) for event in events]
        case Private(ts, sender, to, text, id_):
            body = {"type": "private", "ts": format_ts(ts), "sender": sender, "to": to}
            body |= {"text": text, "id": id_}
        case Members(room, members, topic_text, id_):
            body = {"type": "members", "room": room, "members": list(members), "topic": topic_text}
            body["id"] = id_
        case RoomList(rooms, id_):
            listed = [{"room": r.room, "members": r.members, "topic": r.topic} for r in rooms]
            body = {"type": "rooms", "rooms": listed, "id": id_}
        case NickChanged(name):
            body = {"type": "renamed", "name": name}
        case Heartbeat(epoch, ts):
            body = {"type": "heartbeat", "epoch": epoch, "ts": format_ts(ts)}
        case Shutdown(epoch, ts, text):
            body = {"type": "shutdown", "epoch": epoch, "ts": format_ts(ts), "text": text}
    return [topic, _dump(body)]


# --- decoding --------------------------------------------------------------------------


class _Fields:
    """Typed access to one decoded JSON object; every miss is a ProtocolError."""

    def __init__(self, obj: Any) -> None:
        if not isinstance(obj, dict):
            raise ProtocolError("field", "expected a JSON object")
        self.obj: dict[str, Any] = obj

    def _get(self, key: str, kind: type, default: Any) -> Any:
        value = self.obj.get(key, default)
        if (
            value is None
            or not isinstance(value, kind)
            or isinstance(value, bool) != (kind is bool)
        ):
            raise ProtocolError("field", f"field {key!r} is missing or not a {kind.__name__}")
        return value

    def text(self, key: str, default: str | None = None) -> str:
        value: str = self._get(key, str, default)
        return value

    def flag(self, key: str) -> bool:
        value: bool = self._get(key, bool, False)
        return value

    def count(self, key: str, default: int | None = None) -> int:
        value: int = self._get(key, int, default)
        if value < 0:
            raise ProtocolError("field", f"field {key!r} is negative")
        return value

    def strings(self, key: str, default: list[str] | None = None) -> tuple[str, ...]:
        value = self.obj.get(key, default)
        if not isinstance(value, list) or not all(isinstance(item, str) for item in value):
            raise ProtocolError("field", f"field {key!r} is not a list of strings")
        return tuple(value)

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

    def mark(self, optional: bool = False) -> str:
        value = self.text("mark", "" if optional else None)
        if (value or not optional) and not _MARK_RE.fullmatch(value):
            raise ProtocolError("field", "field 'mark' must be 1 to 16 of a-z and 0-9")
        return value

    def room(self, key: str = "room") -> str:
        return _checked(check_room, self.text(key))

    def name(self, key: str) -> str:
        return _checked(check_name, self.text(key))

    def clean(self, key: str, default: str | None = None) -> str:
        return clean_text(self.text(key, default))

    def ts(self) -> datetime:
        return parse_ts(self.text("ts"))


def _checked(check: Callable[[str], str], value: str) -> str:
    try:
        return check(value)
    except InvalidInput as exc:
        raise ProtocolError("field", str(exc)) from None


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


def _since(f: _Fields) -> dict[str, int]:
    since = f.obj.get("since", {})
    if not isinstance(since, dict):
        raise ProtocolError("field", "field 'since' is not an object")
    fields = _Fields(since)
    return {room: fields.count(room) for room in since}


CLIENT_TYPES = frozenset(
    {
        "join",
        "say",
        "ping",
        "leave",
        "enter",
        "part",
        "msg",
        "nick",
        "topic",
        "who",
        "rooms",
        "history",
    }
)


def decode_client(frames: Sequence[bytes]) -> ClientMessage:
    """Decode what a client PUSHed. Names, rooms and texts are left for the broker to
    check, so that it can answer a bad one to its sender instead of dropping it."""
    if len(frames) != 1:
        raise ProtocolError("frames", f"expected 1 frame, got {len(frames)}")
    kind, f = _load(frames[0])
    if kind == "join":
        rooms = f.strings("rooms", [DEFAULT_ROOM])
        if not 1 <= len(rooms) <= MAX_ROOMS_PER_SESSION:
            raise ProtocolError("field", f"a join names 1 to {MAX_ROOMS_PER_SESSION} rooms")
        history = f.count("history", DEFAULT_HISTORY)
        name, secret, inbox = f.text("name"), f.token("secret"), f.token("inbox")
        return Join(name, secret, inbox, rooms, history, _since(f), f.mark(optional=True))
    if kind not in CLIENT_TYPES:
        raise ProtocolError("type", f"unknown message type {kind!r}")
    secret = f.token("secret")
    match kind:
        case "say":
            return Say(secret, f.text("room"), f.text("text"), f.id(), f.flag("action"))
        case "ping":
            return Ping(secret, f.token("inbox"))
        case "leave":
            # a leave is never refused: an over-long reason is cut to the limit
            return Leave(secret, clean_text(f.text("reason", "")[:MAX_REASON_CHARS]))
        case "enter":
            history = f.count("history", DEFAULT_HISTORY)
            return Enter(secret, f.text("room"), f.mark(), history)
        case "part":
            return Part(secret, f.text("room"), clean_text(f.text("reason", "")[:MAX_REASON_CHARS]))
        case "msg":
            return Msg(secret, f.text("to"), f.text("text"), f.id())
        case "nick":
            return Nick(secret, f.text("name"))
        case "topic":
            return SetTopic(secret, f.text("room"), f.text("text"))
        case "who":
            return Who(secret, f.text("room"), f.id())
        case "rooms":
            return ListRooms(secret, f.id())
        case "history":
            after, before = f.count("after", 0), f.count("before", 0)
            limit = f.count("limit", DEFAULT_HISTORY)
            return GetHistory(secret, f.text("room"), after, before, limit, f.id())
        case _:
            raise ProtocolError("type", f"unknown message type {kind!r}")


def _room_event(kind: str, f: _Fields) -> RoomEvent:
    room, seq, ts, sender = f.room(), f.count("seq"), f.ts(), f.name("sender")
    match kind:
        case "message" | "action":
            return Chat(room, seq, ts, sender, f.clean("text"), f.id(), kind == "action")
        case "join":
            return Joined(room, seq, ts, sender)
        case "leave":
            return Left(room, seq, ts, sender, f.clean("reason", ""))
        case "nick":
            return Renamed(room, seq, ts, sender, f.name("name"))
        case "topic":
            return TopicChanged(room, seq, ts, sender, f.clean("text", ""))
    raise ProtocolError("type", f"unknown room event type {kind!r}")


ROOM_EVENT_TYPES = frozenset({"message", "action", "join", "leave", "nick", "topic"})


def decode_event(obj: Any) -> RoomEvent:
    """One room event from its JSON object (as published, stored, or in a history)."""
    f = _Fields(obj)
    return _room_event(f.text("type"), f)


def _state(f: _Fields) -> RoomState:
    members = tuple(_checked(check_name, m) for m in f.strings("members", []))
    return RoomState(f.count("seq"), members, f.clean("topic", ""))


def decode_server(frames: Sequence[bytes]) -> tuple[bytes, ServerMessage]:
    """Decode what the broker published: the topic and the record."""
    if len(frames) != 2:
        raise ProtocolError("frames", f"expected 2 frames, got {len(frames)}")
    topic = frames[0]
    kind, f = _load(frames[1])
    if kind in ROOM_EVENT_TYPES:
        return topic, _room_event(kind, f)
    match kind:
        case "tail":
            return topic, Tail(f.room(), f.count("seq"))
        case "heartbeat":
            return topic, Heartbeat(f.text("epoch"), f.ts())
        case "shutdown":
            return topic, Shutdown(f.text("epoch"), f.ts(), f.clean("text", ""))
    return topic, _inbox_message(kind, f)


def _inbox_message(kind: str, f: _Fields) -> InboxMessage:
    match kind:
        case "welcome":
            rooms = f.obj.get("rooms")
            if not isinstance(rooms, dict):
                raise ProtocolError("field", "field 'rooms' is not an object")
            states = {_checked(check_room, r): _state(_Fields(s)) for r, s in rooms.items()}
            return Welcome(f.name("name"), f.text("epoch"), states)
        case "refused":
            return Refused(f.text("code"), f.clean("text"))
        case "error":
            return Error(f.text("code"), f.clean("text"), f.id())
        case "entered":
            return Entered(f.room(), _state(f))
        case "parted":
            return Parted(f.room())
        case "history":
            events = f.obj.get("events")
            if not isinstance(events, list):
                raise ProtocolError("field", "field 'events' is not a list")
            decoded = tuple(decode_event(e) for e in events)
            return History(f.room(), decoded, f.count("lost", 0), f.id())
        case "private":
            return Private(f.ts(), f.name("sender"), f.name("to"), f.clean("text"), f.id())
        case "members":
            members = tuple(_checked(check_name, m) for m in f.strings("members"))
            return Members(f.room(), members, f.clean("topic", ""), f.id())
        case "rooms":
            listed = f.obj.get("rooms")
            if not isinstance(listed, list):
                raise ProtocolError("field", "field 'rooms' is not a list")
            infos = []
            for item in listed:
                r = _Fields(item)
                infos.append(RoomInfo(r.room(), r.count("members"), r.clean("topic", "")))
            return RoomList(tuple(infos), f.id())
        case "renamed":
            return NickChanged(f.name("name"))
    raise ProtocolError("type", f"unknown message type {kind!r}")
