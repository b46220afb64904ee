"""Big rooms, driven with frames: above the quiet-joins size, comings and goings are
told in sum once a minute, and the member lists a welcome and a who carry are capped
and paged. No sockets."""

from __future__ import annotations

from datetime import UTC, datetime

from test_broker_rules import Peer, joined, published
from zchat import protocol as p
from zchat.broker.limits import RuleLimits
from zchat.broker.presence import MEMBERS_LISTED
from zchat.broker.rules import BrokerRules
from zchat.broker.state import CROWD_SECONDS

TS = datetime(2025, 3, 1, 14, 30, 15, tzinfo=UTC)


def crowded(quiet_joins: int = 3) -> BrokerRules:
    return BrokerRules("epoch1", clock=lambda: TS, limits=RuleLimits(quiet_joins=quiet_joins))


def room_events(out: list[tuple[bytes, p.ServerMessage]]) -> list[p.ServerMessage]:
    return [msg for topic, msg in out if topic == b"room/general/"]


def leave(rules: BrokerRules, peer: Peer, now: float) -> list[p.ServerMessage]:
    frames = p.encode_client(p.Leave(peer.secret, ""))
    return room_events(published(rules.on_inbound(frames, "127.0.0.1", now)))


def test_above_the_size_arrivals_are_told_in_sum_once_a_minute() -> None:
    rules = crowded(quiet_joins=3)
    peers = [Peer(f"p{n}", n) for n in range(1, 7)]
    notices = [room_events(joined(rules, peer, 1.0)) for peer in peers]
    assert [len(told) for told in notices] == [1, 1, 1, 0, 0, 0]  # the 4th of 3: untold
    assert leave(rules, peers[5], 2.0) == []  # its coming went untold: its going too
    [told] = leave(rules, peers[0], 2.0)  # its coming was told: its going is too
    assert isinstance(told, p.Left) and told.sender == "p1"
    quiet_minute = published(rules.heartbeat(1.0 + CROWD_SECONDS - 0.5))
    assert [m for m in room_events(quiet_minute) if isinstance(m, p.Crowd)] == []
    beat = room_events(published(rules.heartbeat(1.0 + CROWD_SECONDS)))
    assert [m for m in beat if isinstance(m, p.Crowd)] == [p.Crowd("general", 3, 1, 60)]
    later = room_events(published(rules.heartbeat(2.0 + 2 * CROWD_SECONDS)))
    assert [m for m in later if isinstance(m, p.Crowd)] == []  # nothing more to tell
    # nothing untold was stored: history reads as joins and leaves that match
    events, _ = rules.store.history("general", 0, 100, 50)
    assert [(type(e).__name__, e.sender) for e in events] == [
        ("Joined", "p1"),
        ("Joined", "p2"),
        ("Joined", "p3"),
        ("Left", "p1"),
    ]


def test_zero_tells_every_arrival() -> None:
    rules = crowded(quiet_joins=0)
    assert all(room_events(joined(rules, Peer(f"p{n}", n))) for n in range(1, 8))


def test_a_welcome_lists_the_first_names_and_the_count_and_who_pages_on() -> None:
    rules = crowded(quiet_joins=10)
    total = MEMBERS_LISTED + 5
    for n in range(1, total + 1):
        out = joined(rules, Peer(f"m{n:03}", n))
    [welcome] = [msg for _, msg in out if isinstance(msg, p.Welcome)]
    state = welcome.rooms["general"]
    everyone = sorted(f"m{n:03}" for n in range(1, total + 1))
    assert state.members == tuple(everyone[:MEMBERS_LISTED])
    assert state.count == total
    asker = Peer("m001", 1)
    who = p.encode_client(p.Who(asker.secret, "general", "w1", after=everyone[-10]))
    [(_, page)] = published(rules.on_inbound(who, "127.0.0.1", 5.0))
    assert page == p.Members("general", tuple(everyone[-9:]), "", "w1")  # all listed: no count
    first = p.encode_client(p.Who(asker.secret, "general", "w2"))
    [(_, whole)] = published(rules.on_inbound(first, "127.0.0.1", 5.0))
    assert isinstance(whole, p.Members)
    assert (len(whole.members), whole.count) == (MEMBERS_LISTED, total)
