"""Accounts mode as its operator and its people use it: `zchat broker --accounts` and
`zchat user` in child processes, `zchat join` in a real pty (trust on first use, the
password prompt, /passwd), `zchat send` as a bot logs in. Every broker is a child
process on OS-chosen loopback ports; every known_hosts file is the test's own."""

from __future__ import annotations

import contextlib
import re
import shlex
import signal
import socket
import subprocess
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import pexpect
import pytest

from screen import PROMPT, Terminal
from support import Proc, child_env, run_zchat, start_broker, zchat_command
from zchat.admin import default_path

WAIT = 20.0  # seconds for anything a loaded machine may be slow at
KEY_LOGGED = r"the broker's public key is (\S{40}), fingerprint (SHA256:\S+) "
WRONG = "login refused: wrong name or password"
ALICE_PASSWORD = "correct horse"


# --- brokers -------------------------------------------------------------------------------


@dataclass(frozen=True)
class AccountsBroker:
    """`zchat broker --accounts` in a child process, listening."""

    proc: Proc
    port: int
    key: str  # its public key, Z85, as its log gives it
    fingerprint: str  # SHA256:..., as its log gives it
    db: Path
    admin: Path  # its admin socket

    @property
    def where(self) -> str:
        return f"127.0.0.1:{self.port}"

    def stop(self) -> list[str]:
        """Stop it (as its operator would); every line it logged."""
        self.proc.signal(signal.SIGTERM)
        assert self.proc.wait(WAIT) == 0
        self.proc.collect()
        return self.proc.lines["stderr"]


StartAccounts = Callable[..., AccountsBroker]


@pytest.fixture
def start_accounts(tmp_path: Path, procs: list[Proc]) -> StartAccounts:
    """start_accounts(*args, db="h.db", port=0) -> an accounts broker; its history and
    key pair in tmp_path (so a restart on the same db keeps its key)."""

    def start(*args: str, db: str = "h.db", port: int = 0) -> AccountsBroker:
        path = tmp_path / db
        admin = tmp_path / f"{path.stem}-admin.sock"
        argv = ("--accounts", "--admin-socket", str(admin), *args)
        proc, port = start_broker(*argv, port=port, db=str(path))
        procs.append(proc)
        logged = proc.expect(KEY_LOGGED, stream="stderr", timeout=WAIT)
        return AccountsBroker(proc, port, logged.group(1), logged.group(2), path, admin)

    return start


@pytest.fixture
def accounts(start_accounts: StartAccounts) -> AccountsBroker:
    """An accounts broker where alice has an account (password ALICE_PASSWORD)."""
    broker = start_accounts()
    made = user(broker, "add", "alice", ZCHAT_PASSWORD=ALICE_PASSWORD)
    assert (made.returncode, made.stdout) == (0, "account alice made\n"), made.stderr
    return broker


# --- commands ------------------------------------------------------------------------------


def run(*args: str, stdin: str = "", **env: str) -> subprocess.CompletedProcess[str]:
    return run_zchat(*args, stdin=stdin, timeout=60, **env)


def user(broker: AccountsBroker, *args: str, **env: str) -> subprocess.CompletedProcess[str]:
    """`zchat user ARGS --admin-socket broker's`."""
    return run("user", *args, "--admin-socket", str(broker.admin), **env)


def send(
    broker: AccountsBroker, name: str, *args: str, text: str = "hello", **env: str
) -> subprocess.CompletedProcess[str]:
    """`zchat send` as NAME, to ``broker`` by its port; ARGS say how it logs in."""
    argv = ("send", "--name", name, "--port", str(broker.port), "--timeout", str(WAIT), *args)
    return run(*argv, text, **env)


def password_file(folder: Path, password: str, mode: int = 0o600) -> Path:
    path = folder / f"password-{mode:o}"
    path.write_text(password + "\n")
    path.chmod(mode)
    return path


