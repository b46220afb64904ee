"""Accounts mode on real CURVE sockets: logging in with a password, what a key that is
not logged in gets (nothing of the rooms), the throttle, registering, changing and
deleting passwords, bans, the key port, and where passwords never appear."""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
import zmq

from conftest import RunningBroker
from support import expect_message
from zchat import Client, Message
from zchat import protocol as p
from zchat.admin import AdminError, request
from zchat.client.hello import fetch_hello
from zchat.client.transport import Keys
from zchat.errors import ConfigError, JoinRefused
from zchat.keys import keygen
from zchat.passwords import hash_password
from zchat.protocol.hello import fingerprint

PASSWORDS = {"alice": "correct horse 1", "bob": "battery staple 2", "carol": "carol's secret"}
MakeLogin = Callable[..., Client]


@pytest.fixture
def accounts_broker(tmp_path: Path, request: pytest.FixtureRequest) -> Iterator[RunningBroker]:
    """An accounts broker with a history file; alice, bob (admin) and carol have
    accounts. ``@pytest.mark.broker(**config)`` adds to its config."""
    marker = request.node.get_closest_marker("broker")
    config: dict[str, Any] = {"db": str(tmp_path / "history.db"), "accounts": True}
    config["admin_socket"] = str(tmp_path / "run" / "admin.sock")
    config.update(marker.kwargs if marker else {})
    running = RunningBroker(zmq.Context.instance(), **config)
    for name, password in PASSWORDS.items():
        admin(running, "user-add", name=name, hash=hash_password(password), admin=name == "bob")
    yield running
    running.stop()


def admin(running: RunningBroker, op: str, **args: Any) -> dict[str, Any]:
    return request(running.broker.admin_path, op, args)


def server_key(running: RunningBroker) -> bytes:
    auth = running.broker._auth
    assert auth is not None
    return auth.keyring.public


@pytest.fixture
def login(
    accounts_broker: RunningBroker, ctx: zmq.Context[zmq.Socket[bytes]]
) -> Iterator[MakeLogin]:
    """login("alice") -> a Client logged in with alice's password (or ``password=``)."""
    made: list[Client] = []

    def make(name: str, join: bool = True, timeout: float = 10.0, **kwargs: Any) -> Client:
        kwargs.setdefault("password", PASSWORDS.get(name.lower(), "no such password"))
        kwargs.setdefault("keys", Keys.for_login(server_key(accounts_broker)))
        client = Client(name, port=accounts_broker.port, context=ctx, **kwargs)
        made.append(client)
        if join:
            client.join(timeout=timeout)
        return client

    yield make
    for client in made:
        client.close()


def said(sender: str, text: str) -> Callable[[Message], bool]:
    return lambda m: m.kind == "message" and m.sender == sender and m.text == text


def refusal(make: MakeLogin, name: str, **kwargs: Any) -> JoinRefused:
    with pytest.raises(JoinRefused) as caught:
        make(name, **kwargs)
    return caught.value


_IDLE = threading.Event()  # never set: its wait() is a pause between looks


def unthrottled(running: RunningBroker, name: str) -> None:
    """Wait for the throttle to let ``name``'s next login be checked."""
    throttle = running.broker.rules.throttle
    wait_for(lambda: throttle.wait([f"account {name}"], time.monotonic()) == 0)


def wait_for(condition: Callable[[], bool], timeout: float = 10.0) -> None:
    end = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < end, "condition not met in time"
        _IDLE.wait(0.02)  # between two looks at the condition: no busy loop


# --- logging in --------------------------------------------------------------------------


def test_a_password_logs_in_under_the_accounts_name(login: MakeLogin) -> None:
    alice = login("ALICE")  # the account's spelling wins, as names ignore case
    assert alice.name == "alice"
    bob = login("bob")
    alice.send("hello, bob")
    expect_message(bob, said("alice", "hello, bob"))
    members = bob.who("general")
    assert members is not None and set(members.names) == {"alice", "bob"}


@pytest.mark.parametrize("name", ["alice", "nobody"])
def test_a_wrong_password_or_name_gets_the_same_refusal(login: MakeLogin, name: str) -> None:
    refused = refusal(login, name, password="not the password")
    assert refused.code == "login-failed"
    assert str(refused) == "login refused: wrong name or password"


