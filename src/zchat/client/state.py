"""ClientCore's state, and the moves all its parts make: notes, the join and the
rejoin, the end of a session. See core.py for the rules they keep."""

from __future__ import annotations

import secrets
from collections import deque
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from datetime import UTC, datetime
from enum import Enum

from zchat import protocol as p
from zchat.client.message import Answer, Data, Message
from zchat.client.rooms import RoomView

PING_SECONDS = 1.0  # a joined client pings this often, so the broker knows it is alive
JOIN_RETRY_SECONDS = 1.0  # an unanswered JOIN is sent again after this long
AWAY_SECONDS = 3.5  # no heartbeat for this long: the broker is unreachable
ACK_SECONDS = 5.0  # a line not echoed within this long is reported as not delivered
IDLE_SECONDS = 1.0  # tick runs at least this often, whatever else is due
REJOIN_RETRY_SECONDS = 3.0  # after a refused rejoin (name briefly still held), try again
# A connection the broker refused for now (its connection limits) is made again after this.
REFUSED_RETRY_SECONDS = 2.0
# A closing client waits this long for the broker's notice of its LEAVE, so that the
# broker sees the LEAVE before the connection drops (which would read "connection lost").
LEAVE_WAIT_SECONDS = 1.0
ENTER_ERRORS = frozenset({"too-many-rooms", "bad-room", "busy"})
# Refusals of a rejoin that waiting will not change: the client stops.
# Refusals of a login that say when to ask again (retry_after): the JOIN is sent again
# then, by itself, while the join's time lasts.
WAIT_REFUSALS = frozenset({"login-throttled", "busy"})
FINAL_REFUSALS = frozenset(
    {"banned", "key-withdrawn", "not-your-name", "invalid-name", "login-failed", "login-needed"}
)


class State(Enum):
    NEW = "new"
    JOINING = "joining"
    JOINED = "joined"
    LEAVING = "leaving"  # LEAVE sent; waiting for the broker to confirm it
    CLOSED = "closed"


@dataclass(frozen=True)
class FloodRefusal:
    """The broker's flood limit dropped one of this session's requests ("rate-limited");
    it drops the ones after it too, until ``retry_at``."""

    id: str  # the refused request's id ("" if it had none)
    retry_at: float  # monotonic: when the broker takes a request again
    rate: float | None  # the limit (requests a second, at once), if the broker said:
    burst: int | None  # an older one does not
    text: str  # the broker's words
    line: str | None  # the refused line's text, if it was a line waiting for its echo


@dataclass
class PendingLine:
    """A line said, waiting for its echo."""

    text: str
    sent_at: float
    room: str | None  # None for a private line
    checked: bool = False  # the room's history was asked whether the echo was missed


