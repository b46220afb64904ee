"""A live broker (a child process) under 100,000 random and mutated frame sequences.

Frames go in through a raw PUSH socket on the in-port, and random subscription and
unsubscription messages through a raw XSUB socket on the out-port. Afterwards the
broker must still be alive, still serve a normal chat, have logged no traceback, and
have grown by less than RSS_GROWTH_LIMIT since a baseline taken after a warm-up.

No sleeps: a barrier (a valid JOIN sent last on each pipe, answered on an inbox)
says when the broker has handled everything sent before it. Set ZCHAT_FUZZ_SEED to
try another seed; every failure names the one used.
"""

from __future__ import annotations

import json
import os
import random
import signal
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import zmq

from support import Proc, expect_message, start_broker
from zchat import Client
from zchat import protocol as p

SEED = int(os.environ.get("ZCHAT_FUZZ_SEED", "20251121"))
SEQUENCES = 100_000  # messages sent, on both sockets, warm-up included
WARM_UP = 10_000  # of them, sent before the baseline is taken
SUBSCRIPTION_SHARE = 0.25  # of the messages go to the out-socket
RSS_GROWTH_LIMIT = 20 * 1024 * 1024
FUZZ_SECONDS = 60.0  # the sending loop fails past this, whatever the count
BARRIER_SECONDS = 30.0  # time for the broker to work through what is queued
SEND_TIMEOUT_MS = 10_000  # a PUSH send that blocks longer fails the test
DRAIN_EVERY = 512  # messages sent between two reads of what the broker publishes
LIVE_SUBSCRIPTIONS = 256  # random topics subscribed at once, at most
# libzmq keeps a trie node (about 100 bytes, twice) per byte of every subscribed topic, and
# its own unsubscription recurses per byte: keep "huge" well inside the default stack.
HUGE_TOPIC_BYTES = 48 * 1024

NAMES = ("fz0", "fz1", "fz2", "fz3")  # the fuzz sessions; never "Alice" or "Bob"
NAME_POOL = (*NAMES, "fz4", "FZ0", "fuzzer", "x" * 32, "x" * 33, "", "a b", "ünï", "a/b", "#fz")
ROOM_POOL = ("general", "fuzz", "lab", "#Fuzz", "LAB", "x" * 32, "x" * 33, "", "#", "a b", "a/b")
ROOM_POOL += ("ünï", "\u212a", "sys", "to")
MARK_POOL = ("j1", "j2", "e1", "e2", "e3", "zz", "", "E1", "x" * 17, "a/b", "é")
ID_POOL = ("m1", "m2", "h1", "", "bad id", "x" * 65, "é")
ALPHABET = list("abcXYZ019 _-.#/\\\"'{}[]:,\t\n\r\x00\x1b\x7f\x85\u202e\u2066é漢😀\ufeff\u200b")
BAD_VERSIONS = (0, 2, -1, "1", 1.0, True, None, [1], {"v": 1}, 10**30)
KINDS = ("join", "say", "ping", "leave", "enter", "part", "msg", "nick", "topic", "who")
KINDS += ("rooms", "history")
KIND_WEIGHTS = (6, 25, 6, 1, 8, 5, 8, 4, 6, 6, 4, 8)
COUNT_KEYS = ("history", "after", "before", "limit", "since")
HUGE_NUMBERS = (-1, 2**31, 2**53 + 1, 2**63 - 1, 2**63, 2**64, 10**30, -(2**63), 1e308, 0.5)
ODD_VALUES: tuple[Any, ...] = (None, True, False, 0, -1, 1.0, "", "1", [], {}, [1, "a"])
ODD_VALUES += ({"a": 1}, float("nan"), float("inf"), "\ud800", 2**64, ["general"] * 40)
INVALID_UTF8 = (b"\xff", b"\xfe\xff", b"\xc0\x80", b"\xed\xa0\x80", b"\xf4\x90\x80\x80", b"\x80")
PLACEHOLDER = "\x01placeholder\x01"


