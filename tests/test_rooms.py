"""Rooms, private messages, names, topics and history, end to end on real sockets."""

from __future__ import annotations

import asyncio
import os
import signal
import sys
from collections.abc import Callable
from pathlib import Path

import pytest
import zmq

from conftest import RunningBroker
from support import Proc, expect_message, frames_until, zchat_command
from zchat import Client, Members, Message, RoomInfo
from zchat import protocol as p
from zchat.aio import AsyncClient
from zchat.errors import InvalidInput

MakeClient = Callable[..., Client]


def chat(sender: str, text: str, room: str | None = None) -> Callable[[Message], bool]:
    return lambda m: (
        m.kind == "message" and m.sender == sender and m.text == text and room in (None, m.room)
    )


def system(fragment: str) -> Callable[[Message], bool]:
    return lambda m: m.kind == "system" and fragment in m.text


def drain(client: Client, until: Callable[[Message], bool], timeout: float = 5.0) -> list[Message]:
    """Every message up to and including the first that matches ``until``."""
    seen = []
    while True:
        msg = expect_message(client, lambda _: True, timeout)
        seen.append(msg)
        if until(msg):
            return seen


def test_a_room_message_reaches_only_that_room(make_client: MakeClient) -> None:
    alice = make_client("Alice", rooms=["general", "dev"])
    bob = make_client("Bob", rooms=["dev"])
    carol = make_client("Carol", rooms=["general"])
    alice.send("for dev only", room="dev")
    alice.send("for everyone", room="general")
    got = expect_message(bob, chat("Alice", "for dev only"))
    assert got.room == "dev"
    seen = drain(carol, chat("Alice", "for everyone"))
    assert not [m for m in seen if m.text == "for dev only"]


def test_room_gen_never_hears_room_general(
    broker: RunningBroker, make_client: MakeClient, ctx: zmq.Context[zmq.Socket[bytes]]
) -> None:
    gen = ctx.socket(zmq.SUB)
    gen.setsockopt(zmq.LINGER, 0)
    gen.subscribe(p.room_topic("gen"))
    gen.connect(f"tcp://127.0.0.1:{broker.port + 1}")
    speaker = make_client("Speaker", rooms=["general", "gen"])
    for attempt in range(50):  # until our subscription is in place: nothing says when
        speaker.send(f"warm-up {attempt}", room="gen")
        if gen.poll(200):
            break
    speaker.send("in general")
    speaker.send("in gen", room="gen")
    topics = [frame.split(b"|")[0] for frame in frames_until(gen, b'"text":"in gen"')]
    assert set(topics) == {b"room/gen/"}
    gen.close()


def test_entering_and_parting_rooms(make_client: MakeClient) -> None:
    alice = make_client("Alice", rooms=["general", "ops"])
    alice.send("before Bob came", room="ops")
    bob = make_client("Bob")
    bob.enter("#Ops")
    old = expect_message(bob, chat("Alice", "before Bob came"))
    assert old.replayed
    # then where the history ends, and who is there (after the older lines: times
    # shown never go back)
    expect_message(bob, system("— end of the history of #ops —"))
    entered = expect_message(bob, system("in #ops: Alice"))
    assert entered.room == "ops"
    expect_message(bob, lambda m: m.kind == "join" and m.sender == "Bob" and m.room == "ops")
    expect_message(alice, lambda m: m.kind == "join" and m.sender == "Bob" and m.room == "ops")
    assert bob.rooms == ("general", "ops")
    bob.send("hello ops", room="ops")
    expect_message(alice, chat("Bob", "hello ops", "ops"))

    bob.part("ops", "back to work")
    left = expect_message(alice, lambda m: m.kind == "leave" and m.room == "ops")
    assert (left.sender, left.text) == ("Bob", "part: back to work")
    expect_message(bob, system("you left #ops"))
    assert bob.rooms == ("general",)
    alice.send("Bob cannot hear this", room="ops")
    alice.send("but this", room="general")
    seen = drain(bob, chat("Alice", "but this"))
    assert not [m for m in seen if m.text == "Bob cannot hear this"]


