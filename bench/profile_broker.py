"""Where a zchat broker's time goes, per ``say`` line.

    python bench/profile_broker.py [--lines N] [--top K] [--seconds S]

Three views, each in µs per line:

1. **Stages**: each step a ``say`` goes through, timed alone with the broker's own
   functions and no profiler, beside ``BrokerRules.on_inbound`` whole (history in memory,
   and in a WAL file, committed every BATCH lines as the socket loop does).
2. **cProfile** of ``BrokerRules.on_inbound`` in-process, history in memory: the top
   functions by own time. cProfile adds its own cost to every call, so its figures are
   larger than the stages'; the order is what it tells.
3. **Through sockets**: a spawned broker (``--db :memory: --rate 0``) taking lines from a
   publisher as fast as it can, one counting subscriber. Its CPU per line (all threads,
   and its main thread alone) from /proc; if py-spy is installed, the main thread's
   samples per function (own time), turned into µs per line.

Only loopback traffic; every run is bounded in lines and time.
"""

from __future__ import annotations

import argparse
import cProfile
import os
import pstats
import shutil
import subprocess
import sys
import tempfile
import time
from collections import Counter
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path

import msgspec

from zchat import protocol as p
from zchat.bench import Bench, BenchConfig, ZchatTarget, cpu_seconds, spawn_broker
from zchat.broker.actions import checked_text
from zchat.broker.limits import RateLimit
from zchat.broker.rules import BrokerRules
from zchat.broker.store import HistoryStore

ROOM = "bench"
TEXT = "x" * 100
TS = datetime(2025, 1, 1, tzinfo=UTC)
BATCH = 256  # lines per commit, as the socket loop's batches when it is busy
SECRET, INBOX = "a" * 32, "b" * 32


def joined_rules(db: str) -> BrokerRules:
    """Rules with one session joined to ROOM, no flood limit, history in ``db``."""
    rules = BrokerRules("epoch", HistoryStore(db), limit=RateLimit(0))
    rules.on_subscription(b"\x01" + p.inbox_topic(INBOX), 0.0)
    rules.on_inbound(p.encode_client(p.Join("bench", SECRET, INBOX, (ROOM,))), "127.0.0.1", 0.0)
    rules.store.commit()
    if not rules.sessions:
        raise RuntimeError("the bench session did not join")
    return rules


def says(count: int) -> list[list[bytes]]:
    return [p.encode_client(p.Say(SECRET, ROOM, TEXT, f"m{i}")) for i in range(count)]


def per_line(run: Callable[[], object], lines: int, rounds: int = 3) -> float:
    """µs per line of ``run`` (which handles ``lines`` lines): the best of ``rounds``."""
    took = []
    for _ in range(rounds):
        start = time.perf_counter()
        run()
        took.append(time.perf_counter() - start)
    return 1e6 * min(took) / lines


def on_inbound_cost(db: str, lines: int) -> float:
    rules = joined_rules(db)
    frames = says(lines)

    def run() -> None:
        for i, one in enumerate(frames):
            rules.on_inbound(one, None, 1.0)
            if i % BATCH == BATCH - 1:
                rules.store.commit()
        rules.store.commit()

    try:
        return per_line(run, lines)
    finally:
        rules.store.close()


def store_cost(db: str, lines: int) -> float:
    store = HistoryStore(db)
    seq = iter(range(1, 1 << 40))

    def run() -> None:
        for i in range(lines):
            store.append(p.Chat(ROOM, next(seq), TS, "bench", TEXT, f"m{i}"), "")
            if i % BATCH == BATCH - 1:
                store.commit()
        store.commit()

    try:
        return per_line(run, lines)
    finally:
        store.close()


def stages(lines: int, folder: Path) -> dict[str, float]:
    frame = says(1)[0]
    event = p.Chat(ROOM, 0, TS, "bench", TEXT, "m1")
    numbered = msgspec.structs.replace(event, seq=7)
    topic = p.room_topic(ROOM)
    wal = str(folder / "stages.db")

    def times(step: Callable[[], object]) -> Callable[[], None]:
        def run() -> None:
            for _ in range(lines):
                step()

        return run

    return {
        "protocol.decode_client (JSON in, fields checked)": per_line(
            times(lambda: p.decode_client(frame)), lines
        ),
        "text checks (check_text, clean_text)": per_line(times(lambda: checked_text(TEXT)), lines),
        "clock() (datetime.now)": per_line(times(lambda: datetime.now(UTC)), lines),
        "numbering (msgspec.structs.replace)": per_line(
            times(lambda: msgspec.structs.replace(event, seq=7)), lines
        ),
        "JSON out, once for the store and the subscribers (encode_event)": per_line(
            times(lambda: [topic, p.encode_event(numbered)]), lines
        ),
        "store.append + commit every 256, :memory:": store_cost(":memory:", lines),
        "store.append + commit every 256, WAL file": store_cost(str(folder / "store.db"), lines),
        "BrokerRules.on_inbound whole, :memory:": on_inbound_cost(":memory:", lines),
        "BrokerRules.on_inbound whole, WAL file": on_inbound_cost(wal, lines),
    }


