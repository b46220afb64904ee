"""The broker's rules, driven with lists of frames: no sockets."""

from __future__ import annotations

import json
from datetime import UTC, datetime

import pytest

from zchat import protocol as p
from zchat.broker.limits import Bucket, RateLimit
from zchat.broker.rules import SILENT_SECONDS, Actions, BrokerRules

TS = datetime(2025, 3, 1, 14, 30, 15, tzinfo=UTC)


def token(n: int) -> str:
    return f"{n:032x}"


class Peer:
    """One client's view: its tokens and the frames it would send."""

    def __init__(self, name: str, n: int, rooms: tuple[str, ...] = ("general",)) -> None:
        self.name, self.secret, self.inbox, self.rooms = name, token(2 * n), token(2 * n + 1), rooms

    def join(self) -> list[bytes]:
        return p.encode_client(p.Join(self.name, self.secret, self.inbox, self.rooms))

    def sub(self) -> bytes:
        return b"\x01" + p.inbox_topic(self.inbox)

    def unsub(self) -> bytes:
        return b"\x00" + p.inbox_topic(self.inbox)

    def say(self, text: str, room: str = "general", id_: str = "m1") -> list[bytes]:
        return p.encode_client(p.Say(self.secret, room, text, id_))


def published(actions: Actions) -> list[tuple[bytes, p.ServerMessage]]:
    return [p.decode_server(frames) for frames in actions.publish]


@pytest.fixture
def rules() -> BrokerRules:
    return BrokerRules("epoch1", clock=lambda: TS)


def joined(rules: BrokerRules, peer: Peer, now: float = 0.0) -> list[tuple[bytes, p.ServerMessage]]:
    rules.on_subscription(peer.sub(), now)
    return published(rules.on_inbound(peer.join(), "127.0.0.1", now))


@pytest.mark.parametrize("subscription_first", [True, False])
def test_join_completes_only_with_both_halves_in_either_order(
    rules: BrokerRules, subscription_first: bool
) -> None:
    alice = Peer("Alice", 1)
    steps = [
        lambda: rules.on_subscription(alice.sub(), 0.0),
        lambda: rules.on_inbound(alice.join(), "127.0.0.1", 0.0),
    ]
    first, second = steps if subscription_first else steps[::-1]
    assert first().publish == []
    out = published(second())
    # the WELCOME's seq is the last one before the client's own live stream begins
    assert out[0] == (
        p.inbox_topic(alice.inbox),
        p.Welcome("Alice", "epoch1", {"general": p.RoomState(0, ("Alice",))}),
    )
    assert out[1] == (b"room/general/", p.Joined("general", 1, TS, "Alice"))


def test_names_are_unique_case_insensitively(rules: BrokerRules) -> None:
    joined(rules, Peer("Alice", 1))
    out = joined(rules, Peer("alice", 2))
    assert out == [(p.inbox_topic(token(5)), p.Refused("name-taken", "name 'alice' is taken"))]


def test_invalid_name_is_refused_with_the_rule(rules: BrokerRules) -> None:
    [(_, refusal)] = joined(rules, Peer("a" * 33, 1))
    assert refusal == p.Refused("invalid-name", "name is 33 characters long, the limit is 32")


def test_the_broker_stamps_name_time_and_sequence(rules: BrokerRules) -> None:
    alice = Peer("Alice", 1)
    joined(rules, alice)
    [(topic, chat)] = published(rules.on_inbound(alice.say("Halo semua!"), None, 1.0))
    assert topic == b"room/general/"
    assert chat == p.Chat("general", 2, TS, "Alice", "Halo semua!", "m1")


def test_a_client_cannot_choose_its_name_or_sequence(rules: BrokerRules) -> None:
    alice = Peer("Alice", 1)
    joined(rules, alice)
    spoof = json.loads(alice.say("hi")[0])
    spoof |= {"sender": "Bob", "seq": 999, "ts": "2000-01-01T00:00:00.000000Z"}
    [(_, chat)] = published(rules.on_inbound([json.dumps(spoof).encode()], None, 1.0))
    assert isinstance(chat, p.Chat)
    assert (chat.sender, chat.seq, chat.ts) == ("Alice", 2, TS)


def test_unknown_secret_is_dropped_and_counted(rules: BrokerRules) -> None:
    stranger = Peer("Mallory", 9)
    assert rules.on_inbound(stranger.say("hi"), None, 0.0).publish == []
    assert rules.dropped["unknown-session"] == 1


def test_bad_text_is_answered_to_its_sender_only(rules: BrokerRules) -> None:
    alice = Peer("Alice", 1)
    joined(rules, alice)
    [(topic, error)] = published(rules.on_inbound(alice.say("x" * 5000, id_="m9"), None, 1.0))
    assert topic == p.inbox_topic(alice.inbox)
    assert error == p.Error("bad-text", "message is 5000 bytes long, the limit is 4096", "m9")
    [(_, error)] = published(rules.on_inbound(alice.say("hi", room="dev"), None, 1.0))
    assert error == p.Error("not-in-room", "you are not in #dev", "m1")