def seeded(message: str) -> str:
    return f"{message} (fuzz seed {SEED}; rerun with ZCHAT_FUZZ_SEED={SEED})"


def fail(message: str) -> AssertionError:
    return AssertionError(seeded(message))


def token(rng: random.Random) -> str:
    """A secret or an inbox: 32 lower-case hex digits."""
    return f"{rng.getrandbits(128):032x}"


def tracebacks(lines: list[str]) -> list[str]:
    """Each traceback in a log, from its first line to the exception it ends with."""
    found: list[str] = []
    for at, line in enumerate(lines):
        if line.startswith("Traceback"):
            end = next((i for i in range(at + 1, len(lines)) if not lines[i].startswith(" ")), at)
            found.append("\n".join(lines[max(at - 1, 0) : end + 1]))
    return found


@dataclass(frozen=True)
class Identity:
    name: str
    secret: str
    inbox: str


class Fuzzer:
    """Random frames for the in-socket and subscription messages for the out-socket,
    from one seeded generator: the same seed makes the same sequence."""

    def __init__(self, rng: random.Random, identities: list[Identity]) -> None:
        self.rng = rng
        self.identities = identities
        self.live: list[bytes] = []  # topics subscribed and not yet unsubscribed
        self.queued: list[bytes] = []  # subscription messages that must come next

    # --- the in-socket ------------------------------------------------------------------

    def frames(self) -> list[bytes]:
        rng = self.rng
        roll = rng.random()
        if roll < 0.15:
            parts = [rng.randbytes(self.size()) for _ in range(rng.choice((1, 1, 1, 2, 3, 5)))]
        else:
            ident = rng.choice(self.identities) if rng.random() < 0.85 else None
            frame = p.encode_client(self.request(ident))[0]
            if roll < 0.45:
                parts = [frame]
            elif roll < 0.85:
                parts = [self.mutate_json(json.loads(frame))]
            else:
                parts = self.mutate_bytes(frame)
        # a frame past MAXMSGSIZE would cost the whole connection: those go elsewhere
        return [part[: p.MAX_FRAME_BYTES] for part in parts]

    def size(self) -> int:
        roll = self.rng.random()
        if roll < 0.8:
            return self.rng.randrange(64)
        return self.rng.randrange(1024) if roll < 0.98 else self.rng.randrange(p.MAX_FRAME_BYTES)

    def text(self) -> str:
        roll = self.rng.random()
        count = self.rng.randint(1, 40) if roll < 0.7 else self.rng.randint(0, 300)
        if roll > 0.995:
            count = self.rng.randint(3000, 4200)  # around MAX_TEXT_BYTES, either side
        return "".join(self.rng.choices(ALPHABET, k=count))

    def request(self, ident: Identity | None) -> p.ClientMessage:
        """A client request that is valid in form, if not always in value."""
        rng = self.rng
        secret = ident.secret if ident else token(rng)
        inbox = ident.inbox if ident else token(rng)
        room, text, id_ = rng.choice(ROOM_POOL), self.text(), rng.choice(ID_POOL)
        if rng.random() < 0.5:
            room = rng.choice(ROOM_POOL[:5])  # the rooms the fuzz sessions join
        elif rng.random() < 0.3:
            room = f"f{rng.randrange(40)}"  # rooms that come and go
        match rng.choices(KINDS, KIND_WEIGHTS)[0]:
            case "join":
                name = ident.name if ident and rng.random() < 0.7 else rng.choice(NAME_POOL)
                rooms = tuple(rng.choices(ROOM_POOL[:5], k=rng.randint(1, 3)))
                since = {r: rng.randrange(50) for r in rooms if rng.random() < 0.3}
                mark = rng.choice(MARK_POOL[:6]) if rng.random() < 0.5 else ""
                return p.Join(name, secret, inbox, rooms, rng.randrange(3), since, mark)
            case "say":
                return p.Say(secret, room, text, id_, rng.random() < 0.2)
            case "ping":
                return p.Ping(secret, inbox)
            case "leave":
                return p.Leave(secret, text[:300])
            case "enter":
                mark = rng.choice(MARK_POOL)
                if p.MARK_RE.fullmatch(mark) and rng.random() < 0.5:  # its marker, some time
                    self.live.append(f"to/{inbox}/{mark}/".encode())
                    self.queued.append(b"\x01" + self.live[-1])
                return p.Enter(secret, room, mark, rng.randrange(3))
            case "part":
                return p.Part(secret, room, text[:50])
            case "msg":
                return p.Msg(secret, rng.choice(NAME_POOL), text, id_)
            case "nick":
                return p.Nick(secret, rng.choice(NAME_POOL))
            case "topic":
                return p.SetTopic(secret, room, text)
            case "who":
                return p.Who(secret, room, id_)
            case "rooms":
                return p.ListRooms(secret, id_)
            case _:
                after, before = rng.randrange(100), rng.choice((0, rng.randrange(200)))
                limit = rng.choice((0, 1, 5, 20, 1000)) if rng.random() < 0.1 else rng.randrange(5)
                return p.GetHistory(secret, room, after, before, limit, id_)

    def mutate_json(self, obj: dict[str, Any]) -> bytes:
        """Change the decoded object: wrong types, missing and extra fields, bad versions
        and kinds, huge numbers, deep nesting, lone surrogates, long strings."""
        rng = self.rng
        splice = ""
        for _ in range(rng.randint(1, 3)):
            key = rng.choice(list(obj)) if obj else "v"
            op = rng.randrange(10)
            if op == 0:
                obj[key] = rng.choice(ODD_VALUES)
            elif op == 1:
                obj.pop(key, None)
            elif op == 2:
                obj[rng.choice(("x", "", "v ", "\u0000", "type2"))] = rng.choice(ODD_VALUES)
            elif op == 3:
                obj["v"] = rng.choice(BAD_VERSIONS)
            elif op == 4:
                obj["type"] = rng.choice((*KINDS, "dance", "", "JOIN", "welcome", 5, None))
            elif op == 5:
                value = rng.choice(HUGE_NUMBERS)
                field = rng.choice(COUNT_KEYS)
                obj[field] = {rng.choice(ROOM_POOL): value} if field == "since" else value
            elif op == 6:
                depth = rng.choice((10, 100, 999, 1001, 5000, 15000))
                opener, closer = rng.choice((("[", "]"), ('{"a":', "}")))
                splice = opener * depth + "1" + closer * depth
                obj[key] = PLACEHOLDER
            elif op == 7:
                obj[key] = rng.choice(("\ud800", "a\udfffb", "\udbff\udc00", "\ud83d"))
            elif op == 8:
                obj["rooms"] = rng.choice(([], ["general"] * 33, [1, 2], "general", [[]], None))
            else:
                obj[key] = "x" * rng.choice((100, 5000, 30000))
        text = json.dumps(obj, ensure_ascii=rng.random() < 0.5)
        if splice:
            text = text.replace(json.dumps(PLACEHOLDER), splice, 1)
        if rng.random() < 0.05:
            text = f"{text[:-1]}, {text[1:]}"  # every key twice
        return text.encode("utf-8", "surrogatepass")

    def mutate_bytes(self, frame: bytes) -> list[bytes]:
        """Change the bytes: flips, truncation, invalid UTF-8, copies; and the frame
        count: duplicated, extra, empty."""
        rng = self.rng
        data = bytearray(frame)
        for _ in range(rng.randint(1, 4)):
            op = rng.randrange(5)
            at = rng.randrange(len(data) + 1)
            if op == 0 and data:
                data[min(at, len(data) - 1)] ^= 1 << rng.randrange(8)
            elif op == 1:
                del data[at:]
            elif op == 2:
                data[at:at] = rng.choice(INVALID_UTF8)
            elif op == 3:
                data[at:at] = data[rng.randrange(len(data) + 1) :][: rng.randrange(64)]
            else:
                data[at:at] = rng.randbytes(rng.randrange(8))
        parts = [bytes(data)]
        roll = rng.random()
        if roll < 0.1:
            parts = [frame, frame]
        elif roll < 0.15:
            parts.append(rng.randbytes(rng.randrange(16)))
        elif roll < 0.18:
            parts = [b""]
        elif roll < 0.2:
            parts.insert(0, b"")
        return parts

    # --- the out-socket -------------------------------------------------------------------

    def subscription(self) -> bytes:
        """One message for the XSUB socket: a subscription (1 + topic) or an
        unsubscription (0 + topic). Never anything else: libzmq 4.3.5's XPUB_MANUAL
        queues such a message without its pipe, and the broker's next subscribe() then
        lands on another connection (reported; it would also misroute the barrier)."""
        rng = self.rng
        if self.queued:
            return self.queued.pop(0)
        roll = rng.random()
        if self.live and (roll < 0.45 or len(self.live) >= LIVE_SUBSCRIPTIONS):
            return b"\x00" + self.live.pop(rng.randrange(len(self.live)))
        topic = self.topic()
        if len(topic) > 4096:  # a huge one is dropped at once: the baseline holds its peak
            self.queued.append(b"\x00" + topic)
        else:
            self.live.append(topic)
        return b"\x01" + topic

    def topic(self) -> bytes:
        """Public, inbox-like, marker-like, malformed, random and (rarely) huge topics."""
        rng = self.rng
        inbox = rng.choice(self.identities).inbox if rng.random() < 0.15 else token(rng)
        if rng.random() < 0.002:
            return b"room/" + rng.randbytes(rng.randrange(4096, HUGE_TOPIC_BYTES))
        match rng.randrange(7):
            case 0:
                return rng.choice((b"", b"t", b"to", b"to/", b"sys/", b"room/", b"r", b"s"))
            case 1:
                return f"room/{rng.choice(ROOM_POOL)}/".encode()
            case 2:
                return f"to/{inbox}/".encode()
            case 3:
                return f"to/{inbox}/{rng.choice(MARK_POOL)}/".encode()
            case 4:
                return f"to/{inbox}".encode() + rng.choice((b"", b"/x", b"//", b"/e1/x/"))
            case 5:
                return b"to/" + rng.randbytes(rng.randrange(40))
            case _:
                return rng.randbytes(rng.randrange(64))

    def unsubscribe_all(self) -> list[bytes]:
        """Messages undoing every live subscription, so that the broker is back to its
        resting state: what is left after that is a leak, not state."""
        out = [*self.queued, *(b"\x00" + topic for topic in self.live)]
        self.live.clear()
        self.queued.clear()
        return out


