"""Properties of the wire format and of the broker's rules, on inputs hypothesis makes up.

* Every decoder answers any input with a record or a ProtocolError, and every value
  check with a value or InvalidInput: never a KeyError, a TypeError, a UnicodeError.
* Every record the protocol can carry comes back unchanged from encoding and decoding.
* The broker's rules, fed any interleaving of client frames, subscriptions, noise and
  timers, keep their tables consistent and the promises of zchat/broker/rules.py.

No example database (``database=None``): each run explores anew, and a failure prints the
example to rerun. Inputs that once broke src/ and known bugs are at the end.
"""

from __future__ import annotations

import json
import re
import types
import typing
from collections import Counter
from collections.abc import Callable, Iterator, Mapping
from datetime import UTC, datetime, timedelta
from typing import Any

import msgspec
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.stateful import (
    RuleBasedStateMachine,
    initialize,
    invariant,
    precondition,
    rule,
    run_state_machine_as_test,
)

from zchat import protocol as p
from zchat.broker.limits import RateLimit, RuleLimits
from zchat.broker.presence import Session
from zchat.broker.rules import Actions, BrokerRules
from zchat.broker.state import owner_of
from zchat.errors import InvalidInput, ProtocolError
from zchat.protocol import fast
from zchat.protocol.decode import MAX_COUNT, checked_client, checked_server

SETTINGS = settings(max_examples=200, deadline=None, database=None)
START = datetime(2025, 3, 1, 14, 30, 15, tzinfo=UTC)


def token(n: int) -> str:
    return f"{n:032x}"


# --- strategies: valid values, by the documented rules ------------------------------------

TOKENS = st.from_regex(p.TOKEN_RE, fullmatch=True)
NAMES = st.from_regex(r"[A-Za-z0-9_.\-]{1,32}", fullmatch=True)
ROOMS = st.from_regex(r"[a-z0-9_.\-]{1,32}", fullmatch=True)  # canonical, as check_room makes
IDS = st.just("") | st.from_regex(r"[A-Za-z0-9_.\-]{1,64}", fullmatch=True)
MARKS = st.from_regex(p.MARK_RE, fullmatch=True)
COUNTS = st.integers(0, MAX_COUNT)
SECONDS = st.floats(0, 1e9)  # retry_after, rate: numbers of 0 or more
STAMPS = st.datetimes(timezones=st.just(UTC))
TEXTS = st.text(max_size=40)  # encodable: hypothesis makes no lone surrogates here
CLEAN = TEXTS.map(p.clean_text)  # what the decoders make of a text from the broker
REASONS = st.text(max_size=p.MAX_REASON_CHARS).map(p.clean_text)
# any string at all, odd characters often: control characters, DEL and C1, bidi overrides,
# a line separator, lone surrogates, '#' and '/', the Kelvin sign that lower-cases to "k"
ODD_CHARS = "\x00\x1b\t\n\x7f\x9b\u202e\u2066\u2028\ud800\udfff #/Kk\u212a\xe9"
HOSTILE = st.lists(
    st.sampled_from(ODD_CHARS) | st.characters(exclude_categories=()), max_size=20
).map("".join)
LONG_NAMES = st.from_regex(r"[A-Za-z0-9_.\-]{30,40}", fullmatch=True)  # around the limit


def _tuples(items: st.SearchStrategy[Any], max_size: int = 3) -> st.SearchStrategy[Any]:
    return st.lists(items, max_size=max_size).map(tuple)


# Client records leave names, rooms and texts unchecked (the broker answers a bad one),
# so any text goes there; reasons are cut and cleaned by the decoder.
CLIENT_RECORDS: dict[type, st.SearchStrategy[Any]] = {
    p.Join: st.builds(
        p.Join,
        TEXTS,
        TOKENS,
        TOKENS,
        st.lists(TEXTS, min_size=1, max_size=p.MAX_ROOMS_PER_SESSION).map(tuple),
        COUNTS,
        st.dictionaries(TEXTS, COUNTS, max_size=3),
        st.just("") | MARKS,
        st.booleans(),
        TEXTS,  # a password
        st.booleans(),
    ),
    p.Say: st.builds(p.Say, TOKENS, TEXTS, TEXTS, IDS, st.booleans()),
    p.Ping: st.builds(p.Ping, TOKENS, TOKENS),
    p.Leave: st.builds(p.Leave, TOKENS, REASONS),
    p.Enter: st.builds(p.Enter, TOKENS, TEXTS, MARKS, COUNTS),
    p.Part: st.builds(p.Part, TOKENS, TEXTS, REASONS),
    p.Msg: st.builds(p.Msg, TOKENS, TEXTS, TEXTS, IDS),
    p.Nick: st.builds(p.Nick, TOKENS, TEXTS),
    p.SetTopic: st.builds(p.SetTopic, TOKENS, TEXTS, TEXTS),
    p.Who: st.builds(p.Who, TOKENS, TEXTS, IDS, st.just("") | NAMES),
    p.ListRooms: st.builds(p.ListRooms, TOKENS, IDS),
    p.GetHistory: st.builds(p.GetHistory, TOKENS, TEXTS, COUNTS, COUNTS, COUNTS, IDS),
    p.Moderate: st.builds(p.Moderate, TOKENS, st.sampled_from(p.MODERATE_OPS), TEXTS, REASONS, IDS),
    p.Passwd: st.builds(p.Passwd, TOKENS, TEXTS, TEXTS, IDS),
}

# Server records: names valid, rooms canonical, texts clean (the decoder checks the first
# two and cleans the third); codes and epochs are free text.
ROOM_EVENTS: dict[type, st.SearchStrategy[Any]] = {
    p.Chat: st.builds(p.Chat, ROOMS, COUNTS, STAMPS, NAMES, CLEAN, IDS, st.booleans()),
    p.Joined: st.builds(p.Joined, ROOMS, COUNTS, STAMPS, NAMES),
    p.Left: st.builds(p.Left, ROOMS, COUNTS, STAMPS, NAMES, CLEAN),
    p.Renamed: st.builds(p.Renamed, ROOMS, COUNTS, STAMPS, NAMES, NAMES),
    p.TopicChanged: st.builds(p.TopicChanged, ROOMS, COUNTS, STAMPS, NAMES, CLEAN),
}
STATES = st.builds(p.RoomState, COUNTS, _tuples(NAMES), CLEAN, COUNTS)
SERVER_RECORDS: dict[type, st.SearchStrategy[Any]] = {
    **ROOM_EVENTS,
    p.Tail: st.builds(p.Tail, ROOMS, COUNTS),
    p.Crowd: st.builds(p.Crowd, ROOMS, COUNTS, COUNTS, COUNTS),
    p.Welcome: st.builds(p.Welcome, NAMES, TEXTS, st.dictionaries(ROOMS, STATES, max_size=3)),
    p.Refused: st.builds(p.Refused, TEXTS, CLEAN, st.none() | SECONDS),
    p.Error: st.builds(
        p.Error, TEXTS, CLEAN, IDS, st.none() | SECONDS, st.none() | SECONDS, st.none() | COUNTS
    ),
    p.Entered: st.builds(p.Entered, ROOMS, STATES),
    p.Parted: st.builds(p.Parted, ROOMS),
    p.History: st.builds(p.History, ROOMS, _tuples(st.one_of(*ROOM_EVENTS.values())), COUNTS, IDS),
    p.Private: st.builds(p.Private, STAMPS, NAMES, NAMES, CLEAN, IDS),
    p.Members: st.builds(p.Members, ROOMS, _tuples(NAMES), CLEAN, IDS, COUNTS),
    p.RoomList: st.builds(p.RoomList, _tuples(st.builds(p.RoomInfo, ROOMS, COUNTS, CLEAN)), IDS),
    p.NickChanged: st.builds(p.NickChanged, NAMES),
    p.Kicked: st.builds(p.Kicked, CLEAN, CLEAN, st.booleans()),  # by: a name, or the operator
    p.Done: st.builds(p.Done, CLEAN, IDS),
    p.LoggedIn: st.builds(p.LoggedIn, NAMES, COUNTS, st.none() | STAMPS),
    p.Heartbeat: st.builds(p.Heartbeat, TEXTS, STAMPS),
    p.Shutdown: st.builds(p.Shutdown, TEXTS, STAMPS, CLEAN),
}
CLIENT_MESSAGES = st.one_of(*CLIENT_RECORDS.values())
SERVER_MESSAGES = st.one_of(*SERVER_RECORDS.values())


