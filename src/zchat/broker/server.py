"""The broker's socket loop: one PULL in, one XPUB out, one poll loop, no threads.

Everything the broker decides is in rules.py; this module only moves frames between
the sockets and the rules, keeps the heartbeat clock, and stops cleanly.
"""

from __future__ import annotations

import contextlib
import errno
import logging
import secrets
import socket
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import zmq

from zchat import protocol as p
from zchat.broker.rules import Actions, BrokerRules
from zchat.broker.store import DEFAULT_RETENTION, HistoryStore
from zchat.errors import ConfigError

log = logging.getLogger("zchat.broker")

# How many frames one socket may hand over before the other gets its turn.
BATCH = 256
# Tries at finding two adjacent free ports when asked for port 0.
PORT_PAIR_TRIES = 50


@dataclass(frozen=True)
class BrokerConfig:
    host: str = "127.0.0.1"
    port: int = 5005  # in-socket; the out-socket is port + 1; 0 picks a free pair
    heartbeat_interval: float = 1.0  # seconds between the broker's sys/ heartbeats
    zmtp_heartbeat_ivl: float = 1.0  # ZMTP PING interval on both sockets
    zmtp_heartbeat_timeout: float = 5.0  # a peer silent this long is disconnected
    linger: float = 1.0  # seconds to flush the shutdown notice on close
    sndhwm: int = 10_000  # per-subscriber queue on the out-socket
    db: str = ":memory:"  # the history database; ":memory:" keeps nothing
    retention: int = DEFAULT_RETENTION  # events kept per room


