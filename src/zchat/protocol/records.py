"""One frozen record per wire message (a msgspec Struct: made in C, ten times faster
than a frozen dataclass); union aliases name them by direction."""

from __future__ import annotations

from collections.abc import Mapping
from datetime import datetime
from typing import TypeAlias

from msgspec import Struct, field

from zchat.protocol.topics import DEFAULT_HISTORY

# --- records: client -> broker -------------------------------------------------------


class Join(Struct, frozen=True):
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
    # an accounts broker (docs/protocol.md, "Logging in"): the account's password, sent
    # over CURVE only; ``register``: make the account first (if the broker allows it)
    password: str = ""
    register: bool = False

    def __repr__(self) -> str:  # a password is never logged, even by mistake
        return f"Join(name={self.name!r}, rooms={self.rooms!r}, register={self.register})"


class Say(Struct, frozen=True):
    secret: str
    room: str
    text: str
    id: str = ""
    action: bool = False  # "/me waves"


class Ping(Struct, frozen=True):
    secret: str
    inbox: str


class Leave(Struct, frozen=True):
    secret: str
    reason: str = ""


class Enter(Struct, frozen=True):
    """Enter a room. The client first subscribes to the room's topic, then to a marker
    topic ``to/<inbox>/<mark>/``: the subscriptions of one connection arrive in order,
    so once the broker has seen the marker, the room subscription is in place and
    nothing the broker sends next can be missed."""

    secret: str
    room: str
    mark: str
    history: int = DEFAULT_HISTORY


class Part(Struct, frozen=True):
    secret: str
    room: str
    reason: str = ""


class Msg(Struct, frozen=True):
    secret: str
    to: str
    text: str
    id: str = ""


class Nick(Struct, frozen=True):
    secret: str
    name: str


class SetTopic(Struct, frozen=True):
    secret: str
    room: str
    text: str


class Who(Struct, frozen=True):
    secret: str
    room: str
    id: str = ""  # echoed in the Members answer
    after: str = ""  # a big room's next page: the names that sort after this one


class ListRooms(Struct, frozen=True):
    secret: str
    id: str = ""  # echoed in the RoomList answer


class GetHistory(Struct, frozen=True):
    """The newest ``limit`` events with ``after < seq < before`` (before 0: no bound)."""

    secret: str
    room: str
    after: int = 0
    before: int = 0
    limit: int = DEFAULT_HISTORY
    id: str = ""  # echoed in the History answer


class Moderate(Struct, frozen=True):
    """An admin's kick, ban or unban (``op``); secure mode only. The reason is shown
    to the user and in the rooms."""

    secret: str
    op: str  # one of MODERATE_OPS
    name: str
    reason: str = ""
    id: str = ""  # echoed in the Done or Error answer


MODERATE_OPS = ("kick", "ban", "unban")


class Passwd(Struct, frozen=True):
    """Change one's own password (an accounts broker): the old one, and the new."""

    secret: str
    old: str
    new: str
    id: str = ""  # echoed in the Done or Error answer

    def __repr__(self) -> str:  # passwords are never logged, even by mistake
        return f"Passwd(id={self.id!r})"


ClientMessage: TypeAlias = (
    Join | Say | Ping | Leave | Enter | Part | Msg | Nick | SetTopic | Who | ListRooms | GetHistory
    | Moderate | Passwd
)  # fmt: skip


# --- records: broker -> clients --------------------------------------------------------


class SharedFile(Struct, frozen=True):
    """A file someone shared, as the chat shows it: the broker's number for it (what
    ``get`` asks for), the name its sender gave it, its size and SHA-256, and for a
    picture its media type and size in pixels (told by its content)."""

    id: int
    name: str
    size: int
    sha256: str
    media: str = ""  # "image/png", "image/jpeg", "image/gif", "image/webp"; "" if not one
    width: int = 0
    height: int = 0
    expired: bool = False  # the broker's storage quota dropped it: it cannot be fetched


class Chat(Struct, frozen=True):
    room: str
    seq: int
    ts: datetime
    sender: str
    text: str
    id: str = ""
    action: bool = False
    file: SharedFile | None = None  # a file shared in the room; ``text`` says so in words