class Storm:
    """The raw sockets that carry the fuzz, and the barrier that tells when the broker
    has handled all of it: a JOIN sent last on the PUSH is answered on an inbox the
    watcher subscribed to; a JOIN whose inbox subscription is sent last on the XSUB is
    answered to the XSUB. Each pipe is first in, first out."""

    def __init__(self, ctx: zmq.Context[zmq.Socket[bytes]], port: int, seed: int) -> None:
        self.ctx = ctx
        self.port = port
        self.rng = random.Random(seed)
        self.push = raw_socket(ctx, zmq.PUSH, port)
        # a dropped connection would lose the frames queued on it: there must be none
        self.push_drops = self.push.get_monitor_socket(zmq.EVENT_DISCONNECTED)
        self.xsub = raw_socket(ctx, zmq.XSUB, port + 1)
        self.watcher = raw_socket(ctx, zmq.SUB, None)  # the fuzz sessions' inboxes, the barriers'
        self.identities = [Identity(name, token(self.rng), token(self.rng)) for name in NAMES]
        for ident in self.identities:
            self.watcher.subscribe(p.inbox_topic(ident.inbox))
        self.watcher.connect(f"tcp://127.0.0.1:{port + 1}")
        self.fuzzer = Fuzzer(self.rng, self.identities)
        self.barriers = 0

    def begin(self) -> None:
        for ident in self.identities:  # sessions, so that requests get past the secret check
            join = p.Join(ident.name, ident.secret, ident.inbox, ("fuzz",), 0)
            self.send(p.encode_client(join))
        # the largest subscription first: the baseline then holds the allocator's peak
        huge = b"room/" + self.rng.randbytes(HUGE_TOPIC_BYTES)
        self.xsub.send(b"\x01" + huge)
        self.xsub.send(b"\x00" + huge)

    def one(self) -> None:
        if self.rng.random() < SUBSCRIPTION_SHARE:
            self.xsub.send(self.fuzzer.subscription())
        else:
            self.send(self.fuzzer.frames())

    def send(self, parts: list[bytes], sock: zmq.Socket[bytes] | None = None) -> None:
        try:
            (sock or self.push).send_multipart(parts)
        except zmq.Again:
            raise fail(f"the broker stopped reading: a send blocked {SEND_TIMEOUT_MS} ms") from None

    def drain(self) -> None:
        for sock in (self.watcher, self.xsub):
            while True:
                try:
                    sock.recv_multipart(zmq.NOBLOCK)
                except zmq.Again:
                    break

    def settle(self) -> None:
        """Undo the live subscriptions, then return once the broker has handled
        everything sent so far on both sockets."""
        for message in self.fuzzer.unsubscribe_all():
            self.xsub.send(message)
        self.barriers += 1
        via_push = Identity(f"barrier{self.barriers}", token(self.rng), token(self.rng))
        via_xsub = Identity(f"xbarrier{self.barriers}", token(self.rng), token(self.rng))
        self.watcher.subscribe(p.inbox_topic(via_push.inbox))
        for ident in (via_push, via_xsub):
            self.send(p.encode_client(p.Join(ident.name, ident.secret, ident.inbox, ("bar",), 0)))
        self.xsub.send(b"\x01" + p.inbox_topic(via_xsub.inbox))
        await_answer(self.watcher, p.inbox_topic(via_push.inbox))
        await_answer(self.xsub, p.inbox_topic(via_xsub.inbox))
        for ident in (via_push, via_xsub):
            self.send(p.encode_client(p.Leave(ident.secret)))
        self.watcher.unsubscribe(p.inbox_topic(via_push.inbox))
        self.xsub.send(b"\x00" + p.inbox_topic(via_xsub.inbox))

    def oversized(self) -> None:
        """Frames past MAXMSGSIZE, each alone on a socket of its own, which the broker's
        libzmq drops: wait until it has."""
        for parts in (
            [self.rng.randbytes(p.MAX_FRAME_BYTES + 1)],
            [self.rng.randbytes(1024 * 1024)],
            [b'{"v": 1}', b"x" * (p.MAX_FRAME_BYTES + 1)],
        ):
            big = raw_socket(self.ctx, zmq.PUSH, None)
            events = big.get_monitor_socket(zmq.EVENT_DISCONNECTED)
            big.connect(f"tcp://127.0.0.1:{self.port}")
            self.send(parts, big)
            if not events.poll(BARRIER_SECONDS * 1000):
                raise fail("the broker kept a connection that sent an oversized frame")
            big.disable_monitor()
            events.close()
            big.close()

    def close(self) -> None:
        if self.push_drops.poll(0):
            raise fail("the broker dropped the connection of the fuzz PUSH socket")
        self.push.disable_monitor()
        for sock in (self.push_drops, self.push, self.xsub, self.watcher):
            sock.close()


