"""The frames sent most, decoded in C (msgspec): room events, tails and heartbeats
from the broker, say and ping from clients. Each field is checked by the same rules as
in decode.py, with the answers for names and rooms remembered. A frame these do not
take (another type, a missing field, a bad value) goes the checked way in decode.py,
which decodes it or says precisely what is wrong: the fast way never refuses a frame.
"""

from __future__ import annotations

from datetime import datetime

import msgspec
from msgspec import Struct

from zchat.errors import InvalidInput, ProtocolError
from zchat.protocol.records import (
    Chat,
    Heartbeat,
    Joined,
    Left,
    Ping,
    Renamed,
    RoomEvent,
    Say,
    Tail,
    TopicChanged,
)
from zchat.protocol.topics import ID_RE, MAX_ID_CHARS, PROTOCOL_VERSION, parse_ts
from zchat.values import check_name, check_room, clean_lines, clean_text

# The largest count a frame may carry: SQLite's integers are 64-bit and signed.
MAX_COUNT = 2**63 - 1


class _Event(Struct, tag_field="type"):
    v: int
    room: str
    seq: int
    ts: str
    sender: str


class _Message(_Event, tag="message"):
    text: str
    id: str = ""
    file: object = None  # a shared file: the checked way (decode.py) decodes those


class _Action(_Event, tag="action"):
    text: str
    id: str = ""
    file: object = None


class _Join(_Event, tag="join"):
    pass


class _Leave(_Event, tag="leave"):
    reason: str = ""


class _Nick(_Event, tag="nick"):
    name: str


class _Topic(_Event, tag="topic"):
    text: str = ""


class _Tail(Struct, tag_field="type", tag="tail"):
    v: int
    room: str
    seq: int


class _Heartbeat(Struct, tag_field="type", tag="heartbeat"):
    v: int
    epoch: str
    ts: str


class _Say(Struct, tag_field="type", tag="say"):
    v: int
    secret: str
    room: str
    text: str
    id: str = ""
    action: bool = False


class _Ping(Struct, tag_field="type", tag="ping"):
    v: int
    secret: str
    inbox: str


_PUBLISHED = msgspec.json.Decoder(
    _Message | _Action | _Join | _Leave | _Nick | _Topic | _Tail | _Heartbeat
)
_PUSHED = msgspec.json.Decoder(_Say | _Ping)


class _NotFast(Exception):
    """A value the fast way does not take: decode.py decides."""


def _name(name: str) -> str:
    try:
        return check_name(name)  # remembers the names that passed
    except InvalidInput:
        raise _NotFast from None


def _room(room: str) -> str:
    try:
        return check_room(room)  # remembers the rooms that passed
    except InvalidInput:
        raise _NotFast from None


def _count(value: int) -> int:
    if not 0 <= value <= MAX_COUNT:
        raise _NotFast
    return value


def _id(value: str) -> str:
    if value and not (len(value) <= MAX_ID_CHARS and _is_id(value)):
        raise _NotFast
    return value


def _is_id(value: str) -> bool:
    return (value.isascii() and value.isalnum()) or ID_RE.fullmatch(value) is not None


def _ts(value: str) -> datetime:
    try:
        return parse_ts(value)
    except ProtocolError:
        raise _NotFast from None


def _token(value: str) -> str:
    # TOKEN_RE's rule (32 lower-case hex digits) without the regular expression's cost
    if len(value) != 32 or value.strip("0123456789abcdef"):
        raise _NotFast
    return value


def _utf8(frame: bytes | str) -> bytes | str:
    """The frame, all of it UTF-8 (msgspec does not look inside the fields it skips):
    ASCII or text as it is, else decoded (UnicodeDecodeError is a ValueError)."""
    return frame if isinstance(frame, str) or frame.isascii() else frame.decode("utf-8")


def published(frame: bytes | str) -> RoomEvent | Tail | Heartbeat | None:
    """The record in a frame the broker published, if it is one of the common kinds
    and valid; None otherwise."""
    try:
        obj = _PUBLISHED.decode(_utf8(frame))
        if obj.v != PROTOCOL_VERSION:
            return None
        kind = type(obj)  # compared by identity: cheaper than a match on classes
        if kind is _Message or kind is _Action:
            if obj.file is not None:
                return None
            room, seq, ts, sender = _room(obj.room), _count(obj.seq), _ts(obj.ts), obj.sender
            action = kind is _Action
            return Chat(room, seq, ts, _name(sender), clean_lines(obj.text), _id(obj.id), action)
        if kind is _Tail:
            return Tail(_room(obj.room), _count(obj.seq))
        if kind is _Heartbeat:
            return Heartbeat(obj.epoch, _ts(obj.ts))
        room, seq, ts, sender = _room(obj.room), _count(obj.seq), _ts(obj.ts), _name(obj.sender)
        if kind is _Join:
            return Joined(room, seq, ts, sender)
        if kind is _Leave:
            return Left(room, seq, ts, sender, clean_text(obj.reason))
        if kind is _Nick:
            return Renamed(room, seq, ts, sender, _name(obj.name))
        if kind is _Topic:
            return TopicChanged(room, seq, ts, sender, clean_text(obj.text))
    except (ValueError, RecursionError, _NotFast):  # msgspec.DecodeError is a ValueError
        return None
    return None


def pushed(frame: bytes) -> Say | Ping | None:
    """The record in a frame a client pushed, if it is a say or a ping and valid; None
    otherwise. As decode_client, the room and the text are left for the broker."""
    try:
        obj = _PUSHED.decode(_utf8(frame))
        if obj.v != PROTOCOL_VERSION:
            return None
        match obj:
            case _Say():
                return Say(_token(obj.secret), obj.room, obj.text, _id(obj.id), obj.action)
            case _Ping():
                return Ping(_token(obj.secret), _token(obj.inbox))
    except (ValueError, RecursionError, _NotFast):  # msgspec.DecodeError is a ValueError
        return None
    return None
