"""The one record a program or a person sees: Message."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Literal, TypeAlias

from zchat import protocol as p

Kind: TypeAlias = Literal[
    "message", "action", "join", "leave", "nick", "topic", "private", "system"
]


@dataclass(frozen=True, slots=True)
class Message:
    """One event in the chat.

    ``kind`` says what happened; ``room`` is where (None for what concerns this client
    only); ``sender`` is the broker-verified name (None for system notices); ``text`` is
    the line, the leave reason, or the notice; ``ts`` is an aware UTC datetime stamped by
    the broker (by this client for its own system notices); ``seq`` is the room's
    sequence number (None outside rooms).
    """

    kind: Kind
    room: str | None
    sender: str | None
    text: str
    ts: datetime
    seq: int | None = None
    id: str = ""

    @classmethod
    def system(cls, text: str, ts: datetime, room: str | None = None) -> Message:
        return cls("system", room, None, text, ts)


def from_room_event(event: p.RoomEvent) -> Message:
    match event:
        case p.Chat(room, seq, ts, sender, text, id_):
            return Message("message", room, sender, text, ts, seq, id_)
        case p.Joined(room, seq, ts, sender):
            return Message("join", room, sender, "", ts, seq)
        case p.Left(room, seq, ts, sender, reason):
            return Message("leave", room, sender, reason, ts, seq)
