"""The client's rules, shared by the sync and the asyncio client. No sockets here.

The adapters feed it what arrives on the SUB socket (``on_publish``), call ``tick``
when ``deadline()`` passes, apply ``take_subscriptions`` to the SUB socket and send
what ``take_outbox`` or a request method hands them on the PUSH socket, and hand
``events`` to the program.

Rules it keeps (with state.py, requests.py and arrivals.py):

* ``subscriptions()`` puts the inbox topic last: once the broker sees it, the rooms
  are already subscribed, so the WELCOME and the join notice cannot be missed. To
  enter a room later, the client subscribes to it and then to a marker topic, and
  names the marker in its request: the broker answers once it has seen the marker.
  A JOIN sent again (unanswered, or to a restarted broker) names a fresh marker too.
* Each room is shown in sequence order, gaps filled from the broker's history
  (rooms.RoomView).
* A line is either acknowledged (its own echo, matched by ``id``), refused at once
  (``NotDelivered``), or reported as not delivered after ``ACK_SECONDS``. Never lost
  without a word. A request the flood limit refused is noted in ``flood`` (when the
  broker takes requests again, and its limit); a program that sets ``says_again`` says
  such lines again itself, and they are not reported.
* The broker's heartbeat (every second on sys/) is the sign of life. Silence for
  ``AWAY_SECONDS`` is reported once; a heartbeat from a new epoch (the broker
  restarted) or an "unknown-session" answer to a ping makes the client join again
  under the same name, by itself, asking for what it missed meanwhile.
"""

from __future__ import annotations

from zchat import protocol as p
from zchat.client.arrivals import Arrivals
from zchat.client.requests import Requests
from zchat.client.rooms import FILL_SECONDS, FILL_TRIES
from zchat.client.state import (
    ACK_SECONDS,
    AWAY_SECONDS,
    IDLE_SECONDS,
    JOIN_RETRY_SECONDS,
    LEAVE_WAIT_SECONDS,
    PING_SECONDS,
    REFUSED_RETRY_SECONDS,
    FloodRefusal,
    State,
)
from zchat.errors import BrokerUnreachable, JoinRefused, ProtocolError

# A broker that says no more than "rate-limited" (older ones): try again after this long.
FALLBACK_RETRY_SECONDS = 1.0

__all__ = [
    "ACK_SECONDS",
    "AWAY_SECONDS",
    "JOIN_RETRY_SECONDS",
    "LEAVE_WAIT_SECONDS",
    "REFUSED_RETRY_SECONDS",
    "ClientCore",
    "FloodRefusal",
    "State",
    "handshake_text",
]


