"""Secure mode with real CURVE sockets: keys refused at the handshake, names from keys,
inboxes for their owner only; the operator's admin socket; kick and ban; flood control."""

from __future__ import annotations

import logging
import os
import stat
import subprocess
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
import zmq

from conftest import RunningBroker
from support import Proc, child_env, expect_message, start_broker, zchat_command
from zchat import Client, Message
from zchat import protocol as p
from zchat.broker.server import BrokerConfig, warn_if_exposed
from zchat.client.listen import Listener
from zchat.client.transport import Keys
from zchat.errors import ConfigError, JoinRefused, NotDelivered
from zchat.keys import keygen

MakeSecure = Callable[..., Client]


@pytest.fixture
def keys(tmp_path: Path) -> Path:
    """A keys folder: the broker's pair, Alice (admin), Bob and Carol allowed; Mallory
    has a pair the broker does not know. Users' pairs are in tmp_path/home."""
    folder, home = tmp_path / "keys", tmp_path / "home"
    keygen("broker", folder)
    (folder / "users").mkdir()
    for name in ("Alice", "Bob", "Carol", "Mallory"):
        public, _ = keygen(name, home)
        if name != "Mallory":
            public.rename(folder / "users" / public.name)
    (folder / "admins").write_text("# admins\nAlice\n")
    return folder


def keys_of(keys: Path, name: str, server: Path | None = None) -> Keys:
    home = keys.parent / "home"
    return Keys.from_files(server or keys / "broker.key", home / f"{name}.key_secret")


@pytest.fixture
def secure_broker(keys: Path) -> Iterator[RunningBroker]:
    running = RunningBroker(zmq.Context.instance(), keys=str(keys))
    yield running
    running.stop()


@pytest.fixture
def make_secure(
    secure_broker: RunningBroker, keys: Path, ctx: zmq.Context[zmq.Socket[bytes]]
) -> Iterator[MakeSecure]:
    """make_secure("Alice") -> a Client joined with Alice's keys."""
    made: list[Client] = []

    def make(name: str, key: str | None = None, join: bool = True, **kwargs: object) -> Client:
        client = Client(
            name, port=secure_broker.port, context=ctx, keys=keys_of(keys, key or name), **kwargs
        )  # type: ignore[arg-type]
        made.append(client)
        if join:
            client.join()
        return client

    yield make
    for client in made:
        client.close()


def chat(sender: str, text: str) -> Callable[[Message], bool]:
    return lambda m: m.kind == "message" and m.sender == sender and m.text == text


def note(fragment: str) -> Callable[[Message], bool]:
    return lambda m: m.kind == "system" and fragment in m.text


# --- the handshake ----------------------------------------------------------------------


def test_known_keys_chat_encrypted_under_their_own_names(make_secure: MakeSecure) -> None:
    alice, bob = make_secure("Alice"), make_secure("Bob")
    alice.send("hello over CURVE")
    expect_message(bob, chat("Alice", "hello over CURVE"))
    bob.msg("Alice", "psst")
    dm = expect_message(alice, lambda m: m.kind == "private")
    assert (dm.sender, dm.to, dm.text) == ("Bob", "Alice", "psst")


def test_an_unknown_key_is_refused_at_the_handshake_and_told_so(make_secure: MakeSecure) -> None:
    mallory = make_secure("Mallory", join=False)
    started = time.monotonic()
    with pytest.raises(JoinRefused) as refused:
        mallory.join(timeout=30)
    assert time.monotonic() - started < 10  # told at once, not after the join's timeout
    assert refused.value.code == "key-refused"
    assert "refused your key" in str(refused.value)
    assert "keys/users" in str(refused.value)


def test_a_wrong_server_key_is_reported_not_waited_on(
    secure_broker: RunningBroker, keys: Path, tmp_path: Path
) -> None:
    other, _ = keygen("impostor", tmp_path / "other")
    client = Client("Alice", port=secure_broker.port, keys=keys_of(keys, "Alice", server=other))
    with pytest.raises(JoinRefused) as refused:
        client.join(timeout=5)
    assert refused.value.code == "handshake-failed"
    assert "--server-key" in str(refused.value)


