"""The broker's room commands (enter, part, msg, nick, topic, who, rooms, history),
driven with lists of frames against an in-memory history store: no sockets."""

from __future__ import annotations

import json
from collections.abc import Iterator, Mapping
from datetime import UTC, datetime

import pytest

from zchat import protocol as p
from zchat.broker.limits import RateLimit
from zchat.broker.rules import Actions, BrokerRules
from zchat.broker.store import HistoryStore

UNLIMITED = RateLimit(rate=0)  # these tests send far more than a person would

TS = datetime(2025, 3, 1, 14, 30, 15, tzinfo=UTC)
ALLOWED = "use only ASCII letters, digits, '_', '-' and '.'"

Out = list[tuple[bytes, p.ServerMessage]]


def token(n: int) -> str:
    return f"{n:032x}"


class Peer:
    """One client's view: its tokens and the frames it would send."""

    def __init__(
        self,
        name: str,
        n: int,
        rooms: tuple[str, ...] = ("general",),
        history: int = p.DEFAULT_HISTORY,
        since: Mapping[str, int] | None = None,
    ) -> None:
        self.name, self.secret, self.inbox = name, token(2 * n), token(2 * n + 1)
        self.rooms, self.history, self.since = rooms, history, dict(since or {})

    @property
    def topic(self) -> bytes:
        return p.inbox_topic(self.inbox)

    def join(self) -> list[bytes]:
        msg = p.Join(self.name, self.secret, self.inbox, self.rooms, self.history, self.since)
        return p.encode_client(msg)

    def sub(self) -> bytes:
        return b"\x01" + self.topic

    def marker(self, mark: str) -> bytes:
        """The marker subscription that tells the broker an enter's room is subscribed."""
        return b"\x01" + p.marker_topic(self.inbox, mark)

    def say(self, text: str, room: str = "general", id_: str = "m1") -> list[bytes]:
        return p.encode_client(p.Say(self.secret, room, text, id_))


def published(actions: Actions) -> Out:
    return [p.decode_server(frames) for frames in actions.publish]


def send(rules: BrokerRules, msg: p.ClientMessage, now: float = 1.0) -> Out:
    return published(rules.on_inbound(p.encode_client(msg), None, now))


def joined(rules: BrokerRules, peer: Peer, now: float = 0.0) -> Out:
    """Join, and have marker "e1" in place (so an enter naming it is answered at once)."""
    rules.on_subscription(peer.sub(), now)
    out = published(rules.on_inbound(peer.join(), "127.0.0.1", now))
    rules.on_subscription(peer.marker("e1"), now)
    return out


def say(rules: BrokerRules, peer: Peer, text: str, room: str = "general", id_: str = "m1") -> Out:
    return published(rules.on_inbound(peer.say(text, room, id_), None, 1.0))


def chat(room: str, seq: int, sender: str, text: str, id_: str = "m1") -> p.Chat:
    return p.Chat(room, seq, TS, sender, text, id_)


@pytest.fixture
def store() -> Iterator[HistoryStore]:
    history = HistoryStore(":memory:")
    yield history
    history.close()


@pytest.fixture
def rules(store: HistoryStore) -> BrokerRules:
    return BrokerRules("epoch1", store=store, clock=lambda: TS, limit=UNLIMITED)


# --- enter --------------------------------------------------------------------------


def test_enter_waits_for_its_mark_then_answers_before_announcing(rules: BrokerRules) -> None:
    alice, bob = Peer("Alice", 1), Peer("Bob", 2, ("dev",))
    joined(rules, alice)
    joined(rules, bob)
    say(rules, bob, "hi", room="dev")
    assert send(rules, p.Enter(alice.secret, "#Dev", "e2", 50)) == []
    actions = rules.on_subscription(alice.marker("e2"), 2.0)
    assert actions.subscribe == []  # a marker only tells; it is never applied
    assert published(actions) == [
        (alice.topic, p.Entered("dev", p.RoomState(2, ("Alice", "Bob"), ""))),
        (
            alice.topic,
            p.History("dev", (p.Joined("dev", 1, TS, "Bob"), chat("dev", 2, "Bob", "hi")), 0, ""),
        ),
        (b"room/dev/", p.Joined("dev", 3, TS, "Alice")),
    ]
    assert rules.sessions[0].rooms == ["general", "dev"]
    assert rules.members("dev") == ["Alice", "Bob"]