class Broker:
    """Bind with ``Broker(config)``; ``run()`` serves until ``stop()`` (any thread)."""

    def __init__(self, config: BrokerConfig, context: zmq.Context[zmq.Socket[bytes]] | None = None):
        self.config = config
        self.epoch = secrets.token_hex(8)
        self.store = HistoryStore(config.db, config.retention)
        self.rules = BrokerRules(self.epoch, self.store)
        self._ctx = context or zmq.Context.instance()
        self._wake_r, self._wake_w = socket.socketpair()
        self._wake_r.setblocking(False)
        self._wake_w.setblocking(False)
        self._stopping = False
        self._in: zmq.Socket[bytes] = self._ctx.socket(zmq.PULL)
        self._out: zmq.Socket[bytes] = self._ctx.socket(zmq.XPUB)
        self._configure()
        try:
            self.port = self._bind()
        except BaseException:
            self.close()
            raise

    @property
    def in_endpoint(self) -> str:
        return f"tcp://{self._host_for_url()}:{self.port}"

    @property
    def out_endpoint(self) -> str:
        return f"tcp://{self._host_for_url()}:{self.port + 1}"

    def _host_for_url(self) -> str:
        host = self.config.host
        return f"[{host}]" if ":" in host else host

    def _configure(self) -> None:
        ivl = int(self.config.zmtp_heartbeat_ivl * 1000)
        timeout = int(self.config.zmtp_heartbeat_timeout * 1000)
        for sock in (self._in, self._out):
            sock.setsockopt(zmq.LINGER, int(self.config.linger * 1000))
            if ":" in self.config.host:
                sock.setsockopt(zmq.IPV6, 1)
        # Heartbeats on the out-socket only: they find silent peers, whose subscriptions
        # then go. On the in-socket a busy broker stops reading a full queue, a heartbeat
        # would then time out, and libzmq 4.3.5 can abort on the reconnect (issue 3937).
        self._out.setsockopt(zmq.HEARTBEAT_IVL, ivl)
        self._out.setsockopt(zmq.HEARTBEAT_TIMEOUT, timeout)
        self._in.setsockopt(zmq.MAXMSGSIZE, p.MAX_FRAME_BYTES)
        self._out.setsockopt(zmq.XPUB_MANUAL, 1)
        self._out.setsockopt(zmq.SNDHWM, self.config.sndhwm)

    def _bind(self) -> int:
        url = self._host_for_url()
        if self.config.port:
            self._bind_one(self._in, url, self.config.port)
            self._bind_one(self._out, url, self.config.port + 1)
            return self.config.port
        for _ in range(PORT_PAIR_TRIES):
            port = self._in.bind_to_random_port(f"tcp://{url}", max_port=65534)
            try:
                self._out.bind(f"tcp://{url}:{port + 1}")
            except zmq.ZMQError as exc:
                if exc.errno != errno.EADDRINUSE:
                    raise
                self._in.unbind(f"tcp://{url}:{port}")
                continue
            return port
        raise ConfigError(f"found no two adjacent free ports on {self.config.host}")

    def _bind_one(self, sock: zmq.Socket[bytes], url: str, port: int) -> None:
        try:
            sock.bind(f"tcp://{url}:{port}")
        except zmq.ZMQError as exc:
            if exc.errno == errno.EADDRINUSE:
                raise ConfigError(
                    f"port {port} on {self.config.host} is already in use (another zchat "
                    f"broker?): stop it, or pick free ports with --port N (uses N and N+1)"
                ) from None
            raise ConfigError(f"cannot listen on {self.config.host}:{port}: {exc}") from None

    def stop(self) -> None:
        """Ask ``run()`` to finish; safe from another thread or a signal handler."""
        self._stopping = True
        # already closed or the pipe is full: run() sees the flag anyway
        with contextlib.suppress(OSError):
            self._wake_w.send(b"x")

    def run(self) -> None:
        log.info(
            "zchat broker listening: in %s (clients PUSH here), out %s (clients SUB here); "
            "history in %s",
            self.in_endpoint,
            self.out_endpoint,
            self.config.db,
        )
        poller = zmq.Poller()
        poller.register(self._in, zmq.POLLIN)
        poller.register(self._out, zmq.POLLIN)
        poller.register(self._wake_r, zmq.POLLIN)
        interval = self.config.heartbeat_interval
        next_beat = time.monotonic()
        try:
            while not self._stopping:
                now = time.monotonic()
                if now >= next_beat:
                    self._apply(self.rules.heartbeat(now))
                    self.rules.expire(now)
                    next_beat = now + interval
                timeout_ms = max(0, int((next_beat - now) * 1000) + 1)
                ready = dict(poller.poll(timeout_ms))
                if self._out in ready:
                    self._drain_subscriptions()
                if self._in in ready:
                    self._drain_inbound()
            self._apply(self.rules.shutdown())
            log.info("broker stopped")
        finally:
            self.close()

    def _drain_subscriptions(self) -> None:
        for _ in range(BATCH):
            try:
                data = self._out.recv(zmq.NOBLOCK)
            except zmq.Again:
                return
            # apply before the next recv: XPUB_MANUAL applies to the last sender only
            self._apply(self._guarded(self.rules.on_subscription, data, time.monotonic()))

    def _drain_inbound(self) -> None:
        # one commit for the whole batch, before any of it is published
        batch = Actions()
        for _ in range(BATCH):
            try:
                frames = self._in.recv_multipart(zmq.NOBLOCK, copy=False)
            except zmq.Again:
                break
            try:
                peer: str | None = str(frames[0].get("Peer-Address"))
            except zmq.ZMQError:
                peer = None
            payload = [f.bytes for f in frames]
            batch.extend(self._guarded(self.rules.on_inbound, payload, peer, time.monotonic()))
        self._apply(batch)

    def _guarded(self, handle: Callable[..., Actions], *args: Any) -> Actions:
        """A bug must cost one frame, never the service: count it, log it, go on."""
        try:
            return handle(*args)
        except Exception:
            self.rules.dropped["internal"] += 1
            log.exception("dropped a frame that the broker failed to handle")
            return Actions()

    def _apply(self, actions: Actions) -> None:
        for topic in actions.subscribe:
            self._out.subscribe(topic)
        for topic in actions.unsubscribe:
            self._out.unsubscribe(topic)
        self.store.commit()  # what clients see is stored first: nothing seen is ever lost
        for frames in actions.publish:
            self._out.send_multipart(frames)

    def close(self) -> None:
        for sock in (self._in, self._out):
            if not sock.closed:
                sock.close()
        self._wake_r.close()
        self._wake_w.close()
        self.store.close()
