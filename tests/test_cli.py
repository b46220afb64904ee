"""The `zchat` command as a person or a script runs it: real child processes."""

from __future__ import annotations

import os
import re
import signal
import subprocess
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path

import click
import pytest
import zmq

from conftest import RunningBroker
from support import (
    Proc,
    expect_message,
    listening_ports,
    read_only,
    start_broker,
    zchat_command,
)
from support import run_zchat as run
from zchat import Client
from zchat.broker.store import HistoryStore
from zchat.cli import main
from zchat.client.terminal import COMMANDS, MARKUP

MakeClient = Callable[..., Client]
TIME_LINE = r"^\[\d\d:\d\d:\d\d\] "
FULL_LINE = r"^\[\d{4}-\d\d-\d\d \d\d:\d\d:\d\d\] "


def join(port: int, name: str, *args: str) -> Proc:
    return Proc(zchat_command("join", "--name", name, "--port", str(port), *args))


def test_two_people_chat_through_the_real_commands(
    broker_proc: tuple[Proc, int], procs: list[Proc]
) -> None:
    broker, port = broker_proc
    alice = join(port, "Alice")
    procs.append(alice)
    alice.expect(TIME_LINE + r"Alice joined$")
    bob = join(port, "Bob")
    procs.append(bob)
    bob.expect(TIME_LINE + r"\*\*\* in #general: Alice$")
    alice.expect(TIME_LINE + r"Bob joined$")
    alice.send_line("Halo semua!")
    line = bob.expect(TIME_LINE + r"Alice: Halo semua!$").string
    stamp = datetime.strptime(line[1:9], "%H:%M:%S").time()  # TZ=UTC in the children
    now = datetime.now(UTC)
    seconds = lambda t: t.hour * 3600 + t.minute * 60 + t.second  # noqa: E731
    assert (seconds(now) - seconds(stamp)) % 86400 < 60
    bob.send_line("Hai Alice!")
    alice.expect(TIME_LINE + r"Bob: Hai Alice!$")
    broker.expect(r"INFO Alice joined from 127\.0\.0\.1$", stream="stderr")
    broker.expect(r"INFO Bob joined from 127\.0\.0\.1$", stream="stderr")

    bob.close_stdin()  # end of input: leave cleanly
    assert bob.wait() == 0
    alice.expect(TIME_LINE + r"Bob left \(quit\)$")
    broker.expect(r"INFO Bob left \(quit\)$", stream="stderr")
    bob.collect()
    assert not any("\x1b" in line for line in bob.lines["stdout"])


@pytest.mark.parametrize(
    ("fmt", "pattern"),
    [
        ("full", FULL_LINE + "Alice: hi$"),
        ("none", "^Alice: hi$"),
        ("time", TIME_LINE + "Alice: hi$"),
    ],
)
def test_time_formats(broker: RunningBroker, fmt: str, pattern: str) -> None:
    result = run(
        "join", "--name", "Alice", "--port", str(broker.port), "--time-format", fmt, stdin="hi\n"
    )
    assert result.returncode == 0, result.stderr
    lines = result.stdout.splitlines()
    assert any(re.fullmatch(pattern, line) for line in lines), lines


def test_full_format_is_the_local_date_and_time(broker: RunningBroker) -> None:
    result = run(
        "join", "--name", "Alice", "--port", str(broker.port), "--time-format", "full",
        stdin="hi\n", TZ="Asia/Jakarta",
    )  # fmt: skip
    [line] = [line for line in result.stdout.splitlines() if line.endswith("Alice: hi")]
    stamp = datetime.strptime(line[1:20], "%Y-%m-%d %H:%M:%S")
    utc = datetime.now(UTC).replace(tzinfo=None)
    assert abs((stamp - utc).total_seconds() - 7 * 3600) < 60  # WIB is UTC+7


def test_taken_name_exits_1_with_one_clear_line(
    broker: RunningBroker, make_client: MakeClient
) -> None:
    make_client("Alice")
    result = run("join", "--name", "alice", "--port", str(broker.port), stdin="hello\n")
    assert result.returncode == 1
    assert result.stderr == "zchat: name 'alice' is taken\n"
    assert result.stdout == ""


@pytest.mark.parametrize(
    ("name", "message"),
    [
        (
            "bad name",
            "zchat: name 'bad name' is not allowed: "
            "use only ASCII letters, digits, '_', '-' and '.'",
        ),
        ("x" * 33, "zchat: name is 33 characters long, the limit is 32"),
    ],
)
def test_invalid_name_exits_1(name: str, message: str) -> None:
    result = run("join", "--name", name, "--port", "5999")
    assert (result.returncode, result.stderr.strip()) == (1, message)


