"""The systems compared, each with its server, its publishers and its subscribers.

In the end-to-end runs every subscriber decodes every message as a real client of that
system must (JSON for zchat, the proxy and Redis; the stamped text line for the
classroom server). In the broker-isolating runs the ZeroMQ systems' subscribers only
count frames and read each line's send time (``count_only``). All share one counting
loop (zchat.bench.run_subscriber), so the systems differ only in transport.
"""

from __future__ import annotations

import json
import os
import re
import select
import shutil
import socket
import subprocess
import sys
import tempfile
import threading
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import zmq

from zchat import protocol as p
from zchat.bench import (
    OTHER,
    Publisher,
    ZchatTarget,
    run_subscriber,
    spawn_broker,
    stamp_of,
    zmq_subscriber,
)

HERE = Path(__file__).resolve().parent
ROOM = "bench"
TS = datetime(2025, 1, 1, tzinfo=UTC)


def free_port_pair() -> int:
    """Two adjacent free ports, found the way the broker finds them."""
    for _ in range(100):
        with socket.socket() as a:
            a.bind(("127.0.0.1", 0))
            port = a.getsockname()[1]
            with socket.socket() as b:
                try:
                    b.bind(("127.0.0.1", port + 1))
                except OSError:
                    continue
            return port
    raise RuntimeError("no two adjacent free ports")


def proc_status(pid: int, key: str) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith(key + ":"):
            return int(line.split()[1])
    raise KeyError(key)


class System:
    name = ""
    server: subprocess.Popen[Any]

    def start(self) -> None: ...

    def stop(self) -> None:
        self.server.terminate()
        self.server.wait(10)

    @property
    def pid(self) -> int:
        return self.server.pid

    def publisher(self, index: int, size: int) -> Publisher: ...

    def close_publishers(self) -> None: ...

    def subscriber_args(self, count_only: bool) -> tuple[Callable[..., None], tuple[Any, ...]]: ...


class Zchat(System):
    """zchat's broker as shipped: validation, stamping, history in a file (WAL mode)."""

    name = "zchat"

    def start(self) -> None:
        self.db = tempfile.mkdtemp(prefix="zchat-bench-")
        self.server, self.port = spawn_broker(db=self.history())
        self.target = ZchatTarget("127.0.0.1", self.port, ROOM)

    def history(self) -> str:
        return str(Path(self.db) / "history.db")

    def stop(self) -> None:
        super().stop()
        shutil.rmtree(self.db, ignore_errors=True)

    def publisher(self, index: int, size: int) -> Publisher:
        return self.target.publisher(index, size)

    def close_publishers(self) -> None:
        self.target.close_publishers()
        self.target = ZchatTarget("127.0.0.1", self.port, ROOM)

    def subscriber_args(self, count_only: bool) -> tuple[Callable[..., None], tuple[Any, ...]]:
        return self.target.subscriber_args(count_only)


class ZchatInMemory(Zchat):
    """zchat's broker keeping no history (``--db :memory:``): the rules and the loop alone."""

    name = "zchat :memory:"

    def history(self) -> str:
        return ":memory:"


class Proxy(Zchat):
    """libzmq's own zmq.proxy(PULL, PUB) in C: the limit for this architecture."""

    name = "libzmq proxy"
    CODE = (
        "import sys, zmq; c = zmq.Context(); a = c.socket(zmq.PULL); b = c.socket(zmq.PUB);"
        "a.bind(f'tcp://127.0.0.1:{sys.argv[1]}'); b.bind(f'tcp://127.0.0.1:{int(sys.argv[1])+1}');"
        "b.setsockopt(zmq.SNDHWM, 10000); print('ready', flush=True); zmq.proxy(a, b)"
    )

    def start(self) -> None:
        self.port = free_port_pair()
        self.server = subprocess.Popen(
            [sys.executable, "-c", self.CODE, str(self.port)], stdout=subprocess.PIPE, text=True
        )
        assert self.server.stdout is not None
        self.server.stdout.readline()
        self.pushes = []

    def stop(self) -> None:
        System.stop(self)

    def publisher(self, index: int, size: int) -> Publisher:
        push: zmq.Socket[bytes] = zmq.Context.instance().socket(zmq.PUSH)
        push.setsockopt(zmq.LINGER, 2000)
        push.connect(f"tcp://127.0.0.1:{self.port}")
        self.pushes.append(push)
        topic = p.room_topic(ROOM)

        def encode(text: str) -> list[bytes]:  # what zchat's broker would publish
            return p.encode_server(topic, p.Chat(ROOM, 1, TS, f"pub{index}", text))

        return Publisher(push.send_multipart, encode, index, size)

    def close_publishers(self) -> None:
        for push in self.pushes:
            push.close()

    def subscriber_args(self, count_only: bool) -> tuple[Callable[..., None], tuple[Any, ...]]:
        endpoint = f"tcp://127.0.0.1:{self.port + 1}"
        return zmq_subscriber, (endpoint, p.room_topic(ROOM), count_only)


