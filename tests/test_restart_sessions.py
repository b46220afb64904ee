"""A broker stopped (SIGTERM) or killed (SIGKILL) and started again on the same history
file: its history reads coherently. Members who come back go on without a second join
notice; members who never come back are announced as left once the grace period ends."""

from __future__ import annotations

import json
import signal
import subprocess
from pathlib import Path

import pytest
import zmq

from support import Proc, child_env, expect_message, start_broker, zchat_command
from zchat import Client
from zchat import protocol as p
from zchat.broker.store import HistoryStore

STOPS = pytest.mark.parametrize("stop", [signal.SIGKILL, signal.SIGTERM], ids=["kill-9", "sigterm"])


def stop_broker(broker: Proc, stop: int) -> None:
    broker.signal(stop)
    assert broker.wait() == (0 if stop == signal.SIGTERM else -stop)


def joins_and_leaves(db: str, room: str = "general") -> list[str]:
    """The room's stored join and leave notices, oldest first (its broker stopped)."""
    store = HistoryStore(db)
    try:
        last = store.room_state(room)[0]
        events, _ = store.history(room, 0, last + 1, p.MAX_HISTORY)
    finally:
        store.close()
    told = []
    for event in events:
        if isinstance(event, p.Joined):
            told.append(f"{event.sender} joined")
        elif isinstance(event, p.Left):
            told.append(f"{event.sender} left ({event.reason})")
    return told


def join_proc(name: str, port: int) -> Proc:
    """`zchat join` fed by a pipe: it stays until its stdin closes or it is killed."""
    proc = Proc(zchat_command("join", "--name", name, "--port", str(port)))
    proc.expect(rf"\] {name} joined$")
    return proc


@STOPS
def test_a_member_who_never_comes_back_is_announced_as_left(
    procs: list[Proc], ctx: zmq.Context[zmq.Socket[bytes]], tmp_path: Path, stop: int
) -> None:
    db = str(tmp_path / "history.db")
    broker, port = start_broker(db=db)
    procs.append(broker)
    alice = join_proc("Alice", port)
    procs.append(alice)
    stop_broker(broker, stop)
    alice.signal(signal.SIGKILL)  # gone while no broker was there to see it
    alice.wait()

    broker, _ = start_broker("--rejoin-grace", "1", port=port, db=db)
    procs.append(broker)
    with Client("Carol", port=port, context=ctx) as carol:  # before or after the leave
        leave = expect_message(carol, lambda m: m.kind == "leave" and m.sender == "Alice")
        assert leave.text == "broker restarted"
    stop_broker(broker, signal.SIGTERM)
    told = [line for line in joins_and_leaves(db) if line.startswith("Alice")]
    assert told == ["Alice joined", "Alice left (broker restarted)"]


@STOPS
def test_members_who_come_back_go_on_without_a_second_join_notice(
    procs: list[Proc], ctx: zmq.Context[zmq.Socket[bytes]], tmp_path: Path, stop: int
) -> None:
    db = str(tmp_path / "history.db")
    broker, port = start_broker(db=db)
    procs.append(broker)
    alice = join_proc("Alice", port)  # the line client, in another process
    procs.append(alice)
    with Client("Bob", port=port, context=ctx, history=0) as bob:  # the library
        stop_broker(broker, stop)
        broker, _ = start_broker(port=port, db=db)
        procs.append(broker)
        expect_message(bob, lambda m: m.kind == "system" and "joined again as Bob" in m.text)
        alice.expect(r"\*\*\* joined again as Alice \(")  # Bob's join may be missed
        stats = subprocess.run(
            zchat_command("admin", "stats", "--port", str(port)),
            capture_output=True,
            text=True,
            env=child_env(),
            timeout=30,
            check=True,
        )
        assert json.loads(stats.stdout)["orphans"] == 0  # nobody left to announce
        bob.send("still here")
        echo = expect_message(bob, lambda m: m.kind == "message")
        assert echo.text == "still here"
        stop_broker(broker, signal.SIGTERM)
    assert joins_and_leaves(db) == ["Alice joined", "Bob joined"]
