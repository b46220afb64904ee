"""How a Message is printed as text (zchat join without a terminal, zchat listen)."""

from __future__ import annotations

import json
from datetime import UTC, datetime

import pytest

from zchat.client.message import Message
from zchat.client.painter import Painter
from zchat.client.render import CONTINUATION, render, to_json
from zchat.protocol import SharedFile

TS = datetime(2025, 3, 1, 14, 30, 15, tzinfo=UTC)


def said(text: str, kind: str = "message", to: str | None = None) -> Message:
    room = None if kind == "private" else "general"
    return Message(kind, room, "Alice", text, TS, to=to)  # type: ignore[arg-type]


def shared(file: SharedFile, to: str | None = None) -> Message:
    """A file shared in #general, or with ``to``, as the broker words it."""
    kind = "private" if to else "message"
    room = None if to else "general"
    text = f"shared {file.name} (…): /get {file.id}"  # the line is built from ``file``
    return Message(kind, room, "Alice", text, TS, to=to, file=file)  # type: ignore[arg-type]


SHA = "ab" * 32
PDF = SharedFile(7, "tugas3.pdf", 1_234_567, SHA)
PNG = SharedFile(8, "layar.png", 340_000, SHA, "image/png", 1280, 720)
EXPIRED = SharedFile(7, "tugas3.pdf", 1_234_567, SHA, expired=True)
MARKED = SharedFile(9, "**not bold** @bob.txt", 999, SHA)
# (message, the line shown, the fragment of the name, the fragment of the fetch)
IMAGE = "[image 1280\u00d7720]"  # width by height, with a multiplication sign
SHARES = [
    (shared(PDF), "{} Alice shared tugas3.pdf (1.2 MB): /get 7", "/get 7"),
    (shared(PNG, "Bob"), "{} [private] Alice → Bob shared layar.png (340 kB) " + IMAGE + ": /get 8",
     "/get 8"),
    (shared(PNG), "{} Alice shared layar.png (340 kB) " + IMAGE + ": /get 8", "/get 8"),
    (shared(EXPIRED), "{} Alice shared tugas3.pdf (1.2 MB): expired", "expired"),
    (shared(MARKED), "{} Alice shared **not bold** @bob.txt (999 B): /get 9", "/get 9"),
]  # fmt: skip


def stamp() -> str:
    return f"[{TS.astimezone().strftime('%H:%M:%S')}]"


@pytest.mark.parametrize(
    ("msg", "lines"),
    [
        (said("Halo semua!"), ["{} Alice: Halo semua!"]),
        (said("waves", "action"), ["{} * Alice waves"]),
        (said("psst", "private", "Bob"), ["{} [private] Alice → Bob: psst"]),
        (said("**bold** stays as typed"), ["{} Alice: **bold** stays as typed"]),
        (
            said("```python\ndef f():\n    return 1\n```"),
            ["{} Alice: ```python", "    def f():", "        return 1", "    ```"],
        ),
        (said("two\n\nblank"), ["{} Alice: two", "    ", "    blank"]),
        (said("a\nb", "private", "Bob"), ["{} [private] Alice → Bob: a", "    b"]),
        (said("esc\x1b[2J\nbell\x07"), ["{} Alice: esc\ufffd[2J", "    bell\ufffd"]),
    ],
)
def test_a_message_of_several_lines_prints_its_continuations_indented(
    msg: Message, lines: list[str]
) -> None:
    printed = render(msg).split("\n")
    assert printed == [line.format(stamp()) for line in lines]
    # every line but the first of an event starts with CONTINUATION: a reader knows
    assert all(line.startswith(CONTINUATION) for line in printed[1:])
    assert not printed[0].startswith(" ")


def test_json_output_keeps_a_message_of_several_lines_on_one_line() -> None:
    line = to_json(said("a\nb"))
    assert "\n" not in line
    assert json.loads(line)["text"] == "a\nb"


@pytest.mark.parametrize(("msg", "line", "fetch"), SHARES)
def test_a_shared_file_is_told_from_its_record(msg: Message, line: str, fetch: str) -> None:
    assert render(msg) == line.format(stamp())
    elsewhere = render(msg, "none", "dev")
    assert elsewhere.startswith("#general Alice shared" if msg.room else "[private] Alice")


@pytest.mark.parametrize(("msg", "line", "fetch"), SHARES)
def test_a_shared_file_is_painted_as_rendered_its_name_never_markup(
    msg: Message, line: str, fetch: str
) -> None:
    painter = Painter("Bob", term="xterm-256color")
    fragments = painter.fragments(msg, "general", named=False)
    assert "".join(text for _, text in fragments) == line.format(stamp())
    assert msg.file is not None
    assert ("class:file", msg.file.name) in fragments  # one fragment: bold, underlined
    assert fragments[-1] == ("class:notice" if msg.file.expired else "class:code", fetch)
    painted = painter.line(msg, "general")
    assert "\x1b[" in painted and msg.file.name in painted


def test_json_output_has_the_shared_file() -> None:
    fields = json.loads(to_json(shared(PNG, "Bob")))
    assert fields["kind"] == "private" and fields["to"] == "Bob"
    assert fields["file"] == {
        "id": 8, "name": "layar.png", "size": 340_000, "sha256": SHA, "media": "image/png",
        "width": 1280, "height": 720, "expired": False,
    }  # fmt: skip
    assert "file" not in json.loads(to_json(said("no file")))