# --- strategies: what a peer may send instead ----------------------------------------------


def json_values(ints: st.SearchStrategy[int]) -> st.SearchStrategy[Any]:
    """Any JSON value: nested lists and objects of any scalars, any strings."""
    scalars = st.none() | st.booleans() | ints | st.floats() | HOSTILE
    return st.recursive(
        scalars,
        lambda inner: st.lists(inner, max_size=3) | st.dictionaries(HOSTILE, inner, max_size=3),
        max_leaves=6,
    )


JSON = json_values(st.integers())
ALL_TYPES = sorted(
    p.CLIENT_TYPES
    | p.ROOM_EVENT_TYPES
    | {"tail", "welcome", "refused", "error", "entered", "parted", "private", "members"}
    | {"renamed", "kicked", "done", "heartbeat", "shutdown"}
)
FIELDS = (
    *("name", "secret", "inbox", "rooms", "history", "since", "mark", "room", "text", "id"),
    *("action", "reason", "to", "after", "before", "limit", "seq", "ts", "sender", "epoch"),
    *("code", "members", "topic", "events", "lost", "by", "banned"),
)
# a value of every JSON kind, each near a rule's edge
ODD_VALUES = [
    *(None, True, False, 0, -1, 2**64, 1.5, float("nan")),
    *("", " ", "x" * 300, "\x1b[2J", "\ud800", "Ab", "#General", "a b", "\u212aitchen", "0" * 32),
    *("2025-13-01T00:00:00.000000Z", [], [""], ["x"] * 40, [1], {}, {"x": -1}, {"x": "y"}),
]
# values a field could almost take: right type, wrong rule, or right rule, wrong type
PLAUSIBLE = st.one_of(
    st.sampled_from(ODD_VALUES),
    JSON,
    TOKENS,
    NAMES,
    ROOMS,
    MARKS,
    st.integers(-2, 2),
    STAMPS.map(p.format_ts),
    st.lists(NAMES | JSON, max_size=3),
    st.dictionaries(ROOMS, COUNTS | JSON, max_size=2),
    st.lists(st.fixed_dictionaries({"room": ROOMS}, optional={"members": COUNTS}), max_size=2),
)
SHAPES = st.fixed_dictionaries(
    {"v": st.just(p.PROTOCOL_VERSION) | JSON, "type": st.sampled_from(ALL_TYPES) | HOSTILE},
    optional=dict.fromkeys(FIELDS, PLAUSIBLE),
)


def _slots(obj: Any) -> Iterator[tuple[Any, Any]]:
    """(container, key) of every value inside a JSON value."""
    items = (
        obj.items() if isinstance(obj, dict) else enumerate(obj) if isinstance(obj, list) else ()
    )
    for key, value in items:
        yield obj, key
        yield from _slots(value)


def changed(obj: Any, index: int, value: Any = ...) -> Any:
    """A copy of ``obj`` whose ``index``-th value inside is replaced (or, for ..., removed)."""
    obj = json.loads(json.dumps(obj))
    container, key = list(_slots(obj))[index]
    if value is ...:
        del container[key]
    else:
        container[key] = value
    return obj


def one_field_changes(obj: Any) -> Iterator[bytes]:
    """``obj`` as frames, each value inside it in turn removed or replaced by each odd value."""
    obj = json.loads(json.dumps(obj))
    for container, key in list(_slots(obj)):
        original = container[key]
        for value in ODD_VALUES:
            container[key] = value
            yield frame_of(obj)
        del container[key]
        yield frame_of(obj)
        if isinstance(container, list):
            container.insert(key, original)
        else:
            container[key] = original


@st.composite
def mutated(draw: st.DrawFn, obj: Any, values: st.SearchStrategy[Any] = PLAUSIBLE) -> Any:
    """``obj`` (a JSON object) with one value somewhere inside removed or replaced."""
    index = draw(st.integers(0, len(list(_slots(obj))) - 1))
    return changed(obj, index, draw(st.just(...) | values))


@st.composite
def spliced(draw: st.DrawFn, frame: bytes) -> bytes:
    """``frame`` with a slice of it replaced by random bytes."""
    start = draw(st.integers(0, len(frame)))
    end = draw(st.integers(start, len(frame)))
    return frame[:start] + draw(st.binary(max_size=8)) + frame[end:]


def frame_of(obj: Any) -> bytes:
    return json.dumps(obj).encode()  # ASCII: lone surrogates travel as \ud800 escapes


def client_body(msg: p.ClientMessage) -> Any:
    return json.loads(p.encode_client(msg)[0])


def server_body(msg: p.ServerMessage) -> Any:
    return json.loads(p.encode_server(b"", msg)[1])


def one(frame: bytes) -> list[bytes]:
    return [frame]


NOISE = st.lists(st.binary(max_size=64), max_size=3)
CLIENT_FRAMES = st.one_of(
    NOISE,
    SHAPES.map(frame_of).map(one),
    CLIENT_MESSAGES.map(client_body).flatmap(mutated).map(frame_of).map(one),
    CLIENT_MESSAGES.flatmap(lambda msg: spliced(p.encode_client(msg)[0])).map(one),
)
SERVER_BODIES = st.one_of(
    SHAPES.map(frame_of),
    SERVER_MESSAGES.map(server_body).flatmap(mutated).map(frame_of),
    SERVER_MESSAGES.flatmap(lambda msg: spliced(p.encode_server(b"", msg)[1])),
)
SERVER_FRAMES = NOISE | st.tuples(st.binary(max_size=16), SERVER_BODIES).map(list)


# --- what a decoded record must look like ---------------------------------------------------


def check_record(record: Any, server: bool) -> None:
    """Fail unless every field of ``record`` has its declared type (ints never negative,
    times in UTC, ids, tokens and marks by their rules) and, from the broker, every name
    valid, every room canonical and every text clean."""
    hints = typing.get_type_hints(type(record))
    for name in record.__struct_fields__:
        _check_value(getattr(record, name), hints[name], name, server)