def test_control_characters_are_replaced_before_publishing(rules: BrokerRules) -> None:
    alice = Peer("Alice", 1)
    joined(rules, alice)
    [(_, chat)] = published(rules.on_inbound(alice.say("\x1b[2Jgone"), None, 1.0))
    assert isinstance(chat, p.Chat) and chat.text == "\ufffd[2Jgone"


def test_a_message_of_several_lines_is_published_with_its_line_breaks(
    rules: BrokerRules,
) -> None:
    alice = Peer("Alice", 1)
    joined(rules, alice)
    said = "```\r\ndef f():\r\n    return 1\x1b\r\n```"
    [(_, chat)] = published(rules.on_inbound(alice.say(said), None, 1.0))
    assert isinstance(chat, p.Chat) and chat.text == "```\ndef f():\n    return 1\ufffd\n```"
    # and it decodes so, the fast way and the checked way
    [frames] = [p.encode_server(p.room_topic("general"), chat)]
    assert p.decode_server(frames)[1] == chat
    assert p.decode.checked_server(frames[1]) == chat
    too_many = "\n".join(["x"] * (p.MAX_TEXT_LINES + 1))
    [(_, error)] = published(rules.on_inbound(alice.say(too_many, id_="m2"), None, 1.0))
    assert error == p.Error("bad-text", "message has 61 lines, the limit is 60", "m2")


@pytest.mark.parametrize(
    ("silent_for", "reason"),
    [(0.5, "connection lost"), (SILENT_SECONDS + 2, "timed out")],
)
def test_losing_the_inbox_ends_the_session(
    rules: BrokerRules, silent_for: float, reason: str
) -> None:
    alice, bob = Peer("Alice", 1), Peer("Bob", 2)
    joined(rules, alice)
    joined(rules, bob)
    out = published(rules.on_subscription(alice.unsub(), silent_for))
    assert out == [(b"room/general/", p.Left("general", 3, TS, "Alice", reason))]
    assert rules.members("general") == ["Bob"]
    assert joined(rules, Peer("ALICE", 3))[0][1] == p.Welcome(
        "ALICE", "epoch1", {"general": p.RoomState(3, ("ALICE", "Bob"))}
    )


def test_pings_keep_a_session_fresh(rules: BrokerRules) -> None:
    alice = Peer("Alice", 1)
    joined(rules, alice)
    rules.on_inbound(p.encode_client(p.Ping(alice.secret, alice.inbox)), None, 10.0)
    [(_, left)] = published(rules.on_subscription(alice.unsub(), 10.5))
    assert isinstance(left, p.Left) and left.reason == "connection lost"


def test_ping_from_a_session_the_broker_does_not_know_is_told_to_join(rules: BrokerRules) -> None:
    ghost = Peer("Ghost", 4)
    out = published(rules.on_inbound(p.encode_client(p.Ping(ghost.secret, ghost.inbox)), None, 0))
    assert out == [(p.inbox_topic(ghost.inbox), p.Error("unknown-session", out[0][1].text))]  # type: ignore[union-attr]


def test_leave_with_reason(rules: BrokerRules) -> None:
    alice = Peer("Alice", 1)
    joined(rules, alice)
    frames = p.encode_client(p.Leave(alice.secret, "bye"))
    [(_, left)] = published(rules.on_inbound(frames, None, 1.0))
    assert left == p.Left("general", 2, TS, "Alice", "quit: bye")
    assert rules.sessions == []


def test_a_repeated_join_is_answered_again_without_a_second_notice(rules: BrokerRules) -> None:
    alice = Peer("Alice", 1)
    joined(rules, alice)
    out = published(rules.on_inbound(alice.join(), "127.0.0.1", 1.0))
    assert [type(msg) for _, msg in out] == [p.Welcome]


@pytest.mark.parametrize(
    ("subscription", "applied"),
    [
        (b"\x01", [p.ROOM_PREFIX, p.SYS_TOPIC]),  # everything: narrowed to public topics
        (b"\x01t", []),
        (b"\x01to/", []),
        (b"\x01to/0123", []),
        (b"\x01to/" + b"0" * 32, []),  # no trailing delimiter: a prefix of an inbox
        (b"\x01room/", [b"room/"]),
        (b"\x01room/general/", [b"room/general/"]),
        (b"\x01sys/", [b"sys/"]),
        (b"\x01r", [b"r"]),
    ],
)
def test_no_subscription_can_cover_an_inbox(
    rules: BrokerRules, subscription: bytes, applied: list[bytes]
) -> None:
    assert rules.on_subscription(subscription, 0.0).subscribe == applied