def test_a_join_without_a_password_is_told_to_log_in(
    accounts_broker: RunningBroker, ctx: zmq.Context[zmq.Socket[bytes]]
) -> None:
    keys = Keys.for_login(server_key(accounts_broker))
    client = Client("alice", port=accounts_broker.port, context=ctx, keys=keys)
    with pytest.raises(JoinRefused) as caught:
        client.join(timeout=10)
    assert caught.value.code == "login-needed"
    assert "password" in str(caught.value)


def test_failed_logins_back_off_and_are_told_to_the_owner(
    login: MakeLogin, accounts_broker: RunningBroker
) -> None:
    assert refusal(login, "carol", password="guess one").code == "login-failed"
    # at once, and no time to wait: refused unchecked, saying how long to wait
    throttled = refusal(login, "carol", password="guess two", timeout=0.5)
    assert throttled.code == "login-throttled"
    assert "too many failed logins; try again in 1 second" in str(throttled)
    rules = accounts_broker.broker.rules
    assert rules.logins_counted["refused"] == 1 and rules.logins_counted["throttled"] == 1
    accounts = {a["name"]: a for a in admin(accounts_broker, "users")["data"]}
    assert accounts["carol"]["failed"] == 2
    # with time to wait, the client waits as told, and its JOIN is checked then
    assert refusal(login, "carol", password="guess three").code == "login-failed"
    assert rules.logins_counted["refused"] == 2 and rules.logins_counted["throttled"] >= 2
    carol = login("carol")  # waits for the 2 s the last refusal costs, by itself
    expect_message(carol, lambda m: m.text.endswith("failed logins since your account was made"))
    carol.close()
    accounts = {a["name"]: a for a in admin(accounts_broker, "users")["data"]}
    assert accounts["carol"]["failed"] == 0 and accounts["carol"]["last"]


def test_the_throttle_doubles_to_a_minute_and_spares_an_address_at_first() -> None:
    from zchat.broker.logins import ADDRESS_FREE_FAILURES, LONGEST_WAIT, Throttle

    throttle = Throttle()
    waits = []
    for _ in range(10):
        throttle.failed(["account x"], 100.0)
        waits.append(throttle.wait(["account x"], 100.0))
    assert waits[:4] == [1.0, 2.0, 4.0, 8.0] and waits[-1] == LONGEST_WAIT
    for _ in range(ADDRESS_FREE_FAILURES):
        throttle.failed(["address 10.0.0.1"], 100.0)
    assert throttle.wait(["address 10.0.0.1"], 100.0) == 0.0
    throttle.failed(["address 10.0.0.1"], 100.0)
    assert throttle.wait(["address 10.0.0.1"], 100.0) == 1.0
    throttle.succeeded("account x")
    assert throttle.wait(["account x"], 100.0) == 0.0
    throttle.expire(100.0 + 10_000)
    assert len(throttle) == 0


def test_a_name_in_use_is_refused_to_another_connection(login: MakeLogin) -> None:
    login("alice")
    assert refusal(login, "alice").code == "name-taken"


def test_a_session_is_bound_to_its_connection_key(
    login: MakeLogin, accounts_broker: RunningBroker, ctx: zmq.Context[zmq.Socket[bytes]]
) -> None:
    """Alice's secret, used from a connection with another key (logged in as bob or
    not), says nothing in her name."""
    alice, bob = login("alice"), login("bob")
    push = ctx.socket(zmq.PUSH)
    push.linger = 0
    Keys.for_login(server_key(accounts_broker)).apply(push)
    push.connect(f"tcp://127.0.0.1:{accounts_broker.port}")
    forged = p.encode_client(p.Say(alice.core.secret, "general", "forged by another key"))
    push.send_multipart(forged)
    rules = accounts_broker.broker.rules
    wait_for(lambda: rules.dropped["foreign-secret"] >= 1)
    alice.send("the real one")
    seen = expect_message(bob, lambda m: m.kind == "message")
    assert seen.text == "the real one"
    push.close()