def test_an_open_client_is_told_the_broker_is_secure(secure_broker: RunningBroker) -> None:
    client = Client("Alice", port=secure_broker.port)
    with pytest.raises(JoinRefused) as refused:
        client.join(timeout=5)
    assert refused.value.code == "wrong-mode"
    assert "join with --secure" in str(refused.value)


def test_a_secure_client_is_told_the_broker_is_open(broker: RunningBroker, keys: Path) -> None:
    client = Client("Alice", port=broker.port, keys=keys_of(keys, "Alice"))
    with pytest.raises(JoinRefused) as refused:
        client.join(timeout=5)
    # an open broker may hang up before its reason (a mechanism mismatch) arrives
    if refused.value.code == "wrong-mode":
        assert "is not in secure mode: join without --secure" in str(refused.value)
    else:
        assert refused.value.code == "handshake-failed"
        assert "does it run with --secure?" in str(refused.value)


@pytest.mark.parametrize(
    ("key", "told"),
    [
        ("Mallory", "refused your key"),  # a key the broker does not know
        (None, "is in secure mode: listen with --secure"),  # no key at all
    ],
)
def test_a_listener_the_broker_refuses_is_told_so_and_stops(
    secure_broker: RunningBroker, keys: Path, key: str | None, told: str
) -> None:
    argv = zchat_command("listen", "--port", str(secure_broker.port))
    if key is not None:
        home = keys.parent / "home"
        argv += ["--secure", "--server-key", str(keys / "broker.key")]
        argv += ["--key", str(home / f"{key}.key_secret")]
    started = time.monotonic()
    done = subprocess.run(
        argv, capture_output=True, text=True, timeout=30, env=child_env(), check=False
    )
    assert time.monotonic() - started < 10  # not a wait for ever on a silent socket
    assert done.returncode == 1
    assert told in done.stderr


def test_send_to_a_secure_broker_without_keys_says_what_to_add(
    secure_broker: RunningBroker,
) -> None:
    argv = zchat_command("send", "--name", "bot", "--port", str(secure_broker.port), "hi")
    done = subprocess.run(
        argv, capture_output=True, text=True, timeout=30, env=child_env(), check=False
    )
    assert done.returncode == 1
    assert "is in secure mode: send with --secure --server-key broker.key" in done.stderr


# --- names and inboxes belong to keys ---------------------------------------------------


def test_no_one_can_join_under_another_keys_name(make_secure: MakeSecure) -> None:
    impostor = make_secure("Alice", key="Bob", join=False)
    with pytest.raises(JoinRefused) as refused:
        impostor.join()
    assert refused.value.code == "not-your-name"
    assert "join as Bob" in str(refused.value)


def test_a_stolen_secret_is_useless_with_another_key(
    make_secure: MakeSecure, secure_broker: RunningBroker, keys: Path
) -> None:
    """Bob learns Alice's session secret and speaks with it over his own connection:
    the broker drops it, because the frame comes with Bob's key."""
    alice, carol = make_secure("Alice"), make_secure("Carol")
    ctx = zmq.Context.instance()
    push = ctx.socket(zmq.PUSH)
    keys_of(keys, "Bob").apply(push)
    push.setsockopt(zmq.LINGER, 0)
    push.connect(f"tcp://127.0.0.1:{secure_broker.port}")
    try:
        forged = p.Say(alice.core.secret, "general", "I am Alice, honest", "f1")
        push.send_multipart(p.encode_client(forged))
        push.send_multipart(p.encode_client(p.Ping(alice.core.secret, alice.core.inbox)))
        deadline = time.monotonic() + 5
        while secure_broker.broker.rules.dropped["foreign-secret"] < 2:
            assert time.monotonic() < deadline, secure_broker.broker.rules.dropped
            carol.receive(timeout=0.05)
    finally:
        push.close()
    alice.send("the real Alice")
    seen = expect_message(carol, chat("Alice", "the real Alice"))
    assert seen.seq == 3  # Alice's join, Carol's join, then this: nothing forged between