def _check_value(value: Any, kind: Any, name: str, server: bool) -> None:
    origin, args = typing.get_origin(kind), typing.get_args(kind)
    if isinstance(kind, types.UnionType):
        assert isinstance(value, args), (name, value)
        if value is None:  # an optional field, absent
            return
        [present] = [arg for arg in args if isinstance(value, arg)]
        _check_value(value, present, name, server)
    elif isinstance(kind, type) and issubclass(kind, msgspec.Struct):
        assert isinstance(value, kind), (name, value)
        check_record(value, server)
    elif origin is tuple:
        assert isinstance(value, tuple), (name, value)
        for item in value:
            _check_value(item, args[0], name, server)
    elif origin is Mapping:
        assert isinstance(value, Mapping), (name, value)
        for key, item in value.items():
            _check_value(key, args[0], "room", server)
            _check_value(item, args[1], name, server)
    elif kind is datetime:
        assert isinstance(value, datetime) and value.utcoffset() == timedelta(0), (name, value)
    elif kind is bool or kind is int:
        assert type(value) is kind and 0 <= value <= MAX_COUNT, (name, value)
    elif kind is float:
        assert type(value) is float and 0 <= value < float("inf"), (name, value)
    else:
        assert kind is str and type(value) is str, (name, value)
        _check_text(value, name, server)


def _check_text(value: str, name: str, server: bool) -> None:
    if name == "id":
        assert not value or (len(value) <= p.MAX_ID_CHARS and p.ID_RE.fullmatch(value)), value
    elif name in ("secret", "inbox"):
        assert p.TOKEN_RE.fullmatch(value), value
    elif name == "mark":
        assert not value or p.MARK_RE.fullmatch(value), value
    elif name == "reason":  # cleaned by both decoders, cut to the limit by the client's
        assert p.clean_text(value) == value and (server or len(value) <= p.MAX_REASON_CHARS)
    elif server and name in ("text", "topic", "by"):
        assert p.clean_text(value) == value, (name, value)
    elif name == "op":
        assert value in p.MODERATE_OPS, value
    elif server and name in ("sender", "name", "to", "members"):
        assert p.check_name(value) == value, (name, value)
    elif server and name == "room":
        assert p.check_room(value) == value, value


def check_client_record(msg: Any) -> None:
    assert isinstance(msg, typing.get_args(p.ClientMessage))
    check_record(msg, server=False)
    assert not isinstance(msg, p.Join) or 1 <= len(msg.rooms) <= p.MAX_ROOMS_PER_SESSION


def refused_or(decode: Callable[..., Any], *args: Any) -> Any:
    """What ``decode`` returns, or None for a ProtocolError; anything else escapes."""
    try:
        return decode(*args)
    except ProtocolError:
        return None


# --- the decoders ---------------------------------------------------------------------------


def test_every_record_has_a_strategy() -> None:
    """A new message kind cannot slip past the round trips below."""
    assert set(CLIENT_RECORDS) == set(typing.get_args(p.ClientMessage))
    assert set(SERVER_RECORDS) == set(typing.get_args(p.ServerMessage))


@SETTINGS
@given(CLIENT_FRAMES)
def test_decode_client_returns_a_record_or_raises_protocol_error(frames: list[bytes]) -> None:
    """Noise, JSON objects of any shape and valid frames with one value changed: the
    client decoder answers a well-typed record or a ProtocolError."""
    msg = refused_or(p.decode_client, frames)
    if msg is not None:
        check_client_record(msg)


@SETTINGS
@given(SERVER_FRAMES)
def test_decode_server_returns_a_record_or_raises_protocol_error(frames: list[bytes]) -> None:
    """The same for the server decoder; what it lets through is safe to show: names
    valid, rooms canonical, texts without control characters."""
    decoded = refused_or(p.decode_server, frames)
    if decoded is not None:
        topic, msg = decoded
        assert topic == frames[0]
        assert isinstance(msg, typing.get_args(p.ServerMessage))
        check_record(msg, server=True)


@SETTINGS
@given(
    st.one_of(
        JSON,
        SHAPES,
        st.one_of(*ROOM_EVENTS.values()).map(p.event_body).flatmap(mutated),
    )
)
def test_decode_event_returns_an_event_or_raises_protocol_error(obj: Any) -> None:
    """Room events as stored and as carried in a history: any JSON value in."""
    event = refused_or(p.decode_event, obj)
    if event is not None:
        assert isinstance(event, typing.get_args(p.RoomEvent))
        check_record(event, server=True)


@settings(SETTINGS, max_examples=40)
@given(CLIENT_MESSAGES, SERVER_MESSAGES)
def test_every_one_field_change_is_decoded_or_refused(
    request: p.ClientMessage, answer: p.ServerMessage
) -> None:
    """Each value of a valid frame, in turn, removed or replaced by a value of every JSON
    kind, near a rule's edge: a well-typed record or a ProtocolError, every time."""
    for frame in one_field_changes(client_body(request)):
        msg = refused_or(p.decode_client, [frame])
        if msg is not None:
            check_client_record(msg)
    for frame in one_field_changes(server_body(answer)):
        decoded = refused_or(p.decode_server, [b"x/", frame])
        if decoded is not None:
            check_record(decoded[1], server=True)


@SETTINGS
@given(CLIENT_MESSAGES)
def test_client_messages_survive_a_round_trip(msg: p.ClientMessage) -> None:
    """decode_client(encode_client(m)) == m, for every kind of client message."""
    assert p.decode_client(p.encode_client(msg)) == msg


@SETTINGS
@given(st.binary(max_size=40), SERVER_MESSAGES)
def test_server_messages_survive_a_round_trip(topic: bytes, msg: p.ServerMessage) -> None:
    """decode_server(encode_server(topic, m)) == (topic, m), for every kind."""
    assert p.decode_server(p.encode_server(topic, msg)) == (topic, msg)


@SETTINGS
@given(st.one_of(*ROOM_EVENTS.values()))
def test_room_events_survive_the_store_format(event: p.RoomEvent) -> None:
    """What the store keeps (event_body as JSON) decodes to the event published."""
    assert p.decode_event(json.loads(json.dumps(p.event_body(event)))) == event


@SETTINGS
@given(
    st.one_of(
        HOSTILE,
        st.from_regex(p.TS_RE, fullmatch=True),  # its \\d takes any Unicode digit
        STAMPS.map(p.format_ts),
        st.builds(  # ISO 8601, but not this one's form of it
            datetime.isoformat,
            st.datetimes(timezones=st.none() | st.just(UTC)),
            st.sampled_from("T "),
            st.sampled_from(["auto", "seconds", "milliseconds", "microseconds"]),
        ).map(lambda ts: ts.replace("+00:00", "Z")),
    )
)
def test_parse_ts_accepts_exactly_what_format_ts_writes(value: str) -> None:
    """A timestamp is read back as UTC and written again identically; anything else
    is a ProtocolError."""
    ts = refused_or(p.parse_ts, value)
    if ts is not None:
        assert ts.utcoffset() == timedelta(0)
        assert p.format_ts(ts) == value


@SETTINGS
@given(STAMPS)
def test_timestamps_survive_a_round_trip(ts: datetime) -> None:
    """parse_ts(format_ts(t)) == t, microseconds included."""
    assert p.parse_ts(p.format_ts(ts)) == ts


TOPIC_BYTES = st.binary(max_size=60) | st.builds(
    lambda head, middle, tail: head + middle + tail,
    st.sampled_from([p.ROOM_PREFIX, p.INBOX_PREFIX, p.SYS_TOPIC, b"to", b""]),
    st.one_of(
        st.binary(max_size=40),
        TOKENS.map(str.encode),
        st.builds(p.marker_topic, TOKENS, MARKS).map(lambda topic: topic[3:-1]),
        st.builds("{}/{}".format, TOKENS, HOSTILE).map(
            lambda t: t.encode("utf-8", "surrogatepass")
        ),
        (NAMES | HOSTILE).map(lambda room: room.encode("utf-8", "surrogatepass")),
    ),
    st.sampled_from([b"/", b"", b"//", b"x/", b"x", b"0"]),
)


