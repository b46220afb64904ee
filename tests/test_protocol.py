"""The wire format, as tables of (record, exact JSON) and (bad frame, error code)."""

from __future__ import annotations

import json
from datetime import UTC, datetime

import pytest

from zchat import protocol as p
from zchat.errors import InvalidInput, ProtocolError

S = "0123456789abcdef" * 2  # a valid secret / inbox token
TS = datetime(2025, 3, 1, 14, 30, 15, 123456, tzinfo=UTC)
TS_WIRE = "2025-03-01T14:30:15.123456Z"

CLIENT_CASES = [
    (
        p.Join("Alice", S, S, ("general", "dev")),
        {
            "type": "join",
            "name": "Alice",
            "secret": S,
            "inbox": S,
            "rooms": ["general", "dev"],
            "history": 50,
            "since": {},
            "mark": "",
        },
    ),
    (
        p.Join("ci", S, S, ("ops",), 0, {"ops": 7}, "j1", quiet=True),
        {
            "type": "join",
            "name": "ci",
            "secret": S,
            "inbox": S,
            "rooms": ["ops"],
            "history": 0,
            "since": {"ops": 7},
            "mark": "j1",
            "quiet": True,
        },
    ),
    (
        p.Say(S, "general", "Halo semua!", "m1"),
        {"type": "say", "secret": S, "room": "general", "text": "Halo semua!", "id": "m1"},
    ),
    (p.Ping(S, S), {"type": "ping", "secret": S, "inbox": S}),
    (p.Leave(S, "bye"), {"type": "leave", "secret": S, "reason": "bye"}),
]

SERVER_CASES = [
    (
        b"room/general/",
        p.Chat("general", 7, TS, "Alice", "hi", "m1"),
        {
            "type": "message",
            "room": "general",
            "seq": 7,
            "ts": TS_WIRE,
            "sender": "Alice",
            "text": "hi",
            "id": "m1",
        },
    ),
    (
        b"room/general/",
        p.Joined("general", 1, TS, "Bob"),
        {"type": "join", "room": "general", "seq": 1, "ts": TS_WIRE, "sender": "Bob"},
    ),
    (
        b"room/general/",
        p.Left("general", 2, TS, "Bob", "quit: bye"),
        {
            "type": "leave",
            "room": "general",
            "seq": 2,
            "ts": TS_WIRE,
            "sender": "Bob",
            "reason": "quit: bye",
        },
    ),
    (
        b"to/" + S.encode() + b"/",
        p.Welcome("Alice", "e1", {"general": p.RoomState(3, ("Alice", "Bob"))}),
        {
            "type": "welcome",
            "name": "Alice",
            "epoch": "e1",
            "rooms": {"general": {"seq": 3, "members": ["Alice", "Bob"], "topic": ""}},
        },
    ),
    (
        b"to/x/",
        p.Refused("name-taken", "name 'alice' is taken"),
        {"type": "refused", "code": "name-taken", "text": "name 'alice' is taken"},
    ),
    (
        b"to/x/",
        p.Error("bad-text", "too long", "m2"),
        {"type": "error", "code": "bad-text", "text": "too long", "id": "m2"},
    ),
    (
        b"to/x/",
        p.Error("rate-limited", "slow down", "m9", retry_after=0.05, rate=20.0, burst=50),
        {
            "type": "error",
            "code": "rate-limited",
            "text": "slow down",
            "id": "m9",
            "retry_after": 0.05,
            "rate": 20.0,
            "burst": 50,
        },
    ),
    (b"sys/", p.Heartbeat("e1", TS), {"type": "heartbeat", "epoch": "e1", "ts": TS_WIRE}),
    (
        b"sys/",
        p.Shutdown("e1", TS, "bye"),
        {"type": "shutdown", "epoch": "e1", "ts": TS_WIRE, "text": "bye"},
    ),
]