def test_missing_name_without_a_terminal_says_what_to_do() -> None:
    result = run("join", "--port", "5999")
    assert result.returncode == 1
    assert result.stderr.strip() == "zchat: no name given: use --name NAME or set ZCHAT_NAME"


def test_environment_variables_configure_join(broker: RunningBroker) -> None:
    result = run("join", stdin="from env\n", ZCHAT_NAME="Envy", ZCHAT_PORT=str(broker.port))
    assert result.returncode == 0, result.stderr
    assert re.search(TIME_LINE + "Envy: from env$", result.stdout, re.M)


# 4 s: longer than a JOIN retry (1 s) and the heartbeat's silence (3.5 s), which once
# left the client spinning on a deadline in the past, never to report anything
@pytest.mark.parametrize("timeout", ["0.5", "4"])
def test_broker_not_running_is_reported(silent_port: int, timeout: str) -> None:
    port = str(silent_port)
    result = run("join", "--name", "Alice", "--port", port, "--connect-timeout", timeout)
    assert result.returncode == 1
    assert result.stderr == (
        f"zchat: no answer from the broker at 127.0.0.1:{port} within {timeout} s: "
        "is `zchat broker` running there?\n"
    )


def test_port_in_use_exits_2_without_traceback(broker_proc: tuple[Proc, int]) -> None:
    _, port = broker_proc
    result = run("broker", "--port", str(port))
    assert result.returncode == 2
    lines = result.stderr.strip().splitlines()
    assert lines == [
        f"zchat: port {port} on 127.0.0.1 is already in use (another zchat broker?): stop it, "
        "or pick free ports with --port N (it uses N to N+2)"
    ]


def test_broker_logs_both_endpoints_and_uses_env_port(procs: list[Proc]) -> None:
    first, port = start_broker()
    procs.append(first)
    first.signal(signal.SIGINT)
    assert first.wait() == 0
    second = Proc(zchat_command("broker"), stdin=subprocess.DEVNULL, ZCHAT_PORT=str(port))
    procs.append(second)
    second.expect(
        rf"listening: in tcp://127\.0\.0\.1:{port} .*out tcp://127\.0\.0\.1:{port + 1} ",
        stream="stderr",
    )


@pytest.mark.parametrize("sig", [signal.SIGINT, signal.SIGTERM])
def test_broker_stops_cleanly_and_says_so(broker_proc: tuple[Proc, int], sig: int) -> None:
    broker, port = broker_proc
    with Client("Alice", port=port) as alice:
        broker.signal(sig)
        notice = expect_message(alice, lambda m: m.kind == "system" and "shut down" in m.text)
        assert notice.text.startswith("broker shut down (stopped by its operator)")
    assert broker.wait() == 0
    broker.collect()
    assert "Traceback" not in "\n".join(broker.lines["stderr"])
    assert broker.lines["stderr"][-1].endswith("INFO broker stopped")


def test_quit_command_with_reason(broker: RunningBroker, make_client: MakeClient) -> None:
    bob = make_client("Bob")
    result = run(
        "join", "--name", "Alice", "--port", str(broker.port), stdin="/quit see you\nnot sent\n"
    )
    assert result.returncode == 0, result.stderr
    left = expect_message(bob, lambda m: m.kind == "leave" and m.sender == "Alice")
    assert left.text == "quit: see you"
    assert "not sent" not in result.stdout


def test_unknown_command_and_help(broker: RunningBroker) -> None:
    result = run("join", "--name", "Alice", "--port", str(broker.port), stdin="/help\n/foo bar\n")
    assert "  /quit [reason]        leave the chat (Ctrl-D or Ctrl-C also leave)" in result.stdout
    assert "*** unknown command /foo, try /help" in result.stdout
    lines = result.stdout.splitlines()
    table = lines[lines.index("commands:") + 1 : lines.index(HELP_END)]
    assert len(table) == len(COMMANDS)
    # two columns: each usage, at least two spaces, then its description, in one column
    rows = [re.fullmatch(r"  (/\S.*?\S)  +(\S.*)", line) for line in table]
    assert all(rows), table
    assert (
        len({line.index(row.group(2)) for line, row in zip(table, rows, strict=True) if row}) == 1
    ), table
    # then the markup, one example each, in the same columns
    markup = lines[lines.index(HELP_END) + 1 : lines.index(HELP_END) + 8]
    column = table[0].index(rows[0].group(2)) if rows[0] else 0
    assert markup == [f"  {typed:<{column - 2}}{what}" for typed, what in MARKUP], markup