def test_unsubscribing_everything_removes_the_narrowed_topics(rules: BrokerRules) -> None:
    assert rules.on_subscription(b"\x00", 0.0).unsubscribe == [p.ROOM_PREFIX, p.SYS_TOPIC]


@pytest.mark.parametrize("data", [b"", b"\x02room/", b"\xff"])
def test_malformed_subscription_messages_are_counted(rules: BrokerRules, data: bytes) -> None:
    assert rules.on_subscription(data, 0.0) == Actions()
    assert rules.dropped["subscription"] == 1


def test_a_join_whose_subscription_never_comes_is_forgotten(rules: BrokerRules) -> None:
    alice = Peer("Alice", 1)
    rules.on_inbound(alice.join(), "127.0.0.1", 0.0)
    rules.expire(60.0)
    assert rules.on_subscription(alice.sub(), 60.0).publish == []
    assert rules.sessions == []


def test_heartbeat_and_shutdown_carry_the_epoch(rules: BrokerRules) -> None:
    assert published(rules.heartbeat(0.0)) == [(b"sys/", p.Heartbeat("epoch1", TS))]
    [(_, notice)] = published(rules.shutdown())
    assert notice == p.Shutdown("epoch1", TS, "stopped by its operator")


def test_rooms_are_separate_streams(rules: BrokerRules) -> None:
    alice, bob = Peer("Alice", 1, ("general", "dev")), Peer("Bob", 2, ("dev",))
    joined(rules, alice)
    joined(rules, bob)
    [(topic, chat)] = published(rules.on_inbound(alice.say("x", room="dev"), None, 1.0))
    assert topic == b"room/dev/"
    assert isinstance(chat, p.Chat) and chat.seq == 3
    assert rules.members("dev") == ["Alice", "Bob"]
    assert rules.presence.rooms["general"].seq == 1


def test_lone_surrogates_cannot_break_publishing(rules: BrokerRules) -> None:
    alice = Peer("Alice", 1)
    joined(rules, alice)
    frame = alice.say("x")[0].replace(b'"text":"x"', b'"text":"a\\ud800b"')
    [(_, chat)] = published(rules.on_inbound([frame], None, 1.0))
    assert isinstance(chat, p.Chat) and chat.text == "a\ufffdb"
    leave = p.encode_client(p.Leave(alice.secret, "x"))[0].replace(b'"x"', b'"\\udfff"')
    [(_, left)] = published(rules.on_inbound([leave], None, 1.0))
    assert isinstance(left, p.Left) and left.reason == "quit: \ufffd"


def test_join_with_a_bad_room_is_refused_with_the_reason(rules: BrokerRules) -> None:
    [(_, refusal)] = joined(rules, Peer("Alice", 1, ("general", "no way")))
    assert refusal == p.Refused(
        "invalid-room",
        "room name 'no way' is not allowed: use only ASCII letters, digits, '_', '-' and '.'",
    )


def test_say_to_a_bad_room_is_answered(rules: BrokerRules) -> None:
    alice = Peer("Alice", 1)
    joined(rules, alice)
    [(_, error)] = published(rules.on_inbound(alice.say("x", room="r" * 40, id_="m5"), None, 1))
    assert error == p.Error("bad-room", "room name is 40 characters long, the limit is 32", "m5")


def test_an_over_long_leave_reason_is_cut_not_refused(rules: BrokerRules) -> None:
    alice = Peer("Alice", 1)
    joined(rules, alice)
    frame = p.encode_client(p.Leave(alice.secret, "x"))[0].replace(b'"x"', b'"' + b"y" * 300 + b'"')
    [(_, left)] = published(rules.on_inbound([frame], None, 1.0))
    assert isinstance(left, p.Left) and left.reason == "quit: " + "y" * 200


def test_the_same_inbox_can_join_again_after_leaving(rules: BrokerRules) -> None:
    alice = Peer("Alice", 1)
    joined(rules, alice)
    rules.on_inbound(p.encode_client(p.Leave(alice.secret)), None, 1.0)
    out = published(rules.on_inbound(alice.join(), "127.0.0.1", 2.0))  # still subscribed
    assert [type(msg) for _, msg in out] == [p.Welcome, p.History, p.Joined]


def test_room_names_in_a_join_are_canonical_and_collapse(rules: BrokerRules) -> None:
    out = joined(rules, Peer("Alice", 1, ("#Dev", "dev", "general")))
    assert [topic for topic, _ in out[1:]] == [b"room/dev/", b"room/general/"]
    assert rules.sessions[0].rooms == ["dev", "general"]