@SETTINGS
@given(TOPIC_BYTES)
def test_topic_parsers_read_only_exact_topics(topic: bytes) -> None:
    """room_of_topic, inbox_of_topic and marker_of_topic name a value only when the
    topic is exactly the one that value is published on."""
    check_topic_parsers(topic)


def near_misses(topic: bytes) -> Iterator[bytes]:
    """Every prefix of ``topic``, and ``topic``, each followed by a few bytes."""
    for cut in range(len(topic) + 1):
        for tail in (b"", b"/", b"x", b"0", b"x/", b"//"):
            yield topic[:cut] + tail


def check_topic_parsers(topic: bytes) -> None:
    room, inbox, marker = p.room_of_topic(topic), p.inbox_of_topic(topic), p.marker_of_topic(topic)
    if room is not None:
        assert p.check_room(room) == room and p.room_topic(room) == topic
    if inbox is not None:
        assert p.TOKEN_RE.fullmatch(inbox) and p.inbox_topic(inbox) == topic
    if marker is not None:
        assert p.TOKEN_RE.fullmatch(marker[0]) and p.MARK_RE.fullmatch(marker[1])
        assert p.marker_topic(*marker) == topic
    assert [room, inbox, marker].count(None) >= 2  # a topic is one thing at most


@SETTINGS
@given(ROOMS, TOKENS, MARKS)
def test_topic_parsers_refuse_every_near_miss(room: str, inbox: str, mark: str) -> None:
    """Cut short or run on, a valid topic reads as nothing, or as what it now exactly is."""
    for topic in (p.room_topic(room), p.inbox_topic(inbox), p.marker_topic(inbox, mark)):
        for near in near_misses(topic):
            check_topic_parsers(near)


@SETTINGS
@given(ROOMS, ROOMS, TOKENS, TOKENS, MARKS)
def test_topics_round_trip_and_never_cover_one_another(
    room: str, other_room: str, inbox: str, other_inbox: str, mark: str
) -> None:
    """Each topic reads back as what it was made of; SUB's prefix match never lets one
    room see another, nor a room or an inbox see someone else's inbox; inboxes sort last."""
    assert p.room_of_topic(p.room_topic(room)) == room
    assert p.inbox_of_topic(p.inbox_topic(inbox)) == inbox
    assert p.marker_of_topic(p.marker_topic(inbox, mark)) == (inbox, mark)
    theirs = [p.inbox_topic(other_inbox), p.marker_topic(other_inbox, mark)]
    mine = [] if inbox == other_inbox else [p.inbox_topic(inbox)]
    covering = [p.room_topic(room), p.SYS_TOPIC, *mine]
    assert not any(t.startswith(c) for c in covering for t in theirs)
    assert room == other_room or not p.room_topic(other_room).startswith(p.room_topic(room))
    assert p.inbox_topic(inbox) > max(p.room_topic(room), p.SYS_TOPIC)


# --- the value checks -----------------------------------------------------------------------


def checked_or(check: Callable[[str], str], value: str) -> str | None:
    """What ``check`` returns, or None for InvalidInput; anything else escapes."""
    try:
        return check(value)
    except InvalidInput:
        return None


@SETTINGS
@given(HOSTILE | NAMES | LONG_NAMES)
def test_check_name_accepts_exactly_the_documented_names(name: str) -> None:
    """1 to 32 of ASCII letters, digits, '_', '-', '.': returned as given; else InvalidInput."""
    valid = 1 <= len(name) <= p.MAX_NAME_CHARS and all(
        c.isascii() and (c.isalnum() or c in "_.-") for c in name
    )
    assert checked_or(p.check_name, name) == (name if valid else None)


@SETTINGS
@given(
    st.one_of(HOSTILE, ROOMS, NAMES, LONG_NAMES).flatmap(lambda r: st.sampled_from([r, "#" + r]))
)
def test_check_room_returns_the_canonical_form(room: str) -> None:
    """A room's canonical form is lower case without '#', passes its own check unchanged,
    and is what every other spelling of the room becomes."""
    canonical = checked_or(p.check_room, room)
    if canonical is not None:
        assert p.check_room(canonical) == canonical
        assert canonical == room.removeprefix("#").lower()
        assert checked_or(p.check_room, "#" + canonical.upper()) == canonical


@SETTINGS
@given(
    HOSTILE | st.builds(str.__mul__, st.sampled_from(" a\x01é\ud800😀"), st.integers(1000, 4100))
)
def test_check_text_makes_any_accepted_text_encodable(text: str) -> None:
    """Refused: blank texts, texts past MAX_TEXT_BYTES or MAX_TEXT_LINES, nothing else.
    Accepted texts encode to UTF-8 (lone surrogates replaced, CR LF made LF) within the
    limits."""
    checked = checked_or(p.check_text, text)
    size = len(text.encode("utf-8", "surrogatepass"))
    lines = text.replace("\r\n", "\n").replace("\r", "\n").count("\n") + 1
    too_long = size > p.MAX_TEXT_BYTES or lines > p.MAX_TEXT_LINES
    assert (checked is None) == (not text.strip() or too_long)
    text = text.replace("\r\n", "\n").replace("\r", "\n")
    size = len(text.encode("utf-8", "surrogatepass"))
    if checked is not None:
        assert len(checked.encode("utf-8")) == size


@SETTINGS
@given(HOSTILE | st.builds(str.__mul__, st.sampled_from(" a\x1b"), st.integers(190, 310)))
def test_reasons_and_topics_come_back_clean_and_within_limits(value: str) -> None:
    """check_reason and check_topic return clean text within their limits, and refuse
    only what is past them (a topic's surrounding blanks do not count)."""
    for check, limit, kept in [
        (p.check_reason, p.MAX_REASON_CHARS, value),
        (p.check_topic, p.MAX_TOPIC_CHARS, value.strip()),
    ]:
        checked = checked_or(check, value)
        assert (checked is None) == (len(kept) > limit)
        if checked is not None:
            assert checked == p.clean_text(kept)


# what could steer a terminal or break encoding: C0, DEL, C1, bidi overrides and isolates,
# lone surrogates (a tab becomes a space)
STEERING = re.compile("[\x00-\x1f\x7f-\x9f\u202a-\u202e\u2066-\u2069\ud800-\udfff]")


@SETTINGS
@given(HOSTILE)
def test_clean_text_leaves_nothing_that_steers_a_terminal(text: str) -> None:
    """Character for character, nothing that steers a terminal is left; cleaning twice
    changes nothing; printable text is left alone."""
    clean = p.clean_text(text)
    assert len(clean) == len(text)
    assert not STEERING.search(clean)
    assert p.clean_text(clean) == clean
    assert clean == text or not text.isprintable()


# --- the broker's rules ---------------------------------------------------------------------

