"""The chat on real loopback sockets: clients, a broker in a thread or a child process."""

from __future__ import annotations

import logging
import signal
import time
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
import zmq

from conftest import RunningBroker
from support import Proc, expect_message, frames_until, start_broker, zchat_command
from zchat import Client, Message
from zchat import protocol as p
from zchat.errors import JoinRefused, NotDelivered

MakeClient = Callable[..., Client]


def is_chat(sender: str, text: str) -> Callable[[Message], bool]:
    return lambda m: m.kind == "message" and m.sender == sender and m.text == text


def is_system(fragment: str) -> Callable[[Message], bool]:
    return lambda m: m.kind == "system" and fragment in m.text


def test_two_clients_chat(make_client: MakeClient) -> None:
    alice = make_client("Alice")
    bob = make_client("Bob")
    expect_message(alice, lambda m: m.kind == "join" and m.sender == "Bob")
    before = datetime.now(UTC)
    alice.send("Halo semua!")
    got = expect_message(bob, is_chat("Alice", "Halo semua!"))
    assert got.room == "general"
    assert before - timedelta(seconds=1) <= got.ts <= datetime.now(UTC)
    assert got.ts.tzinfo is not None and got.ts.microsecond >= 0
    echo = expect_message(alice, is_chat("Alice", "Halo semua!"))
    assert echo.seq == got.seq
    bob.send("Hai Alice!")
    reply = expect_message(alice, is_chat("Bob", "Hai Alice!"))
    assert reply.seq == got.seq + 1  # type: ignore[operator]


def test_nothing_sent_after_join_is_missed(make_client: MakeClient) -> None:
    """Each client speaks the moment join() returns; every client that had joined by
    then must see the line. No sleeps: join() returning is the guarantee."""
    clients = []
    for i in range(12):
        client = make_client(f"user{i}")
        client.send(f"first words of user{i}")
        clients.append(client)
    for i, client in enumerate(clients):
        for j in range(i, len(clients)):
            expect_message(client, is_chat(f"user{j}", f"first words of user{j}"))


def test_taken_name_is_refused_case_insensitively(make_client: MakeClient) -> None:
    make_client("Alice")
    with pytest.raises(JoinRefused, match="name 'alice' is taken") as caught:
        make_client("alice")
    assert caught.value.code == "name-taken"


def test_a_name_is_free_again_after_its_owner_leaves(make_client: MakeClient) -> None:
    alice = make_client("Alice")
    observer = make_client("Observer")
    alice.close("bye")
    expect_message(observer, lambda m: m.kind == "leave" and m.text == "quit: bye")
    make_client("ALICE")
    expect_message(observer, lambda m: m.kind == "join" and m.sender == "ALICE")


def test_a_clean_leave_is_always_reported_as_a_quit(
    make_client: MakeClient, broker: RunningBroker, ctx: zmq.Context[zmq.Socket[bytes]]
) -> None:
    """The LEAVE and the connection's end race to the broker on two sockets; the client
    waits for the broker's notice of its LEAVE before closing, so the quit wins."""
    observer = make_client("Observer")
    for i in range(20):
        client = Client(f"quick{i}", port=broker.port, context=ctx)
        client.join()
        client.close("bye")
        left = expect_message(observer, lambda m: m.kind == "leave")
        assert (left.sender, left.text) == (f"quick{i}", "quit: bye")


def test_killed_client_is_noticed_within_two_seconds(
    broker: RunningBroker, make_client: MakeClient, procs: list[Proc]
) -> None:
    alice = make_client("Alice")
    carol = Proc(zchat_command("join", "--name", "Carol", "--port", str(broker.port)))
    procs.append(carol)
    expect_message(alice, lambda m: m.kind == "join" and m.sender == "Carol")
    carol.signal(signal.SIGKILL)
    killed_at = time.monotonic()
    left = expect_message(alice, lambda m: m.kind == "leave" and m.sender == "Carol", timeout=2)
    assert left.text == "connection lost"
    assert time.monotonic() - killed_at < 2


