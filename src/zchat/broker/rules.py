"""The broker's rules: frames in, decisions out. No sockets here.

BrokerRules is made of four modules: this one (the in-socket's dispatch, the timers),
state.py (what the broker knows, and the moves common to all), joining.py (joins,
enters, the out-socket's subscriptions) and policing.py (flood limit, moderation).

Design rules they enforce:

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
* A quiet session (a JOIN with ``quiet``) only posts: its lines are stamped, stored
  and flood-limited as any, and its name is held as any, but it is no member of its
  rooms, and no notice tells of its comings, goings or renames.
* History reads coherently across restarts: the sessions an earlier broker never
  closed go on silently when their clients come back within the grace period, and
  are closed with a leave notice otherwise (orphans.py).
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

import logging

from zchat import protocol as p
from zchat.broker.actions import Actions, Answer, Peer, address, checked_text, fails
from zchat.broker.joining import Joining
from zchat.broker.orphans import Orphans
from zchat.broker.policing import OPERATOR, Policing
from zchat.broker.presence import Session
from zchat.broker.state import (
    PENDING_JOIN_SECONDS,
    SILENT_SECONDS,
    SUSPECT_SECONDS,
    TAIL_SECONDS,
    WARN_EVERY_SECONDS,
)
from zchat.errors import ProtocolError
from zchat.sharing.naming import human_size

__all__ = ["OPERATOR", "SILENT_SECONDS", "Actions", "Answer", "BrokerRules"]

log = logging.getLogger("zchat.broker")


class BrokerRules(Joining, Policing):
    """The broker's decisions, frame by frame. Its parts: state.py (what it knows, and
    the common moves), joining.py (joins, enters, subscriptions), policing.py (flood
    limit, moderation); here, the in-socket's dispatch and the timers."""

    # --- the in-socket -----------------------------------------------------------------

    def on_inbound(
        self, frames: list[bytes], peer: Peer, now: float, user: str | None = None
    ) -> Actions:
        """One frame from the in-socket; ``peer``: its address, or what tells it when
        asked (it costs a system call: only joins and drops ask); ``user`` is its key's
        name in secure mode."""
        self._now = now
        actions = Actions()
        if self._flooding and self._over_limit(frames, now, user):
            return actions
        try:
            msg = p.decode_client(frames)
        except ProtocolError as exc:
            self._drop(exc.code, f"{exc} (from {address(peer) or 'unknown peer'})", now)
            return actions
        if isinstance(msg, p.Join):
            self._on_join(msg, address(peer) or "?", now, actions, user)
            return actions
        session = self.presence.by_secret.get(msg.secret)
        if session is not None and not self.policy.same_key(session.user, user):
            self._drop("foreign-secret", f"{session.name}'s secret used by {user!r}", now)
            return actions
        if isinstance(msg, p.Ping):
            if session is None or session.inbox != msg.inbox:
                if not self._owns(msg.inbox, user):
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
                event = p.Chat(room, 0, self.clock(), session.name, checked_text(text), id_, action)
                self._publish(event, actions)
            case p.Msg(_, to, text, id_):
                self._private(session, to, checked_text(text), id_, actions)
            case p.Leave(_, reason):
                self._end(session, f"quit: {reason}" if reason else "quit", actions)
                self._bar_key(session.user, actions)  # a login key reads no more rooms
            case p.Enter():
                self._on_enter(session, msg, actions)
            case p.Passwd():
                self._on_passwd(session, msg, actions)
            case p.Part(_, room, reason):
                room = self._member_room(session, room)
                self.presence.part(session, room)
                why = f"part: {reason}" if reason else "part"  # never mistaken for a quit
                self._announce(session, p.Left(room, 0, self.clock(), session.name, why), actions)
                self.presence.forget_if_empty(room)
                self._to_inbox(session.inbox, p.Parted(room), actions)
            case p.Nick(_, name):
                self.policy.may_rename()
                self._rename(session, name, actions)
            case p.SetTopic(_, room, text):
                room = self._member_room(session, room)
                topic = self.presence.rooms[room].topic = fails("bad-topic", p.check_topic, text)
                self._publish(p.TopicChanged(room, 0, self.clock(), session.name, topic), actions)
            case p.Who(_, room, id_, after):
                room = fails("bad-room", p.check_room, room)
                state = self._room(room).state(after=after)  # a big room's next page
                answer = p.Members(room, state.members, state.topic, id_, state.count)
                self._to_inbox(session.inbox, answer, actions)
                self.presence.forget_if_empty(room)
            case p.ListRooms(_, id_):
                self._to_inbox(session.inbox, p.RoomList(self.presence.listing(), id_), actions)
            case p.GetHistory(_, room, after, before, limit, id_):
                room = fails("bad-room", p.check_room, room)
                self._send_history(session, room, after, before, limit, actions, id_, always=True)
            case p.Moderate(_, op, name, reason, id_):
                self.policy.may_moderate(session.admin, op)
                text, done = self.moderate(op, name, reason, session.name)
                actions.extend(done)
                if self.presence.by_secret.get(session.secret) is session:  # not self-kicked
                    self._to_inbox(session.inbox, p.Done(text, id_), actions)

    # --- the file port (files.py asks) --------------------------------------------------

    def member_room(self, session: Session, room: str) -> str:
        """``room``, checked, if ``session`` is in it; Answer otherwise."""
        return self._member_room(session, room)

    def admit_request(self, session: Session, now: float) -> float | None:
        """A file-port request against the session's flood limit (and its owner's):
        None if it may go on, else the seconds until it may."""
        if self._take(session, now):
            return None
        self.dropped["rate-limited"] += 1
        return max(self._wait(session), 0.1)

    def share(
        self, session: Session, file: p.SharedFile, room: str, to: str, actions: Actions
    ) -> int:
        """Tell who may fetch it that ``session`` shared ``file``: in ``room`` (a line
        of its history; its seq is returned) or privately with ``to`` (0). StorageFull
        if the room's line cannot be stored."""
        text = f"shared {file.name} ({human_size(file.size)}): /get {file.id}"
        if room:
            event = p.Chat(room, 0, self.clock(), session.name, text, file=file)
            self._publish(event, actions)
            return self._room(room).seq
        recipient = self.presence.holder(to)
        dm = p.Private(self.clock(), session.name, to, text, file=file)
        if recipient is not None:
            self._to_inbox(recipient.inbox, dm, actions)
        if recipient is not session:
            self._to_inbox(session.inbox, dm, actions)
        return 0

    # --- timers ----------------------------------------------------------------------------

    def start(self, now: float) -> None:
        """The broker starts serving: the sessions its history leaves open (an earlier
        broker's, never closed) become orphans, waited for until ``now`` + ``grace``."""
        self.orphans = Orphans(self.store.present(), now + self.grace)
        if self.orphans:
            log.info(
                "waiting %g s for %d session(s) of the previous broker to come back",
                self.grace,
                len(self.orphans),
            )

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
        self.crowds(now, actions)
        return actions

    def shutdown(self, text: str = "stopped by its operator") -> Actions:
        notice = p.Shutdown(self.epoch, self.clock(), text)
        return Actions(publish=[p.encode_server(p.SYS_TOPIC, notice)])

    def expire(self, now: float) -> Actions:
        """Close the orphans not back within the grace period; forget JOINs whose inbox
        subscription never came; end suspected sessions that stayed silent; report
        suppressed warnings."""
        self._now = now
        actions = Actions()
        self._close_orphans(self.orphans.expired(now), actions)
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
            self._unpend(inbox, forget_owner=True)  # a login taken retires its key
            log.debug("join of %r expired: its subscription never arrived", pending.join.name)
        self.throttle.expire(now)
        self._forget_full_buckets(now)
        for code, count in list(self._suppressed.items()):
            if now - self._last_warning.get(code, 0.0) >= WARN_EVERY_SECONDS:
                log.warning("%d more of kind %r (dropped or refused)", count, code)
                del self._suppressed[code]
                self._last_warning[code] = now
        return actions