def one_line(result: subprocess.CompletedProcess[str]) -> str:
    """The one line a failed command says on stderr (and nothing on stdout)."""
    assert result.returncode == 1, result
    assert result.stdout == "", result
    lines = result.stderr.splitlines()
    assert len(lines) == 1, result.stderr
    return lines[0]


# --- terminals -----------------------------------------------------------------------------

Join = Callable[..., Terminal]


@pytest.fixture
def known_hosts(tmp_path: Path) -> Path:
    """This test's known_hosts file (not made yet)."""
    return tmp_path / "config" / "known_hosts"


@pytest.fixture
def join_in_pty(known_hosts: Path) -> Iterator[Join]:
    """join_in_pty(broker, name, *args, **env) -> `zchat join` in a pty, started (not
    waited for); stopped after the test. Its known_hosts is the test's."""
    started: list[Terminal] = []

    def start(broker: AccountsBroker, name: str, *args: str, **env: str) -> Terminal:
        env.setdefault("ZCHAT_KNOWN_HOSTS", str(known_hosts))
        term = Terminal(name, broker.port, "--connect-timeout", str(WAIT), *args, **env)
        started.append(term)
        return term

    yield start
    for term in started:
        term.stop()


def written(term: Terminal) -> str:
    """All the program wrote, as text (a long line is whole here, wrapped on screen)."""
    return term.raw.decode("utf-8", "replace").replace("\r\n", "\n")


def wait_written(term: Terminal, text: str, count: int = 1) -> None:
    """Until the program has written ``text`` ``count`` times."""
    term.wait_for(lambda t: written(t).count(text) >= count, f"{text!r} x{count}", WAIT)


def wait_shown(term: Terminal, pattern: str) -> None:
    term.wait_for(lambda t: t.row_of(pattern) is not None, repr(pattern), WAIT)


def type_password(term: Terminal, password: str, nth: int = 1) -> None:
    """Wait for the ``nth`` "Password: " prompt, then type ``password`` at it."""
    wait_written(term, "Password: ", nth)
    term.type(password + "\r")


def wait_prompts_or_end(term: Terminal, count: int) -> None:
    """Until ``count`` "Password: " prompts were written, or the program ended."""

    def done(t: Terminal) -> bool:
        return t.eof or written(t).count("Password: ") >= count

    term.wait_for(done, f"{count} password prompts or the end", WAIT)


def type_hidden(term: Terminal, prompt: str, password: str) -> None:
    """Wait for the chat's own hidden prompt (/passwd's), then type ``password`` at it."""
    term.wait_for(lambda t: t.cursor_line == prompt.rstrip(), repr(prompt), WAIT)
    term.type(password + "\r")


def wait_chatting(term: Terminal) -> None:
    """Logged in: the chat's prompt, empty, the cursor at its end."""
    term.wait_for(lambda t: t.cursor_line == PROMPT.rstrip(), "the chat's prompt", WAIT)
    term.wait_prompt()


def quit_chat(term: Terminal) -> None:
    term.type("/quit\r")
    assert term.wait_exit(WAIT) == 0, term.dump()


# --- the operator: zchat broker --accounts and zchat user ------------------------------------