def test_heartbeats_carry_the_last_seq_of_rooms_busy_lately(rules: BrokerRules) -> None:
    alice = Peer("Alice", 1)
    joined(rules, alice, now=100.0)
    rules.on_inbound(alice.say("x"), None, 100.0)
    beat = published(rules.heartbeat(101.0))
    assert beat[1:] == [(b"room/general/", p.Tail("general", 2))]
    assert published(rules.heartbeat(102.0))[1:] == beat[1:]  # again: one may be dropped
    assert published(rules.heartbeat(120.0))[1:] == []  # quiet for long: no more


def test_a_join_naming_a_marker_completes_when_the_inbox_was_lost_track_of(
    rules: BrokerRules,
) -> None:
    """A reconnecting client's new subscription can reach the broker before its old
    connection's farewell (the unsubscription), which then clears the inbox. The
    client's repeated JOIN names a marker, and the marker subscription proves again
    that its subscriptions are in place."""
    alice = Peer("Alice", 1)
    joined(rules, alice)
    rules.on_subscription(alice.sub(), 1.0)  # the new connection
    rules.on_subscription(alice.unsub(), 1.1)  # the old one's farewell, late
    again = p.Join("Alice", alice.secret, alice.inbox, ("general",), 50, {"general": 2}, "j1")
    assert published(rules.on_inbound(p.encode_client(again), "127.0.0.1", 2.0)) == []
    marker = b"\x01" + p.marker_topic(alice.inbox, "j1")
    actions = rules.on_subscription(marker, 2.1)
    assert actions.subscribe == []  # a marker is never applied: nothing is sent to it
    assert [type(msg) for _, msg in published(actions)] == [p.Welcome, p.Joined]


# --- flood control ---------------------------------------------------------------------


def test_a_flood_is_cut_to_the_bucket_told_once_and_ends_when_it_refills() -> None:
    rules = BrokerRules("epoch1", clock=lambda: TS, limit=RateLimit(rate=2, burst=3))
    alice = Peer("Alice", 1)
    joined(rules, alice)
    outs = [
        published(rules.on_inbound(alice.say(f"l{i}", id_=f"m{i}"), "x", 0.0)) for i in range(6)
    ]
    assert [len(out) for out in outs] == [1, 1, 1, 1, 0, 0]  # 3 lines, 1 error, silence
    [(topic, error)] = outs[3]
    assert topic == p.inbox_topic(alice.inbox)
    assert error == p.Error(
        "rate-limited",
        "slow down: at most 2 lines a second, 3 at once; "
        "this line and the next ones are dropped until you do",
        "m3",
        retry_after=0.5,  # no token left: one is back in 1/rate s
        rate=2.0,
        burst=3,
    )
    assert rules.dropped["rate-limited"] == 3
    # half a second later one token is back: the next line passes, the burst is over
    [(_, line)] = published(rules.on_inbound(alice.say("back", id_="m9"), "x", 0.5))
    assert isinstance(line, p.Chat) and line.text == "back"
    assert not rules._flooding


def test_a_flooder_told_to_slow_down_is_dropped_before_its_frames_are_decoded() -> None:
    """Its frames, as encode_client lays them out, are recognised by their first bytes:
    a frame whose JSON is broken after them counts as flooding, not as bad JSON."""
    rules = BrokerRules("epoch1", clock=lambda: TS, limit=RateLimit(rate=2, burst=1))
    alice = Peer("Alice", 1)
    joined(rules, alice)
    for i in range(2):
        rules.on_inbound(alice.say(f"l{i}", id_=f"m{i}"), "x", 0.0)  # the second is told
    [frame] = alice.say("never decoded", id_="m2")
    assert published(rules.on_inbound([frame[: frame.index(b'"room"')]], "x", 0.0)) == []
    assert rules.dropped["rate-limited"] == 2
    assert rules.dropped["json"] == 0


@pytest.mark.parametrize(
    ("tokens", "wait"), [(0.0, 0.5), (0.4, 0.3), (0.9999, 0.001), (1.0, 0.0), (3.0, 0.0)]
)
def test_a_bucket_says_when_its_next_token_is_back(tokens: float, wait: float) -> None:
    assert Bucket(tokens, 0.0).wait(RateLimit(rate=2, burst=3)) == wait


def test_leaving_is_never_rate_limited() -> None:
    rules = BrokerRules("epoch1", clock=lambda: TS, limit=RateLimit(rate=1, burst=1))
    alice, bob = Peer("Alice", 1), Peer("Bob", 2)
    joined(rules, alice)
    joined(rules, bob)
    for i in range(5):
        rules.on_inbound(alice.say(f"l{i}", id_=f"m{i}"), "x", 0.0)
    leave = p.encode_client(p.Leave(alice.secret, "bye"))
    out = published(rules.on_inbound(leave, "x", 0.0))
    assert out == [(b"room/general/", p.Left("general", 4, TS, "Alice", "quit: bye"))]