def test_another_keys_subscription_to_an_inbox_is_refused(
    make_secure: MakeSecure, secure_broker: RunningBroker, keys: Path
) -> None:
    """Bob subscribes, with his own key, to Alice's inbox and to #general. DMs to Alice
    never reach him; a line in #general published after them does, so he was listening.
    Closing his socket does not end Alice's session."""
    alice, carol = make_secure("Alice"), make_secure("Carol")
    ctx = zmq.Context.instance()
    spy = ctx.socket(zmq.SUB)
    keys_of(keys, "Bob").apply(spy)
    spy.setsockopt(zmq.LINGER, 0)
    spy.subscribe(p.room_topic("general"))
    spy.subscribe(p.inbox_topic(alice.core.inbox))
    spy.connect(f"tcp://127.0.0.1:{secure_broker.port + 1}")
    rules = secure_broker.broker.rules
    try:
        deadline = time.monotonic() + 5
        while rules.dropped["foreign-inbox"] < 1:  # the broker has seen and refused it
            assert time.monotonic() < deadline
            alice.receive(timeout=0.05)
        heard: list[list[bytes]] = []
        for attempt in range(50):  # the room subscription may take a moment to land
            carol.msg("Alice", f"secret {attempt}")
            carol.send(f"public {attempt}")
            if spy.poll(200):
                while spy.poll(100):
                    heard.append(spy.recv_multipart())
                break
        assert heard, "the spy never heard #general"
        assert all(frames[0] == p.room_topic("general") for frames in heard), heard
        expect_message(alice, lambda m: m.kind == "private" and m.text.startswith("secret"))
    finally:
        spy.close()
    # libzmq reports the closed socket's inbox topic as unsubscribed; that is not Alice's
    session = rules.presence.holder("Alice")
    assert session is not None
    deadline = time.monotonic() + 8
    while session.suspect is not None or time.monotonic() < deadline - 4:
        assert time.monotonic() < deadline, "Alice's session stayed suspected"
        alice.receive(timeout=0.1)
    assert rules.presence.holder("Alice") is session
    alice.send("still here")
    expect_message(carol, chat("Alice", "still here"))


def test_names_cannot_change_in_secure_mode(make_secure: MakeSecure) -> None:
    alice = make_secure("Alice")
    alice.nick("Queen")
    expect_message(alice, note("your name is your key's name"))
    assert alice.name == "Alice"


# --- moderation ------------------------------------------------------------------------


def admin_cli(path: Path, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        zchat_command("admin", "--admin-socket", str(path), *args),
        capture_output=True,
        text=True,
        timeout=30,
        check=False,
    )


def test_the_admin_socket_is_for_its_owner_only(broker: RunningBroker) -> None:
    path = broker.broker.admin_path
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert stat.S_IMODE(path.parent.stat().st_mode) == 0o700
    assert path.parent.stat().st_uid == os.getuid()


def start_with_admin_socket(path: Path) -> subprocess.CompletedProcess[str]:
    argv = zchat_command("broker", "--port", "0", "--db", ":memory:", "--admin-socket", str(path))
    return subprocess.run(
        argv, capture_output=True, text=True, env=child_env(), timeout=30, check=False
    )


@pytest.mark.parametrize("mode", [0o777, 0o1777, 0o775], ids=["0777", "1777", "0775"])
def test_the_admin_socket_is_never_put_where_others_can_write(tmp_path: Path, mode: int) -> None:
    shared = tmp_path / "shared"
    shared.mkdir()
    shared.chmod(mode)  # world-writable, sticky like /tmp, group-writable
    result = start_with_admin_socket(shared / "admin.sock")
    assert result.returncode == 2
    [line] = result.stderr.splitlines()
    assert line.startswith(f"zchat: {shared} can be written by other users (mode {mode:o}): ")
    assert "chmod go-w" in line
    assert stat.S_IMODE(shared.stat().st_mode) == mode  # the folder is left as it was
    assert list(shared.iterdir()) == []


