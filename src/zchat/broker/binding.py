"""The broker's sockets set up and bound: their options, their ports (PORT to PORT+2,
and PORT+3 for an accounts broker's key port), and the admin socket. A mixin of the
Broker (server.py), as operator.py is."""

from __future__ import annotations

import errno
from pathlib import Path

import zmq

from zchat import admin
from zchat import protocol as p
from zchat.broker.config import BrokerConfig
from zchat.broker.keyport import KeyPort
from zchat.broker.security import KeyAuthenticator, OpenGate
from zchat.errors import ConfigError
from zchat.protocol import transfer

# The longest message a client may send on the out-socket: a marker topic is 55 bytes,
# a CURVE handshake command about 300. Past this libzmq drops the connection (XPUB
# keeps every topic it is sent, at a cost of memory for each byte).
MAX_SUBSCRIPTION_BYTES = 512
# In open mode the handshake is a NULL READY of some 40 bytes, so the bound can be the
# longest topic a client may hold (guard.MAX_TOPIC_BYTES) and a little: a longer one
# then ends its connection in libzmq's reader, before it costs any memory.
MAX_OPEN_SUBSCRIPTION_BYTES = 192
# Subscriptions libzmq takes in from one connection ahead of the broker's reading
# (RCVHWM on the out-socket): libzmq keeps each one it takes in, so a connection that
# floods them is cut by the guard before it has cost much.
SUBSCRIPTION_QUEUE = 64
# Tries at finding three adjacent free ports when asked for port 0.
PORT_PAIR_TRIES = 50
# File-port messages libzmq takes in from one connection ahead of the broker's reading:
# a client has at most transfer.WINDOW chunks in flight per transfer.
FILE_QUEUE = 4 * transfer.WINDOW


class Binding:
    """The Broker's sockets: options, ports, endpoints."""

    config: BrokerConfig
    port: int
    _in: zmq.Socket[bytes]
    _out: zmq.Socket[bytes]
    _files: zmq.Socket[bytes]
    _admin: zmq.Socket[bytes]
    _keyport: KeyPort | None
    _auth: KeyAuthenticator | None
    _gate: OpenGate | None

    def _served_sockets(self) -> list[zmq.Socket[bytes]]:
        """The sockets clients connect to, in the order of their ports."""
        ports = [self._in, self._out, self._files]
        return [*ports, self._keyport.sock] if self._keyport is not None else ports

    @property
    def in_endpoint(self) -> str:
        return f"tcp://{self._host_for_url()}:{self.port}"

    @property
    def out_endpoint(self) -> str:
        return f"tcp://{self._host_for_url()}:{self.port + 1}"

    @property
    def files_endpoint(self) -> str:
        return f"tcp://{self._host_for_url()}:{self.port + 2}"

    def _host_for_url(self) -> str:
        host = self.config.host
        return f"[{host}]" if ":" in host else host

    def _configure(self) -> None:
        ivl = int(self.config.zmtp_heartbeat_ivl * 1000)
        timeout = int(self.config.zmtp_heartbeat_timeout * 1000)
        self._admin.setsockopt(zmq.LINGER, 0)
        self._admin.setsockopt(zmq.MAXMSGSIZE, admin.MAX_REQUEST_BYTES)
        for sock in (self._in, self._out, self._files):
            if self._auth is not None:
                self._auth.secure(sock)
            elif self._gate is not None:
                self._gate.secure(sock)
            sock.setsockopt(zmq.LINGER, int(self.config.linger * 1000))
            sock.setsockopt(zmq.HANDSHAKE_IVL, int(self.config.handshake_timeout * 1000))
            if ":" in self.config.host:
                sock.setsockopt(zmq.IPV6, 1)
        # Heartbeats on the out-socket only: they find silent peers, whose subscriptions
        # then go. On the in-socket a busy broker stops reading a full queue, a heartbeat
        # would then time out, and libzmq 4.3.5 can abort on the reconnect (issue 3937).
        self._out.setsockopt(zmq.HEARTBEAT_IVL, ivl)
        self._out.setsockopt(zmq.HEARTBEAT_TIMEOUT, timeout)
        self._in.setsockopt(zmq.MAXMSGSIZE, p.MAX_FRAME_BYTES)
        self._out.setsockopt(zmq.XPUB_MANUAL, 1)
        longest = MAX_SUBSCRIPTION_BYTES if self._auth else MAX_OPEN_SUBSCRIPTION_BYTES
        self._out.setsockopt(zmq.MAXMSGSIZE, longest)
        self._out.setsockopt(zmq.SNDHWM, self.config.sndhwm)
        if self.config.sndbuf:
            self._out.setsockopt(zmq.SNDBUF, self.config.sndbuf)
        self._out.setsockopt(zmq.RCVHWM, SUBSCRIPTION_QUEUE)
        # files: a message past a chunk ends its connection in libzmq; a send to a
        # connection that is gone, or whose queue is full, fails instead of waiting
        self._files.setsockopt(zmq.MAXMSGSIZE, transfer.MAX_MESSAGE_BYTES)
        self._files.setsockopt(zmq.ROUTER_MANDATORY, 1)
        self._files.setsockopt(zmq.RCVHWM, FILE_QUEUE)
        self._files.setsockopt(zmq.SNDHWM, FILE_QUEUE)
        self._files.setsockopt(zmq.HEARTBEAT_IVL, ivl)
        self._files.setsockopt(zmq.HEARTBEAT_TIMEOUT, timeout)

    def _bind(self) -> int:
        url = self._host_for_url()
        served = self._served_sockets()
        if self.config.port:
            for offset, sock in enumerate(served):
                self._bind_one(sock, url, self.config.port + offset)
            return self.config.port
        for _ in range(PORT_PAIR_TRIES):
            port = self._in.bind_to_random_port(f"tcp://{url}", max_port=65536 - len(served))
            bound = [self._in]
            try:
                for offset, sock in enumerate(served[1:], 1):
                    sock.bind(f"tcp://{url}:{port + offset}")
                    bound.append(sock)
            except zmq.ZMQError as exc:
                if exc.errno != errno.EADDRINUSE:
                    raise
                for offset, sock in enumerate(bound):
                    sock.unbind(f"tcp://{url}:{port + offset}")
                continue
            return port
        raise ConfigError(f"found no {len(served)} adjacent free ports on {self.config.host}")

    def _bind_one(self, sock: zmq.Socket[bytes], url: str, port: int) -> None:
        try:
            sock.bind(f"tcp://{url}:{port}")
        except zmq.ZMQError as exc:
            if exc.errno == errno.EADDRINUSE:
                raise ConfigError(
                    f"port {port} on {self.config.host} is already in use (another zchat "
                    f"broker?): stop it, or pick free ports with --port N (it uses N to "
                    f"N+{len(self._served_sockets()) - 1})"
                ) from None
            raise ConfigError(f"cannot listen on {self.config.host}:{port}: {exc}") from None

    def _bind_admin(self) -> Path:
        path = Path(self.config.admin_socket) if self.config.admin_socket else None
        path = path or admin.default_path(self.port)
        try:
            admin.private_folder(path)
            self._admin.bind(f"ipc://{path}")
            path.chmod(0o600)
        except (OSError, zmq.ZMQError) as exc:
            raise ConfigError(f"cannot make the admin socket {path}: {exc}") from None
        return path
