"""End to end: `zchat join` in a real pty, its output rendered by a terminal emulator
(pyte), and the assertions made on the screen a person would see."""

from __future__ import annotations

import io
import os
import re
import signal
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pexpect
import pytest

from screen import STAMP, WAIT, Terminal
from support import Proc, child_env, expect_message, zchat_command
from zchat import Client, Message
from zchat import protocol as p


def is_chat(sender: str, text: str) -> Callable[[Message], bool]:
    return lambda m: m.kind == "message" and m.sender == sender and m.text == text


def is_leave(sender: str) -> Callable[[Message], bool]:
    return lambda m: m.kind == "leave" and m.sender == sender


def test_message_arriving_while_typing_keeps_the_line(
    spawn: Callable[[str], Terminal], make_client: Callable[..., Client]
) -> None:
    bob = make_client("Bob")
    alice = spawn("Alice")
    alice.type("hel")
    alice.wait_prompt("hel")

    bob.send("Halo semua!")
    bob_line = STAMP + re.escape("Bob: Halo semua!") + "$"

    def shown_above_prompt(term: Terminal) -> bool:
        row = term.row_of(bob_line)
        return row is not None and row < term.screen.cursor.y

    alice.wait_for(shown_above_prompt, "Bob's line above the prompt")
    alice.wait_prompt("hel")
    assert re.fullmatch(STAMP + "Bob: Halo semua!", alice.lines[alice.row_of(bob_line) or 0])
    # nothing typed leaked into the lines above the prompt
    above = alice.lines[: alice.screen.cursor.y]
    assert not any("hel" in line for line in above), alice.dump()

    alice.type("lo\r")
    expect_message(bob, is_chat("Alice", "hello"), timeout=WAIT)
    alice.wait_for(
        lambda term: term.row_of(STAMP + "Alice: hello$") is not None, "Alice's own line"
    )
    alice.wait_prompt()


def test_own_join_notice_is_shown_and_others_see_it(
    spawn: Callable[[str], Terminal], make_client: Callable[..., Client]
) -> None:
    bob = make_client("Bob")
    alice = spawn("Alice")
    alice.wait_for(lambda term: term.row_of(STAMP + "Alice joined$") is not None, "'Alice joined'")
    alice.wait_prompt()
    expect_message(bob, lambda m: m.kind == "join" and m.sender == "Alice", timeout=WAIT)


def test_help_and_unknown_command(spawn: Callable[[str], Terminal]) -> None:
    alice = spawn("Alice")
    alice.type("/help\r")

    def help_shown(term: Terminal) -> bool:
        stripped = [line.strip() for line in term.lines]
        return (
            any(line.startswith("/quit") for line in stripped)
            and any(line.startswith("/help") for line in stripped)
            and any(line.startswith("**bold**") for line in stripped)
        )

    alice.wait_for(help_shown, "the /help list with /quit and /help")
    alice.wait_prompt()

    alice.type("/foo\r")
    alice.wait_for(
        lambda term: term.row_of(re.escape("unknown command /foo, try /help")) is not None,
        "the unknown command notice",
    )
    alice.wait_prompt()


def test_quit_with_reason_leaves_and_exits_0(
    spawn: Callable[[str], Terminal], make_client: Callable[..., Client]
) -> None:
    bob = make_client("Bob")
    alice = spawn("Alice")
    alice.type("/quit see you\r")
    left = expect_message(bob, is_leave("Alice"), timeout=WAIT)
    assert left.text == "quit: see you"
    assert alice.wait_exit() == 0


@pytest.mark.parametrize(("key", "label"), [("\x04", "ctrl-d"), ("\x03", "ctrl-c")])
def test_ctrl_d_and_ctrl_c_leave_and_exit_0(
    spawn: Callable[[str], Terminal],
    make_client: Callable[..., Client],
    key: str,
    label: str,
) -> None:
    bob = make_client("Bob")
    alice = spawn("Alice")
    alice.type(key)
    left = expect_message(bob, is_leave("Alice"), timeout=WAIT)
    assert left.text == "quit", label
    assert alice.wait_exit() == 0, label


def test_a_name_asked_for_is_asked_again_if_taken(
    broker: Any, make_client: Callable[..., Client]
) -> None:
    make_client("Bob")
    argv = zchat_command("join", "--port", str(broker.port))
    child = pexpect.spawn(argv[0], argv[1:], env=child_env(TERM="dumb"), timeout=WAIT)
    try:
        child.expect_exact("Username: ")
        child.sendline("bad name")
        child.expect_exact("is not allowed")
        child.expect_exact("Username: ")
        child.sendline("BOB")
        child.expect_exact("zchat: name 'bob' is taken")
        child.expect_exact("Username: ")  # asked again, not the end of the program
        child.sendline("Carol")
        child.expect("Carol joined")
    finally:
        child.terminate(force=True)


def _own_ctrl_c() -> None:
    """In the child: Ctrl-C as a person's terminal has it. A test run started in the
    background of a shell script ignores SIGINT, and a child inherits that."""
    signal.signal(signal.SIGINT, signal.SIG_DFL)


def test_ctrl_c_at_a_username_prompt_asked_again_stops_at_once(
    broker: Any, make_client: Callable[..., Client]
) -> None:
    make_client("Bob")
    argv = zchat_command("join", "--port", str(broker.port))
    child = pexpect.spawn(
        argv[0], argv[1:], env=child_env(TERM="dumb"), timeout=WAIT, preexec_fn=_own_ctrl_c
    )
    try:
        child.expect_exact("Username: ")
        child.sendline("Bob")
        child.expect_exact("zchat: name 'bob' is taken")
        child.expect_exact("Username: ")
        child.sendintr()  # Ctrl-C, once
        child.expect(pexpect.EOF)
        assert child.wait() == 1  # (close() first could kill it while it exits)
    finally:
        child.terminate(force=True)


