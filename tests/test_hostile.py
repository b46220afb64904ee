"""One hostile client against a real `zchat broker` (a child process), in open mode and
in secure mode (there the attacker's key is an admitted one: a key is no licence).

Each test is one attack, made from 127.0.0.2 (so that the address the broker refuses
after a cut is the attacker's, not the legitimate clients' 127.0.0.1). While it runs,
a legitimate client must join within JOIN_SECONDS; afterwards the broker's RSS must be
within RSS_BOUND of what it was before, and the chat must still work. Every loop is
bounded in count and in time.
"""

from __future__ import annotations

import contextlib
import json
import socket
import statistics
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
import zmq
import zmq.utils.monitor

from conftest import RunningBroker
from support import Proc, start_broker
from zchat import Client
from zchat import protocol as p
from zchat.admin import default_path, request
from zchat.broker.guard import HANDSHAKE_SECONDS, ConnectionLimits
from zchat.broker.limits import DEFAULT_BURST, DEFAULT_RATE, OWNER_FACTOR
from zchat.client.listen import Listener
from zchat.client.transport import Keys
from zchat.keys import keygen, load_public

JOIN_SECONDS = 2.0  # a legitimate join during an attack completes within this
RSS_BOUND = 64 * 2**20  # broker RSS growth allowed, whatever the attack
ATTACK_SECONDS = 3.0  # the longest a sending loop runs
LATENCY_FACTOR = 3.0  # p50 of a legitimate client's lines, against quiet
LATENCY_FLOOR = 0.02  # seconds: below this, loopback latency on a loaded machine is noise
SETUP_SECONDS = 15.0  # the longest an attack's set-up (handshakes, a join) may take
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


_IDLE = threading.Event()  # never set: its wait() is a pause between looks


def wait_for(condition: Callable[[], bool], what: str, seconds: float = 10.0) -> None:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        if condition():
            return
        _IDLE.wait(0.05)  # between two looks at the condition (zmq.select of nothing
        # returns at once): no busy loop
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


@pytest.mark.parametrize("readers", [1, 6])
def test_a_session_that_never_reads_is_cut(
    procs: list[Proc], tmp_path: Path, attacker: Attacker, mode: Mode, readers: int
) -> None:
    """``readers``: connections subscribed to the session's inbox, none of them reading
    (one key or address may subscribe to its inbox on several)."""
    proc, port = mode.start(procs, tmp_path / "history.db", "--rate", "0")
    watch = Watch(mode, proc, port)
    try:
        for _ in range(300):  # lines of 4,096 control characters: 12 kB each stored
            watch.alice.send("\x01" * 4096)
        wait_for(lambda: watch.alice.settle(0.5), "the lines were stored")
        watch.rss = rss(proc)
        push = attacker(zmq.PUSH, port)
        inbox, secret = "ab" * 16, "cd" * 16
        subs = [attacker(zmq.SUB, port + 1) for _ in range(readers)]
        for sub in subs:
            sub.setsockopt(zmq.RCVHWM, 1)  # libzmq stops reading: the TCP window closes
            sub.setsockopt(zmq.RCVBUF, 4096)
            sub.setsockopt(zmq.HEARTBEAT_IVL, 200)  # but the connection is kept alive
            sub.subscribe(p.inbox_topic(inbox))
        push.send(p.encode_client(p.Join(MALLORY, secret, inbox, ("general",), 0))[0])
        assert zmq.select(subs, [], [], SETUP_SECONDS)[0], "Mallory's join was not answered"
        # until each subscription is in place: each hears. Waited for on the ones not
        # heard from yet: one that heard keeps its message (it never reads), so waiting
        # on it returned at once, and the attempts ran out in a moment under load
        deadline = time.monotonic() + SETUP_SECONDS
        for attempt in range(int(SETUP_SECONDS * 10)):
            deaf = [sub for sub in subs if not sub.poll(0)]
            if not deaf or time.monotonic() > deadline:
                break
            push.send(p.encode_client(p.GetHistory(secret, "general", 0, 0, 1, f"p{attempt}"))[0])
            zmq.select(deaf, [], [], 0.1)
        assert all(sub.poll(0) for sub in subs), "an inbox subscription was never applied"
        asks = (p.GetHistory(secret, "general", 0, 0, 1000, f"h{i}") for i in range(100))
        flood(push, (p.encode_client(get)[0] for get in asks))
        wait_for(lambda: cuts(port).get("unread", 0) >= 1, "the non-readers were cut")
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