def test_entering_a_new_room_sends_no_history(rules: BrokerRules) -> None:
    alice = Peer("Alice", 1)
    joined(rules, alice)
    assert send(rules, p.Enter(alice.secret, "fresh", "e2")) == []
    assert published(rules.on_subscription(alice.marker("e2"), 2.0)) == [
        (alice.topic, p.Entered("fresh", p.RoomState(0, ("Alice",), ""))),
        (b"room/fresh/", p.Joined("fresh", 1, TS, "Alice")),
    ]


def test_enter_with_its_mark_already_seen_is_answered_at_once(rules: BrokerRules) -> None:
    alice = Peer("Alice", 1)
    joined(rules, alice)
    assert send(rules, p.Enter(alice.secret, "dev", "e1", 0)) == [
        (alice.topic, p.Entered("dev", p.RoomState(0, ("Alice",), ""))),
        (b"room/dev/", p.Joined("dev", 1, TS, "Alice")),
    ]


def test_entering_a_room_already_in_answers_again_without_a_notice(rules: BrokerRules) -> None:
    alice = Peer("Alice", 1)
    joined(rules, alice)
    say(rules, alice, "hi")
    assert send(rules, p.Enter(alice.secret, "general", "e2")) == []
    assert published(rules.on_subscription(alice.marker("e2"), 2.0)) == [
        (alice.topic, p.Entered("general", p.RoomState(2, ("Alice",), "")))
    ]
    assert rules.presence.rooms["general"].seq == 2
    assert rules.sessions[0].rooms == ["general"]


def test_more_rooms_than_the_limit_are_refused(rules: BrokerRules) -> None:
    limit = p.MAX_ROOMS_PER_SESSION
    alice = Peer("Alice", 1, tuple(f"r{i}" for i in range(limit)))
    joined(rules, alice)
    too_many = p.Error("too-many-rooms", f"you are in {limit} rooms already, the limit", "")
    assert send(rules, p.Enter(alice.secret, "one-more", "e1")) == [(alice.topic, too_many)]
    # a room already in is not a new one
    assert send(rules, p.Enter(alice.secret, "r5", "e1")) == [
        (alice.topic, p.Entered("r5", p.RoomState(1, ("Alice",), "")))
    ]
    assert len(rules.sessions[0].rooms) == limit
    assert "one-more" not in rules.presence.rooms


def test_the_room_limit_is_checked_again_when_a_waiting_enter_comes_due(
    rules: BrokerRules,
) -> None:
    limit = p.MAX_ROOMS_PER_SESSION
    alice = Peer("Alice", 1, tuple(f"r{i}" for i in range(limit - 1)))
    joined(rules, alice)
    assert send(rules, p.Enter(alice.secret, "x", "e2", 0)) == []
    assert send(rules, p.Enter(alice.secret, "y", "e3", 0)) == []
    assert published(rules.on_subscription(alice.marker("e2"), 2.0)) == [
        (alice.topic, p.Entered("x", p.RoomState(0, ("Alice",), ""))),
        (b"room/x/", p.Joined("x", 1, TS, "Alice")),
    ]
    too_many = p.Error("too-many-rooms", f"you are in {limit} rooms already, the limit", "")
    assert published(rules.on_subscription(alice.marker("e3"), 3.0)) == [(alice.topic, too_many)]
    assert rules.sessions[0].rooms[-1] == "x"


@pytest.mark.parametrize(
    ("room", "text"),
    [
        ("no way", f"room name 'no way' is not allowed: {ALLOWED}"),
        ("r" * 33, "room name is 33 characters long, the limit is 32"),
        ("#", "room name is empty"),
    ],
)
def test_entering_a_bad_room_is_answered_with_the_rule(
    rules: BrokerRules, room: str, text: str
) -> None:
    alice = Peer("Alice", 1)
    joined(rules, alice)
    assert send(rules, p.Enter(alice.secret, room, "e2")) == [
        (alice.topic, p.Error("bad-room", text, ""))
    ]
    assert rules.sessions[0].waiting == []


