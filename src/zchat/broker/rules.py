"""The broker's rules: frames in, decisions out. No sockets here.

Design rules this module enforces:

* The name, time and sequence number of everything published come from the broker:
  a sender is known only by its session secret, looked up in ``_by_secret``.
* A join completes only when both halves have arrived, in either order: the JOIN on
  the in-socket and the subscription to the client's inbox topic on the out-socket.
  Subscriptions of one connection arrive in order and the inbox is subscribed last,
  so at that point the client's room subscriptions are in place and nothing it should
  see (its WELCOME, its own join notice) can be missed.
* No subscription that could cover someone else's inbox is ever applied: "" is
  narrowed to the public topics, and an inbox-shaped topic is applied only when it
  names exactly one inbox.
* Losing the inbox subscription (process killed, connection closed, heartbeat timed
  out) ends the session at once with one leave notice per room.
* Bad frames are dropped and counted; they never stop the broker.
"""

from __future__ import annotations

import logging
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime

from zchat import protocol as p
from zchat.errors import InvalidInput, ProtocolError

log = logging.getLogger("zchat.broker")

# A JOIN whose inbox subscription has not arrived within this many seconds is forgotten.
PENDING_JOIN_SECONDS = 10.0
# A session silent for longer than this when its connection drops has "timed out"
# (clients ping every second); otherwise its connection was "lost".
SILENT_SECONDS = 3.0
# At most one warning per kind of dropped frame in this many seconds.
WARN_EVERY_SECONDS = 10.0
# Bounds on JOINs waiting for their subscription and on subscribed inboxes without a
# session; past them the oldest JOIN is forgotten and new inbox subscriptions refused.
MAX_PENDING = 100_000


@dataclass
class Actions:
    """What the socket loop must do, in this order: apply the subscription changes
    (right away, before receiving anything else), then publish."""

    subscribe: list[bytes] = field(default_factory=list)
    unsubscribe: list[bytes] = field(default_factory=list)
    publish: list[list[bytes]] = field(default_factory=list)


@dataclass
class Session:
    name: str
    secret: str
    inbox: str
    rooms: tuple[str, ...]
    peer: str
    last_seen: float


@dataclass
class _Pending:
    since: float
    join: p.Join
    peer: str


@dataclass
class Room:
    seq: int = 0
    members: dict[str, str] = field(default_factory=dict)  # lower-case name -> name