@pytest.mark.parametrize(("record", "wire"), CLIENT_CASES)
def test_client_messages_encode_and_decode(
    record: p.ClientMessage, wire: dict[str, object]
) -> None:
    frames = p.encode_client(record)
    assert len(frames) == 1
    assert json.loads(frames[0]) == {"v": p.PROTOCOL_VERSION, **wire}
    assert p.decode_client(frames) == record


@pytest.mark.parametrize(("topic", "record", "wire"), SERVER_CASES)
def test_server_messages_encode_and_decode(
    topic: bytes, record: p.ServerMessage, wire: dict[str, object]
) -> None:
    frames = p.encode_server(topic, record)
    assert frames[0] == topic
    assert json.loads(frames[1]) == {"v": p.PROTOCOL_VERSION, **wire}
    assert p.decode_server(frames) == (topic, record)


def _frame(**fields: object) -> bytes:
    return json.dumps({"v": 1, **fields}).encode()


BAD_CLIENT_FRAMES = [
    ([], "frames"),
    ([b"", b""], "frames"),
    ([b""], "empty"),
    ([b"\xff\xfe\x00binary"], "json"),
    ([b'{"v": 1, "type": "say"'], "json"),
    ([b"[1, 2]"], "json"),
    ([b'{"type": "say"}'], "version"),
    ([_frame(type="say").replace(b'"v": 1', b'"v": 2')], "version"),
    ([_frame(type="say").replace(b'"v": 1', b'"v": true')], "version"),
    ([_frame()], "type"),
    ([_frame(type="teleport")], "type"),
    ([_frame(type="say", secret=S, room="general")], "field"),
    ([_frame(type="say", secret="nothex", room="general", text="x")], "field"),
    ([_frame(type="say", secret=S, room=["general"], text="x")], "field"),
    ([_frame(type="say", secret=S, room="general", text=5)], "field"),
    ([_frame(type="say", secret=S, room="general", text="x", id="a b")], "field"),
    ([_frame(type="join", name="A", secret=S, inbox=S, rooms="general")], "field"),
    ([_frame(type="join", name="A", secret=S, inbox=S, rooms=[])], "field"),
    ([_frame(type="join", name="A", secret=S, inbox=S[:-1], rooms=["general"])], "field"),
    ([_frame(type="join", name="A", secret=S, inbox=S, quiet=1)], "field"),
    ([_frame(type="leave", secret=S, reason=7)], "field"),
    ([_frame(type="ping", secret=S, inbox=True)], "field"),
]


@pytest.mark.parametrize(("frames", "code"), BAD_CLIENT_FRAMES)
def test_bad_client_frames_are_refused_with_a_code(frames: list[bytes], code: str) -> None:
    with pytest.raises(ProtocolError) as caught:
        p.decode_client(frames)
    assert caught.value.code == code


def test_fields_a_receiver_does_not_know_are_ignored() -> None:
    """So a broker older than an optional field (a join's "quiet") takes the message as
    if the field were not there."""
    frame = _frame(type="join", name="A", secret=S, inbox=S, colour="blue")
    assert p.decode_client([frame]) == p.Join("A", S, S, ("general",))


def test_join_without_rooms_means_general() -> None:
    frame = _frame(type="join", name="A", secret=S, inbox=S)
    assert p.decode_client([frame]).rooms == ("general",)  # type: ignore[union-attr]


@pytest.mark.parametrize("name", ["A", "alice", "Bob_2", "x.y-z", "a" * 32])
def test_valid_names(name: str) -> None:
    assert p.check_name(name) == name


@pytest.mark.parametrize(
    ("name", "words"),
    [
        ("", "empty"),
        ("a" * 33, "33 characters long, the limit is 32"),
        ("bad name", "not allowed"),
        ("a:b", "not allowed"),
        ("a/b", "not allowed"),
        ("\x1b[31mred", "not allowed"),
        ("Álvaro", "not allowed"),
    ],
)
def test_invalid_names_say_why(name: str, words: str) -> None:
    with pytest.raises(InvalidInput, match=words.replace("[", r"\[")):
        p.check_name(name)