# --- part ---------------------------------------------------------------------------


def test_part_announces_then_confirms_and_updates_the_members(rules: BrokerRules) -> None:
    alice, bob = Peer("Alice", 1), Peer("Bob", 2, ("general", "dev"))
    joined(rules, alice)
    joined(rules, bob)
    assert send(rules, p.Part(bob.secret, "#General", "lunch")) == [
        (b"room/general/", p.Left("general", 3, TS, "Bob", "part: lunch")),
        (bob.topic, p.Parted("general")),
    ]
    assert rules.members("general") == ["Alice"]
    assert send(rules, p.Who(alice.secret, "general")) == [
        (alice.topic, p.Members("general", ("Alice",), ""))
    ]
    assert rules.sessions[1].rooms == ["dev"]
    assert send(rules, p.Part(bob.secret, "general")) == [
        (bob.topic, p.Error("not-in-room", "you are not in #general", ""))
    ]


def test_an_emptied_room_leaves_the_listing_and_keeps_its_sequence(rules: BrokerRules) -> None:
    alice, bob = Peer("Alice", 1), Peer("Bob", 2, ("general", "dev"))
    joined(rules, alice)
    joined(rules, bob)
    assert send(rules, p.ListRooms(alice.secret)) == [
        (alice.topic, p.RoomList((p.RoomInfo("dev", 1, ""), p.RoomInfo("general", 2, ""))))
    ]
    assert send(rules, p.Part(bob.secret, "dev")) == [
        (b"room/dev/", p.Left("dev", 2, TS, "Bob", "part")),
        (bob.topic, p.Parted("dev")),
    ]
    assert send(rules, p.ListRooms(alice.secret)) == [
        (alice.topic, p.RoomList((p.RoomInfo("general", 2, ""),)))
    ]
    assert "dev" not in rules.presence.rooms
    # entering it again continues its numbering, from the store
    assert send(rules, p.Enter(bob.secret, "dev", "e1")) == [
        (bob.topic, p.Entered("dev", p.RoomState(2, ("Bob",), ""))),
        (
            bob.topic,
            p.History("dev", (p.Joined("dev", 1, TS, "Bob"), p.Left("dev", 2, TS, "Bob", "part"))),
        ),
        (b"room/dev/", p.Joined("dev", 3, TS, "Bob")),
    ]


# --- msg ----------------------------------------------------------------------------


def test_a_private_message_goes_to_both_inboxes_and_no_room(rules: BrokerRules) -> None:
    alice, bob = Peer("Alice", 1), Peer("Bob", 2)
    joined(rules, alice)
    joined(rules, bob)
    dm = p.Private(TS, "Alice", "Bob", "psst \ufffd", "d1")
    assert send(rules, p.Msg(alice.secret, "bOB", "psst \x07", "d1")) == [
        (bob.topic, dm),
        (alice.topic, dm),
    ]
    assert rules.presence.rooms["general"].seq == 2  # not a room event: not numbered
    assert send(rules, p.GetHistory(alice.secret, "general", id="h1")) == [
        (
            alice.topic,
            p.History(
                "general",
                (p.Joined("general", 1, TS, "Alice"), p.Joined("general", 2, TS, "Bob")),
                0,
                "h1",
            ),
        )
    ]


def test_a_private_message_to_oneself_arrives_once(rules: BrokerRules) -> None:
    alice = Peer("Alice", 1)
    joined(rules, alice)
    assert send(rules, p.Msg(alice.secret, "alice", "note", "d1")) == [
        (alice.topic, p.Private(TS, "Alice", "Alice", "note", "d1"))
    ]


def test_a_private_message_to_nobody_is_answered_to_the_sender_only(rules: BrokerRules) -> None:
    alice, bob = Peer("Alice", 1), Peer("Bob", 2)
    joined(rules, alice)
    joined(rules, bob)
    assert send(rules, p.Msg(alice.secret, "carol", "hello?", "d2")) == [
        (alice.topic, p.Error("no-such-user", "no user named 'carol' is here", "d2"))
    ]


