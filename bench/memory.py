"""The broker's memory per session and per room: its RSS (from /proc) idle, then with
sessions joined, then with rooms entered, on one spawned broker (``--db :memory:``).

    python bench/memory.py [--sessions N] [--rooms-per-client K]

Sessions join from worker processes, with no history, into #general (above
``--quiet-joins``, as a big room runs). Then a few of them enter K rooms each that
nobody else is in: what one more room costs, members and subscriptions included.
Each figure is the growth divided by the count; Python's allocator and libzmq keep
memory in pools, so they are averages over many, not the cost of the first one.
Loopback only; bounded in clients and time.
"""

from __future__ import annotations

import argparse
import multiprocessing as mp
import sys
from pathlib import Path
from typing import Any

import zmq

sys.path.insert(0, str(Path(__file__).parent))
from systems import Zchat, proc_status

from zchat.client.sync import Client

WORKERS = 4
ROOM_CLIENTS = 20  # clients that enter the extra rooms


def hold(port: int, first: int, count: int, rooms: int, ready: Any, leave: Any) -> None:
    """One worker: join ``count`` clients; the first ROOM_CLIENTS of worker 0 enter
    ``rooms`` rooms each; say so; stay until told to leave."""
    ctx: zmq.Context[zmq.Socket[bytes]] = zmq.Context()
    ctx.set(zmq.MAX_SOCKETS, 4 * count + 10)
    clients = [Client(f"m{first + i}", port=port, history=0, context=ctx) for i in range(count)]
    for client in clients:
        client.join(timeout=30)
    ready.put("joined")
    if rooms:
        for n, client in enumerate(clients[:ROOM_CLIENTS]):
            for k in range(rooms):
                client.enter(f"r{first + n}-{k}", timeout=10)
        ready.put("entered")
    leave.wait(300)
    for client in clients:
        client.close()
    ctx.term()


def rss_mib(pid: int) -> float:
    return proc_status(pid, "VmRSS") / 1024


def measure(sessions: int, rooms_per_client: int) -> dict[str, float]:
    spawn = mp.get_context("spawn")
    broker = Zchat()
    broker.start()
    try:
        idle = rss_mib(broker.pid)
        ready, leave = spawn.Queue(), spawn.Event()
        share = sessions // WORKERS
        workers = [
            spawn.Process(
                target=hold,
                args=(broker.port, w * share, share, rooms_per_client if w == 0 else 0, ready,
                      leave),
            )
            for w in range(WORKERS)
        ]  # fmt: skip
        for worker in workers:
            worker.start()
        for _ in workers:
            ready.get(timeout=240)
        joined = rss_mib(broker.pid)
        ready.get(timeout=240)  # the rooms are entered
        entered = rss_mib(broker.pid)
        leave.set()
        for worker in workers:
            worker.join(60)
        rooms = min(ROOM_CLIENTS, share) * rooms_per_client
        return {
            "idle_mib": idle,
            "joined_mib": joined,
            "entered_mib": entered,
            "sessions": share * WORKERS,
            "rooms": rooms,
            "kib_per_session": (joined - idle) * 1024 / (share * WORKERS),
            "kib_per_room": (entered - joined) * 1024 / rooms,
        }
    finally:
        broker.stop()


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--sessions", type=int, default=2000)
    parser.add_argument("--rooms-per-client", type=int, default=31)
    args = parser.parse_args()
    found = measure(args.sessions, args.rooms_per_client)
    print(
        f"broker RSS: {found['idle_mib']:.1f} MiB idle, {found['joined_mib']:.1f} MiB with "
        f"{found['sessions']:,} sessions, {found['entered_mib']:.1f} MiB with "
        f"{found['rooms']:,} more rooms"
    )
    print(f"{found['kib_per_session']:.1f} KiB per session (its two connections included)")
    print(f"{found['kib_per_room']:.1f} KiB per room of one member")
    return 0


if __name__ == "__main__":
    sys.exit(main())
