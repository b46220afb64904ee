"""The broker's socket loop: one PULL in, one XPUB out, one poll loop.

Everything the broker decides is in rules.py; this module only moves frames between
the sockets and the rules, keeps the heartbeat clock, answers the operator on the
admin socket (operator.py), and stops cleanly. The sockets are set up and bound in
binding.py, the configuration is config.py's. In secure and accounts modes a ZAP
handler (security.py) runs in a thread of its own and hands each frame's key name to
the rules; a reload of the keys folder is read in another (reloading.py), and an
accounts broker checks passwords in a third (logins.py).
"""

from __future__ import annotations

import contextlib
import ctypes
import functools
import logging
import secrets
import socket
import struct
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import zmq

from zchat import protocol as p
from zchat.broker.binding import Binding
from zchat.broker.config import MODES, BrokerConfig, Turns, mode_of, public_host, warn_if_exposed
from zchat.broker.descriptors import connection_budget, raise_open_files_limit
from zchat.broker.fileport import FilePort
from zchat.broker.files import FileService
from zchat.broker.filestore import FileStore
from zchat.broker.frames import connection_serial, descriptor, peer_address
from zchat.broker.guard import Connection, ConnectionGuard
from zchat.broker.keyport import KeyPort
from zchat.broker.limits import (
    RateLimit,
    RuleLimits,
)
from zchat.broker.logins import Hasher
from zchat.broker.operator import Operator
from zchat.broker.policy import AccountsPolicy
from zchat.broker.reloading import KeyReload, LoadKeys
from zchat.broker.rules import Actions, BrokerRules
from zchat.broker.security import KeyAuthenticator, OpenGate
from zchat.broker.store import HistoryStore, StorageFull
from zchat.keys import KeyRing, load_keyring, own_keyring
from zchat.protocol.hello import encode_broker_hello, fingerprint
from zchat.trust import invite

__all__ = ["Broker", "BrokerConfig", "public_host", "warn_if_exposed"]

log = logging.getLogger("zchat.broker")

# How many frames one socket may hand over before the other gets its turn, and for how
# long: a batch is published only once it is all handled, so a flood of frames (even
# ones that are dropped) must not hold back the lines of others for long.
BATCH = 256
BATCH_SECONDS = 0.0005
# At most one traceback in this long for frames the broker failed to handle (counted).
FAILURE_LOG_SECONDS = 10.0
# What the connection guard hears of on the monitor sockets: a descriptor that is
# opened or closed is a new connection (or none), whatever it was before.
MONITOR_EVENTS = zmq.EVENT_ACCEPTED | zmq.EVENT_DISCONNECTED | zmq.EVENT_CLOSED


def _rules(
    config: BrokerConfig, epoch: str, store: HistoryStore, secure: bool, flood: RateLimit
) -> BrokerRules:
    return BrokerRules(
        epoch,
        store,
        secure=secure,
        policy=AccountsPolicy(register=config.allow_register) if config.accounts else None,
        limit=flood,
        grace=config.rejoin_grace,
        limits=RuleLimits(quiet_joins=config.quiet_joins),
    )