HELP_END = "anything else is sent to the current room, formatted:"


def test_too_long_line_is_refused_with_the_limit(broker: RunningBroker) -> None:
    result = run("join", "--name", "Alice", "--port", str(broker.port), stdin="x" * 5000 + "\nok\n")
    assert "*** not sent: message is 5000 bytes long, the limit is 4096" in result.stdout
    assert re.search(TIME_LINE + "Alice: ok$", result.stdout, re.M)


def test_every_command_and_option_has_help_text() -> None:
    group = main
    assert group.help
    assert isinstance(group, click.Group)
    for name, command in group.commands.items():
        assert command.help, f"zchat {name} has no help"
        for param in command.params:
            if isinstance(param, click.Option):
                assert param.help, f"zchat {name} {param.opts} has no help"


def test_module_entry_point_and_version() -> None:
    result = run("--version")
    assert result.returncode == 0
    assert re.fullmatch(r"zchat \d+\.\d+\.\d+\n", result.stdout)


def test_log_level_warning_keeps_the_broker_quiet(procs: list[Proc], tmp_path: Path) -> None:
    admin = tmp_path / "admin.sock"
    argv = ("broker", "--port", "0", "--db", ":memory:", "--log-level", "WARNING")
    quiet = Proc(zchat_command(*argv, "--admin-socket", str(admin)), stdin=subprocess.DEVNULL)
    procs.append(quiet)
    # it says nothing once listening, but its admin socket answers then (libzmq connects
    # as soon as the file exists), and its ports are its own: no port freed for it to
    # take, which another program might take first
    with zmq.Context() as ctx, ctx.socket(zmq.REQ) as req:
        req.setsockopt(zmq.LINGER, 0)
        req.connect(f"ipc://{admin}")
        req.send(b'{"op": "stats"}')
        assert req.poll(30_000), "the broker never answered on its admin socket"
        req.recv()
    port = listening_ports(quiet.popen.pid)[0]
    with Client("Alice", port=port) as alice:
        alice.send("hi")
        expect_message(alice, lambda m: m.kind == "message")
    quiet.signal(signal.SIGTERM)
    assert quiet.wait() == 0
    quiet.collect()
    assert quiet.lines["stderr"] == []


def test_room_commands_through_the_real_command(
    broker: RunningBroker, make_client: MakeClient
) -> None:
    bob = make_client("Bob", rooms=["general", "dev"])
    script = "\n".join(
        [
            "/join #dev",
            "/who",
            "hello dev",
            "/me waves",
            "/msg bob psst",
            "/topic standup at 10",
            "/topic",
            "/rooms",
            "/nick Alicia",
            "/history 2",
            "/part #dev see you",
            "/msg",
            "/history many",
            "/history #dev 1",
        ]
    )
    # each line waits for nothing: the replies come back in order on the inbox
    result = run("join", "--name", "Alice", "--port", str(broker.port), stdin=script + "\n")
    assert result.returncode == 0, result.stderr
    out = result.stdout
    expected = [
        # lines of rooms other than the first (--room) carry the room's name
        r"\*\*\* in #dev: Bob",
        r"#dev Alice joined",
        r"\*\*\* in #dev: Alice, Bob",
        r"#dev Alice: hello dev",
        r"#dev \* Alice waves",
        r"\[private\] Alice → Bob: psst",
        r"#dev Alice set the topic: standup at 10",
        r"\*\*\* topic of #dev: standup at 10",
        r"\*\*\* #dev \(2\): standup at 10",
        r"\*\*\* #general \(2\)",
        r"Alice is now known as Alicia",
        r"\*\*\* you are now known as Alicia",
        r"\*\*\* last 2 lines of #dev:",
        r"#dev Alice set the topic: standup at 10",
        r"#dev Alice is now known as Alicia",
        r"#dev Alicia left \(part: see you\)",
        r"\*\*\* you left #dev",
        r"\*\*\* usage: /msg NAME text",
        r"\*\*\* usage: /history \[#room\] \[N\], N from 1 to 1000",
        r"\*\*\* last 1 line of #dev:",  # another room's, even one not entered
        r"#dev Alicia left \(part: see you\)",
    ]
    lines = out.splitlines()
    assert all(re.fullmatch(r"\[\d\d:\d\d:\d\d\] .*", line) for line in lines), out
    # every expected line, in this order (the broker answers in the order asked)
    position = 0
    for pattern in expected:
        found = [i for i, line in enumerate(lines) if i >= position and re.search(pattern, line)]
        assert found, f"{pattern!r} not found after line {position} in:\n{out}"
        position = found[0] + 1
    assert expect_message(bob, lambda m: m.kind == "private").text == "psst"