class Classroom(System):
    name = "classroom TCP"

    def start(self) -> None:
        self.server = subprocess.Popen(
            [sys.executable, str(HERE / "classroom_server.py"), "0"],
            stdout=subprocess.PIPE,
            text=True,
        )
        assert self.server.stdout is not None
        self.port = int(self.server.stdout.readline().split()[-1])
        self.socks: list[socket.socket] = []

    def publisher(self, index: int, size: int) -> Publisher:
        sock = socket.create_connection(("127.0.0.1", self.port))
        sock.sendall(f"pub{index}\n".encode())
        sock.settimeout(5.0)  # a server stuck in its send loop stops taking lines: give up
        self.socks.append(sock)
        drain = threading.Thread(target=_discard, args=(sock,), daemon=True)
        drain.start()  # the server sends the publisher everything too: read it, as a client
        return Publisher(lambda frames: sock.sendall(frames[0]), _line, index, size)

    def close_publishers(self) -> None:
        for sock in self.socks:
            sock.close()

    def subscriber_args(self, count_only: bool) -> tuple[Callable[..., None], tuple[Any, ...]]:
        _decoding_only(self, count_only)
        return tcp_subscriber, (self.port,)


class Redis(System):
    name = "Redis pub/sub"

    @staticmethod
    def available() -> bool:
        try:
            import redis  # noqa: F401
        except ImportError:
            return False
        return shutil.which("redis-server") is not None

    def start(self) -> None:
        import redis

        self.port = free_port_pair()
        self.server = subprocess.Popen(
            ["redis-server", "--port", str(self.port), "--bind", "127.0.0.1", "--save", "",
             "--appendonly", "no"],
            stdout=subprocess.PIPE,
            text=True,
        )  # fmt: skip
        assert self.server.stdout is not None
        for line in self.server.stdout:
            if "Ready to accept connections" in line:
                break
        threading.Thread(target=self.server.stdout.read, daemon=True).start()
        redis.Redis(port=self.port).ping()
        self.conns: list[Any] = []

    def publisher(self, index: int, size: int) -> Publisher:
        import redis

        conn = redis.Redis(port=self.port)
        self.conns.append(conn)
        sender = f"pub{index}"

        def encode(text: str) -> list[bytes]:
            return [json.dumps({"sender": sender, "text": text}).encode()]

        return Publisher(lambda frames: conn.publish(ROOM, frames[0]), encode, index, size)

    def close_publishers(self) -> None:
        for conn in self.conns:
            conn.close()

    def subscriber_args(self, count_only: bool) -> tuple[Callable[..., None], tuple[Any, ...]]:
        _decoding_only(self, count_only)
        return redis_subscriber, (self.port,)


def _line(text: str) -> list[bytes]:
    return [text.encode() + b"\n"]


def _decoding_only(system: System, count_only: bool) -> None:
    if count_only:
        raise ValueError(f"{system.name}: counting subscribers are for the ZeroMQ systems")


def _discard(sock: socket.socket) -> None:
    try:
        while sock.recv(1 << 16):
            pass
    except OSError:
        pass


# --- subscriber workers for the non-ZeroMQ systems (run in their own processes) -----------

LINE = re.compile(rb"^\[(\d\d:\d\d:\d\d)\] ([^:]+): (.*)$")


def tcp_subscriber(port: int, sockets: int, *shared: Any) -> None:
    socks = []
    for i in range(sockets):
        sock = socket.socket()
        if sockets == 1:  # a stalled subscriber (bench.Bench gives each its own process):
            # a small buffer, so that the stall reaches the server within the run
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
        sock.connect(("127.0.0.1", port))
        sock.sendall(f"sub{os.getpid()}-{i}\n".encode())
        socks.append(sock)
    buffers = [b""] * sockets
    pending: list[list[int]] = [[] for _ in range(sockets)]

    def wait(ms: int) -> list[int]:
        readable, _, _ = select.select(socks, [], [], ms / 1000)
        for sock in readable:
            i = socks.index(sock)
            data = sock.recv(1 << 16)
            buffers[i] += data
            *lines, buffers[i] = buffers[i].split(b"\n")
            for line in lines:
                match = LINE.match(line)  # decode, as a client of this server must
                pending[i].append(stamp_of(match.group(3).decode()) if match else OTHER)
        return [i for i in range(sockets) if pending[i]]

    def receive(i: int) -> int | None:
        return pending[i].pop(0) if pending[i] else None

    *counting, results = shared
    results.put(run_subscriber(sockets, wait, receive, *counting))


def redis_subscriber(port: int, sockets: int, *shared: Any) -> None:
    import redis

    subs = []
    for _ in range(sockets):
        pubsub = redis.Redis(port=port).pubsub(ignore_subscribe_messages=True)
        pubsub.subscribe(ROOM)
        subs.append(pubsub)

    def wait(ms: int) -> list[int]:
        fds = {ps.connection._sock: i for i, ps in enumerate(subs)}
        readable, _, _ = select.select(list(fds), [], [], ms / 1000)
        return [fds[s] for s in readable]

    def receive(i: int) -> int | None:
        msg = subs[i].get_message(timeout=0)
        if msg is None:
            return None
        return stamp_of(str(json.loads(msg["data"])["text"]))

    *counting, results = shared
    results.put(run_subscriber(sockets, wait, receive, *counting))


SYSTEMS: list[type[System]] = [Zchat, Proxy, Classroom, Redis]  # the end-to-end runs
COUNTING_SYSTEMS: list[type[System]] = [ZchatInMemory, Zchat, Proxy]  # the broker alone
