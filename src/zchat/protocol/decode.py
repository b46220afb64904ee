"""Frames to records: every field checked once, here, at the edge."""

from __future__ import annotations

import json
from collections.abc import Callable, Sequence
from datetime import datetime
from typing import Any

from zchat.errors import InvalidInput, ProtocolError
from zchat.passwords import MAX_PASSWORD_BYTES
from zchat.protocol import fast
from zchat.protocol.fast import MAX_COUNT
from zchat.protocol.records import (
    MODERATE_OPS,
    Chat,
    ClientMessage,
    Crowd,
    Done,
    Enter,
    Entered,
    Error,
    GetHistory,
    Heartbeat,
    History,
    InboxMessage,
    Join,
    Joined,
    Kicked,
    Leave,
    Left,
    ListRooms,
    LoggedIn,
    Members,
    Moderate,
    Msg,
    Nick,
    NickChanged,
    Part,
    Parted,
    Passwd,
    Ping,
    Private,
    Refused,
    Renamed,
    RoomEvent,
    RoomInfo,
    RoomList,
    RoomState,
    Say,
    ServerMessage,
    SetTopic,
    SharedFile,
    Shutdown,
    Tail,
    TopicChanged,
    Welcome,
    Who,
)
from zchat.protocol.topics import (
    DEFAULT_HISTORY,
    ID_RE,
    MARK_RE,
    MAX_ID_CHARS,
    PROTOCOL_VERSION,
    SHA256_RE,
    TOKEN_RE,
    parse_ts,
)
from zchat.values import (
    DEFAULT_ROOM,
    MAX_REASON_CHARS,
    MAX_ROOMS_PER_SESSION,
    check_name,
    check_room,
    clean_lines,
    clean_text,
)

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
        if value > MAX_COUNT:
            raise ProtocolError("field", f"field {key!r} is larger than {MAX_COUNT}")
        return value

    def number(self, key: str) -> float | None:
        """An optional number, 0 or more (an integer or not); None when absent."""
        value = self.obj.get(key)
        if value is None:
            return None
        if isinstance(value, bool) or not isinstance(value, int | float):
            raise ProtocolError("field", f"field {key!r} is not a number")
        if not 0 <= value < float("inf"):
            raise ProtocolError("field", f"field {key!r} is not a number of 0 or more")
        return float(value)

    def optional_count(self, key: str) -> int | None:
        return None if self.obj.get(key) is None else self.count(key)

    def strings(self, key: str, default: list[str] | None = None) -> tuple[str, ...]:
        value = self.obj.get(key, default)
        if not isinstance(value, list) or not all(isinstance(item, str) for item in value):
            raise ProtocolError("field", f"field {key!r} is not a list of strings")
        return tuple(value)

    def token(self, key: str) -> str:
        value = self.text(key)
        if not TOKEN_RE.fullmatch(value):
            raise ProtocolError("field", f"field {key!r} is not 32 lower-case hex digits")
        return value

    def id(self) -> str:
        value = self.text("id", "")
        if value and (len(value) > MAX_ID_CHARS or not ID_RE.fullmatch(value)):
            raise ProtocolError("field", f"field 'id' must be 1 to {MAX_ID_CHARS} safe characters")
        return value

    def mark(self, optional: bool = False) -> str:
        value = self.text("mark", "" if optional else None)
        if (value or not optional) and not MARK_RE.fullmatch(value):
            raise ProtocolError("field", "field 'mark' must be 1 to 16 of a-z and 0-9")
        return value

    def room(self, key: str = "room") -> str:
        return _checked(check_room, self.text(key))

    def name(self, key: str) -> str:
        return _checked(check_name, self.text(key))

    def clean(self, key: str, default: str | None = None) -> str:
        return clean_text(self.text(key, default))

    def lines(self, key: str) -> str:
        """A message's text: cleaned, its line breaks kept."""
        return clean_lines(self.text(key))

    def ts(self, key: str = "ts") -> datetime:
        return parse_ts(self.text(key))

    def password(self, key: str, optional: bool = False) -> str:
        """A password: a string of at most MAX_PASSWORD_BYTES. Its value is never
        quoted in an error (errors are logged)."""
        value = self.text(key, "" if optional else None)
        if len(value) > MAX_PASSWORD_BYTES // 4 and len(value.encode("utf-8", "replace")) > (
            MAX_PASSWORD_BYTES
        ):
            raise ProtocolError("field", f"field {key!r} is longer than {MAX_PASSWORD_BYTES} bytes")
        return value


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
    except RecursionError:  # [[[[...]]]] deeper than Python's stack
        raise ProtocolError("json", "frame is nested too deeply") from None
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
    if len(since) > MAX_ROOMS_PER_SESSION:
        raise ProtocolError(
            "field", f"field 'since' names {len(since)} rooms, more than {MAX_ROOMS_PER_SESSION}"
        )
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
        "passwd",
        *MODERATE_OPS,
    }
)


