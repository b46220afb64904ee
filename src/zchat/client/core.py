"""The client's rules, shared by the sync and the asyncio client. No sockets here.

The adapters feed it what arrives on the SUB socket (``on_publish``), call ``tick``
when ``deadline()`` passes, apply ``take_subscriptions`` to the SUB socket and send
what ``take_outbox`` or a request method hands them on the PUSH socket, and hand
``events`` to the program.

Rules this module keeps:

* ``subscriptions()`` puts the inbox topic last: once the broker sees it, the rooms
  are already subscribed, so the WELCOME and the join notice cannot be missed. To
  enter a room later, the client subscribes to it and then to a marker topic, and
  names the marker in its request: the broker answers once it has seen the marker.
  A JOIN sent again (unanswered, or to a restarted broker) names a fresh marker too.
* Each room is shown in sequence order, gaps filled from the broker's history
  (rooms.RoomView).
* A line is either acknowledged (its own echo, matched by ``id``), refused at once
  (``NotDelivered``), or reported as not delivered after ``ACK_SECONDS``. Never lost
  without a word.
* The broker's heartbeat (every second on sys/) is the sign of life. Silence for
  ``AWAY_SECONDS`` is reported once; a heartbeat from a new epoch (the broker
  restarted) or an "unknown-session" answer to a ping makes the client join again
  under the same name, by itself, asking for what it missed meanwhile.
"""

from __future__ import annotations

import secrets
from collections import deque
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from datetime import UTC, datetime
from enum import Enum

from zchat import protocol as p
from zchat.client.message import Message, from_private, from_room_event
from zchat.client.rooms import FILL_SECONDS, FILL_TRIES, Fill, RoomView
from zchat.errors import BrokerUnreachable, InvalidInput, JoinRefused, NotDelivered, ProtocolError

PING_SECONDS = 1.0  # a joined client pings this often, so the broker knows it is alive
JOIN_RETRY_SECONDS = 1.0  # an unanswered JOIN is sent again after this long
AWAY_SECONDS = 3.5  # no heartbeat for this long: the broker is unreachable
ACK_SECONDS = 5.0  # a line not echoed within this long is reported as not delivered
IDLE_SECONDS = 1.0  # tick runs at least this often, whatever else is due
REJOIN_RETRY_SECONDS = 3.0  # after a refused rejoin (name briefly still held), try again
# A closing client waits this long for the broker's notice of its LEAVE, so that the
# broker sees the LEAVE before the connection drops (which would read "connection lost").
LEAVE_WAIT_SECONDS = 1.0
ENTER_ERRORS = frozenset({"too-many-rooms", "bad-room", "busy"})
# Refusals of a rejoin that waiting will not change: the client stops.
FINAL_REFUSALS = frozenset({"banned", "key-withdrawn", "not-your-name", "invalid-name"})


class State(Enum):
    NEW = "new"
    JOINING = "joining"
    JOINED = "joined"
    LEAVING = "leaving"  # LEAVE sent; waiting for the broker's notice of it
    CLOSED = "closed"


@dataclass
class _Pending:
    text: str
    sent_at: float
    room: str | None  # None for a private line
    checked: bool = False  # the room's history was asked whether the echo was missed