def test_silent_client_times_out_and_comes_back_by_itself(
    broker: RunningBroker, make_client: MakeClient, procs: list[Proc]
) -> None:
    alice = make_client("Alice")
    carol = Proc(zchat_command("join", "--name", "Carol", "--port", str(broker.port)))
    procs.append(carol)
    expect_message(alice, lambda m: m.kind == "join" and m.sender == "Carol")
    carol.expect(r"\] Carol joined$")  # her own client has taken the welcome, too
    carol.signal(signal.SIGSTOP)  # alive, but silent: no FIN, no heartbeat answers
    left = expect_message(alice, lambda m: m.kind == "leave" and m.sender == "Carol", timeout=15)
    assert left.text == "timed out"
    carol.signal(signal.SIGCONT)
    expect_message(alice, lambda m: m.kind == "join" and m.sender == "Carol", timeout=15)
    carol.expect(r"\*\*\* joined again as Carol")
    carol.send_line("back again")
    expect_message(alice, is_chat("Carol", "back again"))


def test_clients_survive_a_broker_restart(
    procs: list[Proc], ctx: zmq.Context[zmq.Socket[bytes]], tmp_path: Path
) -> None:
    db = str(tmp_path / "history.db")
    broker, port = start_broker(db=db)
    procs.append(broker)
    alice = Client("Alice", port=port, context=ctx)
    alice.join()
    bob = Proc(zchat_command("join", "--name", "Bob", "--port", str(port)))
    procs.append(bob)
    expect_message(alice, lambda m: m.kind == "join" and m.sender == "Bob")

    broker.signal(signal.SIGTERM)
    assert broker.wait() == 0
    expect_message(alice, is_system("broker shut down"))
    with pytest.raises(NotDelivered, match="broker is unreachable"):
        alice.send("typed while the broker is away")
    bob.expect(r"\*\*\* broker shut down")
    bob.send_line("while away")
    bob.expect(r"\*\*\* not sent \(the broker is unreachable, reconnecting…\): while away$")

    again, _ = start_broker(port=port, db=db)
    procs.append(again)
    expect_message(alice, is_system("joined again as Alice"), timeout=10)
    bob.expect(r"\*\*\* joined again as Bob \(nothing missed\)$", timeout=10)
    shown = bob.lines["stdout"]
    notices = [line.split("*** ")[1] for line in shown if "*** " in line]
    gone = next(i for i, text in enumerate(notices) if text.startswith("broker shut down"))
    assert notices[gone:] == [  # one line when the broker goes, one when it is back
        "broker shut down (stopped by its operator); waiting for it to come back…",
        "not sent (the broker is unreachable, reconnecting…): while away",
        "joined again as Bob (nothing missed)",
    ]
    bob.send_line("still here")
    expect_message(alice, is_chat("Bob", "still here"))
    alice.send("me too")
    bob.expect(r"^\[\d\d:\d\d:\d\d\] Alice: me too$")
    alice.who()  # presence is exact after the restart: both came back
    assert expect_message(alice, is_system("in #general:")).text == "in #general: Alice, Bob"
    alice.close()


def test_a_killed_broker_is_reported_and_rejoined(
    procs: list[Proc], ctx: zmq.Context[zmq.Socket[bytes]]
) -> None:
    broker, port = start_broker()
    procs.append(broker)
    alice = Client("Alice", port=port, context=ctx)
    alice.join()
    broker.signal(signal.SIGKILL)
    broker.wait()
    expect_message(alice, is_system("broker unreachable, reconnecting"), timeout=6)
    again, _ = start_broker(port=port)
    procs.append(again)
    expect_message(alice, is_system("joined again as Alice"), timeout=10)
    alice.send("after the crash")
    expect_message(alice, is_chat("Alice", "after the crash"))
    alice.close()