def test_no_name_is_asked_for_before_the_broker_answers(silent_port: int) -> None:
    port = silent_port
    argv = zchat_command("join", "--port", str(port), "--connect-timeout", "1")
    child = pexpect.spawn(argv[0], argv[1:], env=child_env(TERM="dumb"), timeout=WAIT)
    child.logfile_read = io.BytesIO()  # all it writes
    try:
        child.expect_exact(f"connecting to the broker at 127.0.0.1:{port}…".encode())
        child.expect_exact(f"zchat: no answer from the broker at 127.0.0.1:{port} within 1 s")
        child.expect(pexpect.EOF)
        assert b"Username" not in child.logfile_read.getvalue()
        assert child.wait() == 1  # (close() first could kill it while it exits)
    finally:
        child.terminate(force=True)


def test_connecting_is_said_then_the_name_is_asked(broker: Any) -> None:
    argv = zchat_command("join", "--port", str(broker.port))
    child = pexpect.spawn(argv[0], argv[1:], env=child_env(TERM="dumb"), timeout=WAIT)
    try:
        child.expect_exact(f"connecting to the broker at 127.0.0.1:{broker.port}…".encode())
        child.expect_exact("Username: ")
        child.sendline("Carol")
        child.expect("Carol joined")
    finally:
        child.terminate(force=True)


def cpu_seconds(pid: int) -> float:
    """User and system CPU time a process has used so far."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def test_while_the_broker_is_gone_the_prompt_answers_and_the_client_idles(
    broker_proc: tuple[Proc, int],
) -> None:
    broker, port = broker_proc
    alice = Terminal("Alice", port)
    try:
        alice.wait_prompt()
        broker.signal(signal.SIGKILL)  # no notice: only the silence tells
        started, cpu = time.monotonic(), cpu_seconds(alice.child.pid)
        alice.wait_for(
            lambda term: term.row_of("broker unreachable, reconnecting") is not None,
            "the outage noticed",
        )
        # the silence takes 3.5 s to notice; a client that spun on it would use all that
        used, waited = cpu_seconds(alice.child.pid) - cpu, time.monotonic() - started
        assert used < waited / 4, f"{used:.2f} s of CPU in {waited:.2f} s of outage"
        alice.wait_prompt()
        alice.type("anyone?")
        alice.wait_prompt("anyone?")  # keys are still echoed
        alice.type("\r")
        alice.wait_for(
            lambda term: term.row_of(r"\*\*\* not sent \(the broker is unreachable") is not None,
            "the line reported not sent",
        )
        alice.wait_prompt("anyone?")  # and given back, to send again later
        alice.type("\x15/quit\r")  # Ctrl-U clears the line; then leave, broker or not
        assert alice.wait_exit() == 0
    finally:
        alice.stop()


def test_escape_sequences_in_messages_do_not_steer_the_terminal(
    spawn: Callable[[str], Terminal], make_client: Callable[..., Client]
) -> None:
    bob = make_client("Bob")
    alice = spawn("Alice")
    bob.send("before")
    before = STAMP + "Bob: before$"
    alice.wait_for(lambda term: term.row_of(before) is not None, "Bob's first line")

    # past the sending client's own cleaning, straight onto the wire: the broker cleans it
    raw = p.encode_client(p.Say(bob.core.secret, "general", "\x1b[2J\x1b[31mred", "m99"))
    bob._push.send_multipart(raw)
    evil = STAMP + re.escape("Bob: \ufffd[2J\ufffd[31mred") + "$"
    alice.wait_for(lambda term: term.row_of(evil) is not None, "the escaped line")
    alice.wait_prompt()

    evil_row = alice.row_of(evil)
    before_row = alice.row_of(before)
    assert before_row is not None, f"the screen was cleared:\n{alice.dump()}"
    assert evil_row is not None
    assert before_row < evil_row < alice.screen.cursor.y
    # the stamp and the name have colours of their own; the text has none of the line's
    start = alice.lines[evil_row].index("Bob: ") + len("Bob: ")
    text = [alice.screen.buffer[evil_row][x] for x in range(start, len(alice.lines[evil_row]))]
    prompt = list(alice.screen.buffer[alice.screen.cursor.y].values())
    for where, chars in (("text", text), ("prompt", prompt)):
        colours = {char.fg for char in chars if char.data != " "}
        assert colours <= {"default"}, f"the {where} is coloured {colours}:\n{alice.dump()}"


def test_join_switches_the_current_room_and_names_the_others(
    spawn: Callable[[str], Terminal], make_client: Callable[..., Client]
) -> None:
    bob = make_client("Bob", rooms=["general", "dev"])
    bob.send("earlier in dev", room="dev")
    assert bob.flush()
    alice = spawn("Alice")
    alice.type("/join #dev\r")
    alice.wait_for(lambda term: term.cursor_line == "#dev>", "the prompt of #dev")
    # the room's history and her own arrival are the current room's: no "#dev" on them
    alice.wait_for(
        lambda term: term.row_of(STAMP + "Bob: earlier in dev$") is not None, "the history"
    )
    assert alice.row_of("#dev (Bob: earlier|Alice joined)") is None, alice.dump()
    alice.type("in dev\r")
    got = expect_message(bob, is_chat("Alice", "in dev"), timeout=WAIT)
    assert got.room == "dev"
    bob.send("in general", room="general")
    other = STAMP + "#general Bob: in general$"
    alice.wait_for(lambda term: term.row_of(other) is not None, "a line of #general, named")
