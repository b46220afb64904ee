"""BrokerRules, policing: the flood limit (a token bucket per session, limits.py) and
moderation (kick, ban, unban, by admins in chat or the operator through `zchat
admin`), and the operator's view of who is here."""

from __future__ import annotations

import logging

from zchat import protocol as p
from zchat.broker.actions import Actions, Answer, fails
from zchat.broker.presence import Session
from zchat.broker.state import (
    RulesState,
)

log = logging.getLogger("zchat.broker")

OPERATOR = "the operator"  # who kicks and bans through `zchat admin`
# An admin may not end their own session this way (a ban would lock them out for good,
# with nobody in the chat to lift it); what they are told instead.
SELF_REFUSALS = {
    "kick": "/quit leaves",
    "ban": "you would be locked out (another admin, or the operator with `zchat admin`, may)",
}


class Policing(RulesState):
    """The flood limit, and moderation."""

    def _over_limit(self, frames: list[bytes], now: float, user: str | None) -> bool:
        """A request from a session already told to slow down, dropped before it costs a
        JSON decode (the frame as encode_client lays it out; others take the long way)."""
        frame = frames[0] if len(frames) == 1 else b""
        start = frame.find(b'"secret":"', 0, 48)
        if start < 0 or not frame.startswith((b'{"v":1,"type":"say"', b'{"v":1,"type":"msg"')):
            return False
        secret = frame[start + 10 : start + 42].decode("ascii", "replace")
        session = self.presence.by_secret.get(secret)
        if session is None or secret not in self._flooding or session.user != user:
            return False
        if self._take(session, now):
            session.bucket.tokens += 1.0  # not spent here: the long way takes them
            if session.shared is not None:
                session.shared.tokens += 1.0
            return False
        self.dropped["rate-limited"] += 1
        return True

    def _take(self, session: Session, now: float) -> bool:
        """One token from the session's bucket and one from its owner's, or none (the
        drop is counted in the session's bucket)."""
        bucket, shared = session.bucket, session.shared
        if not bucket.take(self.limit, now):
            return False
        if shared is None or shared.take(self.shared_limit, now):
            return True
        bucket.tokens += 1.0
        bucket.dropped += 1
        return False

    def _wait(self, session: Session) -> float:
        """Seconds until the session may send again (as of its last ``_take``)."""
        wait = session.bucket.wait(self.limit)
        if session.shared is not None:
            wait = max(wait, session.shared.wait(self.shared_limit))
        return wait

    def _admit(self, session: Session, msg: p.ClientMessage, now: float, actions: Actions) -> bool:
        """The session's token bucket, and its owner's: False if this request is
        dropped for flooding."""
        bucket = session.bucket
        if self._take(session, now):
            if bucket.dropped:
                self._flooding.discard(session.secret)
                log.info("%s: %d request(s) dropped for flooding", session.name, bucket.end_burst())
            return True
        self.dropped["rate-limited"] += 1
        if not bucket.told:
            self._flooding.add(session.secret)
            bucket.told = True
            shared = session.shared is not None and bucket.tokens >= 1.0
            limit = self.shared_limit if shared else self.limit
            whose = self._whose(session) if shared else ""
            text = (
                f"slow down: at most {limit.describe()}{whose}; "
                "this line and the next ones are dropped until you do"
            )
            # the numbers too, for programs: when to say it again, and the limit
            refusal = p.Error(
                "rate-limited",
                text,
                getattr(msg, "id", ""),
                retry_after=self._wait(session),
                rate=limit.rate,
                burst=limit.burst,
            )
            self._to_inbox(session.inbox, refusal, actions)
        return False

    def _whose(self, session: Session) -> str:
        """Whose limit a session ran into when it was its owner's, in words."""
        if session.user is not None:
            return f" for all the sessions of {session.user}'s key"
        return f" for all the sessions from {session.peer}"

    # --- moderation (admins in chat, the operator through `zchat admin`) -----------------

    def moderate(
        self, op: str, name: str, reason: str = "", by: str = OPERATOR
    ) -> tuple[str, Actions]:
        """Kick, ban or unban ``name``; returns what was done, in words, and the actions.
        Raises Answer when it cannot be done."""
        actions = Actions()
        name = fails("invalid-name", p.check_name, name)
        if op in SELF_REFUSALS and name.lower() == by.lower():  # an admin, in the chat
            raise Answer("not-yourself", f"you cannot {op} yourself: {SELF_REFUSALS[op]}")
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
        self._bar_key(session.user, actions)  # a login key's connections are cut
        verb = "banned" if banned else "kicked"
        self._end(session, f"{verb} by {by}: {reason}" if reason else f"{verb} by {by}", actions)

    def withdraw(self) -> Actions:
        """After the keys were reloaded: end the sessions whose key is gone, and give or
        take admin rights as the admins list now says."""
        actions = Actions()
        for session in self.sessions:
            if not self.policy.still_allowed(session.user or session.name):
                self._kick(session, OPERATOR, "key withdrawn", False, actions)
            else:
                session.admin = self.policy.is_admin(session.name)
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
                "quiet": s.quiet,
            }
            for s in sorted(self.presence.by_secret.values(), key=lambda s: s.name.lower())
        ]
