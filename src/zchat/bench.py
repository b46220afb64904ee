"""``zchat bench``: publishers and subscribers against a broker, with loss and latency.

Subscribers run in worker processes (so that reading, which every real client must do,
is not squeezed through one interpreter). They come in two kinds:

* decoding subscribers decode every message with the protocol module, as a real client
  must: what they measure is the whole chain, readers included;
* counting subscribers (``count_only``) count frames and read each line's send time with
  one regular expression, without decoding it: their reading costs little, so what
  they measure is the broker.

Each line carries its publisher's send time (CLOCK_MONOTONIC, shared by every process on
the machine), so latency is measured end to end. Subscribers are plain SUB sockets on the
room: they do not join, and what the broker drops for them is counted as lost, never
filled in. A publisher's frames are encoded once; each send only puts the time in them,
so a publisher costs little more than its socket. Publishers to a zchat broker are
joined clients that PUSH with blocking sends, so the broker sets the pace.

Given the broker's process id, a run reads its CPU time from /proc over the sending and
the delivery: CPU per line, per delivered message, and how busy the broker was. With
each worker's CPU and the publishers', a result says what limited it.
"""

from __future__ import annotations

import math
import multiprocessing as mp
import os
import queue
import re
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Protocol

import zmq

from zchat import protocol as p
from zchat.client.sync import Client
from zchat.errors import BrokerUnreachable, ConfigError

MAX_SAMPLES = 200_000  # latencies kept per worker; beyond that, every k-th is kept
WORKER_SOCKETS = 25  # SUB sockets per worker process
QUIET_SECONDS = 2.0  # after the last send, a subscriber that hears nothing this long stops
WARMUP_SECONDS = 15.0  # longest wait for every subscriber to be in place
# A process this busy (of one core) over a run is what limited it.
BUSY = 0.85
# A line's text: its send time in nanoseconds, its publisher, then padding to the size.
STAMP_DIGITS = 20
STAMP_HOLE = b"@" * STAMP_DIGITS  # where each send puts the time in the encoded frames
LINE_STAMP = re.compile(rb"(\d{20}) \d{3} ")  # how a counting subscriber finds the time
# What a subscriber's receive() returns for a message that is not a measured line.
WARMUP = -1
OTHER = 0


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
    count_only: bool = False  # counting subscribers: they read no JSON


@dataclass
class BenchResult:
    publishers: int
    subscribers: int
    size: int
    rate: float = 0.0
    count_only: bool = False
    sent: int = 0
    expected: int = 0
    delivered: int = 0
    lost: int = 0
    send_seconds: float = 0.0
    seconds: float = 0.0  # from the first send to the last delivery
    sent_per_second: float = 0.0
    delivered_per_second: float = 0.0
    latency_ms: dict[str, float] = field(default_factory=dict)
    # CPU, as a share of one core over the run (1.0: one core all the time)
    publisher_busy: float = 0.0  # the busiest publishing thread
    publisher_cores: float = 0.0  # the publishers' process (libzmq's threads included)
    subscriber_busy: float = 0.0  # the busiest subscriber process
    subscriber_cores: float = 0.0  # all subscriber processes together
    machine_cores: float = 0.0  # every process on the machine, others' included
    broker_busy: float | None = None  # None: the broker's process was not given
    broker_cpu_seconds: float | None = None
    broker_us_per_line: float | None = None  # per line sent
    broker_us_per_delivered: float | None = None

    def as_dict(self) -> dict[str, Any]:
        return asdict(self) | {"limited_by": self.limited_by()}

    def limited_by(self) -> str:
        """What set the pace: the rate asked for, a process busy all along, or the
        machine's cores all busy (with how much of them other processes took)."""
        busy = {"broker": self.broker_busy or 0.0, "publisher": self.publisher_busy}
        busy["subscribers"] = self.subscriber_busy
        name = max(busy, key=busy.__getitem__)
        busiest = f"busiest: {name}, {busy[name]:.0%} of a core"
        asked = self.rate * self.publishers * (self.expected / max(1, self.sent))
        if self.rate and self.delivered_per_second >= 0.95 * asked:  # and delivery kept up
            return f"the rate asked ({self.rate * self.publishers:,.0f} lines/s); {busiest}"
        if busy[name] >= BUSY:
            return f"{name} ({busy[name]:.0%} of a core)"
        cores = os.cpu_count() or 1
        if self.machine_cores >= BUSY * cores:
            ours = (self.broker_busy or 0.0) + self.publisher_cores + self.subscriber_cores
            others = max(0.0, self.machine_cores - ours)
            return f"all {cores} cores busy ({others:.1f} by other processes); {busiest}"
        return f"nothing busy all along; {busiest}"

    def lines(self) -> list[str]:
        lat = self.latency_ms
        out = [
            f"publishers {self.publishers}, subscribers {self.subscribers}, {self.size}-byte texts"
            + (", counting subscribers (no decoding)" if self.count_only else ""),
            f"sent       {self.sent:>12,} in {self.send_seconds:.2f} s "
            f"({self.sent_per_second:,.0f} msgs/s)",
            f"delivered  {self.delivered:>12,} of {self.expected:,} in {self.seconds:.2f} s "
            f"({self.delivered_per_second:,.0f} msgs/s)",
            f"lost       {self.lost:>12,} ({100 * self.lost / max(1, self.expected):.2f}%)",
            "latency    "
            + "  ".join(f"{k} {lat.get(k, math.nan):.3f} ms" for k in ("p50", "p90", "p99", "max")),
        ]
        if self.broker_cpu_seconds is not None:
            out.append(
                f"broker CPU {self.broker_cpu_seconds:.2f} s: {self.broker_us_per_line:.2f} µs "
                f"per line, {self.broker_us_per_delivered:.2f} µs per delivered message"
            )
        broker = "" if self.broker_busy is None else f"broker {self.broker_busy:.0%}, "
        out.append(
            f"busy       {broker}publisher {self.publisher_busy:.0%}, busiest subscriber "
            f"process {self.subscriber_busy:.0%} (of a core); the machine "
            f"{self.machine_cores:.1f} of {os.cpu_count()} cores"
        )
        out.append(f"limited by {self.limited_by()}")
        return out


