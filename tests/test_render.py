"""How a Message is printed as text (zchat join without a terminal, zchat listen)."""

from __future__ import annotations

import json
from datetime import UTC, datetime

import pytest

from zchat.client.message import Message
from zchat.client.render import CONTINUATION, render, to_json

TS = datetime(2025, 3, 1, 14, 30, 15, tzinfo=UTC)


def said(text: str, kind: str = "message", to: str | None = None) -> Message:
    room = None if kind == "private" else "general"
    return Message(kind, room, "Alice", text, TS, to=to)  # type: ignore[arg-type]


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