def test_the_operator_adds_lists_and_deletes_accounts(
    start_accounts: StartAccounts, tmp_path: Path
) -> None:
    broker = start_accounts()
    made = user(
        broker, "add", "alice", "--password-file", str(password_file(tmp_path, "s3cret-pw"))
    )
    assert (made.returncode, made.stdout, made.stderr) == (0, "account alice made\n", "")
    generated = user(broker, "add", "bob", "--admin", "--generate")
    assert generated.returncode == 0, generated.stderr
    made_line, password_line = generated.stdout.splitlines()
    assert made_line == "account bob made (admin)"
    password = re.fullmatch(r"password: (\S{8,})", password_line)
    assert password, generated.stdout

    # the printed password logs bob in, with the key the broker logged
    said = send(broker, "bob", "--server-key", broker.key, ZCHAT_PASSWORD=password.group(1))
    assert (said.returncode, said.stderr) == (0, "")
    listed = user(broker, "list")
    assert listed.returncode == 0, listed.stderr
    assert listed.stdout.splitlines()[0] == "alice  never logged in"
    assert re.fullmatch(
        r"bob \(admin\)  last login \d{4}-\d\d-\d\dT\d\d:\d\d:\d\d(\.\d+)?Z",
        listed.stdout.splitlines()[1],
    ), listed.stdout
    assert len(listed.stdout.splitlines()) == 2

    taken = user(broker, "add", "Alice", "--generate")
    assert one_line(taken) == "zchat: Alice has an account already"  # names differ in case only
    deleted = user(broker, "del", "alice")
    assert (deleted.returncode, deleted.stdout) == (0, "account alice deleted\n")
    assert one_line(user(broker, "del", "alice")) == "zchat: alice has no account"
    assert [line.split()[0] for line in user(broker, "list").stdout.splitlines()] == ["bob"]
    # and her password logs no one in
    gone = send(broker, "alice", "--server-key", broker.key, ZCHAT_PASSWORD="s3cret-pw")
    assert one_line(gone) == f"zchat: {WRONG}"


def test_a_password_file_others_can_read_is_refused(
    accounts: AccountsBroker, tmp_path: Path
) -> None:
    readable = password_file(tmp_path, "s3cret-pw", mode=0o644)
    refused = user(accounts, "add", "carol", "--password-file", str(readable))
    assert one_line(refused) == (
        f"zchat: {readable} can be read by other users (mode 644): run chmod 600 {readable}"
    )
    assert "carol" not in user(accounts, "list").stdout


@pytest.mark.parametrize(
    ("password", "reason"),
    [
        ("short", "the password is 5 characters long: it needs at least 8"),
        ("Caroline", "the password is the name: it would be the first one guessed"),
        (" padded password", "the password starts or ends with a space: it would be lost easily"),
    ],
)
def test_a_weak_password_is_refused_with_the_reason(
    accounts: AccountsBroker, password: str, reason: str
) -> None:
    refused = user(accounts, "add", "caroline", ZCHAT_PASSWORD=password)
    assert one_line(refused) == f"zchat: {reason}"
    assert "caroline" not in user(accounts, "list").stdout


def test_a_password_is_asked_twice_in_a_terminal_never_shown(accounts: AccountsBroker) -> None:
    argv = zchat_command("user", "add", "carol", "--admin-socket", str(accounts.admin))
    child = pexpect.spawn(argv[0], argv[1:], env=child_env(), timeout=WAIT)
    try:
        child.expect_exact("New password for carol: ")
        child.sendline("carol's secret")
        child.expect_exact(": ")  # asked again, to confirm
        child.sendline("carol's secret")
        child.expect_exact("account carol made")
        child.expect(pexpect.EOF)
        assert b"carol's secret" not in child.before
    finally:
        child.close(force=True)
    assert child.exitstatus == 0
    said = send(accounts, "carol", "--server-key", accounts.key, ZCHAT_PASSWORD="carol's secret")
    assert (said.returncode, said.stderr) == (0, "")


def test_no_password_and_no_terminal_is_one_line(accounts: AccountsBroker) -> None:
    refused = user(accounts, "add", "carol")
    assert one_line(refused) == (
        "zchat: no password: give --password-file FILE, set ZCHAT_PASSWORD, or --generate one"
    )


def test_user_takes_port_and_admin_socket_before_or_after_the_subcommand(
    procs: list[Proc],
) -> None:
    broker, port = start_broker("--accounts")  # the admin socket named after the port
    procs.append(broker)
    made = run("user", "--port", str(port), "add", "alice", "--generate")
    assert made.stdout.startswith("account alice made\n"), made.stderr
    socket_file = str(default_path(port))
    for argv in (
        ("--port", str(port), "list"),
        ("list", "--port", str(port)),
        ("--admin-socket", socket_file, "list"),
        ("list", "--admin-socket", socket_file),
    ):
        listed = run("user", *argv)
        assert (listed.returncode, listed.stdout) == (0, "alice  never logged in\n")


