"""Asking an accounts broker for its public key, on its key port (protocol/hello.py).

The answer comes unauthenticated: it is only what the broker says its key is. The
caller trusts it as trust.py says (a key remembered before, or the person's yes to its
fingerprint), never because it came.
"""

from __future__ import annotations

import contextlib
import time

import zmq

from zchat.addresses import host_port
from zchat.errors import BrokerUnreachable, ProtocolError
from zchat.protocol.hello import (
    HELLO_REQUEST,
    KEY_PORT_OFFSET,
    MAX_BROKER_HELLO_BYTES,
    BrokerHello,
    decode_broker_hello,
)

# The hello is sent again after this long without an answer: the broker drops an
# answer it cannot queue, and a request queued before a reconnection is lost.
ASK_AGAIN_SECONDS = 1.0


def fetch_hello(
    host: str,
    port: int,
    timeout: float,
    context: zmq.Context[zmq.Socket[bytes]] | None = None,
) -> BrokerHello:
    """What the broker at ``host:port`` says of itself on its key port (port + 3).
    BrokerUnreachable if no answer comes within ``timeout`` seconds; ProtocolError if
    the answer is not a zchat broker's."""
    where = host_port(host, port + KEY_PORT_OFFSET)
    sock = (context or zmq.Context.instance()).socket(zmq.DEALER)
    try:
        sock.setsockopt(zmq.LINGER, 0)
        # the request waits for the connection, in case the broker is starting
        sock.setsockopt(zmq.IMMEDIATE, 0)
        # a larger answer is no broker's: libzmq cuts the connection, and time runs out
        sock.setsockopt(zmq.MAXMSGSIZE, MAX_BROKER_HELLO_BYTES)
        if ":" in host:
            sock.setsockopt(zmq.IPV6, 1)
        sock.connect(f"tcp://{where}")
        frames = _ask(sock, timeout)
    finally:
        sock.close(linger=0)
    if frames is None:
        raise BrokerUnreachable(
            f"no answer from the broker's key port at {where} within {timeout:g} s: is "
            f"{host_port(host, port)} a zchat broker with --accounts? (it tells its key on "
            f"port {port + KEY_PORT_OFFSET})"
        )
    try:
        if len(frames) != 1:
            raise ProtocolError("frames", f"expected 1 frame, got {len(frames)}")
        return decode_broker_hello(frames[0])
    except ProtocolError as exc:
        raise ProtocolError(
            exc.code, f"the key port at {where} is not a zchat broker's: {exc}"
        ) from None


def has_accounts(host: str, port: int, timeout: float) -> bool:
    """Whether the broker at ``host:port`` has accounts: its key port answers as a
    zchat broker's within ``timeout`` (at most 2 s). A broker that refused an open
    client as the wrong mode has accounts, or is a secure one (no key port)."""
    try:
        fetch_hello(host, port, min(timeout, 2.0))
    except (BrokerUnreachable, ProtocolError):
        return False
    return True


def _ask(sock: zmq.Socket[bytes], timeout: float) -> list[bytes] | None:
    """Send the hello, again each ASK_AGAIN_SECONDS, until an answer comes (its frames)
    or ``timeout`` runs out (None)."""
    deadline = time.monotonic() + timeout
    while (left := deadline - time.monotonic()) > 0:
        with contextlib.suppress(zmq.Again):  # its queue is full: the hellos in it will do
            sock.send(HELLO_REQUEST, zmq.NOBLOCK)
        if sock.poll(int(min(left, ASK_AGAIN_SECONDS) * 1000) + 1, zmq.POLLIN):
            return sock.recv_multipart(zmq.NOBLOCK)
    return None
