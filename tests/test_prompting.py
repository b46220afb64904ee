"""The terminal's typing aids and its memory of the rooms, without a terminal: sent
lines kept across runs, Tab completion, unread lines and mentions."""

from __future__ import annotations

import stat
from datetime import UTC, datetime
from pathlib import Path

import pytest
from prompt_toolkit.completion import CompleteEvent
from prompt_toolkit.document import Document

from zchat.client.message import Members, Message
from zchat.client.prompting import ChatCompleter, SentLines, sent_lines_path
from zchat.client.roster import Roster

TS = datetime(2025, 3, 1, tzinfo=UTC)


def event(kind: str, sender: str, text: str = "", room: str = "general") -> Message:
    return Message(kind, room, sender, text, TS)  # type: ignore[arg-type]


# --- sent lines ------------------------------------------------------------------------


def test_sent_lines_come_back_in_the_next_run_newest_first(tmp_path: Path) -> None:
    path = sent_lines_path("Alice", tmp_path)
    first = SentLines(path)
    assert list(first.load_history_strings()) == []
    for line in ("hello", "a message\nof two lines", "  ", "/join #dev"):
        first.append_string(line)
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert stat.S_IMODE(path.parent.stat().st_mode) == 0o700
    again = SentLines(sent_lines_path("alice", tmp_path))  # one file per name, any case
    assert list(again.load_history_strings()) == ["/join #dev", "a message\nof two lines", "hello"]


def test_sent_lines_keep_the_newest_only(tmp_path: Path) -> None:
    path = tmp_path / "sent" / "bob.jsonl"
    lines = SentLines(path, keep=10)
    for n in range(45):
        lines.append_string(f"line {n}")
    kept = list(SentLines(path, keep=10).load_history_strings())
    assert kept == [f"line {n}" for n in range(44, 34, -1)]
    assert len(path.read_text().splitlines()) <= 10 + 200


def test_a_damaged_or_unreadable_history_file_is_no_reason_not_to_chat(tmp_path: Path) -> None:
    path = tmp_path / "sent" / "carol.jsonl"
    path.parent.mkdir()
    path.write_bytes(b'"kept"\n{not json\n"\\ud800 lone"\n42\n"also kept"\n"cut sho')
    assert list(SentLines(path).load_history_strings()) == ["also kept", "\ud800 lone", "kept"]
    blocked = tmp_path / "file-not-folder"
    blocked.write_text("")
    lines = SentLines(blocked / "sent" / "dave.jsonl")
    lines.append_string("hi")
    assert "cannot write" in lines.problem
    lines.append_string("still fine")  # no second attempt, no exception
    assert list(lines.get_strings()) == ["hi", "still fine"]


# --- completion --------------------------------------------------------------------------


def complete(completer: ChatCompleter, text: str) -> list[str]:
    document = Document(text, len(text))
    return [c.text for c in completer.get_completions(document, CompleteEvent(True))]


@pytest.mark.parametrize(
    ("typed", "completed"),
    [
        ("/jo", ["/join "]),
        ("/", ["/help ", "/join ", "/msg ", "/quit "]),
        ("/J", ["/join "]),
        ("b", ["Bob: ", "bea: "]),
        ("hi b", ["Bob ", "bea "]),
        ("hi @b", ["@Bob ", "@bea "]),
        ("@B", ["@Bob ", "@bea "]),
        ("x", []),
        ("", []),
        ("hi ", []),
        ("a line\nb", ["Bob ", "bea "]),
        ("/msg b", ["Bob ", "bea "]),
    ],
)
def test_tab_completes_commands_and_names(typed: str, completed: list[str]) -> None:
    completer = ChatCompleter(["/join", "/msg", "/help", "/quit"], lambda: ["Bob", "bea", "Zed"])
    assert complete(completer, typed) == completed


@pytest.mark.parametrize(
    ("typed", "completed"),
    [
        ("/send {}/re", ["port.pdf", "ports"]),
        ("/send #dev {}/report.", ["pdf"]),
        ('/send @Bob "{}/my', [" notes.txt"]),
        ("/get 7 {}/rep", ["ort.pdf", "orts"]),
        ("/send @B", ["@Bob "]),  # a name, not yet a path
        ("/send #de", []),
        ("/get x {}/rep", []),  # no file id: no path
        ("/get {}/rep", []),
    ],
)
def test_tab_completes_paths_after_send_and_get(
    tmp_path: Path, typed: str, completed: list[str]
) -> None:
    (tmp_path / "report.pdf").write_bytes(b"")
    (tmp_path / "reports").mkdir()
    (tmp_path / "my notes.txt").write_bytes(b"")
    completer = ChatCompleter(["/send", "/get"], lambda: ["Bob"])
    assert sorted(complete(completer, typed.format(tmp_path))) == completed


# --- the roster ------------------------------------------------------------------------


def test_names_complete_the_last_to_speak_first_never_oneself() -> None:
    roster = Roster("Alice")
    welcome = Members("general", ("Alice", "Bob", "Carol", "dave"), count=0)
    roster.heard(Message.system("in #general: …", TS, "general", welcome), "general", False)
    roster.heard(event("join", "Erin"), "general", False)
    assert roster.completions("general") == ["Bob", "Carol", "dave", "Erin"]
    roster.heard(event("message", "dave", "hi"), "general", False)
    roster.heard(event("message", "Alice", "hello"), "general", False)
    roster.heard(event("message", "Bob", "yo"), "general", False)
    assert roster.completions("general") == ["Bob", "dave", "Carol", "Erin"]
    roster.heard(event("leave", "dave"), "general", False)
    roster.heard(event("nick", "Bob", "Robert"), "general", False)
    assert roster.completions("general") == ["Robert", "Carol", "Erin"]
    assert roster.completions("dev") == []


def test_lines_in_other_rooms_are_counted_until_seen() -> None:
    roster = Roster("Alice")
    roster.heard(event("message", "Bob", "hi", room="dev"), "general", False)
    roster.heard(event("message", "Bob", "@alice look", room="dev"), "general", True)
    roster.heard(event("join", "Carol", room="dev"), "general", False)  # not a line
    roster.heard(event("message", "Carol", "here", room="ops"), "general", False)
    roster.heard(event("message", "Carol", "in the room I am in"), "general", True)
    assert roster.summary() == "#dev: 2, 1 mention; #ops: 1"
    roster.seen("dev")
    assert roster.summary() == "#ops: 1"
    roster.left("ops")
    assert roster.summary() == ""