# --- many connections of one owner, barred keys, descriptors, the log -------------------


def test_many_connections_of_one_owner_add_up_to_one_bound(
    watch: Watch, attacker: Attacker
) -> None:
    # 40 connections, each within one connection's bound (128 subscriptions), of one
    # key (secure mode) or one address (open mode): together 4,000 inbox subscriptions
    _inbox_subscriptions_cut(watch, attacker, connections=40)


def test_inbox_subscriptions_on_several_connections_add_up(
    watch: Watch, attacker: Attacker, mode: Mode
) -> None:
    # 300 inboxes on 3 connections, each within its own bound, and 300 subscriptions in
    # all (far within the owner's 2,048): a key holds 64 inboxes, an address 256
    _inbox_subscriptions_cut(watch, attacker, connections=3)


def _inbox_subscriptions_cut(watch: Watch, attacker: Attacker, connections: int) -> None:
    """100 inbox subscriptions on each of ``connections`` connections of one owner, each
    within its own bound: the owner is cut, and no one else is held up."""
    subs = [attacker(zmq.XSUB, watch.port + 1) for _ in range(connections)]
    for n, xsub in enumerate(subs):
        for index in range(100):
            xsub.send(b"\x01" + p.inbox_topic(f"{n:04x}{index:028x}"))
    assert watch.join("Bob") < JOIN_SECONDS
    wait_for(lambda: cuts(watch.port).get("subscriptions", 0) >= 1, "the owner was cut")
    watch.check()


@pytest.mark.parametrize("mode", ["secure"], indirect=True)
def test_one_key_holds_a_bounded_number_of_connections(watch: Watch, attacker: Attacker) -> None:
    subs = [attacker(zmq.SUB, watch.port + 1) for _ in range(40)]
    for sub in subs:
        sub.subscribe(b"room/general/")
    wait_for(lambda: cuts(watch.port).get("connections", 0) >= 8, "the key's 33rd connection cut")
    assert watch.join("Bob") < JOIN_SECONDS
    watch.check()


def _wait_event(monitor: zmq.Socket[bytes], wanted: int, seconds: float) -> None:
    deadline = time.monotonic() + seconds
    while (left := deadline - time.monotonic()) > 0:
        if monitor.poll(int(left * 1000) + 1):
            event = zmq.utils.monitor.recv_monitor_message(monitor)
            if event["event"] == wanted:
                return
    raise AssertionError(f"no monitor event {wanted} within {seconds:g} s")


@pytest.mark.parametrize("mode", ["secure"], indirect=True)
@pytest.mark.parametrize("how", ["ban", "withdraw", "replace"])
def test_a_barred_keys_open_connections_are_cut(
    watch: Watch, attacker: Attacker, mode: Mode, how: str, tmp_path: Path
) -> None:
    """Banned, withdrawn, or replaced by a new key (the old one may have leaked)."""
    sub = attacker(zmq.SUB, watch.port + 1)
    monitor = sub.get_monitor_socket(zmq.EVENT_DISCONNECTED | zmq.EVENT_HANDSHAKE_FAILED_AUTH)
    try:
        sub.subscribe(p.room_topic("general"))
        for attempt in range(50):  # a subscription is in place once a line comes through
            watch.alice.send(f"can you read this {attempt}")
            if sub.poll(200):
                break
        else:
            raise AssertionError("Mallory's listener never heard #general")
        if how == "ban":
            request(default_path(watch.port), "ban", {"name": MALLORY, "reason": "listening"})
        else:
            assert mode.keys is not None
            (mode.keys / "users" / f"{MALLORY}.key").unlink()
            if how == "replace":
                public, _ = keygen(MALLORY, tmp_path / "new")
                public.rename(mode.keys / "users" / public.name)
            request(default_path(watch.port), "reload")
        _wait_event(monitor, zmq.EVENT_DISCONNECTED, 5.0)  # cut
        _wait_event(monitor, zmq.EVENT_HANDSHAKE_FAILED_AUTH, 5.0)  # and refused after
        assert cuts(watch.port).get("barred", 0) == 1
    finally:
        sub.disable_monitor()
        monitor.close(linger=0)
    watch.check()