def test_rooms_and_who_are_exact(make_client: MakeClient) -> None:
    alice = make_client("Alice", rooms=["general", "dev"])
    bob = make_client("Bob", rooms=["dev"])
    bob.set_topic("builds", "dev")
    expect_message(alice, lambda m: m.kind == "topic" and m.text == "builds")
    # for a program, the answers as records; for a person, as lines carrying them
    assert alice.list_rooms() == (RoomInfo("dev", 2, "builds"), RoomInfo("general", 1))
    assert expect_message(alice, system("#dev (2)")).data == RoomInfo("dev", 2, "builds")
    assert expect_message(alice, system("#general (1)")).data == RoomInfo("general", 1)
    assert alice.who("dev") == Members("dev", ("Alice", "Bob"), "builds")
    said = expect_message(alice, system("in #dev:"))
    assert said.text == "in #dev: Alice, Bob (topic: builds)"
    assert said.data == Members("dev", ("Alice", "Bob"), "builds")
    bob.close()
    expect_message(alice, lambda m: m.kind == "leave" and m.sender == "Bob")
    assert alice.who("#dev") == Members("dev", ("Alice",), "builds")
    assert expect_message(alice, system("in #dev:")).text == "in #dev: Alice (topic: builds)"
    assert alice.who("nowhere") == Members("nowhere", ())  # any room may be asked about


def test_who_and_list_rooms_answer_an_asyncio_program(broker: RunningBroker) -> None:
    async def bot() -> tuple[Members | None, tuple[RoomInfo, ...] | None]:
        async with AsyncClient("abot", port=broker.port) as chat:
            return await chat.who(), await chat.list_rooms()

    assert asyncio.run(bot()) == (Members("general", ("abot",)), (RoomInfo("general", 1),))


def test_who_is_exact_after_a_crash(
    broker: RunningBroker, make_client: MakeClient, procs: list[Proc]
) -> None:
    alice = make_client("Alice")
    carol = Proc(zchat_command("join", "--name", "Carol", "--port", str(broker.port)))
    procs.append(carol)
    expect_message(alice, lambda m: m.kind == "join" and m.sender == "Carol")
    alice.who()
    assert expect_message(alice, system("in #general:")).text == "in #general: Alice, Carol"
    carol.signal(signal.SIGKILL)
    expect_message(alice, lambda m: m.kind == "leave" and m.sender == "Carol")
    alice.who()
    assert expect_message(alice, system("in #general:")).text == "in #general: Alice"


def test_private_messages_reach_the_two_parties_only(
    broker: RunningBroker, make_client: MakeClient, ctx: zmq.Context[zmq.Socket[bytes]]
) -> None:
    spy = ctx.socket(zmq.SUB)
    spy.setsockopt(zmq.LINGER, 0)
    spy.subscribe(b"")  # everything it is allowed: narrowed to the public topics
    spy.connect(f"tcp://127.0.0.1:{broker.port + 1}")
    assert spy.poll(5000)  # a heartbeat: its subscription is in place
    alice = make_client("Alice")
    bob = make_client("Bob")
    carol = make_client("Carol")
    alice.msg("bob", "the secret word is swordfish")
    got = expect_message(bob, lambda m: m.kind == "private")
    assert (got.sender, got.to, got.text, got.room) == ("Alice", "Bob", got.text, None)
    assert got.text == "the secret word is swordfish"
    receipt = expect_message(alice, lambda m: m.kind == "private")
    assert receipt.to == "Bob"
    assert alice.core.unacknowledged == 0
    alice.send("a public line")
    seen = drain(carol, chat("Alice", "a public line"))
    assert not [m for m in seen if "swordfish" in m.text]
    frames = frames_until(spy, b"a public line")  # and what was published before it
    assert not [f for f in frames if b"swordfish" in f or alice.core.secret.encode() in f]
    spy.close()


def test_private_message_to_nobody_is_an_error_to_the_sender(make_client: MakeClient) -> None:
    alice = make_client("Alice")
    alice.msg("Zed", "hello?")
    assert expect_message(alice, system("not sent")).text == "not sent: no user named 'Zed' is here"
    with pytest.raises(InvalidInput, match="not allowed"):
        alice.msg("not a name", "x")


def test_actions(make_client: MakeClient) -> None:
    alice = make_client("Alice")
    bob = make_client("Bob")
    alice.act("waves")
    got = expect_message(bob, lambda m: m.kind == "action")
    assert (got.sender, got.text) == ("Alice", "waves")


def test_nick(make_client: MakeClient) -> None:
    alice = make_client("Alice", rooms=["general", "dev"])
    bob = make_client("Bob", rooms=["dev"])
    alice.nick("Alicia")
    renamed = expect_message(bob, lambda m: m.kind == "nick")
    assert (renamed.sender, renamed.text, renamed.room) == ("Alice", "Alicia", "dev")
    expect_message(alice, system("you are now known as Alicia"))
    assert alice.name == "Alicia"
    alice.send("new name", room="dev")
    expect_message(bob, chat("Alicia", "new name"))
    bob.nick("ALICIA")
    assert expect_message(bob, system("error")).text == "error: name 'alicia' is taken"
    make_client("Alice")  # the old name is free again