class ClientCore:
    def __init__(
        self,
        name: str,
        rooms: Iterable[str] = (p.DEFAULT_ROOM,),
        clock: Callable[[], datetime] | None = None,
        history: int = p.DEFAULT_HISTORY,
        secure: bool = False,
    ) -> None:
        self.name = p.check_name(name)
        self.secure = secure  # CURVE keys are in use
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
        self._pending: dict[str, _Pending] = {}
        self._lookups: set[str] = set()  # ids of /history requests
        self._topic_queries: set[str] = set()  # ids of who-requests asking for a topic
        self._barriers: set[str] = set()  # ids of requests sent only to be answered
        self.gaps = 0  # sequence gaps seen (and filled from history, or reported lost)
        self.undelivered: list[str] = []  # lines reported as not delivered, oldest first
        self._ids = 0
        self._marks = 0  # markers made so far (their names must not repeat)
        self._join_markers: list[bytes] = []  # to unsubscribe once welcomed
        self._enter_markers: dict[str, bytes] = {}  # room -> marker, until entered
        self._joined_once = False
        self._join_sent = 0.0
        self._join_deadline = 0.0
        self._last_tick = 0.0
        self._last_heard = 0.0
        self._last_ping = 0.0
        self._away = False
        self._where = ""
        self._timeout = 0.0
        self._handshake_told: set[str] = set()
        self.ended: str | None = None  # why the session ended for good (kicked, banned)

    # --- what the adapters ask -----------------------------------------------------------

    def subscriptions(self) -> list[bytes]:
        """Topics to subscribe before connecting, in this order (inbox last)."""
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

    def deadline(self) -> float:
        """The monotonic time by which ``tick`` must next run: always later than the
        last ``tick``, so a loop that waits for it never spins."""
        times = [self._last_tick + IDLE_SECONDS]
        if self._joined_once and not self._away:
            times.append(self._last_heard + AWAY_SECONDS)
        if self.state is State.JOINING:
            times.append(self._join_sent + JOIN_RETRY_SECONDS)
            if not self._joined_once:
                times.append(self._join_deadline)
        if self.state is State.JOINED:
            times.append(self._last_ping + PING_SECONDS)
            times += [v.fill.sent_at + FILL_SECONDS for v in self.views.values() if v.fill]
        times += [pending.sent_at + ACK_SECONDS for pending in self._pending.values()]
        return min(times)

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

    # --- what the program asks -------------------------------------------------------------

    def start(self, now: float, timeout: float, where: str = "the broker") -> None:
        self._where = where
        self._timeout = timeout
        self.state = State.JOINING
        self._join_deadline = now + timeout
        self._last_heard = self._last_tick = now
        self._send_join(now, first=True)

    def say(
        self, text: str, room: str | None, now: float, action: bool = False
    ) -> tuple[str, list[bytes]]:
        """Frames for one line to a room; ``forget(id)`` if they could not be sent."""
        text = p.check_text(text)
        target = self._my_room(room)
        id_ = self._next_id("m")
        frames = self._request(p.Say(self.secret, target, text, id_, action))
        self._pending[id_] = _Pending(text, now, target)
        return id_, frames

    def msg(self, to: str, text: str, now: float) -> tuple[str, list[bytes]]:
        """Frames for one private line to ``to``."""
        text, to = p.check_text(text), p.check_name(to)
        id_ = self._next_id("m")
        frames = self._request(p.Msg(self.secret, to, text, id_))
        self._pending[id_] = _Pending(text, now, None)
        return id_, frames

    def moderate(self, op: str, name: str, reason: str = "") -> list[bytes]:
        """An admin's kick, ban or unban (secure mode); the answer comes as a note."""
        if op not in p.MODERATE_OPS:
            raise InvalidInput(f"unknown moderation {op!r}: one of {', '.join(p.MODERATE_OPS)}")
        name, reason = p.check_name(name), p.check_reason(reason)
        return self._request(p.Moderate(self.secret, op, name, reason, self._next_id("a")))

    def forget(self, id_: str) -> None:
        self._pending.pop(id_, None)

    def enter(self, room: str) -> list[bytes] | None:
        """Frames entering a room (None if already there). Apply ``take_subscriptions``
        before sending them."""
        room = p.check_room(room)
        if room in self.rooms:
            return None
        if len(self.rooms) >= p.MAX_ROOMS_PER_SESSION:
            raise InvalidInput(f"you are in {len(self.rooms)} rooms, the limit")
        mark = f"e{self._marks + 1}"
        frames = self._request(p.Enter(self.secret, room, mark, self.history))
        self._marks += 1
        marker = p.marker_topic(self.inbox, mark)
        self._enter_markers[room] = marker
        self._subscriptions.extend([(True, p.room_topic(room)), (True, marker)])
        return frames

    def part(self, room: str | None, reason: str = "") -> list[bytes]:
        return self._request(p.Part(self.secret, self._my_room(room), p.check_reason(reason)))

    def nick(self, name: str) -> list[bytes]:
        if p.check_name(name) == self.name:
            raise InvalidInput(f"you are already known as {name}")
        return self._request(p.Nick(self.secret, name))

    def set_topic(self, room: str | None, text: str) -> list[bytes]:
        return self._request(p.SetTopic(self.secret, self._my_room(room), p.check_topic(text)))

    def who(self, room: str | None) -> list[bytes]:
        return self._request(p.Who(self.secret, self._any_room(room)))

    def query_topic(self, room: str | None) -> list[bytes]:
        """Ask for a room's topic (the answer comes after any change sent before)."""
        id_ = self._next_id("t")
        frames = self._request(p.Who(self.secret, self._any_room(room), id_))
        self._topic_queries.add(id_)
        return frames

    def list_rooms(self) -> list[bytes]:
        return self._request(p.ListRooms(self.secret))

    def barrier(self) -> tuple[str, list[bytes]]:
        """A request whose answer comes after the answers to everything sent before it
        (except an enter still waiting for its marker); ``answered(id)`` tells when."""
        id_ = self._next_id("b")
        frames = self._request(p.ListRooms(self.secret, id_))
        self._barriers.add(id_)
        return id_, frames

    def answered(self, id_: str) -> bool:
        return id_ not in self._barriers

    def lookup(self, room: str | None, count: int) -> list[bytes]:
        """Ask for the last ``count`` lines of a room."""
        target = self._any_room(room)
        id_ = self._next_id("h")
        frames = self._request(p.GetHistory(self.secret, target, 0, 0, count, id_))
        self._lookups.add(id_)
        return frames

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

    def topic_of(self, room: str) -> str:
        view = self.views.get(p.check_room(room))
        return view.topic if view else ""

    # --- what arrives ------------------------------------------------------------------------

    def on_publish(self, frames: list[bytes], now: float) -> None:
        try:
            _, msg = p.decode_server(frames)
        except ProtocolError:
            return  # a broker speaking another version, or noise: nothing to show
        self._last_heard = now
        if self._away and not isinstance(msg, p.Shutdown):
            self._away = False
            self._note("broker reachable again")
        match msg:
            case p.Chat() | p.Joined() | p.Left() | p.Renamed() | p.TopicChanged():
                self._on_live(msg, now)
            case p.Tail(room, seq):
                view = self.views.get(room)
                if view is not None and self.joined and (gap := view.tail(seq)) is not None:
                    self.gaps += 1  # the last lines before a quiet spell were dropped
                    self._ask_fill(room, view, gap[0], gap[1], now)
            case p.Welcome():
                self._on_welcome(msg, now)
            case p.History():
                self._on_history(msg, now)
            case p.Private():
                if msg.sender == self.name:
                    self._pending.pop(msg.id, None)
                self.events.append(from_private(msg))
            case p.Refused(code, text):
                self._on_refused(code, text, now)
            case p.Kicked(by, reason, banned):
                verb = "banned" if banned else "kicked out"
                self._end(f"you were {verb} by {by}" + (f": {reason}" if reason else ""))
            case p.Error(code, text, id_):
                self._on_error(code, text, id_, now)
            case p.Heartbeat(epoch):
                if self.state is State.JOINED and epoch != self.epoch:
                    self._rejoin(now, "the broker restarted, joining again…")
            case p.Shutdown(_, _, text):
                self._away = True
                self._note(f"broker shut down ({text}); waiting for it to come back…")
            case _:
                self._on_reply(msg)

    def on_handshake(self, problem: str) -> None:
        """The connection's handshake failed: ``problem`` is "key-refused",
        "wrong-mode" or "handshake-failed" (transport.handshake_problem). Fatal to a
        first join; reported once while rejoining."""
        if not self.secure:  # no keys to be wrong: the broker wants them (the broker
            problem = "wrong-mode"  # may hang up before its reason arrives)
        text = handshake_text(problem, self._where or "the broker", self.secure)
        if self.state is State.JOINING and not self._joined_once:
            self.state = State.CLOSED
            self.failure = JoinRefused(problem, text)
        elif problem not in self._handshake_told and self.state is not State.CLOSED:
            self._handshake_told.add(problem)
            self._note(f"{text}; still trying")

    def tick(self, now: float) -> None:
        if now - self._last_tick > AWAY_SECONDS and self._last_tick:
            # this process was not running (suspended, the machine asleep): the silence
            # was ours, not the broker's; it gets the usual time to be heard from again
            self._last_heard = max(self._last_heard, now)
        self._last_tick = now
        if self.state is State.JOINING:
            if not self._joined_once and now >= self._join_deadline:
                self.state = State.CLOSED
                self.failure = BrokerUnreachable(
                    f"no answer from the broker at {self._where} within {self._timeout:g} s: "
                    "is `zchat broker` running there?"
                )
                return
            if now >= self._join_sent + JOIN_RETRY_SECONDS:
                if self._outbox:  # the last JOIN has not gone out yet: no broker to take it
                    self._join_sent = now
                else:
                    self._send_join(now)
        if self.state is State.JOINED and now >= self._last_ping + PING_SECONDS:
            self._last_ping = now
            if not self._outbox:
                self._outbox.append(p.encode_client(p.Ping(self.secret, self.inbox)))
        if now >= self._last_heard + AWAY_SECONDS and not self._away and self._joined_once:
            self._away = True
            self._note("broker unreachable, reconnecting…")
        for id_, pending in list(self._pending.items()):
            if now < pending.sent_at + ACK_SECONDS:
                continue
            view = self.views.get(pending.room or "")
            if view is not None and not pending.checked and self.joined and not self._away:
                # the echo may have been dropped on the way (a full queue): ask the room
                pending.checked, pending.sent_at = True, now
                if view.fill is None:
                    window = view.shown + 1 + p.MAX_HISTORY
                    self._ask_fill(pending.room or "", view, view.shown, window, now, check=True)
                continue
            del self._pending[id_]
            self.undelivered.append(pending.text)
            self._note(f"not delivered (no answer from the broker): {pending.text}")
        for room, view in self.views.items():
            fill = view.fill
            if fill is not None and self.joined and now >= fill.sent_at + FILL_SECONDS:
                if fill.tries < FILL_TRIES:
                    fill.tries, fill.sent_at = fill.tries + 1, now
                    self._outbox.append(self._fill_request(room, fill))
                else:  # no answer: a known gap is reported lost, a hunch is dropped
                    lost = 0 if fill.check else fill.before - fill.after - 1
                    self._show_filled(room, view, (), lost, now)

    # --- internals ---------------------------------------------------------------------------

    def _request(self, msg: p.ClientMessage) -> list[bytes]:
        if self.ended is not None:
            raise NotDelivered(self.ended)
        if self.state is not State.JOINED or self._away:
            raise NotDelivered("the broker is unreachable, reconnecting…")
        return p.encode_client(msg)

    def _my_room(self, room: str | None) -> str:
        if room is None and not self.rooms:
            raise NotDelivered("you are in no room: /join one first")
        target = p.check_room(room) if room else self.rooms[0]
        if target not in self.rooms:
            raise NotDelivered(f"you are not in #{target}")
        return target

    def _any_room(self, room: str | None) -> str:
        if room:
            return p.check_room(room)
        if not self.rooms:
            raise NotDelivered("you are in no room: name one")
        return self.rooms[0]

    def _next_id(self, prefix: str) -> str:
        self._ids += 1
        return f"{prefix}{self._ids}"

    def _send_join(self, now: float, first: bool = False) -> None:
        self._join_sent = now
        since = {room: view.shown for room, view in self.views.items() if room in self.rooms}
        mark = ""
        if not first:  # the broker may have lost track of our inbox: a marker proves it
            self._marks += 1
            mark = f"j{self._marks}"
            self._join_markers.append(p.marker_topic(self.inbox, mark))
            self._subscriptions.append((True, self._join_markers[-1]))
        rooms = tuple(self.rooms)
        join = p.Join(self.name, self.secret, self.inbox, rooms, self.history, since, mark)
        self._outbox.append(p.encode_client(join))

    def _rejoin(self, now: float, why: str) -> None:
        self._note(why)
        self.state = State.JOINING
        for view in self.views.values():  # the rejoin brings everything after `shown`
            view.fill = None
            view.held.clear()
        for pending in self._pending.values():
            self.undelivered.append(pending.text)
            self._note(f"not delivered (the broker lost the session): {pending.text}")
        self._pending.clear()
        self._send_join(now)

    def _on_live(self, event: p.RoomEvent, now: float) -> None:
        view = self.views.get(event.room)
        if view is None or self.state is State.JOINING:
            return  # not ours (yet): what we need comes with the WELCOME or the history
        if isinstance(event, p.Chat) and event.sender == self.name:
            self._pending.pop(event.id, None)
        if isinstance(event, p.Left) and event.sender == self.name and self.leaving:
            self.state = State.CLOSED
        shown, gap = view.live(event)
        self._show(shown)
        if gap is not None:
            self.gaps += 1
            self._ask_fill(event.room, view, gap[0], gap[1], now)

    def _ask_fill(
        self, room: str, view: RoomView, after: int, before: int, now: float, check: bool = False
    ) -> None:
        view.fill = Fill(self._next_id("f"), after, before, now, check=check)
        self._outbox.append(self._fill_request(room, view.fill))

    def _fill_request(self, room: str, fill: Fill) -> list[bytes]:
        get = p.GetHistory(self.secret, room, fill.after, fill.before, p.MAX_HISTORY, fill.id)
        return p.encode_client(get)

    def _show(self, events: Iterable[p.RoomEvent], replayed: bool = False) -> None:
        for event in events:
            if isinstance(event, p.TopicChanged) and event.room in self.views:
                self.views[event.room].topic = event.text
            if isinstance(event, p.Chat) and event.sender == self.name and not replayed:
                self._pending.pop(event.id, None)  # an echo that came through history
            self.events.append(from_room_event(event, replayed))

    def _on_history(self, history: p.History, now: float) -> None:
        view = self.views.get(history.room)
        if history.id in self._lookups:  # the answer to /history
            self._lookups.discard(history.id)
            count = len(history.events)
            self._note(f"last {count} line{'s' * (count != 1)} of #{history.room}:", history.room)
            self.events.extend(from_room_event(e, replayed=True) for e in history.events)
        elif view is not None and view.fill is not None and history.id == view.fill.id:
            self._show_filled(history.room, view, history.events, history.lost, now)
        elif view is not None and not history.id:  # sent on (re)join or enter: all new to us
            # older lines on a first join; what was missed while away on a rejoin
            self._show(history.events, replayed=not view.rejoined)
            lost, room = history.lost, history.room
            if lost and view.rejoined:
                self._note(
                    f"{lost} line{'s' * (lost != 1)} of #{room} missed while away "
                    "could not be recovered",
                    room,
                )
            elif lost:
                self._note(
                    f"{lost} earlier line{'s' * (lost != 1)} of #{room} are no longer kept", room
                )

    def _show_filled(
        self, room: str, view: RoomView, events: tuple[p.RoomEvent, ...], lost: int, now: float
    ) -> None:
        missing, lost = view.filled(events, lost)
        if lost:  # the oldest of the range: said before the lines that follow them
            self._note(f"{lost} line{'s' * (lost != 1)} of #{room} could not be recovered", room)
        self._show(missing)
        for event in view.take_held():
            self._on_live(event, now)
        if view.fill is None and (gap := view.gap()) is not None:
            self._ask_fill(room, view, gap[0], gap[1], now)  # a Tail's range, in turns

    def _on_welcome(self, welcome: p.Welcome, now: float) -> None:
        if self.state is not State.JOINING:
            return  # an answer to a repeated JOIN
        self.state = State.JOINED
        self.name = welcome.name  # the broker's spelling (in secure mode, the key's)
        self.epoch = welcome.epoch
        self._last_ping = now
        self._subscriptions.extend((False, marker) for marker in self._join_markers)
        self._join_markers.clear()
        for room, state in welcome.rooms.items():
            view = self.views.get(room)
            if view is not None and state.seq < view.shown:
                self._note(f"the broker's history of #{room} starts again at {state.seq}", room)
            self.views[room] = RoomView(state.seq, state.topic, rejoined=view is not None)
            self._describe(room, state)
        if self._joined_once:
            self._note(f"joined again as {self.name}")
        self._joined_once = True

    def _describe(self, room: str, state: p.RoomState) -> None:
        others = [m for m in state.members if m != self.name]
        self._note(f"in #{room}: {', '.join(others) if others else 'nobody else yet'}", room)
        if state.topic:
            self._note(f"topic of #{room}: {state.topic}", room)

    def _on_reply(self, msg: p.ServerMessage) -> None:
        match msg:
            case p.Entered(room, state):
                if room in self._enter_markers:
                    self._subscriptions.append((False, self._enter_markers.pop(room)))
                if room not in self.rooms:
                    self.rooms.append(room)
                self.views[room] = RoomView(state.seq, state.topic)
                self._describe(room, state)
            case p.Parted(room):
                if room in self.rooms:
                    self.rooms.remove(room)
                    self.views.pop(room, None)
                    self._subscriptions.append((False, p.room_topic(room)))
                    self._note(f"you left #{room}")
            case p.Members(room, _, topic, id_) if id_ in self._topic_queries:
                self._topic_queries.discard(id_)
                self._note(f"topic of #{room}: {topic}" if topic else f"#{room} has no topic", room)
            case p.Members(room, members, topic, _):
                here = ", ".join(members) if members else "nobody"
                self._note(f"in #{room}: {here}" + (f" (topic: {topic})" if topic else ""), room)
            case p.RoomList(_, id_) if id_ in self._barriers:
                self._barriers.discard(id_)
            case p.RoomList(rooms, _):
                if not rooms:
                    self._note("no rooms")
                for info in rooms:
                    topic = f": {info.topic}" if info.topic else ""
                    self._note(f"#{info.room} ({info.members}){topic}")
            case p.NickChanged(name):
                self.name = name
                self._note(f"you are now known as {name}")
            case p.Done(text):
                self._note(text)

    def _on_refused(self, code: str, text: str, now: float) -> None:
        if self.state is not State.JOINING:
            return
        if self._joined_once and code in FINAL_REFUSALS:
            self._end(f"cannot join again: {text}")
            return
        if self._joined_once:
            # our old session may still hold the name for a moment: keep trying
            self._note(f"cannot join again yet: {text}; retrying")
            self._join_sent = now + REJOIN_RETRY_SECONDS - JOIN_RETRY_SECONDS
            return
        self.state = State.CLOSED
        self.failure = JoinRefused(code, text)

    def _on_error(self, code: str, text: str, id_: str, now: float) -> None:
        if code in ENTER_ERRORS:  # an enter refused: its marker is of no more use
            self._subscriptions.extend((False, m) for m in self._enter_markers.values())
            self._enter_markers.clear()
        if code == "unknown-session":
            if self.state is State.JOINED:
                why = "the broker dropped this session (silent too long?), joining again…"
                self._rejoin(now, why)
            return
        pending = self._pending.pop(id_, None)
        if pending is not None:
            self.undelivered.append(pending.text)
        self._note(f"not sent: {text}" if pending else f"error: {text}")

    def _end(self, why: str) -> None:
        """The session is over for good: say why; lines not yet echoed are reported."""
        self.ended = why
        self.state = State.CLOSED
        for pending in self._pending.values():
            self.undelivered.append(pending.text)
        self._pending.clear()
        self._note(why)

    def _note(self, text: str, room: str | None = None) -> None:
        self.events.append(Message.system(text, self.clock(), room))


def handshake_text(problem: str, where: str, secure: bool, verb: str = "join") -> str:
    """What to tell a person whose handshake with the broker failed (on_handshake);
    ``verb``: what they tried to do."""
    if problem == "key-refused":
        return (
            f"the broker at {where} refused your key (unknown to it, or banned): ask its "
            "operator; a new user gives them their public key file (NAME.key), to be put "
            "in the broker's keys/users folder"
        )
    if problem == "wrong-mode" and secure:
        return f"the broker at {where} is not in secure mode: {verb} without --secure"
    if problem == "wrong-mode":
        return (
            f"the broker at {where} is in secure mode: {verb} with --secure "
            "--server-key broker.key --key NAME.key_secret"
        )
    return (
        f"no secure handshake with the broker at {where}: is --server-key the public "
        "key of this broker (its broker.key), and does it run with --secure?"
    )
