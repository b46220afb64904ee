"""``zchat bench``: publishers and subscribers against a broker, with loss and latency.

Subscribers run in worker processes (so that decoding, which every real client must do,
is not squeezed through one interpreter) and decode every message with the protocol
module. Each text carries its publisher's send time (CLOCK_MONOTONIC, shared by every
process on the machine), so latency is measured end to end. Subscribers are plain SUB
sockets on the room: they do not join, and what the broker drops for them is counted
as lost, never filled in. Publishers are joined clients that PUSH pre-built frames
with blocking sends, so the broker sets the pace.
"""

from __future__ import annotations

import math
import multiprocessing as mp
import os
import queue
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from typing import Any, Protocol

import zmq

from zchat import protocol as p
from zchat.client.sync import Client
from zchat.errors import BrokerUnreachable, ConfigError

MAX_SAMPLES = 200_000  # latencies kept per worker; beyond that, every k-th is kept
WORKER_SOCKETS = 25  # SUB sockets per worker process
QUIET_SECONDS = 2.0  # after the last send, a subscriber that hears nothing this long stops
WARMUP_SECONDS = 15.0  # longest wait for every subscriber to be in place


@dataclass(frozen=True)
class BenchConfig:
    host: str = "127.0.0.1"
    port: int = 5005
    publishers: int = 1
    subscribers: int = 1
    messages: int = 10_000  # per publisher
    size: int = 100  # bytes of text
    rate: float = 0.0  # messages per second per publisher; 0: as fast as possible
    room: str = "bench"
    stalled: int = 0  # of the subscribers, how many are frozen (SIGSTOP) once warmed up
    deadline: float = 60.0  # seconds of sending at most, whatever the system does


@dataclass
class BenchResult:
    publishers: int
    subscribers: int
    size: int
    sent: int = 0
    expected: int = 0
    delivered: int = 0
    lost: int = 0
    send_seconds: float = 0.0
    seconds: float = 0.0  # from the first send to the last delivery
    sent_per_second: float = 0.0
    delivered_per_second: float = 0.0
    latency_ms: dict[str, float] = field(default_factory=dict)

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)

    def lines(self) -> list[str]:
        lat = self.latency_ms
        return [
            f"publishers {self.publishers}, subscribers {self.subscribers}, {self.size}-byte texts",
            f"sent       {self.sent:>12,} in {self.send_seconds:.2f} s "
            f"({self.sent_per_second:,.0f} msgs/s)",
            f"delivered  {self.delivered:>12,} of {self.expected:,} in {self.seconds:.2f} s "
            f"({self.delivered_per_second:,.0f} msgs/s)",
            f"lost       {self.lost:>12,} ({100 * self.lost / max(1, self.expected):.2f}%)",
            "latency    "
            + "  ".join(f"{k} {lat.get(k, math.nan):.3f} ms" for k in ("p50", "p90", "p99", "max")),
        ]


def bench_text(publisher: int, count: int, size: int) -> str:
    head = f"{publisher:03d} {count:09d} {time.monotonic_ns():020d} "
    return head + "x" * max(0, size - len(head))


def sent_ns(text: str) -> int:
    return int(text[14:34])


def percentiles(samples: list[float]) -> dict[str, float]:
    if not samples:
        return {}
    ordered = sorted(samples)

    def at(q: float) -> float:
        return ordered[min(len(ordered) - 1, int(q * len(ordered)))]

    return {"p50": at(0.50), "p90": at(0.90), "p99": at(0.99), "max": ordered[-1]}


# --- subscribers (in worker processes) ----------------------------------------------------


@dataclass
class WorkerReport:
    counts: list[int]
    latencies: list[float]
    last_ns: int


def zmq_subscriber(
    endpoint: str,
    topic: bytes,
    sockets: int,
    expected: int,
    ready: Any,
    finished: Any,
    progress: Any,
    results: Any,
) -> None:
    """One worker process: ``sockets`` SUB sockets, every message decoded. (Every worker
    takes its system's arguments, then these: the bench passes them in this order.)"""
    ctx = zmq.Context()
    subs = []
    for _ in range(sockets):
        sub = ctx.socket(zmq.SUB)
        sub.setsockopt(zmq.LINGER, 0)
        sub.setsockopt(zmq.RCVHWM, 0)  # like zchat's client: a slow reader queues, not drops
        sub.subscribe(topic)
        sub.connect(endpoint)
        subs.append(sub)

    def receive(index: int) -> str | None:
        try:
            frames = subs[index].recv_multipart(zmq.NOBLOCK)
        except zmq.Again:
            return None
        _, msg = p.decode_server(frames)
        return msg.text if isinstance(msg, p.Chat) else ""

    poller = zmq.Poller()
    for sub in subs:
        poller.register(sub, zmq.POLLIN)

    def wait(ms: int) -> list[int]:
        ready_socks = dict(poller.poll(ms))
        return [i for i, sub in enumerate(subs) if sub in ready_socks]

    results.put(run_subscriber(sockets, expected, wait, receive, ready, finished, progress))
    for sub in subs:
        sub.close()
    ctx.term()


