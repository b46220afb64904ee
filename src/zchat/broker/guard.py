"""What one connection may make the broker hold, and cutting the ones that ask for more.

NATS and Redis bound everything one connection can make the server keep, and close
the connection that goes past a bound. libzmq gives the broker no handle on a
connection, but it tags every frame with the file descriptor it arrived on
(``ZMQ_SRCFD``), reports connections opening and closing on a monitor socket, and
lets the broker see the descriptor's peer (``getpeername``) and TCP counters. So:

* Each connection is known by its descriptor, and by the peer address it had when
  first seen; a descriptor whose peer changed is a new connection (counts start over).
  libzmq still hands over what a closed connection left queued, tagged with its old
  descriptor, which may be a newer connection's by then: the ZAP handler numbers every
  connection it lets in (security.py), and a frame with an older number than the
  descriptor's connection is not counted against it (nor applied, if its own
  connection was cut).
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

Many connections must not add up to more than one may hold, so each connection has an
**owner** (its key in secure mode, its peer address in open mode), and what all of an
owner's connections hold together is bounded too: OWNER_FACTOR times one connection's
subscriptions, OWNER_UNREAD_FACTOR times its unread bytes, and, for a key, ``per_key``
connections. Connections
are also counted per address as libzmq accepts them (before any handshake: in secure
mode a peer without a key is known by nothing else), and in all, under the process's
limit of open files: past ``per_address``, the newest of that address is cut; past the
total, the newest of the address that holds most. None of these cuts is penalised (a
NAT may put many people behind one address), and none waits for the peer to say a
word. A key the operator banned or withdrew has all its connections cut
(``cut_owner``), and any that shows itself later is cut on its first frame.

A frame that is not a subscription on the out-socket is cut at once: libzmq 4.3.5
queues it without its connection, which puts the socket's next subscriptions out of
step (see Broker._drain_subscriptions).
"""

from __future__ import annotations

import logging
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field

from zchat.broker.identity import keyed
from zchat.broker.limits import Bucket, RateLimit
from zchat.broker.peers import bytes_acked, peer_of, shut
from zchat.protocol.topics import INBOX_PREFIX

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
DEFAULT_PENALTY_SECONDS = 10.0  # a cut address (or key) is refused this long
# What all the connections of one owner (a key, or an address in open mode) may hold
# together: this many times one connection's subscriptions, and twice its unread bytes
# (a reader that reads leaves next to nothing unread; this is what RSS can grow by).
OWNER_FACTOR = 16
OWNER_UNREAD_FACTOR = 2
# Inboxes (and markers on them) one key may subscribe to on all its connections: a
# person has one session, and a few markers while entering rooms. An address (open
# mode) may hold as many as it may hold connections.
OWNER_INBOXES = 64
DEFAULT_MAX_CONNECTIONS_PER_KEY = 32  # a person's terminals, listeners and bots
DEFAULT_MAX_CONNECTIONS_PER_ADDRESS = 256  # a NAT, or one machine's users
RECONCILE_SECONDS = 10.0  # how often records are checked against the descriptors
# A connection that has not finished its handshake in this long is closed (libzmq's
# default, 30 s, lets idle connections hold descriptors far too long).
HANDSHAKE_SECONDS = 5.0
LOG_EVERY_SECONDS = 60.0  # at most one log line per kind of cut in this long
MAX_PENALTIES = 10_000  # addresses remembered at once; past it the oldest go


@dataclass(frozen=True)
class ConnectionLimits:
    """The bounds on one connection (flags of `zchat broker`; see SECURITY.md)."""

    subscriptions: int = DEFAULT_MAX_SUBSCRIPTIONS
    subscription_bytes: int = DEFAULT_MAX_SUBSCRIPTION_BYTES
    subscription_rate: float = DEFAULT_SUBSCRIPTION_RATE
    subscription_burst: int = DEFAULT_SUBSCRIPTION_BURST
    unread_bytes: int = DEFAULT_MAX_UNREAD_BYTES
    penalty_seconds: float = DEFAULT_PENALTY_SECONDS
    per_key: int = DEFAULT_MAX_CONNECTIONS_PER_KEY  # 0: no bound
    per_address: int = DEFAULT_MAX_CONNECTIONS_PER_ADDRESS  # 0: no bound
    enabled: bool = True  # False: nothing is counted or cut

    @property
    def subscription_limit(self) -> RateLimit:
        return RateLimit(self.subscription_rate, self.subscription_burst)


