"""A secure broker's files on its own machine: the history is its user's only, the keys
folder can be changed by nobody else (StrictModes), key files are read up to a bound,
and a reload reads the folder off the poll loop while the chat goes on."""

from __future__ import annotations

import json
import logging
import os
import pwd
import signal
import stat
import subprocess
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest
import zmq

from conftest import RunningBroker
from support import Proc, child_env, expect_message, zchat_command
from test_secure import admin_cli, chat, keys_of, note
from zchat import Client
from zchat.broker.reloading import LoadKeys
from zchat.broker.server import Broker, BrokerConfig
from zchat.broker.store import HistoryStore
from zchat.errors import ConfigError, JoinRefused
from zchat.keys import KeyRing, keygen, load_keyring

NOBODY = 65534  # another user's id, for files that are not the broker's user's
as_root = pytest.mark.skipif(os.geteuid() != 0, reason="only root can give a file away")


@pytest.fixture
def keys(tmp_path: Path) -> Path:
    """A keys folder as `zchat keygen` and mkdir make it (0755 folders, 0644 files, a 0600
    secret): Alice (admin), Bob and Carol allowed. Users' pairs are in tmp_path/home."""
    folder, home = tmp_path / "keys", tmp_path / "home"
    keygen("broker", folder)
    (folder / "users").mkdir()
    for name in ("Alice", "Bob", "Carol"):
        public, _ = keygen(name, home)
        public.rename(folder / "users" / public.name)
    (folder / "admins").write_text("# admins\nAlice\n")
    return folder