def test_topic(make_client: MakeClient) -> None:
    alice = make_client("Alice")
    bob = make_client("Bob")
    alice.set_topic("rapat jam 3")
    changed = expect_message(bob, lambda m: m.kind == "topic")
    assert (changed.sender, changed.text) == ("Alice", "rapat jam 3")
    assert bob.core.topic_of("general") == "rapat jam 3"
    carol = make_client("Carol")
    expect_message(carol, system("topic of #general: rapat jam 3"))
    with pytest.raises(InvalidInput, match="topic is 301 characters long, the limit is 300"):
        alice.set_topic("x" * 301)


def test_history_command(make_client: MakeClient) -> None:
    alice = make_client("Alice")
    for i in range(5):
        alice.send(f"line {i}")
    expect_message(alice, chat("Alice", "line 4"))
    alice.history(3)
    expect_message(alice, system("last 3 lines of #general:"))
    lines = [expect_message(alice, lambda _: True) for _ in range(3)]
    assert [m.text for m in lines] == ["line 2", "line 3", "line 4"]
    assert all(m.replayed for m in lines)


@pytest.mark.broker(rate=0)  # 60 lines at once: past the default flood limit
def test_late_joiner_gets_recent_history_then_live_without_gap_or_duplicate(
    make_client: MakeClient,
) -> None:
    alice = make_client("Alice")
    for i in range(60):
        alice.send(f"old {i}")
    expect_message(alice, chat("Alice", "old 59"))
    dave = make_client("Dave", history=50)
    alice.send("live 0")
    seen = drain(dave, chat("Alice", "live 0"))
    room_lines = [m for m in seen if m.room == "general" and m.kind != "system"]
    seqs = [m.seq for m in room_lines]
    assert seqs == list(range(seqs[0], seqs[0] + len(seqs)))  # in order, no gap, no repeat
    texts = [m.text for m in room_lines if m.kind == "message"]
    assert texts[:50] == [f"old {i}" for i in range(10, 60)]
    assert texts[50:] == ["live 0"]


def test_history_and_sequence_survive_a_broker_restart(
    ctx: zmq.Context[zmq.Socket[bytes]], tmp_path: Path
) -> None:
    db = str(tmp_path / "history.db")
    first = RunningBroker(ctx, db=db)
    port = first.port
    with Client("Alice", port=port, context=ctx) as alice:
        alice.send("said before the restart")
        last = expect_message(alice, chat("Alice", "said before the restart")).seq
    first.stop()
    second = RunningBroker(ctx, db=db, port=port)
    try:
        with Client("Dave", port=port, context=ctx) as dave:
            old = expect_message(dave, chat("Alice", "said before the restart"))
            assert old.replayed and old.seq == last
            dave.send("after")
            new = expect_message(dave, chat("Dave", "after"))
            assert new.seq is not None and last is not None and new.seq > last + 1
    finally:
        second.stop()


def test_a_rejoin_after_more_lines_than_one_answer_holds_shows_every_line_once(
    ctx: zmq.Context[zmq.Socket[bytes]], tmp_path: Path
) -> None:
    """A client away while 1,123 lines are said (more than the 1,000 one history answer
    holds) gets all of them when it joins again: the newest with its WELCOME, the
    older ones asked for in turns, oldest first; none reported lost."""
    db, total = str(tmp_path / "history.db"), p.MAX_HISTORY + 123
    first = RunningBroker(ctx, db=db, rate=0)
    port = first.port
    away = Client("Away", port=port, context=ctx)
    away.join()
    away.send("before")
    expect_message(away, chat("Away", "before"))
    first.stop()  # Away's client sits idle (no call into it) until the end
    # the lines are said on another port, where Away's sockets cannot hear them live
    elsewhere = RunningBroker(ctx, db=db, rate=0)
    try:
        with Client("Writer", port=elsewhere.port, context=ctx) as writer:
            for i in range(total):
                writer.send(f"line {i:04d}")
                if i % 100 == 99 or i == total - 1:  # keep the queues short
                    expect_message(writer, chat("Writer", f"line {i:04d}"))
    finally:
        elsewhere.stop()
    back = RunningBroker(ctx, db=db, port=port, rate=0)
    try:
        seen = drain(away, chat("Writer", f"line {total - 1:04d}"), timeout=15)
        assert [m for m in seen if m.kind == "system" and "joined again" in m.text]
        lines = [m.text for m in seen if m.kind == "message" and m.sender == "Writer"]
        assert lines == [f"line {i:04d}" for i in range(total)]  # once each, in order
        seqs = [m.seq for m in seen if m.seq is not None]
        assert seqs == sorted(set(seqs))
        assert not [m for m in seen if "could not be recovered" in m.text]
        assert away.core.gaps > 0  # the older lines came as a gap filled in turns
        away.close()
    finally:
        back.stop()


