"""A read-only listener: a SUB socket on some rooms, no session, no name.

It is invisible in /who and cannot ask the broker for anything, so it cannot fill
gaps: lines dropped on the way (a full queue, a reconnect) are reported by count,
from the jump in sequence numbers or from the room's tail, never skipped in silence.
It notices the broker's absence and return from the heartbeat, like a joined client,
a room whose numbers start again (the broker came back with another history, or none),
and a refused handshake (secure mode) like a joined client too.
"""

from __future__ import annotations

import contextlib
import time
from collections import deque
from collections.abc import Callable, Iterable, Iterator
from datetime import UTC, datetime
from types import TracebackType

import zmq
from zmq.utils.monitor import recv_monitor_message

from zchat import protocol as p
from zchat.client.core import AWAY_SECONDS, REFUSED_RETRY_SECONDS, handshake_text, unreachable
from zchat.client.message import Message, crowd_text, from_room_event
from zchat.client.transport import (
    DEFAULT_HOST,
    DEFAULT_PORT,
    HANDSHAKE_EVENTS,
    Endpoints,
    Keys,
    close_monitor,
    handshake_problem,
)
from zchat.errors import BrokerUnreachable, JoinRefused, ProtocolError


class ListenCore:
    """The listener's rules, without sockets."""

    def __init__(
        self,
        rooms: Iterable[str],
        clock: Callable[[], datetime] | None = None,
        *,
        secure: bool = False,
        where: str = "the broker",
    ):
        self.rooms = list(dict.fromkeys(p.check_room(r) for r in rooms)) or [p.DEFAULT_ROOM]
        self.clock = clock or (lambda: datetime.now(UTC))
        self.secure = secure
        self.where = where
        self.events: deque[Message] = deque()
        self.shown: dict[str, int] = {}
        # the broker refused the first handshake, or was never heard from in time
        self.failure: JoinRefused | BrokerUnreachable | None = None
        self._started = 0.0
        self._timeout: float | None = None  # how long to wait to hear from the broker at all
        self._epoch: str | None = None
        self._last_heard = 0.0
        self._heard = False
        self._last_tick = 0.0
        self._away = False
        self._back_unsaid = False  # heard from again after a silence, not said yet
        self._handshake_told: set[str] = set()
        self._reconnect_at: float | None = None  # see take_reconnect

    def subscriptions(self) -> list[bytes]:
        return [*(p.room_topic(room) for room in self.rooms), p.SYS_TOPIC]

    @property
    def heard(self) -> bool:
        """The broker has been heard from (anything it published)."""
        return self._heard

    def deadline(self) -> float:
        """When ``tick`` must next run: always later than the last one."""
        due = self._last_heard + AWAY_SECONDS if not self._away else self._last_tick + 1.0
        if self._reconnect_at is not None:
            due = min(due, max(self._reconnect_at, self._last_tick + 0.001))
        if self._timeout is None or self._heard:
            return due
        return min(due, self._started + self._timeout)

    def start(self, now: float, timeout: float | None = None) -> None:
        """``timeout``: how long to wait to hear from the broker the first time (None:
        for ever); after that the listener follows it through restarts."""
        self._last_heard = self._started = now
        self._timeout = timeout

    def on_publish(self, frames: list[bytes], now: float) -> None:
        try:
            _, msg = p.decode_server(frames)
        except ProtocolError:
            return
        self._last_heard = now
        self._heard = True
        if self._away and not isinstance(msg, p.Shutdown):
            # one line when the broker goes, one when it is back: which broker (the same,
            # or one that restarted) the next heartbeat tells
            self._away, self._back_unsaid = False, True
        match msg:
            case p.Chat() | p.Joined() | p.Left() | p.Renamed() | p.TopicChanged():
                self._renumbered(msg.room, msg.seq - 1)
                self._missed(msg.room, msg.seq - 1)
                self.events.append(from_room_event(msg))
                self.shown[msg.room] = msg.seq
            case p.Tail(room, seq):
                self._renumbered(room, seq)
                self._missed(room, seq)
                self.shown[room] = seq
            case p.Crowd(room) if room in self.rooms:
                self._note(crowd_text(msg), room)
            case p.Heartbeat(epoch):
                restarted = self._epoch not in (None, epoch)
                if self._back_unsaid:
                    self._note(
                        "the broker is back: it restarted"
                        if restarted
                        else "broker reachable again"
                    )
                elif restarted:
                    self._note("the broker restarted")
                self._back_unsaid = False
                self._epoch = epoch
            case p.Shutdown(epoch, _, text):
                self._epoch = epoch  # the one that goes, should no heartbeat have come yet
                self._note(f"broker shut down ({text}); waiting for it to come back…")
                self._away = True

    def _renumbered(self, room: str, before: int) -> None:
        """``before``: the room's last seq before this news (an event's seq - 1, a tail's
        seq). Lower than what was shown, the numbering has started again: a broker came
        back with another history, or none (--db :memory:). One connection delivers a
        room's events in order, so nothing else can go back."""
        last = self.shown.get(room)
        if last is not None and before < last:
            self._note(f"the broker's history of #{room} starts again at {before}", room)
            self.shown[room] = before

    def _missed(self, room: str, upto: int) -> None:
        """Report the lines up to ``upto`` (included) that never came."""
        last = self.shown.get(room)
        if last is not None and upto > last:  # nothing to compare a first line with
            count = upto - last
            were = "were" if count != 1 else "was"
            self._note(f"{count} line{'s' * (count != 1)} of #{room} {were} missed", room)

    def on_handshake(self, problem: str) -> None:
        """As ClientCore.on_handshake: fatal before the broker was first heard from,
        reported once after."""
        if not self.secure:  # as ClientCore: refused for now, or the broker wants keys
            refused = problem in ("key-refused", "refused-for-now")
            problem = "refused-for-now" if refused else "wrong-mode"
        text = handshake_text(problem, self.where, self.secure, verb="listen")
        if problem == "refused-for-now":  # libzmq does not try again: the Listener will
            self._reconnect_at = max(self._last_tick, self._started) + REFUSED_RETRY_SECONDS
        if not self._heard and problem != "refused-for-now":
            self.failure = JoinRefused(problem, text)
        elif problem not in self._handshake_told:
            self._handshake_told.add(problem)
            self._note(f"{text}; still trying")

    def take_reconnect(self, now: float) -> bool:
        """True once the connection refused for now is due to be made again."""
        if self._reconnect_at is None or now < self._reconnect_at:
            return False
        self._reconnect_at = None
        return True

    def tick(self, now: float) -> None:
        self._last_tick = now
        if self._timeout is not None and not self._heard and now >= self._started + self._timeout:
            self.failure = unreachable(self.where, self._timeout)
            return
        if now >= self._last_heard + AWAY_SECONDS and not self._away:
            self._away = True
            self._note("broker unreachable, reconnecting…")

    def _note(self, text: str, room: str | None = None) -> None:
        self.events.append(Message.system(text, self.clock(), room))


