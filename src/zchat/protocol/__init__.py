"""The zchat wire format: frames in, typed records out, and back.

Pure: no sockets, no clocks, no globals. Every frame after the topic is UTF-8 JSON
carrying ``"v": PROTOCOL_VERSION`` and a ``"type"``; docs/protocol.md is the reference.

Client -> broker (PUSH -> PULL), exactly one frame. Every request but ``join`` carries
the session ``secret``::

    join    name, secret, inbox, rooms, history, since, mark   ping   inbox
    say     room, text, id, action                         leave  reason
    enter   room, mark, history    part   room, reason     msg    to, text, id
    nick    name                   topic  room, text       who    room, id
    rooms   id                     history room, after, before, limit, id
    kick | ban | unban   name, reason, id   (an admin, in secure mode)

Broker -> clients (XPUB -> SUB), exactly two frames, ``[topic, json]``::

    room/<room>/   message | action  room, seq, ts, sender, text, id, file (a shared file)
                   join              room, seq, ts, sender
                   leave             room, seq, ts, sender, reason
                   nick              room, seq, ts, sender, name
                   topic             room, seq, ts, sender, text
                   tail              room, seq  (the room's last seq; once a second if busy)
    to/<inbox>/    welcome  name, epoch, rooms: {room: {seq, members, topic}}
                   refused  code, text          error    code, text, id
                   (rate-limited errors also: retry_after, rate, burst)
                   entered  room, seq, members, topic       parted   room
                   history  room, events: [room event, ...], lost, id
                   private  ts, sender, to, text, id, file (a shared file)
                   members  room, members, topic, id        renamed  name
                   kicked   by, reason, banned              done     text, id
                   rooms    rooms: [{room, members (a count), topic}], id
    sys/           heartbeat epoch, ts                      shutdown epoch, ts, text

Topics end with "/", which no name may contain, so SUB's prefix match never lets
room ``gen`` see room ``general``. ``ts`` is UTC with microseconds
(``2025-03-01T14:30:15.123456Z``); ``seq`` counts the events of one room from 1.
"""

from __future__ import annotations

from zchat.protocol.decode import (
    CLIENT_TYPES,
    ROOM_EVENT_TYPES,
    decode_client,
    decode_event,
    decode_file,
    decode_server,
    decode_stored,
)
from zchat.protocol.encode import (
    encode_client,
    encode_event,
    encode_server,
    event_body,
    file_body,
)
from zchat.protocol.records import (
    MODERATE_OPS,
    Chat,
    ClientMessage,
    Crowd,
    Done,
    Enter,
    Entered,
    Error,
    GetHistory,
    Heartbeat,
    History,
    InboxMessage,
    Join,
    Joined,
    Kicked,
    Leave,
    Left,
    ListRooms,
    LoggedIn,
    Members,
    Moderate,
    Msg,
    Nick,
    NickChanged,
    Part,
    Parted,
    Passwd,
    Ping,
    Private,
    Refused,
    Renamed,
    RoomEvent,
    RoomInfo,
    RoomList,
    RoomState,
    Say,
    ServerMessage,
    SetTopic,
    SharedFile,
    Shutdown,
    Tail,
    TopicChanged,
    Welcome,
    Who,
)
from zchat.protocol.topics import (
    DEFAULT_HISTORY,
    ID_RE,
    INBOX_PREFIX,
    MARK_RE,
    MAX_FRAME_BYTES,
    MAX_HISTORY,
    MAX_ID_CHARS,
    PROTOCOL_VERSION,
    ROOM_PREFIX,
    SHA256_RE,
    SYS_TOPIC,
    TOKEN_RE,
    TS_RE,
    format_ts,
    inbox_of_topic,
    inbox_topic,
    marker_of_topic,
    marker_topic,
    parse_ts,
    room_of_topic,
    room_topic,
)
from zchat.values import (
    DEFAULT_ROOM,
    MAX_NAME_CHARS,
    MAX_REASON_CHARS,
    MAX_ROOM_CHARS,
    MAX_ROOMS_PER_SESSION,
    MAX_TEXT_BYTES,
    MAX_TEXT_LINES,
    MAX_TOPIC_CHARS,
    check_name,
    check_reason,
    check_room,
    check_text,
    check_topic,
    clean_lines,
    clean_text,
)

# the value checks are part of the wire format's vocabulary
__all__ = [
    "CLIENT_TYPES",
    "DEFAULT_HISTORY",
    "DEFAULT_ROOM",
    "ID_RE",
    "INBOX_PREFIX",
    "MARK_RE",
    "MAX_FRAME_BYTES",
    "MAX_HISTORY",
    "MAX_ID_CHARS",
    "MAX_NAME_CHARS",
    "MAX_REASON_CHARS",
    "MAX_ROOMS_PER_SESSION",
    "MAX_ROOM_CHARS",
    "MAX_TEXT_BYTES",
    "MAX_TEXT_LINES",
    "MAX_TOPIC_CHARS",
    "MODERATE_OPS",
    "PROTOCOL_VERSION",
    "ROOM_EVENT_TYPES",
    "ROOM_PREFIX",
    "SHA256_RE",
    "SYS_TOPIC",
    "TOKEN_RE",
    "TS_RE",
    "Chat",
    "ClientMessage",
    "Crowd",
    "Done",
    "Enter",
    "Entered",
    "Error",
    "GetHistory",
    "Heartbeat",
    "History",
    "InboxMessage",
    "Join",
    "Joined",
    "Kicked",
    "Leave",
    "Left",
    "ListRooms",
    "LoggedIn",
    "Members",
    "Moderate",
    "Msg",
    "Nick",
    "NickChanged",
    "Part",
    "Parted",
    "Passwd",
    "Ping",
    "Private",
    "Refused",
    "Renamed",
    "RoomEvent",
    "RoomInfo",
    "RoomList",
    "RoomState",
    "Say",
    "ServerMessage",
    "SetTopic",
    "SharedFile",
    "Shutdown",
    "Tail",
    "TopicChanged",
    "Welcome",
    "Who",
    "check_name",
    "check_reason",
    "check_room",
    "check_text",
    "check_topic",
    "clean_lines",
    "clean_text",
    "decode_client",
    "decode_event",
    "decode_file",
    "decode_server",
    "decode_stored",
    "encode_client",
    "encode_event",
    "encode_server",
    "event_body",
    "file_body",
    "format_ts",
    "inbox_of_topic",
    "inbox_topic",
    "marker_of_topic",
    "marker_topic",
    "parse_ts",
    "room_of_topic",
    "room_topic",
]