def decode_client(frames: Sequence[bytes]) -> ClientMessage:
    """Decode what a client PUSHed. Names, rooms and texts are left for the broker to
    check, so that it can answer a bad one to its sender instead of dropping it."""
    if len(frames) != 1:
        raise ProtocolError("frames", f"expected 1 frame, got {len(frames)}")
    return fast.pushed(frames[0]) or checked_client(frames[0])


def checked_client(frame: bytes) -> ClientMessage:
    """decode_client without the fast way: every kind, and the reason for a refusal."""
    kind, f = _load(frame)
    if kind == "join":
        rooms = f.strings("rooms", [DEFAULT_ROOM])
        if not 1 <= len(rooms) <= MAX_ROOMS_PER_SESSION:
            raise ProtocolError("field", f"a join names 1 to {MAX_ROOMS_PER_SESSION} rooms")
        history = f.count("history", DEFAULT_HISTORY)
        name, secret, inbox = f.text("name"), f.token("secret"), f.token("inbox")
        mark, quiet = f.mark(optional=True), f.flag("quiet")
        login = f.password("password", optional=True), f.flag("register")
        return Join(name, secret, inbox, rooms, history, _since(f), mark, quiet, *login)
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
            return Who(secret, f.text("room"), f.id(), f.text("after", ""))
        case "rooms":
            return ListRooms(secret, f.id())
        case "history":
            after, before = f.count("after", 0), f.count("before", 0)
            limit = f.count("limit", DEFAULT_HISTORY)
            return GetHistory(secret, f.text("room"), after, before, limit, f.id())
        case "kick" | "ban" | "unban":
            reason = clean_text(f.text("reason", "")[:MAX_REASON_CHARS])
            return Moderate(secret, kind, f.text("name"), reason, f.id())
        case "passwd":
            return Passwd(secret, f.password("old"), f.password("new"), f.id())
        case _:
            raise ProtocolError("type", f"unknown message type {kind!r}")


def _room_event(kind: str, f: _Fields) -> RoomEvent:
    room, seq, ts, sender = f.room(), f.count("seq"), f.ts(), f.name("sender")
    match kind:
        case "message" | "action":
            action = kind == "action"
            return Chat(room, seq, ts, sender, f.lines("text"), f.id(), action, _file(f))
        case "join":
            return Joined(room, seq, ts, sender)
        case "leave":
            return Left(room, seq, ts, sender, f.clean("reason", ""))
        case "nick":
            return Renamed(room, seq, ts, sender, f.name("name"))
        case "topic":
            return TopicChanged(room, seq, ts, sender, f.clean("text", ""))
    raise ProtocolError("type", f"unknown room event type {kind!r}")


def _file(f: _Fields) -> SharedFile | None:
    """The ``file`` of a message or a private one: None if there is none."""
    obj = f.obj.get("file")
    return None if obj is None else decode_file(obj)