def test_a_key_not_logged_in_is_given_no_room(
    login: MakeLogin, accounts_broker: RunningBroker, ctx: zmq.Context[zmq.Socket[bytes]]
) -> None:
    """A connection that never logged in subscribes to everything: it gets heartbeats,
    never a room line."""
    sub = ctx.socket(zmq.SUB)
    sub.linger = 0
    Keys.for_login(server_key(accounts_broker)).apply(sub)
    for topic in (b"", p.room_topic("general"), p.SYS_TOPIC):
        sub.subscribe(topic)
    sub.connect(f"tcp://127.0.0.1:{accounts_broker.port + 1}")
    assert sub.poll(10_000), "no heartbeat"
    alice, bob = login("alice"), login("bob")
    alice.send("for members only")
    expect_message(bob, said("alice", "for members only"))
    beats = 0
    while beats < 2:  # a heartbeat after the line: the line would have come before it
        assert sub.poll(10_000)
        topic, body = sub.recv_multipart()
        assert topic == p.SYS_TOPIC, body
        beats += b'"heartbeat"' in body
    assert accounts_broker.broker.rules.dropped["not-logged-in"] >= 1
    sub.close()


# --- accounts, made and changed --------------------------------------------------------


@pytest.mark.broker(allow_register=True)
def test_people_may_register_when_the_broker_allows(
    login: MakeLogin, accounts_broker: RunningBroker
) -> None:
    dave = login("dave", password="dave's own password", register=True)
    assert dave.name == "dave"
    dave.close()
    names = [a["name"] for a in admin(accounts_broker, "users")["data"]]
    assert "dave" in names
    assert login("dave", password="dave's own password").name == "dave"
    assert refusal(login, "alice", password="a new one!", register=True).code == "name-taken"
    weak = refusal(login, "erin", password="short", register=True)
    assert weak.code == "weak-password" and "at least 8" in str(weak)


def test_registering_is_refused_unless_allowed(login: MakeLogin) -> None:
    refused = refusal(login, "dave", password="dave's own password", register=True)
    assert refused.code == "register-closed"
    assert "does not let people make their own accounts" in str(refused)


def test_changing_ones_password(login: MakeLogin, accounts_broker: RunningBroker) -> None:
    alice = login("alice")
    alice.change_password("not the old one", "brand new password")
    expect_message(alice, lambda m: "the old password is wrong" in m.text)
    alice.change_password(PASSWORDS["alice"], "alice")  # refused at once, checked or not
    expect_message(alice, lambda m: "password not changed" in m.text and "at least 8" in m.text)
    alice.change_password(PASSWORDS["alice"], "brand new password")  # the wrong one waits
    expect_message(alice, lambda m: "too many wrong passwords; try again in" in m.text)
    throttle = accounts_broker.broker.rules.throttle  # the session's own wait:
    assert throttle.wait(["account alice"], time.monotonic()) == 0  # guessers cannot block it
    wait_for(lambda: throttle.wait([f"passwd {alice.core.secret}"], time.monotonic()) == 0)
    alice.change_password(PASSWORDS["alice"], "brand new password")
    expect_message(alice, lambda m: m.text == "password changed")
    assert alice.core.password == "brand new password"  # what a rejoin logs in with
    alice.close()
    assert refusal(login, "alice").code == "login-failed"
    unthrottled(accounts_broker, "alice")
    assert login("alice", password="brand new password").name == "alice"


def test_the_operator_changing_a_password_ends_the_session(
    login: MakeLogin, accounts_broker: RunningBroker
) -> None:
    alice, bob = login("alice"), login("bob")
    reply = admin(accounts_broker, "user-passwd", name="alice", hash=hash_password("new one 123"))
    assert reply["text"] == "password of alice changed; 1 session(s) ended"
    expect_message(alice, lambda m: "password changed by the operator" in m.text)
    expect_message(bob, lambda m: m.kind == "leave" and m.sender == "alice")
    assert alice.core.ended is not None
    assert refusal(login, "alice").code == "login-failed"
    unthrottled(accounts_broker, "alice")
    assert login("alice", password="new one 123").name == "alice"