def _garbage() -> list[list[bytes]]:
    secret = "ab" * 16
    good = p.encode_client(p.Say(secret, "general", "hi"))[0]
    return [
        [b""],
        [b"\x00\xff\xfe binary \x80"],
        [good[: len(good) // 2]],  # truncated
        [good.replace(b'"v":1', b'"v":99')],
        [good.replace(b'"say"', b'"dance"')],
        [good],  # well formed, unknown session
        [good, good],  # two frames
        [b"[]"],
        [b'{"v": 1, "type": "join", "name": "X", "secret": 5}'],
    ]


def test_garbage_on_the_in_socket_is_dropped_counted_and_logged_sparingly(
    broker: RunningBroker,
    make_client: MakeClient,
    ctx: zmq.Context[zmq.Socket[bytes]],
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.WARNING, logger="zchat.broker")
    alice = make_client("Alice")
    bob = make_client("Bob")
    raw = ctx.socket(zmq.PUSH)
    raw.setsockopt(zmq.LINGER, 0)
    raw.connect(f"tcp://127.0.0.1:{broker.port}")
    rounds = 50
    for _ in range(rounds):
        for frames in _garbage():
            raw.send_multipart(frames)
    # an oversized frame (beyond MAXMSGSIZE) makes libzmq drop that connection only
    big = ctx.socket(zmq.PUSH)
    big.setsockopt(zmq.LINGER, 0)
    big.connect(f"tcp://127.0.0.1:{broker.port}")
    big.send(b"x" * (p.MAX_FRAME_BYTES + 1))
    # everything the raw socket sent is queued ahead of this marker on its connection
    marker_secret = alice.core.secret
    raw.send(p.encode_client(p.Say(marker_secret, "general", "marker", "m99"))[0])
    expect_message(bob, is_chat("Alice", "marker"))
    alice.send("still serving")
    expect_message(bob, is_chat("Alice", "still serving"))
    dropped = broker.broker.rules.dropped
    assert sum(dropped.values()) == rounds * len(_garbage())
    assert set(dropped) == {
        "empty",
        "json",
        "version",
        "type",
        "unknown-session",
        "frames",
        "field",
    }
    warnings = [r for r in caplog.records if r.name == "zchat.broker"]
    assert 1 <= len(warnings) <= len(dropped)  # rate-limited: one per kind, not 450
    raw.close()
    big.close()


def test_a_raw_subscriber_to_everything_never_sees_an_inbox(
    broker: RunningBroker, make_client: MakeClient, ctx: zmq.Context[zmq.Socket[bytes]]
) -> None:
    endpoint = f"tcp://127.0.0.1:{broker.port + 1}"
    everything = ctx.socket(zmq.SUB)
    everything.setsockopt(zmq.LINGER, 0)
    everything.subscribe(b"")
    everything.connect(endpoint)
    # the broker's heartbeat reaching it proves its subscription is in place
    assert everything.poll(5000)
    spies = [everything]
    for prefix in (b"t", b"to/", b"to/0"):
        spy = ctx.socket(zmq.SUB)
        spy.setsockopt(zmq.LINGER, 0)
        spy.subscribe(p.SYS_TOPIC)
        spy.connect(endpoint)
        assert spy.poll(5000)  # connected: what it subscribes now goes out in this order
        spy.subscribe(prefix)
        spy.subscribe(p.room_topic("general"))
        spies.append(spy)
    # a line of #general reaching a spy proves the broker has seen (and refused) its prefix
    warm, waiting = make_client("Warm"), spies[1:]
    for attempt in range(50):
        warm.send(f"warm-up {attempt}")
        waiting = [spy for spy in waiting if not _heard(spy, b"warm-up", 0.2)]
        if not waiting:
            break
    assert not waiting, "a spy never heard #general"
    alice = make_client("Alice")
    with pytest.raises(JoinRefused):
        make_client("alice")  # a refusal travels on the newcomer's inbox
    alice.send("public line")
    seen = [frame.split(b"|")[0] for spy in spies for frame in frames_until(spy, b"public line")]
    assert b"room/general/" in seen and b"sys/" in seen
    assert not [topic for topic in seen if topic.startswith(b"to/")]


def _heard(sock: zmq.Socket[bytes], marker: bytes, timeout: float) -> bool:
    try:
        frames_until(sock, marker, timeout)
    except AssertionError:
        return False
    return True


def test_send_checks_the_text_before_it_leaves(make_client: MakeClient) -> None:
    alice = make_client("Alice")
    with pytest.raises(ValueError, match="limit is 4096"):
        alice.send("x" * 5000)
    with pytest.raises(ValueError, match="empty"):
        alice.send("  ")
