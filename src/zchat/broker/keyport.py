"""The key port's socket (a ROUTER on port + 3, accounts mode): hellos in, the
broker's public key out (protocol/hello.py).

Anyone may ask, before any handshake, so the socket is NULL and nothing it reads is
kept: each request is answered at once with the same prepared bytes, or ignored.
It must cost the broker next to nothing whatever is sent to it: a request is at most
MAX_HELLO_BYTES (libzmq cuts a connection that sends a longer one, so it is never
read), the queues hold a few messages each, and an answer never waits. With
ROUTER_MANDATORY off, libzmq drops an answer to a connection whose queue is full, or
that is gone, without a word: a client that reads no answers gets none, and one that
wants its answer asks again (client/hello.py does, each second).

The broker binds the socket, after ``configure``, and calls ``drain`` when its poll
says there is something to read.
"""

from __future__ import annotations

import zmq

from zchat.protocol.hello import MAX_HELLO_BYTES, is_hello

# Messages queued per connection, each way: a client sends one hello and reads one answer.
QUEUE = 64
BATCH = 256  # requests one drain reads at most, so that the chat's sockets get their turn


class KeyPort:
    def __init__(self, sock: zmq.Socket[bytes], reply: bytes) -> None:
        """``reply``: the broker's answer to every hello (encode_broker_hello)."""
        self.sock = sock
        self.reply = reply
        self.ignored = 0  # requests read that were not hellos, since the start

    def configure(self) -> None:
        """Set the socket's bounds; before the broker binds it, as libzmq applies them
        to the connections made after."""
        self.sock.setsockopt(zmq.MAXMSGSIZE, MAX_HELLO_BYTES)
        self.sock.setsockopt(zmq.ROUTER_MANDATORY, 0)
        self.sock.setsockopt(zmq.SNDHWM, QUEUE)
        self.sock.setsockopt(zmq.RCVHWM, QUEUE)
        self.sock.setsockopt(zmq.LINGER, 0)

    def drain(self, batch: int = BATCH) -> int:
        """Answer what is waiting, ``batch`` requests at most, without blocking: each
        hello with ``reply``, anything else not at all (counted in ``ignored``).
        Returns how many hellos were answered."""
        answered = 0
        for _ in range(batch):
            try:
                frames = self.sock.recv_multipart(zmq.NOBLOCK)
            except zmq.Again:
                break
            # [routing id, request]: a request of other frames is none of ours
            if len(frames) != 2 or not is_hello(frames[1]):
                self.ignored += 1
                continue
            try:
                self.sock.send_multipart([frames[0], self.reply], zmq.NOBLOCK)
            except zmq.Again:  # not raised with ROUTER_MANDATORY off; dropped all the same
                continue
            answered += 1
        return answered