# --- nick ---------------------------------------------------------------------------


def test_nick_is_announced_in_every_room_then_confirmed(rules: BrokerRules) -> None:
    alice, bob = Peer("Alice", 1, ("general", "dev")), Peer("Bob", 2)
    joined(rules, alice)
    joined(rules, bob)
    assert send(rules, p.Nick(alice.secret, "Alicia")) == [
        (b"room/general/", p.Renamed("general", 3, TS, "Alice", "Alicia")),
        (b"room/dev/", p.Renamed("dev", 2, TS, "Alice", "Alicia")),
        (alice.topic, p.NickChanged("Alicia")),
    ]
    assert rules.members("general") == ["Alicia", "Bob"]
    assert rules.members("dev") == ["Alicia"]
    assert say(rules, alice, "hi") == [(b"room/general/", chat("general", 4, "Alicia", "hi"))]
    # the old name is free again
    assert joined(rules, Peer("alice", 3))[0] == (
        p.inbox_topic(token(7)),
        p.Welcome("alice", "epoch1", {"general": p.RoomState(4, ("Alicia", "Bob", "alice"))}),
    )


def test_a_name_held_by_someone_else_is_refused(rules: BrokerRules) -> None:
    alice, bob = Peer("Alice", 1), Peer("Bob", 2)
    joined(rules, alice)
    joined(rules, bob)
    assert send(rules, p.Nick(bob.secret, "ALICE")) == [
        (bob.topic, p.Error("name-taken", "name 'alice' is taken", ""))
    ]
    assert rules.members("general") == ["Alice", "Bob"]
    assert rules.presence.rooms["general"].seq == 2


def test_changing_only_the_case_of_ones_own_name_is_allowed(rules: BrokerRules) -> None:
    alice = Peer("Alice", 1)
    joined(rules, alice)
    assert send(rules, p.Nick(alice.secret, "ALICE")) == [
        (b"room/general/", p.Renamed("general", 2, TS, "Alice", "ALICE")),
        (alice.topic, p.NickChanged("ALICE")),
    ]
    assert rules.members("general") == ["ALICE"]
    assert rules.presence.holder("alice") is rules.sessions[0]


def test_a_nick_to_ones_own_name_is_confirmed_and_announces_nothing(rules: BrokerRules) -> None:
    alice = Peer("Alice", 1)
    joined(rules, alice)
    assert send(rules, p.Nick(alice.secret, "Alice")) == [(alice.topic, p.NickChanged("Alice"))]
    assert rules.presence.rooms["general"].seq == 1


@pytest.mark.parametrize(
    ("name", "text"),
    [
        ("no way", f"name 'no way' is not allowed: {ALLOWED}"),
        ("a" * 33, "name is 33 characters long, the limit is 32"),
        ("", f"name is empty: {ALLOWED}, 1 to 32 of them"),
    ],
)
def test_an_invalid_nick_is_answered_with_the_rule(
    rules: BrokerRules, name: str, text: str
) -> None:
    alice = Peer("Alice", 1)
    joined(rules, alice)
    assert send(rules, p.Nick(alice.secret, name)) == [
        (alice.topic, p.Error("invalid-name", text, ""))
    ]
    assert rules.sessions[0].name == "Alice"


# --- topic --------------------------------------------------------------------------


def test_topic_is_cleaned_published_and_reported_everywhere(rules: BrokerRules) -> None:
    alice, bob = Peer("Alice", 1), Peer("Bob", 2)
    joined(rules, alice)
    joined(rules, bob)
    topic = "Rapat jam 3 \ufffd"
    assert send(rules, p.SetTopic(alice.secret, "general", "  Rapat\tjam 3 \x1b  ")) == [
        (b"room/general/", p.TopicChanged("general", 3, TS, "Alice", topic))
    ]
    assert send(rules, p.Who(bob.secret, "general")) == [
        (bob.topic, p.Members("general", ("Alice", "Bob"), topic))
    ]
    carol = Peer("Carol", 3, ("dev",))
    joined(rules, carol)
    assert send(rules, p.Enter(carol.secret, "general", "e1", 0)) == [
        (carol.topic, p.Entered("general", p.RoomState(3, ("Alice", "Bob", "Carol"), topic))),
        (b"room/general/", p.Joined("general", 4, TS, "Carol")),
    ]
    dave = Peer("Dave", 4)
    assert joined(rules, dave)[0] == (
        dave.topic,
        p.Welcome(
            "Dave", "epoch1", {"general": p.RoomState(4, ("Alice", "Bob", "Carol", "Dave"), topic)}
        ),
    )
    assert send(rules, p.ListRooms(dave.secret)) == [
        (dave.topic, p.RoomList((p.RoomInfo("dev", 1, ""), p.RoomInfo("general", 4, topic))))
    ]