def test_a_refused_command_reads_the_same_whoever_refuses_it(
    broker: RunningBroker, make_client: MakeClient
) -> None:
    make_client("Bob")
    script = "/nick Bob\n/nick bad name!\n/who #a!b\nx" + "x" * 5000 + "\n"
    result = run("join", "--name", "Alice", "--port", str(broker.port), stdin=script)
    shown = [re.sub(TIME_LINE, "", line) for line in result.stdout.splitlines()]
    for note in [
        "*** error: name 'bob' is taken",  # the broker's refusal
        "*** error: name 'bad name!' is not allowed: "  # this client's own
        "use only ASCII letters, digits, '_', '-' and '.'",
        "*** error: room name '#a!b' is not allowed: use only ASCII letters, digits, '_', "
        "'-' and '.'",
        "*** not sent: message is 5001 bytes long, the limit is 4096",  # a line, not a command
    ]:
        assert note in shown, result.stdout


def test_a_damaged_history_file_stops_the_broker_and_is_kept(tmp_path: Path) -> None:
    db = tmp_path / "history.db"
    db.write_bytes(b"this is not a database" * 100)
    result = run("broker", "--port", "0", "--db", str(db))
    assert result.returncode == 2
    [line] = result.stderr.strip().splitlines()
    assert line.startswith(f"zchat: history database {db} cannot be used (")
    assert "nothing was changed" in line
    assert db.read_bytes() == b"this is not a database" * 100


def test_a_second_broker_on_a_history_file_in_use_is_refused(
    tmp_path: Path, procs: list[Proc]
) -> None:
    db = tmp_path / "history.db"
    first, port = start_broker(db=str(db))
    procs.append(first)
    second = run("broker", "--port", "0", "--db", str(db))
    assert second.returncode == 2
    [line] = second.stderr.splitlines()
    assert line.startswith(
        f"zchat: history database {db} is in use by another broker "
        f"(pid {first.popen.pid}, port {port}): "
    )
    first.signal(signal.SIGTERM)
    assert first.wait() == 0
    again, _ = start_broker(db=str(db))  # free again once its broker stopped
    procs.append(again)


def test_each_port_has_its_own_default_history_file(procs: list[Proc]) -> None:
    """The README's advice for a port in use: another broker on another --port, with
    no --db, runs beside the first instead of sharing its file."""
    data = Path(os.environ["XDG_DATA_HOME"]) / "zchat"
    first = Proc(zchat_command("broker", "--port", "0"), stdin=subprocess.DEVNULL)
    procs.append(first)
    found = first.expect(r"listening: in tcp://[^ ]+:(\d+) .*history in ([^;,]+)[;,]", "stderr")
    port, db = int(found.group(1)), found.group(2)
    assert db == str(data / "history-0.db")
    first.signal(signal.SIGTERM)
    assert first.wait() == 0
    moved = Proc(zchat_command("broker", "--port", str(port)), stdin=subprocess.DEVNULL)
    procs.append(moved)
    moved.expect(rf"history in {re.escape(str(data / f'history-{port}.db'))}[;,]", "stderr")
    beside = Proc(zchat_command("broker", "--port", "0"), stdin=subprocess.DEVNULL)
    procs.append(beside)
    beside.expect(rf"history in {re.escape(str(data / 'history-0.db'))}[;,]", "stderr")
    assert moved.popen.poll() is None


def test_a_history_that_cannot_be_written_stops_the_broker(tmp_path: Path) -> None:
    db = tmp_path / "history.db"
    HistoryStore(db).close()
    with read_only(db):
        result = run("broker", "--port", "0", "--db", str(db))
    assert result.returncode == 2
    [line] = result.stderr.splitlines()
    assert line.startswith(f"zchat: history database {db} cannot be written (")
    assert "check the permissions of the file and of its folder" in line


def test_a_history_folder_that_does_not_exist_is_not_made(tmp_path: Path) -> None:
    db = tmp_path / "nonexistent" / "dir" / "x.db"
    result = run("broker", "--port", "0", "--db", str(db))
    assert result.returncode == 2
    assert result.stderr == (
        f"zchat: history database {db} cannot be made: {db.parent} does not exist. Make "
        f"the folder first (mkdir -p {db.parent}), or pass --db with another path\n"
    )
    assert not (tmp_path / "nonexistent").exists()


