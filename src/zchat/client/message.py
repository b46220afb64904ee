"""The one record a program or a person sees: Message."""

from __future__ import annotations

from datetime import datetime
from typing import Literal, TypeAlias

from msgspec import Struct

from zchat import markup
from zchat import protocol as p

Kind: TypeAlias = Literal[
    "message", "action", "join", "leave", "nick", "topic", "private", "system"
]


class Members(Struct, frozen=True):
    """Who is in a room, and its topic: the answer to ``who()``. In a big room, one
    page: the first names (sorted) after the one asked for, and ``count``, how many
    there are in all from there (0 when all of them are listed)."""

    room: str
    names: tuple[str, ...]
    topic: str = ""
    count: int = 0

    @property
    def more(self) -> int:
        """How many are not listed: ask ``who(room, after=names[-1])`` for them."""
        return max(0, self.count - len(self.names))


RoomInfo = p.RoomInfo  # one room of the answer to ``list_rooms()``: room, members, topic
Answer: TypeAlias = Members | tuple[RoomInfo, ...]  # to who(), to list_rooms()
Data: TypeAlias = Members | RoomInfo  # what a system notice may carry
SAID: frozenset[Kind] = frozenset(("message", "action", "private"))  # texts in markup


class Message(Struct, frozen=True):
    """One event in the chat.

    ``kind`` says what happened; ``room`` is where (None for private messages and for
    what concerns this client only); ``sender`` is the broker-verified name (None for
    system notices); ``text`` is the line, the leave reason, the new name (nick), the
    new topic, or the notice; ``ts`` is an aware UTC datetime stamped by the broker (by
    this client for its own system notices); ``seq`` is the room's sequence number
    (None outside rooms); ``to`` is the recipient of a private message; ``replayed``
    is True for older lines shown again (the history sent on joining a room, /history),
    so that a bot does not answer yesterday's commands. ``data`` holds the answer
    behind a system notice as a record, for programs: ``Members`` for ``in #room: …``
    (the answer to who), ``RoomInfo`` for each room that ``list_rooms`` lists.
    ``file`` is set on a message or private message that shares a file (a
    ``SharedFile``: its ``id`` is what ``get_file`` takes); its ``text`` then says so
    in words (``shared tugas3.pdf (1.2 MB): /get 7``).
    """

    kind: Kind
    room: str | None
    sender: str | None
    text: str
    ts: datetime
    seq: int | None = None
    id: str = ""
    to: str | None = None
    replayed: bool = False
    data: Data | None = None
    file: p.SharedFile | None = None

    def spans(self) -> tuple[markup.Block, ...]:
        """The text's spans and code blocks (``zchat.markup.parse``) for a message,
        action or private line: bold, code, quotes, links, mentions and the like.
        Other kinds' texts (a reason, a topic, a notice) are no markup: plain spans
        (``zchat.markup.plain``), as clean."""
        said = self.kind in SAID and self.file is None
        return markup.parse(self.text) if said else markup.plain(self.text)

    @property
    def mentions(self) -> tuple[str, ...]:
        """The names @mentioned in a message, action or private line, in order, each
        once; empty for other kinds."""
        return markup.mentions(self.text) if self.kind in SAID and self.file is None else ()

    @classmethod
    def system(
        cls, text: str, ts: datetime, room: str | None = None, data: Data | None = None
    ) -> Message:
        return cls("system", room, None, text, ts, data=data)


def from_room_event(event: p.RoomEvent, replayed: bool = False) -> Message:
    r = replayed
    if type(event) is p.Chat:  # most of them: attributes are read faster than matched
        kind: Kind = "action" if event.action else "message"
        return Message(
            kind, event.room, event.sender, event.text, event.ts, event.seq, event.id,
            replayed=r, file=event.file,
        )  # fmt: skip
    match event:
        case p.Joined(room, seq, ts, sender):
            return Message("join", room, sender, "", ts, seq, replayed=r)
        case p.Left(room, seq, ts, sender, reason):
            return Message("leave", room, sender, reason, ts, seq, replayed=r)
        case p.Renamed(room, seq, ts, sender, name):
            return Message("nick", room, sender, name, ts, seq, replayed=r)
        case p.TopicChanged(room, seq, ts, sender, text):
            return Message("topic", room, sender, text, ts, seq, replayed=r)
    raise TypeError(f"not a room event: {event!r}")


def crowd_text(crowd: p.Crowd) -> str:
    """``37 joined, 12 left #general in the last minute``: a big room's comings and
    goings, told in sum."""
    counts = ((crowd.joined, "joined"), (crowd.left, "left"))
    told = ", ".join(f"{count:,} {verb}" for count, verb in counts if count)
    when = "minute" if 50 <= crowd.seconds <= 70 else f"{crowd.seconds} seconds"
    return f"{told or 'nobody came or went'} #{crowd.room} in the last {when}"


def names_text(names: tuple[str, ...], more: int) -> str:
    """Names as a line shows them, and how many more there are."""
    shown = ", ".join(names)
    return f"{shown} and {more:,} more" if more else shown


def from_private(dm: p.Private) -> Message:
    return Message("private", None, dm.sender, dm.text, dm.ts, None, dm.id, dm.to, file=dm.file)
