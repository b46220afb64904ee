"""The client's rules, shared by the sync and the asyncio client. No sockets here.

The adapters feed it what arrives on the SUB socket (``on_publish``), call ``tick``
when ``deadline()`` passes, send what ``take_outbox`` hands them on the PUSH socket,
and hand ``events`` to the program.

Rules this module keeps:

* ``subscriptions()`` puts the inbox topic last: once the broker sees it, the rooms
  are already subscribed, so the WELCOME and the join notice cannot be missed.
* A line is either acknowledged (its own echo, matched by ``id``), refused at once
  (``NotDelivered``), or reported as not delivered after ``ACK_SECONDS``. Never lost
  without a word.
* The broker's heartbeat (every second on sys/) is the sign of life. Silence for
  ``AWAY_SECONDS`` is reported once; a heartbeat from a new epoch (the broker
  restarted) or an "unknown-session" answer to a ping makes the client join again
  under the same name, by itself.
"""

from __future__ import annotations

import secrets
from collections import deque
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from datetime import UTC, datetime
from enum import Enum

from zchat import protocol as p
from zchat.client.message import Message, from_room_event
from zchat.errors import BrokerUnreachable, JoinRefused, NotDelivered, ProtocolError

PING_SECONDS = 1.0  # a joined client pings this often, so the broker knows it is alive
JOIN_RETRY_SECONDS = 1.0  # an unanswered JOIN is sent again after this long
AWAY_SECONDS = 3.5  # no heartbeat for this long: the broker is unreachable
ACK_SECONDS = 5.0  # a line not echoed within this long is reported as not delivered
REJOIN_RETRY_SECONDS = 3.0  # after a refused rejoin (name briefly still held), try again
# A closing client waits this long for the broker's notice of its LEAVE, so that the
# broker sees the LEAVE before the connection drops (which would read "connection lost").
LEAVE_WAIT_SECONDS = 1.0


class State(Enum):
    NEW = "new"
    JOINING = "joining"
    JOINED = "joined"
    LEAVING = "leaving"  # LEAVE sent; waiting for the broker's notice of it
    CLOSED = "closed"


@dataclass
class _Pending:
    say: p.Say
    sent_at: float