def test_text_limits_name_the_value_and_the_limit() -> None:
    assert p.check_text("é" * (p.MAX_TEXT_BYTES // 2)) == "é" * (p.MAX_TEXT_BYTES // 2)
    with pytest.raises(InvalidInput, match=r"4098 bytes long, the limit is 4096"):
        p.check_text("é" * 2049)
    with pytest.raises(InvalidInput, match="empty"):
        p.check_text("   ")


@pytest.mark.parametrize(
    ("text", "clean"),
    [
        ("plain text ✓ 日本語 😀", "plain text ✓ 日本語 😀"),
        ("\x1b[2J\x1b[31mred", "\ufffd[2J\ufffd[31mred"),
        ("bell\x07 and nul\x00", "bell\ufffd and nul\ufffd"),
        ("line\nbreak\r", "line\ufffdbreak\ufffd"),
        ("tab\there", "tab here"),
        ("c1\x9bcontrol", "c1\ufffdcontrol"),
        ("evil\u202etxt.exe", "evil\ufffdtxt.exe"),
        ("forged\u2028<Bob> hi", "forged\ufffd<Bob> hi"),
        ("forged\u2029<Bob> hi", "forged\ufffd<Bob> hi"),
        ("nel\x85vt\x0bff\x0c", "nel\ufffdvt\ufffdff\ufffd"),
        ("fs\x1cgs\x1drs\x1e", "fs\ufffdgs\ufffdrs\ufffd"),
    ],
)
def test_control_characters_never_reach_a_terminal(text: str, clean: str) -> None:
    assert p.clean_text(text) == clean


@pytest.mark.parametrize(
    ("text", "clean"),
    [
        ("two\nlines", "two\nlines"),
        ("crlf\r\nline", "crlf\nline"),
        ("cr\ronly", "cr\nonly"),
        ("\n\nblank lines kept\n", "\n\nblank lines kept\n"),
        ("esc\x1b[2J\nnext\x07", "esc\ufffd[2J\nnext\ufffd"),
        ("    indented\n\tcode", "    indented\n    code"),
        ("a\tb\n\tab\tc", "a   b\n    ab  c"),
        ("forged\u2028<Bob> hi\n\x85x", "forged\ufffd<Bob> hi\n\ufffdx"),
        ("one line\x1b", "one line\ufffd"),
    ],
)
def test_a_message_keeps_its_line_breaks_and_nothing_else(text: str, clean: str) -> None:
    assert p.clean_lines(text) == clean


def test_a_message_of_several_lines_breaks_at_line_feeds_only() -> None:
    breaks = [chr(c) for c in range(0x110000)
              if not 0xD800 <= c <= 0xDFFF and len(f"a{chr(c)}b".splitlines()) > 1]  # fmt: skip
    for ch in breaks:
        cleaned = p.clean_lines(f"first{ch}second")
        assert cleaned.splitlines() == cleaned.split("\n"), repr(ch)
        assert len(cleaned.split("\n")) == (2 if ch in "\r\n" else 1), repr(ch)


def test_a_message_holds_at_most_max_text_lines() -> None:
    most = "\n".join(["x"] * p.MAX_TEXT_LINES)
    assert p.check_text(most) == most
    assert p.check_text("a\r\nb") == "a\nb"
    with pytest.raises(InvalidInput, match=f"61 lines, the limit is {p.MAX_TEXT_LINES}"):
        p.check_text(most + "\ny")


def test_a_cleaned_text_never_splits_into_two_lines() -> None:
    # every character that str.splitlines() breaks a line at, found by asking it
    breaks = [
        chr(c)
        for c in range(0x110000)
        if not 0xD800 <= c <= 0xDFFF and len(f"a{chr(c)}b".splitlines()) > 1
    ]
    assert "\u2028" in breaks and "\x85" in breaks  # the search works
    for ch in breaks:
        text = f"topic{ch}<Bob> forged"
        assert p.clean_text(text).splitlines() == ["topic\ufffd<Bob> forged"], repr(ch)
        assert p.check_topic(text).splitlines() == ["topic\ufffd<Bob> forged"], repr(ch)


def test_room_names_are_canonical_and_topics_never_prefix_each_other() -> None:
    assert p.check_room("#General") == "general"
    assert not p.room_topic("general").startswith(p.room_topic("gen"))
    assert p.room_of_topic(p.room_topic("dev")) == "dev"
    assert p.inbox_of_topic(p.inbox_topic(S)) == S
    assert p.inbox_of_topic(b"to/") is None
    assert p.inbox_of_topic(p.inbox_topic(S)[:-1]) is None
    with pytest.raises(InvalidInput, match="33 characters long, the limit is 32"):
        p.check_room("r" * 33)


def test_inbox_topics_sort_after_every_other_topic() -> None:
    # a SUB resends its subscriptions in byte order on reconnect; the inbox must be last
    others = [p.room_topic("zzz"), p.room_topic("a"), p.SYS_TOPIC]
    assert all(p.inbox_topic("0" * 32) > topic for topic in others)


def test_server_decoder_cleans_texts_from_a_hostile_broker() -> None:
    frames = p.encode_server(b"room/general/", p.Chat("general", 1, TS, "Eve", "\x1b]0;pwned\x07"))
    _, chat = p.decode_server(frames)
    assert isinstance(chat, p.Chat)
    assert "\x1b" not in chat.text and "\x07" not in chat.text


@pytest.mark.parametrize(
    "fields",
    [{"retry_after": "soon"}, {"retry_after": -1}, {"rate": True}, {"burst": 2.5}],
)
def test_a_rate_limited_error_with_a_bad_limit_is_refused(fields: dict[str, object]) -> None:
    frame = _frame(type="error", code="rate-limited", text="slow down", id="m1", **fields)
    with pytest.raises(ProtocolError):
        p.decode_server([b"to/x/", frame])


def test_server_decoder_checks_frames_and_timestamps() -> None:
    with pytest.raises(ProtocolError) as caught:
        p.decode_server([b"sys/"])
    assert caught.value.code == "frames"
    with pytest.raises(ProtocolError, match="not a UTC timestamp"):
        p.decode_server([b"sys/", _frame(type="heartbeat", epoch="e", ts="yesterday")])


def test_room_names_are_checked_before_lower_casing() -> None:
    with pytest.raises(InvalidInput, match="not allowed"):
        p.check_room("#\u212aitchen")  # KELVIN SIGN lower-cases to an ASCII "k"


def test_lone_surrogates_are_replaced_so_text_can_always_be_encoded() -> None:
    assert p.check_text("a\ud800b") == "a\ufffdb"
    assert p.clean_text("a\udfffb") == "a\ufffdb"
    frames = p.encode_client(p.Say(S, "general", p.check_text("a\ud800b"), "m1"))
    assert frames[0].decode("utf-8")


def test_the_largest_text_fits_in_the_largest_frame() -> None:
    worst = "\x01" * p.MAX_TEXT_BYTES  # JSON escapes each as 6 bytes
    frames = p.encode_client(p.Say(S, "r" * p.MAX_ROOM_CHARS, p.check_text(worst), "i" * 64))
    assert len(frames[0]) <= p.MAX_FRAME_BYTES


def test_marker_topics_name_one_inbox_and_one_mark() -> None:
    topic = p.marker_topic(S, "e2")
    assert topic == b"to/" + S.encode() + b"/e2/"
    assert p.marker_of_topic(topic) == (S, "e2")
    assert p.inbox_of_topic(topic) is None
    assert p.marker_of_topic(p.inbox_topic(S)) is None
    assert p.marker_of_topic(topic + b"x/") is None
    assert p.marker_of_topic(b"to/" + S.encode() + b"/E2/") is None