def run_subscriber(
    sockets: int,
    expected: int,
    wait: Callable[[int], list[int]],
    receive: Callable[[int], str | None],
    ready: Any,
    finished: Any,
    progress: Any,
) -> WorkerReport:
    """The loop every kind of subscriber shares: count, time, report."""
    warm: set[int] = set()
    counts = [0] * sockets
    latencies: list[float] = []
    stride, seen, reported = 1, 0, 0
    last_heard = time.monotonic()
    last_ns = 0
    while True:
        for index in wait(100):
            while (text := receive(index)) is not None:
                if text.startswith("warmup"):
                    if index not in warm:
                        warm.add(index)
                        ready.release()
                    continue
                if not text:
                    continue
                last_ns = time.monotonic_ns()
                last_heard = time.monotonic()
                counts[index] += 1
                seen += 1
                if seen % stride == 0:
                    latencies.append((last_ns - sent_ns(text)) / 1e6)
                    if len(latencies) >= MAX_SAMPLES:
                        latencies, stride = latencies[::2], stride * 2
        if seen != reported:
            with progress.get_lock():
                progress.value += seen - reported
            reported = seen
        if all(count >= expected for count in counts):
            break
        if finished.is_set() and time.monotonic() - last_heard > QUIET_SECONDS:
            break
    return WorkerReport(counts, latencies, last_ns)


# --- the run ------------------------------------------------------------------------------


class Target(Protocol):
    """What a benchmark needs of a system: publishers, and how to start subscribers."""

    def publisher(self, index: int) -> Callable[[str], None]: ...

    def close_publishers(self) -> None: ...

    def subscriber_args(self) -> tuple[Callable[..., None], tuple[Any, ...]]: ...


class ZchatTarget:
    """A zchat broker: publishers are joined clients that PUSH pre-built frames with
    blocking sends (so the broker sets the pace); subscribers are SUB sockets."""

    def __init__(self, host: str, port: int, room: str) -> None:
        self.host, self.port, self.room = host, port, room
        self.clients: list[Client] = []
        self.pushes: list[zmq.Socket[bytes]] = []

    def publisher(self, index: int) -> Callable[[str], None]:
        name = f"bench{os.getpid() % 10000}-{index}"
        client = Client(name, self.host, self.port, [self.room], history=0)
        self.clients.append(client)
        client.join()
        push: zmq.Socket[bytes] = zmq.Context.instance().socket(zmq.PUSH)
        push.setsockopt(zmq.LINGER, 2000)
        push.connect(client.endpoints.push)
        self.pushes.append(push)
        secret, room = client.core.secret, self.room

        def send(text: str) -> None:
            push.send_multipart(p.encode_client(p.Say(secret, room, text)))

        return send

    def close_publishers(self) -> None:
        for push in self.pushes:
            push.close()
        for client in self.clients:
            client.close()

    def subscriber_args(self) -> tuple[Callable[..., None], tuple[Any, ...]]:
        host = f"[{self.host}]" if ":" in self.host else self.host
        return zmq_subscriber, (f"tcp://{host}:{self.port + 1}", p.room_topic(self.room))