def test_the_admin_socket_is_never_put_where_others_can_rename_its_folder(
    tmp_path: Path,
) -> None:
    above = tmp_path / "open"
    (above / "mine").mkdir(parents=True, mode=0o700)
    above.chmod(0o777)  # not sticky: anyone may rename "mine" and put another in its place
    result = start_with_admin_socket(above / "mine" / "admin.sock")
    assert result.returncode == 2
    [line] = result.stderr.splitlines()
    assert line.startswith(f"zchat: {above} can be written by other users (mode 777) and is ")
    assert f"could rename {above / 'mine'} " in line


def test_the_admin_socket_may_go_in_a_folder_only_its_user_writes(
    tmp_path: Path, procs: list[Proc]
) -> None:
    readable = tmp_path / "run"
    readable.mkdir()
    readable.chmod(0o755)  # others may look, not write: the socket file itself is 0600
    broker, _ = start_broker("--admin-socket", str(readable / "admin.sock"))
    procs.append(broker)
    assert admin_cli(readable / "admin.sock", "who").returncode == 0
    assert stat.S_IMODE(readable.stat().st_mode) == 0o755
    assert stat.S_IMODE((readable / "admin.sock").stat().st_mode) == 0o600


def test_the_operator_kicks_a_user_who_is_told_why(
    broker: RunningBroker, make_client: Callable[..., Client]
) -> None:
    alice, bob = make_client("Alice"), make_client("Bob")
    result = admin_cli(broker.broker.admin_path, "kick", "bob", "spamming")
    assert result.returncode == 0, result.stderr
    assert result.stdout == "Bob was kicked\n"
    expect_message(bob, note("you were kicked out by the operator: spamming"))
    while bob.receive() is not None:  # the session is over: receive() stops waiting
        pass
    assert bob.core.ended == "you were kicked out by the operator: spamming"
    with pytest.raises(NotDelivered, match="kicked out"):
        bob.send("let me back")
    left = expect_message(alice, lambda m: m.kind == "leave" and m.sender == "Bob")
    assert left.text == "kicked by the operator: spamming"
    again = make_client("Bob")  # a kick is not a ban
    again.send("I am back")
    expect_message(alice, chat("Bob", "I am back"))


def test_a_ban_outlasts_a_restart_until_unbanned(
    tmp_path: Path, procs: list[Proc], ctx: zmq.Context[zmq.Socket[bytes]]
) -> None:
    db, sock = str(tmp_path / "history.db"), tmp_path / "admin.sock"
    broker, port = start_broker("--admin-socket", str(sock), db=db)
    procs.append(broker)
    bob = Client("Bob", port=port, context=ctx)
    bob.join()
    result = admin_cli(sock, "ban", "Bob", "rude")
    assert (result.returncode, result.stdout) == (0, "Bob is banned, and was kicked\n")
    expect_message(bob, note("you were banned by the operator: rude"))
    bob.close()
    listing = admin_cli(sock, "bans")
    assert listing.stdout.startswith("Bob  banned by the operator at ")
    assert listing.stdout.rstrip().endswith(": rude")
    broker.signal(15)
    assert broker.wait() == 0
    broker, _ = start_broker("--admin-socket", str(sock), port=port, db=db)
    procs.append(broker)
    with pytest.raises(JoinRefused) as refused:
        Client("bob", port=port, context=ctx).join()
    assert refused.value.code == "banned"
    assert str(refused.value) == "Bob is banned from this chat by the operator: rude"
    assert admin_cli(sock, "unban", "bob").stdout == "bob is no longer banned\n"
    back = Client("Bob", port=port, context=ctx)
    back.join()
    back.close()
    missing = admin_cli(sock, "unban", "bob")
    assert (missing.returncode, missing.stderr) == (1, "zchat: 'bob' is not banned\n")


def test_admin_who_and_clear_errors(
    broker: RunningBroker, make_client: Callable[..., Client], tmp_path: Path
) -> None:
    make_client("Alice", rooms=["general", "ops"])
    who = admin_cli(broker.broker.admin_path, "who")
    assert who.stdout.startswith("Alice  #general #ops  from 127.0.0.1  ")
    nobody = admin_cli(broker.broker.admin_path, "kick", "Zed")
    assert (nobody.returncode, nobody.stderr) == (1, "zchat: no user named 'Zed' is here\n")
    nowhere = admin_cli(tmp_path / "none.sock", "who")
    assert nowhere.returncode == 1
    assert "no broker here" in nowhere.stderr
    reload = admin_cli(broker.broker.admin_path, "reload")
    assert "secure mode" in reload.stderr


