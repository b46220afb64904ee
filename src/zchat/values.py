"""The values people type (names, rooms, texts, reasons, topics): their limits, their
checks, and the cleaning that keeps a terminal safe. Pure."""

from __future__ import annotations

import re
import unicodedata

from zchat.errors import InvalidInput

MAX_NAME_CHARS = 32
MAX_ROOM_CHARS = 32
MAX_TEXT_BYTES = 4096
MAX_TEXT_LINES = 60  # a message may hold several lines (a code block, a stack trace)
MAX_REASON_CHARS = 200
MAX_TOPIC_CHARS = 300
MAX_ROOMS_PER_SESSION = 32
DEFAULT_ROOM = "general"

_NAME_RE = re.compile(r"[A-Za-z0-9_.\-]+")
# Bidirectional overrides and isolates can make a line read differently from what
# it says; they are replaced like control characters.
_BIDI = frozenset("\u202a\u202b\u202c\u202d\u202e\u2066\u2067\u2068\u2069")
# The line and paragraph separators are no control characters, but str.splitlines()
# (and some terminals and editors) break a line at them: a forged line in a log.
_LINE_SEPARATORS = frozenset("\u2028\u2029")
_ALLOWED = "use only ASCII letters, digits, '_', '-' and '.'"
_REMEMBERED = 4096  # names and rooms that passed their rule, remembered at most


# Names that passed: every line names its sender.
_NAMES_SEEN: set[str] = set()


def check_name(name: str) -> str:
    """Return ``name`` if it is a valid user name, else raise InvalidInput."""
    if name not in _NAMES_SEEN:
        _checked_name(name)
        if len(_NAMES_SEEN) >= _REMEMBERED:
            _NAMES_SEEN.clear()
        _NAMES_SEEN.add(name)
    return name


def _checked_name(name: str) -> None:
    if not name:
        raise InvalidInput(f"name is empty: {_ALLOWED}, 1 to {MAX_NAME_CHARS} of them")
    if len(name) > MAX_NAME_CHARS:
        raise InvalidInput(f"name is {len(name)} characters long, the limit is {MAX_NAME_CHARS}")
    if not _NAME_RE.fullmatch(name):
        raise InvalidInput(f"name {name!r} is not allowed: {_ALLOWED}")


# Room names that passed, as written -> canonical: every line names its room.
_ROOMS_SEEN: dict[str, str] = {}


def check_room(room: str) -> str:
    """Return the canonical form of a room name (lower case, no '#'), or raise."""
    canonical = _ROOMS_SEEN.get(room)
    if canonical is None:
        canonical = _checked_room(room)
        if len(_ROOMS_SEEN) >= _REMEMBERED:
            _ROOMS_SEEN.clear()
        _ROOMS_SEEN[room] = canonical
    return canonical


def _checked_room(room: str) -> str:
    bare = room.removeprefix("#")
    if not bare:
        raise InvalidInput("room name is empty")
    if len(bare) > MAX_ROOM_CHARS:
        raise InvalidInput(
            f"room name is {len(bare)} characters long, the limit is {MAX_ROOM_CHARS}"
        )
    # checked before lower-casing: "\u212a".lower() is an ASCII "k"
    if not _NAME_RE.fullmatch(bare):
        raise InvalidInput(f"room name {room!r} is not allowed: {_ALLOWED}")
    return bare.lower()


def is_canonical_room(room: str) -> bool:
    return len(room) <= MAX_ROOM_CHARS and bool(_NAME_RE.fullmatch(room)) and room == room.lower()


# a lone surrogate (JSON "\ud800") cannot be encoded as UTF-8: it would break encoding
_SURROGATE_RE = re.compile("[\ud800-\udfff]")


def _without_surrogates(text: str) -> str:
    return text if text.isascii() else _SURROGATE_RE.sub("\ufffd", text)


def clean_text(text: str) -> str:
    """Replace what could steer a terminal (control characters, escape sequences,
    bidirectional overrides), break a line (U+2028, U+2029) or break encoding (lone
    surrogates) with U+FFFD; a tab becomes a space."""
    if text.isprintable():
        return text
    out = []
    for ch in _without_surrogates(text):
        if ch == "\t":
            out.append(" ")
        elif ch in _BIDI or ch in _LINE_SEPARATORS or unicodedata.category(ch) == "Cc":
            out.append("\ufffd")
        else:
            out.append(ch)
    return "".join(out)


TAB_COLUMNS = 4  # a tab in a message's text stops at the next multiple of this


def clean_lines(text: str) -> str:
    """``clean_text`` for the text of a message, which may hold several lines: each
    line is cleaned, and the line breaks between them are kept (a CR LF or a lone CR
    becomes LF); a tab becomes the spaces to the next multiple of TAB_COLUMNS (code
    keeps its indentation)."""
    if text.isprintable():
        return text
    if "\r" in text:
        text = text.replace("\r\n", "\n").replace("\r", "\n")
    if "\t" in text:
        text = "\n".join(line.expandtabs(TAB_COLUMNS) for line in text.split("\n"))
    if "\n" not in text:
        return clean_text(text)
    return "\n".join(clean_text(line) for line in text.split("\n"))


def check_text(text: str) -> str:
    """Return ``text`` ready to encode (CR LF made LF), or raise InvalidInput if empty,
    too long, or of too many lines. The broker cleans it for display (``clean_lines``)
    when it publishes it."""
    if not text.strip():
        raise InvalidInput("message is empty")
    if "\r" in text:
        text = text.replace("\r\n", "\n").replace("\r", "\n")
    lines = text.count("\n") + 1
    if lines > MAX_TEXT_LINES:
        raise InvalidInput(f"message has {lines} lines, the limit is {MAX_TEXT_LINES}")
    try:
        size = len(text.encode("utf-8"))  # fails only on a lone surrogate
    except UnicodeEncodeError:
        size = len(text.encode("utf-8", "surrogatepass"))
        text = _without_surrogates(text)
    if size > MAX_TEXT_BYTES:
        raise InvalidInput(f"message is {size} bytes long, the limit is {MAX_TEXT_BYTES}")
    return text


def check_reason(reason: str) -> str:
    if len(reason) > MAX_REASON_CHARS:
        raise InvalidInput(
            f"reason is {len(reason)} characters long, the limit is {MAX_REASON_CHARS}"
        )
    return clean_text(reason)


def check_topic(topic: str) -> str:
    topic = topic.strip()
    if len(topic) > MAX_TOPIC_CHARS:
        raise InvalidInput(f"topic is {len(topic)} characters long, the limit is {MAX_TOPIC_CHARS}")
    return clean_text(topic)
