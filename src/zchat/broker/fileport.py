"""The file port's socket (a ROUTER on port + 2): messages in, answers out.

What the messages mean is files.py's; here is only the socket's side. Messages are
read a batch at a time, as on the in-socket, so the chat's sockets get their turn.
Answers never wait: ROUTER_MANDATORY makes a send to a connection that is gone, or
whose queue is full, fail at once (the answer is dropped and counted by files.py).
And the bytes of a file sent to a connection are charged to it as an inbox's are
(guard.py): one that asks for chunks and never reads them is cut, as a reader that
never reads its inbox is.
"""

from __future__ import annotations

import errno
import time
from collections.abc import Callable, Iterator, Sequence

import zmq

from zchat.broker.guard import ConnectionGuard

# Messages one batch reads at most, and for how long (as on the in-socket).
BATCH = 256
BATCH_SECONDS = 0.0005
# Frames smaller than this are copied into libzmq; larger ones (a chunk) are not.
COPY_BELOW = 65536

Received = tuple[bytes, list[memoryview], str | None, float]  # routing id, frames, key, when


class FilePort:
    def __init__(
        self,
        sock: zmq.Socket[bytes],
        guard: ConnectionGuard,
        user: Callable[[zmq.Frame], str | None],
        descriptor: Callable[[zmq.Frame], int | None],
    ) -> None:
        """``user``: a frame's key name (secure mode); ``descriptor``: its connection's
        file descriptor (server.py reads both from libzmq's frame properties)."""
        self.sock = sock
        self.guard = guard
        self._user = user
        self._descriptor = descriptor
        self._fds: dict[bytes, int] = {}  # a routing id -> its connection's descriptor

    def received(self, barred: Callable[[str], bool]) -> Iterator[Received]:
        """One batch of messages; those of a key that is ``barred`` are dropped."""
        until = time.monotonic() + BATCH_SECONDS
        for _ in range(BATCH):
            try:
                frames = self.sock.recv_multipart(zmq.NOBLOCK, copy=False)
            except zmq.Again:
                return
            now, user = time.monotonic(), self._user(frames[-1])
            if user is not None and barred(user):
                continue  # its connections are being cut; nothing it asks is served
            identity = frames[0].bytes
            fd = self._descriptor(frames[-1])
            if fd is not None:
                self._fds[identity] = fd
            yield identity, [frame.buffer for frame in frames[1:]], user, now
            if now > until:
                return

    def send(self, identity: bytes, frames: Sequence[bytes | memoryview]) -> bool:
        """One answer; False if its connection is gone or not reading (its queue is
        full: a client that asks more than it reads loses the rest)."""
        try:
            self.sock.send(identity, zmq.SNDMORE | zmq.NOBLOCK)
            for frame in frames[:-1]:
                self.sock.send(frame, zmq.SNDMORE | zmq.NOBLOCK, copy=len(frame) < COPY_BELOW)
            self.sock.send(frames[-1], zmq.NOBLOCK, copy=len(frames[-1]) < COPY_BELOW)
        except zmq.ZMQError as exc:  # EHOSTUNREACH: gone; EAGAIN: full
            if exc.errno not in (errno.EHOSTUNREACH, errno.EAGAIN):
                raise
            return False
        fd = self._fds.get(identity)
        if fd is None or len(frames) < 2:  # only a chunk of a file is charged
            return True
        conn = self.guard.connection_of(fd)
        if conn is not None and not self.guard.sent(fd, sum(len(f) for f in frames), conn):
            del self._fds[identity]  # cut: its reader left too much unread
        return True

    def forget_closed(self) -> None:
        """Forget the routing ids of connections that are gone (once a beat)."""
        for identity, fd in list(self._fds.items()):
            if self.guard.connection_of(fd) is None:
                del self._fds[identity]
