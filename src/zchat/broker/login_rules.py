"""BrokerRules, logging in (an accounts broker): a JOIN from a login key carries a
password; the broker checks it off the loop, and only then lets the key's room
subscriptions through. See docs/protocol.md, "Logging in".

The exchange, on the sockets a join uses anyway:

1. The client subscribes to the system topic and its inbox only (no room: a key
   not logged in has none of its room subscriptions applied), and sends a JOIN with
   its ``password`` and a ``mark``.
2. With the JOIN and the inbox subscription both in (as any join), the password is
   checked by the hashing thread (logins.py), unless the throttle says wait.
3. Refused: a ``refused`` answer (``login-failed``: "wrong name or password", the
   same whether the name has an account or not). Taken: a ``login`` answer; from now
   on the key's subscriptions to rooms are applied.
4. The client subscribes to its rooms, then to the JOIN's marker; the marker, seen
   after the password was taken, completes the join as any marker does (joining.py).

A logged-in key's session is bound to that key as secure mode binds one to a listed
key (policy.same_key): its secret and inbox are of no use from another connection.
Kicking, banning, a password changed by the operator, a deleted account, a quit: each
ends the session and bars the key, whose connections are then cut (operator.py), so
that what it subscribed to is dropped with them. So does a login that ends before its
session begins (its marker never came, or it was refused after its password was taken):
its room subscriptions were applied, and only a cut takes them back.

Guessing is throttled (logins.py): per account and per address, checks in flight
included; the address an account last logged in from is spared the account's wait and
served first, so guessers elsewhere neither lock out nor delay its owner there.
"""

from __future__ import annotations

import itertools
import logging
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from zchat import protocol as p
from zchat.broker.accounts import AccountStore
from zchat.broker.actions import Actions, Answer, fails
from zchat.broker.identity import is_login_key
from zchat.broker.logins import (
    BUSY_RETRY_SECONDS,
    IN_FLIGHT_RETRY_SECONDS,
    MAX_CHECKS_PER_ADDRESS,
    Job,
    Throttle,
    Verdict,
    seconds_text,
)
from zchat.broker.presence import Session
from zchat.broker.state import Pending, RulesState
from zchat.errors import InvalidInput
from zchat.passwords import check_new_password

log = logging.getLogger("zchat.broker")

WRONG = "login refused: wrong name or password"
MAX_ENDED_KEYS = 10_000  # barred login keys remembered (their connections are cut first)


@dataclass(frozen=True)
class Login:
    """A password taken: the account's name as shown, and what its owner is told."""

    name: str
    admin: bool
    failed: int = 0
    last: datetime | None = None


CHECKING = Login("", False)  # a password being checked


@dataclass(frozen=True)
class _Ticket:
    kind: str  # "login", "register" or "passwd"
    name: str  # the account's, as given
    inbox: str = ""  # login and register: the JOIN's
    join: p.Join | None = None
    peer: str = ""
    secret: str = ""  # passwd: the session's
    id: str = ""


