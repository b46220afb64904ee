"""Who a broker leaves in its rooms when it stops or is killed: the store's record of
who is present, kept with the events that change it, and upgraded into an old file."""

from __future__ import annotations

import json
import sqlite3
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path

import msgspec
import pytest

from zchat import protocol as p
from zchat.broker.rules import Actions, BrokerRules
from zchat.broker.store import HistoryStore

TS = datetime(2025, 3, 1, 14, 30, 15, tzinfo=UTC)


def joined(name: str, room: str = "general") -> p.Joined:
    return p.Joined(room, 0, TS, name)


def left(name: str, room: str = "general", reason: str = "quit") -> p.Left:
    return p.Left(room, 0, TS, name, reason)


def renamed(old: str, new: str, room: str = "general") -> p.Renamed:
    return p.Renamed(room, 0, TS, old, new)


@pytest.fixture
def memory() -> Iterator[HistoryStore]:
    store = HistoryStore(":memory:")
    yield store
    store.close()


def append_all(store: HistoryStore, *events: p.RoomEvent) -> None:
    """Append ``events`` numbered after the last of their room (not committed)."""
    for event in events:
        seq = store.room_state(event.room)[0] + 1
        store.append(msgspec.structs.replace(event, seq=seq), "")


# --- the store's record of who is present ---------------------------------------------


def test_present_is_who_the_stored_events_leave_in_each_room(memory: HistoryStore) -> None:
    append_all(
        memory,
        joined("Alice"),
        joined("Bob"),
        joined("Alice", "lab"),
        p.Chat("general", 0, TS, "Bob", "hi"),
        left("Bob"),
        renamed("Alice", "Alicia"),
        joined("carol", "lab"),
        renamed("carol", "Carol", "lab"),  # a change of case is a rename too
    )
    assert memory.present() == {"general": ["Alicia"], "lab": ["Alice", "Carol"]}


def test_present_changes_with_its_event_and_only_once_committed(tmp_path: Path) -> None:
    path = tmp_path / "history.db"
    store = HistoryStore(path)
    try:
        append_all(store, joined("Alice"))
        store.commit()
        append_all(store, left("Alice"), joined("Bob"))
        reader = sqlite3.connect(path)
        try:  # another reader sees the committed state: the leave is not there yet
            rows = reader.execute("SELECT room, shown FROM present").fetchall()
        finally:
            reader.close()
        assert rows == [("general", "Alice")]
        store.commit()
    finally:
        store.close()
    again = HistoryStore(path)
    try:
        assert again.present() == {"general": ["Bob"]}
    finally:
        again.close()


def test_a_file_from_before_the_record_is_upgraded_from_its_events(tmp_path: Path) -> None:
    path = tmp_path / "history.db"
    store = HistoryStore(path)
    append_all(
        store,
        joined("Alice"),
        joined("Bob"),
        left("Bob", reason="connection lost"),
        joined("Alice", "lab"),
        renamed("Alice", "Alicia", "lab"),
        joined("Alice"),  # an old broker announced a rejoin again: still one Alice
    )
    store.close()
    old = sqlite3.connect(path)
    old.execute("DROP TABLE present")  # as a file made before the record was kept,
    for room, seq, body in old.execute("SELECT room, seq, body FROM events").fetchall():
        was = {key: value for key, value in json.loads(body).items() if key != "v"}
        old.execute(  # whose events json.dumps wrote
            "UPDATE events SET body = ? WHERE room = ? AND seq = ?",
            (json.dumps(was, ensure_ascii=False), room, seq),
        )
    old.commit()
    old.close()
    upgraded = HistoryStore(path)
    try:
        assert upgraded.present() == {"general": ["Alice"], "lab": ["Alicia"]}
    finally:
        upgraded.close()


# --- the rules: an earlier broker's sessions ------------------------------------------

START = 100.0  # when the broker starts serving (monotonic)
GRACE = 30.0
GONE = "broker restarted"


def token(n: int) -> str:
    return f"{n:032x}"


class Peer:
    """One client's tokens, and its join as frames."""

    def __init__(self, name: str, n: int) -> None:
        self.name, self.secret, self.inbox = name, token(2 * n), token(2 * n + 1)
        self.topic = p.inbox_topic(self.inbox)

    def join(self, rooms: tuple[str, ...], since: dict[str, int] | None = None) -> list[bytes]:
        return p.encode_client(p.Join(self.name, self.secret, self.inbox, rooms, 0, since or {}))


def published(actions: Actions) -> list[tuple[bytes, p.ServerMessage]]:
    return [p.decode_server(frames) for frames in actions.publish]


def join(
    rules: BrokerRules,
    peer: Peer,
    rooms: tuple[str, ...],
    since: dict[str, int] | None = None,
    now: float = START + 1,
) -> list[tuple[bytes, p.ServerMessage]]:
    rules.on_subscription(b"\x01" + peer.topic, now)
    return published(rules.on_inbound(peer.join(rooms, since), "127.0.0.1", now))


def events(out: list[tuple[bytes, p.ServerMessage]]) -> list[tuple[str, str, str]]:
    """The room events published, as (room, what, who)."""
    seen = []
    for _, msg in out:
        if isinstance(msg, p.Joined):
            seen.append((msg.room, "joined", msg.sender))
        elif isinstance(msg, p.Left):
            seen.append((msg.room, f"left ({msg.reason})", msg.sender))
    return seen