def test_user_on_a_broker_without_accounts_is_one_clear_error(
    procs: list[Proc], tmp_path: Path
) -> None:
    admin = tmp_path / "open.sock"
    broker, _ = start_broker("--admin-socket", str(admin))
    procs.append(broker)
    for args in (("add", "alice", "--generate"), ("list",)):
        refused = run("user", *args, "--admin-socket", str(admin))
        assert one_line(refused) == "zchat: accounts are for a broker started with --accounts"


def test_the_printed_invite_works_as_it_is(accounts: AccountsBroker) -> None:
    printed = run(
        "broker", "--accounts", "--print-invite", "--port", str(accounts.port),
        "--db", str(accounts.db),
    )  # fmt: skip
    assert printed.returncode == 0, printed.stderr
    assert printed.stderr == f"(the broker's key fingerprint: {accounts.fingerprint})\n"
    [line] = printed.stdout.splitlines()
    argv = shlex.split(line)  # as a shell reads it: the key has shell characters
    assert argv[:2] == ["zchat", "join"]
    assert argv[2:] == ["--server", f"tcp://{accounts.where}", "--server-key", accounts.key]

    said = run("send", "--name", "alice", *argv[2:], "from a bot", ZCHAT_PASSWORD=ALICE_PASSWORD)
    assert (said.returncode, said.stderr) == (0, "")
    joined = run(
        *argv[1:], "--name", "alice", "--time-format", "none",
        stdin="from the invite\n", ZCHAT_PASSWORD=ALICE_PASSWORD,
    )  # fmt: skip
    assert joined.returncode == 0, joined.stderr
    assert "alice: from the invite" in joined.stdout.splitlines()


def test_an_invite_for_port_0_is_refused(tmp_path: Path) -> None:
    printed = run(
        "broker", "--accounts", "--print-invite", "--port", "0", "--db", str(tmp_path / "h.db")
    )
    assert printed.returncode != 0
    assert ":0 " not in printed.stdout


# --- trusting the broker's key ----------------------------------------------------------------


def test_first_use_in_a_terminal_shows_the_fingerprint_and_remembers_the_key(
    accounts: AccountsBroker, join_in_pty: Join, known_hosts: Path
) -> None:
    first = join_in_pty(accounts, "alice")
    wait_written(first, "Trust this key and connect? [y/N]: ")
    told = written(first)
    assert f"The broker at {accounts.where} is not known on this computer yet.\n" in told
    assert f"Its key's fingerprint is {accounts.fingerprint}\n" in told  # as the log says
    assert "Password" not in told  # nothing asked before the key is trusted
    first.type("y\r")
    type_password(first, ALICE_PASSWORD)
    wait_chatting(first)
    assert f"remembered in {known_hosts}\n" in written(first)
    assert f"{accounts.where} {accounts.key}" in known_hosts.read_text().splitlines()
    quit_chat(first)

    again = join_in_pty(accounts, "alice")
    type_password(again, ALICE_PASSWORD)
    wait_chatting(again)
    assert "Trust this key" not in written(again)


def test_a_key_not_trusted_is_not_remembered(
    accounts: AccountsBroker, join_in_pty: Join, known_hosts: Path
) -> None:
    term = join_in_pty(accounts, "alice")
    wait_written(term, "Trust this key and connect? [y/N]: ")
    term.type("\r")  # the default: no
    assert term.wait_exit(WAIT) == 1
    assert (
        f"zchat: not connected: the key of the broker at {accounts.where} is not trusted"
        in written(term)
    )
    assert "Password" not in written(term)
    assert not known_hosts.exists()