@dataclass
class Owner:
    """What the connections of one key (or, in open mode, one address) hold together."""

    name: str  # "key NAME" or the address
    connections: dict[int, None] = field(default_factory=dict)  # descriptors, oldest first
    topics: int = 0
    topic_bytes: int = 0
    inboxes: int = 0  # inbox-shaped topics (an inbox, or a marker on one)
    unread: int = 0


@dataclass
class Connection:
    peer: tuple[str, int] | None  # None: the descriptor is not a TCP socket we can read
    subscriptions: Bucket
    frames: Bucket
    topics: dict[bytes, None] = field(default_factory=dict)
    topic_bytes: int = 0
    inboxes: int = 0
    unread: int = 0  # inbox bytes published and not yet acknowledged (an upper bound)
    acked: int = -1  # tcpi_bytes_acked when ``unread`` was last brought up to date
    cut: bool = False
    owner: Owner | None = None  # known from its first frame
    user: str | None = None  # the key it came with (secure mode)
    serial: int = 0  # the ZAP handler's number for it (security.py), from its first frame

    def still_at(self, fd: int) -> tuple[str, int] | None:
        """Its peer, if descriptor ``fd`` still is this connection; None if the peer
        there is not the one first seen (the descriptor was closed, perhaps reused), or
        was never known."""
        return self.peer if self.peer is not None and peer_of(fd) == self.peer else None