def test_admin_against_a_stopped_broker_answers_at_once(procs: list[Proc], tmp_path: Path) -> None:
    sock = tmp_path / "admin.sock"
    broker, _ = start_broker("--admin-socket", str(sock))
    procs.append(broker)
    assert admin_cli(sock, "who").returncode == 0
    broker.signal(15)
    assert broker.wait() == 0
    assert not sock.exists()  # a clean stop takes its socket file along
    gone = admin_cli(sock, "who")
    assert (gone.returncode, "no broker here" in gone.stderr) == (1, True)
    killed, _ = start_broker("--admin-socket", str(sock))
    procs.append(killed)
    assert admin_cli(sock, "who").returncode == 0
    killed.signal(9)
    killed.wait()
    assert sock.exists()  # what kill -9 leaves
    started = time.monotonic()
    stale = admin_cli(sock, "who")
    assert time.monotonic() - started < 4  # not the reply's 5 s timeout
    assert stale.returncode == 1
    assert "no broker is listening at" in stale.stderr


def test_a_banned_key_cannot_connect_to_read_or_to_join(
    secure_broker: RunningBroker, keys: Path, make_secure: MakeSecure
) -> None:
    bob = make_secure("Bob")
    admin = secure_broker.broker.admin_path
    assert admin_cli(admin, "ban", "bob", "rude").returncode == 0
    expect_message(bob, note("you were banned by the operator: rude"))
    started = time.monotonic()
    with pytest.raises(JoinRefused) as refused:
        make_secure("Bob", join=False).join(timeout=30)
    assert time.monotonic() - started < 10  # told at the handshake, not after the timeout
    assert refused.value.code == "key-refused"
    assert "refused your key (unknown to it, or banned)" in str(refused.value)
    ears = Listener(port=secure_broker.port, keys=keys_of(keys, "Bob"))
    with pytest.raises(JoinRefused, match="or banned"):  # no reading the rooms either
        ears.receive(timeout=5)
    assert admin_cli(admin, "unban", "bob").returncode == 0
    back = make_secure("Bob")
    back.send("better now")


def test_admins_kick_and_ban_in_chat_others_may_not(make_secure: MakeSecure) -> None:
    alice, bob, carol = make_secure("Alice"), make_secure("Bob"), make_secure("Carol")
    bob.kick("Carol", "mine now")
    expect_message(bob, note("only admins may kick"))
    alice.kick("Bob", "behave")
    expect_message(alice, note("Bob was kicked"))
    expect_message(bob, note("you were kicked out by Alice: behave"))
    left = expect_message(carol, lambda m: m.kind == "leave" and m.sender == "Bob")
    assert left.text == "kicked by Alice: behave"
    alice.ban("Carol")
    expect_message(carol, note("you were banned by Alice"))
    expect_message(alice, note("Carol is banned, and was kicked"))
    alice.unban("Carol")
    expect_message(alice, note("Carol is no longer banned"))


def test_an_admin_cannot_kick_or_ban_themselves(make_secure: MakeSecure) -> None:
    alice, bob = make_secure("Alice"), make_secure("Bob")  # Alice is the only admin
    alice.ban("alice", "oops")
    refused = expect_message(alice, note("yourself"))
    assert refused.text == (
        "error: you cannot ban yourself: you would be locked out (another admin, or "
        "the operator with `zchat admin`, may)"
    )
    alice.kick("ALICE")
    refused = expect_message(alice, note("yourself"))
    assert refused.text == "error: you cannot kick yourself: /quit leaves"
    alice.send("still here")  # neither kicked nor banned
    expect_message(bob, chat("Alice", "still here"))
    alice.ban("Bob")  # others still can be
    expect_message(alice, note("Bob is banned, and was kicked"))


def test_kick_in_chat_needs_secure_mode(make_client: Callable[..., Client]) -> None:
    alice, _ = make_client("Alice"), make_client("Bob")
    alice.kick("Bob")
    expect_message(alice, note("need a broker in secure mode"))