class ClientCore(Requests, Arrivals):
    """The client's rules. Its parts: state.py (what it knows, and the common moves),
    requests.py (what the program asks), arrivals.py (what the broker publishes); here,
    the timers and the handshake."""

    def on_publish(self, frames: list[bytes], now: float) -> None:
        if len(frames) == 2 and b'"rate-limited"' in frames[1]:  # cheap: rarely decoded
            self._heed_flood(frames, now)
        super().on_publish(frames, now)

    def _heed_flood(self, frames: list[bytes], now: float) -> None:
        """Note a refusal for flooding: when the broker takes requests again, its limit."""
        try:
            topic, msg = p.decode_server(frames)
        except ProtocolError:
            return
        if topic != p.inbox_topic(self.inbox) or not isinstance(msg, p.Error):
            return
        if msg.code != "rate-limited":
            return
        pending = self._pending.get(msg.id) if msg.id else None
        wait = FALLBACK_RETRY_SECONDS if msg.retry_after is None else msg.retry_after
        line = pending.text if pending is not None else None
        self.flood = FloodRefusal(msg.id, now + wait, msg.rate, msg.burst, msg.text, line)

    def _on_error(self, code: str, text: str, id_: str, now: float) -> None:
        if code == "rate-limited" and self.says_again and id_ and id_ in self._pending:
            del self._pending[id_]  # the program says it again (self.flood says when)
            return
        super()._on_error(code, text, id_, now)

    def deadline(self) -> float:
        """The monotonic time by which ``tick`` must next run: always later than the
        last ``tick``, so a loop that waits for it never spins."""
        times = [self._last_tick + IDLE_SECONDS]
        if self._reconnect_at is not None:
            times.append(self._reconnect_at)
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

    def start(self, now: float, timeout: float, where: str = "the broker") -> None:
        self._where = where
        self._timeout = timeout
        self.state = State.JOINING
        self._join_deadline = now + timeout
        self._last_heard = self._last_tick = now
        self._send_join(now, first=True)

    def on_handshake(self, problem: str) -> None:
        """The connection's handshake failed: ``problem`` is "key-refused",
        "wrong-mode" or "handshake-failed" (transport.handshake_problem). Fatal to a
        first join; reported once while rejoining."""
        if not self.secure:
            # no keys to be wrong: refused, it is the broker's connection limits (it lets
            # this address in again shortly); else the broker wants keys (it may hang up
            # before its reason arrives)
            refused = problem in ("key-refused", "refused-for-now")
            problem = "refused-for-now" if refused else "wrong-mode"
        where = self._where or "the broker"
        text = handshake_text(problem, where, self.secure, self.verb, self.password is not None)
        if problem == "refused-for-now":  # libzmq does not try again: the client will
            self._reconnect_at = self._last_tick + REFUSED_RETRY_SECONDS
        if self.state is State.JOINING and not self._joined_once and problem != "refused-for-now":
            self.state = State.CLOSED
            self.failure = JoinRefused(problem, text)
        elif problem not in self._handshake_told and self.state is not State.CLOSED:
            self._handshake_told.add(problem)
            self._note(f"{text}; still trying")

    def take_reconnect(self, now: float) -> bool:
        """True once the connections refused for now are due to be made again."""
        if self._reconnect_at is None or now < self._reconnect_at:
            return False
        self._reconnect_at = None
        return True

    def tick(self, now: float) -> None:
        if now - self._last_tick > AWAY_SECONDS and self._last_tick:
            # this process was not running (suspended, the machine asleep): the silence
            # was ours, not the broker's; it gets the usual time to be heard from again
            self._last_heard = max(self._last_heard, now)
        self._last_tick = now
        if self.state is State.JOINING:
            if not self._joined_once and now >= self._join_deadline:
                self.state = State.CLOSED
                self.failure = unreachable(self._where, self._timeout)
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
            self._away = self._gone_told = True
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
                    self._ask_fill(pending.room or "", view, window, now, check=True)
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


def unreachable(where: str, timeout: float) -> BrokerUnreachable:
    """The failure of a client that never heard from the broker within ``timeout``."""
    return BrokerUnreachable(
        f"no answer from the broker at {where} within {timeout:g} s: "
        "is `zchat broker` running there?"
    )


def handshake_text(
    problem: str, where: str, secure: bool, verb: str = "join", login: bool = False
) -> str:
    """What to tell a person whose handshake with the broker failed (on_handshake);
    ``verb``: what they tried to do; ``login``: with a password (an accounts broker)."""
    if login and problem == "wrong-mode":
        return (
            f"the broker at {where} is in open mode, without encryption: your password was "
            f"not sent. {verb.capitalize()} without one (no ZCHAT_PASSWORD, --password-file "
            "or --server-key)"
        )
    if login and problem == "handshake-failed":
        return (
            f"no secure handshake with the broker at {where}: is its key the one given "
            "(--server-key, or the one trusted before), and does it run with --accounts?"
        )
    if problem == "key-refused":
        return (
            f"the broker at {where} refused your key (unknown to it, or banned): ask its "
            "operator; a new user gives them their public key file (NAME.key), to be put "
            "in the broker's keys/users folder"
        )
    if problem == "refused-for-now":
        return (
            f"the broker at {where} refuses connections from this address for a few "
            'seconds: it cut one that went past its limits (SECURITY.md, "Limits")'
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
