"""What a frame libzmq hands the broker tells of the connection it came in on: the
descriptor (``ZMQ_SRCFD``), the peer's address, and the number the ZAP handler gave
the connection (security.py). peers.py reads the descriptor's TCP side.
"""

from __future__ import annotations

import zmq

from zchat.broker.security import CONNECTION_PROPERTY


def peer_address(frame: zmq.Frame) -> str | None:
    """The address a frame came from (None for frames libzmq made up itself)."""
    try:
        return str(frame.get("Peer-Address"))
    except zmq.ZMQError:
        return None


def descriptor(frame: zmq.Frame) -> int | None:
    """The file descriptor of the connection a frame came in on; None for frames libzmq
    made up itself (the unsubscriptions of a closed connection)."""
    try:
        fd = int(frame.get(zmq.SRCFD))
    except zmq.ZMQError:
        return None
    return fd if fd >= 0 else None


def connection_serial(frame: zmq.Frame) -> int:
    """The number the ZAP handler gave the frame's connection (0 if none: the broker's
    own sockets, in tests, may have no handler)."""
    try:
        return int(frame.get(CONNECTION_PROPERTY))
    except (zmq.ZMQError, ValueError):
        return 0