class CoreState:
    """What the client knows, and the moves every part of its rules makes."""

    def __init__(
        self,
        name: str,
        rooms: Iterable[str] = (p.DEFAULT_ROOM,),
        clock: Callable[[], datetime] | None = None,
        history: int = p.DEFAULT_HISTORY,
        secure: bool = False,
        quiet: bool = False,
        password: str | None = None,
        register: bool = False,
    ) -> None:
        self.name = p.check_name(name)
        # an accounts broker: the password, kept to log in again after a restart; and
        # whether to make the account first (the first join only)
        self.password, self.register = password, register
        self.logged_in: p.LoggedIn | None = None  # the broker's last "login" answer
        # the marker the JOIN names, subscribed once logged in; whether the SUB socket
        # has subscribed to self.rooms
        self._login_mark, self._rooms_subscribed = "", False
        self._new_passwords: dict[str, str] = {}  # /passwd asked, by id: the new one
        self.secure = secure  # CURVE keys are in use
        self.quiet = quiet  # only posts: the broker announces neither its join nor its leave
        self.rooms = list(dict.fromkeys(p.check_room(r) for r in rooms)) or [p.DEFAULT_ROOM]
        self.clock = clock or (lambda: datetime.now(UTC))
        self.history = min(history, p.MAX_HISTORY)
        self.secret = secrets.token_hex(16)
        self.inbox = secrets.token_hex(16)
        self.state = State.NEW
        self.epoch: str | None = None
        self.views: dict[str, RoomView] = {}
        self.events: deque[Message] = deque()
        self.failure: Exception | None = None  # why the first join failed, if it did
        self._outbox: deque[list[bytes]] = deque()
        self._subscriptions: deque[tuple[bool, bytes]] = deque()
        self._pending: dict[str, PendingLine] = {}
        self._lookups: set[str] = set()  # ids of /history requests
        self._topic_queries: set[str] = set()  # ids of who-requests asking for a topic
        self._barriers: set[str] = set()  # ids of requests sent only to be answered
        # who and list_rooms requests a program waits for (see take_answer): their answers
        self._asked: dict[str, Answer | None] = {}
        self.gaps = 0  # sequence gaps seen (and filled from history, or reported lost)
        self.undelivered: list[str] = []  # lines reported as not delivered, oldest first
        self._ids = 0
        self._marks = 0  # markers made so far (their names must not repeat)
        self._join_markers: list[bytes] = []  # to unsubscribe once welcomed
        self._enter_markers: dict[str, bytes] = {}  # room -> marker, until entered
        self._joined_once = False
        # a line saying the broker is gone (shut down, unreachable, restarted) was shown:
        # the next is the one saying it is back, with the WELCOME of the rejoin
        self._gone_told = False
        self._retry_told = False  # "cannot join again yet" was said, for this rejoin
        self._back_unsaid = False  # heard from again after a silence, not said yet
        self._seen: dict[str, int] = {}  # rooms left: the last seq shown there (re-entering)
        self._intros: dict[str, list[str]] = {}  # notes on a room, said after its history
        self._join_sent = 0.0
        self._join_deadline = 0.0
        self._last_tick = 0.0
        self._reconnect_at: float | None = None  # see ClientCore.take_reconnect
        self._last_heard = 0.0
        self._last_ping = 0.0
        self._away = False
        self._where = ""
        self._timeout = 0.0
        self._handshake_told: set[str] = set()
        self.ended: str | None = None  # why the session ended for good (kicked, banned)
        self.verb = "join"  # what the person is doing, as messages name it ("send")
        self.flood: FloodRefusal | None = None  # the last request refused for flooding
        # the program says again the lines the flood limit refused (zchat send, a piped
        # zchat join): they are neither reported nor counted as undelivered
        self.says_again = False

    # --- what the adapters ask -----------------------------------------------------------

    def subscriptions(self) -> list[bytes]:
        """Topics to subscribe before connecting, in this order (inbox last). A login
        subscribes to its rooms once the password is taken (on_logged_in)."""
        if self.password is not None:
            return [p.SYS_TOPIC, p.inbox_topic(self.inbox)]
        self._rooms_subscribed = True
        return [*(p.room_topic(r) for r in self.rooms), p.SYS_TOPIC, p.inbox_topic(self.inbox)]

    def take_subscriptions(self) -> list[tuple[bool, bytes]]:
        """Changes to apply to the SUB socket now: (subscribe?, topic), in order."""
        out = list(self._subscriptions)
        self._subscriptions.clear()
        return out

    @property
    def has_outbox(self) -> bool:
        return bool(self._outbox)

    def take_outbox(self) -> list[list[bytes]]:
        out = list(self._outbox)
        self._outbox.clear()
        return out

    @property
    def joining(self) -> bool:
        return self.state is State.JOINING

    @property
    def joined(self) -> bool:
        return self.state is State.JOINED

    @property
    def leaving(self) -> bool:
        return self.state is State.LEAVING

    @property
    def unacknowledged(self) -> int:
        return len(self._pending)

    # --- internals ---------------------------------------------------------------------------

    def _next_id(self, prefix: str) -> str:
        self._ids += 1
        return f"{prefix}{self._ids}"

    def _send_join(self, now: float, first: bool = False) -> None:
        self._join_sent = now
        since = {room: view.shown for room, view in self.views.items() if room in self.rooms}
        mark = ""
        if self.password is not None:
            self._send_login(since)
            return
        if not first:  # the broker may have lost track of our inbox: a marker proves it
            self._marks += 1
            mark = f"j{self._marks}"
            self._join_markers.append(p.marker_topic(self.inbox, mark))
            self._subscriptions.append((True, self._join_markers[-1]))
        rooms = tuple(self.rooms)
        join = p.Join(
            self.name, self.secret, self.inbox, rooms, self.history, since, mark, self.quiet
        )
        self._outbox.append(p.encode_client(join))

    def _send_login(self, since: dict[str, int]) -> None:
        """A JOIN with the password, naming a marker that is subscribed only once the
        password is taken (on_logged_in). Sent again unanswered, it names the same."""
        if not self._login_mark:
            self._marks += 1
            self._login_mark = f"l{self._marks}"
        join = p.Join(
            self.name, self.secret, self.inbox, tuple(self.rooms), self.history, since,
            self._login_mark, self.quiet, self.password or "", self.register,
        )  # fmt: skip
        self._outbox.append(p.encode_client(join))

    def _on_logged_in(self, login: p.LoggedIn) -> None:
        """The password was taken: subscribe to the rooms (again: a key not logged in
        had none applied), then to the JOIN's marker, which completes the join."""
        if self.state is not State.JOINING or self.password is None or not self._login_mark:
            return
        self.logged_in = login
        self.register = False  # the account exists now
        for room in self.rooms:
            topic = p.room_topic(room)
            if self._rooms_subscribed:
                self._subscriptions.append((False, topic))
            self._subscriptions.append((True, topic))
        self._rooms_subscribed = True
        marker = p.marker_topic(self.inbox, self._login_mark)
        if marker in self._join_markers:  # said again: the broker needs it anew
            self._subscriptions.append((False, marker))
        else:
            self._join_markers.append(marker)
        self._subscriptions.append((True, marker))

    def _rejoin(self, now: float, why: str) -> None:
        if not self._gone_told:  # one line when the broker goes, one when it is back
            self._note(why)
            self._gone_told = True
        self.state = State.JOINING
        for view in self.views.values():  # the rejoin brings everything after `shown`
            view.fill = None
            view.held.clear()
        for pending in self._pending.values():
            self.undelivered.append(pending.text)
            self._note(f"not delivered (the broker lost the session): {pending.text}")
        self._pending.clear()
        self._login_mark = ""  # a new JOIN: a new marker
        self._send_join(now)

    def _end(self, why: str) -> None:
        """The session is over for good: say why; lines not yet echoed are reported."""
        self.ended = why
        self.state = State.CLOSED
        for pending in self._pending.values():
            self.undelivered.append(pending.text)
        self._pending.clear()
        self._note(why)

    def _note(self, text: str, room: str | None = None, data: Data | None = None) -> None:
        self.events.append(Message.system(text, self.clock(), room, data))