class BrokerRules:
    def __init__(self, epoch: str, clock: Callable[[], datetime] | None = None) -> None:
        self.epoch = epoch
        self.clock = clock or (lambda: datetime.now(UTC))
        self.rooms: dict[str, Room] = {}
        self.dropped: Counter[str] = Counter()
        self._by_secret: dict[str, Session] = {}
        self._by_inbox: dict[str, Session] = {}
        self._by_name: dict[str, Session] = {}
        self._pending: dict[str, _Pending] = {}  # inbox -> JOIN waiting for its subscription
        self._subscribed: set[str] = set()  # inboxes whose subscription is in place
        self._last_warning: dict[str, float] = {}
        self._suppressed: Counter[str] = Counter()

    # --- queries ----------------------------------------------------------------------

    @property
    def sessions(self) -> list[Session]:
        return list(self._by_secret.values())

    def members(self, room: str) -> list[str]:
        return sorted(self.rooms[room].members.values()) if room in self.rooms else []

    # --- the in-socket -----------------------------------------------------------------

    def on_inbound(self, frames: list[bytes], peer: str | None, now: float) -> Actions:
        actions = Actions()
        try:
            msg = p.decode_client(frames)
        except ProtocolError as exc:
            self._drop(exc.code, f"{exc} (from {peer or 'unknown peer'})", now)
            return actions
        match msg:
            case p.Join():
                self._on_join(msg, peer or "?", now, actions)
            case p.Say():
                self._on_say(msg, now, actions)
            case p.Ping(secret, inbox):
                session = self._by_secret.get(secret)
                if session is None or session.inbox != inbox:
                    # The client believes in a session we do not have (we restarted, or
                    # its connection was dropped): tell it, so it joins again.
                    text = "session unknown to this broker, join again"
                    self._to_inbox(inbox, p.Error("unknown-session", text), actions)
                else:
                    session.last_seen = now
            case p.Leave(secret, reason):
                session = self._by_secret.get(secret)
                if session is None:
                    self._drop("unknown-session", "leave from an unknown session", now)
                else:
                    self._end(session, f"quit: {reason}" if reason else "quit", actions)
        return actions

    def _on_join(self, msg: p.Join, peer: str, now: float, actions: Actions) -> None:
        session = self._by_secret.get(msg.secret)
        if session is not None and session.inbox == msg.inbox:
            # a repeated JOIN (the WELCOME was slow): answer it again, announce nothing
            self._to_inbox(msg.inbox, self._welcome(session), actions)
            return
        if session is not None or msg.inbox in self._by_inbox:
            self._drop("field", "join reuses a secret or inbox of another session", now)
            return
        if len(self._pending) >= MAX_PENDING:
            del self._pending[next(iter(self._pending))]
        self._pending[msg.inbox] = _Pending(now, msg, peer)
        self._complete(msg.inbox, actions)

    def _on_say(self, msg: p.Say, now: float, actions: Actions) -> None:
        session = self._by_secret.get(msg.secret)
        if session is None:
            self._drop("unknown-session", "message from an unknown session", now)
            return
        session.last_seen = now
        try:
            room_name = p.check_room(msg.room)
        except InvalidInput as exc:
            self._to_inbox(session.inbox, p.Error("bad-room", str(exc), msg.id), actions)
            return
        if room_name not in session.rooms:
            error = p.Error("not-in-room", f"you are not in #{room_name}", msg.id)
            self._to_inbox(session.inbox, error, actions)
            return
        try:
            text = p.clean_text(p.check_text(msg.text))
        except InvalidInput as exc:
            self._to_inbox(session.inbox, p.Error("bad-text", str(exc), msg.id), actions)
            return
        room = self.rooms[room_name]
        room.seq += 1
        chat = p.Chat(room_name, room.seq, self.clock(), session.name, text, msg.id)
        actions.publish.append(p.encode_server(p.room_topic(room_name), chat))

    # --- the out-socket's subscriptions --------------------------------------------------

    def on_subscription(self, data: bytes, now: float) -> Actions:
        actions = Actions()
        if not data or data[0] not in (0, 1):
            self._drop("subscription", "subscription message without a 0/1 first byte", now)
            return actions
        subscribe, topic = data[0] == 1, data[1:]
        change = actions.subscribe if subscribe else actions.unsubscribe
        if topic == b"":
            change.extend([p.ROOM_PREFIX, p.SYS_TOPIC])  # everything public, no inbox
        elif p.INBOX_PREFIX.startswith(topic) or topic.startswith(p.INBOX_PREFIX):
            inbox = p.inbox_of_topic(topic)
            if inbox is None:
                self._drop("subscription", f"refused subscription to {topic[:40]!r}", now)
            elif subscribe:
                if inbox not in self._subscribed and len(self._subscribed) >= MAX_PENDING:
                    self._drop("subscription", "too many inbox subscriptions", now)
                    return actions
                change.append(topic)
                self._subscribed.add(inbox)
                self._complete(inbox, actions)
            else:
                change.append(topic)
                self._subscribed.discard(inbox)
                self._on_inbox_gone(inbox, now, actions)
        else:
            change.append(topic)
        return actions

    def _on_inbox_gone(self, inbox: str, now: float, actions: Actions) -> None:
        session = self._by_inbox.get(inbox)
        if session is not None:
            silent = now - session.last_seen > SILENT_SECONDS
            self._end(session, "timed out" if silent else "connection lost", actions)

    # --- timers ----------------------------------------------------------------------------

    def heartbeat(self) -> Actions:
        beat = p.Heartbeat(self.epoch, self.clock())
        return Actions(publish=[p.encode_server(p.SYS_TOPIC, beat)])

    def shutdown(self, text: str = "stopped by its operator") -> Actions:
        notice = p.Shutdown(self.epoch, self.clock(), text)
        return Actions(publish=[p.encode_server(p.SYS_TOPIC, notice)])

    def expire(self, now: float) -> None:
        """Forget JOINs whose inbox subscription never came."""
        for inbox, pending in list(self._pending.items()):
            if now - pending.since > PENDING_JOIN_SECONDS:
                del self._pending[inbox]
                log.debug("join of %r expired: its subscription never arrived", pending.join.name)
        for code, count in list(self._suppressed.items()):
            if now - self._last_warning.get(code, 0.0) >= WARN_EVERY_SECONDS:
                log.warning("dropped %d more bad frame(s) of kind %r", count, code)
                del self._suppressed[code]
                self._last_warning[code] = now

    # --- internals -------------------------------------------------------------------------

    def _complete(self, inbox: str, actions: Actions) -> None:
        if inbox not in self._subscribed or inbox not in self._pending:
            return
        pending = self._pending.pop(inbox)
        join = pending.join
        try:
            name = p.check_name(join.name)
        except InvalidInput as exc:
            self._to_inbox(inbox, p.Refused("invalid-name", str(exc)), actions)
            return
        try:
            rooms = tuple(dict.fromkeys(p.check_room(room) for room in join.rooms))
        except InvalidInput as exc:
            self._to_inbox(inbox, p.Refused("invalid-room", str(exc)), actions)
            return
        if name.lower() in self._by_name:
            refusal = p.Refused("name-taken", f"name {name.lower()!r} is taken")
            self._to_inbox(inbox, refusal, actions)
            log.info("refused %s from %s: name taken", name, pending.peer)
            return
        session = Session(name, join.secret, inbox, rooms, pending.peer, pending.since)
        self._by_secret[join.secret] = self._by_inbox[inbox] = session
        self._by_name[name.lower()] = session
        for room in rooms:
            self.rooms.setdefault(room, Room()).members[name.lower()] = name
        self._to_inbox(inbox, self._welcome(session), actions)
        ts = self.clock()
        for room in rooms:
            state = self.rooms[room]
            state.seq += 1
            notice = p.Joined(room, state.seq, ts, name)
            actions.publish.append(p.encode_server(p.room_topic(room), notice))
        log.info("%s joined from %s", name, session.peer)

    def _welcome(self, session: Session) -> p.Welcome:
        states = {
            room: p.RoomState(self.rooms[room].seq, tuple(self.members(room)))
            for room in session.rooms
        }
        return p.Welcome(session.name, self.epoch, states)

    def _end(self, session: Session, reason: str, actions: Actions) -> None:
        del self._by_secret[session.secret]
        del self._by_inbox[session.inbox]
        del self._by_name[session.name.lower()]
        ts = self.clock()
        for room in session.rooms:
            state = self.rooms[room]
            state.members.pop(session.name.lower(), None)
            state.seq += 1
            notice = p.Left(room, state.seq, ts, session.name, reason)
            actions.publish.append(p.encode_server(p.room_topic(room), notice))
        log.info("%s left (%s)", session.name, reason)

    def _to_inbox(self, inbox: str, msg: p.ServerMessage, actions: Actions) -> None:
        actions.publish.append(p.encode_server(p.inbox_topic(inbox), msg))

    def _drop(self, code: str, detail: str, now: float) -> None:
        self.dropped[code] += 1
        if now - self._last_warning.get(code, -WARN_EVERY_SECONDS) >= WARN_EVERY_SECONDS:
            self._last_warning[code] = now
            log.warning("dropped a bad frame: %s", detail)
        else:
            self._suppressed[code] += 1
