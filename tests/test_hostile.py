"""One hostile client against a real `zchat broker` (a child process), in open mode and
in secure mode (there the attacker's key is an admitted one: a key is no licence).

Each test is one attack, made from 127.0.0.2 (so that the address the broker refuses
after a cut is the attacker's, not the legitimate clients' 127.0.0.1). While it runs,
a legitimate client must join within JOIN_SECONDS; afterwards the broker's RSS must be
within RSS_BOUND of what it was before, and the chat must still work. Every loop is
bounded in count and in time.
"""

from __future__ import annotations

import json
import statistics
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
import zmq

from conftest import RunningBroker
from support import Proc, start_broker
from zchat import Client
from zchat import protocol as p
from zchat.admin import default_path, request
from zchat.broker.guard import ConnectionLimits
from zchat.client.listen import Listener
from zchat.client.transport import Keys
from zchat.keys import keygen

JOIN_SECONDS = 2.0  # a legitimate join during an attack completes within this
RSS_BOUND = 64 * 2**20  # broker RSS growth allowed, whatever the attack
ATTACK_SECONDS = 3.0  # the longest a sending loop runs
LATENCY_FACTOR = 3.0  # p50 of a legitimate client's lines, against quiet
LATENCY_FLOOR = 0.02  # seconds: below this, loopback latency on a loaded machine is noise
ATTACKER = "127.0.0.2"
MALLORY = "Mallory"  # the attacker's name: in secure mode, an admitted key's
# the legitimate clients' names: in secure mode each has a key
NAMES = ("Alice", "Bob", "Faye", "Gail", *(f"{who}{n}" for who in ("Carol", "Dave", "Erin")
         for n in range(15)))  # fmt: skip


@dataclass(frozen=True)
class Mode:
    """Open mode, or secure mode with a keys folder (``keys``)."""

    keys: Path | None

    def start(self, procs: list[Proc], db: Path, *args: str) -> tuple[Proc, int]:
        secure = ("--secure", "--keys", str(self.keys)) if self.keys else ()
        proc, port = start_broker(*secure, *args, db=str(db))
        procs.append(proc)
        return proc, port

    def client(self, name: str, port: int) -> Client:
        return Client(name, port=port, history=0, keys=self.keys_of(name))

    def keys_of(self, name: str) -> Keys | None:
        if self.keys is None:
            return None
        return Keys.from_files(self.keys / "broker.key", self.keys.parent / f"{name}.key_secret")

    def name(self, name: str) -> str:
        """The name an attacker's JOIN must carry to get anywhere."""
        return MALLORY if self.keys else name


@pytest.fixture(params=["open", "secure"])
def mode(request: pytest.FixtureRequest, tmp_path: Path) -> Mode:
    if request.param == "open":
        return Mode(None)
    folder = tmp_path / "keys"
    keygen("broker", folder)
    (folder / "users").mkdir()
    for name in (*NAMES, MALLORY):
        public, _ = keygen(name, tmp_path)
        public.rename(folder / "users" / public.name)
    return Mode(folder)


@pytest.fixture
def target(procs: list[Proc], tmp_path: Path, mode: Mode) -> tuple[Proc, int]:
    """A broker with its default limits and a real history file (WAL)."""
    return mode.start(procs, tmp_path / "history.db")


Attacker = Callable[[int, int], zmq.Socket[bytes]]


@pytest.fixture
def attacker(mode: Mode) -> Iterator[Attacker]:
    """attacker(kind, port) -> a socket connected from ATTACKER (in secure mode with
    Mallory's admitted key); all closed afterwards."""
    context: zmq.Context[zmq.Socket[bytes]] = zmq.Context()
    made: list[zmq.Socket[bytes]] = []
    keys = mode.keys_of(MALLORY)

    def make(kind: int, port: int) -> zmq.Socket[bytes]:
        sock = context.socket(kind)
        made.append(sock)
        if keys is not None:
            keys.apply(sock)
        sock.setsockopt(zmq.LINGER, 0)
        sock.setsockopt(zmq.SNDHWM, 0)
        sock.setsockopt(zmq.RCVHWM, 0)
        sock.connect(f"tcp://{ATTACKER}:0;127.0.0.1:{port}")
        return sock

    yield make
    for sock in made:
        sock.close(linger=0)
    context.term()