class Joined(Struct, frozen=True):
    room: str
    seq: int
    ts: datetime
    sender: str


class Left(Struct, frozen=True):
    room: str
    seq: int
    ts: datetime
    sender: str
    reason: str


class Renamed(Struct, frozen=True):
    room: str
    seq: int
    ts: datetime
    sender: str  # the old name
    name: str  # the new name


class TopicChanged(Struct, frozen=True):
    room: str
    seq: int
    ts: datetime
    sender: str
    text: str


RoomEvent: TypeAlias = Chat | Joined | Left | Renamed | TopicChanged


class Tail(Struct, frozen=True):
    """The last sequence number of a room, published once a second while the room is
    busy: a reader whose last lines were dropped learns of the gap without waiting for
    the next line. Not an event: it is neither numbered nor stored."""

    room: str
    seq: int


class Crowd(Struct, frozen=True):
    """In a room bigger than the broker's quiet-joins size, who came and went without a
    notice each, told once a minute. Not an event: neither numbered nor stored."""

    room: str
    joined: int
    left: int
    seconds: int


class RoomState(Struct, frozen=True):
    seq: int
    members: tuple[str, ...]  # sorted; in a big room the first MEMBERS_LISTED only
    topic: str = ""
    count: int = 0  # how many members in all, when more than are listed (0: all are)


class RoomInfo(Struct, frozen=True):
    room: str
    members: int
    topic: str = ""


class Welcome(Struct, frozen=True):
    name: str
    epoch: str
    rooms: Mapping[str, RoomState]


class Refused(Struct, frozen=True):
    code: str
    text: str
    # "login-throttled" and "busy" only, optional on the wire: seconds after which the
    # same JOIN may be sent again (an accounts broker; docs/protocol.md, 14.5)
    retry_after: float | None = None


class Error(Struct, frozen=True):
    code: str
    text: str
    id: str = ""
    # "rate-limited" only, and optional on the wire (older brokers send none): seconds
    # until the session's next request gets through, and the limit itself
    retry_after: float | None = None
    rate: float | None = None
    burst: int | None = None


class Entered(Struct, frozen=True):
    room: str
    state: RoomState


class Parted(Struct, frozen=True):
    room: str


class History(Struct, frozen=True):
    room: str
    events: tuple[RoomEvent, ...]
    lost: int = 0  # events asked for that the store no longer holds
    id: str = ""  # the request's id; "" for the history sent on join and enter


class Private(Struct, frozen=True):
    ts: datetime
    sender: str
    to: str
    text: str
    id: str = ""
    file: SharedFile | None = None  # a file shared privately; ``text`` says so in words


class Members(Struct, frozen=True):
    room: str
    members: tuple[str, ...]
    topic: str = ""
    id: str = ""
    count: int = 0  # how many members in all, when more than are listed (0: all are)


class RoomList(Struct, frozen=True):
    rooms: tuple[RoomInfo, ...]
    id: str = ""


class NickChanged(Struct, frozen=True):
    name: str


class Kicked(Struct, frozen=True):
    """Sent to a session's inbox as it is ended by an admin: who, and why."""

    by: str
    reason: str = ""
    banned: bool = False


class Done(Struct, frozen=True):
    """A request carried out (an admin's kick, ban or unban), described in ``text``."""

    text: str
    id: str = ""


class LoggedIn(Struct, frozen=True):
    """An accounts broker took the password of a JOIN: the client now subscribes to its
    rooms, then to the JOIN's marker, which completes the join (docs/protocol.md).
    ``failed``: logins refused for the account since its last one; ``last``: when that
    was (None: never, or a new account)."""

    name: str
    failed: int = 0
    last: datetime | None = None


class Heartbeat(Struct, frozen=True):
    epoch: str
    ts: datetime


class Shutdown(Struct, frozen=True):
    epoch: str
    ts: datetime
    text: str


InboxMessage: TypeAlias = (
    Welcome | Refused | Error | Entered | Parted | History | Private | Members | RoomList
    | NickChanged | Kicked | Done | LoggedIn
)  # fmt: skip
ServerMessage: TypeAlias = RoomEvent | Tail | Crowd | InboxMessage | Heartbeat | Shutdown
