"""What one connection may make the broker hold, and cutting the ones that ask for more.

NATS and Redis bound everything one connection can make the server keep, and close
the connection that goes past a bound. libzmq gives the broker no handle on a
connection, but it tags every frame with the file descriptor it arrived on
(``ZMQ_SRCFD``), reports connections opening and closing on a monitor socket, and
lets the broker see the descriptor's peer (``getpeername``) and TCP counters. So:

* Each connection is known by its descriptor, and by the peer address it had when
  first seen; a descriptor whose peer changed is a new connection (counts start over).
* A **cut** is ``shutdown(2)`` on that descriptor, after checking that it is still the
  same peer: libzmq sees the connection end as if the peer had closed it, closes the
  descriptor itself and hands the broker the unsubscriptions of its topics, so the
  session on it ends as on any lost connection. Nothing is closed behind libzmq's back.
* A cut address is **refused at the handshake** for ``penalty_seconds`` (the ZAP
  handler asks ``refused``), so reconnecting at once does not renew the attack.

What is bounded here, per connection (the rules bound sessions and rooms):

* subscriptions held (libzmq keeps every topic a connection subscribes to, applied or
  not, at about a hundred bytes of trie per byte of topic), their total bytes, the
  longest topic, and how fast they change;
* frames sent to the in-socket (a multiple of the per-session flood limit, with a
  floor, so that only a hostile client reaches it; none when the flood limit is off);
* bytes published to a session's inbox that its connection has not acknowledged at
  the TCP level (a reader that never reads, kept alive by its own heartbeats, would
  otherwise make libzmq queue every answer it asks for).

A frame that is not a subscription on the out-socket is cut at once: libzmq 4.3.5
queues it without its connection, which puts the socket's next subscriptions out of
step (see Broker._drain_subscriptions).
"""

from __future__ import annotations

import contextlib
import logging
import socket
import struct
import time
from collections import Counter
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field

from zchat.broker.limits import Bucket, RateLimit

log = logging.getLogger("zchat.broker")

# Subscriptions one connection may hold. A client holds sys/, its inbox, one topic per
# room (32 at most) and a few markers while it enters rooms.
DEFAULT_MAX_SUBSCRIPTIONS = 128
DEFAULT_MAX_SUBSCRIPTION_BYTES = 8 * 1024  # their total length
MAX_TOPIC_BYTES = 160  # the longest topic a client makes is a marker of 55 bytes
DEFAULT_SUBSCRIPTION_RATE = 50.0  # (un)subscriptions a second, sustained
DEFAULT_SUBSCRIPTION_BURST = 400
# In-socket frames a connection may send: this many times the per-session flood limit,
# and at least FRAME_RATE_MIN a second and FRAME_BURST_MIN at once (a session past its
# own limit is dropped cheaply and told; this is for what no session pays for).
FRAME_RATE_FACTOR = 4
FRAME_RATE_MIN = 200.0
FRAME_BURST_MIN = 1000
# Bytes published to one connection's inbox that it has not acknowledged.
DEFAULT_MAX_UNREAD_BYTES = 16 * 1024 * 1024
DEFAULT_PENALTY_SECONDS = 10.0  # a cut address is refused this long
LOG_EVERY_SECONDS = 60.0  # at most one log line per kind of cut in this long
MAX_PENALTIES = 10_000  # addresses remembered at once; past it the oldest go

# struct tcp_info (linux/tcp.h): tcpi_bytes_acked is the u64 at offset 120.
_TCP_INFO_BYTES = 136
_BYTES_ACKED = struct.Struct("=Q")
_BYTES_ACKED_AT = 120


@dataclass(frozen=True)
class ConnectionLimits:
    """The bounds on one connection (flags of `zchat broker`; see SECURITY.md)."""

    subscriptions: int = DEFAULT_MAX_SUBSCRIPTIONS
    subscription_bytes: int = DEFAULT_MAX_SUBSCRIPTION_BYTES
    subscription_rate: float = DEFAULT_SUBSCRIPTION_RATE
    subscription_burst: int = DEFAULT_SUBSCRIPTION_BURST
    unread_bytes: int = DEFAULT_MAX_UNREAD_BYTES
    penalty_seconds: float = DEFAULT_PENALTY_SECONDS
    enabled: bool = True  # False: nothing is counted or cut

    @property
    def subscription_limit(self) -> RateLimit:
        return RateLimit(self.subscription_rate, self.subscription_burst)