def test_a_withdrawn_key_ends_the_session_on_reload(
    make_secure: MakeSecure, secure_broker: RunningBroker, keys: Path
) -> None:
    alice, bob = make_secure("Alice"), make_secure("Bob")
    (keys / "users" / "Bob.key").unlink()
    result = admin_cli(secure_broker.broker.admin_path, "reload")
    assert result.stdout == "keys reloaded: 2 user(s), 1 admin(s)\n", result.stderr
    expect_message(bob, note("you were kicked out by the operator: key withdrawn"))
    expect_message(alice, lambda m: m.kind == "leave" and m.sender == "Bob")
    again = make_secure("Bob", join=False)
    with pytest.raises(JoinRefused) as refused:
        again.join()
    assert refused.value.code == "key-refused"


# --- floods ----------------------------------------------------------------------------


# one token back every 100 s: however slowly the broker gets through the flood, only the
# burst passes
@pytest.mark.broker(rate=0.01, burst=10)
def test_a_flood_is_cut_to_the_bucket_and_told_once(
    make_client: Callable[..., Client],
) -> None:
    alice, bob = make_client("Alice"), make_client("Bob")
    for i in range(100):
        alice.send(f"flood {i}")
    alice.flush(timeout=15)  # every line is confirmed or reported
    notes = [m for m in drain(alice) if m.kind == "system"]
    told = [m for m in notes if "slow down" in m.text]
    assert len(told) == 1, notes  # once per burst
    assert "at most 0.01 lines a second, 10 at once" in told[0].text
    assert alice.core.undelivered == [f"flood {i}" for i in range(10, 100)]
    bob.send("I can still talk")
    expect_message(alice, chat("Bob", "I can still talk"))


def drain(client: Client) -> list[Message]:
    out = []
    while (msg := client.receive(timeout=0.2)) is not None:
        out.append(msg)
    return out


# --- the command line ------------------------------------------------------------------