def mode_of(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


def broker_command(keys: Path | None, *args: str) -> list[str]:
    secure = ["--secure", "--keys", str(keys)] if keys is not None else []
    return zchat_command("broker", "--port", "0", *secure, *args)


def start(keys: Path | None, *args: str, **env: str) -> tuple[Proc, int, Path]:
    """`zchat broker` in a child process: it, its port and its history file."""
    proc = Proc(broker_command(keys, *args), stdin=subprocess.DEVNULL, **env)
    match = proc.expect(r"listening: in tcp://[^ ]+:(\d+) .*; history in (.+?); ", "stderr")
    return proc, int(match.group(1)), Path(match.group(2))


def say_and_hear(port: int, keys: Path | None, ctx: zmq.Context[zmq.Socket[bytes]]) -> None:
    """A line said and heard back: stored, since the broker stores before it publishes."""
    pair = keys_of(keys, "Alice") if keys is not None else None
    with Client("Alice", port=port, context=ctx, keys=pair) as alice:
        alice.send("on the record")
        expect_message(alice, chat("Alice", "on the record"))


def history_files(db: Path) -> list[Path]:
    return [db.with_name(db.name + end) for end in ("", "-wal", "-shm", ".lock")]


# --- the history is private -----------------------------------------------------------


@pytest.mark.parametrize("secure", [True, False], ids=["secure", "open"])
def test_the_default_history_is_private_to_the_brokers_user(
    keys: Path,
    tmp_path: Path,
    procs: list[Proc],
    ctx: zmq.Context[zmq.Socket[bytes]],
    secure: bool,
) -> None:
    data = tmp_path / "data"
    broker, port, db = start(keys if secure else None, XDG_DATA_HOME=str(data))
    procs.append(broker)
    assert db.parent == data / "zchat"
    assert db.name == ("secure-history-0.db" if secure else "history-0.db")
    say_and_hear(port, keys if secure else None, ctx)
    assert mode_of(db.parent) == 0o700
    for path in history_files(db):  # SQLite makes -wal and -shm as it opens the file
        assert mode_of(path) == 0o600, path


def test_history_files_open_to_others_are_made_private_at_start(
    keys: Path,
    tmp_path: Path,
    procs: list[Proc],
    ctx: zmq.Context[zmq.Socket[bytes]],
) -> None:
    """Files as an older broker left them when it was killed: all four, 0644 in 0755."""
    data = tmp_path / "data"
    killed, port, db = start(keys, XDG_DATA_HOME=str(data))
    procs.append(killed)
    say_and_hear(port, keys, ctx)
    killed.signal(signal.SIGKILL)
    killed.wait()
    files = history_files(db)
    for path in files:
        path.chmod(0o644)
    db.parent.chmod(0o755)
    broker, port, _ = start(keys, XDG_DATA_HOME=str(data))
    procs.append(broker)
    [warning] = [line for line in broker.lines["stderr"] if " WARNING " in line]  # before listening
    assert warning.endswith(
        " WARNING the history was readable by other users; "
        "made private (0600, folder 0700): "
        + ", ".join(f"{path} (was 644)" for path in files)
        + f", {db.parent} (was 755)"
    )
    assert [mode_of(path) for path in files] == [0o600] * 4
    assert mode_of(db.parent) == 0o700
    say_and_hear(port, keys, ctx)  # the history is the same file, in use


def test_a_history_given_with_db_keeps_its_folder_as_it_is(tmp_path: Path) -> None:
    folder = tmp_path / "shared"
    folder.mkdir(mode=0o755)
    folder.chmod(0o755)
    store = HistoryStore(folder / "history.db", mode="secure")
    try:
        assert [mode_of(path) for path in history_files(folder / "history.db")] == [0o600] * 4
    finally:
        store.close()
    assert mode_of(folder) == 0o755  # the operator's folder: only the files are zchat's


@as_root
def test_history_files_of_another_user_are_refused_not_changed(keys: Path, tmp_path: Path) -> None:
    db = tmp_path / "history.db"
    HistoryStore(db, mode="secure").close()
    db.chmod(0o644)
    os.chown(db, NOBODY, NOBODY)
    run = subprocess.run(
        broker_command(keys, "--db", str(db)),
        capture_output=True,
        text=True,
        timeout=30,
        env=child_env(),
        check=False,
    )
    assert run.returncode == 2
    owner = _name(NOBODY)
    assert run.stderr == (
        f"zchat: history database {db}: {db} belongs to {owner}, not to root (who runs the "
        "broker), and other users may use it (mode 644): they could read the history. Make "
        f"it root's and private (chown root {db}; chmod 600 {db}), or pass --db with "
        "another path\n"
    )
    assert (db.stat().st_uid, mode_of(db)) == (NOBODY, 0o644)


def _name(uid: int) -> str:
    try:
        return pwd.getpwuid(uid).pw_name
    except KeyError:
        return f"uid {uid}"


# --- nobody else may change the keys folder (StrictModes) ------------------------------

ANY_KEY = "replace the broker's keys, or make themselves admin"


WRITABLE = [
    ("", 0o777, ANY_KEY),
    ("", 0o775, ANY_KEY),
    ("users", 0o757, "add a key"),
    ("users", 0o775, "add a key"),
    ("users/Bob.key", 0o646, "put their own key in place of Bob's"),
    ("admins", 0o666, "make themselves admin"),
    ("admins", 0o664, "make themselves admin"),
    ("broker.key_secret", 0o620, "replace the broker's key"),
]


@pytest.mark.parametrize(
    ("target", "mode", "could"), WRITABLE, ids=[f"{t or 'keys'}-{m:o}" for t, m, _ in WRITABLE]
)
def test_keys_others_may_change_are_refused_naming_the_fix(
    keys: Path, target: str, mode: int, could: str
) -> None:
    path = keys / target if target else keys
    path.chmod(mode)
    with pytest.raises(ConfigError) as refused:
        load_keyring(keys)
    assert str(refused.value) == (
        f"{path} is writable by other users: any of them could {could}; run chmod go-w {path}"
    )


@pytest.mark.parametrize("mode", [0o644, 0o640, 0o604], ids=oct)
def test_a_broker_secret_others_may_read_is_refused_naming_the_fix(keys: Path, mode: int) -> None:
    secret = keys / "broker.key_secret"
    secret.chmod(mode)
    with pytest.raises(ConfigError) as refused:
        load_keyring(keys)
    assert str(refused.value) == (
        f"{secret} is readable by other users (mode {mode:o}): any of them could pose as "
        f"this broker to its users; run chmod 600 {secret}"
    )


@as_root
@pytest.mark.parametrize(
    ("target", "could"),
    [
        ("", ANY_KEY),
        ("users", "add a key"),
        ("users/Bob.key", "put their own key in place of Bob's"),
        ("admins", "make themselves admin"),
        ("broker.key_secret", "replace the broker's key"),
    ],
    ids=["keys", "users", "Bob.key", "admins", "broker.key_secret"],
)
def test_keys_that_belong_to_another_user_are_refused(keys: Path, target: str, could: str) -> None:
    path = keys / target if target else keys
    os.chown(path, NOBODY, NOBODY)
    owner = _name(NOBODY)
    with pytest.raises(ConfigError) as refused:
        load_keyring(keys)
    assert str(refused.value) == (
        f"{path} belongs to {owner}, not to root (who runs the broker): {owner} could "
        f"{could}; run chown root {path}"
    )


def test_a_keys_folder_others_could_rename_is_refused(keys: Path) -> None:
    above = keys.parent
    mode = mode_of(above)
    above.chmod(0o777)  # not sticky: anyone may move keys/ away and put theirs there
    try:
        with pytest.raises(ConfigError) as refused:
            load_keyring(keys)
    finally:
        above.chmod(mode)
    assert str(refused.value) == (
        f"{above} is writable by other users and not sticky (mode 777): any of them could "
        f"rename {keys} and put their own in its place, to choose who gets in; run chmod "
        f"go-w {above}, or move {keys} under folders only you can write to"
    )


def test_a_keys_folder_others_may_change_stops_the_broker_with_exit_code_2(keys: Path) -> None:
    (keys / "users").chmod(0o777)
    run = subprocess.run(
        broker_command(keys, "--db", ":memory:"),
        capture_output=True,
        text=True,
        timeout=30,
        env=child_env(),
        check=False,
    )
    assert run.returncode == 2
    users = keys / "users"
    assert run.stderr == (
        f"zchat: {users} is writable by other users: any of them could add a key; run "
        f"chmod go-w {users}\n"
    )


@pytest.fixture
def served(keys: Path) -> Iterator[RunningBroker]:
    running = RunningBroker(zmq.Context.instance(), keys=str(keys))
    yield running
    running.stop()


def joined(name: str, port: int, keys: Path, ctx: zmq.Context[zmq.Socket[bytes]]) -> Client:
    """A client with ``name``'s keys, which joins as its ``with`` block begins."""
    return Client(name, port=port, context=ctx, keys=keys_of(keys, name))


def test_a_reload_of_a_keys_folder_others_may_change_is_refused_and_changes_nothing(
    keys: Path, served: RunningBroker, ctx: zmq.Context[zmq.Socket[bytes]]
) -> None:
    with (
        joined("Alice", served.port, keys, ctx) as alice,
        joined("Bob", served.port, keys, ctx) as bob,
    ):
        users = keys / "users"
        (users / "Bob.key").unlink()
        users.chmod(0o777)
        refused = admin_cli(served.broker.admin_path, "reload")
        assert (refused.returncode, refused.stderr) == (
            1,
            f"zchat: {users} is writable by other users: any of them could add a key; "
            f"run chmod go-w {users}\n",
        )
        bob.send("still allowed")  # the keys the broker had are still the ones it uses
        expect_message(alice, chat("Bob", "still allowed"))
        users.chmod(0o755)
        done = admin_cli(served.broker.admin_path, "reload")
        assert done.stdout == "keys reloaded: 2 user(s), 1 admin(s)\n", done.stderr
        expect_message(bob, note("you were kicked out by the operator: key withdrawn"))


# --- key files are read up to a bound --------------------------------------------------

HUNDRED_MB = 100 * 2**20


def pad(path: Path, size: int = HUNDRED_MB) -> None:
    """Make ``path`` ``size`` bytes long, its text first (a sparse file: made at once)."""
    with path.open("r+b") as file:
        file.truncate(size)


def test_a_huge_user_key_file_is_skipped_unread_with_a_warning(
    keys: Path, ctx: zmq.Context[zmq.Socket[bytes]], caplog: pytest.LogCaptureFixture
) -> None:
    """Carol's key file, with her real key at its start, grown to 100 MB: no key file
    is that long, so it is not read, and Carol is not let in."""
    carol = keys / "users" / "Carol.key"
    pad(carol)
    with caplog.at_level(logging.WARNING, logger="zchat.keys"):
        running = RunningBroker(zmq.Context.instance(), keys=str(keys))
    try:
        [warning] = [r.getMessage() for r in caplog.records if str(carol) in r.getMessage()]
        assert warning == (
            f"{carol} skipped: it holds 104,857,600 bytes, and a key file at most 4,096 "
            "(`zchat keygen` makes them of some 300 bytes); replace it with the one "
            "`zchat keygen Carol` made"
        )
        carol_client = joined("Carol", running.port, keys, ctx)
        try:
            with pytest.raises(JoinRefused) as refused:
                carol_client.join(timeout=5)
        finally:
            carol_client.close()
        assert refused.value.code == "key-refused"
        with joined("Alice", running.port, keys, ctx) as alice:
            alice.send("the others get in")
            expect_message(alice, chat("Alice", "the others get in"))
        reload = admin_cli(running.broker.admin_path, "reload")
        assert reload.stdout == (
            "keys reloaded: 2 user(s), 1 admin(s); 1 file(s) skipped, see the broker's log\n"
        ), reload.stderr
    finally:
        running.stop()


@pytest.mark.parametrize(
    ("target", "told"),
    [
        ("broker.key_secret", "a key file holds at most 4,096"),
        ("admins", "an admins file (names, one a line) holds at most 65,536"),
    ],
    ids=["broker.key_secret", "admins"],
)
def test_a_huge_broker_key_or_admins_file_is_refused_unread(
    keys: Path, target: str, told: str
) -> None:
    path = keys / target
    pad(path)
    with pytest.raises(ConfigError) as refused:
        load_keyring(keys)
    assert (
        str(refused.value)
        == f"{path} holds 104,857,600 bytes, and {told}: it is not one zchat made"
    )


# --- a reload reads the folder off the poll loop ---------------------------------------


class ServingBroker:
    """A secure Broker serving in a thread, reading its keys with ``load_keys``."""

    def __init__(self, keys: Path, load_keys: LoadKeys = load_keyring) -> None:
        config = BrokerConfig(port=0, linger=0.2, keys=str(keys))
        self.broker = Broker(config, load_keys=load_keys)
        self.port = self.broker.port
        self.thread = threading.Thread(target=self.broker.run, name="broker", daemon=True)
        self.thread.start()

    def stop(self) -> None:
        self.broker.stop()
        self.thread.join(10)
        assert not self.thread.is_alive(), "broker did not stop"


def test_chat_and_the_admin_socket_go_on_while_a_reload_reads_the_keys(
    keys: Path, ctx: zmq.Context[zmq.Socket[bytes]]
) -> None:
    """The reload's reading is held (as a slow disk would hold it) until the test lets
    it go: meanwhile lines are delivered, `zchat admin stats` is answered, and a second
    reload is told to wait. The reload's answer and its effect come after, together."""
    reading, finish = threading.Event(), threading.Event()
    loads: list[threading.Thread] = []

    def held(folder: str | Path) -> KeyRing:
        loads.append(threading.current_thread())
        if len(loads) > 1:  # the first is the broker's start
            reading.set()
            assert finish.wait(30), "the test never let the reload finish"
        return load_keyring(folder)

    running = ServingBroker(keys, held)
    try:
        with (
            joined("Alice", running.port, keys, ctx) as alice,
            joined("Bob", running.port, keys, ctx) as bob,
            ctx.socket(zmq.REQ) as operator,
        ):
            (keys / "users" / "Bob.key").unlink()
            operator.setsockopt(zmq.LINGER, 0)
            operator.connect(f"ipc://{running.broker.admin_path}")
            operator.send(json.dumps({"op": "reload"}).encode())
            assert reading.wait(10), "the reload never began"
            assert loads[1] is not running.thread  # not read on the poll loop
            bob.send("during the reload")
            expect_message(alice, chat("Bob", "during the reload"))
            stats = admin_cli(running.broker.admin_path, "stats")
            assert json.loads(stats.stdout)["sessions"] == 2, stats.stderr
            again = admin_cli(running.broker.admin_path, "reload")
            assert (again.returncode, again.stderr) == (
                1,
                "zchat: a reload is already under way: try again when it ends\n",
            )
            assert not operator.poll(0)  # the first is not answered before it is done
            finish.set()
            assert operator.poll(10_000), "the reload was never answered"
            assert json.loads(operator.recv()) == {
                "ok": True,
                "text": "keys reloaded: 2 user(s), 1 admin(s)",
            }
            expect_message(bob, note("you were kicked out by the operator: key withdrawn"))
            assert len(loads) == 2  # the second reload never read anything
    finally:
        finish.set()
        running.stop()