class ClientCore:
    def __init__(
        self,
        name: str,
        rooms: Iterable[str] = (p.DEFAULT_ROOM,),
        clock: Callable[[], datetime] | None = None,
    ) -> None:
        self.name = p.check_name(name)
        self.rooms = tuple(dict.fromkeys(p.check_room(r) for r in rooms)) or (p.DEFAULT_ROOM,)
        self.clock = clock or (lambda: datetime.now(UTC))
        self.secret = secrets.token_hex(16)
        self.inbox = secrets.token_hex(16)
        self.state = State.NEW
        self.epoch: str | None = None
        self.last_seq: dict[str, int] = {}
        self.events: deque[Message] = deque()
        self.failure: Exception | None = None  # why the first join failed, if it did
        self._outbox: deque[list[bytes]] = deque()
        self._pending: dict[str, _Pending] = {}
        self._ids = 0
        self._joined_once = False
        self._join_sent = 0.0
        self._join_deadline = 0.0
        self._last_heard = 0.0
        self._last_ping = 0.0
        self._away = False
        self._where = ""
        self._timeout = 0.0

    # --- what the adapters ask -----------------------------------------------------------

    def subscriptions(self) -> list[bytes]:
        """Topics to subscribe, in this order (inbox last)."""
        return [*(p.room_topic(r) for r in self.rooms), p.SYS_TOPIC, p.inbox_topic(self.inbox)]

    @property
    def has_outbox(self) -> bool:
        return bool(self._outbox)

    def take_outbox(self) -> list[list[bytes]]:
        out = list(self._outbox)
        self._outbox.clear()
        return out

    def deadline(self) -> float:
        """The monotonic time by which ``tick`` must next run."""
        times = [self._last_heard + AWAY_SECONDS]
        if self.state is State.JOINING:
            times += [self._join_sent + JOIN_RETRY_SECONDS]
        if self.state is State.JOINED:
            times.append(self._last_ping + PING_SECONDS)
        times += [pending.sent_at + ACK_SECONDS for pending in self._pending.values()]
        return min(times)

    @property
    def joining(self) -> bool:
        return self.state is State.JOINING

    @property
    def joined(self) -> bool:
        return self.state is State.JOINED

    @property
    def unacknowledged(self) -> int:
        return len(self._pending)

    # --- what the program asks -------------------------------------------------------------

    def start(self, now: float, timeout: float, where: str = "the broker") -> None:
        self._where = where
        self._timeout = timeout
        self.state = State.JOINING
        self._join_deadline = now + timeout
        self._last_heard = now
        self._send_join(now)

    def say(self, text: str, room: str | None, now: float) -> tuple[str, list[bytes]]:
        """Frames for one line; ``forget(id)`` if they could not be sent."""
        text = p.check_text(text)
        target = p.check_room(room) if room else self.rooms[0]
        if self.state is not State.JOINED or self._away:
            raise NotDelivered("the broker is unreachable, reconnecting…")
        if target not in self.rooms:
            raise NotDelivered(f"you are not in #{target}")
        self._ids += 1
        say = p.Say(self.secret, target, text, f"m{self._ids}")
        self._pending[say.id] = _Pending(say, now)
        return say.id, p.encode_client(say)

    def forget(self, id_: str) -> None:
        self._pending.pop(id_, None)

    def leave(self, reason: str = "") -> list[bytes] | None:
        """Frames saying goodbye, if there is a session to end; the adapter then waits
        (at most LEAVE_WAIT_SECONDS) while ``leaving`` for the broker to confirm."""
        frames = p.encode_client(p.Leave(self.secret, p.check_reason(reason)))
        was_joined = self.state is State.JOINED
        self.state = State.LEAVING if was_joined else State.CLOSED
        return frames if was_joined else None

    def left(self) -> None:
        """The LEAVE could not be sent, or its confirmation did not come: stop waiting."""
        self.state = State.CLOSED

    @property
    def leaving(self) -> bool:
        return self.state is State.LEAVING

    # --- what arrives ------------------------------------------------------------------------

    def on_publish(self, frames: list[bytes], now: float) -> None:
        try:
            topic, msg = p.decode_server(frames)
        except ProtocolError:
            return  # a broker speaking another version, or noise: nothing to show
        self._last_heard = now
        if self._away and not isinstance(msg, p.Shutdown):
            self._away = False
            self._note("broker reachable again")
        match msg:
            case p.Chat() | p.Joined() | p.Left():
                self._on_room_event(msg)
            case p.Welcome():
                self._on_welcome(msg, now)
            case p.Refused(code, text):
                self._on_refused(code, text, now)
            case p.Error(code, text, id_):
                self._on_error(code, text, id_, now)
            case p.Heartbeat(epoch):
                if self.state is State.JOINED and epoch != self.epoch:
                    self._rejoin(now, "the broker restarted, joining again…")
            case p.Shutdown(_, _, text):
                self._away = True
                self._note(f"broker shut down ({text}); waiting for it to come back…")
        del topic

    def tick(self, now: float) -> None:
        if self.state is State.JOINING:
            if not self._joined_once and now >= self._join_deadline:
                self.state = State.CLOSED
                self.failure = BrokerUnreachable(
                    f"no answer from the broker at {self._where} within {self._timeout:g} s: "
                    "is `zchat broker` running there?"
                )
                return
            if now - self._join_sent >= JOIN_RETRY_SECONDS and not self._outbox:
                self._send_join(now)
        if self.state is State.JOINED and now - self._last_ping >= PING_SECONDS:
            self._last_ping = now
            if not self._outbox:
                self._outbox.append(p.encode_client(p.Ping(self.secret, self.inbox)))
        if now - self._last_heard >= AWAY_SECONDS and not self._away and self._joined_once:
            self._away = True
            self._note("broker unreachable, reconnecting…")
        for id_, pending in list(self._pending.items()):
            if now - pending.sent_at >= ACK_SECONDS:
                del self._pending[id_]
                self._note(f"not delivered (no answer from the broker): {pending.say.text}")

    # --- internals ---------------------------------------------------------------------------

    def _send_join(self, now: float) -> None:
        self._join_sent = now
        join = p.Join(self.name, self.secret, self.inbox, self.rooms)
        self._outbox.append(p.encode_client(join))

    def _rejoin(self, now: float, why: str) -> None:
        self._note(why)
        self.state = State.JOINING
        self._fail_pending("not delivered (the broker lost the session)")
        self._send_join(now)

    def _on_room_event(self, event: p.RoomEvent) -> None:
        self.last_seq[event.room] = max(self.last_seq.get(event.room, 0), event.seq)
        if isinstance(event, p.Chat) and event.sender == self.name:
            self._pending.pop(event.id, None)
        elif isinstance(event, p.Left) and event.sender == self.name and self.leaving:
            self.state = State.CLOSED
        self.events.append(from_room_event(event))

    def _on_welcome(self, welcome: p.Welcome, now: float) -> None:
        if self.state is not State.JOINING:
            return  # an answer to a repeated JOIN
        self.state = State.JOINED
        self.epoch = welcome.epoch
        self._last_ping = now
        for room, state in welcome.rooms.items():
            self.last_seq[room] = state.seq
            others = [m for m in state.members if m != self.name]
            here = ", ".join(others) if others else "nobody else yet"
            self._note(f"in #{room}: {here}", room)
        if self._joined_once:
            self._note(f"joined again as {self.name}")
        self._joined_once = True

    def _on_refused(self, code: str, text: str, now: float) -> None:
        if self.state is not State.JOINING:
            return
        if self._joined_once:
            # our old session may still hold the name for a moment: keep trying
            self._note(f"cannot join again yet: {text}; retrying")
            self._join_sent = now + REJOIN_RETRY_SECONDS - JOIN_RETRY_SECONDS
            return
        self.state = State.CLOSED
        self.failure = JoinRefused(code, text)

    def _on_error(self, code: str, text: str, id_: str, now: float) -> None:
        if code == "unknown-session":
            if self.state is State.JOINED:
                self._rejoin(now, "the broker lost this session, joining again…")
            return
        pending = self._pending.pop(id_, None)
        self._note(f"not sent: {text}" if pending else f"error from the broker: {text}")

    def _fail_pending(self, why: str) -> None:
        for pending in self._pending.values():
            self._note(f"{why}: {pending.say.text}")
        self._pending.clear()

    def _note(self, text: str, room: str | None = None) -> None:
        self.events.append(Message.system(text, self.clock(), room))
