"""The connection guard on its own, with real TCP connections on loopback: what libzmq
would hand it, frame by frame, in orders that are hard to bring about through libzmq."""

from __future__ import annotations

import os
import socket
from collections.abc import Iterator

import pytest

from zchat import protocol as p
from zchat.broker.guard import OWNER_INBOXES, ConnectionGuard, ConnectionLimits
from zchat.broker.limits import RateLimit


class Listener:
    """A loopback listening socket; ``connect(source)`` returns the accepted side (as
    libzmq's would be) and keeps the client side open."""

    def __init__(self) -> None:
        self.sock = socket.create_server(("127.0.0.1", 0))
        self.clients: list[socket.socket] = []

    def connect(self, source: str = "127.0.0.1") -> socket.socket:
        client = socket.socket()
        client.bind((source, 0))
        client.connect(self.sock.getsockname())
        self.clients.append(client)
        accepted, _ = self.sock.accept()
        return accepted

    def close(self) -> None:
        for client in self.clients:
            client.close()
        self.sock.close()


@pytest.fixture
def listener() -> Iterator[Listener]:
    made = Listener()
    yield made
    made.close()


def subscribe(inbox: str) -> bytes:
    return b"\x01" + p.inbox_topic(inbox)


def still_open(sock: socket.socket) -> bool:
    """True unless ``sock`` was shut down (a cut)."""
    try:
        sock.setblocking(False)
        return sock.recv(1, socket.MSG_PEEK) != b""
    except BlockingIOError:
        return True  # nothing to read, and not shut down


def test_frames_a_gone_connection_left_queued_are_not_charged_to_the_next_on_its_descriptor(
    listener: Listener,
) -> None:
    """libzmq hands over what a cut connection left queued, tagged with its descriptor,
    after the descriptor may already be a newer connection's: those frames must not
    count against (and cut) the newer connection, whoever it is."""
    guard = ConnectionGuard(ConnectionLimits(per_key=0), RateLimit(20.0, 50))
    now = 0.0
    holder = listener.connect("127.0.0.2")  # Mallory's other connection, near the bound
    guard.accepted(holder.fileno(), now)
    for index in range(OWNER_INBOXES - 4):
        assert guard.subscription(holder.fileno(), subscribe(f"a{index:031x}"), now, "M", 1)
    gone = listener.connect("127.0.0.2")
    fd = gone.fileno()
    guard.accepted(fd, now)
    for index in range(5):  # past the owner's bound: this connection is cut
        guard.subscription(fd, subscribe(f"b{index:031x}"), now, "M", 2)
    assert guard.cuts["subscriptions"] == 1
    # libzmq closes it, and its descriptor is the next connection's: Bob's, say, in
    # the middle of its handshake
    newer = listener.connect()
    os.dup2(newer.fileno(), fd)  # closes the cut one's, and puts the newer one in place
    newer.close()
    gone.detach()
    guard.closed(fd)
    guard.accepted(fd, now)
    for index in range(5, 40):  # Mallory's, left queued by the cut connection
        assert not guard.subscription(fd, subscribe(f"b{index:031x}"), now, "M", 2)
    bob = socket.socket(fileno=fd)
    try:
        assert still_open(bob)
        assert guard.cuts["subscriptions"] == 1
        assert guard.subscription(fd, subscribe("bob".ljust(32, "0")), now, "Bob", 3)
        assert guard.connection_of(fd) is not None
        assert guard.connection_of(fd).user == "Bob"  # type: ignore[union-attr]
    finally:
        bob.close()
        holder.close()


def test_a_newer_connection_on_a_descriptor_starts_afresh(listener: Listener) -> None:
    """The first frame of a newer connection (a greater serial) replaces the record of
    the older one on its descriptor, even if the older one's close was never reported."""
    guard = ConnectionGuard(ConnectionLimits(per_key=0), RateLimit(20.0, 50))
    conn = listener.connect()
    fd = conn.fileno()
    guard.accepted(fd, 0.0)
    for index in range(50):
        assert guard.subscription(fd, subscribe(f"{index:032x}"), 0.0, "Alice", 7)
    assert guard.subscription(fd, subscribe("f" * 32), 0.0, "Bob", 9)
    record = guard.connection_of(fd)
    assert record is not None
    assert (record.user, record.serial, len(record.topics)) == ("Bob", 9, 1)
    # and a late frame of the older one is not counted at all
    assert guard.subscription(fd, subscribe("e" * 32), 0.0, "Alice", 7)
    assert len(record.topics) == 1
    conn.close()
