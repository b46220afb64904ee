"""The listener's rules (ListenCore), driven with frames: no sockets. One table of
what a room publishes and what the listener shows."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest

from zchat import protocol as p
from zchat.client.listen import ListenCore

TS = datetime(2025, 3, 1, 14, 30, 15, tzinfo=UTC)


def line(seq: int) -> list[bytes]:
    chat = p.Chat("general", seq, TS, "Bob", f"line {seq}", "")
    return p.encode_server(p.room_topic("general"), chat)


def tail(seq: int) -> list[bytes]:
    return p.encode_server(p.room_topic("general"), p.Tail("general", seq))


# what #general publishes, in order (an int is a line of that seq, ("tail", n) a tail)
# -> what the listener shows (a line by its text, a notice by its text)
CASES = {
    "in order": ([1, 2, 3], ["line 1", "line 2", "line 3"]),
    "a jump": ([1, 4], ["line 1", "2 lines of #general were missed", "line 4"]),
    "a tail past the last line": (
        [5, ("tail", 8)],
        ["line 5", "3 lines of #general were missed"],
    ),
    "a tail that is old news": ([5, ("tail", 5), 6], ["line 5", "line 6"]),
    "numbers from 0 again": (
        [7, 8, 1, 2],
        [
            "line 7",
            "line 8",
            "the broker's history of #general starts again at 0",
            "line 1",
            "line 2",
        ],
    ),
    "numbers again, some lines gone before": (
        [7, 8, 3],
        ["line 7", "line 8", "the broker's history of #general starts again at 2", "line 3"],
    ),
    "a tail says the numbers went back": (
        [7, 8, ("tail", 3), 4],
        ["line 7", "line 8", "the broker's history of #general starts again at 3", "line 4"],
    ),
}


@pytest.mark.parametrize(("published", "shown"), list(CASES.values()), ids=list(CASES))
def test_what_a_listener_shows(published: list[int | tuple[str, int]], shown: list[str]) -> None:
    core = ListenCore(["general"], clock=lambda: TS)
    core.start(0.0)
    for now, item in enumerate(published, 1):
        core.on_publish(tail(item[1]) if isinstance(item, tuple) else line(item), float(now))
    assert [msg.text for msg in core.events] == shown
