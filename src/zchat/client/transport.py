"""Socket set-up shared by the sync and asyncio clients."""

from __future__ import annotations

import contextlib
from dataclasses import dataclass
from pathlib import Path
from typing import TypeVar

import zmq

from zchat.client.core import ClientCore
from zchat.client.transfers import Transfers
from zchat.errors import ConfigError
from zchat.keys import load_pair, load_public
from zchat.protocol import transfer

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

    @property
    def files(self) -> str:
        return self._url(self.port + 2)

    def describe(self) -> str:
        return f"{self.host}:{self.port}"


@dataclass(frozen=True)
class Keys:
    """Secure mode: the broker's public key and this client's key pair (Z85)."""

    server: bytes
    public: bytes
    secret: bytes

    @classmethod
    def from_files(cls, server_key: str | Path, key: str | Path) -> Keys:
        """From the broker's ``broker.key`` and this user's ``NAME.key_secret``."""
        return cls(load_public(server_key), *load_pair(key))

    @classmethod
    def for_login(cls, server: bytes) -> Keys:
        """An accounts broker: its public key (Z85), and a key pair made for this
        client alone, which proves nothing but that its connections are one client's:
        the password says who it is (docs/protocol.md, "Logging in")."""
        public, secret = zmq.curve_keypair()
        return cls(server, public, secret)

    def apply(self, sock: zmq.Socket) -> None:  # type: ignore[type-arg]
        sock.curve_serverkey = self.server
        sock.curve_publickey = self.public
        sock.curve_secretkey = self.secret


def check_login(password: str | None, keys: Keys | None) -> None:
    """A password is sent over CURVE only: ConfigError if there are no keys."""
    if password is not None and keys is None:
        raise ConfigError(
            "refusing to send a password without encryption: give the broker's public key "
            "(keys=Keys.for_login(KEY), or zchat join --server-key KEY)"
        )


# The ZAP status of a handshake refused for a while (the broker's security.py).
REFUSED_FOR_NOW = 500
# What a client watches its connection for: a handshake the broker refused.
HANDSHAKE_EVENTS = (
    zmq.EVENT_HANDSHAKE_FAILED_NO_DETAIL
    | zmq.EVENT_HANDSHAKE_FAILED_PROTOCOL
    | zmq.EVENT_HANDSHAKE_FAILED_AUTH
)


def handshake_problem(event: int, value: int) -> str:
    """The ClientCore's name for a failed handshake (see ClientCore.on_handshake)."""
    if event == zmq.EVENT_HANDSHAKE_FAILED_AUTH:
        # 500: the broker cut a connection of this key or address a moment ago
        return "refused-for-now" if value == REFUSED_FOR_NOW else "key-refused"
    if event == zmq.EVENT_HANDSHAKE_FAILED_PROTOCOL and value in (
        zmq.PROTOCOL_ERROR_ZMTP_MECHANISM_MISMATCH,
        zmq.PROTOCOL_ERROR_ZMTP_UNEXPECTED_COMMAND,
    ):
        return "wrong-mode"
    return "handshake-failed"


def connect(push: S, sub: S, endpoints: Endpoints, core: ClientCore, keys: Keys | None = None) -> S:
    """Configure and connect a client's PUSH and SUB sockets, subscriptions in order.
    Returns a monitor socket that reports failed handshakes (HANDSHAKE_EVENTS)."""
    ipv6 = ":" in endpoints.host
    for sock in (push, sub):
        if keys is not None:
            keys.apply(sock)
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
    monitor: S = sub.get_monitor_socket(HANDSHAKE_EVENTS)
    sub.connect(endpoints.sub)
    push.connect(endpoints.push)
    return monitor


# File-port messages queued for the broker at most: a transfer has WINDOW in flight.
FILE_QUEUE = 4 * transfer.WINDOW


def connect_files(dealer: S, endpoints: Endpoints, keys: Keys | None = None) -> None:
    """Configure and connect a client's DEALER socket to the broker's file port."""
    if keys is not None:
        keys.apply(dealer)
    dealer.setsockopt(zmq.LINGER, 0)  # a transfer left unfinished resumes, or is dropped
    dealer.setsockopt(zmq.HEARTBEAT_IVL, 1000)
    dealer.setsockopt(zmq.HEARTBEAT_TIMEOUT, 5000)
    dealer.setsockopt(zmq.RECONNECT_IVL_MAX, 1000)
    # nothing is queued for an absent broker: a transfer asks again when it is back
    dealer.setsockopt(zmq.IMMEDIATE, 1)
    dealer.setsockopt(zmq.SNDHWM, FILE_QUEUE)
    if ":" in endpoints.host:
        dealer.setsockopt(zmq.IPV6, 1)
    dealer.connect(endpoints.files)


def send_files(dealer: zmq.Socket, transfers: Transfers) -> None:  # type: ignore[type-arg]
    """Send what the transfers ask; what the socket cannot take now is asked again by
    their timers."""
    for frames in transfers.take_outbox():
        with contextlib.suppress(zmq.Again):
            dealer.send_multipart(frames, zmq.NOBLOCK, copy=len(frames) == 1)


def drain_files(dealer: zmq.Socket, transfers: Transfers) -> None:  # type: ignore[type-arg]
    """Hand the transfers what the file socket holds, answering as they ask: a window's
    worth at most, then the chat's sockets get their turn."""
    for _ in range(4 * transfer.WINDOW):
        try:
            frames = dealer.recv_multipart(zmq.NOBLOCK)
        except zmq.Again:
            return
        transfers.on_answer(frames)
        send_files(dealer, transfers)


def reconnect(push: zmq.Socket, sub: zmq.Socket, endpoints: Endpoints) -> None:  # type: ignore[type-arg]
    """Make both connections again: libzmq does not retry a connection the broker
    refused at the handshake. The SUB socket subscribes again, in byte order."""
    for sock, url in ((sub, endpoints.sub), (push, endpoints.push)):
        with contextlib.suppress(zmq.ZMQError):  # already gone with the refusal
            sock.disconnect(url)
        sock.connect(url)


def close_monitor(sub: zmq.Socket, monitor: zmq.Socket | None) -> None:  # type: ignore[type-arg]
    """Stop watching ``sub``'s handshakes and close the monitor socket (connect)."""
    if monitor is not None:
        sub.disable_monitor()
        monitor.close()


def apply_subscriptions(sub: zmq.Socket, core: ClientCore) -> None:  # type: ignore[type-arg]
    """Apply the subscription changes the core asks for (entering, parting, markers)."""
    for subscribe, topic in core.take_subscriptions():
        sub.setsockopt(zmq.SUBSCRIBE if subscribe else zmq.UNSUBSCRIBE, topic)
