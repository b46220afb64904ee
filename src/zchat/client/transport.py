"""Socket set-up shared by the sync and asyncio clients."""

from __future__ import annotations

from dataclasses import dataclass
from typing import TypeVar

import zmq

from zchat.client.core import ClientCore

DEFAULT_HOST = "127.0.0.1"
DEFAULT_PORT = 5005
LEAVE_LINGER_MS = 1000  # how long a closing client waits for its LEAVE to go out

S = TypeVar("S", bound=zmq.Socket)  # type: ignore[type-arg]


@dataclass(frozen=True)
class Endpoints:
    host: str = DEFAULT_HOST
    port: int = DEFAULT_PORT

    def _url(self, port: int) -> str:
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"tcp://{host}:{port}"

    @property
    def push(self) -> str:
        return self._url(self.port)

    @property
    def sub(self) -> str:
        return self._url(self.port + 1)

    def describe(self) -> str:
        return f"{self.host}:{self.port}"


def connect(push: S, sub: S, endpoints: Endpoints, core: ClientCore) -> None:
    """Configure and connect a client's PUSH and SUB sockets, subscriptions in order."""
    ipv6 = ":" in endpoints.host
    for sock in (push, sub):
        sock.setsockopt(zmq.LINGER, LEAVE_LINGER_MS)
        sock.setsockopt(zmq.HEARTBEAT_IVL, 1000)
        sock.setsockopt(zmq.HEARTBEAT_TIMEOUT, 5000)
        sock.setsockopt(zmq.RECONNECT_IVL_MAX, 1000)
        if ipv6:
            sock.setsockopt(zmq.IPV6, 1)
    # Lines are never queued for an absent broker: a send fails at once instead, and
    # the user is told, rather than having the line stamped minutes later as new.
    push.setsockopt(zmq.IMMEDIATE, 1)
    # No receive limit: with one, a program that stops reading fills the queue, libzmq
    # stops reading the connection, the heartbeat times out, and libzmq 4.3.5 aborts on
    # the reconnect (libzmq issue 3937). The broker's send queue is the bound instead.
    sub.setsockopt(zmq.RCVHWM, 0)
    for topic in core.subscriptions():
        sub.setsockopt(zmq.SUBSCRIBE, topic)
    sub.connect(endpoints.sub)
    push.connect(endpoints.push)


def apply_subscriptions(sub: zmq.Socket, core: ClientCore) -> None:  # type: ignore[type-arg]
    """Apply the subscription changes the core asks for (entering, parting, markers)."""
    for subscribe, topic in core.take_subscriptions():
        sub.setsockopt(zmq.SUBSCRIBE if subscribe else zmq.UNSUBSCRIBE, topic)