class Broker(Binding, Operator):
    """Bind with ``Broker(config)``; ``run()`` serves until ``stop()`` (any thread).
    What it does for the operator is in operator.py."""

    def __init__(
        self,
        config: BrokerConfig,
        context: zmq.Context[zmq.Socket[bytes]] | None = None,
        *,
        load_keys: LoadKeys = load_keyring,
    ):
        """``load_keys``: reads the keys folder, at start and on each reload."""
        config.check()
        self.config = config
        self.epoch = secrets.token_hex(8)
        keyring = load_keys(config.keys) if config.keys is not None else None
        self.store = HistoryStore(config.db, config.retention, mode_of(config))
        if config.accounts and keyring is None:  # its own pair, beside the history
            keyring = own_keyring(config.db)
        flood = RateLimit(config.rate, config.burst)
        self.rules = _rules(config, self.epoch, self.store, keyring is not None, flood)
        self.open_files = raise_open_files_limit()
        budget = connection_budget(self.open_files)
        self.guard = ConnectionGuard(config.connection, flood, max_connections=budget)
        # The broker's ZAP handler serves its whole context: it gets one of its own
        # (``context`` is accepted for compatibility and not used).
        del context
        self._ctx: zmq.Context[zmq.Socket[bytes]] = zmq.Context()
        self._auth: KeyAuthenticator | None = None
        self._gate: OpenGate | None = None
        # inbox topic -> the connections subscribed to it (descriptor -> its record)
        self._inbox_fds: dict[bytes, dict[int, Connection]] = {}
        self._bars: dict[str, bool] = {}  # key name -> banned or withdrawn (see _barred)
        self._cut_barred_at: float | None = None  # when to cut their connections
        self._replaced: set[str] = set()  # users whose key was replaced, till then
        self._cuts_trimmed = 0  # cuts when memory was last given back
        self._wake_r, self._wake_w = socket.socketpair()
        self._wake_r.setblocking(False)
        self._wake_w.setblocking(False)
        self._reload: KeyReload | None = None
        self.hasher = self._hasher(config)
        if config.keys is not None:
            self._reload = KeyReload(config.keys, self._wake, load_keys)
        self._stopping = False
        self.turns = Turns()  # how long the loop's turns take (stats)
        self._misaligned = False  # see _drain_subscriptions
        self._last_failure = -FAILURE_LOG_SECONDS
        self._in: zmq.Socket[bytes] = self._ctx.socket(zmq.PULL)
        self._out: zmq.Socket[bytes] = self._ctx.socket(zmq.XPUB)
        # ROUTER, for the `zchat admin` REQ sockets: a reload is answered when it is done,
        # and other requests meanwhile (a REP socket would take none before that answer)
        self._admin: zmq.Socket[bytes] = self._ctx.socket(zmq.ROUTER)
        self._files: zmq.Socket[bytes] = self._ctx.socket(zmq.ROUTER)  # files.py
        self._keyport: KeyPort | None = None  # accounts mode: port + 3 (keyport.py)
        self.admin_path = Path()
        try:
            self.files = self._serve_files(config)
            self._guard_handshakes(keyring)
            self._configure()
            self._monitors = [
                sock.get_monitor_socket(MONITOR_EVENTS) for sock in self._served_sockets()
            ]
            self.port = self._bind()
            self.store.serving(self.port)  # for another broker refused the history file
            self.admin_path = self._bind_admin()
        except BaseException:
            self.close()
            raise

    def _guard_handshakes(self, keyring: KeyRing | None) -> None:
        """The ZAP handler: the keys' (secure and accounts modes), or open mode's."""
        if keyring is None:
            self._gate = OpenGate(self._ctx, self.guard.refused)
            return
        self._auth = KeyAuthenticator(
            self._ctx, keyring, self.guard.refused, self.guard.key_refused,
            logins=self.config.accounts, login_barred=self.rules.ended_keys.__contains__,
        )  # fmt: skip
        self._auth.banned = self._banned()
        self._use_keys(keyring)
        if self.config.accounts:
            hello = encode_broker_hello(keyring.public, self.config.allow_register)
            self._keyport = KeyPort(self._ctx.socket(zmq.ROUTER), hello)
            self._keyport.configure()

    def _hasher(self, config: BrokerConfig) -> Hasher | None:
        """An accounts broker's thread that checks passwords (logins.py), and the
        port that tells its key to anyone who asks (keyport.py)."""
        if not config.accounts:
            return None
        hasher = Hasher(self._wake)
        self.rules.submit_login = hasher.submit
        return hasher

    def _serve_files(self, config: BrokerConfig) -> FileService:
        """What serves the file port (fileport.py, files.py)."""
        self._fileport = FilePort(self._files, self.guard, self._user, descriptor)
        store = FileStore(self.store, config.files)
        send = self._fileport.send
        return FileService(store, self.rules, config.file_limits, send, self._wake)

    def stop(self) -> None:
        """Ask ``run()`` to finish; safe from another thread or a signal handler."""
        self._stopping = True
        self._wake()

    def _wake(self) -> None:
        """Make the poll loop look round (any thread)."""
        # already closed or the pipe is full: the loop is woken anyway, or is gone
        with contextlib.suppress(OSError):
            self._wake_w.send(b"x")

    def _log_start(self) -> None:
        log.info(
            "zchat broker listening: in %s (clients PUSH here), out %s (clients SUB here), "
            "files %s; history in %s; shared files in %s; %s; admin socket %s",
            self.in_endpoint,
            self.out_endpoint,
            self.files_endpoint,
            self.config.db,
            self.files.store.folder,
            MODES[mode_of(self.config)],
            self.admin_path,
        )
        if self._keyport is not None and self._auth is not None:
            key = self._auth.keyring.public
            log.info(
                "the broker's public key is %s, fingerprint %s (port %d tells it to anyone "
                "who asks). Hand out this line to join with it: %s",
                key.decode(), fingerprint(key), self.port + 3,
                invite(public_host(self.config.host), self.port, key),
            )  # fmt: skip
        log.info(
            "open files: at most %d, so at most %d connections",
            self.open_files,
            self.guard.max_connections,
        )

    def run(self) -> None:
        self._log_start()
        poller = zmq.Poller()
        poller.register(self._in, zmq.POLLIN)
        poller.register(self._out, zmq.POLLIN)
        poller.register(self._admin, zmq.POLLIN)
        poller.register(self._files, zmq.POLLIN)
        poller.register(self._wake_r, zmq.POLLIN)
        if self._keyport is not None:
            poller.register(self._keyport.sock, zmq.POLLIN)
        for monitor in self._monitors:
            poller.register(monitor, zmq.POLLIN)
        interval = self.config.heartbeat_interval
        next_beat = time.monotonic()
        self.rules.start(next_beat)
        woke = time.monotonic()
        try:
            while not self._stopping:
                now = time.monotonic()
                self.turns.note(now - woke)  # what the last wake-up's work took
                if now >= next_beat:
                    self._apply(self.rules.heartbeat(now))
                    self._apply(self.rules.expire(now))
                    self.files.expire(now)
                    self._police(now)
                    next_beat = now + interval
                    self.turns.note(time.monotonic() - now)
                timeout_ms = max(0, int((next_beat - now) * 1000) + 1)
                ready = dict(poller.poll(timeout_ms))
                woke = time.monotonic()
                if any(monitor in ready for monitor in self._monitors):
                    self._watch_connections()
                if self._out in ready:
                    self._drain_subscriptions()
                if self._in in ready:
                    self._drain_inbound()
                if self._admin in ready:
                    self._serve_admin()
                if self._files in ready:
                    self._drain_files()
                if self._keyport is not None and self._keyport.sock in ready:
                    self._keyport.drain()
                if self._wake_r.fileno() in ready:  # a socket.socket is told by its number
                    self._woken()
            self._apply(self.rules.shutdown())
            log.info("broker stopped")
        finally:
            self.close()

    def _watch_connections(self) -> None:
        """Connections libzmq opened or closed: the guard starts their counts afresh."""
        for monitor in self._monitors:
            while True:
                try:
                    frames = monitor.recv_multipart(zmq.NOBLOCK)
                except zmq.Again:
                    break
                event, fd = struct.unpack("=HI", frames[0][:6])
                if event == zmq.EVENT_ACCEPTED:
                    self.guard.accepted(fd, time.monotonic())
                elif event & MONITOR_EVENTS:
                    self.guard.closed(fd)

    def _police(self, now: float) -> None:
        """Once a beat: unread answers, penalties; memory back to the system after cuts
        (libzmq frees what a cut connection held, but the allocator keeps it)."""
        self.guard.check_unread()
        self.guard.expire(now)
        if self._auth is not None:
            self._auth.report(now)
        if self._cut_barred_at is not None and now >= self._cut_barred_at:
            self._cut_barred()
        self._fileport.forget_closed()
        cuts = sum(self.guard.cuts.values())
        if cuts != self._cuts_trimmed:
            self._cuts_trimmed = cuts
            _trim_memory()

    def _drain_subscriptions(self) -> None:
        for _ in range(BATCH):
            try:
                frame = self._out.recv(zmq.NOBLOCK, copy=False)
            except zmq.Again:
                self._misaligned = False  # libzmq's queues are both empty: in step again
                return
            data = frame.bytes
            if not data or data[0] not in (0, 1):
                # libzmq 4.3.5 queues such a message (an XSUB may send any) without its
                # connection, so until its queue is empty each subscription read would
                # be applied to another connection's: none is applied till then (the
                # guard cuts the sender, and the connections whose subscriptions were
                # not applied, which then subscribe again).
                self._misaligned = True
            now, fd, user = time.monotonic(), descriptor(frame), self._user(frame)
            if fd is not None:
                serial = connection_serial(frame)
                if user is not None and data[:1] == b"\x01" and self._barred(user):
                    self._drop_barred(fd, now, user, serial)  # nothing it asks is applied
                    continue
                if not self.guard.subscription(fd, data, now, user, serial):
                    continue
                if self._misaligned and data[0] == 1:
                    self.guard.misaligned(fd)
            # apply before the next recv: XPUB_MANUAL applies to the last sender only
            trusted = not self._misaligned
            actions = self._guarded(self.rules.on_subscription, data, now, user, trusted)
            if not trusted:  # it may end a session; it must not touch another's topics
                actions.subscribe, actions.unsubscribe = [], []
            self._follow_inboxes(actions, fd)
            self._apply(actions)

    def _follow_inboxes(self, actions: Actions, fd: int | None) -> None:
        """Remember which connections hold each inbox (one key may subscribe to its
        inbox on several), to count what each leaves unread."""
        for topic in actions.subscribe:
            if fd is not None and topic.startswith(p.INBOX_PREFIX):
                conn = self.guard.connection_of(fd)
                if conn is not None:
                    self._inbox_fds.setdefault(topic, {})[fd] = conn
        for topic in actions.unsubscribe:
            held = self._inbox_fds.get(topic)
            if held is None:
                continue
            if fd is not None:
                held.pop(fd, None)
            else:  # libzmq's, for a closed connection: forget the closed ones
                for gone in [f for f, c in held.items() if self.guard.connection_of(f) is not c]:
                    del held[gone]
            if not held:
                del self._inbox_fds[topic]

    def _drain_inbound(self) -> None:
        # one commit for the whole batch, before any of it is published
        batch = Actions()
        until = time.monotonic() + BATCH_SECONDS
        for _ in range(BATCH):
            try:  # recv, not recv_multipart: a client sends one frame, and this is the loop
                frame = self._in.recv(zmq.NOBLOCK, copy=False)  # that costs per line
            except zmq.Again:
                break
            payload = [frame.bytes]
            while frame.more:  # not a client's: read it all, for the rules to drop
                frame = self._in.recv(copy=False)
                payload.append(frame.bytes)
            now, fd, user = time.monotonic(), descriptor(frame), self._user(frame)
            if fd is not None:
                serial = connection_serial(frame)
                if user is not None and self._barred(user):
                    self._drop_barred(fd, now, user, serial)
                    continue
                if not self.guard.frame(fd, now, user, serial):
                    continue
            peer = functools.partial(peer_address, frame)  # asked for joins and drops only
            batch.extend(self._guarded(self.rules.on_inbound, payload, peer, now, user))
            if now > until:
                break
        self._apply(batch)

    def _drain_files(self) -> None:
        """File-port messages (files.py), a batch at a time as on the in-socket."""
        batch = Actions()
        for identity, parts, user, now in self._fileport.received(self._barred):
            batch.extend(self._guarded(self.files.handle, identity, parts, user, now))
        self._apply(batch)

    def _user(self, frame: zmq.Frame) -> str | None:
        """The name of the key a frame came with (secure mode), from the ZAP handler.
        Frames libzmq makes up for a closed connection have none."""
        if not self.secure:
            return None
        try:
            return str(frame.get("User-Id"))
        except zmq.ZMQError:
            return None

    def _woken(self) -> None:
        """The wake-up pipe: emptied, then a finished reload is put in place."""
        with contextlib.suppress(OSError):  # empty: BlockingIOError
            while self._wake_r.recv(4096):
                pass
        done = self._reload.take() if self._reload is not None else None
        if done is not None:
            self._answer_admin(done.asker, self._reloaded(done))
        for verdict in self.hasher.take() if self.hasher is not None else ():
            self._apply(self._guarded(self.rules.on_verdict, verdict, time.monotonic()))
        self._apply(self._guarded(self.files.checked))

    def _guarded(self, handle: Callable[..., Actions], *args: Any) -> Actions:
        """A bug must cost one frame, never the service: count it, log it, go on."""
        try:
            return handle(*args)
        except Exception:
            self.rules.dropped["internal"] += 1
            now = time.monotonic()
            if now - self._last_failure >= FAILURE_LOG_SECONDS:  # a flood of them is one line
                self._last_failure = now
                log.exception("dropped a frame that the broker failed to handle")
            return Actions()

    def _apply(self, actions: Actions) -> None:
        retired = self.rules.take_retired()  # login keys barred: their connections go too
        if (actions.bans_changed or retired) and self._auth is not None:
            self._auth.banned = self._banned()  # their next connections are refused
            self._bars_changed()  # and the ones they have are cut
        for topic in actions.subscribe:
            self._out.subscribe(topic)
        for topic in actions.unsubscribe:
            self._out.unsubscribe(topic)
        try:
            self.store.commit()  # what clients see is stored first: nothing seen is ever lost
        except StorageFull as full:  # the disk is full: the batch's room events are gone
            actions = self.rules.unstored(full, actions)
            if self._auth is not None:
                self._auth.banned = self._banned()  # a ban in the batch is gone too
        for frames in actions.publish:
            self._send(frames)

    def _send(self, frames: list[bytes]) -> None:
        out = self._out
        for frame in frames[:-1]:  # send by send: a third of send_multipart's cost
            out.send(frame, zmq.SNDMORE)
        out.send(frames[-1])
        if frames[0].startswith(p.INBOX_PREFIX):
            held = self._inbox_fds.get(frames[0])
            if held is not None:
                size = sum(len(frame) for frame in frames)
                for fd, conn in list(held.items()):
                    if not self.guard.sent(fd, size, conn):
                        del held[fd]  # closed, or cut

    def close(self) -> None:
        for sock in (self._admin, *self._served_sockets()):
            if not sock.closed:
                if sock is not self._admin:
                    with contextlib.suppress(zmq.ZMQError):
                        sock.disable_monitor()
                sock.close()
        for monitor in getattr(self, "_monitors", []):
            monitor.close(linger=0)
        if self.admin_path != Path():  # libzmq leaves the socket file behind
            with contextlib.suppress(OSError):
                self.admin_path.unlink()
        if self._auth is not None:
            self._auth.stop()
        if self._gate is not None:
            self._gate.stop()
        if getattr(self, "hasher", None) is not None:
            self.hasher.stop()  # type: ignore[union-attr]
        self._ctx.term()
        self._wake_r.close()
        self._wake_w.close()
        if hasattr(self, "files"):
            self.files.close()
        self.store.close()


def _trim_memory() -> None:
    """Give freed heap memory back to the system (glibc keeps it otherwise)."""
    try:
        libc = ctypes.CDLL(None)
        libc.malloc_trim(0)
    except (OSError, AttributeError):
        pass
