"""Quiet sessions (a join with ``"quiet": true``): they only post. Their lines are
stamped, stored and flood-limited as anyone's and their name is theirs while they
live, but no join, leave or nick notice tells of them and no member list shows them."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from datetime import UTC, datetime

import pytest

from conftest import RunningBroker
from support import expect_message
from zchat import Client
from zchat import protocol as p
from zchat.aio import AsyncClient
from zchat.broker.limits import RateLimit
from zchat.broker.rules import Actions, BrokerRules
from zchat.broker.store import HistoryStore
from zchat.errors import JoinRefused

TS = datetime(2025, 3, 1, 14, 30, 15, tzinfo=UTC)


def token(n: int) -> str:
    return f"{n:032x}"


class Peer:
    def __init__(self, name: str, n: int, quiet: bool = False) -> None:
        self.name, self.secret, self.inbox = name, token(2 * n), token(2 * n + 1)
        self.topic, self.quiet = p.inbox_topic(self.inbox), quiet

    def join(self, rooms: tuple[str, ...] = ("general",)) -> list[bytes]:
        join = p.Join(self.name, self.secret, self.inbox, rooms, 0, quiet=self.quiet)
        return p.encode_client(join)


def published(actions: Actions) -> list[tuple[bytes, p.ServerMessage]]:
    return [p.decode_server(frames) for frames in actions.publish]


def join(rules: BrokerRules, peer: Peer, now: float = 1.0) -> list[tuple[bytes, p.ServerMessage]]:
    rules.on_subscription(b"\x01" + peer.topic, now)
    return published(rules.on_inbound(peer.join(), "127.0.0.1", now))


def ask(
    rules: BrokerRules, msg: p.ClientMessage, now: float = 2.0
) -> list[tuple[bytes, p.ServerMessage]]:
    return published(rules.on_inbound(p.encode_client(msg), "127.0.0.1", now))


def room_events(out: list[tuple[bytes, p.ServerMessage]]) -> list[p.ServerMessage]:
    return [msg for topic, msg in out if topic.startswith(p.ROOM_PREFIX)]


@pytest.fixture
def rules() -> BrokerRules:
    return BrokerRules("epoch1", clock=lambda: TS)


def test_a_quiet_join_is_welcomed_and_announced_to_no_one(rules: BrokerRules) -> None:
    join(rules, Peer("Bob", 1))
    ci = Peer("ci", 2, quiet=True)
    out = join(rules, ci)
    assert out == [(ci.topic, p.Welcome("ci", "epoch1", {"general": p.RoomState(1, ("Bob",))}))]


def test_its_lines_are_stamped_with_its_name_and_stored(rules: BrokerRules) -> None:
    ci = Peer("ci", 2, quiet=True)
    join(rules, ci)
    out = ask(rules, p.Say(ci.secret, "general", "build 142 is green", "m1"))
    line = p.Chat("general", 1, TS, "ci", "build 142 is green", "m1")
    assert out == [(b"room/general/", line)]
    assert rules.store.history("general", 0, 2, 10) == ([line], 0)


def test_it_is_no_member_for_who_rooms_or_anyone_welcomed(rules: BrokerRules) -> None:
    ci = Peer("ci", 2, quiet=True)
    join(rules, ci)
    bob = Peer("Bob", 1)
    out = join(rules, bob)
    assert out[0] == (bob.topic, p.Welcome("Bob", "epoch1", {"general": p.RoomState(0, ("Bob",))}))
    assert ask(rules, p.Who(ci.secret, "general", "w1")) == [
        (ci.topic, p.Members("general", ("Bob",), "", "w1"))
    ]
    rooms = ask(rules, p.ListRooms(ci.secret, "r1"))
    assert rooms == [(ci.topic, p.RoomList((p.RoomInfo("general", 1, ""),), "r1"))]


def test_its_name_is_held_while_it_lives_and_freed_without_a_word(rules: BrokerRules) -> None:
    ci = Peer("ci", 2, quiet=True)
    join(rules, ci)
    other = Peer("CI", 3)
    assert join(rules, other) == [
        (other.topic, p.Refused("name-taken", "name 'ci' is taken")),
    ]
    assert ask(rules, p.Leave(ci.secret, "done")) == []
    assert rules.sessions == []
    assert room_events(join(rules, other, now=3.0)) == [p.Joined("general", 1, TS, "CI")]


@pytest.mark.parametrize("end", ["unsubscribe", "part", "nick", "enter"])
def test_its_other_comings_and_goings_are_not_announced(rules: BrokerRules, end: str) -> None:
    ci = Peer("ci", 2, quiet=True)
    join(rules, ci)
    match end:
        case "unsubscribe":  # its process died
            out = published(rules.on_subscription(b"\x00" + ci.topic, 2.0))
            assert rules.sessions == []
        case "part":
            out = ask(rules, p.Part(ci.secret, "general", "bye"))
            assert out == [(ci.topic, p.Parted("general"))]
        case "nick":
            out = ask(rules, p.Nick(ci.secret, "deploybot"))
            assert out == [(ci.topic, p.NickChanged("deploybot"))]
            line = ask(rules, p.Say(ci.secret, "general", "hi", "m2"))
            assert room_events(line) == [p.Chat("general", 1, TS, "deploybot", "hi", "m2")]
        case "enter":
            ask(rules, p.Enter(ci.secret, "ops", "e1"))
            out = published(rules.on_subscription(b"\x01" + p.marker_topic(ci.inbox, "e1"), 2))
            assert out == [(ci.topic, p.Entered("ops", p.RoomState(0, ())))]
    assert room_events(out) == []
    assert rules.store.room_state("general")[0] == (1 if end == "nick" else 0)


def test_it_is_flood_limited_as_any_session() -> None:
    rules = BrokerRules("epoch1", clock=lambda: TS, limit=RateLimit(1.0, 2))
    ci = Peer("ci", 2, quiet=True)
    join(rules, ci, now=0.0)
    said = [ask(rules, p.Say(ci.secret, "general", f"line {n}", f"m{n}"), 0.0) for n in range(3)]
    assert [len(room_events(out)) for out in said] == [1, 1, 0]
    refusal = said[2][0][1]
    assert isinstance(refusal, p.Error) and refusal.code == "rate-limited"


def test_a_quiet_join_under_an_orphans_name_ends_the_orphan() -> None:
    store = HistoryStore(":memory:")
    store.append(p.Joined("general", 1, TS, "ci"), "")
    rules = BrokerRules("epoch2", store, clock=lambda: TS)
    rules.start(0.0)
    ci = Peer("ci", 2, quiet=True)
    rules.on_subscription(b"\x01" + ci.topic, 1.0)
    rejoin = p.Join("ci", ci.secret, ci.inbox, ("general",), 0, {"general": 1}, quiet=True)
    out = published(rules.on_inbound(p.encode_client(rejoin), "127.0.0.1", 1.0))
    # it would never announce a leave: history would show "ci" here for ever
    assert room_events(out) == [p.Left("general", 2, TS, "ci", "broker restarted")]
    assert store.present() == {}


# --- on real sockets ---------------------------------------------------------------------


def test_a_quiet_client_is_seen_as_its_lines_and_holds_its_name(
    make_client: Callable[..., Client],
) -> None:
    bob = make_client("Bob", history=0)
    assert bob.settle()  # answered after Bob's own join notice
    while bob.receive(timeout=0) is not None:  # what joining told Bob
        pass
    ci = make_client("ci", quiet=True)
    with pytest.raises(JoinRefused) as refused:
        make_client("CI")
    assert refused.value.code == "name-taken"
    ci.send("line 1")
    ci.send("line 2")
    assert ci.flush()
    ci.close()  # returns once the broker has ended the session
    bob.who()
    assert bob.settle()
    seen = []
    while (msg := bob.receive(timeout=0)) is not None:
        seen.append((msg.kind, msg.sender, msg.text))
    assert seen == [
        ("message", "ci", "line 1"),
        ("message", "ci", "line 2"),
        ("system", None, "in #general: Bob"),
    ]


@pytest.mark.broker(rate=0.001, burst=2)  # two requests, then (nearly) none
def test_a_quiet_client_keeps_to_the_flood_limit(make_client: Callable[..., Client]) -> None:
    ci = make_client("ci", quiet=True)
    for n in range(3):  # one more than the burst: one at least is refused
        ci.send(f"line {n}")
    expect_message(ci, lambda m: m.kind == "system" and "not sent: slow down" in m.text)


def test_an_async_quiet_client_too(
    broker: RunningBroker, make_client: Callable[..., Client]
) -> None:
    bob = make_client("Bob", history=0)
    assert bob.settle()
    while bob.receive(timeout=0) is not None:
        pass

    async def post() -> None:
        async with AsyncClient("ci", port=broker.port, quiet=True) as ci:
            await ci.send("from asyncio")
            assert await ci.flush()

    asyncio.run(post())
    assert bob.settle()
    seen = []
    while (msg := bob.receive(timeout=0)) is not None:
        seen.append((msg.kind, msg.sender, msg.text))
    assert seen == [("message", "ci", "from asyncio")]