def await_answer(sock: zmq.Socket[bytes], topic: bytes) -> None:
    """Read until a welcome or refusal on ``topic`` arrives; fail at the deadline."""
    end = time.monotonic() + BARRIER_SECONDS
    while (left := end - time.monotonic()) > 0:
        if not sock.poll(min(left, 1.0) * 1000):
            continue
        frames = sock.recv_multipart()
        if frames[0] == topic and json.loads(frames[1])["type"] in ("welcome", "refused"):
            return
    raise fail(f"no answer on {topic!r} within {BARRIER_SECONDS} s: the broker is stuck")


def raw_socket(
    ctx: zmq.Context[zmq.Socket[bytes]], kind: int, port: int | None
) -> zmq.Socket[bytes]:
    sock = ctx.socket(kind)
    sock.setsockopt(zmq.LINGER, 0)
    sock.setsockopt(zmq.SNDTIMEO, SEND_TIMEOUT_MS)
    # Unbounded on our side: a full receive queue would stop libzmq from answering the
    # broker's heartbeats, and an XSUB drops the subscriptions it cannot queue.
    sock.setsockopt(zmq.SNDHWM, 0 if kind == zmq.XSUB else 1000)
    sock.setsockopt(zmq.RCVHWM, 0)
    if port is not None:
        sock.connect(f"tcp://127.0.0.1:{port}")
    return sock


