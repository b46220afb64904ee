"""The login exchange as the broker's rules see it (login_rules.py): frames in, decisions
out, the hashing thread's verdicts handed in by hand. No sockets."""

from __future__ import annotations

import threading
from datetime import UTC, datetime

import pytest

from zchat import protocol as p
from zchat.broker.actions import Actions
from zchat.broker.logins import Hasher, Job, Verdict
from zchat.broker.policy import AccountsPolicy
from zchat.broker.rules import BrokerRules
from zchat.passwords import Cost, hash_password

TS = datetime(2026, 12, 2, 9, 0, tzinfo=UTC)
CHEAP = Cost(log2_n=4, r=8, p=1)


def key_user(n: int) -> str:
    return f"~{'k' * 39}{n}"  # a login key, as the ZAP handler names it


class Login:
    def __init__(self, name: str, n: int, password: str, peer: str = "10.0.0.1") -> None:
        self.user, self.peer = key_user(n), peer
        self.secret, self.inbox = f"{n:032x}", f"{n + 1000:032x}"
        self.join = p.Join(name, self.secret, self.inbox, ("general",), mark="l1",
                           password=password)  # fmt: skip

    def send_join(self, rules: BrokerRules, now: float = 0.0) -> Actions:
        actions = rules.on_inbound(p.encode_client(self.join), self.peer, now, self.user)
        return (
            actions.extend(
                rules.on_subscription(b"\x01" + p.inbox_topic(self.inbox), now, self.user)
            )
            or actions
        )

    def answers(self, actions: Actions) -> list[p.ServerMessage]:
        topic = p.inbox_topic(self.inbox)
        return [p.decode_server(f)[1] for f in actions.publish if f[0] == topic]


@pytest.fixture
def rules() -> BrokerRules:
    made = BrokerRules("epoch1", clock=lambda: TS, policy=AccountsPolicy())
    made.add_account("alice", hash_password("alice's secret", CHEAP), False)
    made.add_account("bob", hash_password("bob's secret", CHEAP), False)
    return made


def test_a_room_subscription_waits_for_the_password(rules: BrokerRules) -> None:
    alice = Login("alice", 1, "alice's secret")
    early = rules.on_subscription(b"\x01" + p.room_topic("general"), 0.0, alice.user)
    assert early.subscribe == [] and rules.dropped["not-logged-in"] == 1
    everything = rules.on_subscription(b"\x01", 0.0, alice.user)
    assert everything.subscribe == [p.SYS_TOPIC]  # nothing of the rooms
    alice.send_join(rules)
    (job,) = rules.login_jobs
    answers = alice.answers(rules.on_verdict(Verdict(job.ticket, True), 0.1))
    assert [type(a) for a in answers] == [p.LoggedIn]
    after = rules.on_subscription(b"\x01" + p.room_topic("general"), 0.2, alice.user)
    assert after.subscribe == [p.room_topic("general")]
    marker = p.marker_topic(alice.inbox, "l1")
    welcome = alice.answers(rules.on_subscription(b"\x01" + marker, 0.3, alice.user))
    assert isinstance(welcome[0], p.Welcome) and welcome[0].name == "alice"


def test_one_check_at_a_time_per_account_and_a_few_per_address(rules: BrokerRules) -> None:
    first = Login("alice", 1, "guess")
    first.send_join(rules)
    second = Login("alice", 2, "another guess", peer="10.0.0.2")
    (refused,) = second.answers(second.send_join(rules))
    assert isinstance(refused, p.Refused) and refused.code == "login-throttled"
    assert refused.retry_after == 0.5 and len(rules.login_jobs) == 1
    many = [Login(f"user{n}", 10 + n, "x", peer="10.0.0.9") for n in range(9)]
    answers = [m.answers(m.send_join(rules)) for m in many]
    assert sum(bool(a) for a in answers) == 1  # the 9th waits: 8 in flight from there
    rules.on_verdict(Verdict(rules.login_jobs[0].ticket, False), 1.0)
    assert rules.throttle.wait(["account alice"], 1.0) == 1.0  # the verdict counts


def test_a_login_from_the_accounts_last_address_goes_first(rules: BrokerRules) -> None:
    urgent: list[bool] = []
    rules.submit_login = lambda job, first: urgent.append(first) or True
    rules.accounts.logged_in("alice", TS, "192.0.2.7")  # her last login came from there
    Login("alice", 1, "alice's secret", peer="192.0.2.7").send_join(rules)
    Login("bob", 3, "bob's secret", peer="192.0.2.7").send_join(rules)  # never from there
    assert urgent == [True, False]