def test_topic_outlives_an_empty_room(rules: BrokerRules) -> None:
    alice = Peer("Alice", 1)
    joined(rules, alice)
    send(rules, p.SetTopic(alice.secret, "general", "tetap"))
    send(rules, p.Leave(alice.secret, "bye"))
    assert "general" not in rules.presence.rooms
    bob = Peer("Bob", 2)
    assert joined(rules, bob)[0] == (
        bob.topic,
        p.Welcome("Bob", "epoch1", {"general": p.RoomState(3, ("Bob",), "tetap")}),
    )


def test_topic_limits_and_membership(rules: BrokerRules) -> None:
    alice = Peer("Alice", 1)
    joined(rules, alice)
    limit = p.MAX_TOPIC_CHARS
    assert send(rules, p.SetTopic(alice.secret, "general", "x" * (limit + 1))) == [
        (
            alice.topic,
            p.Error("bad-topic", f"topic is {limit + 1} characters long, the limit is {limit}"),
        )
    ]
    assert send(rules, p.SetTopic(alice.secret, "general", "x" * limit)) == [
        (b"room/general/", p.TopicChanged("general", 2, TS, "Alice", "x" * limit))
    ]
    assert send(rules, p.SetTopic(alice.secret, "dev", "hi")) == [
        (alice.topic, p.Error("not-in-room", "you are not in #dev", ""))
    ]
    assert send(rules, p.SetTopic(alice.secret, "general", "")) == [
        (b"room/general/", p.TopicChanged("general", 3, TS, "Alice", ""))
    ]


# --- who and rooms ------------------------------------------------------------------


def test_who_lists_sorted_members_and_topic_of_any_room(rules: BrokerRules) -> None:
    carol, alice, bob = Peer("Carol", 1), Peer("Alice", 2), Peer("Bob", 3, ("dev",))
    for peer in (carol, alice, bob):
        joined(rules, peer)
    send(rules, p.SetTopic(carol.secret, "general", "umum"))
    assert send(rules, p.Who(bob.secret, "#General")) == [
        (bob.topic, p.Members("general", ("Alice", "Carol"), "umum"))
    ]
    assert send(rules, p.Who(bob.secret, "nowhere")) == [(bob.topic, p.Members("nowhere", (), ""))]
    assert "nowhere" not in rules.presence.rooms  # asking leaves no trace
    assert send(rules, p.Who(bob.secret, "no way")) == [
        (bob.topic, p.Error("bad-room", f"room name 'no way' is not allowed: {ALLOWED}", ""))
    ]


def test_rooms_lists_non_empty_rooms_sorted_with_counts(rules: BrokerRules) -> None:
    alice = Peer("Alice", 1, ("general", "dev"))
    bob = Peer("Bob", 2, ("zoo", "general"))
    joined(rules, alice)
    joined(rules, bob)
    send(rules, p.SetTopic(alice.secret, "dev", "kode"))
    send(rules, p.Who(alice.secret, "empty"))
    assert send(rules, p.ListRooms(bob.secret)) == [
        (
            bob.topic,
            p.RoomList(
                (
                    p.RoomInfo("dev", 1, "kode"),
                    p.RoomInfo("general", 2, ""),
                    p.RoomInfo("zoo", 1, ""),
                )
            ),
        )
    ]


# --- history ------------------------------------------------------------------------