def rss_bytes(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) * 1024
    raise AssertionError(f"no VmRSS for process {pid}")


def storm(broker: Proc, port: int, ctx: zmq.Context[zmq.Socket[bytes]]) -> tuple[int, int]:
    """Send the sequences; the broker's RSS after the warm-up and at the end."""
    pid = broker.popen.pid
    fuzz = Storm(ctx, port, SEED)
    fuzz.begin()
    started = time.monotonic()
    baseline = 0
    for index in range(SEQUENCES):
        if index == WARM_UP:
            fuzz.settle()
            baseline = rss_bytes(pid)
        if index == SEQUENCES // 2:
            fuzz.oversized()
        fuzz.one()
        if index % DRAIN_EVERY == 0:
            fuzz.drain()
            if broker.popen.poll() is not None:
                raise fail(f"the broker died after {index} sequences")
            if time.monotonic() - started > FUZZ_SECONDS:
                raise fail(f"only {index} sequences sent in {FUZZ_SECONDS} s")
    fuzz.settle()
    after = rss_bytes(pid)
    fuzz.close()
    print(
        f"{SEQUENCES} sequences in {time.monotonic() - started:.1f} s; broker RSS "
        f"{baseline / 2**20:.1f} MiB after the warm-up, {after / 2**20:.1f} MiB at the end"
    )
    return baseline, after