def bench_text(publisher: int, size: int, stamp_ns: int | None = None) -> str:
    """A measured line: its send time (now, unless given), its publisher, padding."""
    stamp = time.monotonic_ns() if stamp_ns is None else stamp_ns
    head = f"{stamp:0{STAMP_DIGITS}d} {publisher:03d} "
    return head + "x" * max(0, size - len(head))


def stamp_of(text: str) -> int:
    """What a decoding subscriber makes of a line's text: its send time, or WARMUP."""
    return WARMUP if text.startswith("warmup") else int(text[:STAMP_DIGITS])


def percentiles(samples: list[float]) -> dict[str, float]:
    if not samples:
        return {}
    ordered = sorted(samples)

    def at(q: float) -> float:
        return ordered[min(len(ordered) - 1, int(q * len(ordered)))]

    return {"p50": at(0.50), "p90": at(0.90), "p99": at(0.99), "max": ordered[-1]}


def cpu_seconds(pid: int) -> float:
    """User and system CPU time of a process, all its threads (from /proc, in ticks)."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def machine_cpu_seconds() -> float:
    """CPU time every process on the machine has used, all cores together (/proc/stat)."""
    ticks = [int(n) for n in Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:]]
    idle = ticks[3] + ticks[4]  # idle, iowait
    return (sum(ticks[:8]) - idle) / os.sysconf("SC_CLK_TCK")


# --- publishers ---------------------------------------------------------------------------


class Publisher:
    """One publisher: ``say`` sends any text; ``line`` sends a measured line, from frames
    encoded once, with only the send time put in (the frames' last part holds it)."""

    def __init__(
        self,
        send: Callable[[list[bytes]], object],
        encode: Callable[[str], list[bytes]],
        index: int,
        size: int,
    ) -> None:
        self._send, self._encode = send, encode
        hole = STAMP_HOLE.decode()
        *self._head, last = encode(hole + bench_text(index, size, 0)[STAMP_DIGITS:])
        parts = last.split(STAMP_HOLE)
        if len(parts) != 2:
            raise ValueError("the encoded line must hold the stamp's place exactly once")
        self._before, self._after = parts

    def say(self, text: str) -> None:
        self._send(self._encode(text))

    def line(self) -> None:
        stamp = b"%020d" % time.monotonic_ns()
        self._send([*self._head, self._before + stamp + self._after])


# --- subscribers (in worker processes) ----------------------------------------------------


@dataclass
class WorkerReport:
    counts: list[int]
    latencies: list[float]
    first_ns: int  # when the first measured line arrived (0: none did)
    last_ns: int
    cpu_seconds: float  # the process's, from the first measured line to the end


def zmq_subscriber(
    endpoint: str,
    topic: bytes,
    count_only: bool,
    sockets: int,
    ready: Any,
    finished: Any,
    sent: Any,
    progress: Any,
    results: Any,
) -> None:
    """One worker process: ``sockets`` SUB sockets; every message decoded, or only
    counted (``count_only``). (Every worker takes its system's arguments, then these:
    the bench passes them in this order.)"""
    ctx = zmq.Context()
    subs = []
    for _ in range(sockets):
        sub = ctx.socket(zmq.SUB)
        sub.setsockopt(zmq.LINGER, 0)
        sub.setsockopt(zmq.RCVHWM, 0)  # like zchat's client: a slow reader queues, not drops
        sub.subscribe(topic)
        sub.connect(endpoint)
        subs.append(sub)

    def decoding(index: int) -> int | None:
        try:
            frames = subs[index].recv_multipart(zmq.NOBLOCK)
        except zmq.Again:
            return None
        _, msg = p.decode_server(frames)
        return stamp_of(msg.text) if isinstance(msg, p.Chat) else OTHER

    def counting(index: int) -> int | None:
        try:
            body = subs[index].recv_multipart(zmq.NOBLOCK)[-1]
        except zmq.Again:
            return None
        if found := LINE_STAMP.search(body):
            return int(found[1])
        return WARMUP if b"warmup" in body else OTHER

    poller = zmq.Poller()
    for sub in subs:
        poller.register(sub, zmq.POLLIN)

    def wait(ms: int) -> list[int]:
        ready_socks = dict(poller.poll(ms))
        return [i for i, sub in enumerate(subs) if sub in ready_socks]

    receive = counting if count_only else decoding
    shared = (ready, finished, sent, progress)
    results.put(run_subscriber(sockets, wait, receive, *shared))
    for sub in subs:
        sub.close()
    ctx.term()


def run_subscriber(
    sockets: int,
    wait: Callable[[int], list[int]],
    receive: Callable[[int], int | None],
    ready: Any,
    finished: Any,
    sent: Any,
    progress: Any,
) -> WorkerReport:
    """The loop every kind of subscriber shares: count, time, report. ``receive`` gives
    a message's send time (ns), WARMUP, OTHER, or None once the socket is empty. The run
    ends when every line sent (``sent``, once ``finished``) came, or nothing came for
    QUIET_SECONDS after the last send."""
    warm: set[int] = set()
    counts = [0] * sockets
    latencies: list[float] = []
    stride, seen, reported = 1, 0, 0
    last_heard = time.monotonic()
    first_ns = last_ns = 0
    cpu_start = 0.0
    while True:
        for index in wait(100):
            while (stamp := receive(index)) is not None:
                if stamp == WARMUP:
                    if index not in warm:
                        warm.add(index)
                        ready.release()
                    continue
                if stamp == OTHER:
                    continue
                last_ns = time.monotonic_ns()
                if not first_ns:
                    first_ns, cpu_start = last_ns, time.process_time()
                counts[index] += 1
                seen += 1
                if seen % stride == 0:
                    latencies.append((last_ns - stamp) / 1e6)
                    if len(latencies) >= MAX_SAMPLES:
                        latencies, stride = latencies[::2], stride * 2
        if seen != reported:
            last_heard = time.monotonic()
            with progress.get_lock():
                progress.value += seen - reported
            reported = seen
        if finished.is_set():
            if all(count >= sent.value for count in counts):
                break
            if time.monotonic() - last_heard > QUIET_SECONDS:
                break
    cpu = time.process_time() - cpu_start if first_ns else 0.0
    return WorkerReport(counts, latencies, first_ns, last_ns, cpu)


# --- the run ------------------------------------------------------------------------------


class Target(Protocol):
    """What a benchmark needs of a system: publishers, and how to start subscribers."""

    def publisher(self, index: int, size: int) -> Publisher: ...

    def close_publishers(self) -> None: ...

    def subscriber_args(self, count_only: bool) -> tuple[Callable[..., None], tuple[Any, ...]]: ...


class ZchatTarget:
    """A zchat broker: publishers are joined clients that PUSH with blocking sends (so
    the broker sets the pace); subscribers are SUB sockets."""

    def __init__(self, host: str, port: int, room: str) -> None:
        self.host, self.port, self.room = host, port, room
        self.clients: list[Client] = []
        self.pushes: list[zmq.Socket[bytes]] = []

    def publisher(self, index: int, size: int) -> Publisher:
        name = f"bench{os.getpid() % 10000}-{index}"
        client = Client(name, self.host, self.port, [self.room], history=0)
        self.clients.append(client)
        client.join()
        push: zmq.Socket[bytes] = zmq.Context.instance().socket(zmq.PUSH)
        push.setsockopt(zmq.LINGER, 2000)
        push.connect(client.endpoints.push)
        self.pushes.append(push)
        secret, room = client.core.secret, self.room

        def encode(text: str) -> list[bytes]:
            return p.encode_client(p.Say(secret, room, text))

        return Publisher(push.send_multipart, encode, index, size)

    def close_publishers(self) -> None:
        for push in self.pushes:
            push.close()
        for client in self.clients:
            client.close()

    def subscriber_args(self, count_only: bool) -> tuple[Callable[..., None], tuple[Any, ...]]:
        host = f"[{self.host}]" if ":" in self.host else self.host
        endpoint = f"tcp://{host}:{self.port + 1}"
        return zmq_subscriber, (endpoint, p.room_topic(self.room), count_only)


class Bench:
    """Starts subscribers, makes publishers, warms up, measures, reports. Given the
    broker's process id (``broker_pid``), it measures the broker's CPU too."""

    def __init__(
        self,
        config: BenchConfig,
        target: Target,
        out: Callable[[str], None] | None = None,
        broker_pid: int | None = None,
    ) -> None:
        self.config = config
        self.target = target
        self.out = out or (lambda line: print(line, file=sys.stderr, flush=True))
        self.broker_pid = broker_pid
        self._mp = mp.get_context("spawn")
        self.progress = self._mp.Value("q", 0)
        self.sent_by = [0] * config.publishers
        self.cpu_by = [0.0] * config.publishers  # each publishing thread's CPU seconds

    def run(self) -> BenchResult:
        cfg = self.config
        ready = self._mp.Semaphore(0)
        finished = self._mp.Event()
        sent = self._mp.Value("q", 0)
        results = self._mp.Queue()
        func, args = self.target.subscriber_args(cfg.count_only)
        shared = (ready, finished, sent, self.progress, results)
        live = cfg.subscribers - cfg.stalled
        # the stalled ones get processes of their own, so that freezing them freezes no other
        groups = [min(WORKER_SOCKETS, live - i) for i in range(0, live, WORKER_SOCKETS)]
        groups += [1] * cfg.stalled
        workers = []
        for count in groups:
            worker = self._mp.Process(target=func, args=(*args, count, *shared), daemon=True)
            worker.start()
            workers.append(worker)
        frozen = workers[len(workers) - cfg.stalled :]
        try:
            senders = [self.target.publisher(i, cfg.size) for i in range(cfg.publishers)]
            self._warm_up(senders[0], ready)
            for worker in frozen:
                os.kill(worker.pid or 0, signal.SIGSTOP)
            return self._measure(senders, finished, sent, results, len(workers) - len(frozen))
        finally:
            finished.set()
            for worker in frozen:
                worker.kill()
            self.target.close_publishers()
            for worker in workers:
                worker.join(5)
                if worker.is_alive():
                    worker.kill()

    def _warm_up(self, publisher: Publisher, ready: Any) -> None:
        """Until every subscriber has heard a warm-up line, its subscription may not be
        in place (the slow joiner): speak until all have."""
        waiting = self.config.subscribers
        end = time.monotonic() + WARMUP_SECONDS
        while waiting:
            publisher.say("warmup")
            while waiting and ready.acquire(timeout=0.05):
                waiting -= 1
            if time.monotonic() > end:
                raise BrokerUnreachable(f"{waiting} subscriber(s) never heard the broker")

    def _measure(
        self, senders: list[Publisher], finished: Any, sent: Any, results: Any, workers: int
    ) -> BenchResult:
        cfg = self.config
        cpu_before = cpu_seconds(self.broker_pid) if self.broker_pid else 0.0
        machine_before, own_before = machine_cpu_seconds(), time.process_time()
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
        sent.value = sum(self.sent_by)
        finished.set()
        reports: list[WorkerReport] = []
        for _ in range(workers):
            try:
                reports.append(results.get(timeout=120))
            except queue.Empty:
                break
        broker_cpu = cpu_seconds(self.broker_pid) - cpu_before if self.broker_pid else None
        machine = machine_cpu_seconds() - machine_before
        own = time.process_time() - own_before
        wall = (time.monotonic_ns() - start_ns) / 1e9
        stop_progress.set()
        ticker.join()
        result = self._result(reports, start_ns, send_ns, broker_cpu)
        result.publisher_cores, result.machine_cores = own / wall, machine / wall
        return result

    def _publish(self, index: int, publisher: Publisher) -> None:
        cfg = self.config
        interval = 1.0 / cfg.rate if cfg.rate > 0 else 0.0
        pace = threading.Event()  # never set: its wait() is a pause that keeps the rate
        cpu_start = time.thread_time()
        next_at = time.monotonic()
        stop_at = next_at + cfg.deadline
        try:
            for _ in range(cfg.messages):
                if interval:
                    delay = next_at - time.monotonic()
                    if delay > 0:
                        pace.wait(delay)
                    next_at += interval
                try:
                    publisher.line()
                except OSError as exc:  # a server that stopped taking lines (a stalled design)
                    self.out(f"  publisher {index} stopped: {exc}")
                    return
                self.sent_by[index] += 1
                if time.monotonic() > stop_at:
                    self.out(f"  publisher {index} stopped at the {cfg.deadline:g} s deadline")
                    return
        finally:
            self.cpu_by[index] = time.thread_time() - cpu_start

    def _report_progress(self, stop: threading.Event) -> None:
        start = time.monotonic()
        while not stop.wait(1.0):
            elapsed = time.monotonic() - start
            delivered = self.progress.value
            self.out(
                f"  {elapsed:5.1f} s  sent {sum(self.sent_by):,}  delivered {delivered:,} "
                f"({delivered / elapsed:,.0f} msgs/s)"
            )

    def _result(
        self, reports: list[WorkerReport], start_ns: int, send_ns: int, broker_cpu: float | None
    ) -> BenchResult:
        cfg = self.config
        result = BenchResult(cfg.publishers, cfg.subscribers, cfg.size, cfg.rate, cfg.count_only)
        result.sent = sum(self.sent_by)
        result.expected = result.sent * (cfg.subscribers - cfg.stalled)
        result.delivered = sum(sum(r.counts) for r in reports)
        result.lost = result.expected - result.delivered
        result.send_seconds = max(1e-9, send_ns / 1e9)
        last = max((r.last_ns for r in reports), default=start_ns)
        result.seconds = max(1e-9, (last - start_ns) / 1e9)
        result.sent_per_second = result.sent / result.send_seconds
        result.delivered_per_second = result.delivered / result.seconds
        result.latency_ms = percentiles([x for r in reports for x in r.latencies])
        result.publisher_busy = max(self.cpu_by) / result.send_seconds
        spans = [(r.cpu_seconds, (r.last_ns - r.first_ns) / 1e9) for r in reports]
        result.subscriber_busy = max((cpu / span for cpu, span in spans if span > 0), default=0)
        result.subscriber_cores = sum(r.cpu_seconds for r in reports) / result.seconds
        if broker_cpu is not None:
            result.broker_cpu_seconds = broker_cpu
            result.broker_busy = broker_cpu / result.seconds
            result.broker_us_per_line = 1e6 * broker_cpu / max(1, result.sent)
            result.broker_us_per_delivered = 1e6 * broker_cpu / max(1, result.delivered)
        return result


def spawn_broker(
    host: str = "127.0.0.1",
    db: str = ":memory:",
    limited: bool = False,
    extra: Sequence[str] = (),
    log: Callable[[str], object] | None = None,
) -> tuple[subprocess.Popen[str], int]:
    """A broker of our own on free ports (history in ``db``; ``extra``: more of
    ``zchat broker``'s options). Unless ``limited``, it has no rate limit (publishers
    here send far past what a person would) and no bound per address (a thousand
    clients on one machine). ``log``, if given, is called with each line the broker
    logs, for as long as it runs; otherwise its log is read and dropped."""
    argv = [sys.executable, "-m", "zchat", "broker", "--host", host, "--port", "0", "--db", db]
    if not limited:  # and all its clients come from 127.0.0.1: no bound per address
        argv += ["--rate", "0", "--max-connections-per-address", "0"]
    argv += extra
    proc = subprocess.Popen(argv, stderr=subprocess.PIPE, text=True, stdin=subprocess.DEVNULL)
    assert proc.stderr is not None
    sink = log or (lambda line: None)
    said: list[str] = []  # the start's lines, for the error if it does not start
    for line in proc.stderr:
        sink(line)
        said.append(line)
        if "listening: in tcp://" in line:
            port = int(line.split("listening: in tcp://", 1)[1].split()[0].rsplit(":", 1)[1])
            threading.Thread(target=_each_line, args=(proc.stderr, sink), daemon=True).start()
            return proc, port
    raise ConfigError(
        f"the spawned broker did not start (exit code {proc.wait()}):\n" + "".join(said[-20:])
    )


def _each_line(stream: Any, sink: Callable[[str], object]) -> None:
    for line in stream:
        sink(line)
