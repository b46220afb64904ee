"""The client's rules, driven with frames and a hand-moved clock: no sockets."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest

from zchat import protocol as p
from zchat.client.core import (
    ACK_SECONDS,
    AWAY_SECONDS,
    FALLBACK_RETRY_SECONDS,
    JOIN_RETRY_SECONDS,
    ClientCore,
    FloodRefusal,
    State,
)
from zchat.client.message import Members
from zchat.errors import BrokerUnreachable, InvalidInput, JoinRefused, NotDelivered

TS = datetime(2025, 3, 1, 14, 30, 15, tzinfo=UTC)


def sent(core: ClientCore) -> list[p.ClientMessage]:
    return [p.decode_client(frames) for frames in core.take_outbox()]


def requests(core: ClientCore) -> list[p.GetHistory]:
    return [m for m in sent(core) if isinstance(m, p.GetHistory)]


def texts(core: ClientCore) -> list[str]:
    out = [m.text for m in core.events if m.kind == "system"]
    core.events.clear()
    return out


def welcome(core: ClientCore, epoch: str = "e1") -> list[bytes]:
    states = {room: p.RoomState(0, (core.name,)) for room in core.rooms}
    return p.encode_server(p.inbox_topic(core.inbox), p.Welcome(core.name, epoch, states))


def beat(epoch: str = "e1") -> list[bytes]:
    return p.encode_server(p.SYS_TOPIC, p.Heartbeat(epoch, TS))


@pytest.fixture
def core() -> ClientCore:
    client = ClientCore("Alice", ["general", "#Dev"], clock=lambda: TS)
    client.start(0.0, timeout=5.0)
    client.on_publish(welcome(client), 0.1)
    client.take_outbox()
    client.events.clear()
    return client


def test_inbox_is_subscribed_last() -> None:
    client = ClientCore("Alice", ["general", "dev"])
    topics = client.subscriptions()
    assert topics[-1] == p.inbox_topic(client.inbox)
    assert set(topics[:-1]) == {b"room/general/", b"room/dev/", p.SYS_TOPIC}


def test_join_is_sent_again_until_answered_then_gives_up() -> None:
    client = ClientCore("Alice")
    client.start(0.0, timeout=2.5)
    assert [type(m) for m in sent(client)] == [p.Join]
    client.tick(JOIN_RETRY_SECONDS)
    assert [type(m) for m in sent(client)] == [p.Join]
    client.tick(2.6)
    assert isinstance(client.failure, BrokerUnreachable)


def test_refusal_of_the_first_join_is_the_failure() -> None:
    client = ClientCore("Alice")
    client.start(0.0, timeout=5)
    refusal = p.Refused("name-taken", "name 'alice' is taken")
    client.on_publish(p.encode_server(p.inbox_topic(client.inbox), refusal), 0.1)
    assert isinstance(client.failure, JoinRefused)
    assert client.failure.code == "name-taken"


def test_a_line_is_acknowledged_by_its_echo(core: ClientCore) -> None:
    id_, frames = core.say("hi", None, 1.0)
    assert p.decode_client(frames) == p.Say(core.secret, "general", "hi", id_)
    echo = p.Chat("general", 2, TS, "Alice", "hi", id_)
    core.on_publish(p.encode_server(b"room/general/", echo), 1.1)
    assert core.unacknowledged == 0
    core.on_publish(beat(), 1.0 + ACK_SECONDS - 0.1)
    core.tick(1.0 + ACK_SECONDS)
    assert texts(core) == []


def test_a_line_never_echoed_is_checked_then_reported(core: ClientCore) -> None:
    core.say("lost words", "dev", 1.0)
    core.on_publish(beat(), 1.0 + ACK_SECONDS - 0.1)
    core.tick(1.0 + ACK_SECONDS)
    assert texts(core) == []  # first: was the echo dropped on the way? ask the room
    [check] = requests(core)
    assert isinstance(check, p.GetHistory) and (check.room, check.after) == ("dev", 0)
    answer = p.History("dev", (), 0, check.id)
    core.on_publish(p.encode_server(p.inbox_topic(core.inbox), answer), 6.5)
    core.on_publish(beat(), 1.0 + 2 * ACK_SECONDS - 0.1)
    core.tick(1.0 + 2 * ACK_SECONDS)
    assert texts(core) == ["not delivered (no answer from the broker): lost words"]
    assert core.unacknowledged == 0


def test_an_echo_dropped_on_the_way_is_found_in_history(core: ClientCore) -> None:
    id_, _ = core.say("found", None, 1.0)
    core.on_publish(beat(), 5.9)
    core.tick(1.0 + ACK_SECONDS)
    [check] = requests(core)
    echo = p.Chat("general", 1, TS, "Alice", "found", id_)
    answer = p.History("general", (echo,), 0, check.id)
    core.on_publish(p.encode_server(p.inbox_topic(core.inbox), answer), 6.1)
    assert core.unacknowledged == 0
    assert [m.text for m in core.events if m.kind == "message"] == ["found"]


def test_a_gap_is_filled_in_order_and_the_rest_held_back(core: ClientCore) -> None:
    def chat(seq: int) -> list[bytes]:
        return p.encode_server(b"room/general/", p.Chat("general", seq, TS, "Bob", f"l{seq}"))

    core.on_publish(chat(1), 1.0)
    core.on_publish(chat(4), 1.1)  # 2 and 3 were dropped
    core.on_publish(chat(5), 1.2)
    [fill] = requests(core)
    assert (fill.after, fill.before) == (1, 4)
    events = (p.Chat("general", 2, TS, "Bob", "l2"), p.Chat("general", 3, TS, "Bob", "l3"))
    answer = p.History("general", events, 0, fill.id)
    core.on_publish(p.encode_server(p.inbox_topic(core.inbox), answer), 1.3)
    assert [m.text for m in core.events if m.kind == "message"] == ["l1", "l2", "l3", "l4", "l5"]


def test_lines_the_broker_no_longer_has_are_reported_lost(core: ClientCore) -> None:
    chat = p.Chat("general", 9, TS, "Bob", "l9")
    core.on_publish(p.encode_server(b"room/general/", chat), 1.0)
    [fill] = requests(core)
    answer = p.History("general", (), 8, fill.id)
    core.on_publish(p.encode_server(p.inbox_topic(core.inbox), answer), 1.1)
    assert [m.text for m in core.events] == ["8 lines of #general could not be recovered", "l9"]


def test_a_tail_reveals_lines_dropped_before_a_quiet_spell(core: ClientCore) -> None:
    core.on_publish(p.encode_server(b"room/general/", p.Tail("general", 3)), 1.0)
    [fill] = requests(core)
    assert (fill.after, fill.before) == (0, 4)


def test_a_long_gap_a_tail_reveals_is_filled_in_turns_oldest_first(core: ClientCore) -> None:
    def answer(fill: p.GetHistory, lost: int = 0) -> list[bytes]:
        seqs = range(fill.after + 1 + lost, fill.before)
        events = tuple(p.Chat("general", seq, TS, "Bob", f"l{seq}") for seq in seqs)
        history = p.History("general", events, lost, fill.id)
        return p.encode_server(p.inbox_topic(core.inbox), history)

    core.on_publish(p.encode_server(b"room/general/", p.Tail("general", 2500)), 1.0)
    [first] = requests(core)
    assert (first.after, first.before) == (0, 1 + p.MAX_HISTORY)
    core.on_publish(p.encode_server(b"room/general/", p.Tail("general", 2500)), 1.1)
    assert requests(core) == []  # one request out at a time
    core.on_publish(answer(first, lost=10), 1.2)  # the oldest ten are no longer kept
    [second] = requests(core)
    assert (second.after, second.before) == (1000, 2001)
    core.on_publish(answer(second), 1.3)
    [third] = requests(core)
    assert (third.after, third.before) == (2000, 2501)
    core.on_publish(answer(third), 1.4)
    assert requests(core) == []
    shown = [m.text for m in core.events]
    assert shown[0] == "10 lines of #general could not be recovered"  # before what follows
    assert shown[1:] == [f"l{seq}" for seq in range(11, 2501)]


def test_a_rejoin_fills_in_turns_what_its_history_could_not_hold(core: ClientCore) -> None:
    """Away from line 0 to line 2,500: the rejoin's history brings the newest 1,000; the
    1,500 before them are asked for, oldest first, and none is reported lost."""

    def history(events: range, lost: int = 0, id_: str = "") -> list[bytes]:
        lines = tuple(p.Chat("general", seq, TS, "Bob", f"l{seq}") for seq in events)
        return p.encode_server(p.inbox_topic(core.inbox), p.History("general", lines, lost, id_))

    core.on_publish(beat("e2"), 1.0)
    [join] = [m for m in sent(core) if isinstance(m, p.Join)]
    assert join.since["general"] == 0
    states = {"general": p.RoomState(2500, ("Alice",)), "dev": p.RoomState(0, ("Alice",))}
    welcome = p.Welcome("Alice", "e2", states)
    core.on_publish(p.encode_server(p.inbox_topic(core.inbox), welcome), 1.1)
    core.on_publish(history(range(1501, 2501), lost=1500), 1.2)  # what one answer holds
    [first] = requests(core)
    assert (first.after, first.before) == (0, 1001)
    core.on_publish(history(range(1, 1001), id_=first.id), 1.3)
    [second] = requests(core)
    assert (second.after, second.before) == (1000, 1501)
    core.on_publish(history(range(1001, 1501), id_=second.id), 1.4)
    assert requests(core) == []
    assert [m.text for m in core.events if m.kind == "message"] == [
        f"l{seq}" for seq in range(1, 2501)
    ]
    assert not [m for m in texts(core) if "recovered" in m]


def test_a_nick_to_ones_own_name_is_not_sent(core: ClientCore) -> None:
    with pytest.raises(InvalidInput, match="you are already known as Alice"):
        core.nick("Alice")
    assert sent(core) == []
    assert p.decode_client(core.nick("ALICE")) == p.Nick(core.secret, "ALICE")  # a new spelling


def ticked(core: ClientCore, now: float) -> float:
    """Tick at ``now``; the next deadline, which must be later (else a loop spins)."""
    core.tick(now)
    deadline = core.deadline()
    assert deadline > now, f"deadline {deadline} not after {now} in state {core.state}"
    return deadline


def test_a_join_no_broker_takes_never_spins_then_fails() -> None:
    client = ClientCore("Alice")
    client.start(0.0, timeout=10.0)  # the JOIN stays in the outbox: no broker takes it
    ticks = [0.0]
    while client.failure is None:
        ticks.append(ticked(client, ticks[-1]))
    assert isinstance(client.failure, BrokerUnreachable)
    assert ticks == [float(second) for second in range(12)]  # JOIN retries, the end, idle
    ticked(client, 10.5)  # closed: still no busy loop


def test_an_outage_never_leaves_a_deadline_in_the_past(core: ClientCore) -> None:
    core.on_publish(p.encode_server(b"room/general/", p.Chat("general", 5, TS, "Bob", "x")), 1.0)
    assert requests(core)  # a fill is out for lines 1 to 4
    core.say("in flight", None, 1.0)
    now = 1.0
    while now < 20.0:  # no heartbeat: away, then the fill and the line give up
        now = ticked(core, now)
    assert "broker unreachable, reconnecting…" in texts(core)
    core.on_publish(beat("e2"), now)  # back, restarted: a rejoin whose JOIN cannot go out
    assert core.joining
    for _ in range(10):
        now = ticked(core, now)


def test_a_client_that_was_not_running_does_not_blame_the_broker(core: ClientCore) -> None:
    core.tick(1.0)
    core.tick(30.0)  # suspended (kill -STOP, a laptop asleep): the silence was ours
    assert texts(core) == []
    core.tick(30.0 + AWAY_SECONDS)  # and now nothing comes: the broker is away
    assert texts(core) == ["broker unreachable, reconnecting…"]


def test_silence_is_reported_once_and_the_return_too(core: ClientCore) -> None:
    core.tick(0.1 + AWAY_SECONDS)
    core.tick(0.2 + AWAY_SECONDS)
    assert texts(core) == ["broker unreachable, reconnecting…"]
    with pytest.raises(NotDelivered, match="broker is unreachable"):
        core.say("hello?", None, 5.0)
    core.on_publish(beat(), 6.0)
    assert texts(core) == ["broker reachable again"]
    core.say("hello!", None, 6.1)


def test_a_new_epoch_means_join_again_with_the_same_name(core: ClientCore) -> None:
    core.say("in flight", None, 1.0)
    core.on_publish(beat("e2"), 1.5)
    assert texts(core) == [
        "the broker restarted, joining again…",
        "not delivered (the broker lost the session): in flight",
    ]
    [join] = sent(core)
    since = {"general": 0, "dev": 0}  # asks for what it missed while away
    # with a marker: the broker may have missed its inbox subscription
    assert join == p.Join("Alice", core.secret, core.inbox, ("general", "dev"), 50, since, "j1")
    assert core.take_subscriptions() == [(True, p.marker_topic(core.inbox, "j1"))]
    core.on_publish(welcome(core, "e2"), 1.6)
    assert texts(core)[-1] == "joined again as Alice (nothing missed)"
    assert core.joined and core.epoch == "e2"


def test_unknown_session_answer_means_join_again(core: ClientCore) -> None:
    error = p.Error("unknown-session", "session unknown to this broker, join again")
    core.on_publish(p.encode_server(p.inbox_topic(core.inbox), error), 2.0)
    assert [type(m) for m in sent(core)] == [p.Join]
    assert core.joining


def test_a_refused_rejoin_keeps_trying(core: ClientCore) -> None:
    core.on_publish(beat("e2"), 1.0)
    sent(core)
    refusal = p.Refused("name-taken", "name 'alice' is taken")
    core.on_publish(p.encode_server(p.inbox_topic(core.inbox), refusal), 1.1)
    assert texts(core)[-1] == "cannot join again yet: name 'alice' is taken; retrying"
    assert core.failure is None
    core.tick(1.2)
    assert sent(core) == []
    core.tick(5.0)
    assert [type(m) for m in sent(core)] == [p.Join]


def test_pings_go_out_every_second_while_joined(core: ClientCore) -> None:
    core.on_publish(beat(), 1.0)
    core.tick(1.2)
    assert sent(core) == [p.Ping(core.secret, core.inbox)]
    core.tick(1.5)
    assert sent(core) == []


def test_errors_about_a_line_name_the_line(core: ClientCore) -> None:
    id_, _ = core.say("x", None, 1.0)
    error = p.Error("bad-text", "message is empty", id_)
    core.on_publish(p.encode_server(p.inbox_topic(core.inbox), error), 1.1)
    assert texts(core) == ["not sent: message is empty"]


def test_leave_only_when_joined() -> None:
    client = ClientCore("Alice")
    assert client.leave("bye") == []
    client.start(0.0, 5)
    client.on_publish(welcome(client), 0.1)
    goodbye = client.leave("bye")
    assert [p.decode_client(frames) for frames in goodbye] == [p.Leave(client.secret, "bye")]
    assert client.leaving


def test_a_quiet_session_leaves_with_a_ping_whose_answer_confirms_it() -> None:
    client = ClientCore("ci", quiet=True)
    client.start(0.0, 5)
    assert p.decode_client(client.take_outbox()[0]) == p.Join(
        "ci", client.secret, client.inbox, ("general",), quiet=True
    )
    client.on_publish(welcome(client), 0.1)
    goodbye = [p.decode_client(frames) for frames in client.leave()]
    assert goodbye == [p.Leave(client.secret), p.Ping(client.secret, client.inbox)]
    unknown = p.Error("unknown-session", "session unknown to this broker, join again")
    client.on_publish(p.encode_server(p.inbox_topic(client.inbox), unknown), 0.2)
    assert client.state is State.CLOSED
    assert not client.has_outbox  # no rejoin


def test_garbage_from_the_broker_is_ignored(core: ClientCore) -> None:
    core.on_publish([b"sys/", b"\xff"], 1.0)
    core.on_publish([b"only one frame"], 1.0)
    assert list(core.events) == []


def test_a_gap_never_answered_is_reported_lost_not_skipped(core: ClientCore) -> None:
    def chat(seq: int) -> list[bytes]:
        return p.encode_server(b"room/general/", p.Chat("general", seq, TS, "Bob", f"l{seq}"))

    core.on_publish(chat(1), 1.0)
    core.on_publish(chat(4), 1.1)
    assert len(requests(core)) == 1
    for second in range(2, 9):  # asked again each second, then given up
        core.on_publish(beat(), 1.0 + second - 0.05)
        core.tick(1.1 + second)
    assert len([m for m in texts(core) if "could not be recovered" in m]) == 1
    assert core.views["general"].shown == 4


# --- the flood limit -----------------------------------------------------------------


def limited(core: ClientCore, id_: str, **limit: float) -> list[bytes]:
    error = p.Error("rate-limited", "slow down", id_, **limit)  # type: ignore[arg-type]
    return p.encode_server(p.inbox_topic(core.inbox), error)


def test_a_refusal_for_flooding_is_noted_with_when_and_the_limit(
    core: ClientCore,
) -> None:
    id_, _ = core.say("hello", None, 1.0)
    core.on_publish(limited(core, id_, retry_after=0.25, rate=20.0, burst=50), 2.0)
    assert core.flood == FloodRefusal(id_, 2.25, 20.0, 50, "slow down", "hello")
    assert core.undelivered == ["hello"]  # a bot is told, as before
    assert texts(core) == ["not sent: slow down"]
    core.on_publish(limited(core, ""), 3.0)  # an older broker says no more
    assert core.flood == FloodRefusal("", 3.0 + FALLBACK_RETRY_SECONDS, None, None,
                                      "slow down", None)  # fmt: skip


def test_a_program_that_says_again_is_not_told_the_line_was_lost(
    core: ClientCore,
) -> None:
    core.says_again = True
    id_, _ = core.say("hello", None, 1.0)
    core.on_publish(limited(core, id_, retry_after=0.25, rate=20.0, burst=50), 2.0)
    assert core.flood is not None and core.flood.line == "hello"
    assert (core.unacknowledged, core.undelivered, texts(core)) == (0, [], [])


def to_me(core: ClientCore, msg: p.ServerMessage) -> list[bytes]:
    return p.encode_server(p.inbox_topic(core.inbox), msg)


def lines(room: str, seqs: range) -> tuple[p.Chat, ...]:
    return tuple(p.Chat(room, seq, TS, "Bob", f"{room} {seq}") for seq in seqs)


def test_a_broker_restart_is_one_line_when_it_goes_and_one_when_it_is_back(
    core: ClientCore,
) -> None:
    core.on_publish(p.encode_server(b"room/general/", lines("general", range(1, 3))[0]), 0.5)
    core.events.clear()
    core.on_publish(p.encode_server(p.SYS_TOPIC, p.Shutdown("e1", TS, "stopped")), 1.0)
    for moment in (1.0 + AWAY_SECONDS, 2.0 + AWAY_SECONDS):
        core.tick(moment)  # nothing comes while the broker is down: said already
    core.on_publish(beat("e2"), 9.0)
    core.tick(9.0 + JOIN_RETRY_SECONDS)  # the first rejoin is not answered: no word
    refusal = p.Refused("name-taken", "name 'alice' is taken")
    core.on_publish(to_me(core, refusal), 9.5)  # the old session still holds the name
    core.on_publish(to_me(core, refusal), 12.5)
    states = {"general": p.RoomState(4, ("Alice", "Bob")), "dev": p.RoomState(2, ("Alice",))}
    core.on_publish(to_me(core, p.Welcome("Alice", "e2", states)), 13.0)
    core.on_publish(to_me(core, p.History("general", lines("general", range(2, 5)), 0)), 13.1)
    core.on_publish(to_me(core, p.History("dev", lines("dev", range(1, 3)), 0)), 13.1)
    assert [m.text for m in core.events] == [
        "broker shut down (stopped); waiting for it to come back…",
        "cannot join again yet: name 'alice' is taken; retrying",
        "joined again as Alice (5 lines missed meanwhile follow)",
        *(f"general {seq}" for seq in range(2, 5)),
        *(f"dev {seq}" for seq in range(1, 3)),
    ]


def test_a_killed_broker_is_one_line_when_it_goes_and_one_when_it_is_back(
    core: ClientCore,
) -> None:
    core.tick(0.2 + AWAY_SECONDS)
    core.on_publish(beat("e2"), 6.0)
    core.on_publish(welcome(core, "e2"), 6.1)
    assert texts(core) == [
        "broker unreachable, reconnecting…",
        "joined again as Alice (nothing missed)",
    ]


def enter(core: ClientCore, room: str, seq: int, now: float) -> None:
    core.enter(room)
    core.take_outbox()
    core.take_subscriptions()
    core.on_publish(to_me(core, p.Entered(room, p.RoomState(seq, ("Alice", "Bob"), "t"))), now)


def test_re_entering_a_room_shows_only_the_history_not_seen_there_then_marks_its_end(
    core: ClientCore,
) -> None:
    enter(core, "lab", 3, 1.0)
    assert [m.text for m in core.events] == []  # who is there is said after the history
    core.on_publish(to_me(core, p.History("lab", lines("lab", range(1, 4)), 0)), 1.1)
    joined = p.Joined("lab", 4, TS, "Alice")
    core.on_publish(p.encode_server(b"room/lab/", joined), 1.2)
    assert [(m.text, m.replayed) for m in core.events] == [
        ("lab 1", True),
        ("lab 2", True),
        ("lab 3", True),
        ("— end of the history of #lab —", False),
        ("in #lab: Bob", False),
        ("topic of #lab: t", False),
        ("", False),  # Alice joined
    ]
    core.events.clear()
    core.part("lab")
    core.on_publish(to_me(core, p.Parted("lab")), 2.0)
    core.events.clear()
    enter(core, "lab", 7, 3.0)  # meanwhile: Alice left (5), Bob said 6 and 7
    history = (*lines("lab", range(2, 4)), joined, p.Left("lab", 5, TS, "Alice", ""))
    history += lines("lab", range(6, 8))
    core.on_publish(to_me(core, p.History("lab", history, 0)), 3.1)
    assert [m.text for m in core.events] == [
        "",  # Alice left: after the broker's Parted, so not seen then
        "lab 6",
        "lab 7",
        "— end of the history of #lab —",
        "in #lab: Bob",
        "topic of #lab: t",
    ]


def test_a_room_without_history_is_described_at_once(core: ClientCore) -> None:
    enter(core, "new", 0, 1.0)
    assert texts(core) == ["in #new: Bob", "topic of #new: t"]


def test_a_join_answered_twice_shows_its_history_once() -> None:
    client = ClientCore("Alice", ["general"], clock=lambda: TS)
    client.start(0.0, timeout=5.0)
    assert [type(m) for m in sent(client)] == [p.Join]
    client.tick(JOIN_RETRY_SECONDS)  # the WELCOME is late: the JOIN goes again
    assert [type(m) for m in sent(client)] == [p.Join]
    states = {"general": p.RoomState(2, ("Alice",))}
    for now in (1.1, 1.2):  # the broker had forgotten the first: it answers both
        client.on_publish(to_me(client, p.Welcome("Alice", "e1", states)), now)
        history = p.History("general", lines("general", range(1, 3)), 0)
        client.on_publish(to_me(client, history), now)
    assert [m.text for m in client.events] == [
        "general 1",
        "general 2",
        "— end of the history of #general —",
        "in #general: nobody else yet",
    ]


def test_a_big_rooms_crowd_and_member_count_are_told(core: ClientCore) -> None:
    crowd = p.Crowd("general", 1200, 37, 60)
    core.on_publish(p.encode_server(b"room/general/", crowd), 1.0)
    core.on_publish(p.encode_server(b"room/nowhere/", p.Crowd("nowhere", 1, 0, 60)), 1.0)
    assert texts(core) == ["1,200 joined, 37 left #general in the last minute"]
    enter(core, "big", 0, 2.0)
    assert texts(core)[0] == "in #big: Bob"  # all listed
    core.enter("huge")
    core.take_outbox()
    state = p.RoomState(0, ("Alice", "Bob", "Carol"), "", 2000)
    core.on_publish(to_me(core, p.Entered("huge", state)), 3.0)
    assert texts(core) == ["in #huge: Bob, Carol and 1,997 more"]
    id_, _ = core.who("huge")
    answer = p.Members("huge", ("Alice", "Bob"), "", id_, 2000)
    core.on_publish(to_me(core, answer), 4.0)
    assert texts(core) == ["in #huge: Alice, Bob and 1,998 more"]
    members = core.take_answer(id_)
    assert isinstance(members, Members) and members.more == 1998
