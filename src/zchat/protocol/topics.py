"""Topics, limits and timestamps of the wire format."""

from __future__ import annotations

import re
from datetime import UTC, datetime

from zchat.errors import ProtocolError
from zchat.values import (
    is_canonical_room,
)

PROTOCOL_VERSION = 1

MAX_ID_CHARS = 64
MAX_HISTORY = 1000  # most events one history answer carries
DEFAULT_HISTORY = 50  # events a newcomer to a room is sent
# Largest frame the broker accepts on its in-socket (ZMQ_MAXMSGSIZE); libzmq closes the
# connection of a peer that sends more. JSON escapes a control character as 6 bytes, so a
# maximal text takes at most 6 * MAX_TEXT_BYTES = 24 KiB, plus an envelope under 1 KiB.
MAX_FRAME_BYTES = 32 * 1024

ROOM_PREFIX = b"room/"
# A SUB socket sends its subscriptions in byte order when it (re)connects, so the inbox
# prefix must sort after every other topic: that keeps "inbox subscribed last" true.
INBOX_PREFIX = b"to/"
SYS_TOPIC = b"sys/"

TOKEN_RE = re.compile(r"[0-9a-f]{32}")
SHA256_RE = re.compile(r"[0-9a-f]{64}")
ID_RE = re.compile(r"[A-Za-z0-9_.\-]+")
MARK_RE = re.compile(r"[a-z0-9]{1,16}")


# --- topics ---------------------------------------------------------------------------


def room_topic(room: str) -> bytes:
    return ROOM_PREFIX + room.encode("ascii") + b"/"


def inbox_topic(inbox: str) -> bytes:
    return INBOX_PREFIX + inbox.encode("ascii") + b"/"


def inbox_of_topic(topic: bytes) -> str | None:
    """The inbox token if ``topic`` is exactly one inbox topic, else None."""
    if topic.startswith(INBOX_PREFIX) and topic.endswith(b"/"):
        token = topic[len(INBOX_PREFIX) : -1].decode("ascii", "replace")
        if TOKEN_RE.fullmatch(token):
            return token
    return None


def marker_topic(inbox: str, mark: str) -> bytes:
    return inbox_topic(inbox) + mark.encode("ascii") + b"/"


def marker_of_topic(topic: bytes) -> tuple[str, str] | None:
    """(inbox, mark) if ``topic`` is exactly one marker topic ``to/<inbox>/<mark>/``."""
    parts = topic.split(b"/")
    if len(parts) == 4 and parts[0] + b"/" == INBOX_PREFIX and parts[3] == b"":
        inbox, mark = parts[1].decode("ascii", "replace"), parts[2].decode("ascii", "replace")
        if TOKEN_RE.fullmatch(inbox) and MARK_RE.fullmatch(mark):
            return inbox, mark
    return None


def room_of_topic(topic: bytes) -> str | None:
    if topic.startswith(ROOM_PREFIX) and topic.endswith(b"/"):
        room = topic[len(ROOM_PREFIX) : -1].decode("ascii", "replace")
        if is_canonical_room(room):
            return room
    return None


# --- time -----------------------------------------------------------------------------


TS_RE = re.compile(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{6}Z")


def format_ts(ts: datetime) -> str:
    if ts.tzinfo is not UTC:  # the broker's clock is in UTC already: one line in a million
        ts = ts.astimezone(UTC)
    return ts.isoformat(timespec="microseconds")[:-6] + "Z"  # "+00:00" -> "Z"


def parse_ts(value: str) -> datetime:
    # fromisoformat is 30 times faster than strptime, and every client parses every line;
    # the pattern keeps the format strict
    if TS_RE.fullmatch(value):
        try:
            return datetime.fromisoformat(value)
        except ValueError:
            pass
    raise ProtocolError("field", f"ts {value!r} is not a UTC timestamp")
