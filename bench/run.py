"""Run every scenario against every system in one run, alternating them, and write
docs/benchmarks.md and docs/benchmarks.png.

    python -m pip install -e '.[bench]' && python bench/run.py [--reps 3] [--quick]

Only loopback traffic; every run is bounded in messages and time and stops by itself.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import time
from collections import defaultdict
from collections.abc import Callable
from pathlib import Path
from typing import Any

import zmq

sys.path.insert(0, str(Path(__file__).resolve().parent))

from systems import SYSTEMS, Redis, System, Zchat, cpu_seconds, proc_status

from zchat.bench import Bench, BenchConfig, BenchResult
from zchat.client.sync import Client

ROOT = Path(__file__).resolve().parent.parent
DOC = ROOT / "docs" / "benchmarks.md"
CHART = ROOT / "docs" / "benchmarks.png"
FANOUT = {1: 20_000, 10: 10_000, 100: 2_000}  # messages sent per run, by subscriber count
# More than zchat's per-subscriber queue (10,000) and, for the classroom server, more than
# the kernel's socket buffers hold (about 4 MB on loopback): the stall must bite.
STALL_MESSAGES = {"classroom TCP": 60_000}


def quiet(_: str) -> None:
    pass


def measure(
    system: System, subscribers: int, messages: int, rate: float = 0.0, stalled: int = 0
) -> dict[str, Any]:
    system.start()
    try:
        before = cpu_seconds(system.pid)
        config = BenchConfig(
            port=0, subscribers=subscribers, messages=messages, rate=rate, stalled=stalled,
            deadline=20.0,
        )  # fmt: skip
        result: BenchResult = Bench(config, system, out=quiet).run()
        cpu = cpu_seconds(system.pid) - before
    finally:
        system.stop()
    row = result.as_dict()
    row["cpu_us_per_delivered"] = 1e6 * cpu / max(1, result.delivered)
    return row


def join_many(port: int, first: int, count: int, joined: Any, leave: Any) -> None:
    """One worker process: join ``count`` clients, say so, stay until told to leave."""
    ctx: zmq.Context[zmq.Socket[bytes]] = zmq.Context()
    ctx.set(zmq.MAX_SOCKETS, 3 * count + 10)
    clients = [Client(f"c{first + i}", port=port, history=0, context=ctx) for i in range(count)]
    for client in clients:
        client.join(timeout=30)
    joined.put(time.monotonic())
    leave.wait(120)
    for client in clients:
        client.close()
    ctx.term()


def joins_at_once(count: int, workers: int = 8) -> dict[str, Any]:
    import multiprocessing as mp

    spawn = mp.get_context("spawn")
    system = Zchat()
    system.start()
    try:
        pid = system.pid
        threads_before = proc_status(pid, "Threads")
        joined, leave = spawn.Queue(), spawn.Event()
        share = count // workers
        procs = [
            spawn.Process(target=join_many, args=(system.port, w * share, share, joined, leave))
            for w in range(workers)
        ]
        start = time.monotonic()
        for proc in procs:
            proc.start()
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
    return {"p50": times[len(times) // 2], "p99": times[int(0.99 * len(times))], "max": times[-1]}


def help_time(runs: int) -> float:
    took = []
    for _ in range(runs):
        start = time.perf_counter()
        subprocess.run([sys.executable, "-m", "zchat", "--help"], capture_output=True, check=True)
        took.append(time.perf_counter() - start)
    return statistics.median(took)


def summary(values: list[float]) -> tuple[float, float, float]:
    return statistics.median(values), min(values), max(values)


def fmt(values: list[float], digits: int = 0) -> str:
    med, low, high = summary(values)
    return f"{med:,.{digits}f} ({low:,.{digits}f}–{high:,.{digits}f})"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--reps", type=int, default=3, help="repetitions of each run")
    parser.add_argument("--quick", action="store_true", help="a tenth of the messages")
    args = parser.parse_args()
    systems = [cls for cls in SYSTEMS if cls is not Redis or Redis.available()]
    skipped = [] if Redis in systems else ["Redis (redis-server or redis-py not installed)"]
    scale = 0.1 if args.quick else 1.0
    runs: dict[tuple[str, str], list[dict[str, Any]]] = defaultdict(list)
    for rep in range(args.reps):
        for subscribers, messages in FANOUT.items():
            for cls in systems:  # alternated within each repetition
                row = measure(cls(), subscribers, max(100, int(messages * scale)))
                runs[(f"fanout-{subscribers}", cls.name)].append(row)
                print(f"rep {rep + 1} {cls.name:14} 1->{subscribers:<3} "
                      f"{row['delivered_per_second']:>10,.0f} msgs/s lost {row['lost']}", flush=True)  # fmt: skip
        for cls in systems:
            row = measure(cls(), 100, STALL_MESSAGES.get(cls.name, 20_000), stalled=1)
            runs[("stalled", cls.name)].append(row)
            print(
                f"rep {rep + 1} {cls.name:14} stalled 1 of 100: {row['delivered_per_second']:,.0f} msgs/s to the 99, sent {row['sent']}",
                flush=True,
            )
        for cls in systems:
            row = measure(cls(), 100, max(300, int(3000 * scale)), rate=1000)
            runs[("latency", cls.name)].append(row)
            print(
                f"rep {rep + 1} {cls.name:14} latency p99 {row['latency_ms'].get('p99')}",
                flush=True,
            )
    extra = {
        "joins": joins_at_once(2000),
        "join_latency": join_latency(200),
        "help_seconds": help_time(10),
    }
    print(json.dumps(extra), flush=True)
    write_doc(runs, extra, [cls.name for cls in systems], skipped, args)


def write_doc(
    runs: dict[tuple[str, str], list[dict[str, Any]]],
    extra: dict[str, Any],
    names: list[str],
    skipped: list[str],
    args: argparse.Namespace,
) -> None:
    def col(
        key: str, field: str, digits: int = 0, fn: Callable[[dict[str, Any]], float] | None = None
    ) -> list[str]:
        return [fmt([fn(r) if fn else r[field] for r in runs[(key, n)]], digits) for n in names]

    def median(key: str, name: str, field: str) -> float:
        return statistics.median(r[field] for r in runs[(key, name)])

    info = Path("/proc/cpuinfo").read_text()
    cpu = info.split("model name")[1].split("\n")[0].strip(": \t")
    lines = [
        "# Benchmarks",
        "",
        "zchat's broker against the physical limit of its architecture (libzmq's own",
        "`zmq.proxy(PULL, PUB)` in C, same clients), the classroom design it replaces (a",
        "threaded TCP server that loops `send` over its client list, `bench/classroom_server.py`)",
        "and Redis pub/sub. Every subscriber decodes every message, as a real client must;",
        "loss is reported next to every throughput.",
        "",
        f"Machine: {os.cpu_count()} cores ({cpu}), Python {platform.python_version()}, "
        f"pyzmq {zmq.__version__}, libzmq {zmq.zmq_version()}, {platform.platform()}.",
        f"Command: `python bench/run.py --reps {args.reps}{' --quick' if args.quick else ''}` "
        f"({time.strftime('%Y-%m-%d')}). Median (min–max) of {args.reps} runs, systems alternated.",
        "",
    ]
    if skipped:
        lines += [f"Not measured: {', '.join(skipped)}.", ""]
    lines += ["## Throughput: 1 publisher → N subscribers, 100-byte texts", ""]
    lines += [
        "| system | "
        + " | ".join(f"1 → {n} msgs/s delivered" for n in FANOUT)
        + " | lost (of all runs) |"
    ]
    lines += ["|---" * (len(FANOUT) + 2) + "|"]
    for i, name in enumerate(names):
        cells = [col(f"fanout-{n}", "delivered_per_second")[i] for n in FANOUT]
        lost = sum(r["lost"] for n in FANOUT for r in runs[(f"fanout-{n}", name)])
        lines.append(f"| {name} | " + " | ".join(cells) + f" | {lost:,} |")
    lines += ["", "## Broker CPU per delivered message (µs), 1 → 100", ""]
    lines += ["| system | µs of server CPU per delivered message |", "|---|---|"]
    for i, name in enumerate(names):
        lines.append(f"| {name} | {col('fanout-100', 'cpu_us_per_delivered', 2)[i]} |")
    lines += ["", "## One subscriber of 100 stalled (SIGSTOP once warmed up)", ""]
    lines += [
        "| system | msgs/s to the 99 others | of its unstalled 1 → 100 | lines sent (of all asked) |",
        "|---|---|---|---|",
    ]
    for name in names:
        stalled = statistics.median(r["delivered_per_second"] for r in runs[("stalled", name)])
        free = median("fanout-100", name, "delivered_per_second")
        sent = sum(r["sent"] for r in runs[("stalled", name)])
        lines.append(
            f"| {name} | {col('stalled', 'delivered_per_second')[names.index(name)]} | {stalled / free:.2f}× | {sent:,} |"
        )
    lines += ["", "## Latency at 1,000 msgs/s, 100 subscribers (end to end, ms)", ""]
    lines += ["| system | p50 | p99 | max | lost |", "|---|---|---|---|---|"]
    for name in names:
        rs = runs[("latency", name)]
        cells = [
            fmt([r["latency_ms"].get(k, float("nan")) for r in rs], 2)
            for k in ("p50", "p99", "max")
        ]
        lines.append(f"| {name} | " + " | ".join(cells) + f" | {sum(r['lost'] for r in rs):,} |")
    joins, jl = extra["joins"], extra["join_latency"]
    lines += [
        "",
        "## zchat alone",
        "",
        f"- 2,000 clients joining at once: all joined in {joins['seconds']:.2f} s; broker RSS "
        f"{joins['rss_mib']:.0f} MiB; broker threads {joins['threads_before']} before, "
        f"{joins['threads_after']} with 2,000 joined.",
        f"- `join()` on an idle broker, 200 in a row: p50 {jl['p50']:.2f} ms, p99 {jl['p99']:.2f} ms, "
        f"max {jl['max']:.2f} ms.",
        f"- `zchat --help`: {extra['help_seconds']:.3f} s (median of 10).",
        "",
        "## Targets",
        "",
    ]
    z = "zchat"
    proxy = "libzmq proxy"
    classroom = "classroom TCP"
    checks = [
        ("zchat ≥ 0.5× proxy at 100 subscribers", median("fanout-100", z, "delivered_per_second") / median("fanout-100", proxy, "delivered_per_second"), 0.5),
        ("zchat ≥ 0.25× proxy at 1 subscriber", median("fanout-1", z, "delivered_per_second") / median("fanout-1", proxy, "delivered_per_second"), 0.25),
        ("zchat ≥ 5× classroom at 10 subscribers", median("fanout-10", z, "delivered_per_second") / median("fanout-10", classroom, "delivered_per_second"), 5),
        ("zchat ≥ 5× classroom at 100 subscribers", median("fanout-100", z, "delivered_per_second") / median("fanout-100", classroom, "delivered_per_second"), 5),
        ("zchat CPU ≤ 2× proxy per delivered message at 100", median("fanout-100", proxy, "cpu_us_per_delivered") / max(1e-9, median("fanout-100", z, "cpu_us_per_delivered")), 0.5),
    ]  # fmt: skip
    lines += ["| target | measured ratio | met |", "|---|---|---|"]
    for label, ratio, need in checks:
        lines.append(
            f"| {label} | {ratio:.2f} (need {need}) | {'yes' if ratio >= need else 'no'} |"
        )
    stall = statistics.median(r["delivered_per_second"] for r in runs[("stalled", z)]) / median(
        "fanout-100", z, "delivered_per_second"
    )
    lines.append(
        f"| zchat: 99 others keep ≥ 0.9× with 1 of 100 stalled | {stall:.2f} | {'yes' if stall >= 0.9 else 'no'} |"
    )
    p99 = statistics.median(r["latency_ms"].get("p99", 1e9) for r in runs[("latency", z)])
    lines.append(
        f"| latency p99 ≤ 2 ms at 1,000 msgs/s, 100 subscribers | {p99:.2f} ms | {'yes' if p99 <= 2 else 'no'} |"
    )
    lines.append(
        f"| 2,000 joins within 10 s | {joins['seconds']:.2f} s | {'yes' if joins['seconds'] <= 10 else 'no'} |"
    )
    lines.append(
        f"| broker RSS ≤ 150 MiB with 2,000 joined | {joins['rss_mib']:.0f} MiB | {'yes' if joins['rss_mib'] <= 150 else 'no'} |"
    )
    lines.append(
        f"| broker thread count constant | {joins['threads_before']} → {joins['threads_after']} | {'yes' if joins['threads_before'] == joins['threads_after'] else 'no'} |"
    )
    lines.append(
        f"| `join()` p99 ≤ 20 ms | {jl['p99']:.2f} ms | {'yes' if jl['p99'] <= 20 else 'no'} |"
    )
    lines.append(
        f"| `zchat --help` ≤ 0.3 s | {extra['help_seconds']:.3f} s | {'yes' if extra['help_seconds'] <= 0.3 else 'no'} |"
    )
    lines += ["", *kept_analysis(), "![throughput chart](benchmarks.png)", ""]
    DOC.write_text("\n".join(lines) + "\n", encoding="utf-8")
    draw(runs, names)
    print(f"wrote {DOC} and {CHART}")


def kept_analysis() -> list[str]:
    """The hand-written "Reading the numbers" section of the previous report, kept."""
    if not DOC.exists():
        return []
    text = DOC.read_text(encoding="utf-8")
    start, end = text.find("## Reading the numbers"), text.find("![throughput chart]")
    return [*text[start:end].rstrip().splitlines(), ""] if 0 <= start < end else []


def draw(runs: dict[tuple[str, str], list[dict[str, Any]]], names: list[str]) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(8, 4.5))
    width = 0.8 / len(names)
    for i, name in enumerate(names):
        values = [
            statistics.median(r["delivered_per_second"] for r in runs[(f"fanout-{n}", name)])
            for n in FANOUT
        ]
        xs = [x + i * width for x in range(len(FANOUT))]
        ax.bar(xs, values, width, label=name)
    ax.set_xticks([x + width * (len(names) - 1) / 2 for x in range(len(FANOUT))])
    ax.set_xticklabels([f"1 → {n}" for n in FANOUT])
    ax.set_yscale("log")
    ax.set_ylabel("messages delivered per second (log)")
    ax.set_title("Fan-out throughput, 100-byte texts, every message decoded")
    ax.legend()
    fig.tight_layout()
    fig.savefig(CHART, dpi=100)


if __name__ == "__main__":
    with tempfile.TemporaryDirectory() as home:
        os.environ.setdefault("XDG_DATA_HOME", home)
        main()
