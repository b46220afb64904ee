"""Each hostile-client attack of tests/test_hostile.py, for longer, with numbers.

For every attack: a fresh `zchat broker` (default limits, history in a real file), a
quiet baseline (RSS, a legitimate client's p50 echo latency), then the attack from
127.0.0.2 for ``--seconds`` while a legitimate client joins once a second and the
broker's RSS is sampled every 100 ms; then the same measurements once it stopped.

    python bench/attack.py                 # 20 s per attack; prints a Markdown table
    python bench/attack.py --seconds 5 --only churn junk-rate
    python bench/attack.py --secure        # the attacker holds an admitted key

Loopback only; every loop is bounded in count and time.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import zmq

from zchat import Client
from zchat import protocol as p
from zchat.admin import default_path, request
from zchat.bench import spawn_broker
from zchat.broker.limits import DEFAULT_BURST, DEFAULT_RATE
from zchat.client.transport import Keys
from zchat.keys import keygen

ATTACKER = "127.0.0.2"
SAMPLE_SECONDS = 0.1
MAX_SENDS = 50_000_000  # a bound on any sending loop, whatever --seconds says
# Never set: its wait() paces a sender (zmq.select of no socket returns at once).
PAUSE = threading.Event()


class Broker:
    """`zchat broker` in a child process, on a free port pair."""

    def __init__(self, folder: Path, keys: Path | None) -> None:
        secure = ["--secure", "--keys", str(keys)] if keys else []
        self.log: list[str] = []
        extra = ["--db", str(folder / "history.db"), *secure]
        self.popen, self.port = spawn_broker(limited=True, extra=extra, log=self.log.append)

    def rss(self) -> int:
        for line in Path(f"/proc/{self.popen.pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) * 1024
        return 0

    def stats(self) -> dict[str, object]:
        return dict(request(default_path(self.port), "stats")["data"])

    def stop(self) -> None:
        self.popen.terminate()
        self.popen.wait(10)


class Run:
    """One attack against one broker: sockets, legitimate clients, measurements."""

    def __init__(self, broker: Broker, keys: Path | None) -> None:
        self.broker, self.keys = broker, keys
        self.ctx: zmq.Context[zmq.Socket[bytes]] = zmq.Context()
        self.sockets: list[zmq.Socket[bytes]] = []
        self.joined = 0

    def keys_of(self, name: str) -> Keys | None:
        if self.keys is None:
            return None
        return Keys.from_files(self.keys / "broker.key", self.keys.parent / f"{name}.key_secret")

    def name(self, name: str) -> str:
        return "Mallory" if self.keys else name

    def attacker(self, kind: int, offset: int, rcvhwm: int = 0) -> zmq.Socket[bytes]:
        sock = self.ctx.socket(kind)
        self.sockets.append(sock)
        keys = self.keys_of("Mallory")
        if keys is not None:
            keys.apply(sock)
        sock.setsockopt(zmq.LINGER, 0)
        sock.setsockopt(zmq.SNDHWM, 0)
        sock.setsockopt(zmq.RCVHWM, rcvhwm)
        sock.connect(f"tcp://{ATTACKER}:0;127.0.0.1:{self.broker.port + offset}")
        return sock

    def client(self, name: str) -> Client:
        return Client(name, port=self.broker.port, history=0, keys=self.keys_of(name))

    def close(self) -> None:
        for sock in self.sockets:
            sock.close(linger=0)
        self.ctx.term()


def send_all(sock: zmq.Socket[bytes], frames: Iterator[bytes], until: float) -> int:
    sent = 0
    for frame in frames:
        if sent % 1000 == 0 and time.monotonic() > until:
            break
        try:
            sock.send(frame, zmq.NOBLOCK)
        except zmq.Again:
            break
        sent += 1
    return sent


# --- the attacks: each runs until ``until`` and returns how many frames it sent ---------


def junk_backlog(run: Run, until: float) -> int:
    xsub = run.attacker(zmq.XSUB, 1)
    xsub.send(b"\x02")

    def pairs() -> Iterator[bytes]:
        for index in range(MAX_SENDS // 2):
            topic = b"room/junk%d/" % (index % 50)
            yield b"\x01" + topic
            yield b"\x00" + topic

    return 1 + send_all(xsub, pairs(), until)


def junk_rate(run: Run, until: float) -> int:
    sent = 0
    while time.monotonic() < until and sent < MAX_SENDS:
        xsub = run.attacker(zmq.XSUB, 1)  # a new connection each round, as if cut
        for _ in range(90):
            xsub.send(b"\x02junk")
        sent += 90
        PAUSE.wait(0.1)  # about 900 a second
    return sent


def inbox_flood(run: Run, until: float) -> int:
    xsub = run.attacker(zmq.XSUB, 1)
    topics = (b"\x01" + p.inbox_topic(f"{i:032x}") for i in range(MAX_SENDS))
    return send_all(xsub, topics, until)


def churn(run: Run, until: float) -> int:
    sub = run.attacker(zmq.SUB, 1)
    sent = 0
    while time.monotonic() < until and sent < MAX_SENDS:
        for _ in range(10_000):
            sub.subscribe(b"room/churn/")
            sub.unsubscribe(b"room/churn/")
        sent += 20_000
    return sent


def long_topics(run: Run, until: float) -> int:
    xsub = run.attacker(zmq.XSUB, 1)
    topics = (b"\x01room/%09d" % i + b"x" * 490 + b"/" for i in range(MAX_SENDS))
    return send_all(xsub, topics, until)


def join_flood(run: Run, until: float) -> int:
    push = run.attacker(zmq.PUSH, 0)
    since = {f"r{index}": index for index in range(2_000)}

    def joins() -> Iterator[bytes]:
        for index in range(MAX_SENDS):
            join = {"v": 1, "type": "join", "name": run.name(f"g{index}")}
            join |= {"secret": f"{index:032x}", "inbox": f"{index:032x}", "since": since}
            yield json.dumps(join).encode()

    return send_all(push, joins(), until)


def room_loop(run: Run, until: float) -> int:
    push = run.attacker(zmq.PUSH, 0)
    sub = run.attacker(zmq.SUB, 1)
    turns = 0
    while time.monotonic() < until and turns < MAX_SENDS:
        inbox, secret = f"{turns:032x}", f"{turns + 10**9:032x}"
        sub.subscribe(p.inbox_topic(inbox))
        rooms = tuple(f"r{turns}x{index}" for index in range(32))
        frames = [
            p.encode_client(p.Join(run.name(f"loop{turns}"), secret, inbox, rooms, 0))[0],
            p.encode_client(p.Leave(secret))[0],
        ]
        if send_all(push, iter(frames), until) < len(frames):
            break
        sub.poll(200)
        while sub.poll(0):
            sub.recv_multipart()
        sub.unsubscribe(p.inbox_topic(inbox))
        turns += 1
    return turns * 2


def fill_the_room(run: Run) -> None:
    """Bob says 300 lines of 4,096 control characters (12 kB each when stored) within
    the default flood limit: the burst at once, then the rate (about 13 s)."""
    with run.client("Bob") as bob:
        for index in range(300):
            if index >= DEFAULT_BURST:
                PAUSE.wait(1 / DEFAULT_RATE)
            bob.send("\x01" * 4096)
        if not bob.flush(30):
            raise SystemExit("the broker did not take Bob's lines:\n" + "".join(run.broker.log))


def non_reader(run: Run, until: float) -> int:
    push = run.attacker(zmq.PUSH, 0)
    sub = run.attacker(zmq.SUB, 1, rcvhwm=1)
    sub.setsockopt(zmq.RCVBUF, 4096)
    sub.setsockopt(zmq.HEARTBEAT_IVL, 200)
    inbox, secret = "ab" * 16, "cd" * 16
    sub.subscribe(p.inbox_topic(inbox))
    push.send(p.encode_client(p.Join(run.name("Mallory"), secret, inbox, ("general",), 0))[0])
    sub.poll(5000)
    asks = (p.GetHistory(secret, "general", 0, 0, 1000, f"h{i}") for i in range(MAX_SENDS))
    sent = 0
    for ask in asks:  # within the flood limit: what stops it must be the unread bound
        if time.monotonic() >= until:
            break
        sent += send_all(push, iter([p.encode_client(ask)[0]]), until)
        PAUSE.wait(1 / DEFAULT_RATE)
    return sent


# What an attack needs in place before its time starts.
SETUPS: dict[str, Callable[[Run], None]] = {"non-reader": fill_the_room}

ATTACKS: dict[str, Callable[[Run, float], int]] = {
    "junk-backlog": junk_backlog,
    "junk-rate": junk_rate,
    "inbox-flood": inbox_flood,
    "churn": churn,
    "long-topics": long_topics,
    "join-flood": join_flood,
    "room-loop": room_loop,
    "non-reader": non_reader,
}


def p50_latency(client: Client, lines: int = 20) -> float:
    times = []
    for index in range(lines):
        started = time.monotonic()
        sent = client.send(f"ping {index}")
        deadline = started + 5.0
        while time.monotonic() < deadline:
            msg = client.receive(timeout=deadline - time.monotonic())
            if msg is not None and msg.sender == client.name and msg.id == sent:
                break
        times.append(time.monotonic() - started)
    return statistics.median(times)


def measure(name: str, seconds: float, keys: Path | None, folder: Path) -> dict[str, object]:
    broker = Broker(folder, keys)
    run = Run(broker, keys)
    try:
        with run.client("Alice") as alice:
            quiet = p50_latency(alice)
            idle = broker.rss()
            peak, stop = idle, threading.Event()

            def sample() -> None:
                nonlocal peak
                while not stop.wait(SAMPLE_SECONDS):
                    peak = max(peak, broker.rss())

            sampler = threading.Thread(target=sample, daemon=True)
            sampler.start()
            joins: list[float] = []
            failed = 0

            def legitimate() -> None:
                nonlocal failed
                for index in range(int(seconds)):
                    started = time.monotonic()
                    try:
                        with run.client(f"Carol{index}"):
                            joins.append(time.monotonic() - started)
                    except Exception:
                        failed += 1
                    stop.wait(max(0.0, 1.0 - (time.monotonic() - started)))

            SETUPS.get(name, lambda run: None)(run)
            joiner = threading.Thread(target=legitimate, daemon=True)
            joiner.start()
            started = time.monotonic()
            sent = ATTACKS[name](run, started + seconds)
            attack_p50 = p50_latency(alice)
            joiner.join(seconds + 30)
            stop.set()
            sampler.join()
            stats = broker.stats()
            return {
                "attack": name,
                "sent": sent,
                "peak_mib": (peak - idle) / 2**20,
                "after_mib": (broker.rss() - idle) / 2**20,
                "joins": len(joins),
                "failed": failed,
                "slowest_join": max(joins, default=0.0),
                "quiet_ms": quiet * 1000,
                "attack_ms": attack_p50 * 1000,
                "cuts": stats.get("cuts", {}),
                "refused": stats.get("refused_handshakes", 0),
            }
    finally:
        run.close()
        broker.stop()


def make_keys(folder: Path) -> Path:
    keys = folder / "keys"
    keygen("broker", keys)
    (keys / "users").mkdir()
    for name in ("Alice", "Bob", "Mallory", *(f"Carol{n}" for n in range(120))):
        public, _ = keygen(name, folder)
        public.rename(keys / "users" / public.name)
    return keys


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--seconds", type=float, default=20.0, help="each attack's length")
    parser.add_argument("--only", nargs="*", choices=sorted(ATTACKS), help="these attacks")
    parser.add_argument("--secure", action="store_true", help="secure mode, an admitted key")
    args = parser.parse_args()
    rows = []
    for name in args.only or ATTACKS:
        with tempfile.TemporaryDirectory() as tmp:
            keys = make_keys(Path(tmp)) if args.secure else None
            row = measure(name, min(args.seconds, 120.0), keys, Path(tmp))
        rows.append(row)
        print(json.dumps(row), file=sys.stderr)
    print(
        "| attack | frames the attacker queued | peak RSS + | after + | joins (failed) "
        "| slowest join | p50 quiet → attack | cuts |"
    )
    print("|---|---|---|---|---|---|---|---|")
    for r in rows:
        print(
            f"| {r['attack']} | {r['sent']:,} | {r['peak_mib']:.1f} MiB | {r['after_mib']:.1f} MiB "
            f"| {r['joins']} ({r['failed']}) | {r['slowest_join']:.2f} s "
            f"| {r['quiet_ms']:.1f} → {r['attack_ms']:.1f} ms | {r['cuts']} |"
        )


if __name__ == "__main__":
    main()