USERS = ("Alice", "Bob", "Carol")  # peer n's key, in secure mode
ADMINS = frozenset({"alice"})
PEERS = st.integers(0, len(USERS) - 1)
ADDRESSES = ("127.0.0.1", "127.0.0.1", "10.0.0.3")  # peer n's address: two share one
# small enough to be reached: waiting JOINs, and rooms made from one address
LIMITS = RuleLimits(pending_joins=4, pending_joins_per_address=2, new_rooms=RateLimit(0.5, 3))
JOIN_NAMES = st.sampled_from(("Alice", "alice", "Bob", "Carol", "Dave", "no one", "n" * 33))
ROOM_NAMES = st.sampled_from(("general", "dev", "#Dev", "ops", "no way", "r" * 33))
HERE = st.sampled_from(("general", "#General", "dev")) | ROOM_NAMES  # mostly rooms in use
THEM = st.sampled_from(USERS) | JOIN_NAMES  # mostly people who may be here
LINES = st.text(max_size=12) | st.sampled_from(("hi", "  ", "\x1b[2J", "a\u202eb", "x" * 5000))
REASON_LINES = st.sampled_from(("", "bye", "\x1b]0;owned\x07", "y" * 300))
SEQS = st.integers(0, 30) | st.sampled_from([MAX_COUNT, MAX_COUNT + 1])
BROKER_VALUES = st.one_of(
    st.sampled_from(ODD_VALUES),
    st.sampled_from(["general", "#Dev", "Alice", "alice"]),
    json_values(st.integers()),
)
SUBSCRIPTIONS = st.binary(max_size=40) | st.builds(
    bytes.__add__, st.sampled_from([b"\x00", b"\x01"]), TOPIC_BYTES
)


def published(actions: Actions, kind: type) -> list[tuple[bytes, Any]]:
    """The (topic, record) published of one kind."""
    out = [p.decode_server(frames) for frames in actions.publish]
    return [(topic, msg) for topic, msg in out if isinstance(msg, kind)]


@st.composite
def mutated_broker(draw: st.DrawFn, obj: Any) -> Any:
    """``obj`` with one value inside removed or replaced by one of BROKER_VALUES."""
    return draw(mutated(obj, BROKER_VALUES))


def check_presence(rules: BrokerRules) -> None:
    """by_secret, by_inbox and by_name hold the same sessions; each session is a member of
    exactly its rooms; no empty room is kept; in secure mode a session's name is its key's."""
    presence = rules.presence
    sessions = list(presence.by_secret.values())
    assert len(presence.by_inbox) == len(presence.by_name) == len(sessions)
    for s in sessions:
        assert presence.by_secret[s.secret] is s and presence.by_inbox[s.inbox] is s
        assert presence.by_name[s.name.lower()] is s and p.check_name(s.name) == s.name
        assert len(set(s.rooms)) == len(s.rooms) <= p.MAX_ROOMS_PER_SESSION
        assert all(presence.rooms[room].members[s.name.lower()] == s.name for room in s.rooms)
        if rules.policy.secure:
            assert s.name == s.user and s.admin == rules.policy.is_admin(s.name)
    for name, room in presence.rooms.items():
        assert room.members, f"empty room {name} kept"
        for key, member in room.members.items():
            assert presence.by_name[key].name == member and name in presence.by_name[key].rooms


def secret(n: int) -> str:
    return token(0x100 + n)


def inbox(n: int) -> str:
    return token(0x200 + n)


