"""Records to frames."""

from __future__ import annotations

from datetime import datetime
from typing import Any

import msgspec

from zchat.protocol.records import (
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
from zchat.protocol.topics import PROTOCOL_VERSION, format_ts

# --- encoding --------------------------------------------------------------------------


_encode = msgspec.json.Encoder().encode  # compact JSON, UTF-8, in C


def _dump(obj: dict[str, Any]) -> bytes:
    return _encode({"v": PROTOCOL_VERSION, **obj})


def encode_client(msg: ClientMessage) -> list[bytes]:
    body: dict[str, Any]
    match msg:
        case Join(name, secret, inbox, rooms, history, since, mark, quiet, password, register):
            body = {"type": "join", "name": name, "secret": secret, "inbox": inbox}
            body |= {"rooms": list(rooms), "history": history, "since": dict(since), "mark": mark}
            if quiet:
                body["quiet"] = True
            if password:
                body["password"] = password
            if register:
                body["register"] = True
        case Say(secret, room, text, id_, action):
            body = {"type": "say", "secret": secret, "room": room, "text": text, "id": id_}
            if action:
                body["action"] = True
        case Ping(secret, inbox):
            body = {"type": "ping", "secret": secret, "inbox": inbox}
        case Leave(secret, reason):
            body = {"type": "leave", "secret": secret, "reason": reason}
        case Enter(secret, room, mark, history):
            body = {"type": "enter", "secret": secret, "room": room, "mark": mark}
            body["history"] = history
        case Part(secret, room, reason):
            body = {"type": "part", "secret": secret, "room": room, "reason": reason}
        case Msg(secret, to, text, id_):
            body = {"type": "msg", "secret": secret, "to": to, "text": text, "id": id_}
        case Nick(secret, name):
            body = {"type": "nick", "secret": secret, "name": name}
        case SetTopic(secret, room, text):
            body = {"type": "topic", "secret": secret, "room": room, "text": text}
        case Who(secret, room, id_, after):
            body = {"type": "who", "secret": secret, "room": room, "id": id_}
            if after:
                body["after"] = after
        case ListRooms(secret, id_):
            body = {"type": "rooms", "secret": secret, "id": id_}
        case GetHistory(secret, room, after, before, limit, id_):
            body = {"type": "history", "secret": secret, "room": room}
            body |= {"after": after, "before": before, "limit": limit, "id": id_}
        case Moderate(secret, op, name, reason, id_):
            body = {"type": op, "secret": secret, "name": name, "reason": reason, "id": id_}
        case Passwd(secret, old, new, id_):
            body = {"type": "passwd", "secret": secret, "old": old, "new": new, "id": id_}
    return [_dump(body)]


def event_body(event: RoomEvent) -> dict[str, Any]:
    """A room event as the JSON object published (and stored, and sent in history)."""
    head = {"room": event.room, "seq": event.seq, "ts": format_ts(event.ts), "sender": event.sender}
    match event:
        case Chat(text=text, id=id_, action=action, file=file):
            body = {"type": "action" if action else "message", **head, "text": text, "id": id_}
            if file is not None:
                body["file"] = file_body(file)
            return body
        case Joined():
            return {"type": "join", **head}
        case Left(reason=reason):
            return {"type": "leave", **head, "reason": reason}
        case Renamed(name=name):
            return {"type": "nick", **head, "name": name}
        case TopicChanged(text=text):
            return {"type": "topic", **head, "text": text}


def file_body(file: SharedFile) -> dict[str, Any]:
    """A shared file as the JSON object in a message (and in the file port's answers)."""
    body: dict[str, Any] = {"id": file.id, "name": file.name, "size": file.size}
    body |= {"sha256": file.sha256, "media": file.media}
    body |= {"width": file.width, "height": file.height, "expired": file.expired}
    return body


def encode_event(event: RoomEvent) -> bytes:
    """A room event's frame, as published and as stored (made once for both)."""
    return _dump(event_body(event))


def _state_body(state: RoomState) -> dict[str, Any]:
    body = {"seq": state.seq, "members": list(state.members), "topic": state.topic}
    if state.count:
        body["count"] = state.count
    return body


def _given(**fields: Any) -> dict[str, Any]:
    """The optional fields that have a value (None: left out of the frame)."""
    return {key: value for key, value in fields.items() if value is not None}


def _ts_or_none(ts: datetime | None) -> str | None:
    return format_ts(ts) if ts is not None else None


def encode_server(topic: bytes, msg: ServerMessage) -> list[bytes]:
    body: dict[str, Any]
    match msg:
        case Chat() | Joined() | Left() | Renamed() | TopicChanged():
            body = event_body(msg)
        case Tail(room, seq):
            body = {"type": "tail", "room": room, "seq": seq}
        case Crowd(room, joined, left, seconds):
            body = {"type": "crowd", "room": room, "joined": joined, "left": left}
            body["seconds"] = seconds
        case Welcome(name, epoch, rooms):
            states = {room: _state_body(state) for room, state in rooms.items()}
            body = {"type": "welcome", "name": name, "epoch": epoch, "rooms": states}
        case Refused(code, text, retry_after):
            body = {
                "type": "refused",
                "code": code,
                "text": text,
                **_given(retry_after=retry_after),
            }
        case Error(code, text, id_, retry_after, rate, burst):
            body = {"type": "error", "code": code, "text": text, "id": id_}
            limit = {"retry_after": retry_after, "rate": rate, "burst": burst}
            body.update((key, value) for key, value in limit.items() if value is not None)
        case Entered(room, state):
            body = {"type": "entered", "room": room, **_state_body(state)}
        case Parted(room):
            body = {"type": "parted", "room": room}
        case History(room, events, lost, id_):
            body = {"type": "history", "room": room, "lost": lost, "id": id_}
            body["events"] = [event_body(event) for event in events]
        case Private(ts, sender, to, text, id_, file):
            body = {"type": "private", "ts": format_ts(ts), "sender": sender, "to": to}
            body |= {"text": text, "id": id_}
            if file is not None:
                body["file"] = file_body(file)
        case Members(room, members, topic_text, id_, count):
            body = {"type": "members", "room": room, "members": list(members), "topic": topic_text}
            body["id"] = id_
            if count:
                body["count"] = count
        case RoomList(rooms, id_):
            listed = [{"room": r.room, "members": r.members, "topic": r.topic} for r in rooms]
            body = {"type": "rooms", "rooms": listed, "id": id_}
        case NickChanged(name):
            body = {"type": "renamed", "name": name}
        case Kicked(by, reason, banned):
            body = {"type": "kicked", "by": by, "reason": reason, "banned": banned}
        case Done(text, id_):
            body = {"type": "done", "text": text, "id": id_}
        case LoggedIn(name, failed, last):
            body = {"type": "login", "name": name, "failed": failed, "last": _ts_or_none(last)}
        case Heartbeat(epoch, ts):
            body = {"type": "heartbeat", "epoch": epoch, "ts": format_ts(ts)}
        case Shutdown(epoch, ts, text):
            body = {"type": "shutdown", "epoch": epoch, "ts": format_ts(ts), "text": text}
    return [topic, _dump(body)]