def test_a_changed_broker_key_is_refused_loudly_before_any_password(
    start_accounts: StartAccounts, join_in_pty: Join, known_hosts: Path
) -> None:
    first = start_accounts(db="a.db")
    user(first, "add", "alice", ZCHAT_PASSWORD=ALICE_PASSWORD)
    trusting = join_in_pty(first, "alice")
    wait_written(trusting, "Trust this key and connect? [y/N]: ")
    trusting.type("y\r")
    type_password(trusting, ALICE_PASSWORD)
    wait_chatting(trusting)
    quit_chat(trusting)
    first.stop()

    # another broker on the same port, with another history: another key pair
    second = start_accounts(db="b.db", port=first.port)
    user(second, "add", "alice", ZCHAT_PASSWORD=ALICE_PASSWORD)
    assert second.key != first.key
    term = join_in_pty(second, "alice")
    wait_prompts_or_end(term, 1)
    told = written(term)
    assert "Password" not in told
    assert term.wait_exit(WAIT) == 1, term.dump()
    assert (
        f"zchat: the broker at {second.where} now has a different key ({second.fingerprint}) "
        f"than the one you trusted ({first.fingerprint}, {known_hosts} line 2)."
    ) in told
    assert f"delete line 2 of {known_hosts}\n" in told
    assert f"{first.where} {first.key}" in known_hosts.read_text()  # kept as it was
    assert "alice joined" not in "\n".join(second.stop())


@pytest.mark.parametrize("command", ["send", "join"])
def test_first_use_without_a_terminal_needs_the_key_given(
    accounts: AccountsBroker, known_hosts: Path, command: str
) -> None:
    args: tuple[str, ...] = (command, "--name", "alice", "--port", str(accounts.port))
    if command == "send":
        args += ("hello",)
    env = {"ZCHAT_PASSWORD": ALICE_PASSWORD, "ZCHAT_KNOWN_HOSTS": str(known_hosts)}
    refused = run(*args, stdin="hello\n", **env)
    assert one_line(refused) == (
        f"zchat: the broker at {accounts.where} is not known here yet (its key's fingerprint "
        f"is {accounts.fingerprint}): give --server-key KEY, as its operator's `zchat broker "
        "--print-invite` line does, or join once from a terminal to trust it"
    )
    given = run(*args, "--server-key", accounts.key, stdin="hello\n", **env)
    assert given.returncode == 0, given.stderr
    assert not known_hosts.exists()  # a key given is not a key trusted for later


def test_a_bot_is_told_what_it_must_give_to_log_in(
    accounts: AccountsBroker, known_hosts: Path
) -> None:
    env = {"ZCHAT_KNOWN_HOSTS": str(known_hosts)}
    bare = send(accounts, "alice", **env)  # as for an open broker: no key, no password
    assert one_line(bare) == (
        f"zchat: the broker at {accounts.where} is not known here yet (its key's fingerprint "
        f"is {accounts.fingerprint}): give --server-key KEY, as its operator's `zchat broker "
        "--print-invite` line does, or join once from a terminal to trust it"
    )
    keyed = send(accounts, "alice", "--server-key", accounts.key, **env)
    assert one_line(keyed) == (
        "zchat: no password: set ZCHAT_PASSWORD or give --password-file FILE (a script "
        "cannot be asked for one)"
    )
    both = send(accounts, "alice", "--server-key", accounts.key, ZCHAT_PASSWORD=ALICE_PASSWORD)
    assert (both.returncode, both.stderr) == (0, "")


# --- passwords -----------------------------------------------------------------------------


def restart(
    broker: AccountsBroker, start_accounts: StartAccounts
) -> tuple[list[str], AccountsBroker]:
    """The broker stopped and started again on its port and history (its key kept, its
    throttle on failed logins forgotten): what it logged, and the new one."""
    logged = broker.stop()
    again = start_accounts(db=broker.db.name, port=broker.port)
    assert again.key == broker.key
    return logged, again