class BrokerMachine(RuleBasedStateMachine):
    """Three peers, each with its own secret, inbox and (in secure mode) key, send what
    clients send, in any order, mixed with noise, mutated frames, other peers' inboxes,
    subscriptions and the passing of time. Each step's output is checked as it comes
    out, the broker's tables after every step."""

    secure = False

    def __init__(self) -> None:
        super().__init__()
        self.now = 0.0
        self.rules = BrokerRules(
            "epoch1",
            clock=lambda: START + timedelta(seconds=self.now),
            secure=self.secure,
            admins=ADMINS,
            limit=RateLimit(rate=2.0, burst=12),  # low enough to be reached now and then
            limits=LIMITS,
        )
        self.sent: list[bytes] = []  # valid frames, for mutating
        self.last_seq: dict[str, int] = {}  # room -> the last seq published in it
        self.published: dict[tuple[str, int], p.RoomEvent] = {}
        self.announced: dict[str, set[str]] = {}  # room -> who its events put there

    def teardown(self) -> None:
        self.rules.store.close()

    def user(self, n: int | None) -> str | None:
        return USERS[n] if self.secure and n is not None else None

    def send(self, n: int, msg: p.ClientMessage, keep: bool = True) -> Actions:
        """Peer n sends ``msg``: answers go to the inbox it names, or to its session's."""
        frames = p.encode_client(msg)
        if keep:
            self.sent.append(frames[0])
        session = self.rules.presence.by_secret.get(msg.secret)
        reply_to = session.inbox if session else inbox(n)
        if isinstance(msg, p.Join | p.Ping):
            reply_to = msg.inbox
        actions = self.rules.on_inbound(frames, ADDRESSES[n], self.now, self.user(n))
        self.check(actions, reply_to, self.user(n))
        return actions

    def subscribe(self, data: bytes, by: int | None, trusted: bool = True) -> Actions:
        """A (un)subscription by peer ``by``; an untrusted one (the socket could not say
        whose it was) is never applied."""
        topic = data[1:]
        named = p.inbox_of_topic(topic) or (p.marker_of_topic(topic) or (None,))[0]
        actions = self.rules.on_subscription(data, self.now, self.user(by), trusted)
        assert trusted or actions.subscribe == []
        self.check(actions, named, self.user(by))
        return actions

    def foreign(self, holder: Session | None, by: int | None) -> bool:
        """Secure mode: is ``holder`` a session of another key than peer ``by``'s?"""
        return self.secure and holder is not None and by is not None and holder.user != USERS[by]

    # --- what peers do -------------------------------------------------------------------

    @rule(
        n=PEERS,
        name=JOIN_NAMES,
        rooms=st.lists(ROOM_NAMES, min_size=1, max_size=3),
        history=st.integers(0, 3),
        since=st.dictionaries(ROOM_NAMES, SEQS, max_size=2),
        mark=st.sampled_from(("", "m1")),
    )
    def join(
        self, n: int, name: str, rooms: list[str], history: int, since: dict[str, int], mark: str
    ) -> None:
        self.send(n, p.Join(name, secret(n), inbox(n), tuple(rooms), history, since, mark))

    @rule(n=PEERS, rooms=st.lists(ROOM_NAMES, min_size=1, max_size=2))
    def arrive(self, n: int, rooms: list[str]) -> None:
        """Both halves of a join under the peer's own name, as a client sends them."""
        self.subscribe(b"\x01" + p.inbox_topic(inbox(n)), n)
        self.join(n, USERS[n], rooms, 2, {}, "")

    @rule(n=PEERS, k=st.integers(0, 5), rooms=st.lists(ROOM_NAMES, min_size=1, max_size=3))
    def stray_join(self, n: int, k: int, rooms: list[str]) -> None:
        """A JOIN on an inbox of its own that is never subscribed: it waits, and pushes
        out older ones past the limits."""
        stray = p.Join(USERS[n], token(0x300 + k), token(0x400 + k), tuple(rooms), 0)
        frames = p.encode_client(stray)
        self.rules.on_inbound(frames, ADDRESSES[n], self.now, self.user(n))

    @initialize(peers=st.integers(0, len(USERS)))
    def some_arrive(self, peers: int) -> None:
        """Most steps are worth more with people in the rooms already."""
        for n in range(peers):
            self.arrive(n, ["general"])

    @rule(n=PEERS, room=HERE, text=LINES, action=st.booleans())
    def say(self, n: int, room: str, text: str, action: bool) -> None:
        self.send(n, p.Say(secret(n), room, text, "s1", action))

    @rule(thief=PEERS, victim=PEERS, room=HERE, text=LINES)
    def say_with_someone_elses_secret(self, thief: int, victim: int, room: str, text: str) -> None:
        """In secure mode a session's requests are taken only from its own key."""
        holder = self.rules.presence.by_secret.get(secret(victim))
        actions = self.send(thief, p.Say(secret(victim), room, text), keep=False)
        if self.foreign(holder, thief):
            assert actions == Actions()

    @rule(n=PEERS, to=THEM, text=LINES)
    def msg(self, n: int, to: str, text: str) -> None:
        """A DM goes to its recipient's inbox and its sender's, from the sender's name."""
        dms = published(self.send(n, p.Msg(secret(n), to, text, "d1")), p.Private)
        if dms:
            presence = self.rules.presence
            sender, recipient = presence.by_secret[secret(n)], presence.holder(to)
            assert recipient is not None and all(dm.sender == sender.name for _, dm in dms)
            parties = {p.inbox_topic(sender.inbox), p.inbox_topic(recipient.inbox)}
            assert {topic for topic, _ in dms} == parties and len(dms) == len(parties)

    @rule(n=PEERS, room=ROOM_NAMES, mark=st.sampled_from(("m1", "m2")), history=SEQS)
    def enter(self, n: int, room: str, mark: str, history: int) -> None:
        self.send(n, p.Enter(secret(n), room, mark, history))

    @rule(n=PEERS, room=ROOM_NAMES, mark=st.sampled_from(("m1", "m2")))
    def enter_and_mark(self, n: int, room: str, mark: str) -> None:
        """An enter, then its marker, as a client sends them."""
        self.enter(n, room, mark, 2)
        self.subscribe(b"\x01" + p.marker_topic(inbox(n), mark), n)

    @rule(n=PEERS, room=HERE, reason=REASON_LINES)
    def part(self, n: int, room: str, reason: str) -> None:
        self.send(n, p.Part(secret(n), room, reason))

    @rule(n=PEERS, name=JOIN_NAMES)
    def nick(self, n: int, name: str) -> None:
        self.send(n, p.Nick(secret(n), name))

    @rule(n=PEERS, room=HERE, text=LINES)
    def set_topic(self, n: int, room: str, text: str) -> None:
        self.send(n, p.SetTopic(secret(n), room, text))

    @rule(
        n=PEERS,
        room=ROOM_NAMES,
        after=SEQS,
        before=SEQS,
        limit=st.integers(0, 5),
        kind=st.sampled_from(("who", "rooms", "history")),
    )
    def ask(self, n: int, room: str, after: int, before: int, limit: int, kind: str) -> None:
        question = {
            "who": p.Who(secret(n), room, "q1"),
            "rooms": p.ListRooms(secret(n), "q1"),
            "history": p.GetHistory(secret(n), room, after, before, limit, "q1"),
        }
        self.send(n, question[kind])

    @rule(n=PEERS, op=st.sampled_from(p.MODERATE_OPS), name=THEM, reason=REASON_LINES)
    def moderate(self, n: int, op: str, name: str, reason: str) -> None:
        """Only an admin, in secure mode, kicks; whoever is kicked is gone."""
        kicked = published(self.send(n, p.Moderate(secret(n), op, name, reason, "k1")), p.Kicked)
        assert not kicked or (self.secure and USERS[n].lower() in ADMINS)
        for topic, _ in kicked:
            assert p.inbox_of_topic(topic) not in self.rules.presence.by_inbox

    @rule(n=PEERS, reason=REASON_LINES)
    def leave(self, n: int, reason: str) -> None:
        self.send(n, p.Leave(secret(n), reason))

    @rule(n=PEERS, m=PEERS)
    def ping(self, n: int, m: int) -> None:
        """Pings, some naming another peer's inbox."""
        self.send(n, p.Ping(secret(n), inbox(m)))

    @rule(
        n=PEERS,
        by=PEERS | st.none(),
        on=st.booleans(),
        what=st.sampled_from(("inbox", "m1", "m2", "general", "dev", "everything")),
    )
    def subscription(self, n: int, by: int | None, on: bool, what: str) -> None:
        """(Un)subscriptions to n's inbox or markers, to a room or to everything, by n or
        someone else (None: a closed connection's unsubscription, which carries no key)."""
        by = n if by is None and on else by
        topics = {"inbox": p.inbox_topic(inbox(n)), "general": p.room_topic("general")}
        topics |= {"dev": p.room_topic("dev"), "everything": b""}
        topic = topics[what] if what in topics else p.marker_topic(inbox(n), what)
        holder = self.rules.presence.by_inbox.get(inbox(n))
        self.subscribe((b"\x01" if on else b"\x00") + topic, by)
        if self.foreign(holder, by):
            assert self.rules.presence.by_inbox.get(inbox(n)) is holder, "another key ended it"

    @rule(n=PEERS, m=PEERS, what=st.sampled_from(("subscribe", "unsubscribe", "mark", "ping")))
    def intrude(self, n: int, m: int, what: str) -> None:
        """Peer m uses peer n's inbox. In secure mode, while another key holds it, nothing
        of it is applied or heeded, and nothing is sent to it."""
        holder = self.rules.presence.by_inbox.get(inbox(n))
        rooms = holder and list(holder.rooms)
        if what == "ping":
            actions = self.send(m, p.Ping(secret(m), inbox(n)), keep=False)
        else:
            data = {"subscribe": b"\x01", "unsubscribe": b"\x00", "mark": b"\x01"}[what]
            topic = p.marker_topic(inbox(n), "m1") if what == "mark" else p.inbox_topic(inbox(n))
            actions = self.subscribe(data + topic, m)
        if self.foreign(holder, m):
            assert actions.subscribe == [] and actions.publish == []
            assert holder is not None and holder is self.rules.presence.by_inbox.get(inbox(n))
            assert holder.rooms == rooms

    @rule(n=PEERS, m=PEERS)
    def join_with_someone_elses_inbox(self, n: int, m: int) -> None:
        """In secure mode an inbox is its key's; in open mode a free one may be taken, but
        a JOIN may not share its secret with another waiting JOIN."""
        holder = self.rules.presence.by_inbox.get(inbox(n))
        join = p.Join(USERS[m], secret(m), inbox(n), ("general",))
        actions = self.send(m, join, keep=False)
        if self.foreign(holder, m):
            assert actions == Actions()

    # --- what nobody should send, and time ------------------------------------------------

    @rule(
        n=PEERS,
        cut=st.integers(0, 36),
        tail=st.sampled_from([b"", b"x", b"/", b"x/", b"m1/"]),
        on=st.booleans(),
    )
    def subscription_near_an_inbox(self, n: int, cut: int, tail: bytes, on: bool) -> None:
        """Topics that start like n's inbox topic, and topics that go on after it."""
        self.subscribe((b"\x01" if on else b"\x00") + p.inbox_topic(inbox(n))[:cut] + tail, n)

    @rule(data=SUBSCRIPTIONS, by=PEERS | st.none(), trusted=st.booleans())
    def raw_subscription(self, data: bytes, by: int | None, trusted: bool) -> None:
        self.subscribe(data, by, trusted)

    @rule(frames=NOISE, by=PEERS | st.none())
    def noise(self, frames: list[bytes], by: int | None) -> None:
        self.check(self.rules.on_inbound(frames, None, self.now, self.user(by)), None)

    @precondition(lambda self: self.sent)
    @rule(data=st.data(), by=PEERS)
    def mutated_frame(self, data: st.DataObject, by: int) -> None:
        """A frame a peer sent, with one value in it removed or replaced."""
        obj = data.draw(st.sampled_from(self.sent).map(json.loads).flatmap(mutated_broker))
        actions = self.rules.on_inbound([frame_of(obj)], None, self.now, self.user(by))
        self.check(actions, None, self.user(by))

    @rule(seconds=st.sampled_from((0.5, 2.0, 4.0, 11.0)))
    def tick(self, seconds: float) -> None:
        self.now += seconds
        self.check(self.rules.heartbeat(self.now), None)
        self.check(self.rules.expire(self.now), None)

    # --- what comes out of each step -----------------------------------------------------

    def check(self, actions: Actions, reply_to: str | None, user: str | None = None) -> None:
        """``reply_to``: the one inbox answers may go to, if known."""
        for topic in actions.subscribe:
            assert topic, "'' applied as is: it covers every inbox"
            if p.INBOX_PREFIX.startswith(topic) or topic.startswith(p.INBOX_PREFIX):
                token_ = p.inbox_of_topic(topic)
                assert token_ is not None, f"{topic!r} applied: it covers inboxes it does not name"
                holder = self.rules.presence.by_inbox.get(token_)
                assert not self.secure or holder is None or holder.user == user, "key's inbox"
        for frames in actions.publish:
            topic, msg = p.decode_server(frames)
            self.check_published(topic, msg, reply_to)

    def check_published(self, topic: bytes, msg: p.ServerMessage, reply_to: str | None) -> None:
        presence = self.rules.presence
        match msg:
            case p.Chat() | p.Joined() | p.Left() | p.Renamed() | p.TopicChanged():
                assert topic == p.room_topic(msg.room)
                assert msg.seq == self.last_seq.get(msg.room, 0) + 1, "a seq skipped or repeated"
                self.last_seq[msg.room] = msg.seq
                self.published[msg.room, msg.seq] = msg
                stored, _ = self.rules.store.history(msg.room, msg.seq - 1, msg.seq + 1, 1)
                assert stored == [msg], "published unlike stored"
                self.announce(msg)
            case p.Tail(room, seq):
                assert topic == p.room_topic(room) and seq == self.last_seq[room]
            case p.Heartbeat() | p.Shutdown():
                assert topic == p.SYS_TOPIC
            case p.Private(_, sender, to):
                parties = [presence.holder(sender), presence.holder(to)]
                assert topic in {p.inbox_topic(s.inbox) for s in parties if s}, "a DM went astray"
            case p.Kicked():
                assert self.secure and p.inbox_of_topic(topic) is not None
            case _:
                assert p.inbox_of_topic(topic) is not None
                assert reply_to is None or topic == p.inbox_topic(reply_to), msg
                self.check_answer(topic, msg)

    def check_answer(self, topic: bytes, msg: p.ServerMessage) -> None:
        """Answers tell the state of rooms as the published events built it."""
        presence = self.rules.presence
        match msg:
            case p.Welcome(name, _, rooms):
                session = presence.holder(name)
                assert session is not None and p.inbox_topic(session.inbox) == topic
                for room, state in rooms.items():
                    assert state.seq == self.last_seq.get(room, 0)
                    assert set(state.members) == self.announced.get(room, set()) | {name}
            case p.Entered(room, state):
                session = presence.by_inbox[p.inbox_of_topic(topic) or ""]
                assert state.seq == self.last_seq.get(room, 0)
                assert set(state.members) == self.announced.get(room, set()) | {session.name}
            case p.Members(room, members):
                assert set(members) == self.announced.get(room, set())
            case p.RoomList(rooms):
                listed = {info.room: info.members for info in rooms}
                assert listed == {r: len(names) for r, names in self.announced.items() if names}
            case p.History(room, events):
                assert [e.seq for e in events] == sorted({e.seq for e in events})
                assert all(self.published[room, e.seq] == e for e in events)

    def announce(self, event: p.RoomEvent) -> None:
        here = self.announced.setdefault(event.room, set())
        match event:
            case p.Joined(sender=sender):
                assert sender not in here, "announced twice"
                here.add(sender)
            case p.Left(sender=sender):
                assert sender in here, "left without having joined"
                here.remove(sender)
            case p.Renamed(sender=old, name=new):
                # (a NICK to one's own name is announced too)
                assert old in here and (new == old or new not in here), "renamed: who?"
                here.remove(old)
                here.add(new)

    # --- the broker's tables --------------------------------------------------------------

    @invariant()
    def presence_tables_agree(self) -> None:
        """See check_presence."""
        check_presence(self.rules)

    @invariant()
    def waiting_joins_and_new_rooms_keep_their_limits(self) -> None:
        """Waiting JOINs within both bounds, counted right per owner (a key, or an
        address); budgets never overdrawn; each session draws on its owner's bucket."""
        rules = self.rules
        waiting = Counter(owner_of(w.user, w.peer) for w in rules._pending.values())
        assert waiting == rules._pending_by_peer
        assert len(rules._pending) <= LIMITS.pending_joins
        assert max(waiting.values(), default=0) <= LIMITS.pending_joins_per_address
        for bucket in rules._new_rooms.values():
            assert 0 <= bucket.tokens <= LIMITS.new_rooms.burst
        for session in rules.sessions:
            assert session.shared is rules._shared[owner_of(session.user, session.peer)]
        for bucket in rules._shared.values():
            assert 0 <= bucket.tokens <= rules.shared_limit.burst

    @invariant()
    def rooms_are_what_their_events_say(self) -> None:
        """Each room's seq is the last one published, in the store too; its members are
        exactly those its joins, leaves and renames announced."""
        for room, seq in self.last_seq.items():
            assert self.rules.store.room_state(room)[0] == seq
        for name, room in self.rules.presence.rooms.items():
            assert room.seq == self.last_seq.get(name, 0)
        for room in self.announced.keys() | self.rules.presence.rooms.keys():
            assert self.rules.members(room) == sorted(self.announced.get(room, ()))


