"""Run every scenario against every system in one run, alternating them; print the two
tables and write docs/benchmarks.md and docs/benchmarks.png.

    python -m pip install -e '.[bench]' && python bench/run.py [--reps 3] [--quick]

Two kinds of run, one table each:

* **Broker alone** (counting subscribers, which read no JSON): zchat with ``--db
  :memory:``, zchat with its history in a file (WAL), and libzmq's ``zmq.proxy(PULL,
  PUB)``. Lines a second into one room with 1 subscriber and the publisher as fast as
  the broker takes them; the broker's CPU per line in that run; its CPU per delivered
  message at 2,000 lines/s to 100 subscribers; p99 latency at 1,000 lines/s to 100.
  The broker's CPU is read from /proc over runs long enough that its clock tick (10 ms)
  is under 2 % of the figure (a figure that is not is marked).
* **End to end** (decoding subscribers, as real clients): zchat as shipped, the proxy,
  the classroom server and Redis, 1 → 1, 10 and 100, a stalled reader, latency.

Each row says what limited it: a process busy all along, or the rate asked for. The
client decode micro-benchmark (bench/decode.py) runs too. ``--quick`` shortens the
end-to-end runs only (the broker-alone runs need their length for the CPU figures);
``--smoke`` shortens everything, to check that the harness works: its figures mean
nothing.

Every run's figures are kept in a JSON file as they come (``--raw``, in the temporary
folder by default); ``--report-from FILE`` writes the report from such a file again.

Only loopback traffic; every run is bounded in messages and time and stops by itself.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import multiprocessing as mp
import os
import statistics
import subprocess
import sys
import tempfile
import time
from collections import defaultdict
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import zmq
import zmq.asyncio

sys.path.insert(0, str(Path(__file__).resolve().parent))

from decode import decode_costs
from report import Report
from systems import COUNTING_SYSTEMS, SYSTEMS, Redis, System, Zchat, proc_status

from zchat.aio import AsyncClient
from zchat.bench import Bench, BenchConfig
from zchat.client.sync import Client

ROOT = Path(__file__).resolve().parent.parent
DOC = ROOT / "docs" / "benchmarks.md"
RAW = Path(tempfile.gettempdir()) / "zchat-bench-runs.json"


@dataclass(frozen=True)
class Scenario:
    key: str
    subscribers: int
    messages: int
    rate: float = 0.0  # lines a second; 0: as fast as the system takes them
    stalled: int = 0
    deadline: float = 20.0  # seconds of sending at most
    count_only: bool = False
    scaled: bool = True  # shortened by --quick


# The broker alone. The capacity run sends for its deadline: long enough that even the
# proxy, at about 1 µs a line, spends more than 0.5 s of CPU in it.
COUNTING = [
    Scenario("capacity", 1, 5_000_000, deadline=6.0, count_only=True, scaled=False),
    Scenario("fanout", 100, 10_000, rate=2000, count_only=True, scaled=False),
    Scenario("latency", 100, 5_000, rate=1000, count_only=True, scaled=False),
]
FANOUT = {1: 20_000, 10: 10_000, 100: 2_000}  # messages sent per run, by subscriber count
END_TO_END = [Scenario(f"fanout-{n}", n, messages) for n, messages in FANOUT.items()]
END_TO_END += [
    Scenario("stalled", 100, 20_000, stalled=1, scaled=False),  # the stall must bite
    Scenario("latency", 100, 3_000, rate=1000),
]
# More than zchat's per-subscriber queue (10,000) and, for the classroom server, more than
# the kernel's socket buffers hold (about 4 MB on loopback): the stall must bite.
STALL_MESSAGES = {"classroom TCP": 60_000}
JOINS = 2000  # clients joining at once
JOIN_LATENCY = 200  # joins in a row


def quiet(_: str) -> None:
    pass


def measure(system: System, scenario: Scenario) -> dict[str, Any]:
    system.start()
    try:
        config = BenchConfig(
            port=0, subscribers=scenario.subscribers, messages=scenario.messages,
            rate=scenario.rate, stalled=scenario.stalled, deadline=scenario.deadline,
            count_only=scenario.count_only,
        )  # fmt: skip
        result = Bench(config, system, out=quiet, broker_pid=system.pid).run()
    finally:
        system.stop()
    return result.as_dict()


def shortened(scenario: Scenario, name: str, args: argparse.Namespace) -> Scenario:
    """The scenario as this run makes it: --quick sends a tenth of the lines (of the
    runs it may shorten), --smoke a hundredth, for two seconds at most."""
    messages = STALL_MESSAGES.get(name, scenario.messages) if scenario.stalled else None
    messages = messages or scenario.messages
    if args.smoke:
        return replace(scenario, messages=max(300, messages // 100), deadline=2.0)
    if args.quick and scenario.scaled:
        return replace(scenario, messages=max(300, messages // 10))
    return replace(scenario, messages=messages)


def join_many(
    port: int, first: int, count: int, ready: Any, go: Any, joined: Any, leave: Any
) -> None:
    """One worker process: make ``count`` clients, say it is ready; on ``go`` start all
    their joins at once (asyncio: none waits for another), say when all are joined,
    stay until told to leave."""
    asyncio.run(_join_many(port, first, count, ready, go, joined, leave))


async def _join_many(
    port: int, first: int, count: int, ready: Any, go: Any, joined: Any, leave: Any
) -> None:
    ctx = zmq.asyncio.Context()
    # each client holds a PUSH, a SUB and a monitor (two PAIR sockets, libzmq's and ours)
    ctx.set(zmq.MAX_SOCKETS, 4 * count + 10)
    clients = [
        AsyncClient(f"c{first + i}", port=port, history=0, context=ctx) for i in range(count)
    ]
    ready.put(first)
    await asyncio.to_thread(go.wait, 120)
    await asyncio.gather(*(client.join(timeout=60) for client in clients))
    joined.put(time.monotonic())
    await asyncio.to_thread(leave.wait, 120)
    await asyncio.gather(*(client.close() for client in clients))
    ctx.term()


def joins_at_once(count: int, workers: int = 8) -> dict[str, Any]:
    """``count`` clients join #general at once, from ``workers`` processes started (and
    their clients made) beforehand: the time from the go to the last welcome."""
    spawn = mp.get_context("spawn")
    system = Zchat()
    system.start()
    try:
        pid = system.pid
        threads_before = proc_status(pid, "Threads")
        ready, go, joined, leave = spawn.Queue(), spawn.Event(), spawn.Queue(), spawn.Event()
        share = max(1, count // workers)
        procs = [
            spawn.Process(
                target=join_many, args=(system.port, w * share, share, ready, go, joined, leave)
            )
            for w in range(workers)
        ]
        for proc in procs:
            proc.start()
        for _ in procs:
            ready.get(timeout=120)
        start = time.monotonic()
        go.set()
        finished = [joined.get(timeout=120) for _ in procs]
        took = max(finished) - start
        rss, threads = proc_status(pid, "VmRSS") / 1024, proc_status(pid, "Threads")
        leave.set()
        for proc in procs:
            proc.join(30)
        return {
            "clients": share * workers,
            "seconds": took,
            "rss_mib": rss,
            "threads_before": threads_before,
            "threads_after": threads,
        }
    finally:
        system.stop()


def join_latency(count: int) -> dict[str, float]:
    system = Zchat()
    system.start()
    times = []
    try:
        ctx: zmq.Context[zmq.Socket[bytes]] = zmq.Context()
        for i in range(count):
            client = Client(f"j{i}", port=system.port, history=0, context=ctx)
            start = time.perf_counter()
            client.join()
            times.append((time.perf_counter() - start) * 1000)
            client.close()
        ctx.term()
    finally:
        system.stop()
    times.sort()
    p50, p99 = times[len(times) // 2], times[int(0.99 * len(times))]
    return {"count": count, "p50": p50, "p99": p99, "max": times[-1]}


def help_time(runs: int) -> float:
    took = []
    for _ in range(runs):
        start = time.perf_counter()
        subprocess.run([sys.executable, "-m", "zchat", "--help"], capture_output=True, check=True)
        took.append(time.perf_counter() - start)
    return statistics.median(took)


def load() -> str:
    return Path("/proc/loadavg").read_text().split()[0]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--reps", type=int, default=3, help="repetitions of each run")
    parser.add_argument("--quick", action="store_true", help="end-to-end runs a tenth as long")
    parser.add_argument(
        "--smoke", action="store_true", help="every run a few lines long: checks the harness"
    )
    parser.add_argument("--doc", type=Path, default=DOC, help="the report to write (and its .png)")
    parser.add_argument(
        "--raw", type=Path, default=RAW, help="where every run's figures are kept, as they come"
    )
    parser.add_argument(
        "--report-from", type=Path, help="write the report from the figures a run kept (--raw)"
    )
    args = parser.parse_args()
    if args.report_from:
        kept = json.loads(args.report_from.read_text())
        runs = defaultdict(
            list, {tuple(key.split("|")): rows for key, rows in kept["runs"].items()}
        )
        flags = argparse.Namespace(**kept["args"])
        report(runs, kept["extra"], kept["names"], kept["skipped"], flags, args.doc)
        return
    systems = [cls for cls in SYSTEMS if cls is not Redis or Redis.available()]
    skipped = [] if Redis in systems else ["Redis (redis-server or redis-py not installed)"]
    scale = 0.01 if args.smoke else 1.0  # of the joins
    load_before = load()
    commit = subprocess.run(
        ["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True, check=False
    ).stdout.strip()
    runs: dict[tuple[str, str], list[dict[str, Any]]] = defaultdict(list)
    names = [cls.name for cls in systems]

    def keep(extra: dict[str, Any] | None = None) -> None:
        flags = {"reps": args.reps, "quick": args.quick, "smoke": args.smoke}
        raw = {"runs": {"|".join(key): rows for key, rows in runs.items()}, "args": flags}
        raw |= {"names": names, "skipped": skipped, "extra": extra}
        args.raw.write_text(json.dumps(raw))

    for rep in range(args.reps):
        for scenario in COUNTING:  # systems alternated within each repetition
            for cls in COUNTING_SYSTEMS:
                row = measure(cls(), shortened(scenario, cls.name, args))
                runs[(f"count-{scenario.key}", cls.name)].append(row)
                print(
                    f"rep {rep + 1} counting {scenario.key:8} {cls.name:14} "
                    f"{row['delivered_per_second']:>10,.0f} msgs/s lost {row['lost']:,}, "
                    f"broker {row['broker_us_per_line']:.2f} µs/line, "
                    f"p99 {row['latency_ms'].get('p99', float('nan')):.2f} ms; "
                    f"limited by {row['limited_by']}",
                    flush=True,
                )
                keep()
        for scenario in END_TO_END:
            for cls in systems:
                row = measure(cls(), shortened(scenario, cls.name, args))
                runs[(scenario.key, cls.name)].append(row)
                print(
                    f"rep {rep + 1} decoding {scenario.key:10} {cls.name:14} "
                    f"{row['delivered_per_second']:>10,.0f} msgs/s lost {row['lost']:,}, "
                    f"p99 {row['latency_ms'].get('p99', float('nan')):.2f} ms; "
                    f"limited by {row['limited_by']}",
                    flush=True,
                )
                keep()
    extra = {
        "decode": decode_costs(20_000 if args.smoke else 200_000),
        "joins": joins_at_once(max(16, int(JOINS * scale))),
        "join_latency": join_latency(max(20, int(JOIN_LATENCY * scale))),
        "help_seconds": help_time(10),
        "load": (load_before, load()),
        "commit": commit or "?",
        "date": time.strftime("%Y-%m-%d"),
    }
    print(json.dumps(extra), flush=True)
    keep(extra)
    report(runs, extra, names, skipped, args, args.doc)


def report(
    runs: dict[tuple[str, str], list[dict[str, Any]]],
    extra: dict[str, Any],
    names: list[str],
    skipped: list[str],
    args: argparse.Namespace,
    doc: Path,
) -> None:
    """Print both tables; write the report and its chart."""
    written = Report(runs, extra, names, skipped, args)
    for line in written.tables():
        print(line)
    written.write(doc)
    print(f"wrote {doc}")


if __name__ == "__main__":
    with tempfile.TemporaryDirectory() as home:
        os.environ.setdefault("XDG_DATA_HOME", home)
        main()