def flood(sock: zmq.Socket[bytes], frames: Iterator[bytes]) -> int:
    """Send until done or the connection is gone (a PUSH without a peer would block):
    how many were sent."""
    sent = 0
    for frame in frames:
        try:
            sock.send(frame, zmq.NOBLOCK)
        except zmq.Again:
            break
        sent += 1
    return sent


def rss(proc: Proc) -> int:
    for line in Path(f"/proc/{proc.popen.pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) * 1024
    raise AssertionError("no VmRSS")


def stats(port: int) -> dict[str, object]:
    return dict(request(default_path(port), "stats")["data"])


def join_timed(mode: Mode, port: int, name: str) -> tuple[Client, float]:
    client = mode.client(name, port)
    started = time.monotonic()
    try:
        client.join(timeout=JOIN_SECONDS)
    except Exception:
        client.close()
        raise
    return client, time.monotonic() - started


def p50_latency(client: Client, lines: int = 15) -> float:
    """The median time from send to the broker's echo, one line at a time."""
    times = []
    for index in range(lines):
        started = time.monotonic()
        sent = client.send(f"ping {index}")
        deadline = started + 5.0
        while time.monotonic() < deadline:
            msg = client.receive(timeout=deadline - time.monotonic())
            if msg is not None and msg.id == sent and msg.kind == "message":
                break
        else:
            raise AssertionError(f"line {index} was not echoed within 5 s")
        times.append(time.monotonic() - started)
    return statistics.median(times)


def wait_for(condition: Callable[[], bool], what: str, seconds: float = 10.0) -> None:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        if condition():
            return
        zmq.select([], [], [], 0.05)  # a short wait on nothing: no busy loop
    raise AssertionError(f"{what}: not within {seconds:g} s")


def cuts(port: int) -> dict[str, int]:
    return dict(stats(port).get("cuts", {}))  # type: ignore[call-overload]


class Watch:
    """A quiet baseline (RSS, latency) taken before the attack, checked after."""

    def __init__(self, mode: Mode, proc: Proc, port: int) -> None:
        self.mode, self.proc, self.port = mode, proc, port
        self.alice, _ = join_timed(mode, port, "Alice")
        self.quiet = p50_latency(self.alice)
        self.rss = rss(proc)
        self.joined: list[Client] = [self.alice]

    def join(self, name: str) -> float:
        client, seconds = join_timed(self.mode, self.port, name)
        self.joined.append(client)
        return seconds

    def check(self) -> None:
        """The bound: responsive, memory within RSS_BOUND, the chat still works."""
        grown = rss(self.proc) - self.rss
        assert grown < RSS_BOUND, f"broker RSS grew by {grown / 2**20:.0f} MiB"
        p50 = p50_latency(self.alice)
        bound = LATENCY_FACTOR * max(self.quiet, LATENCY_FLOOR)
        assert p50 <= bound, f"p50 {p50 * 1000:.1f} ms, quiet {self.quiet * 1000:.1f} ms"

    def close(self) -> None:
        for client in self.joined:
            client.close()


@pytest.fixture
def watch(mode: Mode, target: tuple[Proc, int]) -> Iterator[Watch]:
    running = Watch(mode, *target)
    yield running
    running.close()


def test_a_junk_frame_before_a_subscription_backlog_locks_nobody_out(
    watch: Watch, attacker: Attacker
) -> None:
    xsub = attacker(zmq.XSUB, watch.port + 1)
    xsub.send(b"\x02")
    for index in range(50_000):
        topic = b"room/junk%d/" % (index % 50)
        xsub.send(b"\x01" + topic)
        xsub.send(b"\x00" + topic)
    assert watch.join("Bob") < JOIN_SECONDS
    watch.check()
    wait_for(lambda: cuts(watch.port).get("junk", 0) >= 1, "the junk sender was cut")


def test_junk_frames_at_a_steady_rate_fail_no_join(watch: Watch, attacker: Attacker) -> None:
    deadline = time.monotonic() + ATTACK_SECONDS
    for index in range(15):
        xsub = attacker(zmq.XSUB, watch.port + 1)  # a new connection each time
        for _ in range(60):  # about 900 a second, with the joins between them
            xsub.send(b"\x02junk")
        assert watch.join(f"Carol{index}") < JOIN_SECONDS
        if index and time.monotonic() > deadline:  # at least once back after the cut
            break
    watch.check()
    assert cuts(watch.port).get("junk", 0) >= 1
    # the last connection's handshake may still be under way: its refusal comes with it
    came_back = "the cut address was refused when it came back"
    wait_for(lambda: stats(watch.port)["refused_handshakes"] > 0, came_back)


def test_a_hundred_thousand_inbox_subscriptions_fill_nothing(
    watch: Watch, attacker: Attacker
) -> None:
    xsub = attacker(zmq.XSUB, watch.port + 1)
    for index in range(100_001):
        xsub.send(b"\x01" + p.inbox_topic(f"{index:032x}"))
    for index in range(3):
        assert watch.join(f"Dave{index}") < JOIN_SECONDS
    watch.check()
    wait_for(lambda: cuts(watch.port).get("subscriptions", 0) >= 1, "the subscriber was cut")


def test_a_subscribe_unsubscribe_loop_is_cut(watch: Watch, attacker: Attacker) -> None:
    sub = attacker(zmq.SUB, watch.port + 1)
    deadline = time.monotonic() + ATTACK_SECONDS
    joins = 0
    sent = 0
    while time.monotonic() < deadline and sent < 2_000_000:
        for _ in range(20_000):
            sub.subscribe(b"room/churn/")
            sub.unsubscribe(b"room/churn/")
        sent += 20_000
        if joins < 5 and sent % 100_000 == 0:
            assert watch.join(f"Erin{joins}") < JOIN_SECONDS
            joins += 1
    watch.check()
    assert cuts(watch.port).get("churn", 0) >= 1


def test_long_room_subscriptions_are_cut_and_their_memory_freed(
    watch: Watch, attacker: Attacker
) -> None:
    xsub = attacker(zmq.XSUB, watch.port + 1)
    for index in range(15_000):
        xsub.send(b"\x01room/" + b"%06d" % index + b"x" * 494 + b"/")
    assert watch.join("Faye") < JOIN_SECONDS
    watch.check()


def test_joins_that_never_complete_hold_little(watch: Watch, attacker: Attacker) -> None:
    push = attacker(zmq.PUSH, watch.port)
    since = {f"r{index}": index for index in range(2_000)}  # a frame just under 32 KiB

    def big() -> Iterator[bytes]:
        for index in range(6_700):
            name = watch.mode.name(f"g{index}")
            join = {"v": 1, "type": "join", "name": name, "secret": f"{index:032x}"}
            join |= {"inbox": f"{index:032x}", "rooms": ["general"], "since": since}
            yield json.dumps(join).encode()

    def small() -> Iterator[bytes]:  # that decode: a few wait, then the connection is cut
        for index in range(5_000):
            name = watch.mode.name(f"h{index}")
            join = p.Join(name, f"{index:032x}", f"{index + 1:032x}", ("general",), 0)
            yield p.encode_client(join)[0]

    flood(push, big())
    flood(push, small())
    assert watch.join("Gail") < JOIN_SECONDS
    wait_for(lambda: cuts(watch.port).get("frames", 0) >= 1, "the JOIN flood was cut")
    dropped = stats(watch.port)["dropped"]
    assert dropped.get("field", 0) >= 1, dropped  # type: ignore[attr-defined]
    watch.check()


def test_a_join_leave_loop_makes_few_rooms(watch: Watch, attacker: Attacker) -> None:
    push = attacker(zmq.PUSH, watch.port)
    sub = attacker(zmq.SUB, watch.port + 1)
    deadline = time.monotonic() + ATTACK_SECONDS
    made = 0
    for turn in range(200):
        if time.monotonic() > deadline:
            break
        inbox, secret = f"{turn:032x}", f"{turn + 10**6:032x}"
        sub.subscribe(p.inbox_topic(inbox))
        rooms = tuple(f"r{turn}x{index}" for index in range(32))
        join = p.Join(watch.mode.name(f"loop{turn}"), secret, inbox, rooms, 0)
        if not flood(push, iter(p.encode_client(join))):
            break  # cut
        if sub.poll(1000):
            frames = sub.recv_multipart()
            made += json.loads(frames[1])["type"] == "welcome"
        flood(push, iter(p.encode_client(p.Leave(secret))))
        sub.unsubscribe(p.inbox_topic(inbox))
    assert made <= 3, f"{made} joins of 32 new rooms each went through"
    watch.check()


def test_a_session_that_never_reads_is_cut(
    procs: list[Proc], tmp_path: Path, attacker: Attacker, mode: Mode
) -> None:
    proc, port = mode.start(procs, tmp_path / "history.db", "--rate", "0")
    watch = Watch(mode, proc, port)
    try:
        for _ in range(300):  # lines of 4,096 control characters: 12 kB each stored
            watch.alice.send("\x01" * 4096)
        wait_for(lambda: watch.alice.settle(0.5), "the lines were stored")
        watch.rss = rss(proc)
        push = attacker(zmq.PUSH, port)
        sub = attacker(zmq.SUB, port + 1)
        sub.setsockopt(zmq.RCVHWM, 1)  # libzmq stops reading: the TCP window closes
        sub.setsockopt(zmq.RCVBUF, 4096)
        sub.setsockopt(zmq.HEARTBEAT_IVL, 200)  # but the connection is kept alive
        inbox, secret = "ab" * 16, "cd" * 16
        sub.subscribe(p.inbox_topic(inbox))
        push.send(p.encode_client(p.Join(MALLORY, secret, inbox, ("general",), 0))[0])
        assert sub.poll(5000), "Mallory's join was not answered"
        asks = (p.GetHistory(secret, "general", 0, 0, 1000, f"h{i}") for i in range(100))
        flood(push, (p.encode_client(get)[0] for get in asks))
        wait_for(lambda: cuts(port).get("unread", 0) >= 1, "the non-reader was cut")
        watch.check()
    finally:
        watch.close()


@pytest.mark.broker(connection=ConnectionLimits(penalty_seconds=1.5))
def test_a_client_refused_for_a_while_is_told_so_and_gets_in_after(
    broker: RunningBroker, ctx: zmq.Context[zmq.Socket[bytes]]
) -> None:
    xsub = ctx.socket(zmq.XSUB)
    xsub.setsockopt(zmq.LINGER, 0)
    xsub.connect(f"tcp://127.0.0.1:{broker.port + 1}")  # the legitimate clients' address
    xsub.send(b"\x02junk")
    wait_for(lambda: broker.broker.guard.cuts["junk"] == 1, "the junk sender was cut")
    xsub.close()
    client = Client("Hana", port=broker.port, context=ctx)
    listener = Listener(port=broker.port, context=ctx, connect_timeout=10)
    try:
        client.join(timeout=10)
        notes = [m.text for m in client.core.events if m.kind == "system"]
        assert any("refuses connections from this address for a few seconds" in n for n in notes)
        listener.wait_heard()  # it too was refused, and connects again by itself
        client.send("heard by the listener")
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            said = listener.receive(timeout=deadline - time.monotonic())
            if said is not None and said.text == "heard by the listener":
                break
        else:
            raise AssertionError("the listener refused for a while never got in")
        assert said.sender == "Hana"
    finally:
        client.close()
        listener.close()
