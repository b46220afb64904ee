"""What the broker's rules decide (Actions) and how they refuse a request (Answer)."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TypeAlias

from zchat import protocol as p
from zchat.errors import InvalidInput

# Where a frame came from: its address, or what tells it when asked (asking costs a
# system call, so the socket loop hands over the question and only some answers ask it).
Peer: TypeAlias = str | Callable[[], str | None] | None


def address(peer: Peer) -> str | None:
    return peer() if callable(peer) else peer


@dataclass
class Actions:
    """What the socket loop must do, in this order: apply the subscription changes
    (right away, before receiving anything else), commit the store, then publish."""

    subscribe: list[bytes] = field(default_factory=list)
    unsubscribe: list[bytes] = field(default_factory=list)
    publish: list[list[bytes]] = field(default_factory=list)
    bans_changed: bool = False  # secure mode: tell the key checker who is banned now

    def extend(self, other: Actions) -> None:
        self.subscribe += other.subscribe
        self.unsubscribe += other.unsubscribe
        self.publish += other.publish
        self.bans_changed |= other.bans_changed


class Answer(Exception):
    """A request from a known session that is refused: the code and text go back to it."""

    def __init__(self, code: str, text: str) -> None:
        super().__init__(text)
        self.code = code
        self.text = text


def fails(code: str, check: Callable[[str], str], value: str) -> str:
    """Run a value check; turn its InvalidInput into an Answer with ``code``."""
    try:
        return check(value)
    except InvalidInput as exc:
        raise Answer(code, str(exc)) from None


def checked_text(text: str) -> str:
    """A message's text, checked (``bad-text``) and cleaned for terminals (its line
    breaks are kept)."""
    return p.clean_lines(fails("bad-text", p.check_text, text))