def test_the_hasher_serves_the_urgent_queue_first() -> None:
    done = threading.Event()
    hasher = Hasher(done.set, queued=8)
    try:
        for n in range(4):
            assert hasher.submit(Job(n, "make", "password"), urgent=False)
        assert hasher.submit(Job(99, "make", "password"), urgent=True)
        order: list[int] = []
        while len(order) < 5:
            assert done.wait(30), "the hasher did not answer"
            done.clear()
            order += [verdict.ticket for verdict in hasher.take()]
        assert order.index(99) <= 1  # before every job but the one it was busy with
        assert [t for t in order if t != 99] == [0, 1, 2, 3]
    finally:
        hasher.stop()


def test_a_full_queue_is_refused_as_busy_with_when_to_ask_again(rules: BrokerRules) -> None:
    rules.submit_login = lambda job, urgent: False
    alice = Login("alice", 1, "alice's secret")
    (refused,) = alice.answers(alice.send_join(rules))
    assert isinstance(refused, p.Refused) and refused.code == "busy"
    assert refused.retry_after == 1.0


def logged_in_not_joined(rules: BrokerRules) -> Login:
    """Alice's password taken, her rooms subscribed, her marker never sent."""
    alice = Login("alice", 1, "alice's secret")
    alice.send_join(rules)
    rules.on_verdict(Verdict(rules.login_jobs[-1].ticket, True), 0.1)
    rules.on_subscription(b"\x01" + p.room_topic("general"), 0.2, alice.user)
    assert rules.logged_in(alice.user)
    return alice


@pytest.mark.parametrize("how", ["expiry", "operator-passwd", "operator-delete"])
def test_a_login_that_never_joins_retires_its_key(rules: BrokerRules, how: str) -> None:
    """Its room subscriptions were applied: only cutting its connections takes them
    back, so its key is barred however the login ends before its session begins."""
    alice = logged_in_not_joined(rules)
    if how == "expiry":
        rules.expire(60.0)
    elif how == "operator-passwd":
        rules.change_account("alice", hash_password("a new one!", CHEAP))
    else:
        rules.delete_account("alice")
    assert alice.user in rules.ended_keys and rules.take_retired()
    assert not rules.logged_in(alice.user)


def test_a_banned_account_is_refused_before_its_rooms(rules: BrokerRules) -> None:
    rules.moderate("ban", "alice", "spam")
    alice = Login("alice", 1, "alice's secret")
    alice.send_join(rules)
    answers = alice.answers(rules.on_verdict(Verdict(rules.login_jobs[-1].ticket, True), 0.1))
    assert [type(a) for a in answers] == [p.Refused] and answers[0].code == "banned"  # type: ignore[union-attr]
    assert not rules.logged_in(alice.user) and alice.user not in rules.ended_keys


def test_register_probes_count_against_the_address(rules: BrokerRules) -> None:
    rules.policy = AccountsPolicy(register=True)
    codes = []
    for n in range(8):
        probe = Login("alice" if n % 2 else f"new{n}", 50 + n, "x", peer="10.9.9.9")
        probe.join = p.Join(probe.join.name, probe.secret, probe.inbox, ("general",),
                            mark="l1", password="short", register=True)  # fmt: skip
        (answer,) = probe.answers(probe.send_join(rules))
        codes.append(answer.code)  # type: ignore[union-attr]
    assert codes[:6] == ["weak-password", "name-taken"] * 3  # the address's free ones, and
    assert codes[6:] == ["login-throttled"] * 2  # then a wait: no quick survey of names


def test_guesses_from_elsewhere_do_not_lock_out_the_usual_address(rules: BrokerRules) -> None:
    rules.accounts.logged_in("alice", TS, "192.0.2.7")
    guess = Login("alice", 5, "a guess", peer="203.0.113.9")
    guess.send_join(rules)
    rules.on_verdict(Verdict(rules.login_jobs[-1].ticket, False), 1.0)
    again = Login("alice", 6, "another guess", peer="203.0.113.9")
    (refused,) = again.answers(again.send_join(rules, now=1.1))
    assert refused.code == "login-throttled"  # type: ignore[union-attr]
    home = Login("alice", 7, "alice's secret", peer="192.0.2.7")
    assert home.answers(home.send_join(rules, now=1.2)) == []  # checked, not refused
    assert len(rules.login_jobs) == 2


def test_a_closed_connections_marker_unsubscription_is_no_foreign_inbox(
    rules: BrokerRules,
) -> None:
    alice = Login("alice", 1, "alice's secret")
    marker = p.marker_topic(alice.inbox, "l1")
    rules.on_subscription(b"\x01" + marker, 0.0, alice.user)
    rules.on_subscription(b"\x00" + marker, 1.0, None)  # libzmq's, for a closed connection
    assert rules.dropped["foreign-inbox"] == 0