@pytest.fixture
def ten_lines(rules: BrokerRules) -> Peer:
    """Alice in general, seq 1 her join, seqs 2..11 her lines "line 2" .. "line 11"."""
    alice = Peer("Alice", 1)
    joined(rules, alice)
    for seq in range(2, 12):
        say(rules, alice, f"line {seq}", id_=f"m{seq}")
    return alice


def lines(*seqs: int, room: str = "general", sender: str = "Alice") -> tuple[p.RoomEvent, ...]:
    return tuple(chat(room, seq, sender, f"line {seq}", f"m{seq}") for seq in seqs)


@pytest.mark.parametrize(
    ("after", "before", "limit", "seqs", "lost"),
    [
        (0, 0, 3, (9, 10, 11), 0),  # before 0: up to now; the newest `limit`
        (3, 7, 50, (4, 5, 6), 0),
        (3, 7, 2, (5, 6), 1),  # a range wants all of it: what the limit leaves out is lost
        (8, 100, 50, (9, 10, 11), 0),  # a before past the end is the end
        (11, 0, 50, (), 0),  # nothing newer: still answered
        (5, 6, 50, (), 0),
    ],
)
def test_history_request_is_answered_with_its_id(
    rules: BrokerRules,
    ten_lines: Peer,
    after: int,
    before: int,
    limit: int,
    seqs: tuple[int, ...],
    lost: int,
) -> None:
    alice = ten_lines
    request = p.GetHistory(alice.secret, "general", after, before, limit, "h1")
    answer = p.History("general", lines(*seqs), lost, "h1")
    assert send(rules, request) == [(alice.topic, answer)]


def test_history_of_a_room_never_seen_is_an_empty_answer(rules: BrokerRules) -> None:
    alice = Peer("Alice", 1)
    joined(rules, alice)
    assert send(rules, p.GetHistory(alice.secret, "#Nowhere", id="h2")) == [
        (alice.topic, p.History("nowhere", (), 0, "h2"))
    ]
    assert "nowhere" not in rules.presence.rooms


def test_history_request_reports_pruned_events_as_lost() -> None:
    store = HistoryStore(":memory:", retention=10)
    try:
        rules = BrokerRules("epoch1", store=store, clock=lambda: TS, limit=UNLIMITED)
        alice = Peer("Alice", 1)
        joined(rules, alice)
        for seq in range(2, 522):
            say(rules, alice, f"line {seq}", id_=f"m{seq}")
        assert send(rules, p.GetHistory(alice.secret, "general", 0, 11, 50, "h3")) == [
            (alice.topic, p.History("general", (), 10, "h3"))
        ]
        assert send(rules, p.GetHistory(alice.secret, "general", 0, 0, 10, "h4")) == [
            (alice.topic, p.History("general", lines(*range(512, 522)), 0, "h4"))
        ]
    finally:
        store.close()


def test_join_sends_the_last_n_events_after_the_welcome(
    rules: BrokerRules, ten_lines: Peer
) -> None:
    bob = Peer("Bob", 2, history=3)
    assert joined(rules, bob) == [
        (bob.topic, p.Welcome("Bob", "epoch1", {"general": p.RoomState(11, ("Alice", "Bob"))})),
        (bob.topic, p.History("general", lines(9, 10, 11), 0, "")),
        (b"room/general/", p.Joined("general", 12, TS, "Bob")),
    ]


def test_join_without_history_sends_none(rules: BrokerRules, ten_lines: Peer) -> None:
    bob = Peer("Bob", 2, history=0)
    assert [type(msg) for _, msg in joined(rules, bob)] == [p.Welcome, p.Joined]


def test_a_rejoin_gets_exactly_the_events_after_since(rules: BrokerRules, ten_lines: Peer) -> None:
    bob = Peer("Bob", 2, ("dev",))
    joined(rules, bob)
    say(rules, bob, "line 2", room="dev", id_="m2")
    say(rules, bob, "line 3", room="dev", id_="m3")
    # since wins over history, and a room not in since gets the last `history` events
    carol = Peer("Carol", 3, ("general", "dev"), history=1, since={"general": 8})
    out = joined(rules, carol)
    assert out[1:] == [
        (carol.topic, p.History("general", lines(9, 10, 11))),
        (carol.topic, p.History("dev", lines(3, room="dev", sender="Bob"))),
        (b"room/general/", p.Joined("general", 12, TS, "Carol")),
        (b"room/dev/", p.Joined("dev", 4, TS, "Carol")),
    ]