def test_the_broker_survives_100k_random_sequences_and_still_serves(
    procs: list[Proc], ctx: zmq.Context[zmq.Socket[bytes]], tmp_path: Path
) -> None:
    """Whatever arrives on either socket, the broker stays up, logs no traceback, grows
    by less than RSS_GROWTH_LIMIT, and two real clients can still chat afterwards."""
    print(f"fuzz seed {SEED}")
    # no flood limit: the fuzz sessions must get past it to reach the rules behind it
    # the rules under fuzz, not the connection guard (which would cut the fuzzer at once:
    # tests/test_hostile.py is its test)
    broker, port = start_broker(
        "--rate", "0", "--no-connection-limits", db=str(tmp_path / "history.db")
    )
    procs.append(broker)
    baseline, after = storm(broker, port, ctx)
    assert after - baseline < RSS_GROWTH_LIMIT, seeded(
        f"broker RSS grew by {(after - baseline) / 2**20:.1f} MiB "
        f"({baseline / 2**20:.1f} -> {after / 2**20:.1f} MiB)"
    )

    with (
        Client("Alice", port=port, context=ctx) as alice,
        Client("Bob", port=port, context=ctx) as bob,
    ):
        alice.send("still there after the storm?")
        expect_message(bob, lambda m: m.sender == "Alice" and m.text.endswith("the storm?"))
        bob.send("loud and clear")
        expect_message(alice, lambda m: m.sender == "Bob" and m.text == "loud and clear")

    assert broker.popen.poll() is None, seeded("the broker died")
    broker.signal(signal.SIGTERM)
    assert broker.wait() == 0, seeded("the broker did not stop cleanly")
    broker.collect()
    found = tracebacks(broker.lines["stderr"] + broker.lines["stdout"])
    kinds = sorted({block.splitlines()[-1] for block in found})
    assert not found, seeded(
        f"the broker logged {len(found)} traceback(s), ending in: {kinds}; the first:\n{found[0]}"
    )
