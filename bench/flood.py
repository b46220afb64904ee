"""Does one flooding client slow everyone else down? Latency with and without a flood.

A probe client says a line every 20 ms and times its own echo (broker in, stamped,
stored, published, back). Three runs against a fresh broker each:

* quiet: the probe alone, with a listener in the room;
* flood, limited: a second client PUSHes lines as fast as it can, and the broker runs
  with its default flood limit (each session 20 lines a second, 50 at once);
* flood, unlimited: the same flood against a broker started with ``--rate 0``, to show
  what the limit saves the others from.

    python bench/flood.py            # writes nothing; prints a Markdown table
    python bench/flood.py --quick    # fewer samples (what the test suite runs)

Loopback only; every loop is bounded in count and time.
"""

from __future__ import annotations

import argparse
import multiprocessing as mp
import os
import statistics
import sys
import time
from dataclasses import dataclass

import zmq

from zchat import Client
from zchat import protocol as p
from zchat.bench import spawn_broker

ROOM = "flood"
PROBE_EVERY = 0.02  # seconds between probe lines
FLOOD_TEXT = "x" * 200


@dataclass(frozen=True)
class Reading:
    label: str
    samples: int
    p50_ms: float
    p99_ms: float
    flood_sent: int
    flood_published: int


def flooder(port: int, seconds: float, ready: mp.Event, stop: mp.Event, sent: mp.Value) -> None:
    """A joined client that PUSHes the same line as fast as its socket takes it. It
    runs at the lowest CPU priority: on a small machine it stands for a flooder on
    another machine, so that what is measured is the broker, not the CPU it shares."""
    os.nice(19)
    with Client("Flooder", port=port, rooms=[ROOM], history=0) as client:
        frames = p.encode_client(p.Say(client.core.secret, ROOM, FLOOD_TEXT, "f"))
        push = client._push
        client._sub.setsockopt(zmq.UNSUBSCRIBE, p.room_topic(ROOM))  # it never reads
        ready.set()
        end = time.monotonic() + seconds
        count = 0
        while not stop.is_set() and time.monotonic() < end:
            for _ in range(100):
                try:
                    push.send_multipart(frames, zmq.NOBLOCK)
                    count += 1
                except zmq.Again:
                    break
        sent.value = count


def probe(port: int, samples: int) -> tuple[list[float], int]:
    """Round trips of the probe's own lines, and how many flood lines it saw."""
    latencies: list[float] = []
    flood_seen = 0
    with Client("Probe", port=port, rooms=[ROOM], history=0) as client:
        for i in range(samples):
            sent_at = time.monotonic()
            id_ = client.send(f"probe {i}")
            deadline = sent_at + 5
            while time.monotonic() < deadline:
                msg = client.receive(timeout=deadline - time.monotonic())
                if msg is None:
                    break
                if msg.kind == "message" and msg.sender == "Flooder":
                    flood_seen += 1
                elif msg.kind == "message" and msg.id == id_:
                    latencies.append(time.monotonic() - sent_at)
                    break
            pause = PROBE_EVERY - (time.monotonic() - sent_at)
            if pause > 0:
                client.receive(timeout=pause)  # keep reading while waiting
    return latencies, flood_seen


def run(label: str, samples: int, flood: bool, limited: bool) -> Reading:
    broker, port = spawn_broker(limited=limited)
    ctx = mp.get_context("spawn")
    ready, stop, sent = ctx.Event(), ctx.Event(), ctx.Value("q", 0)
    worker = None
    try:
        if flood:
            seconds = samples * PROBE_EVERY * 3 + 10
            worker = ctx.Process(target=flooder, args=(port, seconds, ready, stop, sent))
            worker.start()
            if not ready.wait(30):
                raise RuntimeError("the flooder did not join")
        latencies, flood_seen = probe(port, samples)
    finally:
        stop.set()
        if worker is not None:
            worker.join(30)
        broker.terminate()
        broker.wait(10)
    ms = sorted(x * 1000 for x in latencies)
    p99 = ms[min(len(ms) - 1, int(len(ms) * 0.99))] if ms else float("nan")
    median = statistics.median(ms) if ms else float("nan")
    return Reading(label, len(ms), median, p99, sent.value, flood_seen)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="50 samples instead of 500")
    args = parser.parse_args()
    samples = 50 if args.quick else 500
    readings = [
        run("quiet", samples, flood=False, limited=True),
        run("flood, limited (default)", samples, flood=True, limited=True),
        run("flood, unlimited (--rate 0)", samples, flood=True, limited=False),
    ]
    quiet = readings[0].p50_ms
    print(
        "| run | probe p50 (ms) | probe p99 (ms) | p50 / quiet p50 "
        "| flood lines sent | flood lines the probe got |"
    )
    print("|---|---|---|---|---|---|")
    for r in readings:
        print(
            f"| {r.label} | {r.p50_ms:.2f} | {r.p99_ms:.2f} | {r.p50_ms / quiet:.2f} "
            f"| {r.flood_sent} | {r.flood_published} |"
        )
    sys.stdout.flush()


if __name__ == "__main__":
    main()