def test_three_wrong_passwords_end_the_join_and_are_never_logged(
    accounts: AccountsBroker, start_accounts: StartAccounts, join_in_pty: Join
) -> None:
    """After a refused password the broker refuses the next one for a second or more,
    whatever it is: it is restarted between tries, so each one is checked."""
    wrong = ["not-her-password-1", "not-her-password-2", "not-her-password-3"]
    term = join_in_pty(accounts, "alice", "--server-key", accounts.key)
    logs: list[str] = []
    broker = accounts
    for n, password in enumerate(wrong, 1):
        type_password(term, password, nth=n)
        if n < len(wrong):
            wait_written(term, f"zchat: {WRONG}\n", n)
            wait_written(term, "Password: ", n + 1)
            logged, broker = restart(broker, start_accounts)
            logs += logged
    assert term.wait_exit(WAIT) == 1, term.dump()
    told = written(term)
    assert told.count(f"zchat: {WRONG}\n") == 3
    assert told.count("Password: ") == 3
    assert not any(password in told for password in wrong)  # no echo
    logs += broker.stop()
    assert sum("WARNING failed login for alice from 127.0.0.1" in line for line in logs) == 3
    assert not any(password in line for line in logs for password in wrong), logs

    # her next login tells her
    broker = start_accounts(db=accounts.db.name, port=accounts.port)
    back = join_in_pty(broker, "alice", "--server-key", broker.key, ZCHAT_PASSWORD=ALICE_PASSWORD)
    wait_shown(back, r"3 failed logins since your account was made$")
    wait_chatting(back)


def test_the_same_wrong_password_three_times_ends_the_join(
    accounts: AccountsBroker, start_accounts: StartAccounts, join_in_pty: Join
) -> None:
    term = join_in_pty(accounts, "alice", "--server-key", accounts.key)
    broker = accounts
    for n in range(1, 4):
        type_password(term, "the same typo", nth=n)
        wait_written(term, f"zchat: {WRONG}\n", n)
        broker = restart(broker, start_accounts)[1]  # so that each try is checked
    wait_prompts_or_end(term, 4)
    assert written(term).count("Password: ") == 3, term.dump()
    assert term.wait_exit(WAIT) == 1


def test_a_throttled_try_is_one_of_the_three(accounts: AccountsBroker, join_in_pty: Join) -> None:
    term = join_in_pty(accounts, "alice", "--server-key", accounts.key)
    for n in range(1, 4):  # each typed at once: the 2nd within the 1 s the broker waits
        wait_prompts_or_end(term, n)
        if term.eof:
            break
        term.type(f"not-her-password-{n}\r")
    assert term.wait_exit(WAIT) == 1
    assert written(term).count("Password: ") == 3, term.dump()


def test_change_own_password_with_passwd(accounts: AccountsBroker, join_in_pty: Join) -> None:
    term = join_in_pty(accounts, "alice", "--server-key", accounts.key)
    type_password(term, ALICE_PASSWORD)
    wait_chatting(term)
    term.type("/passwd\r")
    type_hidden(term, "Old password: ", ALICE_PASSWORD)
    type_hidden(term, "New password: ", "a brand new one")
    type_hidden(term, "New password again: ", "a brand new one")
    wait_shown(term, r"password changed$")
    wait_chatting(term)
    assert "brand new" not in written(term)
    quit_chat(term)

    key = ("--server-key", accounts.key)
    new = send(accounts, "alice", *key, ZCHAT_PASSWORD="a brand new one")
    assert (new.returncode, new.stderr) == (0, "")
    old = send(accounts, "alice", *key, ZCHAT_PASSWORD=ALICE_PASSWORD)
    assert one_line(old) == f"zchat: {WRONG}"