class Listener:
    """``with Listener(rooms=["general"]) as ears: for msg in ears: ...``"""

    def __init__(
        self,
        host: str = DEFAULT_HOST,
        port: int = DEFAULT_PORT,
        rooms: Iterable[str] = (p.DEFAULT_ROOM,),
        *,
        context: zmq.Context[zmq.Socket[bytes]] | None = None,
        keys: Keys | None = None,
        connect_timeout: float | None = None,
    ) -> None:
        """``keys`` (transport.Keys) for a broker in secure mode; ``connect_timeout``:
        give up (BrokerUnreachable) if the broker is not heard from within it (None:
        wait for ever)."""
        self.endpoints = Endpoints(host, port)
        self.core = ListenCore(rooms, secure=keys is not None, where=self.endpoints.describe())
        self._ctx = context or zmq.Context.instance()
        self._sub: zmq.Socket[bytes] = self._ctx.socket(zmq.SUB)
        self._sub.setsockopt(zmq.LINGER, 0)
        self._sub.setsockopt(zmq.HEARTBEAT_IVL, 1000)
        self._sub.setsockopt(zmq.HEARTBEAT_TIMEOUT, 5000)
        self._sub.setsockopt(zmq.RECONNECT_IVL_MAX, 1000)
        if ":" in host:
            self._sub.setsockopt(zmq.IPV6, 1)
        if keys is not None:
            keys.apply(self._sub)
        for topic in self.core.subscriptions():
            self._sub.setsockopt(zmq.SUBSCRIBE, topic)
        self._monitor: zmq.Socket[bytes] = self._sub.get_monitor_socket(HANDSHAKE_EVENTS)
        self._poller = zmq.Poller()
        self._poller.register(self._sub, zmq.POLLIN)
        self._poller.register(self._monitor, zmq.POLLIN)
        self._sub.connect(self.endpoints.sub)
        self.core.start(time.monotonic(), connect_timeout)

    def receive(self, timeout: float | None = None) -> Message | None:
        """The next Message, or None after ``timeout`` seconds (None: wait for ever).
        Raises JoinRefused if the broker refuses the handshake before it was ever
        heard from (a key it does not know, the other mode, the wrong broker key), and
        BrokerUnreachable if it is not heard from within ``connect_timeout``."""
        end = None if timeout is None else time.monotonic() + timeout
        while not self.core.events:
            now = time.monotonic()
            if end is not None and now >= end:
                return None
            until = self.core.deadline() if end is None else min(end, self.core.deadline())
            ready = dict(self._poller.poll(max(0, int((until - now) * 1000)) + 1))
            if self._sub in ready:
                while True:
                    try:
                        frames = self._sub.recv_multipart(zmq.NOBLOCK)
                    except zmq.Again:
                        break
                    self.core.on_publish(frames, time.monotonic())
            if self._monitor in ready:
                event = recv_monitor_message(self._monitor)
                self.core.on_handshake(handshake_problem(event["event"], event["value"]))
            if self.core.take_reconnect(time.monotonic()):
                with contextlib.suppress(zmq.ZMQError):  # already gone with the refusal
                    self._sub.disconnect(self.endpoints.sub)
                self._sub.connect(self.endpoints.sub)
            self.core.tick(time.monotonic())
            if self.core.failure is not None:
                self.close()
                raise self.core.failure
        return self.core.events.popleft()

    def wait_heard(self) -> None:
        """Return once the broker is heard from (its heartbeat comes every second);
        raises as ``receive`` does. Give the Listener a ``connect_timeout``, or this may
        wait for ever. What arrives meanwhile is dropped."""
        while not self.core.heard:
            self.receive(timeout=1.0)

    def __iter__(self) -> Iterator[Message]:
        while not self._sub.closed:
            msg = self.receive()
            if msg is not None:
                yield msg

    def close(self) -> None:
        if not self._sub.closed:
            close_monitor(self._sub, self._monitor)
            self._sub.close()

    def __enter__(self) -> Listener:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()