def decode_file(obj: Any) -> SharedFile:
    """A shared file's JSON object (in a message, or an answer on the file port)."""
    f = _Fields(obj)
    sha256 = f.text("sha256")
    if not SHA256_RE.fullmatch(sha256):
        raise ProtocolError("field", "field 'sha256' is not 64 lower-case hex digits")
    name = f.clean("name")
    if not name:
        raise ProtocolError("field", "field 'name' is empty")
    counts = f.count("id"), name, f.count("size"), sha256, f.clean("media", "")
    return SharedFile(*counts, f.count("width", 0), f.count("height", 0), f.flag("expired"))


ROOM_EVENT_TYPES = frozenset({"message", "action", "join", "leave", "nick", "topic"})


def decode_event(obj: Any) -> RoomEvent:
    """One room event from its JSON object (as published, stored, or in a history)."""
    f = _Fields(obj)
    return _room_event(f.text("type"), f)


_ROOM_EVENTS = (Chat, Joined, Left, Renamed, TopicChanged)


def decode_stored(body: str | bytes) -> RoomEvent:
    """One room event as the history keeps it: its published frame (the fast way), or,
    in a file from before, its JSON object without the version."""
    quick = fast.published(body)
    if isinstance(quick, _ROOM_EVENTS):
        return quick
    try:
        obj = json.loads(body)
    except (UnicodeDecodeError, ValueError, RecursionError):
        raise ProtocolError("json", "stored event is not JSON") from None
    return decode_event(obj)


def _state(f: _Fields) -> RoomState:
    members = tuple(_checked(check_name, m) for m in f.strings("members", []))
    return RoomState(f.count("seq"), members, f.clean("topic", ""), f.count("count", 0))


def decode_server(frames: Sequence[bytes]) -> tuple[bytes, ServerMessage]:
    """Decode what the broker published: the topic and the record."""
    if len(frames) != 2:
        raise ProtocolError("frames", f"expected 2 frames, got {len(frames)}")
    return frames[0], fast.published(frames[1]) or checked_server(frames[1])


def checked_server(frame: bytes) -> ServerMessage:
    """decode_server's record without the fast way: every kind, and the reason for a
    refusal."""
    kind, f = _load(frame)
    if kind in ROOM_EVENT_TYPES:
        return _room_event(kind, f)
    match kind:
        case "tail":
            return Tail(f.room(), f.count("seq"))
        case "crowd":
            counts = f.count("joined"), f.count("left"), f.count("seconds")
            return Crowd(f.room(), *counts)
        case "heartbeat":
            return Heartbeat(f.text("epoch"), f.ts())
        case "shutdown":
            return Shutdown(f.text("epoch"), f.ts(), f.clean("text", ""))
    return _inbox_message(kind, f)


def _inbox_message(kind: str, f: _Fields) -> InboxMessage:
    match kind:
        case "welcome":
            rooms = f.obj.get("rooms")
            if not isinstance(rooms, dict):
                raise ProtocolError("field", "field 'rooms' is not an object")
            states = {_checked(check_room, r): _state(_Fields(s)) for r, s in rooms.items()}
            return Welcome(f.name("name"), f.text("epoch"), states)
        case "refused":
            return Refused(f.text("code"), f.clean("text"), f.number("retry_after"))
        case "error":
            limit = f.number("retry_after"), f.number("rate"), f.optional_count("burst")
            return Error(f.text("code"), f.clean("text"), f.id(), *limit)
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
            sender, to = f.name("sender"), f.name("to")
            return Private(f.ts(), sender, to, f.lines("text"), f.id(), _file(f))
        case "members":
            members = tuple(_checked(check_name, m) for m in f.strings("members"))
            return Members(f.room(), members, f.clean("topic", ""), f.id(), f.count("count", 0))
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
        case "kicked":
            return Kicked(f.clean("by"), f.clean("reason", ""), f.flag("banned"))
        case "done":
            return Done(f.clean("text"), f.id())
        case "login":
            last = f.ts("last") if f.obj.get("last") is not None else None
            return LoggedIn(f.name("name"), f.count("failed", 0), last)
    raise ProtocolError("type", f"unknown message type {kind!r}")