# The slow reader: a Client in a child process, so that SIGSTOP can stop it reading.
# Its kernel receive buffer is fixed small (SO_RCVBUF), so what it can hold is bounded.
SLOW_READER = """
import sys
import zmq
from zchat import Client

slow = Client("Slow", port=int(sys.argv[1]), history=0)
slow._sub.setsockopt(zmq.RCVBUF, 4096)  # fixed: the kernel does not grow it
slow.join()
print("joined", flush=True)
for msg in slow:
    if msg.kind == "message":
        print(msg.text[:9], flush=True)
        if msg.text == "done":
            break
    elif "could not be recovered" in msg.text:
        print(msg.text, flush=True)
print(f"gaps {slow.core.gaps}", flush=True)
slow.close()
"""
SLOW_QUEUE = 20  # the broker's send queue for each reader, in messages
SLOW_LINE = 1000  # bytes of text in each line
# What can wait for the stopped reader, at most: the broker's queue, then the kernel's
# buffers on both sides (SO_SNDBUF and SO_RCVBUF of 4 KiB, doubled by Linux) and
# libzmq's 8 KiB batches. A generous bound: far more must pass it by, so lines are dropped.
SLOW_HELD_BYTES = SLOW_QUEUE * (SLOW_LINE + 200) + 4 * 64 * 1024
SLOW_LINES = 3 * SLOW_HELD_BYTES // SLOW_LINE


def test_a_slow_reader_ends_with_every_line_in_order(
    ctx: zmq.Context[zmq.Socket[bytes]], procs: list[Proc]
) -> None:
    """The broker drops lines for a reader whose queue is full (PUB semantics); the
    reader, running again, sees the gaps and fills them from history, in order."""
    # the broker's kernel buffer small and fixed; the stopped reader answers no ZMTP
    # heartbeat: keep it connected meanwhile
    running = RunningBroker(ctx, sndhwm=SLOW_QUEUE, sndbuf=4096, rate=0, zmtp_heartbeat_timeout=60)
    try:
        slow = Proc([sys.executable, "-c", SLOW_READER, str(running.port)])
        procs.append(slow)
        slow.expect("^joined$")
        writer = Client("Writer", port=running.port, context=ctx)
        writer.join()
        slow.signal(signal.SIGSTOP)
        _, status = os.waitpid(slow.popen.pid, os.WUNTRACED)  # returns once it is stopped
        assert os.WIFSTOPPED(status)
        for i in range(SLOW_LINES):
            writer.send(f"line {i:04d} " + "x" * (SLOW_LINE - 10))
        # every line echoed to the writer: the broker has published them all, past the
        # stopped reader's bounded buffers
        assert writer.flush(timeout=30), "the broker did not confirm every line"
        slow.signal(signal.SIGCONT)
        writer.send("done")
        slow.expect("^gaps ", timeout=30)
        shown = [line for line in slow.lines["stdout"] if line.startswith("line ")]
        assert shown == [f"line {i:04d}" for i in range(SLOW_LINES)]
        gaps = int(slow.lines["stdout"][-1].split()[1])
        assert gaps > 0, "no line was dropped: the test did not test gap filling"
        assert not [line for line in slow.lines["stdout"] if "could not be recovered" in line]
        assert slow.wait() == 0
        writer.close()
    finally:
        running.stop()


def test_bad_names_rooms_and_commands(make_client: MakeClient) -> None:
    alice = make_client("Alice")
    with pytest.raises(InvalidInput, match="room name is 33 characters long, the limit is 32"):
        alice.enter("r" * 33)
    with pytest.raises(InvalidInput, match="name is 33 characters long, the limit is 32"):
        alice.nick("n" * 33)
    with pytest.raises(InvalidInput, match=r"room name '#a b' is not allowed"):
        alice.who("#a b")