def test_joining_again_and_again_fills_no_new_bucket(
    watch: Watch, attacker: Attacker, mode: Mode
) -> None:
    # join, say 42 lines, leave, join again: 22 sessions of one key (or address), their
    # 968 frames within what one connection may send at once
    push = attacker(zmq.PUSH, watch.port)
    sub = attacker(zmq.SUB, watch.port + 1)
    started = time.monotonic()
    turns = 0
    while turns < 22 and time.monotonic() - started < ATTACK_SECONDS:
        inbox, secret = f"{turns:032x}", f"{turns + 10**6:032x}"
        sub.subscribe(p.inbox_topic(inbox))  # kept: its end would end the session
        join = p.Join(mode.name(f"churn{turns}"), secret, inbox, ("general",), 0)
        flood(push, iter(p.encode_client(join)))
        if not _welcomed(sub):
            break
        says = (p.Say(secret, "general", f"{turns}.{n}", f"s{turns}.{n}") for n in range(42))
        flood(push, (p.encode_client(say)[0] for say in says))
        flood(push, iter(p.encode_client(p.Leave(secret))))
        turns += 1
    elapsed = time.monotonic() - started
    assert turns >= 5, f"only {turns} join(s) went through"
    said = left = 0
    deadline = time.monotonic() + 10
    while left < turns and time.monotonic() < deadline:  # until every session has left
        msg = watch.alice.receive(timeout=deadline - time.monotonic())
        if msg is not None and msg.sender != "Alice":
            said += msg.kind == "message"
            left += msg.kind == "leave"
    assert left == turns
    factor = 1 if mode.keys else OWNER_FACTOR  # a key's bucket, or an address's
    allowed = factor * (DEFAULT_BURST + DEFAULT_RATE * elapsed)
    assert said <= allowed * 1.1, f"{said} lines in {elapsed:.1f} s from {turns} sessions"
    watch.check()


def _welcomed(sub: zmq.Socket[bytes]) -> bool:
    """Read Mallory's inbox until the welcome (True) or a refusal or silence (False)."""
    deadline = time.monotonic() + 2
    while (left := deadline - time.monotonic()) > 0:
        if not sub.poll(int(left * 1000) + 1):
            return False
        kind = json.loads(sub.recv_multipart()[-1]).get("type")
        if kind in ("welcome", "refused"):
            return kind == "welcome"
    return False


OPEN_FILES = 256  # the broker's limit on open files in the descriptor test (soft and hard)


def _limited_broker(procs: list[Proc], mode: Mode, db: Path, *args: str) -> tuple[Proc, int]:
    """A broker whose process may open at most OPEN_FILES files."""
    secure = ("--secure", "--keys", str(mode.keys)) if mode.keys else ()
    code = (
        "import resource, runpy, sys; "
        f"resource.setrlimit(resource.RLIMIT_NOFILE, ({OPEN_FILES}, {OPEN_FILES})); "
        "sys.argv[0] = 'zchat'; runpy.run_module('zchat', run_name='__main__')"
    )
    argv = [sys.executable, "-c", code, "broker", "--port", "0", "--db", str(db), *secure, *args]
    proc = Proc(argv, stdin=subprocess.DEVNULL)
    procs.append(proc)
    match = proc.expect(r"listening: in tcp://[^ ]+:(\d+)", stream="stderr")
    return proc, int(match.group(1))


