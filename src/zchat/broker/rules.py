"""The broker's rules: frames in, decisions out. No sockets here.

Design rules this module enforces:

* The name, time and sequence number of everything published come from the broker:
  a sender is known only by its session secret, looked up in the presence tables.
* A join completes only when both halves have arrived, in either order: the JOIN on
  the in-socket and the subscription to the client's inbox topic on the out-socket.
  Subscriptions of one connection arrive in order and the inbox is subscribed last,
  so at that point the client's room subscriptions are in place and nothing it should
  see (its WELCOME, its history, its own join notice) can be missed. Entering a room
  later works the same way: the client subscribes to the room, then to a marker topic
  ``to/<inbox>/<mark>/`` (never applied: it only tells), and the broker answers the
  enter when it has seen that marker. A JOIN may name a marker too, which completes
  it like the inbox subscription does (a client whose old connection's farewell
  arrived after its new connection's subscription uses one to be heard again).
* No subscription that could cover someone else's inbox is ever applied: "" is
  narrowed to the public topics, and an inbox-shaped topic is applied only when it
  names exactly one inbox.
* Losing the inbox subscription (process killed, connection closed, heartbeat timed
  out) ends the session at once with one leave notice per room.
* Every room event is stored before it is published (the loop commits the store
  before sending), so history and live lines never disagree.
* Bad frames are dropped and counted; they never stop the broker. A bad request from
  a known session is answered on its inbox.
* Each session has a token bucket (limits.py): requests past it are dropped, and the
  sender is told once per burst.
* In secure mode every frame comes with the name of the key that sent it (``user``,
  from the ZAP handler). A session's name is its key's name; its requests are taken
  only from that key; an inbox (and its markers) belongs to the key that subscribed
  to it first, and no other key's subscription to it is applied or heeded.
"""

from __future__ import annotations

import dataclasses
import logging
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime

from zchat import protocol as p
from zchat.broker.limits import Bucket, RateLimit
from zchat.broker.presence import Presence, Room, Session
from zchat.broker.store import HistoryStore
from zchat.errors import InvalidInput, ProtocolError

log = logging.getLogger("zchat.broker")

# A JOIN whose inbox subscription has not arrived within this many seconds is forgotten.
PENDING_JOIN_SECONDS = 10.0
# A session silent for longer than this when its connection drops has "timed out"
# (clients ping every second); otherwise its connection was "lost".
SILENT_SECONDS = 3.0
# At most one warning per kind of dropped frame in this many seconds.
WARN_EVERY_SECONDS = 10.0
# Bounds on JOINs waiting for their subscription, on subscribed inboxes, and on inboxes
# with markers: past them the oldest JOIN (or marker set) is forgotten and new inbox
# subscriptions are refused.
MAX_PENDING = 100_000
MAX_WAITING_ENTERS = 8  # per session
MAX_MARKERS = 32  # marker subscriptions remembered per inbox
# For this long after a room's last event, each heartbeat carries the room's last seq.
TAIL_SECONDS = 10.0
# Secure mode: a session whose inbox unsubscription may have come from another key's
# refused subscription is ended only if it has not been heard of for this long.
SUSPECT_SECONDS = 3.0
OPERATOR = "the operator"  # who kicks and bans through `zchat admin`


@dataclass
class Actions:
    """What the socket loop must do, in this order: apply the subscription changes
    (right away, before receiving anything else), commit the store, then publish."""

    subscribe: list[bytes] = field(default_factory=list)
    unsubscribe: list[bytes] = field(default_factory=list)
    publish: list[list[bytes]] = field(default_factory=list)
    bans_changed: bool = False  # secure mode: tell the key checker who is banned now

    def extend(self, other: Actions) -> None:
        self.subscribe += other.subscribe
        self.unsubscribe += other.unsubscribe
        self.publish += other.publish
        self.bans_changed |= other.bans_changed


class Answer(Exception):
    """A request from a known session that is refused: the code and text go back to it."""

    def __init__(self, code: str, text: str) -> None:
        super().__init__(text)
        self.code = code
        self.text = text