class Bench:
    """Starts subscribers, makes publishers, warms up, measures, reports."""

    def __init__(
        self, config: BenchConfig, target: Target, out: Callable[[str], None] | None = None
    ) -> None:
        self.config = config
        self.target = target
        self.out = out or (lambda line: print(line, file=sys.stderr, flush=True))
        self._mp = mp.get_context("spawn")
        self.progress = self._mp.Value("q", 0)
        self.sent_by = [0] * config.publishers

    def run(self) -> BenchResult:
        cfg = self.config
        ready = self._mp.Semaphore(0)
        finished = self._mp.Event()
        results = self._mp.Queue()
        func, args = self.target.subscriber_args()
        shared = (ready, finished, self.progress, results)
        expected = cfg.publishers * cfg.messages
        live = cfg.subscribers - cfg.stalled
        # the stalled ones get processes of their own, so that freezing them freezes no other
        groups = [min(WORKER_SOCKETS, live - i) for i in range(0, live, WORKER_SOCKETS)]
        groups += [1] * cfg.stalled
        workers = []
        for count in groups:
            worker = self._mp.Process(
                target=func, args=(*args, count, expected, *shared), daemon=True
            )
            worker.start()
            workers.append(worker)
        frozen = workers[len(workers) - cfg.stalled :]
        try:
            senders = [self.target.publisher(i) for i in range(cfg.publishers)]
            self._warm_up(senders[0], ready)
            for worker in frozen:
                os.kill(worker.pid or 0, signal.SIGSTOP)
            return self._measure(senders, finished, results, len(workers) - len(frozen))
        finally:
            finished.set()
            for worker in frozen:
                worker.kill()
            self.target.close_publishers()
            for worker in workers:
                worker.join(5)
                if worker.is_alive():
                    worker.kill()

    def _warm_up(self, send: Callable[[str], None], ready: Any) -> None:
        """Until every subscriber has heard a warm-up line, its subscription may not be
        in place (the slow joiner): speak until all have."""
        waiting = self.config.subscribers
        end = time.monotonic() + WARMUP_SECONDS
        while waiting:
            send("warmup")
            while waiting and ready.acquire(timeout=0.05):
                waiting -= 1
            if time.monotonic() > end:
                raise BrokerUnreachable(f"{waiting} subscriber(s) never heard the broker")

    def _measure(
        self, senders: list[Callable[[str], None]], finished: Any, results: Any, workers: int
    ) -> BenchResult:
        cfg = self.config
        start_ns = time.monotonic_ns()
        stop_progress = threading.Event()
        ticker = threading.Thread(target=self._report_progress, args=(stop_progress,))
        ticker.start()
        threads = [
            threading.Thread(target=self._publish, args=(i, senders[i]))
            for i in range(cfg.publishers)
        ]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
        send_ns = time.monotonic_ns() - start_ns
        finished.set()
        reports: list[WorkerReport] = []
        for _ in range(workers):
            try:
                reports.append(results.get(timeout=120))
            except queue.Empty:
                break
        stop_progress.set()
        ticker.join()
        return self._result(reports, start_ns, send_ns)

    def _publish(self, index: int, send: Callable[[str], None]) -> None:
        cfg = self.config
        interval = 1.0 / cfg.rate if cfg.rate > 0 else 0.0
        pace = threading.Event()  # never set: its wait() is a pause that keeps the rate
        next_at = time.monotonic()
        stop_at = next_at + cfg.deadline
        for count in range(cfg.messages):
            if interval:
                delay = next_at - time.monotonic()
                if delay > 0:
                    pace.wait(delay)
                next_at += interval
            try:
                send(bench_text(index, count, cfg.size))
            except OSError as exc:  # a server that stopped taking lines (a stalled design)
                self.out(f"  publisher {index} stopped: {exc}")
                return
            self.sent_by[index] += 1
            if time.monotonic() > stop_at:
                self.out(f"  publisher {index} stopped at the {cfg.deadline:g} s deadline")
                return

    def _report_progress(self, stop: threading.Event) -> None:
        start = time.monotonic()
        while not stop.wait(1.0):
            elapsed = time.monotonic() - start
            delivered = self.progress.value
            self.out(
                f"  {elapsed:5.1f} s  sent {sum(self.sent_by):,}  delivered {delivered:,} "
                f"({delivered / elapsed:,.0f} msgs/s)"
            )

    def _result(self, reports: list[WorkerReport], start_ns: int, send_ns: int) -> BenchResult:
        cfg = self.config
        result = BenchResult(cfg.publishers, cfg.subscribers, cfg.size)
        result.sent = sum(self.sent_by)
        result.expected = result.sent * (cfg.subscribers - cfg.stalled)
        result.delivered = sum(sum(r.counts) for r in reports)
        result.lost = result.expected - result.delivered
        result.send_seconds = send_ns / 1e9
        last = max((r.last_ns for r in reports), default=start_ns)
        result.seconds = max(1e-9, (last - start_ns) / 1e9)
        result.sent_per_second = result.sent / max(1e-9, result.send_seconds)
        result.delivered_per_second = result.delivered / result.seconds
        result.latency_ms = percentiles([x for r in reports for x in r.latencies])
        return result


def spawn_broker(
    host: str = "127.0.0.1", db: str = ":memory:", limited: bool = False
) -> tuple[subprocess.Popen[str], int]:
    """A broker of our own on a free pair of ports (history in ``db``). Unless
    ``limited``, it has no rate limit: publishers here send far past what a person would."""
    argv = [sys.executable, "-m", "zchat", "broker", "--host", host, "--port", "0", "--db", db]
    if not limited:
        argv += ["--rate", "0"]
    proc = subprocess.Popen(argv, stderr=subprocess.PIPE, text=True, stdin=subprocess.DEVNULL)
    assert proc.stderr is not None
    for line in proc.stderr:
        if "listening: in tcp://" in line:
            port = int(line.split("listening: in tcp://", 1)[1].split()[0].rsplit(":", 1)[1])
            threading.Thread(target=proc.stderr.read, daemon=True).start()
            return proc, port
    raise ConfigError(f"the spawned broker did not start (exit code {proc.wait()})")