def rules_profile(lines: int, top: int) -> list[tuple[str, int, float, float]]:
    """(function, calls, own µs per line, cumulative µs per line), by own time."""
    rules = joined_rules(":memory:")
    frames = says(lines)
    profile = cProfile.Profile()
    profile.enable()
    for i, one in enumerate(frames):
        rules.on_inbound(one, None, 1.0)
        if i % BATCH == BATCH - 1:
            rules.store.commit()
    profile.disable()
    rules.store.close()
    stats = pstats.Stats(profile).stats  # type: ignore[attr-defined]
    rows = [
        (where(key), calls, 1e6 * own / lines, 1e6 * cumulative / lines)
        for key, (_, calls, own, cumulative, _) in stats.items()
    ]
    return sorted(rows, key=lambda row: -row[2])[:top]


def where(key: tuple[str, int, str]) -> str:
    filename, line, function = key
    if filename == "~":
        return function
    path = Path(filename)
    short = "/".join(path.parts[-2:]) if "zchat" in path.parts else path.name
    return f"{function} ({short}:{line})"


def thread_cpu_seconds(pid: int, tid: int) -> float:
    fields = Path(f"/proc/{pid}/task/{tid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def through_sockets(seconds: float, top: int) -> dict[str, object]:
    """A spawned broker under load; py-spy samples it if it is installed."""
    broker, port = spawn_broker()
    spy = shutil.which("py-spy")
    out = Path(tempfile.mkdtemp(prefix="zchat-profile-")) / "stacks.txt"
    sampler = None
    try:
        config = BenchConfig(
            port=port, subscribers=1, messages=10_000_000, deadline=seconds, count_only=True
        )
        target = ZchatTarget("127.0.0.1", port, ROOM)
        bench = Bench(config, target, out=lambda _: None)
        main_before = thread_cpu_seconds(broker.pid, broker.pid)
        all_before = cpu_seconds(broker.pid)
        if spy:
            argv = [spy, "record", "--pid", str(broker.pid), "--format", "raw", "--rate", "500"]
            argv += [
                "--nonblocking",
                "--function",
                "--duration",
                str(int(seconds) + 1),
                "--output",
                str(out),
            ]
            sampler = subprocess.Popen(argv, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        result = bench.run()
        main = thread_cpu_seconds(broker.pid, broker.pid) - main_before
        everything = cpu_seconds(broker.pid) - all_before
    finally:
        if sampler is not None:
            sampler.wait(seconds + 30)
        broker.terminate()
        broker.wait(10)
    lines = max(1, result.sent)
    report: dict[str, object] = {
        "lines": result.sent,
        "lines_per_second": result.delivered_per_second,
        "broker_us_per_line": 1e6 * everything / lines,
        "main_thread_us_per_line": 1e6 * main / lines,
        "samples": [],
    }
    if sampler is not None and out.exists():
        report["samples"] = sampled(out, 1e6 * main / lines, top)
    shutil.rmtree(out.parent, ignore_errors=True)
    return report


def sampled(stacks: Path, us_per_line: float, top: int) -> list[tuple[str, float, float]]:
    """(function, own µs per line, inclusive µs per line) from py-spy's raw stacks, in
    proportion to their samples (busy ones only: the broker's other Python thread, the
    handshake checker, waits in a poll all along)."""
    own: Counter[str] = Counter()
    inclusive: Counter[str] = Counter()
    total = 0
    for line in stacks.read_text().splitlines():
        stack, _, count = line.rpartition(" ")
        frames = stack.split(";")
        n = int(count)
        total += n
        own[frames[-1]] += n
        for frame in set(frames):
            inclusive[frame] += n
    scale = us_per_line / max(1, total)
    return [(frame, n * scale, inclusive[frame] * scale) for frame, n in own.most_common(top)]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--lines", type=int, default=20_000, help="lines per in-process run")
    parser.add_argument("--top", type=int, default=15, help="functions shown per profile")
    parser.add_argument("--seconds", type=float, default=8.0, help="of the socket run")
    args = parser.parse_args()
    folder = Path(tempfile.mkdtemp(prefix="zchat-profile-"))
    try:
        print("1. Stages of a `say`, each alone (µs per line, best of 3)")
        for stage, us in stages(args.lines, folder).items():
            print(f"{us:9.2f}  {stage}")
    finally:
        shutil.rmtree(folder, ignore_errors=True)
    print(f"\n2. cProfile of BrokerRules.on_inbound, :memory:, {args.lines:,} lines")
    print("  own µs/line  cum µs/line     calls  function")
    for function, calls, own, cumulative in rules_profile(args.lines, args.top):
        print(f"{own:13.2f} {cumulative:12.2f} {calls:9,}  {function}")
    print(f"\n3. Through sockets: spawned broker --db :memory: --rate 0, {args.seconds:g} s")
    report = through_sockets(args.seconds, args.top)
    print(
        f"{report['lines']:,} lines, {report['lines_per_second']:,.0f} lines/s; broker CPU "
        f"{report['broker_us_per_line']:.1f} µs per line, main thread "
        f"{report['main_thread_us_per_line']:.1f} µs"
    )
    samples = report["samples"]
    assert isinstance(samples, list)
    if not samples:
        print("(py-spy is not installed: pip install py-spy, for the main thread's functions)")
    else:
        print("  own µs/line  incl µs/line  function (py-spy samples of the main thread)")
        for frame, own, inclusive in samples:
            print(f"{own:13.2f} {inclusive:13.2f}  {frame}")


if __name__ == "__main__":
    sys.exit(main())
