"""End to end, in a real pty: what a person types (Tab, a paste, Alt-Enter, Up) and
what the terminal shows of it (colours, formatting, mentions, unread lines)."""

from __future__ import annotations

import re
from collections.abc import Callable

import pyte

from screen import PROMPT, STAMP, WAIT, Terminal
from support import expect_message
from zchat import Client, Message
from zchat import protocol as p

PASTE_START, PASTE_END = "\x1b[200~", "\x1b[201~"  # bracketed paste, as terminals send it
ALT_ENTER = "\x1b\r"
UP = "\x1b[A"


def said(sender: str, text: str) -> Callable[[Message], bool]:
    return lambda m: m.kind == "message" and m.sender == sender and m.text == text


def shown(term: Terminal, pattern: str) -> None:
    term.wait_for(lambda t: t.row_of(pattern) is not None, repr(pattern))


def chars(term: Terminal, pattern: str) -> list[pyte.screens.Char]:
    """The characters of the last row matching ``pattern``, from the match on."""
    row = term.row_of(pattern)
    assert row is not None, term.dump()
    match = re.search(pattern, term.lines[row])
    assert match is not None
    line = term.screen.buffer[row]
    return [line[x] for x in range(match.start(), match.end())]


def colours(term: Terminal) -> set[str]:
    return {
        char.fg for row in term.screen.buffer.values() for char in row.values() if char.data.strip()
    }


# --- typing ---------------------------------------------------------------------------


def test_tab_completes_names_and_commands(
    spawn: Callable[..., Terminal], make_client: Callable[..., Client]
) -> None:
    bob = make_client("Bobby")
    alice = spawn("Alice")
    bob.send("hi")
    shown(alice, STAMP + "Bobby: hi$")
    alice.type("Bo\t")
    alice.wait_prompt("Bobby: ")
    alice.type("see /hel")  # only at the start of a line is a word a command
    alice.wait_prompt("Bobby: see /hel")
    alice.type("\x15/hel\t")  # Ctrl-U empties the line
    alice.wait_prompt("/help ")


def test_a_paste_of_several_lines_is_one_message(
    spawn: Callable[..., Terminal], make_client: Callable[..., Client]
) -> None:
    bob = make_client("Bob")
    alice = spawn("Alice")
    alice.type(f"{PASTE_START}Traceback:\r\n  File x\r\nValueError{PASTE_END}")
    alice.type("\r")
    expect_message(bob, said("Alice", "Traceback:\n  File x\nValueError"), timeout=WAIT)


def test_alt_enter_starts_a_new_line_in_the_message(
    spawn: Callable[..., Terminal], make_client: Callable[..., Client]
) -> None:
    bob = make_client("Bob")
    alice = spawn("Alice")
    alice.type(f"first{ALT_ENTER}second\r")
    expect_message(bob, said("Alice", "first\nsecond"), timeout=WAIT)


def test_a_message_over_the_line_limit_is_refused_before_it_is_sent(
    spawn: Callable[..., Terminal], make_client: Callable[..., Client]
) -> None:
    bob = make_client("Bob")
    alice = spawn("Alice")
    lines = "\n".join(f"l{n}" for n in range(p.MAX_TEXT_LINES + 1))
    alice.type(f"{PASTE_START}{lines}{PASTE_END}\r")
    # in the bytes written, not on the screen: the 61 lines put back at the prompt may
    # scroll the note away before the screen is read
    note = f"not sent: message has 61 lines, the limit is {p.MAX_TEXT_LINES}".encode()
    alice.wait_for(lambda t: note in t.raw, "the reason it was not sent")
    bob.send("after")
    received = expect_message(bob, lambda m: m.kind == "message", timeout=WAIT)
    assert received.sender == "Bob"  # nothing of Alice's went out


def test_up_brings_back_the_lines_sent_in_an_earlier_run(
    spawn: Callable[..., Terminal], make_client: Callable[..., Client]
) -> None:
    bob = make_client("Bob")
    first = spawn("Carol")
    first.type("remember me\r")
    expect_message(bob, said("Carol", "remember me"), timeout=WAIT)
    first.type("/quit\r")
    assert first.wait_exit() == 0
    again = spawn("carol")
    again.type(UP)
    again.wait_prompt("/quit")  # commands are kept too, the last first
    again.type(UP)
    again.wait_prompt("remember me")


# --- what is shown ---------------------------------------------------------------------


def test_lines_in_other_rooms_and_mentions_show_in_the_prompt_and_ring_once(
    spawn: Callable[..., Terminal], make_client: Callable[..., Client]
) -> None:
    bob = make_client("Bob", rooms=["general", "dev"])
    alice = spawn("Alice")
    alice.type("/join #dev\r")
    alice.wait_for(lambda t: t.cursor_line == "#dev>", "the prompt of #dev")
    bell_before = alice.raw.count(b"\x07")
    bob.send("hi all", room="general")
    bob.send("@alice a question", room="general")
    bob.send("and in dev", room="dev")
    alice.wait_for(lambda t: t.cursor_line == "#dev (#general: 2, 1 mention)>", "the unread lines")
    alice.wait_for(lambda t: t.raw.count(b"\x07") > bell_before, "the bell")
    bob.send("one more", room="general")
    alice.wait_for(
        lambda t: t.cursor_line == "#dev (#general: 3, 1 mention)>", "one more unread line"
    )
    assert alice.raw.count(b"\x07") == bell_before + 1  # once, for the mention only
    alice.type("/join #general\r")
    alice.wait_for(lambda t: t.cursor_line == PROMPT.rstrip(), "all read")


def test_formatting_in_colour_and_none_with_no_color(
    spawn: Callable[..., Terminal], make_client: Callable[..., Client]
) -> None:
    bob = make_client("Bob")
    alice = spawn("Alice")
    plain = spawn("Dave", NO_COLOR="1")
    text = "**bold** and `code` for @alice\n```python\ndef f():\n    return 1\n```"
    bob.send(text)
    shown(alice, r"Bob: bold and code for @alice$")
    shown(alice, r"│ def f\(\):$")
    bold = chars(alice, "bold and")
    assert all(char.bold for char in bold[:4]) and not bold[5].bold
    mention = chars(alice, "@alice$")
    assert all(char.reverse for char in mention), alice.dump()
    keyword = chars(alice, "def")[0]
    assert keyword.fg != "default", alice.dump()  # highlighted
    nick = chars(alice, "Bob:")[0]
    assert nick.fg != "default" and nick.bold
    # NO_COLOR: no colour at all, the markup as typed, the continuation lines indented
    shown(plain, STAMP + re.escape("Bob: **bold** and `code` for @alice") + "$")
    shown(plain, "^    ```python$")
    assert colours(plain) == {"default"}, plain.dump()
    assert b"\x1b[3" not in plain.raw and b"\x1b[38" not in plain.raw