@pytest.fixture
def restarted(memory: HistoryStore) -> BrokerRules:
    """A broker started on a history whose last broker left Alice in #general and #lab
    and Bob in #general, and never said they left."""
    append_all(memory, joined("Alice"), joined("Bob"), joined("Alice", "lab"))
    memory.commit()
    rules = BrokerRules("epoch2", memory, clock=lambda: TS, grace=GRACE)
    rules.start(START)
    return rules


def test_a_session_back_within_the_grace_period_goes_on_without_a_notice(
    restarted: BrokerRules,
) -> None:
    alice = Peer("Alice", 1)
    out = join(restarted, alice, ("general", "lab"), {"general": 2, "lab": 1})
    assert events(out) == []
    welcome = out[0][1]
    assert isinstance(welcome, p.Welcome)
    assert welcome.rooms["general"].members == ("Alice", "Bob")  # Bob: back, or a leave
    assert len(restarted.orphans) == 1
    assert restarted.store.present() == {"general": ["Alice", "Bob"], "lab": ["Alice"]}


def test_those_not_back_when_the_grace_period_ends_are_announced_as_left(
    restarted: BrokerRules,
) -> None:
    join(restarted, Peer("Alice", 1), ("general", "lab"), {"general": 2, "lab": 1})
    assert events(published(restarted.expire(START + GRACE - 0.1))) == []
    out = published(restarted.expire(START + GRACE))
    assert events(out) == [("general", f"left ({GONE})", "Bob")]
    assert out[0] == (b"room/general/", p.Left("general", 3, TS, "Bob", GONE))
    assert restarted.store.room_state("general")[0] == 3  # stored, as every event
    assert restarted.store.present() == {"general": ["Alice"], "lab": ["Alice"]}
    assert len(restarted.orphans) == 0
    assert events(published(restarted.expire(START + 2 * GRACE))) == []  # once only


def test_a_first_join_of_an_orphans_name_announces_its_leave_first(
    restarted: BrokerRules,
) -> None:
    out = join(restarted, Peer("Alice", 1), ("general",))
    assert events(out) == [
        ("general", f"left ({GONE})", "Alice"),
        ("lab", f"left ({GONE})", "Alice"),
        ("general", "joined", "Alice"),
    ]
    welcome = next(msg for _, msg in out if isinstance(msg, p.Welcome))
    assert welcome.rooms["general"] == p.RoomState(3, ("Alice", "Bob"))


def test_rooms_a_rejoin_does_not_come_back_to_are_closed_at_once(restarted: BrokerRules) -> None:
    out = join(restarted, Peer("Alice", 1), ("general",), {"general": 2})
    assert events(out) == [("lab", f"left ({GONE})", "Alice")]


@pytest.mark.parametrize(
    ("name", "now"),
    [("alice", START + 1), ("Alice", START + GRACE)],
    ids=["another-spelling", "after-the-grace-period"],
)
def test_a_rejoin_under_another_spelling_or_too_late_is_a_new_session(
    restarted: BrokerRules, name: str, now: float
) -> None:
    out = join(restarted, Peer(name, 1), ("general",), {"general": 2}, now=now)
    assert events(out)[-1] == ("general", "joined", name)
    assert ("general", f"left ({GONE})", "Alice") in events(out)


def test_orphans_are_not_members_for_who_and_rooms_but_are_for_entered(
    restarted: BrokerRules,
) -> None:
    carol = Peer("Carol", 3)
    join(restarted, carol, ("general",))
    frames = p.encode_client(p.Who(carol.secret, "lab", "w1"))
    answer = published(restarted.on_inbound(frames, "127.0.0.1", START + 2))
    assert answer == [(carol.topic, p.Members("lab", (), "", "w1"))]
    frames = p.encode_client(p.ListRooms(carol.secret, "r1"))
    answer = published(restarted.on_inbound(frames, "127.0.0.1", START + 2))
    assert answer == [(carol.topic, p.RoomList((p.RoomInfo("general", 1, ""),), "r1"))]
    restarted.on_inbound(p.encode_client(p.Enter(carol.secret, "lab", "e1")), "x", START + 2)
    out = published(restarted.on_subscription(b"\x01" + p.marker_topic(carol.inbox, "e1"), 3))
    assert out[0] == (carol.topic, p.Entered("lab", p.RoomState(1, ("Alice", "Carol"))))


def test_a_nick_to_an_orphans_name_announces_its_leave_first(restarted: BrokerRules) -> None:
    carol = Peer("Carol", 3)
    join(restarted, carol, ("general",))
    out = published(restarted.on_inbound(p.encode_client(p.Nick(carol.secret, "Bob")), "x", 102))
    assert events(out) == [("general", f"left ({GONE})", "Bob")]
    assert isinstance(out[1][1], p.Renamed)


def test_a_broker_not_started_has_no_orphans(memory: HistoryStore) -> None:
    append_all(memory, joined("Alice"))
    rules = BrokerRules("epoch2", memory, clock=lambda: TS)
    assert len(rules.orphans) == 0
    rules.start(START)
    assert rules.orphans.in_room("general") == ("Alice",)
