"""Client decode: µs per received room event, on each client's receive path.

    python bench/decode.py [--events N]

Pre-encoded ``message`` events of one room (100-byte texts, numbered in order, as the
broker publishes them) are handed in-process to:

* ``protocol.decode_server`` alone: the wire format's share;
* the blocking ``Client``: its SUB socket's drain (``Client._drain``, with the socket
  replaced by a list of the frames), which hands each frame to ``ClientCore.on_publish``
  (decode, checks, the room's sequence bookkeeping, the Message), then
  ``Client.receive()``;
* the asyncio ``AsyncClient``: ``ClientCore.on_publish``, as its pump calls it for each
  frame, then ``await AsyncClient.receive()``.

Nothing goes through a socket; what receiving the frames from libzmq costs (the same for
every design) is left out. Each figure is the median of ROUNDS rounds.
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import time
from collections.abc import Callable, Iterator
from datetime import UTC, datetime

import zmq

from zchat import protocol as p
from zchat.aio import AsyncClient
from zchat.client.core import ClientCore
from zchat.client.sync import Client

ROOM = "bench"
TEXT = "x" * 100
TS = datetime(2025, 1, 1, tzinfo=UTC)
BATCH = 256  # frames handed over between reads, as a busy SUB socket has them
ROUNDS = 3
WARMUP_EVENTS = 2_000
DECODE_ONLY = "protocol.decode_server alone"
BLOCKING = "blocking Client: drain + receive()"
ASYNCIO = "AsyncClient: on_publish + await receive()"
CLIENT_PATHS = (BLOCKING, ASYNCIO)


def room_events(count: int) -> list[list[bytes]]:
    topic = p.room_topic(ROOM)
    return [
        p.encode_server(topic, p.Chat(ROOM, seq, TS, "alice", TEXT, f"m{seq}"))
        for seq in range(1, count + 1)
    ]


def batches(frames: list[list[bytes]]) -> Iterator[list[list[bytes]]]:
    for start in range(0, len(frames), BATCH):
        yield frames[start : start + BATCH]


def welcomed(core: ClientCore) -> None:
    """Bring a new client's core to JOINED in ROOM, as a broker's WELCOME does."""
    core.start(time.monotonic(), 5.0)
    welcome = p.Welcome(core.name, "epoch", {ROOM: p.RoomState(0, ("alice", core.name))})
    core.on_publish(p.encode_server(p.inbox_topic(core.inbox), welcome), time.monotonic())
    if not core.joined:
        raise RuntimeError("the client did not take the WELCOME")
    core.events.clear()


class FrameList:
    """Stands in for a SUB socket: hands out the frames it holds, then zmq.Again."""

    def __init__(self) -> None:
        self.frames: list[list[bytes]] = []

    def recv_multipart(self, flags: int = 0) -> list[bytes]:
        if not self.frames:
            raise zmq.Again()
        return self.frames.pop()


def decode_only(frames: list[list[bytes]]) -> float:
    start = time.perf_counter()
    for one in frames:
        p.decode_server(one)
    return time.perf_counter() - start


def blocking(frames: list[list[bytes]]) -> float:
    client = Client("reader", rooms=[ROOM])
    socket, source = client._sub, FrameList()
    client._sub = source  # type: ignore[assignment]
    try:
        welcomed(client.core)
        for batch in batches(frames[:WARMUP_EVENTS]):
            source.frames = batch[::-1]
            client._drain()
            client.core.events.clear()
        start = time.perf_counter()
        for batch in batches(frames[WARMUP_EVENTS:]):
            source.frames = batch[::-1]
            client._drain()
            for _ in batch:
                client.receive()
        took = time.perf_counter() - start
        if client.core.views[ROOM].shown != len(frames):
            raise RuntimeError("the blocking client did not take every event")
        return took
    finally:
        client._sub = socket
        client._close_sockets()


def asynchronous(frames: list[list[bytes]]) -> float:
    async def run() -> float:
        client = AsyncClient("reader", rooms=[ROOM])
        core = client.core
        welcomed(core)
        for one in frames[:WARMUP_EVENTS]:
            core.on_publish(one, time.monotonic())
        core.events.clear()
        start = time.perf_counter()
        for batch in batches(frames[WARMUP_EVENTS:]):
            for one in batch:
                core.on_publish(one, time.monotonic())
            for _ in batch:
                await client.receive()
        took = time.perf_counter() - start
        client._close_sockets()
        if core.views[ROOM].shown != len(frames):
            raise RuntimeError("the asyncio client did not take every event")
        return took

    return asyncio.run(run())


def decode_costs(events: int = 100_000) -> dict[str, float]:
    """µs per room event on each path (the median of ROUNDS rounds of ``events``)."""
    frames = room_events(events + WARMUP_EVENTS)
    paths: dict[str, Callable[[list[list[bytes]]], float]] = {
        DECODE_ONLY: lambda f: decode_only(f[WARMUP_EVENTS:]),
        BLOCKING: blocking,
        ASYNCIO: asynchronous,
    }
    return {
        name: 1e6 * statistics.median(run(frames) for _ in range(ROUNDS)) / events
        for name, run in paths.items()
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--events", type=int, default=100_000, help="events per round")
    args = parser.parse_args()
    for name, us in decode_costs(args.events).items():
        print(f"{us:8.2f} µs per event  {name}")


if __name__ == "__main__":
    main()