@dataclass
class Connection:
    peer: tuple[str, int] | None  # None: the descriptor is not a TCP socket we can read
    subscriptions: Bucket
    frames: Bucket
    topics: dict[bytes, None] = field(default_factory=dict)
    topic_bytes: int = 0
    unread: int = 0  # inbox bytes published and not yet acknowledged (an upper bound)
    acked: int = -1  # tcpi_bytes_acked when ``unread`` was last brought up to date
    cut: bool = False


class ConnectionGuard:
    """Per-connection accounting for the broker's two sockets, and cuts."""

    def __init__(
        self,
        limits: ConnectionLimits,
        flood: RateLimit,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.limits = limits
        self.frame_limit = (
            flood
            if flood.unlimited
            else RateLimit(
                max(flood.rate * FRAME_RATE_FACTOR, FRAME_RATE_MIN),
                max(flood.burst * FRAME_RATE_FACTOR, FRAME_BURST_MIN),
            )
        )
        self.clock = clock
        self.cuts: Counter[str] = Counter()  # why -> connections cut
        self.refusals = 0  # handshakes refused to penalised addresses
        self._connections: dict[int, Connection] = {}
        self._penalties: dict[str, float] = {}  # address -> refused until (monotonic)
        self._logged: dict[str, float] = {}
        self._unlogged: Counter[str] = Counter()

    # --- the ZAP handler's question (another thread: reads one dict entry) -----------

    def refused(self, address: str) -> bool:
        until = self._penalties.get(address)
        if until is None or self.clock() >= until:
            return False
        self.refusals += 1
        return True

    # --- frames ------------------------------------------------------------------------

    def subscription(self, fd: int, data: bytes, now: float) -> bool:
        """Account one message from the out-socket's connection ``fd``; False if it must
        be ignored (its connection is cut, or is cut now)."""
        if not self.limits.enabled:
            return True
        conn = self._connection(fd, now)
        if conn.cut:
            return False
        if not data or data[0] not in (0, 1):
            return self._cut(fd, conn, "junk", "sent a message that is not a subscription")
        topic = data[1:]
        if data[0] == 1:
            if len(topic) > MAX_TOPIC_BYTES:
                return self._cut(fd, conn, "topic", f"subscribed to a {len(topic)}-byte topic")
            if topic not in conn.topics:
                conn.topics[topic] = None
                conn.topic_bytes += len(topic)
        elif conn.topics.pop(topic, 0) is None:
            conn.topic_bytes -= len(topic)
        if len(conn.topics) > self.limits.subscriptions:
            return self._cut(fd, conn, "subscriptions", f"held {len(conn.topics)} subscriptions")
        if conn.topic_bytes > self.limits.subscription_bytes:
            return self._cut(fd, conn, "subscriptions", f"held {conn.topic_bytes} bytes of topics")
        if not conn.subscriptions.take(self.limits.subscription_limit, now):
            return self._cut(fd, conn, "churn", "changed subscriptions too fast")
        return True

    def frame(self, fd: int, now: float) -> bool:
        """Account one frame from the in-socket's connection ``fd``; False to drop it."""
        if not self.limits.enabled:
            return True
        conn = self._connection(fd, now)
        if conn.cut:
            return False
        if not conn.frames.take(self.frame_limit, now):
            return self._cut(fd, conn, "frames", "sent frames far past the flood limit")
        return True

    def misaligned(self, fd: int) -> None:
        """A subscription of ``fd`` arrived while the out-socket was out of step, so it
        could not be applied: cut the connection (not its address), so that it
        reconnects and subscribes again."""
        conn = self._connections.get(fd)
        if conn is not None and not conn.cut:
            self._cut(fd, conn, "resync", "subscribed while the socket was out of step", False)

    def sent(self, fd: int, size: int) -> None:
        """``size`` bytes were published to an inbox that ``fd`` subscribes to."""
        conn = self._connections.get(fd)
        if conn is None or conn.cut or conn.peer is None:
            return
        conn.unread += size
        if conn.unread > self.limits.unread_bytes:
            self._settle(fd, conn)

    def check_unread(self) -> None:
        """Bring every connection's unread bytes up to date (the heartbeat calls it)."""
        for fd, conn in list(self._connections.items()):
            if conn.unread and not conn.cut:
                self._settle(fd, conn)

    def _settle(self, fd: int, conn: Connection) -> None:
        acked = _bytes_acked(fd)
        if acked is None:
            return
        if conn.acked >= 0:
            conn.unread = max(0, conn.unread - (acked - conn.acked))
        conn.acked = acked
        if conn.unread > self.limits.unread_bytes:
            self._cut(fd, conn, "unread", f"left {conn.unread} bytes of answers unread")

    # --- connections -------------------------------------------------------------------

    def closed(self, fd: int) -> None:
        """The monitor says libzmq closed (or accepted anew) the descriptor ``fd``."""
        self._connections.pop(fd, None)

    def expire(self, now: float) -> None:
        """Forget penalties that are over; report cuts not logged yet."""
        for address, until in list(self._penalties.items()):
            if now >= until:
                del self._penalties[address]
        for why, count in list(self._unlogged.items()):
            if now - self._logged.get(why, 0.0) >= LOG_EVERY_SECONDS:
                log.warning("cut %d more connection(s) that %s", count, _REASONS[why])
                self._logged[why] = now
                del self._unlogged[why]

    @property
    def penalised(self) -> int:
        return len(self._penalties)

    def _connection(self, fd: int, now: float) -> Connection:
        conn = self._connections.get(fd)
        if conn is None:
            conn = self._connections[fd] = Connection(
                _peer_of(fd),
                Bucket.full(self.limits.subscription_limit, now),
                Bucket.full(self.frame_limit, now),
            )
        return conn

    def _cut(self, fd: int, conn: Connection, why: str, detail: str, penalise: bool = True) -> bool:
        """Cut ``fd`` if it still is ``conn``'s peer; penalise the address. False."""
        conn.cut = True
        if conn.peer is None or _peer_of(fd) != conn.peer:
            self._connections.pop(fd, None)  # another connection now: nothing to cut
            return False
        with contextlib.suppress(OSError), _borrowed(fd) as sock:
            sock.shutdown(socket.SHUT_RDWR)
        self.cuts[why] += 1
        now = self.clock()
        address = conn.peer[0]
        if penalise:
            if len(self._penalties) >= MAX_PENALTIES:
                del self._penalties[next(iter(self._penalties))]
            self._penalties[address] = now + self.limits.penalty_seconds
        if now - self._logged.get(why, -LOG_EVERY_SECONDS) >= LOG_EVERY_SECONDS:
            self._logged[why] = now
            refused = f"; {address} is refused for {self.limits.penalty_seconds:g} s" * penalise
            log.warning("cut a connection from %s:%d that %s%s", *conn.peer, detail, refused)
        else:
            self._unlogged[why] += 1
        return False


_REASONS = {
    "junk": "sent messages that are not subscriptions",
    "topic": "subscribed to over-long topics",
    "subscriptions": "held too many subscriptions",
    "churn": "changed subscriptions too fast",
    "frames": "sent frames far past the flood limit",
    "unread": "left too many bytes of answers unread",
    "resync": "subscribed while the socket was out of step",
}


@contextlib.contextmanager
def _borrowed(fd: int) -> Iterator[socket.socket]:
    """A socket object for libzmq's descriptor ``fd``, given back (never closed) after;
    OSError if ``fd`` is not a socket."""
    sock = socket.socket(fileno=fd)
    try:
        yield sock
    finally:
        sock.detach()  # the descriptor stays libzmq's


def _peer_of(fd: int) -> tuple[str, int] | None:
    """The TCP peer of ``fd`` (ip, port), or None if it is not a connected TCP socket."""
    try:
        with _borrowed(fd) as sock:
            peer = sock.getpeername()
    except OSError:
        return None
    return (str(peer[0]), int(peer[1])) if isinstance(peer, tuple) else None


def _bytes_acked(fd: int) -> int | None:
    """How many bytes the peer of ``fd`` has acknowledged (Linux TCP_INFO), or None."""
    tcp_info = getattr(socket, "TCP_INFO", None)
    if tcp_info is None:
        return None
    try:
        with _borrowed(fd) as sock:
            info = sock.getsockopt(socket.IPPROTO_TCP, tcp_info, _TCP_INFO_BYTES)
    except OSError:
        return None
    if len(info) < _BYTES_ACKED_AT + _BYTES_ACKED.size:
        return None
    return int(_BYTES_ACKED.unpack_from(info, _BYTES_ACKED_AT)[0])