def test_an_unusable_history_path_stops_the_broker(tmp_path: Path) -> None:
    blocker = tmp_path / "file"
    blocker.write_text("x")
    result = run("broker", "--port", "0", "--db", str(blocker / "history.db"))
    assert result.returncode == 2
    assert result.stderr.startswith(f"zchat: history database {blocker / 'history.db'} cannot be")
    assert "Traceback" not in result.stderr


def test_admin_takes_its_options_after_the_subcommand_too(procs: list[Proc]) -> None:
    broker, port = start_broker()  # the admin socket is named after the port
    procs.append(broker)
    for argv in (("--port", str(port), "who"), ("who", "--port", str(port))):
        result = run("admin", *argv)
        assert (result.returncode, result.stdout, result.stderr) == (0, "nobody is here\n", "")
    wrong = run("admin", "--port", "1", "who", "--port", str(port))  # the later one wins
    assert (wrong.returncode, wrong.stdout) == (0, "nobody is here\n"), wrong.stderr


@pytest.mark.parametrize(
    "argv",
    [
        ("join", "--name", "Alice", "--connect-timeout", "20"),
        ("listen", "--connect-timeout", "20"),
        ("send", "--name", "Alice", "--timeout", "20", "hello"),
    ],
    ids=["join", "listen", "send"],
)
def test_a_host_name_that_does_not_resolve_is_said_at_once(argv: tuple[str, ...]) -> None:
    # .invalid never resolves (RFC 2606); a wait for the broker would end in "no answer"
    result = run(*argv, "--host", "nowhere.invalid")
    assert result.returncode == 2
    lines = result.stderr.splitlines()
    assert len(lines) == 1, result.stderr
    assert lines[0].startswith("zchat: the host name 'nowhere.invalid' does not resolve (")
    assert lines[0].endswith("): check --host or ZCHAT_HOST")


def test_a_piped_join_keeps_to_the_flood_limit_and_delivers_every_line_in_order(
    broker: RunningBroker, make_client: MakeClient
) -> None:
    alice = make_client("Alice")
    lines = [str(i) for i in range(1, 71)]  # `seq 1 70`: past the default burst of 50
    args = ("join", "--name", "f", "--port", str(broker.port), "--history", "0")
    result = run(*args, stdin="\n".join(lines) + "\n")
    assert (result.returncode, result.stderr) == (0, "")
    heard = [expect_message(alice, lambda m: m.sender == "f" and m.kind == "message").text]
    while len(heard) < len(lines):
        heard.append(expect_message(alice, lambda m: m.sender == "f").text)
    assert heard == lines  # each once, in order
    notes = [line for line in result.stdout.splitlines() if "***" in line]
    assert [re.sub(TIME_LINE, "", note) for note in notes] == [
        "*** in #general: Alice",
        "*** the broker's flood limit holds the lines back (at most 20 a second, 50 at "
        "once): they go at its pace",
    ]


def test_a_piped_join_exits_1_when_a_line_is_not_delivered(broker: RunningBroker) -> None:
    script = "fine\n/msg Nobody are you there?\nalso fine\n"
    result = run("join", "--name", "Alice", "--port", str(broker.port), stdin=script)
    assert result.returncode == 1
    assert "*** not sent: no user named 'Nobody' is here" in result.stdout
    assert re.search(TIME_LINE + "Alice: also fine$", result.stdout, re.M)
    too_long = run("join", "--name", "Alice", "--port", str(broker.port), stdin="x" * 5000)
    assert too_long.returncode == 1
    assert "*** not sent: message is 5000 bytes long" in too_long.stdout


def test_a_piped_join_shows_no_history_unless_asked(
    broker: RunningBroker, make_client: MakeClient
) -> None:
    alice = make_client("Alice")
    for i in range(3):
        alice.send(f"earlier {i}")
    assert alice.flush()
    args = ("join", "--name", "Bob", "--port", str(broker.port), "--time-format", "none")
    told = run(*args, "--history", "2", stdin="")
    assert [line for line in told.stdout.splitlines() if "earlier" in line] == [
        "Alice: earlier 1",
        "Alice: earlier 2",
    ]
    quiet = run(*args, stdin="")
    assert quiet.returncode == 0, quiet.stderr
    assert "earlier" not in quiet.stdout
    assert "Bob left" not in quiet.stdout  # nor the first Bob's visit