class SecureBrokerMachine(BrokerMachine):
    secure = True


@pytest.mark.parametrize("machine", [BrokerMachine, SecureBrokerMachine], ids=["open", "secure"])
def test_broker_rules_keep_their_promises_whatever_arrives(
    machine: type[BrokerMachine],
) -> None:
    """Nothing raises; everything published decodes, on the right topic; seqs count up by
    one per room, as stored; answers agree with the events published; no applied
    subscription covers an inbox it does not name exactly; a DM reaches only its two
    parties' inboxes; the presence tables agree (see BrokerMachine)."""
    run_state_machine_as_test(
        machine,
        settings=settings(max_examples=100, stateful_step_count=40, deadline=None, database=None),
    )


# --- inputs that broke the rules ------------------------------------------------------------


def arrived(rules: BrokerRules, n: int) -> None:
    rules.on_subscription(b"\x01" + p.inbox_topic(inbox(n)), 0.0)
    rules.on_inbound(p.encode_client(p.Join(USERS[n], secret(n), inbox(n), ("general",))), None, 0)


@pytest.mark.parametrize("frames", [[b"[" * 30_000], [b"sys/", b"[" * 30_000]])
def test_deeply_nested_json_is_a_protocol_error(frames: list[bytes]) -> None:
    """A frame of 30,000 '[' (under MAX_FRAME_BYTES) is bad JSON like any other; json's
    RecursionError used to escape the decoders."""
    with pytest.raises(ProtocolError):
        (p.decode_client if len(frames) == 1 else p.decode_server)(frames)