@dataclass
class _Pending:
    since: float
    join: p.Join
    peer: str
    user: str | None


class BrokerRules:
    def __init__(
        self,
        epoch: str,
        store: HistoryStore | None = None,
        clock: Callable[[], datetime] | None = None,
        *,
        secure: bool = False,
        admins: frozenset[str] = frozenset(),
        limit: RateLimit | None = None,
    ) -> None:
        self.epoch = epoch
        self.secure = secure
        self.admins = admins  # lower-case names (secure mode)
        self.allowed: frozenset[str] | None = None  # lower-case names with a key (secure)
        self.limit = limit or RateLimit()
        self.store = store or HistoryStore()
        self.clock = clock or (lambda: datetime.now(UTC))
        self.presence = Presence()
        self.dropped: Counter[str] = Counter()
        self._pending: dict[str, _Pending] = {}  # inbox -> JOIN waiting for its subscription
        self._pending_secrets: dict[str, str] = {}  # the secret of each waiting JOIN -> inbox
        self._subscribed: set[str] = set()  # inboxes whose subscription is in place
        self._markers: dict[str, dict[str, None]] = {}  # inbox -> marker subscriptions in place
        self._last_warning: dict[str, float] = {}
        self._suppressed: Counter[str] = Counter()
        self._busy: dict[str, tuple[float, int]] = {}  # room -> (time, seq) of its last event
        self._now = 0.0  # the time of the frame being handled
        self._owners: dict[str, str] = {}  # secure mode: inbox -> the key's user name
        self._foreign: Counter[str] = Counter()  # inbox -> other keys' refused subscriptions
        self._flooding: set[str] = set()  # secrets of sessions told to slow down

    # --- queries ----------------------------------------------------------------------

    @property
    def sessions(self) -> list[Session]:
        return list(self.presence.by_secret.values())

    def members(self, room: str) -> list[str]:
        return (
            list(self.presence.rooms[room].state().members) if room in self.presence.rooms else []
        )

    # --- the in-socket -----------------------------------------------------------------

    def on_inbound(
        self, frames: list[bytes], peer: str | None, now: float, user: str | None = None
    ) -> Actions:
        """One frame from the in-socket; ``user`` is its key's name in secure mode."""
        self._now = now
        actions = Actions()
        if self._flooding and self._over_limit(frames, now, user):
            return actions
        try:
            msg = p.decode_client(frames)
        except ProtocolError as exc:
            self._drop(exc.code, f"{exc} (from {peer or 'unknown peer'})", now)
            return actions
        if isinstance(msg, p.Join):
            self._on_join(msg, peer or "?", now, actions, user)
            return actions
        session = self.presence.by_secret.get(msg.secret)
        if self.secure and session is not None and session.user != user:
            self._drop("foreign-secret", f"{session.name}'s secret used by {user!r}", now)
            return actions
        if isinstance(msg, p.Ping):
            if session is None or session.inbox != msg.inbox:
                if self.secure and not self._owns(msg.inbox, user):
                    return actions
                # The client believes in a session we do not have (we restarted, or its
                # connection was dropped): tell it, so that it joins again.
                text = "session unknown to this broker, join again"
                self._to_inbox(msg.inbox, p.Error("unknown-session", text), actions)
            else:
                session.last_seen = now
            return actions
        if session is None:
            self._drop(
                "unknown-session", f"{type(msg).__name__.lower()} from an unknown session", now
            )
            return actions
        session.last_seen = now
        if not isinstance(msg, p.Leave) and not self._admit(session, msg, now, actions):
            return actions
        try:
            self._dispatch(session, msg, actions)
        except Answer as answer:  # a bad request from a known sender: tell it why
            error = p.Error(answer.code, answer.text, getattr(msg, "id", ""))
            self._to_inbox(session.inbox, error, actions)
        return actions

    def _dispatch(self, session: Session, msg: p.ClientMessage, actions: Actions) -> None:
        match msg:
            case p.Say(_, room, text, id_, action):
                room = self._member_room(session, room)
                event = p.Chat(room, 0, self.clock(), session.name, _text(text), id_, action)
                self._publish(event, actions)
            case p.Msg(_, to, text, id_):
                self._private(session, to, _text(text), id_, actions)
            case p.Leave(_, reason):
                self._end(session, f"quit: {reason}" if reason else "quit", actions)
            case p.Enter():
                self._on_enter(session, msg, actions)
            case p.Part(_, room, reason):
                room = self._member_room(session, room)
                self.presence.part(session, room)
                why = f"part: {reason}" if reason else "part"  # never mistaken for a quit
                self._publish(p.Left(room, 0, self.clock(), session.name, why), actions)
                self.presence.forget_if_empty(room)
                self._to_inbox(session.inbox, p.Parted(room), actions)
            case p.Nick(_, name):
                if self.secure:
                    raise Answer("fixed-name", "in secure mode your name is your key's name")
                self._rename(session, name, actions)
            case p.SetTopic(_, room, text):
                room = self._member_room(session, room)
                topic = self.presence.rooms[room].topic = _fails("bad-topic", p.check_topic, text)
                self._publish(p.TopicChanged(room, 0, self.clock(), session.name, topic), actions)
            case p.Who(_, room, id_):
                room = _fails("bad-room", p.check_room, room)
                state = self._room(room).state()
                answer = p.Members(room, state.members, state.topic, id_)
                self._to_inbox(session.inbox, answer, actions)
                self.presence.forget_if_empty(room)
            case p.ListRooms(_, id_):
                self._to_inbox(session.inbox, p.RoomList(self.presence.listing(), id_), actions)
            case p.GetHistory(_, room, after, before, limit, id_):
                room = _fails("bad-room", p.check_room, room)
                self._send_history(session, room, after, before, limit, actions, id_, always=True)
            case p.Moderate(_, op, name, reason, id_):
                if not self.secure:
                    raise Answer(
                        "not-allowed",
                        "kick, ban and unban in the chat need a broker in secure mode; "
                        "on the broker's machine, use `zchat admin`",
                    )
                if not session.admin:
                    raise Answer("not-admin", f"only admins may {op} (see the broker's keys)")
                text, done = self.moderate(op, name, reason, session.name)
                actions.extend(done)
                if self.presence.by_secret.get(session.secret) is session:  # not self-kicked
                    self._to_inbox(session.inbox, p.Done(text, id_), actions)

    def _over_limit(self, frames: list[bytes], now: float, user: str | None) -> bool:
        """A request from a session already told to slow down, dropped before it costs a
        JSON decode (the frame as encode_client lays it out; others take the long way)."""
        frame = frames[0] if len(frames) == 1 else b""
        start = frame.find(b'"secret": "', 0, 64)
        if start < 0 or not frame.startswith(
            (b'{"v": 1, "type": "say"', b'{"v": 1, "type": "msg"')
        ):
            return False
        secret = frame[start + 11 : start + 43].decode("ascii", "replace")
        session = self.presence.by_secret.get(secret)
        if session is None or secret not in self._flooding or session.user != user:
            return False
        if session.bucket.take(self.limit, now):
            session.bucket.tokens += 1.0  # not spent here: the long way takes it
            return False
        self.dropped["rate-limited"] += 1
        return True

    def _admit(self, session: Session, msg: p.ClientMessage, now: float, actions: Actions) -> bool:
        """The session's token bucket: False if this request is dropped for flooding."""
        bucket = session.bucket
        if bucket.take(self.limit, now):
            if bucket.dropped:
                self._flooding.discard(session.secret)
                log.info("%s: %d request(s) dropped for flooding", session.name, bucket.end_burst())
            return True
        self.dropped["rate-limited"] += 1
        if not bucket.told:
            self._flooding.add(session.secret)
            bucket.told = True
            text = (
                f"slow down: at most {self.limit.describe()}; "
                "this line and the next ones are dropped until you do"
            )
            self._to_inbox(
                session.inbox, p.Error("rate-limited", text, getattr(msg, "id", "")), actions
            )
        return False

    # --- moderation (admins in chat, the operator through `zchat admin`) -----------------

    def moderate(
        self, op: str, name: str, reason: str = "", by: str = OPERATOR
    ) -> tuple[str, Actions]:
        """Kick, ban or unban ``name``; returns what was done, in words, and the actions.
        Raises Answer when it cannot be done."""
        actions = Actions()
        name = _fails("invalid-name", p.check_name, name)
        reason = p.clean_text(reason[: p.MAX_REASON_CHARS])
        session = self.presence.holder(name)
        match op:
            case "kick":
                if session is None:
                    raise Answer("no-such-user", f"no user named {name!r} is here")
                self._kick(session, by, reason, False, actions)
                return f"{session.name} was kicked", actions
            case "ban":
                self.store.ban(name, reason, by, self.clock())
                actions.bans_changed = True
                if session is None:
                    return f"{name} is banned", actions
                self._kick(session, by, reason, True, actions)
                return f"{session.name} is banned, and was kicked", actions
            case "unban":
                if not self.store.unban(name):
                    raise Answer("not-banned", f"{name!r} is not banned")
                actions.bans_changed = True
                return f"{name} is no longer banned", actions
        raise Answer("bad-request", f"unknown moderation {op!r}")

    def _kick(self, session: Session, by: str, reason: str, banned: bool, actions: Actions) -> None:
        self._to_inbox(session.inbox, p.Kicked(by, reason, banned), actions)
        verb = "banned" if banned else "kicked"
        self._end(session, f"{verb} by {by}: {reason}" if reason else f"{verb} by {by}", actions)

    def withdraw(self) -> Actions:
        """After the keys were reloaded: end the sessions whose key is gone, and give or
        take admin rights as the admins list now says."""
        actions = Actions()
        for session in self.sessions:
            if self.allowed is not None and session.name.lower() not in self.allowed:
                self._kick(session, OPERATOR, "key withdrawn", False, actions)
            else:
                session.admin = session.name.lower() in self.admins
        return actions

    def who(self, now: float) -> list[dict[str, object]]:
        """Everyone here, for the operator."""
        return [
            {
                "name": s.name,
                "rooms": list(s.rooms),
                "peer": s.peer,
                "seconds": round(now - s.since, 1),
                "admin": s.admin,
                "key": s.user is not None,
            }
            for s in sorted(self.presence.by_secret.values(), key=lambda s: s.name.lower())
        ]

    # --- joining and leaving -------------------------------------------------------------

    def _on_join(
        self, msg: p.Join, peer: str, now: float, actions: Actions, user: str | None
    ) -> None:
        session = self.presence.by_secret.get(msg.secret)
        if self.secure and not self._owns(msg.inbox, user):
            self._drop("foreign-inbox", f"join by {user!r} names another key's inbox", now)
            return
        if self.secure and session is not None and session.user != user:
            self._drop("foreign-secret", f"{session.name}'s secret used by {user!r}", now)
            return
        if session is not None and session.inbox == msg.inbox:
            # a repeated JOIN (the WELCOME was slow): answer it again, announce nothing
            self._to_inbox(msg.inbox, self._welcome(session), actions)
            return
        if session is not None or msg.inbox in self.presence.by_inbox:
            self._drop("field", "join reuses a secret or inbox of another session", now)
            return
        if self._pending_secrets.get(msg.secret, msg.inbox) != msg.inbox:
            self._drop("field", "join reuses the secret of another waiting join", now)
            return
        self._unpend(msg.inbox)  # a repeated JOIN waits anew, at the end of the line
        if len(self._pending) >= MAX_PENDING:
            self._unpend(next(iter(self._pending)), forget_owner=True)
        self._pending[msg.inbox] = _Pending(now, msg, peer, user)
        self._pending_secrets[msg.secret] = msg.inbox
        if user is not None:
            self._owners[msg.inbox] = user
        self._complete(msg.inbox, actions)

    def _unpend(self, inbox: str, forget_owner: bool = False) -> _Pending | None:
        """Forget the JOIN waiting on ``inbox``, if any; ``forget_owner``: and the key that
        owns the inbox through it, unless the inbox is subscribed."""
        pending = self._pending.pop(inbox, None)
        if pending is not None:
            self._pending_secrets.pop(pending.join.secret, None)
            if forget_owner and inbox not in self._subscribed:
                self._owners.pop(inbox, None)
        return pending

    def _complete(self, inbox: str, actions: Actions) -> None:
        pending = self._pending.get(inbox)
        if pending is None:
            return
        marked = pending.join.mark and pending.join.mark in self._markers.get(inbox, {})
        if inbox not in self._subscribed and not marked:
            return
        self._unpend(inbox)
        if self.secure and self._owners.get(inbox) != pending.user:
            self._drop("foreign-inbox", f"join by {pending.user!r} lost its inbox", self._now)
            return
        self._subscribed.add(inbox)  # a marker proves the inbox subscription is in place
        join = pending.join
        try:
            name = _fails("invalid-name", p.check_name, join.name)
            rooms = list(dict.fromkeys(_fails("invalid-room", p.check_room, r) for r in join.rooms))
            name = self._may_join(name, pending.user)
        except Answer as answer:
            self._to_inbox(inbox, p.Refused(answer.code, answer.text), actions)
            key = f" with {pending.user}'s key" if pending.user else ""
            log.info("refused %s from %s%s: %s", join.name, pending.peer, key, answer.code)
            return
        if self.presence.holder(name) is not None:
            refusal = p.Refused("name-taken", f"name {name.lower()!r} is taken")
            self._to_inbox(inbox, refusal, actions)
            log.info("refused %s from %s: name taken", name, pending.peer)
            return
        bucket = Bucket.full(self.limit, pending.since)
        admin = self.secure and name.lower() in self.admins
        session = Session(
            name, join.secret, inbox, [], pending.peer, pending.since, bucket, pending.user, admin,
            since=pending.since,
        )  # fmt: skip
        self.presence.add(session)
        for room in rooms:
            self._room(room)
            self.presence.enter(session, room)
        self._to_inbox(inbox, self._welcome(session), actions)
        for room in rooms:
            limit = min(join.history, p.MAX_HISTORY)
            if room in join.since:  # a rejoin: exactly what was missed, however little
                self._send_history(session, room, join.since[room], 0, p.MAX_HISTORY, actions)
            else:
                self._send_history(session, room, 0, 0, limit, actions)
        ts = self.clock()
        for room in rooms:
            self._publish(p.Joined(room, 0, ts, name), actions)
        log.info("%s joined from %s", name, session.peer)

    def _may_join(self, name: str, user: str | None) -> str:
        """The name a JOIN gets: in secure mode, its key's. Raises Answer if banned."""
        if self.secure:
            if user is None or name.lower() != user.lower():
                raise Answer(
                    "not-your-name",
                    f"your key is {user}'s: join as {user}" if user else "no key: join again",
                )
            name = user
            if self.allowed is not None and name.lower() not in self.allowed:
                raise Answer("key-withdrawn", f"the key of {name} was withdrawn by the operator")
        ban = self.store.ban_of(name)
        if ban is not None:
            why = f": {ban.reason}" if ban.reason else ""
            raise Answer("banned", f"{ban.name} is banned from this chat by {ban.by}{why}")
        return name

    def _on_enter(self, session: Session, msg: p.Enter, actions: Actions) -> None:
        room = _fails("bad-room", p.check_room, msg.room)
        if room not in session.rooms and len(session.rooms) >= p.MAX_ROOMS_PER_SESSION:
            limit = p.MAX_ROOMS_PER_SESSION
            raise Answer("too-many-rooms", f"you are in {limit} rooms already, the limit")
        if msg.mark not in self._markers.get(session.inbox, {}):  # room not subscribed yet
            if len(session.waiting) >= MAX_WAITING_ENTERS:
                raise Answer("busy", "too many rooms being entered at once")
            session.waiting.append(msg)
            return
        state = self._room(room)
        if room in session.rooms:  # already there: answer again, announce nothing
            self._to_inbox(session.inbox, p.Entered(room, state.state()), actions)
            return
        self.presence.enter(session, room)
        self._to_inbox(session.inbox, p.Entered(room, state.state()), actions)
        self._send_history(session, room, 0, 0, min(msg.history, p.MAX_HISTORY), actions)
        self._publish(p.Joined(room, 0, self.clock(), session.name), actions)

    def _end(self, session: Session, reason: str, actions: Actions) -> None:
        self.presence.remove(session)
        self._flooding.discard(session.secret)
        ts = self.clock()
        for room in list(session.rooms):
            self.presence.part(session, room)
            self._publish(p.Left(room, 0, ts, session.name, reason), actions)
            self.presence.forget_if_empty(room)
        log.info("%s left (%s)", session.name, reason)

    # --- the out-socket's subscriptions --------------------------------------------------

    def on_subscription(
        self, data: bytes, now: float, user: str | None = None, trusted: bool = True
    ) -> Actions:
        """One (un)subscription from the out-socket; ``user`` is its key's name in secure
        mode (None when libzmq made it up for a closed connection). An untrusted one
        (the socket cannot say whose it is) is never applied; it may only end a session."""
        self._now = now
        actions = Actions()
        if not data or data[0] not in (0, 1):
            self._drop("subscription", "subscription message without a 0/1 first byte", now)
            return actions
        subscribe, topic = data[0] == 1, data[1:]
        if subscribe and not trusted:
            self._drop("misrouted", f"subscription to {topic[:40]!r} of an unknown connection", now)
            return actions
        change = actions.subscribe if subscribe else actions.unsubscribe
        if topic == b"":
            change.extend([p.ROOM_PREFIX, p.SYS_TOPIC])  # everything public, no inbox
        elif p.INBOX_PREFIX.startswith(topic) or topic.startswith(p.INBOX_PREFIX):
            inbox, marker = p.inbox_of_topic(topic), p.marker_of_topic(topic)
            if marker is not None:
                if self.secure and not self._owns(marker[0], user):
                    self._drop("foreign-inbox", f"{user!r} marks another key's inbox", now)
                    return actions
                self._on_marker(*marker, subscribe, now, actions)  # never applied
            elif inbox is None:
                self._drop("subscription", f"refused subscription to {topic[:40]!r}", now)
            elif subscribe:
                if self.secure and not self._owns(inbox, user):
                    if len(self._foreign) < MAX_PENDING:
                        self._foreign[inbox] += 1
                    self._drop("foreign-inbox", f"{user!r} asked for another key's inbox", now)
                    return actions
                if inbox not in self._subscribed and len(self._subscribed) >= MAX_PENDING:
                    self._drop("subscription", "too many inbox subscriptions", now)
                    return actions
                change.append(topic)
                self._subscribed.add(inbox)
                if user is not None:
                    self._owners[inbox] = user
                self._complete(inbox, actions)
            else:
                change.append(topic)  # applies to the unsubscribing connection only
                if self.secure and not self._owner_leaves(inbox, user, now):
                    return actions
                self._subscribed.discard(inbox)
                self._markers.pop(inbox, None)
                waiting = self._pending.get(inbox)
                if waiting is None or waiting.user != self._owners.get(inbox):
                    self._owners.pop(inbox, None)  # else kept for the key whose JOIN waits
                session = self.presence.by_inbox.get(inbox)
                if session is not None:
                    silent = now - session.last_seen > SILENT_SECONDS
                    self._end(session, "timed out" if silent else "connection lost", actions)
        else:
            change.append(topic)
        return actions

    def _owns(self, inbox: str, user: str | None) -> bool:
        """Secure mode: may ``user`` use this inbox (nobody else has it)?"""
        owner = self._owners.get(inbox)
        return user is not None and (owner is None or owner == user)

    def _owner_leaves(self, inbox: str, user: str | None, now: float) -> bool:
        """Secure mode: is this unsubscription of an inbox its owner's? A closed
        connection's unsubscriptions carry no key, and libzmq makes them for refused
        subscriptions too: if another key was refused this inbox, the session is only
        suspected, and ended if it stays silent (expire)."""
        if user is not None:
            return self._owns(inbox, user)
        if self._foreign[inbox] <= 0:
            self._foreign.pop(inbox, None)
            return True
        self._foreign[inbox] -= 1
        session = self.presence.by_inbox.get(inbox)
        if session is not None:
            session.suspect = now
        return False

    def _on_marker(
        self, inbox: str, mark: str, subscribe: bool, now: float, actions: Actions
    ) -> None:
        """A marker subscription says: this connection's earlier subscriptions are in
        place. It completes the JOIN or the enters that named it."""
        marks = self._markers.get(inbox)
        if not subscribe:
            if marks is not None:
                marks.pop(mark, None)
                if not marks:
                    del self._markers[inbox]
            return
        if marks is None:
            if len(self._markers) >= MAX_PENDING:  # forget the oldest: clients ask again
                del self._markers[next(iter(self._markers))]
            marks = self._markers[inbox] = {}
        marks[mark] = None
        while len(marks) > MAX_MARKERS:
            del marks[next(iter(marks))]
        self._complete(inbox, actions)
        session = self.presence.by_inbox.get(inbox)
        if session is None:
            return
        ready = [enter for enter in session.waiting if enter.mark == mark]
        session.waiting = [enter for enter in session.waiting if enter.mark != mark]
        for enter in ready:
            try:
                self._on_enter(session, enter, actions)
            except Answer as answer:
                self._to_inbox(session.inbox, p.Error(answer.code, answer.text), actions)

    # --- timers ----------------------------------------------------------------------------

    def heartbeat(self, now: float) -> Actions:
        """The broker's sign of life, and the last sequence number of each room that was
        busy lately (sent again every beat: a reader's full queue may drop one)."""
        beat = p.Heartbeat(self.epoch, self.clock())
        actions = Actions(publish=[p.encode_server(p.SYS_TOPIC, beat)])
        for name, (last, seq) in list(self._busy.items()):
            if now - last > TAIL_SECONDS:
                del self._busy[name]
                continue
            actions.publish.append(p.encode_server(p.room_topic(name), p.Tail(name, seq)))
        return actions

    def shutdown(self, text: str = "stopped by its operator") -> Actions:
        notice = p.Shutdown(self.epoch, self.clock(), text)
        return Actions(publish=[p.encode_server(p.SYS_TOPIC, notice)])

    def expire(self, now: float) -> Actions:
        """Forget JOINs whose inbox subscription never came; end suspected sessions that
        stayed silent; report suppressed warnings."""
        actions = Actions()
        for session in list(self.presence.by_secret.values()):
            if session.suspect is None:
                continue
            if session.last_seen > session.suspect:
                session.suspect = None  # heard from since: it was someone else's connection
            elif now - session.suspect > SUSPECT_SECONDS:
                self._subscribed.discard(session.inbox)
                self._owners.pop(session.inbox, None)
                self._end(session, "connection lost", actions)
        for inbox, pending in list(self._pending.items()):  # oldest first
            if now - pending.since <= PENDING_JOIN_SECONDS:
                break
            self._unpend(inbox, forget_owner=True)
            log.debug("join of %r expired: its subscription never arrived", pending.join.name)
        for code, count in list(self._suppressed.items()):
            if now - self._last_warning.get(code, 0.0) >= WARN_EVERY_SECONDS:
                log.warning("dropped %d more bad frame(s) of kind %r", count, code)
                del self._suppressed[code]
                self._last_warning[code] = now
        return actions

    # --- internals -------------------------------------------------------------------------

    def _room(self, name: str) -> Room:
        room = self.presence.rooms.get(name)
        if room is None:
            seq, topic = self.store.room_state(name)
            room = self.presence.rooms[name] = Room(seq, topic)
        return room

    def _member_room(self, session: Session, room: str) -> str:
        room = _fails("bad-room", p.check_room, room)
        if room not in session.rooms:
            raise Answer("not-in-room", f"you are not in #{room}")
        return room

    def _publish(self, event: p.RoomEvent, actions: Actions) -> None:
        """Number, store and publish one room event (``seq`` 0 in ``event`` is replaced)."""
        room = self._room(event.room)
        room.seq += 1
        numbered = dataclasses.replace(event, seq=room.seq)
        self.store.append(numbered, room.topic)
        self._busy[event.room] = (self._now, room.seq)
        actions.publish.append(p.encode_server(p.room_topic(event.room), numbered))

    def _send_history(
        self,
        session: Session,
        room: str,
        after: int,
        before: int,
        limit: int,
        actions: Actions,
        id_: str = "",
        always: bool = False,
    ) -> None:
        """Send the newest ``limit`` events with after < seq < before (0: up to now).
        On join and enter nothing is sent if there is nothing; a request always gets
        its answer."""
        last = self._room(room).seq
        before = last + 1 if before <= 0 or before > last + 1 else before
        events, lost = self.store.history(room, after, before, min(limit, p.MAX_HISTORY))
        if events or lost or always:
            self._to_inbox(session.inbox, p.History(room, tuple(events), lost, id_), actions)
        self.presence.forget_if_empty(room)

    def _private(self, session: Session, to: str, text: str, id_: str, actions: Actions) -> None:
        recipient = self.presence.holder(to)
        if recipient is None:
            raise Answer("no-such-user", f"no user named {to!r} is here")
        dm = p.Private(self.clock(), session.name, recipient.name, text, id_)
        self._to_inbox(recipient.inbox, dm, actions)
        if recipient is not session:
            self._to_inbox(session.inbox, dm, actions)  # the sender's copy is its receipt

    def _rename(self, session: Session, name: str, actions: Actions) -> None:
        name = _fails("invalid-name", p.check_name, name)
        holder = self.presence.holder(name)
        if holder is not None and holder is not session:
            raise Answer("name-taken", f"name {name.lower()!r} is taken")
        old = session.name
        if name == old:  # nothing changes: nothing to announce
            self._to_inbox(session.inbox, p.NickChanged(name), actions)
            return
        self.presence.rename(session, name)
        ts = self.clock()
        for room in session.rooms:
            self._publish(p.Renamed(room, 0, ts, old, name), actions)
        self._to_inbox(session.inbox, p.NickChanged(name), actions)
        log.info("%s is now known as %s", old, name)

    def _welcome(self, session: Session) -> p.Welcome:
        states = {room: self._room(room).state() for room in session.rooms}
        return p.Welcome(session.name, self.epoch, states)

    def _to_inbox(self, inbox: str, msg: p.ServerMessage, actions: Actions) -> None:
        actions.publish.append(p.encode_server(p.inbox_topic(inbox), msg))

    def _drop(self, code: str, detail: str, now: float) -> None:
        self.dropped[code] += 1
        if now - self._last_warning.get(code, -WARN_EVERY_SECONDS) >= WARN_EVERY_SECONDS:
            self._last_warning[code] = now
            log.warning("dropped a bad frame: %s", detail)
        else:
            self._suppressed[code] += 1


def _text(text: str) -> str:
    return p.clean_text(_fails("bad-text", p.check_text, text))


def _fails(code: str, check: Callable[[str], str], value: str) -> str:
    """Run a value check; turn its InvalidInput into an Answer with ``code``."""
    try:
        return check(value)
    except InvalidInput as exc:
        raise Answer(code, str(exc)) from None