def test_key_files_keygen_could_not_have_made_are_skipped_with_a_warning(
    keys: Path, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    odd = tmp_path / "odd"
    files = {"hidden": ".hidden.key", "dot": "..key", "spaced": "bad name.key"}
    for name, file in files.items():
        public, _ = keygen(name, odd)
        public.rename(keys / "users" / file)
    with caplog.at_level(logging.WARNING, logger="zchat.keys"):
        running = RunningBroker(zmq.Context.instance(), keys=str(keys))
    try:
        for file in files.values():
            [warning] = [r.getMessage() for r in caplog.records if file in r.getMessage()]
            assert warning.startswith(f"{keys / 'users' / file} skipped: the file name must be")
        for name, as_name in (("hidden", ".hidden"), ("dot", ".")):
            client = Client(
                as_name,
                port=running.port,
                keys=Keys.from_files(keys / "broker.key", odd / f"{name}.key_secret"),
            )
            with pytest.raises(JoinRefused) as refused:
                client.join(timeout=5)
            client.close()
            assert refused.value.code == "key-refused"
    finally:
        running.stop()


@pytest.mark.parametrize("name", [".hidden", ".", ".."])
def test_keygen_makes_no_hidden_key_files(tmp_path: Path, name: str) -> None:
    with pytest.raises(ConfigError, match=f"cannot name a key '{name}'.*starts with '.'"):
        keygen(name, tmp_path)
    assert list(tmp_path.iterdir()) == []


def test_keygen_writes_a_private_secret_and_never_overwrites(tmp_path: Path) -> None:
    run = subprocess.run(
        zchat_command("keygen", "alice", "--dir", str(tmp_path)),
        capture_output=True,
        text=True,
        timeout=30,
        check=False,
    )
    assert run.returncode == 0, run.stderr
    assert stat.S_IMODE((tmp_path / "alice.key_secret").stat().st_mode) == 0o600
    assert "public-key = " in (tmp_path / "alice.key").read_text()
    assert "secret-key = " in (tmp_path / "alice.key_secret").read_text()
    again = subprocess.run(
        zchat_command("keygen", "alice", "--dir", str(tmp_path)),
        capture_output=True,
        text=True,
        timeout=30,
        check=False,
    )
    assert again.returncode == 1
    assert "exists already" in again.stderr


def test_the_readme_flow_in_terminals(keys: Path, procs: list[Proc]) -> None:
    """`zchat broker --secure`, two `zchat join --secure` as a newcomer types them."""
    broker, port = start_broker("--secure", "--keys", str(keys))
    procs.append(broker)
    assert "; secure mode (CURVE); " in broker.lines["stderr"][-1]
    home = keys.parent / "home"
    joiners = {}
    for name in ("alice", "bob"):
        argv = zchat_command(
            "join", "--port", str(port), "--secure", "--server-key", str(keys / "broker.key"),
            "--key", str(home / f"{name.title()}.key_secret"), "--time-format", "none",
        )  # fmt: skip
        joiners[name] = Proc(argv)
        procs.append(joiners[name])
        joiners[name].expect(r"in #general: ")
    joiners["alice"].expect(r"Bob joined")
    joiners["alice"].send_line("hello Bob")
    joiners["bob"].expect(r"^Alice: hello Bob$")
    kick = admin_cli(Path(os.environ["XDG_RUNTIME_DIR"]) / "zchat" / f"admin-{port}.sock",
                     "kick", "bob", "bedtime")  # fmt: skip
    assert kick.returncode == 0, kick.stderr
    joiners["bob"].expect(r"you were kicked out by the operator: bedtime")
    assert joiners["bob"].wait() == 1


def test_a_broker_off_loopback_warns_what_open_mode_exposes() -> None:
    assert warn_if_exposed(BrokerConfig(host="127.0.0.1")) is None
    assert warn_if_exposed(BrokerConfig(host="0.0.0.0", keys="keys")) is None
    # 192.0.2.1 (TEST-NET-1) is on no interface here: the warning comes, then the bind fails
    run = subprocess.run(
        zchat_command("broker", "--host", "192.0.2.1", "--port", "7000", "--db", ":memory:"),
        capture_output=True,
        text=True,
        timeout=30,
        check=False,
        stdin=subprocess.DEVNULL,
    )
    assert run.returncode == 2
    assert (
        "open mode on 192.0.2.1: anyone who can reach ports 7000 to 7002 can read every "
        "room, join under any free name, speak and share files, and nothing is encrypted"
        in run.stderr
    )
    assert "zchat: cannot listen on 192.0.2.1:7000" in run.stderr


def test_junk_on_the_out_socket_never_misroutes_an_inbox(
    broker: RunningBroker, ctx: zmq.Context[zmq.Socket[bytes]]
) -> None:
    """libzmq 4.3.5 queues a non-subscription message on an XPUB_MANUAL socket without
    its connection, so the next subscription read would be applied to another one's.
    An XSUB sending junk between its own subscriptions (from another address, on new
    connections as it is cut) must never get a victim's inbox, and the victims join."""
    stop, stolen = threading.Event(), []

    def attack() -> None:
        end = time.monotonic() + 20
        while not stop.is_set() and time.monotonic() < end:
            xsub = ctx.socket(zmq.XSUB)
            xsub.setsockopt(zmq.LINGER, 0)
            xsub.connect(f"tcp://127.0.0.2:0;127.0.0.1:{broker.port + 1}")
            for _ in range(100):
                xsub.send_multipart([b"x"])
                xsub.send_multipart([b"\x01room/zz/"])
                xsub.send_multipart([b"\x00room/zz/"])
            while xsub.poll(50):
                frames = xsub.recv_multipart()
                if frames[0].startswith(p.INBOX_PREFIX):
                    stolen.append(frames)
            xsub.close()

    attacker = threading.Thread(target=attack)
    attacker.start()
    try:
        deadline = time.monotonic() + 10
        while broker.broker.guard.cuts["junk"] == 0:  # the attack has begun
            assert time.monotonic() < deadline
            stop.wait(0.05)
        for n in range(3):
            victim = Client(f"victim{n}", port=broker.port, context=ctx)
            try:
                victim.join(timeout=2)
            finally:
                victim.close()
    finally:
        stop.set()
        attacker.join(30)
    assert stolen == []