def test_a_deleted_account_ends_its_session_and_logs_in_no_more(
    login: MakeLogin, accounts_broker: RunningBroker
) -> None:
    alice = login("alice")
    assert admin(accounts_broker, "user-del", name="alice")["text"].startswith("account alice")
    expect_message(alice, lambda m: "account deleted" in m.text)
    assert refusal(login, "alice").code == "login-failed"
    with pytest.raises(AdminError, match="alice has no account"):
        admin(accounts_broker, "user-del", name="alice")


def test_a_banned_account_cannot_log_in(login: MakeLogin, accounts_broker: RunningBroker) -> None:
    alice, bob = login("alice"), login("bob")
    bob.ban("alice", "spam")  # bob's account is an admin's
    expect_message(alice, lambda m: "banned" in m.text)
    assert refusal(login, "alice").code == "banned"
    carol = login("carol")
    carol.kick("bob")  # carol is no admin
    expect_message(carol, lambda m: "only admins may kick" in m.text)


def test_nick_is_refused_on_an_accounts_broker(login: MakeLogin) -> None:
    alice = login("alice")
    alice.nick("mallory")
    expect_message(alice, lambda m: "your name is your account's" in m.text)


def test_the_admin_socket_takes_hashes_only(accounts_broker: RunningBroker) -> None:
    with pytest.raises(AdminError, match="hash must be a password hash"):
        admin(accounts_broker, "user-add", name="eve", hash="plain text password")
    with pytest.raises(AdminError, match="has an account already"):
        admin(accounts_broker, "user-add", name="ALICE", hash=hash_password("whatever 123"))


def test_accounts_are_for_an_accounts_broker(broker: RunningBroker) -> None:
    with pytest.raises(AdminError, match="accounts are for a broker started with --accounts"):
        request(broker.broker.admin_path, "users")


def test_the_key_port_tells_the_brokers_key(accounts_broker: RunningBroker) -> None:
    hello = fetch_hello("127.0.0.1", accounts_broker.port, 10.0)
    assert hello.key == server_key(accounts_broker)
    assert hello.fingerprint == fingerprint(hello.key)
    assert hello.mode == "accounts" and hello.register is False


def test_the_brokers_key_outlives_a_restart(tmp_path: Path) -> None:
    db = str(tmp_path / "h.db")
    keys = []
    for _ in range(2):
        running = RunningBroker(zmq.Context.instance(), db=db, accounts=True)
        keys.append(server_key(running))
        running.stop()
    assert keys[0] == keys[1]
    secret = tmp_path / "h-broker.key_secret"
    assert secret.stat().st_mode & 0o777 == 0o600


def test_listed_keys_and_accounts_on_one_broker(
    tmp_path: Path, ctx: zmq.Context[zmq.Socket[bytes]]
) -> None:
    """--secure --accounts: a listed key joins as in secure mode; its name is not an
    account's, and no password logs in under it."""
    folder, home = tmp_path / "keys", tmp_path / "home"
    keygen("broker", folder)
    (folder / "users").mkdir()
    public, _ = keygen("Kim", home)
    public.rename(folder / "users" / public.name)
    running = RunningBroker(zmq.Context.instance(), keys=str(folder), accounts=True)
    try:
        with pytest.raises(AdminError, match="Kim has a key file"):
            admin(running, "user-add", name="Kim", hash=hash_password("kim's password"))
        kim_keys = Keys.from_files(folder / "broker.key", home / "Kim.key_secret")
        with Client("Kim", port=running.port, context=ctx, keys=kim_keys) as kim:
            assert kim.name == "Kim"
            login_keys = Keys.for_login(kim_keys.server)
            fake = Client("Kim", port=running.port, context=ctx, keys=login_keys,
                          password="kim's password")  # fmt: skip
            with pytest.raises(JoinRefused) as caught:
                fake.join(timeout=10)
            assert caught.value.code == "login-failed"
    finally:
        running.stop()


# --- passwords are sent encrypted, and kept nowhere ------------------------------------


def test_a_password_is_never_sent_without_encryption(broker: RunningBroker) -> None:
    with pytest.raises(ConfigError, match="refusing to send a password without encryption"):
        Client("alice", port=broker.port, password="correct horse 1")


