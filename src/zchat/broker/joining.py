"""BrokerRules, joining and leaving: a JOIN waits for its inbox subscription (or a
marker) on the out-socket, then completes; an enter waits for its marker. And the
out-socket's subscriptions: which are applied, and, in secure mode, whose inbox is
whose. See rules.py for the design rules."""

from __future__ import annotations

import logging

from zchat import protocol as p
from zchat.broker.actions import Actions, Answer, fails
from zchat.broker.identity import is_login_key
from zchat.broker.limits import Bucket
from zchat.broker.login_rules import CHECKING, Login, Logins
from zchat.broker.presence import Session
from zchat.broker.state import (
    MAX_MARKERS,
    MAX_PENDING,
    MAX_WAITING_ENTERS,
    SILENT_SECONDS,
    Pending,
    owner_of,
)

log = logging.getLogger("zchat.broker")


# A password sent to a broker without accounts: refused, never taken.
_NO_ACCOUNTS = {
    False: "this broker is in open mode: it takes no passwords, and yours travelled "
    "unencrypted; if you use it anywhere, change it",
    True: "this broker logs in with key files, not passwords (docs/protocol.md, section 12)",
}


class Joining(Logins):
    """Joining, entering, and the out-socket's subscriptions."""

    def _on_join(
        self, msg: p.Join, peer: str, now: float, actions: Actions, user: str | None
    ) -> None:
        session = self.presence.by_secret.get(msg.secret)
        if not self._owns(msg.inbox, user):
            self._drop("foreign-inbox", f"join by {user!r} names another key's inbox", now)
            return
        if session is not None and not self.policy.same_key(session.user, user):
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
        waiting = self._pending.get(msg.inbox)
        if waiting is not None and waiting.login is not None and waiting.join.secret == msg.secret:
            if waiting.login is not CHECKING:  # taken: say so again (the answer was slow)
                login = waiting.login
                self._to_inbox(msg.inbox, p.LoggedIn(login.name, login.failed, login.last), actions)
            return  # a password being checked, or taken, is not checked again
        self._unpend(msg.inbox)  # a repeated JOIN waits anew, at the end of the line
        owner = owner_of(user, peer)
        if self._pending_by_peer[owner] >= self.limits.pending_joins_per_address:
            detail = f"{owner} has {self.limits.pending_joins_per_address} JOINs waiting"
            self._drop("pending-joins", detail, now, "forgot the oldest waiting JOIN")
            oldest = next(i for i, w in self._pending.items() if owner_of(w.user, w.peer) == owner)
            self._unpend(oldest, forget_owner=True)
        if len(self._pending) >= self.limits.pending_joins:
            detail = f"{self.limits.pending_joins} JOINs are waiting"
            self._drop("pending-joins", detail, now, "forgot the oldest waiting JOIN")
            self._unpend(next(iter(self._pending)), forget_owner=True)
        self._pending[msg.inbox] = Pending(now, msg, peer, user)
        self._pending_by_peer[owner] += 1
        self._pending_secrets[msg.secret] = msg.inbox
        if user is not None:
            self._owners[msg.inbox] = user
        self._complete(msg.inbox, actions)

    def _unpend(
        self, inbox: str, forget_owner: bool = False, completed: bool = False
    ) -> Pending | None:
        """Forget the JOIN waiting on ``inbox``, if any; ``forget_owner``: and the key that
        owns the inbox through it, unless the inbox is subscribed. A login whose
        password was taken, forgotten before it ``completed``, retires its key: its room
        subscriptions were applied, and only a cut takes them back (login_rules.py)."""
        pending = self._pending.pop(inbox, None)
        if pending is not None:
            if not completed and isinstance(pending.login, Login) and pending.login is not CHECKING:
                self._retire(pending.user)
            self._pending_secrets.pop(pending.join.secret, None)
            owner = owner_of(pending.user, pending.peer)
            self._pending_by_peer[owner] -= 1
            if self._pending_by_peer[owner] <= 0:
                del self._pending_by_peer[owner]
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
        login = None
        if (pending.join.password or pending.join.register) and not self.policy.logins:
            self._unpend(inbox)
            self._to_inbox(
                inbox, p.Refused("no-accounts", _NO_ACCOUNTS[self.policy.secure]), actions
            )
            return
        if self.policy.logins and is_login_key(pending.user):
            if not self._login_done(inbox, pending, bool(marked), actions):
                return
            login = pending.login
        self._unpend(inbox, completed=True)
        if not self.policy.same_key(self._owners.get(inbox), pending.user):
            self._drop("foreign-inbox", f"join by {pending.user!r} lost its inbox", self._now)
            return
        self._subscribed.add(inbox)  # a marker proves the inbox subscription is in place
        join = pending.join
        try:
            name, rooms = self._join_of(pending, login)
        except Answer as answer:
            self._to_inbox(inbox, p.Refused(answer.code, answer.text), actions)
            self._retire(pending.user if login is not None else None)
            key = f" with {pending.user}'s key" if pending.user else ""
            log.info("refused %s from %s%s: %s", join.name, pending.peer, key, answer.code)
            return
        if self.presence.holder(name) is not None:
            refusal = p.Refused("name-taken", f"name {name.lower()!r} is taken")
            self._to_inbox(inbox, refusal, actions)
            self._retire(pending.user if login is not None else None)
            log.info("refused %s from %s: name taken", name, pending.peer)
            return
        # the name's session of an earlier broker: it goes on in the rooms this join
        # comes back to, and is closed everywhere else before this join is announced
        # (a quiet session announces no leave, so it never goes on with one)
        resumed = [room for room in rooms if room in join.since and not join.quiet]
        goes_on = self._settle_orphans(name, resumed, actions)
        bucket = Bucket.full(self.limit, pending.since)
        shared = self._shared_bucket(owner_of(pending.user, pending.peer), pending.since)
        admin = login.admin if login is not None else self.policy.is_admin(name)
        session = Session(
            name, join.secret, inbox, [], pending.peer, pending.since, bucket, pending.user, admin,
            since=pending.since, quiet=join.quiet, shared=shared,
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
        session.announced.update(goes_on)  # its coming was told by the earlier broker
        for room in rooms:
            if room not in goes_on:
                self._announce(session, p.Joined(room, 0, ts, name), actions)
        went_on = f", going on in {len(goes_on)} room(s)" if goes_on else ""
        quiet = " (quiet: posts only)" if join.quiet else ""
        log.info("%s joined from %s%s%s", name, session.peer, went_on, quiet)

    def _join_of(self, pending: Pending, login: Login | None) -> tuple[str, list[str]]:
        """The name a JOIN gets (a login's: its account's) and its rooms, made if new.
        Raises Answer if it cannot join."""
        join = pending.join
        name = login.name if login is not None else fails("invalid-name", p.check_name, join.name)
        rooms = list(dict.fromkeys(fails("invalid-room", p.check_room, r) for r in join.rooms))
        name = self._may_join(name, pending.user)
        if self.presence.holder(name) is None:
            self._make_rooms(owner_of(pending.user, pending.peer), rooms, self._now)
        return name, rooms

    def _may_join(self, name: str, user: str | None) -> str:
        """The name a JOIN gets (in secure mode, its key's). Raises Answer if banned."""
        name = self.policy.name_for(name, user)
        ban = self.store.ban_of(name)
        if ban is not None:
            why = f": {ban.reason}" if ban.reason else ""
            raise Answer("banned", f"{ban.name} is banned from this chat by {ban.by}{why}")
        return name

    def _on_enter(self, session: Session, msg: p.Enter, actions: Actions) -> None:
        room = fails("bad-room", p.check_room, msg.room)
        if room not in session.rooms and len(session.rooms) >= p.MAX_ROOMS_PER_SESSION:
            limit = p.MAX_ROOMS_PER_SESSION
            raise Answer("too-many-rooms", f"you are in {limit} rooms already, the limit")
        if msg.mark not in self._markers.get(session.inbox, {}):  # room not subscribed yet
            if len(session.waiting) >= MAX_WAITING_ENTERS:
                raise Answer("busy", "too many rooms being entered at once")
            session.waiting.append(msg)
            return
        self._make_rooms(owner_of(session.user, session.peer), [room], self._now)
        self._room(room)
        if room in session.rooms:  # already there: answer again, announce nothing
            self._to_inbox(session.inbox, p.Entered(room, self._followed(room)), actions)
            return
        self.presence.enter(session, room)
        self._to_inbox(session.inbox, p.Entered(room, self._followed(room)), actions)
        self._send_history(session, room, 0, 0, min(msg.history, p.MAX_HISTORY), actions)
        self._announce(session, p.Joined(room, 0, self.clock(), session.name), actions)

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
        if subscribe and not self.logged_in(user) and not topic.startswith(p.INBOX_PREFIX):
            # a login key not logged in: no room, whatever it asks (login_rules.py)
            if topic in (b"", p.SYS_TOPIC):
                change.append(p.SYS_TOPIC)
            else:
                # as every reconnecting client's are (libzmq sends them again): counted only
                self.dropped["not-logged-in"] += 1
            return actions
        if topic == b"":
            change.extend([p.ROOM_PREFIX, p.SYS_TOPIC])  # everything public, no inbox
        elif p.INBOX_PREFIX.startswith(topic) or topic.startswith(p.INBOX_PREFIX):
            inbox, marker = p.inbox_of_topic(topic), p.marker_of_topic(topic)
            if marker is not None:
                # libzmq's unsubscriptions for a closed connection carry no key
                if (subscribe or user is not None) and not self._owns(marker[0], user):
                    self._drop("foreign-inbox", f"{user!r} marks another key's inbox", now)
                    return actions
                self._on_marker(*marker, subscribe, now, actions)  # never applied
            elif inbox is None:
                self._drop("subscription", f"refused subscription to {topic[:40]!r}", now)
            elif subscribe:
                if not self._owns(inbox, user):
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
                if not self._owner_leaves(inbox, user, now):
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
        """May ``user`` use this inbox (in secure mode: no other key has it)?"""
        return self.policy.owns(self._owners.get(inbox), user)

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