class Logins(RulesState):
    """Logging in, registering, changing a password; and the operator's accounts."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._init_logins()

    accounts: AccountStore
    throttle: Throttle
    # to the hashing thread (the Broker sets it): the job, and whether it is urgent
    submit_login: Callable[[Job, bool], bool]
    _logins: dict[str, str]  # logged-in login key -> its account (lower case)
    _tickets: dict[int, _Ticket]
    ended_keys: dict[str, None]  # login keys barred (kicked, banned, password changed)

    def _init_logins(self) -> None:
        self.accounts = AccountStore(self.store)
        self.throttle = Throttle()
        self.login_jobs: list[Job] = []  # what submit_login took, if not the Broker's
        self.submit_login = self._queue_job
        self._logins = {}
        self._tickets = {}
        self._serials = itertools.count(1)
        self.ended_keys = {}
        self._in_flight: Counter[str] = Counter()  # throttle key -> checks waiting
        self._retired = False  # login keys were barred: see take_retired
        self.logins_counted = {"taken": 0, "refused": 0, "throttled": 0, "busy": 0}

    def _queue_job(self, job: Job, urgent: bool = False) -> bool:
        self.login_jobs.append(job)
        return True

    def _logged_out(self, user: str | None) -> None:
        self._logins.pop(user or "", None)

    def logged_in(self, user: str | None) -> bool:
        """May this key's room subscriptions be applied (not a login key, or logged in)?"""
        return not self.policy.logins or not is_login_key(user) or user in self._logins

    # --- joining ------------------------------------------------------------------------

    def _login_done(self, inbox: str, pending: Pending, marked: bool, actions: Actions) -> bool:
        """A login key's JOIN: True once its password was taken and its marker came."""
        if pending.login is None:
            self._start_login(inbox, pending, actions)
            return False
        return pending.login is not CHECKING and marked

    def _start_login(self, inbox: str, pending: Pending, actions: Actions) -> None:
        join = pending.join
        try:
            if not join.password:
                raise Answer(
                    "login-needed",
                    "this broker needs a login: join with your account's password "
                    "(zchat join asks for it), or with a key file (--secure)",
                )
            if not join.mark:
                raise Answer("login-needed", "a JOIN with a password names a mark (protocol.md)")
            name = fails("invalid-name", p.check_name, join.name)
            kind = "register" if join.register else "login"
            ticket = _Ticket(kind, name, inbox, join, pending.peer)
            self._not_in_flight(ticket)
            job, urgent = self._register(ticket) if join.register else self._check(ticket)
        except Answer as answer:
            wait = answer.retry_after if isinstance(answer, Wait) else None
            self._refuse_login(inbox, pending, answer.code, answer.text, actions, wait)
            return
        serial = next(self._serials)
        if not self.submit_login(Job(serial, *job), urgent):
            self.logins_counted["busy"] += 1
            text = "the broker is checking many logins at once: try again in a moment"
            self._refuse_login(inbox, pending, "busy", text, actions, BUSY_RETRY_SECONDS)
            return
        self._tickets[serial] = ticket
        self._in_flight.update(_throttled(ticket.name, ticket.peer))
        pending.login = CHECKING

    def _not_in_flight(self, ticket: _Ticket) -> None:
        """Wait (raised) if the account has a check waiting, or the address many."""
        account, address = _throttled(ticket.name, ticket.peer)
        if self._in_flight[account] or self._in_flight[address] >= MAX_CHECKS_PER_ADDRESS:
            self.logins_counted["throttled"] += 1
            raise Wait(
                "login-throttled",
                "login refused for now: another login for this name, or many from this "
                "address, are being checked; try again in a moment",
                IN_FLIGHT_RETRY_SECONDS,
            )

    def _landed(self, ticket: _Ticket) -> None:
        """A check of ``ticket`` came back: it waits no more."""
        for key in _throttled(ticket.name, ticket.peer):
            self._in_flight[key] -= 1
            if self._in_flight[key] <= 0:
                del self._in_flight[key]

    def _check(self, ticket: _Ticket) -> tuple[tuple[str, str, str | None], bool]:
        """The job that checks a login's password, and whether it is urgent (from the
        address the account last logged in from); Wait if throttled."""
        account = self.accounts.get(ticket.name)
        keys = _throttled(ticket.name, ticket.peer)
        home = account is not None and account.seen_from == ticket.peer
        wait = self.throttle.wait(keys[1:] if home else keys, self._now)
        if wait > 0:
            self.logins_counted["throttled"] += 1
            if account is not None:
                self.accounts.failed(ticket.name)
            what = "refused a login too soon after failed ones (more are counted)"
            self._drop("login-throttled", f"{ticket.name} from {ticket.peer}", self._now, what)
            raise Wait(
                "login-throttled",
                f"login refused: too many failed logins; try again in {seconds_text(wait)}",
                wait,
            )
        if self._key_name(ticket.name):
            account = None  # a listed key's name logs in with its key only
        password = ticket.join.password if ticket.join else ""
        return ("check", password, account.hash if account else None), home

    def _register(self, ticket: _Ticket) -> tuple[tuple[str, str, None], bool]:
        """The job that makes an account. Every attempt counts against its address as a
        refused login would, whatever its answer: no mass sign-ups, and no quick survey
        of which names have accounts."""
        if not getattr(self.policy, "register", False):
            raise Answer(
                "register-closed",
                "this broker does not let people make their own accounts: ask its operator",
            )
        address = [f"address {ticket.peer}"]
        wait = self.throttle.wait(address, self._now)
        if wait > 0:
            text = f"too many attempts: try again in {seconds_text(wait)}"
            raise Wait("login-throttled", text, wait)
        self.throttle.failed(address, self._now)
        if self.accounts.get(ticket.name) is not None or self._key_name(ticket.name):
            raise Answer("name-taken", f"the name {ticket.name!r} has an account already")
        password = ticket.join.password if ticket.join else ""
        try:
            check_new_password(ticket.name, password)
        except InvalidInput as exc:
            raise Answer("weak-password", f"account not made: {exc}") from None
        return ("make", password, None), False

    def _key_name(self, name: str) -> bool:
        """Whether ``name`` is a listed key's (it logs in with that key, never a password)."""
        allowed: frozenset[str] | None = getattr(self.policy, "allowed", None)
        return allowed is not None and name.lower() in allowed

    def _refuse_login(
        self, inbox: str, pending: Pending, code: str, text: str, actions: Actions,
        retry_after: float | None = None,
    ) -> None:  # fmt: skip
        self._unpend(inbox)
        self._logins.pop(pending.user or "", None)
        wait = None if retry_after is None else round(retry_after, 3)
        self._to_inbox(inbox, p.Refused(code, text, wait), actions)

    def on_verdict(self, verdict: Verdict, now: float) -> Actions:
        """The hashing thread's answer to a job of ``submit_login``."""
        self._now = now
        actions = Actions()
        ticket = self._tickets.pop(verdict.ticket, None)
        if ticket is None:
            return actions
        self._landed(ticket)
        if ticket.kind == "passwd":
            self._password_changed(ticket, verdict, actions)
            return actions
        pending = self._pending.get(ticket.inbox)
        if pending is None or pending.join is not ticket.join or pending.login is not CHECKING:
            return actions  # gone meanwhile (expired, or joined again)
        keys = _throttled(ticket.name, pending.peer)
        if not verdict.ok:
            self.logins_counted["refused"] += 1
            self.throttle.failed(keys, now)
            self.accounts.failed(ticket.name)
            log.warning("failed login for %s from %s", ticket.name, pending.peer)
            self._refuse_login(ticket.inbox, pending, "login-failed", WRONG, actions)
            return actions
        if ticket.kind == "register":
            if not self.accounts.add(ticket.name, verdict.hash, False, self.clock()):
                text = f"the name {ticket.name!r} has an account already"
                self._refuse_login(ticket.inbox, pending, "name-taken", text, actions)
                return actions
            log.info("%s made an account from %s", ticket.name, pending.peer)
        account = self.accounts.get(ticket.name)
        if account is None:  # deleted while its password was checked
            self._refuse_login(ticket.inbox, pending, "login-failed", WRONG, actions)
            return actions
        try:  # refused now, not once its rooms were subscribed
            self._may_join(account.name, pending.user)
            if self.presence.holder(account.name) is not None:
                raise Answer("name-taken", f"name {account.name.lower()!r} is taken")
        except Answer as answer:
            self._refuse_login(ticket.inbox, pending, answer.code, answer.text, actions)
            return actions
        self.logins_counted["taken"] += 1
        self.throttle.succeeded(keys[0])
        failed, last = self.accounts.logged_in(ticket.name, self.clock(), pending.peer)
        pending.login = Login(account.name, account.admin, failed, last)
        self._logins[pending.user or ""] = account.name.lower()
        self._markers.get(ticket.inbox, {}).pop(ticket.join.mark if ticket.join else "", None)
        self._to_inbox(ticket.inbox, p.LoggedIn(account.name, failed, last), actions)
        return actions

    # --- a session's password -----------------------------------------------------------

    def _on_passwd(self, session: Session, msg: p.Passwd, actions: Actions) -> None:
        if not is_login_key(session.user) or self.accounts.get(session.name) is None:
            raise Answer("no-account", "your name has no password here (it is a key's, or open)")
        try:
            check_new_password(session.name, msg.new)
        except InvalidInput as exc:
            raise Answer("weak-password", f"password not changed: {exc}") from None
        wait = self.throttle.wait([f"passwd {session.secret}"], self._now)
        if wait > 0:  # the session's own: guesses from elsewhere never block it
            text = (
                f"password not changed: too many wrong passwords; try again in {seconds_text(wait)}"
            )
            raise Answer("login-throttled", text)
        if any(t.secret == session.secret for t in self._tickets.values()):
            raise Answer("busy", "password not changed: a change is under way already")
        account = self.accounts.get(session.name)
        serial = next(self._serials)
        stored = account.hash if account else None
        if not self.submit_login(Job(serial, "change", msg.old, stored, msg.new), True):
            raise Answer("busy", "the broker is checking many logins at once: try again soon")
        ticket = _Ticket(
            "passwd", session.name, secret=session.secret, id=msg.id, peer=session.peer
        )
        self._tickets[serial] = ticket
        self._in_flight.update(_throttled(ticket.name, ticket.peer))

    def _password_changed(self, ticket: _Ticket, verdict: Verdict, actions: Actions) -> None:
        session = self.presence.by_secret.get(ticket.secret)
        if not verdict.ok:
            self.throttle.failed([f"passwd {ticket.secret}"], self._now)
            log.warning("failed password change for %s from %s", ticket.name, ticket.peer)
            if session is not None:
                text = "password not changed: the old password is wrong"
                self._to_inbox(session.inbox, p.Error("wrong-password", text, ticket.id), actions)
            return
        self.accounts.set_hash(ticket.name, verdict.hash)
        ended = self._end_account(ticket.name, "password changed", ticket.secret, actions)
        log.info("%s changed their password", ticket.name)
        if session is not None:
            others = f"; {ended} other session(s) ended" if ended else ""
            self._to_inbox(session.inbox, p.Done(f"password changed{others}", ticket.id), actions)

    def _end_account(
        self, name: str, why: str, keep: str = "", actions: Actions | None = None
    ) -> int:
        """End the sessions and waiting logins of account ``name`` but the one whose
        secret is ``keep``: its password changed, or it was deleted. How many ended."""
        actions = actions if actions is not None else Actions()
        ended = 0
        for inbox, pending in list(self._pending.items()):
            login = pending.login
            if login is not None and login is not CHECKING and login.name.lower() == name.lower():
                self._refuse_login(inbox, pending, "login-failed", f"login ended: {why}", actions)
        session = self.presence.holder(name)
        if session is not None and session.secret != keep and is_login_key(session.user):
            self._kick(session, "the operator" if not keep else session.name, why, False, actions)
            ended += 1
        return ended

    def _bar_key(self, user: str | None, actions: Actions) -> None:
        """A login key's session ended (kicked, banned, its password changed, or it
        quit): its connections are cut, with what they subscribed to, and the key is
        refused from then on (a client makes a new one for its next login)."""
        self._retire(user)

    def _retire(self, user: str | None) -> None:
        """Bar a login key (see _bar_key); the broker cuts its connections when it next
        applies what the rules decided (``take_retired``)."""
        if not is_login_key(user):
            return
        self._logins.pop(user or "", None)
        self.ended_keys[user or ""] = None
        while len(self.ended_keys) > MAX_ENDED_KEYS:
            del self.ended_keys[next(iter(self.ended_keys))]
        self._retired = True

    def take_retired(self) -> bool:
        """Whether login keys were barred since the last call (their connections are
        to be cut)."""
        retired, self._retired = self._retired, False
        return retired

    # --- the operator's ---------------------------------------------------------------------

    def add_account(self, name: str, hashed: str, admin: bool) -> str:
        name = fails("invalid-name", p.check_name, name)
        if self._key_name(name):
            raise Answer("name-taken", f"{name} has a key file: a name is a key's or an account's")
        if not self.accounts.add(name, hashed, admin, self.clock()):
            raise Answer("name-taken", f"{name} has an account already")
        return f"account {name} made{' (admin)' if admin else ''}"

    def change_account(self, name: str, hashed: str) -> tuple[str, Actions]:
        actions = Actions()
        if not self.accounts.set_hash(name, hashed):
            raise Answer("no-account", f"{name} has no account")
        ended = self._end_account(name, "password changed by the operator", actions=actions)
        text = f"password of {name} changed" + (f"; {ended} session(s) ended" if ended else "")
        return text, actions

    def delete_account(self, name: str) -> tuple[str, Actions]:
        actions = Actions()
        if not self.accounts.delete(name):
            raise Answer("no-account", f"{name} has no account")
        ended = self._end_account(name, "account deleted by the operator", actions=actions)
        return f"account {name} deleted" + (f"; {ended} session(s) ended" if ended else ""), actions


class Wait(Answer):
    """A refusal that says when to ask again: ``retry_after`` seconds."""

    def __init__(self, code: str, text: str, retry_after: float) -> None:
        super().__init__(code, text)
        self.retry_after = retry_after


def _throttled(name: str, peer: str) -> list[str]:
    """The throttle's keys for a login: its account's first, then its address's."""
    return [f"account {name.lower()}", f"address {peer}"]
