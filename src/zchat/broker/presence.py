"""Who is here: sessions, their names, and the members of each room. Plain data."""

from __future__ import annotations

import heapq
from collections.abc import Iterable
from dataclasses import dataclass, field

from zchat import protocol as p
from zchat.broker.limits import Bucket


@dataclass
class Session:
    name: str
    secret: str
    inbox: str
    rooms: list[str]
    peer: str
    last_seen: float
    bucket: Bucket
    user: str | None = None  # in secure mode: the name of the key it connected with
    admin: bool = False  # may kick, ban and unban (secure mode)
    since: float = 0.0  # when it joined
    suspect: float | None = None  # when its inbox may have been lost (secure mode)
    quiet: bool = False  # only posts: no member of its rooms, its comings and goings untold
    # the rooms whose notice of its coming was published: its going is told there too,
    # whatever the room's size since (history never shows one without the other)
    announced: set[str] = field(default_factory=set)
    waiting: list[p.Enter] = field(default_factory=list)  # enters whose marker has not come
    # the bucket of its owner (its key, or in open mode its address): all the sessions
    # of one owner draw on it, and it outlives them (limits.py)
    shared: Bucket | None = None


# A welcome, an entered and a who list this many names at most, and the count.
MEMBERS_LISTED = 200


@dataclass
class Room:
    seq: int = 0
    topic: str = ""
    members: dict[str, str] = field(default_factory=dict)  # lower-case name -> name
    joined_untold: int = 0  # in a big room: arrivals not told one by one yet (Crowd)
    left_untold: int = 0
    untold_since: float | None = None  # when the first of them came

    def state(self, others: Iterable[str] = (), after: str = "") -> p.RoomState:
        """Its members (and ``others``, names soon to be members), sorted: the first
        MEMBERS_LISTED of those after ``after``, and how many in all if not all."""
        names = {*self.members.values(), *others}
        if after:
            names = {name for name in names if name > after}
        if len(names) <= MEMBERS_LISTED:
            return p.RoomState(self.seq, tuple(sorted(names)), self.topic)
        listed = tuple(heapq.nsmallest(MEMBERS_LISTED, names))
        return p.RoomState(self.seq, listed, self.topic, len(names))


class Presence:
    """Sessions by secret, inbox and name (case-insensitive), and rooms by name. A room
    is kept here while anyone is in it; its sequence and topic live in the store. A
    quiet session holds its name and its rooms, and is no member of them."""

    def __init__(self) -> None:
        self.by_secret: dict[str, Session] = {}
        self.by_inbox: dict[str, Session] = {}
        self.by_name: dict[str, Session] = {}
        self.rooms: dict[str, Room] = {}

    def add(self, session: Session) -> None:
        self.by_secret[session.secret] = self.by_inbox[session.inbox] = session
        self.by_name[session.name.lower()] = session

    def remove(self, session: Session) -> None:
        del self.by_secret[session.secret]
        del self.by_inbox[session.inbox]
        del self.by_name[session.name.lower()]

    def rename(self, session: Session, name: str) -> None:
        del self.by_name[session.name.lower()]
        for room in [] if session.quiet else session.rooms:
            members = self.rooms[room].members
            del members[session.name.lower()]
            members[name.lower()] = name
        session.name = name
        self.by_name[name.lower()] = session

    def holder(self, name: str) -> Session | None:
        return self.by_name.get(name.lower())

    def enter(self, session: Session, room: str) -> None:
        session.rooms.append(room)
        if not session.quiet:
            self.rooms[room].members[session.name.lower()] = session.name

    def part(self, session: Session, room: str) -> None:
        session.rooms.remove(room)
        if not session.quiet:
            self.rooms[room].members.pop(session.name.lower(), None)

    def forget_if_empty(self, room: str) -> None:
        if room in self.rooms and not self.rooms[room].members:
            del self.rooms[room]

    def listing(self) -> tuple[p.RoomInfo, ...]:
        return tuple(
            p.RoomInfo(name, len(room.members), room.topic)
            for name, room in sorted(self.rooms.items())
            if room.members
        )
