"""BrokerRules' state, and what all its parts use: the rooms, publishing, history,
answers on an inbox, the end of a session. See rules.py for the design rules."""

from __future__ import annotations

import logging
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import msgspec

from zchat import protocol as p
from zchat.broker.actions import Actions, Answer, fails
from zchat.broker.identity import keyed
from zchat.broker.limits import OWNER_FACTOR, Bucket, RateLimit, RuleLimits
from zchat.broker.orphans import REJOIN_GRACE_SECONDS, RESTART_REASON, Orphans
from zchat.broker.policy import OpenPolicy, Policy, SecurePolicy
from zchat.broker.presence import Presence, Room, Session
from zchat.broker.store import HistoryStore, StorageFull

log = logging.getLogger("zchat.broker")

# A JOIN whose inbox subscription has not arrived within this many seconds is forgotten.
PENDING_JOIN_SECONDS = 10.0
# A session silent for longer than this when its connection drops has "timed out"
# (clients ping every second); otherwise its connection was "lost".
SILENT_SECONDS = 3.0
# At most one warning per kind of dropped frame (or limit reached) in this many seconds;
# the rest are counted, and reported in one line when it has passed.
WARN_EVERY_SECONDS = 60.0
# Bounds on subscribed inboxes and on inboxes with markers: past them the oldest marker
# set is forgotten and new inbox subscriptions are refused. (One connection holds at
# most a few: guard.py bounds its subscriptions.)
MAX_PENDING = 100_000
MAX_WAITING_ENTERS = 8  # per session
MAX_MARKERS = 32  # marker subscriptions remembered per inbox
# For this long after a room's last event, each heartbeat carries the room's last seq.
TAIL_SECONDS = 10.0
# In a big room (limits.quiet_joins), arrivals and departures are told in sum, at most
# this often.
CROWD_SECONDS = 60.0
# Secure mode: a session whose inbox unsubscription may have come from another key's
# refused subscription is ended only if it has not been heard of for this long.
SUSPECT_SECONDS = 3.0


def owner_of(user: str | None, peer: str) -> str:
    """Who the limits beyond one session's are charged to: the key in secure mode (a
    key may connect from anywhere), the peer address in open mode and for a login key
    (identity.py: anyone can make fresh ones)."""
    return f"key {user}" if keyed(user) else peer


@dataclass
class Pending:
    """A JOIN waiting for its inbox subscription."""

    since: float
    join: p.Join
    peer: str
    user: str | None
    # an accounts broker, a login key's JOIN: its password being checked, or taken
    # (login_rules.Login); None: not yet looked at
    login: Any = None


