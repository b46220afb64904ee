"""One frozen dataclass per wire message; union aliases name them by direction."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import datetime
from typing import TypeAlias

from zchat.protocol.topics import DEFAULT_HISTORY

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
    # a session that only posts: no join, leave or nick notices, not listed as a member
    # (an optional field: a broker that does not know it ignores it)
    quiet: bool = False


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


@dataclass(frozen=True, slots=True)
class Moderate:
    """An admin's kick, ban or unban (``op``); secure mode only. The reason is shown
    to the user and in the rooms."""

    secret: str
    op: str  # one of MODERATE_OPS
    name: str
    reason: str = ""
    id: str = ""  # echoed in the Done or Error answer


MODERATE_OPS = ("kick", "ban", "unban")

ClientMessage: TypeAlias = (
    Join | Say | Ping | Leave | Enter | Part | Msg | Nick | SetTopic | Who | ListRooms | GetHistory
    | Moderate
)  # fmt: skip


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
    # "rate-limited" only, and optional on the wire (older brokers send none): seconds
    # until the session's next request gets through, and the limit itself
    retry_after: float | None = None
    rate: float | None = None
    burst: int | None = None


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
class Kicked:
    """Sent to a session's inbox as it is ended by an admin: who, and why."""

    by: str
    reason: str = ""
    banned: bool = False


@dataclass(frozen=True, slots=True)
class Done:
    """A request carried out (an admin's kick, ban or unban), described in ``text``."""

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


InboxMessage: TypeAlias = (
    Welcome | Refused | Error | Entered | Parted | History | Private | Members | RoomList
    | NickChanged | Kicked | Done
)  # fmt: skip
ServerMessage: TypeAlias = RoomEvent | Tail | InboxMessage | Heartbeat | Shutdown