def test_idle_connections_cannot_take_every_descriptor(
    procs: list[Proc], tmp_path: Path, mode: Mode
) -> None:
    proc, port = _limited_broker(procs, mode, tmp_path / "history.db")
    proc.expect(
        f"open files: at most {OPEN_FILES}, so at most {OPEN_FILES - 64} connections", "stderr"
    )
    watch = Watch(mode, proc, port)
    idle: list[socket.socket] = []
    try:
        for index in range(OPEN_FILES + 150):  # never a byte: no handshake, no key
            conn = socket.socket()
            idle.append(conn)
            conn.bind((ATTACKER, 0))
            conn.setblocking(False)
            conn.connect_ex(("127.0.0.1", port + index % 2))
        assert watch.join("Bob") < JOIN_SECONDS
        watch.check()
        assert stats(port)["connections"] < OPEN_FILES
        # and the ones that never start a handshake are closed after a few seconds
        last = idle[-1]
        last.setblocking(True)
        last.settimeout(HANDSHAKE_SECONDS * 3)
        with contextlib.suppress(ConnectionResetError):
            while last.recv(4096):  # the broker's greeting, then the end
                pass
    finally:
        for conn in idle:
            conn.close()
        watch.close()


def test_connections_past_the_bound_for_one_address_are_cut(
    procs: list[Proc], tmp_path: Path, mode: Mode
) -> None:
    proc, port = mode.start(
        procs, tmp_path / "history.db", "--max-connections-per-address", "10",
        "--handshake-timeout", "60",
    )  # fmt: skip
    idle: list[socket.socket] = []
    ended: set[socket.socket] = set()

    def closed() -> int:
        """How many of the connections the broker has closed (greetings read past)."""
        for conn in idle:
            with contextlib.suppress(BlockingIOError, ConnectionResetError):
                while conn not in ended:
                    if not conn.recv(4096):
                        ended.add(conn)
        return len(ended)

    try:
        for _ in range(30):
            conn = socket.create_connection(("127.0.0.1", port), source_address=(ATTACKER, 0))
            conn.setblocking(False)
            idle.append(conn)
        # long before their handshake is due: 20 are cut at once, the others kept
        wait_for(lambda: closed() >= 20, "the connections past 10 were cut")
        assert cuts(port)["connections"] == 20
        assert closed() == 20
        watch = Watch(mode, proc, port)  # from another address: not refused
        watch.close()
    finally:
        for conn in idle:
            conn.close()


@pytest.mark.parametrize("mode", ["secure"], indirect=True)
def test_refused_handshakes_are_logged_in_sum(
    procs: list[Proc], tmp_path: Path, mode: Mode
) -> None:
    proc, port = mode.start(procs, tmp_path / "history.db")
    assert mode.keys is not None
    server = load_public(mode.keys / "broker.key")
    context: zmq.Context[zmq.Socket[bytes]] = zmq.Context()
    made = []
    try:
        for _ in range(300):  # a fresh key each time
            sub = context.socket(zmq.SUB)
            made.append(sub)
            sub.curve_serverkey = server
            sub.curve_publickey, sub.curve_secretkey = zmq.curve_keypair()
            sub.setsockopt(zmq.LINGER, 0)
            sub.connect(f"tcp://{ATTACKER}:0;127.0.0.1:{port + 1}")
        wait_for(lambda: stats(port)["refused_keys"] == 300, "300 refused keys")
        summed = proc.expect(r"refused ([\d,]+) handshake\(s\) from (\d+) address", "stderr", 15)
        assert summed.group(2) == "1"
    finally:
        for sub in made:
            sub.close(linger=0)
        context.term()
    logged = [line for line in proc.lines["stderr"] if "refused" in line]
    assert len(logged) <= 3, logged  # the first at once, then the sum