class RulesState:
    """What the broker knows, and the moves every part of its rules makes."""

    def __init__(
        self,
        epoch: str,
        store: HistoryStore | None = None,
        clock: Callable[[], datetime] | None = None,
        *,
        secure: bool = False,
        admins: frozenset[str] = frozenset(),
        policy: Policy | None = None,
        limits: RuleLimits | None = None,
        limit: RateLimit | None = None,
        grace: float = REJOIN_GRACE_SECONDS,
    ) -> None:
        self.epoch = epoch
        self.grace = grace  # how long the sessions of an earlier broker are waited for
        # who may do what: given whole, or made from ``secure`` and ``admins``
        self.policy: Policy = policy or (SecurePolicy(admins) if secure else OpenPolicy())
        self.limit = limit or RateLimit()
        self.limits = limits or RuleLimits()
        self.store = store or HistoryStore()
        self.clock = clock or (lambda: datetime.now(UTC))
        self.presence = Presence()
        self.orphans = Orphans()  # an earlier broker's sessions, from start() on
        self.dropped: Counter[str] = Counter()
        self._pending: dict[str, Pending] = {}  # inbox -> JOIN waiting for its subscription
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
        self._pending_by_peer: Counter[str] = Counter()  # owner -> waiting JOINs
        self._new_rooms: dict[str, Bucket] = {}  # owner -> its new-room budget
        self._shared: dict[str, Bucket] = {}  # owner -> its flood bucket (limits.py)
        factor = OWNER_FACTOR if self.policy.by_address else 1
        self.shared_limit = RateLimit(self.limit.rate * factor, self.limit.burst * factor)

    # --- queries ----------------------------------------------------------------------

    @property
    def sessions(self) -> list[Session]:
        return list(self.presence.by_secret.values())

    def members(self, room: str) -> list[str]:
        found = self.presence.rooms.get(room)
        return sorted(found.members.values()) if found is not None else []

    # --- internals -------------------------------------------------------------------------

    def _end(self, session: Session, reason: str, actions: Actions) -> None:
        self._logged_out(session.user)
        self.presence.remove(session)
        self._flooding.discard(session.secret)
        ts = self.clock()
        for room in list(session.rooms):
            self.presence.part(session, room)
            self._announce(session, p.Left(room, 0, ts, session.name, reason), actions)
            self.presence.forget_if_empty(room)
        log.info("%s left (%s)", session.name, reason)

    def _logged_out(self, user: str | None) -> None:
        """A session of ``user``'s ended: a login key logs in again to have rooms
        (login_rules.py)."""

    def _bar_key(self, user: str | None, actions: Actions) -> None:
        """A session of ``user``'s was ended by someone else: a login key is barred, and
        its connections cut (login_rules.py)."""

    def _may_join(self, name: str, user: str | None) -> str:
        raise NotImplementedError  # joining.py's

    def _retire(self, user: str | None) -> None:
        """A login key's login is over before its session began: barred, and cut
        (login_rules.py)."""

    def _unpend(self, inbox: str, forget_owner: bool = False) -> Pending | None:
        raise NotImplementedError  # joining.py's

    def take_retired(self) -> bool:
        return False  # login_rules.py's

    def _kick(self, session: Session, by: str, reason: str, banned: bool, actions: Actions) -> None:
        raise NotImplementedError  # policing.py's

    def _settle_orphans(self, name: str, resumed: list[str], actions: Actions) -> set[str]:
        """``name`` is about to be taken: close its orphans (orphans.py), except in the
        rooms of ``resumed``, which are returned: there its session goes on silently."""
        goes_on, close = self.orphans.settle(name, resumed, self._now)
        self._close_orphans(close, actions)
        return goes_on

    def _close_orphans(self, orphans: list[tuple[str, str]], actions: Actions) -> None:
        ts = self.clock()
        for room, name in orphans:
            self._publish(p.Left(room, 0, ts, name, RESTART_REASON), actions)
            self.presence.forget_if_empty(room)
        if orphans:
            names = sorted({name for _, name in orphans})
            log.info("%s left (%s)", ", ".join(names), RESTART_REASON)

    def _shared_bucket(self, owner: str, now: float) -> Bucket:
        """The flood bucket of ``owner``, which all its sessions draw on."""
        bucket = self._shared.get(owner)
        if bucket is None:
            bucket = self._shared[owner] = Bucket.full(self.shared_limit, now)
        return bucket

    def _forget_full_buckets(self, now: float) -> None:
        """Forget the owners' buckets that are full again and that no session holds."""
        limits = ((self._new_rooms, self.limits.new_rooms), (self._shared, self.shared_limit))
        held: set[int] | None = None
        for buckets, limit in limits:
            full_after = limit.burst / max(limit.rate, 1e-9)
            for owner, bucket in list(buckets.items()):
                if now - bucket.refilled <= full_after:
                    continue
                if buckets is self._shared:
                    if held is None:
                        held = {id(s.shared) for s in self.presence.by_secret.values()}
                    if id(bucket) in held:
                        continue
                del buckets[owner]

    def _make_rooms(self, peer: str, rooms: list[str], now: float) -> None:
        """Charge the new ones among ``rooms`` to ``peer``'s budget (an owner: see
        owner_of); Answer if it is spent (then none is charged)."""
        new = [r for r in rooms if r not in self.presence.rooms and not self.store.room_state(r)[0]]
        if not new:
            return
        limit = self.limits.new_rooms
        if limit.unlimited:
            return
        bucket = self._new_rooms.get(peer)
        if bucket is None:
            bucket = self._new_rooms[peer] = Bucket.full(limit, now)
        bucket.take(limit, now)  # brings the tokens up to date
        bucket.tokens += 1.0
        if bucket.tokens < len(new):
            detail = f"{peer} asked for {len(new)} new room(s); at most {limit.burst} at once"
            self._drop("new-rooms", detail, now, "refused new rooms")
            raise Answer(
                "too-many-new-rooms",
                f"too many new rooms from {peer}: at most {limit.burst} at once, then "
                f"{limit.rate:g} a second; join rooms that exist, or wait",
            )
        bucket.tokens -= len(new)

    def _room(self, name: str) -> Room:
        room = self.presence.rooms.get(name)
        if room is None:
            seq, topic = self.store.room_state(name)
            room = self.presence.rooms[name] = Room(seq, topic)
        return room

    def _member_room(self, session: Session, room: str) -> str:
        room = fails("bad-room", p.check_room, room)
        if room not in session.rooms:
            raise Answer("not-in-room", f"you are not in #{room}")
        return room

    def _publish(self, event: p.RoomEvent, actions: Actions) -> bool:
        """Number, store and publish one room event (``seq`` 0 in ``event`` is replaced).
        What the store refuses (its disk is full) takes no number and is not published:
        a line or a topic is refused to its sender (StorageFull is an Answer); a notice
        of who came, went or was renamed is left out (False), and the change itself
        stands."""
        room = self._room(event.room)
        numbered = msgspec.structs.replace(event, seq=room.seq + 1)
        frame = p.encode_event(numbered)  # once, for the store and for the subscribers
        try:
            self.store.append(numbered, room.topic, frame)
        except StorageFull:
            if isinstance(event, p.TopicChanged):
                room.topic = self.store.room_state(event.room)[1]  # the refused one goes
            if isinstance(event, p.Chat | p.TopicChanged):
                raise
            return False
        room.seq = numbered.seq
        self._busy[event.room] = (self._now, room.seq)
        actions.publish.append([p.room_topic(event.room), frame])
        return True

    def _announce(self, session: Session, notice: p.RoomEvent, actions: Actions) -> None:
        """Publish a notice that ``session`` came, went or was renamed; a quiet session's
        go untold (it only posts). In a room of more than ``quiet_joins`` members an
        arrival is counted instead, and told in sum once a minute (``crowds``); a
        session whose arrival was told has its going told too, and only such a one."""
        room = notice.room
        if session.quiet:
            return
        if type(notice) is p.Joined:
            limit = self.limits.quiet_joins
            if room in self.presence.rooms and 0 < limit < len(self.presence.rooms[room].members):
                self._untold(room).joined_untold += 1
            elif self._publish(notice, actions):  # not if the disk was full: then its
                session.announced.add(room)  # going is not told either
            return
        if room not in session.announced:  # its arrival went untold: its going too
            if type(notice) is p.Left:
                self._untold(room).left_untold += 1
            return
        if type(notice) is p.Left:
            session.announced.discard(room)
        self._publish(notice, actions)

    def _untold(self, name: str) -> Room:
        room = self._room(name)
        if room.untold_since is None:
            room.untold_since = self._now
        return room

    def crowds(self, now: float, actions: Actions) -> None:
        """Tell each big room who came and went untold, once CROWD_SECONDS have passed
        since the first of them."""
        for name, room in self.presence.rooms.items():
            since = room.untold_since
            if since is None or now - since < CROWD_SECONDS:
                continue
            crowd = p.Crowd(name, room.joined_untold, room.left_untold, round(now - since))
            actions.publish.append(p.encode_server(p.room_topic(name), crowd))
            room.joined_untold = room.left_untold = 0
            room.untold_since = None

    def unstored(self, full: StorageFull, actions: Actions) -> Actions:
        """The store's commit failed (its disk is full) and undid room events of this
        batch (``full.lost``): publish none of them, give their rooms back the numbers
        and topics that are stored, and tell the sender of each line or topic why it
        was not said."""
        gone = {tuple(p.encode_server(p.room_topic(e.room), e)) for e in full.lost}
        kept = Actions(publish=[f for f in actions.publish if tuple(f) not in gone])
        for name in {event.room for event in full.lost}:
            seq, topic = self.store.room_state(name)
            if (room := self.presence.rooms.get(name)) is not None:
                room.seq, room.topic = seq, topic
            if name in self._busy:
                self._busy[name] = (self._busy[name][0], seq)
        for event in full.lost:
            if not isinstance(event, p.Chat | p.TopicChanged):
                continue  # a notice of who came or went: left out, the change stands
            if (sender := self.presence.holder(event.sender)) is not None:
                error = p.Error(full.code, full.text, getattr(event, "id", ""))
                self._to_inbox(sender.inbox, error, kept)
        return kept

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
        name = fails("invalid-name", p.check_name, name)
        holder = self.presence.holder(name)
        if holder is not None and holder is not session:
            raise Answer("name-taken", f"name {name.lower()!r} is taken")
        old = session.name
        if name == old:  # nothing changes: nothing to announce
            self._to_inbox(session.inbox, p.NickChanged(name), actions)
            return
        self._settle_orphans(name, [], actions)  # the name's earlier session is over
        self.presence.rename(session, name)
        ts = self.clock()
        for room in session.rooms:
            self._announce(session, p.Renamed(room, 0, ts, old, name), actions)
        self._to_inbox(session.inbox, p.NickChanged(name), actions)
        log.info("%s is now known as %s", old, name)

    def _welcome(self, session: Session) -> p.Welcome:
        states = {room: self._followed(room) for room in session.rooms}
        return p.Welcome(session.name, self.epoch, states)

    def _followed(self, room: str) -> p.RoomState:
        """A room's state for a session that follows its events from now on: its
        members, and the orphans that will come back in silence or leave with a
        notice (orphans.py)."""
        return self._room(room).state(others=self.orphans.in_room(room))

    def _to_inbox(self, inbox: str, msg: p.ServerMessage, actions: Actions) -> None:
        actions.publish.append(p.encode_server(p.inbox_topic(inbox), msg))

    def _drop(self, code: str, detail: str, now: float, what: str = "dropped a bad frame") -> None:
        self.dropped[code] += 1
        if now - self._last_warning.get(code, -WARN_EVERY_SECONDS) >= WARN_EVERY_SECONDS:
            self._last_warning[code] = now
            log.warning("%s: %s", what, detail)
        else:
            self._suppressed[code] += 1