def test_a_history_request_past_64_bits_is_handled() -> None:
    """GetHistory(after=2**63) used to raise OverflowError (SQLite) out of on_inbound, and
    leave an empty room behind in the presence tables."""
    rules = BrokerRules("epoch1", clock=lambda: START)
    arrived(rules, 0)
    ask = p.GetHistory(secret(0), "dev", after=2**63, id="q1")
    out = rules.on_inbound(p.encode_client(ask), None, 1.0)
    assert all(frames[0] == p.inbox_topic(inbox(0)) for frames in out.publish)
    check_presence(rules)


def test_a_rejoin_since_past_64_bits_is_handled() -> None:
    """Join(since={"general": 2**63}) used to raise OverflowError once both halves were in,
    after the session was put in the room: it was in, but neither welcomed nor announced."""
    rules = BrokerRules("epoch1", clock=lambda: START)
    join = p.Join("Alice", secret(0), inbox(0), ("general",), since={"general": 2**63})
    rules.on_inbound(p.encode_client(join), None, 0.0)
    out = rules.on_subscription(b"\x01" + p.inbox_topic(inbox(0)), 0.0)
    welcomed = any(isinstance(p.decode_server(frames)[1], p.Welcome) for frames in out.publish)
    assert welcomed == bool(rules.sessions)
    check_presence(rules)


# --- bugs the machine found, kept as plain examples ---------------------------------------


@pytest.mark.parametrize("unsubscriber", [None, "Bob"], ids=["connection-closed", "owner"])
def test_a_waiting_join_keeps_its_inbox_for_its_key(unsubscriber: str | None) -> None:
    """Secure mode: Bob's JOIN waits for its inbox subscription, and makes Bob's key the
    inbox's owner. An unsubscription of that inbox (Bob's, or one without a key) once
    forgot the owner but not the JOIN: Alice's key could then subscribe to the inbox,
    complete Bob's JOIN, and read Bob's WELCOME and all that was sent to Bob after it."""
    rules = BrokerRules("epoch1", clock=lambda: START, secure=True)
    bob = p.Join("Bob", secret(1), inbox(1), ("general",))
    rules.on_inbound(p.encode_client(bob), None, 0.0, user="Bob")
    rules.on_subscription(b"\x00" + p.inbox_topic(inbox(1)), 0.1, user=unsubscriber)
    out = rules.on_subscription(b"\x01" + p.inbox_topic(inbox(1)), 0.2, user="Alice")
    assert out.subscribe == [] and published(out, p.Welcome) == []


def test_two_joins_with_one_secret_make_one_session_at_most() -> None:
    """Two JOINs with one secret and two inboxes, both waiting for their subscription,
    once both completed: by_secret kept one of the two sessions, ending the other
    deleted the first's entry, and ending the first raised KeyError. Now the second
    JOIN is refused while the first waits."""
    rules = BrokerRules("epoch1", clock=lambda: START)
    for n in (0, 1):
        join = p.Join(USERS[n], secret(0), inbox(n), ("general",))
        rules.on_inbound(p.encode_client(join), None, 0.0)
    for n in (0, 1):
        rules.on_subscription(b"\x01" + p.inbox_topic(inbox(n)), 0.0)
    assert [s.name for s in rules.sessions] == [USERS[0]]
    for n in (0, 1):
        rules.on_subscription(b"\x00" + p.inbox_topic(inbox(n)), 1.0)
    assert rules.sessions == []


@st.composite
def common_frames(draw: st.DrawFn) -> bytes:
    """A room event, tail or heartbeat as the broker may publish it, every field valid
    but for one, maybe, that is odd: another type, or a hostile string; texts hostile."""
    valid: dict[str, st.SearchStrategy[Any]] = {
        "v": st.just(1),
        "type": st.just("message"),
        "room": ROOMS,
        "seq": COUNTS,
        "ts": STAMPS.map(p.format_ts),
        "sender": NAMES,
        "text": HOSTILE,
        "reason": HOSTILE,
        "name": NAMES,
        "id": IDS,
        "epoch": TEXTS,
    }
    odd = draw(st.sampled_from([None, *valid]))
    obj = {
        key: draw(HOSTILE | st.sampled_from(ODD_VALUES)) if key == odd else draw(value)
        for key, value in valid.items()
    }
    kinds = ["message", "action", "join", "leave", "nick", "topic", "tail", "heartbeat"]
    obj["type"] = draw(st.sampled_from(kinds)) if odd != "type" else obj["type"]
    return frame_of(obj)


@SETTINGS
@given(common_frames() | SERVER_BODIES | SERVER_MESSAGES.map(lambda m: p.encode_server(b"", m)[1]))
def test_the_fast_way_decodes_a_published_frame_as_the_checked_way(frame: bytes) -> None:
    """The frames decoded in C (room events, tails, heartbeats) come out exactly as the
    checked decoder makes them; any other frame is left to it."""
    quick = fast.published(frame)
    if quick is not None:
        assert quick == checked_server(frame)


@settings(SETTINGS, max_examples=1000)
@given(common_frames())
def test_the_fast_way_decodes_common_frames_as_the_checked_way(frame: bytes) -> None:
    quick = fast.published(frame)
    if quick is not None:
        assert quick == checked_server(frame)


@SETTINGS
@given(CLIENT_FRAMES | CLIENT_MESSAGES.map(p.encode_client))
def test_the_fast_way_decodes_a_pushed_frame_as_the_checked_way(frames: list[bytes]) -> None:
    if len(frames) == 1 and (quick := fast.pushed(frames[0])) is not None:
        assert quick == checked_client(frames[0])


def test_the_fast_way_takes_the_common_frames() -> None:
    """Not a speed test: the kinds meant to be decoded in C are."""
    ts = datetime(2025, 3, 1, 14, 30, 15, 123456, tzinfo=UTC)
    events = [
        p.Chat("general", 1, ts, "Alice", "hi", "m1"),
        p.Chat("general", 2, ts, "Alice", "waves", "", action=True),
        p.Joined("dev", 3, ts, "Bob"),
        p.Left("dev", 4, ts, "Bob", "quit: bye"),
        p.Renamed("dev", 5, ts, "Bob", "Robert"),
        p.TopicChanged("dev", 6, ts, "Robert", "builds"),
        p.Tail("general", 3),
        p.Heartbeat("e1", ts),
    ]
    for event in events:
        assert fast.published(p.encode_server(b"", event)[1]) == event
    for msg in [p.Say("ab" * 16, "general", "hi", "m1"), p.Ping("ab" * 16, "cd" * 16)]:
        assert fast.pushed(p.encode_client(msg)[0]) == msg
    good = json.loads(p.encode_server(b"", events[0])[1])
    for field, value in [
        ("v", True),
        ("v", 2),
        ("seq", MAX_COUNT + 1),
        ("seq", -1),
        ("ts", "2025-03-01T14:30:15Z"),
        ("ts", "2025-13-01T14:30:15.000000Z"),
        ("sender", "a b"),
        ("room", "a/b"),
        ("id", "a b"),
        ("text", None),
    ]:
        assert fast.published(frame_of({**good, field: value})) is None, (field, value)
    deep = frame_of({**good, "text": "x"})[:-1] + b', "deep": ' + b"[" * 100_000 + b"}"
    assert fast.published(deep) is None  # too deeply nested for msgspec: not its to say
    assert fast.pushed(deep) is None
    not_utf8 = frame_of(good)[:-1] + b', "\x80": 1}'  # in a field nobody reads
    assert fast.published(not_utf8) is None
    said = fast.published(frame_of({**good, "text": "\x1b[2J", "room": "General"}))
    assert said == p.Chat("general", 1, ts, "Alice", "\ufffd[2J", "m1")