def test_a_rejoin_that_missed_nothing_gets_no_history(rules: BrokerRules, ten_lines: Peer) -> None:
    bob = Peer("Bob", 2, since={"general": 11})
    assert [type(msg) for _, msg in joined(rules, bob)] == [p.Welcome, p.Joined]


# --- sequence numbers and actions ---------------------------------------------------


def test_every_room_event_takes_the_next_seq_of_its_room(rules: BrokerRules) -> None:
    alice, bob = Peer("Alice", 1, ("general", "dev")), Peer("Bob", 2, history=0)
    events: Out = []
    events += joined(rules, alice)[1:]
    events += joined(rules, bob)[1:]
    events += say(rules, alice, "hi")
    events += send(rules, p.Say(alice.secret, "general", "waves", "a1", action=True))
    events += send(rules, p.Nick(bob.secret, "Robert"))[:-1]
    events += send(rules, p.SetTopic(alice.secret, "general", "umum"))
    events += send(rules, p.Part(bob.secret, "general", "later"))[:-1]
    events += say(rules, alice, "in dev", room="dev", id_="m2")
    general: tuple[p.RoomEvent, ...] = (
        p.Joined("general", 1, TS, "Alice"),
        p.Joined("general", 2, TS, "Bob"),
        chat("general", 3, "Alice", "hi"),
        p.Chat("general", 4, TS, "Alice", "waves", "a1", True),
        p.Renamed("general", 5, TS, "Bob", "Robert"),
        p.TopicChanged("general", 6, TS, "Alice", "umum"),
        p.Left("general", 7, TS, "Robert", "part: later"),
    )
    dev: tuple[p.RoomEvent, ...] = (
        p.Joined("dev", 1, TS, "Alice"),
        chat("dev", 2, "Alice", "in dev", "m2"),
    )
    assert events == [
        (b"room/general/", general[0]),
        (b"room/dev/", dev[0]),
        *[(b"room/general/", event) for event in general[1:]],
        (b"room/dev/", dev[1]),
    ]
    assert send(rules, p.GetHistory(alice.secret, "general", id="h1")) == [
        (alice.topic, p.History("general", general, 0, "h1"))
    ]
    assert send(rules, p.GetHistory(alice.secret, "dev", id="h2")) == [
        (alice.topic, p.History("dev", dev, 0, "h2"))
    ]


def test_an_action_is_published_as_type_action(rules: BrokerRules) -> None:
    alice = Peer("Alice", 1)
    joined(rules, alice)
    frames = p.encode_client(p.Say(alice.secret, "general", "waves", "a1", action=True))
    actions = rules.on_inbound(frames, None, 1.0)
    [[topic, body]] = actions.publish
    assert topic == b"room/general/"
    assert json.loads(body) == {
        "v": 1,
        "type": "action",
        "room": "general",
        "seq": 2,
        "ts": "2025-03-01T14:30:15.000000Z",
        "sender": "Alice",
        "text": "waves",
        "id": "a1",
    }
    [(_, history)] = send(rules, p.GetHistory(alice.secret, "general", 1, 0, 50, "h1"))
    assert history == p.History(
        "general", (p.Chat("general", 2, TS, "Alice", "waves", "a1", True),), 0, "h1"
    )


def test_a_rejoin_that_missed_more_than_one_answer_holds_hears_how_many_are_lost(
    rules: BrokerRules,
) -> None:
    alice = Peer("Alice", 1)
    joined(rules, alice)
    for i in range(p.MAX_HISTORY + 20):
        say(rules, alice, f"x{i}", id_=f"m{i}")
    last = rules.presence.rooms["general"].seq
    bob = Peer("Bob", 2, since={"general": 1})  # a rejoin that last saw seq 1
    out = joined(rules, bob)
    [history] = [msg for _, msg in out if isinstance(msg, p.History)]
    assert len(history.events) == p.MAX_HISTORY
    assert history.events[-1].seq == last
    assert history.lost == last - 1 - p.MAX_HISTORY