def test_the_operator_changing_a_password_ends_her_session(
    accounts: AccountsBroker, join_in_pty: Join
) -> None:
    term = join_in_pty(accounts, "alice", "--server-key", accounts.key)
    type_password(term, ALICE_PASSWORD)
    wait_chatting(term)
    changed = user(accounts, "passwd", "alice", ZCHAT_PASSWORD="the operator's pick")
    assert (changed.returncode, changed.stderr) == (0, "")
    assert changed.stdout == "password of alice changed; 1 session(s) ended\n"
    wait_written(term, "password changed by the operator")
    assert term.wait_exit(WAIT) == 1, term.dump()


def test_nick_is_refused_on_an_accounts_broker(accounts: AccountsBroker, join_in_pty: Join) -> None:
    term = join_in_pty(accounts, "alice", "--server-key", accounts.key)
    type_password(term, ALICE_PASSWORD)
    wait_chatting(term)
    term.type("/nick alicia\r")
    wait_shown(term, re.escape("error: on this broker your name is your account's (or your key's)"))


# --- making one's own account ---------------------------------------------------------------


def test_people_register_where_the_broker_allows_it(start_accounts: StartAccounts) -> None:
    broker = start_accounts("--allow-register")
    made = send(
        broker, "newbie", "--register", "--server-key", broker.key, ZCHAT_PASSWORD="newbie's own"
    )
    assert (made.returncode, made.stderr) == (0, "")
    listed = user(broker, "list")
    assert re.search(r"^newbie  last login \S+Z$", listed.stdout, re.M), listed.stdout
    again = send(broker, "newbie", "--server-key", broker.key, ZCHAT_PASSWORD="newbie's own")
    assert (again.returncode, again.stderr) == (0, "")


def test_registering_is_refused_unless_the_broker_allows_it(accounts: AccountsBroker) -> None:
    refused = send(
        accounts, "newbie", "--register", "--server-key", accounts.key,
        ZCHAT_PASSWORD="newbie's own",
    )  # fmt: skip
    assert one_line(refused) == (
        "zchat: this broker does not let people make their own accounts: ask its operator"
    )
    assert "newbie" not in user(accounts, "list").stdout


# --- a password meets an open broker -------------------------------------------------------


@pytest.mark.parametrize("command", ["join", "send"])
def test_a_password_for_an_open_broker_is_never_sent(procs: list[Proc], command: str) -> None:
    broker, port = start_broker()
    procs.append(broker)
    args = [command, "--name", "alice", "--port", str(port), *(["hi"] if command == "send" else [])]
    with socket.socket() as key_port:  # bound, never listening: refused, as an open broker's
        # another socket may have the port (an outgoing one's): none listens there either
        with contextlib.suppress(OSError):
            key_port.bind(("127.0.0.1", port + 3))
        refused = run(*args, stdin="hi\n", ZCHAT_PASSWORD=ALICE_PASSWORD)
    assert one_line(refused) == (
        f"zchat: the broker at 127.0.0.1:{port} has no accounts (nothing listens on port "
        f"{port + 3}, where an accounts broker tells its key): an open broker takes no "
        "password, and none was sent; join without one"
    )
    # a join after it is logged after anything it did
    joined = run("join", "--name", "bob", "--port", str(port), stdin="")
    assert joined.returncode == 0, joined.stderr
    broker.expect(r"INFO bob joined from", stream="stderr", timeout=WAIT)
    assert not any("alice" in line for line in broker.lines["stderr"]), broker.lines


def test_listen_is_told_an_accounts_broker_shows_rooms_to_logins_only(
    accounts: AccountsBroker,
) -> None:
    heard = run("listen", "--port", str(accounts.port), "--connect-timeout", "10")
    assert heard.returncode == 1
    assert heard.stderr.splitlines()[-1] == (
        f"zchat: the broker at 127.0.0.1:{accounts.port} has accounts: it shows its rooms to "
        "people logged in only, so there is nothing to listen to without a login; join "
        "instead (zchat join --name NAME), or a bot: zchat send, or the Python Client with "
        "a password"
    )