def test_a_password_meets_an_open_broker_unsent(
    broker: RunningBroker, ctx: zmq.Context[zmq.Socket[bytes]]
) -> None:
    """With the keys of a login, a client's handshake with an open broker fails: the
    JOIN, and the password in it, never leave the client."""
    keys = Keys.for_login(zmq.curve_keypair()[0])
    client = Client("alice", port=broker.port, context=ctx, keys=keys, password="pw 12345678")
    with pytest.raises(JoinRefused) as caught:
        client.join(timeout=10)
    # libzmq tells a mechanism mismatch either way, depending on who speaks first
    assert caught.value.code in ("wrong-mode", "handshake-failed")
    if caught.value.code == "wrong-mode":
        assert "your password was not sent" in str(caught.value)
    assert not broker.broker.rules.sessions and not broker.broker.rules.dropped


def test_passwords_appear_in_no_log_history_output_or_file(
    login: MakeLogin, accounts_broker: RunningBroker, tmp_path: Path,
    caplog: pytest.LogCaptureFixture,
) -> None:  # fmt: skip
    caplog.set_level(logging.DEBUG)
    alice = login("alice")
    alice.send("a line for the history")
    expect_message(alice, said("alice", "a line for the history"))
    refusal(login, "bob", password="bobs wrong password")
    alice.change_password(PASSWORDS["alice"], "alices next password")
    expect_message(alice, lambda m: m.text == "password changed")
    outputs = [admin(accounts_broker, op) for op in ("users", "stats", "who")]
    accounts_broker.broker.store.commit()
    files = [path.read_bytes() for path in tmp_path.glob("history.db*")]
    assert any(b"a line for the history" in data for data in files)  # the files hold lines
    secrets = [*PASSWORDS.values(), "bobs wrong password", "alices next password"]
    for secret in secrets:
        assert secret not in caplog.text
        assert all(secret not in str(output) for output in outputs)
        assert all(secret.encode() not in data for data in files)
    assert "failed login for bob from 127.0.0.1" in caplog.text
    hashes = accounts_broker.broker.store.rows("SELECT hash FROM accounts")
    assert all(row[0].startswith("$scrypt$ln=14,r=8,p=5$") for row in hashes)


def test_a_password_sent_to_an_open_broker_is_refused_not_taken(
    broker: RunningBroker, ctx: zmq.Context[zmq.Socket[bytes]]
) -> None:
    """A raw client that sends a password in the clear is told so, and not joined."""
    sub, push = ctx.socket(zmq.SUB), ctx.socket(zmq.PUSH)
    inbox = "b" * 32
    sub.subscribe(p.inbox_topic(inbox))
    sub.connect(f"tcp://127.0.0.1:{broker.port + 1}")
    push.connect(f"tcp://127.0.0.1:{broker.port}")
    join = p.Join("alice", "a" * 32, inbox, ("general",), password="in the clear 1")
    answer = None
    deadline = time.monotonic() + 10
    while answer is None and time.monotonic() < deadline:
        push.send_multipart(p.encode_client(join))
        if sub.poll(1000):
            answer = p.decode_server(sub.recv_multipart())[1]
    assert isinstance(answer, p.Refused) and answer.code == "no-accounts"
    assert "takes no passwords, and yours travelled unencrypted" in answer.text
    assert not broker.broker.rules.sessions
    for sock in (sub, push):
        sock.close(linger=0)


def test_a_login_key_that_quit_is_cut_and_refused(
    login: MakeLogin, accounts_broker: RunningBroker, ctx: zmq.Context[zmq.Socket[bytes]]
) -> None:
    """Quitting ends what the key may read: a connection it kept is cut, and a new one
    with it fails the handshake (a client makes a fresh key for its next login)."""
    alice = login("alice")
    keys = alice.keys
    assert keys is not None
    alice.close()
    assert f"~{keys.public.decode()}" in accounts_broker.broker.rules.ended_keys
    sub = ctx.socket(zmq.SUB)
    keys.apply(sub)
    monitor = sub.get_monitor_socket(zmq.EVENT_HANDSHAKE_FAILED_AUTH)
    sub.connect(f"tcp://127.0.0.1:{accounts_broker.port + 1}")
    assert monitor.poll(10_000), "the key's handshake was not refused"
    sub.disable_monitor()
    monitor.close(linger=0)
    sub.close(linger=0)