class ConnectionGuard:
    """Per-connection accounting for the broker's two sockets, and cuts."""

    def __init__(
        self,
        limits: ConnectionLimits,
        flood: RateLimit,
        clock: Callable[[], float] = time.monotonic,
        max_connections: int = 0,
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
        self.max_connections = max_connections  # in all (open files allow); 0: no bound
        self.cuts: Counter[str] = Counter()  # why -> connections cut
        self.refusals = 0  # handshakes refused to penalised addresses and keys
        self._connections: dict[int, Connection] = {}
        self._owners: dict[str, Owner] = {}
        self._addresses: dict[str, dict[int, None]] = {}  # address -> descriptors, oldest first
        # descriptor -> (serial, cut) of the last connection forgotten on it: frames it
        # left in libzmq's queues still come tagged with the descriptor
        self._retired: dict[int, tuple[int, bool]] = {}
        self._penalties: dict[str, float] = {}  # address or "key NAME" -> refused until
        self._logged: dict[str, float] = {}
        self._unlogged: Counter[str] = Counter()
        self._reconciled = clock()

    # --- the ZAP handler's questions (another thread: each reads one dict entry) -------

    def refused(self, address: str) -> bool:
        until = self._penalties.get(address)
        if until is None or self.clock() >= until:
            return False
        self.refusals += 1
        return True

    def key_refused(self, name: str) -> bool:
        return self.refused(_key(name))

    # --- frames ------------------------------------------------------------------------

    def subscription(
        self, fd: int, data: bytes, now: float, user: str | None = None, serial: int = 0
    ) -> bool:
        """Account one message from the out-socket's connection ``fd`` (``serial``: the
        ZAP handler's number for the connection, 0 if unknown); False if it must be
        ignored (its connection is cut, or is cut now)."""
        if not self.limits.enabled:
            return True
        conn = self._connection(fd, now, user, serial)
        if conn is None:
            return not self._was_cut(fd)
        if conn.cut:
            return False
        if not data or data[0] not in (0, 1):
            return self._cut(fd, conn, "junk", "sent a message that is not a subscription")
        topic = data[1:]
        owner = conn.owner or NOBODY
        if data[0] == 1:
            if len(topic) > MAX_TOPIC_BYTES:
                return self._cut(fd, conn, "topic", f"subscribed to a {len(topic)}-byte topic")
            if topic not in conn.topics:
                conn.topics[topic] = None
                conn.topic_bytes += len(topic)
                owner.topics += 1
                owner.topic_bytes += len(topic)
                if topic.startswith(INBOX_PREFIX):
                    conn.inboxes += 1
                    owner.inboxes += 1
        elif conn.topics.pop(topic, 0) is None:
            conn.topic_bytes -= len(topic)
            owner.topics -= 1
            owner.topic_bytes -= len(topic)
            if topic.startswith(INBOX_PREFIX):
                conn.inboxes -= 1
                owner.inboxes -= 1
        limits = self.limits
        if len(conn.topics) > limits.subscriptions:
            return self._cut(fd, conn, "subscriptions", f"held {len(conn.topics)} subscriptions")
        if conn.topic_bytes > limits.subscription_bytes:
            return self._cut(fd, conn, "subscriptions", f"held {conn.topic_bytes} bytes of topics")
        held = self._owner_holds_too_much(conn, owner)
        if held:
            return self._cut(fd, conn, "subscriptions", held)
        if not conn.subscriptions.take(limits.subscription_limit, now):
            return self._cut(fd, conn, "churn", "changed subscriptions too fast")
        return True

    def _owner_holds_too_much(self, conn: Connection, owner: Owner) -> str:
        """What ``owner``'s connections together hold past their bounds, or ""."""
        if owner is NOBODY:
            return ""
        limits, many = self.limits, len(owner.connections)
        if owner.inboxes > (OWNER_INBOXES if keyed(conn.user) else limits.per_address):
            return f"held {owner.inboxes} inbox subscriptions on {many} connections"
        if owner.topics > OWNER_FACTOR * limits.subscriptions:
            return f"held {owner.topics} subscriptions on {many} connections"
        if owner.topic_bytes > OWNER_FACTOR * limits.subscription_bytes:
            return f"held {owner.topic_bytes} bytes of topics on {many} connections"
        return ""

    def frame(self, fd: int, now: float, user: str | None = None, serial: int = 0) -> bool:
        """Account one frame from the in-socket's connection ``fd``; False to drop it."""
        if not self.limits.enabled:
            return True
        conn = self._connection(fd, now, user, serial)
        if conn is None:
            return not self._was_cut(fd)
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

    def seen(self, fd: int, now: float, user: str, serial: int = 0) -> None:
        """A frame came from ``fd`` with ``user``'s key and is not accounted (the key is
        banned or withdrawn): the connection is known, for ``cut_owner``."""
        if self.limits.enabled:
            self._connection(fd, now, user, serial)

    def cut_owner(self, user: str) -> int:
        """Cut every connection of the key ``user`` (banned, or withdrawn): how many."""
        cut = 0
        for fd, conn in list(self._connections.items()):
            if conn.user == user and not conn.cut:
                self._cut(fd, conn, "barred", f"came with the key of {user}, now barred", False)
                cut += 1
        return cut

    def users(self) -> set[str]:
        """The keys that have connections."""
        return {conn.user for conn in self._connections.values() if conn.user and not conn.cut}

    def connection_of(self, fd: int) -> Connection | None:
        """The record of the connection on ``fd`` (None if unknown, or not counted)."""
        return self._connections.get(fd)

    def sent(self, fd: int, size: int, record: Connection) -> bool:
        """``size`` bytes were published to an inbox that connection ``record`` (on
        ``fd``) subscribes to. False if that connection is gone or cut."""
        conn = self._connections.get(fd)
        if conn is not record or conn.cut:
            return False
        if conn.peer is None:
            return True
        if conn.acked < 0:  # the first answer: what the peer acknowledged before is not ours
            acked = bytes_acked(fd)
            conn.acked = acked if acked is not None else -1
        conn.unread += size
        owner = conn.owner
        if owner is None or owner is NOBODY:
            if conn.unread > self.limits.unread_bytes:
                self._settle(fd, conn)
            return not conn.cut
        owner.unread += size
        if conn.unread > self.limits.unread_bytes:
            self._settle(fd, conn)
        elif owner.unread > OWNER_UNREAD_FACTOR * self.limits.unread_bytes:
            self._settle_owner(owner)
        return not conn.cut

    def check_unread(self) -> None:
        """Bring every connection's unread bytes up to date (the heartbeat calls it)."""
        for fd, conn in list(self._connections.items()):
            if conn.unread and not conn.cut:
                self._settle(fd, conn)

    def _settle(self, fd: int, conn: Connection) -> None:
        acked = bytes_acked(fd)
        if acked is None:
            return
        before = conn.unread
        if conn.acked >= 0:
            conn.unread = max(0, conn.unread - (acked - conn.acked))
        conn.acked = acked
        if conn.owner is not None and conn.owner is not NOBODY:
            conn.owner.unread -= before - conn.unread
        if conn.unread > self.limits.unread_bytes:
            self._cut(fd, conn, "unread", f"left {conn.unread} bytes of answers unread")

    def _settle_owner(self, owner: Owner) -> None:
        """The owner's connections together left too much unread: bring them up to
        date, then cut the ones that left most until the rest are within the bound."""
        held = [(fd, self._connections[fd]) for fd in owner.connections if fd in self._connections]
        for fd, conn in held:
            if not conn.cut:
                self._settle(fd, conn)
        for fd, conn in sorted(held, key=lambda pair: -pair[1].unread):
            if owner.unread <= OWNER_UNREAD_FACTOR * self.limits.unread_bytes:
                break
            if not conn.cut:
                unread = f"left {owner.unread} bytes of answers unread on {len(held)} connections"
                self._cut(fd, conn, "unread", unread)

    # --- connections -------------------------------------------------------------------

    def accepted(self, fd: int, now: float) -> None:
        """The monitor says libzmq accepted a connection on ``fd``: count it for its
        address, and cut what goes past the bounds on connections (newest first)."""
        if not self.limits.enabled:
            return
        known = self._connections.get(fd)
        if known is not None and (known.cut or known.still_at(fd) is None):
            self._forget(fd)  # the record of a connection whose close was not reported
        conn = self._connection(fd, now, None)
        if conn is None or conn.peer is None:
            return
        address = conn.peer[0]
        held = self._addresses.get(address, {})
        if self.limits.per_address and len(held) > self.limits.per_address:
            self._cut(fd, conn, "connections", f"was {address}'s connection {len(held)}", False)
        elif self.max_connections and len(self._connections) > self.max_connections:
            if now - self._reconciled >= 1.0:  # a close the monitor did not report?
                self._reconcile(now)
            if len(self._connections) > self.max_connections and self._addresses:
                largest = max(self._addresses.items(), key=lambda item: len(item[1]))
                victim = next(reversed(largest[1]))
                detail = f"was the newest of {len(largest[1])} from the address that held most"
                self._cut(victim, self._connections[victim], "connections", detail, False)

    def closed(self, fd: int) -> None:
        """The monitor says libzmq closed the descriptor ``fd`` (or lost its peer)."""
        conn = self._connections.get(fd)
        if conn is not None and (conn.cut or conn.still_at(fd) is None):
            self._forget(fd)  # else the event is late: fd is already another connection

    def expire(self, now: float) -> None:
        """Forget penalties that are over; report cuts not logged yet; now and then,
        forget connections whose close the monitor did not report."""
        for address, until in list(self._penalties.items()):
            if now >= until:
                del self._penalties[address]
        for why, count in list(self._unlogged.items()):
            if now - self._logged.get(why, 0.0) >= LOG_EVERY_SECONDS:
                log.warning("cut %d more connection(s) that %s", count, _REASONS[why])
                self._logged[why] = now
                del self._unlogged[why]
        if now - self._reconciled >= RECONCILE_SECONDS:
            self._reconcile(now)

    @property
    def penalised(self) -> int:
        return len(self._penalties)

    @property
    def connections(self) -> int:
        return len(self._connections)

    def _reconcile(self, now: float) -> None:
        self._reconciled = now
        for fd, conn in list(self._connections.items()):
            if conn.still_at(fd) is None:
                self._forget(fd)

    def _connection(
        self, fd: int, now: float, user: str | None, serial: int = 0
    ) -> Connection | None:
        """The record of the connection on ``fd``, made if new; None if the frame came
        from a connection that is gone (libzmq hands over what one left queued, tagged
        with its descriptor, which a newer connection may have by then): ``serial``,
        the ZAP handler's number, tells them apart."""
        conn = self._connections.get(fd)
        if serial:
            if serial <= self._retired.get(fd, (0, False))[0]:
                return None
            if conn is not None and conn.serial != serial:
                if serial < conn.serial:
                    return None
                if conn.serial:  # a newer connection than the record's
                    self._forget(fd)
                    conn = None
        if conn is None:
            conn = self._connections[fd] = Connection(
                peer_of(fd),
                Bucket.full(self.limits.subscription_limit, now),
                Bucket.full(self.frame_limit, now),
            )
            if conn.peer is not None:
                self._addresses.setdefault(conn.peer[0], {})[fd] = None
        if serial and not conn.serial:
            conn.serial = serial
        if not conn.cut and ((user is not None and conn.user is None) or conn.owner is None):
            self._own(fd, conn, user)
        return conn

    def _own(self, fd: int, conn: Connection, user: str | None) -> None:
        """Charge ``conn`` to its owner: its key if it has one, else its address."""
        if conn.owner is not None:  # known by its address until its key showed
            self._disown(fd, conn)
        conn.user = user
        if not keyed(user) and not self.limits.per_address:
            conn.owner = NOBODY  # addresses are not bounded: without a key, no owner
            return
        name = _owner_name(user, conn.peer)
        owner = self._owners.get(name)
        if owner is None:
            owner = self._owners[name] = Owner(name)
        owner.connections[fd] = None
        owner.topics += len(conn.topics)
        owner.topic_bytes += conn.topic_bytes
        owner.inboxes += conn.inboxes
        owner.unread += conn.unread
        conn.owner = owner
        per_key = self.limits.per_key
        if keyed(user) and per_key and len(owner.connections) > per_key and not conn.cut:
            detail = f"was connection {len(owner.connections)} of {user}"
            self._cut(fd, conn, "connections", detail, False)

    def _disown(self, fd: int, conn: Connection) -> None:
        owner, conn.owner = conn.owner, None
        if owner is None or owner is NOBODY:
            return
        owner.connections.pop(fd, None)
        owner.topics -= len(conn.topics)
        owner.topic_bytes -= conn.topic_bytes
        owner.inboxes -= conn.inboxes
        owner.unread -= conn.unread
        if not owner.connections:
            del self._owners[owner.name]

    def _forget(self, fd: int) -> None:
        conn = self._connections.pop(fd, None)
        if conn is None:
            return
        if conn.serial:
            self._retired[fd] = (conn.serial, conn.cut)
        self._disown(fd, conn)
        if conn.peer is not None:
            self._unaddress(fd, conn.peer[0])

    def _was_cut(self, fd: int) -> bool:
        """Was the last connection forgotten on ``fd`` cut (its frames are dropped)?"""
        return self._retired.get(fd, (0, False))[1]

    def _unaddress(self, fd: int, address: str) -> None:
        held = self._addresses.get(address)
        if held is not None:
            held.pop(fd, None)
            if not held:
                del self._addresses[address]

    def _cut(self, fd: int, conn: Connection, why: str, detail: str, penalise: bool = True) -> bool:
        """Cut ``fd`` if it still is ``conn``'s peer; penalise its key (secure mode) or
        its address. False."""
        conn.cut = True
        peer = conn.still_at(fd)
        if peer is None:
            self._forget(fd)  # another connection now: nothing to cut
            return False
        shut(fd)
        self._disown(fd, conn)  # what it held is no longer its owner's, nor its address's
        self._unaddress(fd, peer[0])
        self.cuts[why] += 1
        now = self.clock()
        who = _owner_name(conn.user, peer)
        if penalise:
            if len(self._penalties) >= MAX_PENALTIES:
                del self._penalties[next(iter(self._penalties))]
            self._penalties[who] = now + self.limits.penalty_seconds
        if now - self._logged.get(why, -LOG_EVERY_SECONDS) >= LOG_EVERY_SECONDS:
            self._logged[why] = now
            refused = f"; {who} is refused for {self.limits.penalty_seconds:g} s" * penalise
            log.warning("cut a connection from %s:%d that %s%s", *peer, detail, refused)
        else:
            self._unlogged[why] += 1
        return False


NOBODY = Owner("")  # the owner of connections that have none: its counts are not read


def _key(user: str) -> str:
    """The name of a key's owner record and penalty (apart from any address)."""
    return f"key {user}"


def _owner_name(user: str | None, peer: tuple[str, int] | None) -> str:
    """Whom a connection is charged to: a listed key, else its address (a login key's
    too: anyone can make fresh ones, identity.py)."""
    if keyed(user):
        return _key(str(user))
    return peer[0] if peer else "?"


_REASONS = {
    "junk": "sent messages that are not subscriptions",
    "topic": "subscribed to over-long topics",
    "subscriptions": "held too many subscriptions",
    "churn": "changed subscriptions too fast",
    "frames": "sent frames far past the flood limit",
    "unread": "left too many bytes of answers unread",
    "resync": "subscribed while the socket was out of step",
    "barred": "came with a banned or withdrawn key",
    "connections": "went past the bounds on connections",
}
