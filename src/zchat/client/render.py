"""How a Message looks as one line of text, for people and for scripts."""

from __future__ import annotations

import json

from zchat.client.message import Message
from zchat.protocol import SharedFile, clean_lines, file_body, format_ts
from zchat.sharing.naming import human_size

# How the lines after the first of a message that holds several are printed: each
# starts with this, so that every line that does not is the start of an event.
CONTINUATION = "    "

TIME_FORMATS: dict[str, str | None] = {
    "time": "%H:%M:%S",
    "full": "%Y-%m-%d %H:%M:%S",
    "none": None,
}


def render(msg: Message, time_format: str = "time", current_room: str | None = None) -> str:
    """``[14:30:15] Alice: Halo semua!`` and friends, in local time. A message of
    several lines takes as many, the ones after the first indented (CONTINUATION)."""
    pattern = TIME_FORMATS[time_format]
    stamp = f"[{msg.ts.astimezone().strftime(pattern)}] " if pattern else ""
    where = f"#{msg.room} " if msg.room and current_room and msg.room != current_room else ""
    text = clean_lines(msg.text).replace("\n", "\n" + CONTINUATION)
    if msg.file is not None:  # the sender shared it: no colon after the name
        name, about, fetch = shared_parts(msg.file)
        text = f"shared {name}{about}: {fetch}"
    match msg.kind:
        case "message" | "private" if msg.file is not None:
            to = f"[private] {msg.sender} → {msg.to}" if msg.kind == "private" else msg.sender
            return f"{stamp}{where}{to} {text}"
        case "message":
            return f"{stamp}{where}{msg.sender}: {text}"
        case "action":
            return f"{stamp}{where}* {msg.sender} {text}"
        case "join":
            return f"{stamp}{where}{msg.sender} joined"
        case "leave":
            return f"{stamp}{where}{msg.sender} left" + (f" ({text})" if text else "")
        case "nick":
            return f"{stamp}{where}{msg.sender} is now known as {text}"
        case "topic":
            if not text:
                return f"{stamp}{where}{msg.sender} cleared the topic"
            return f"{stamp}{where}{msg.sender} set the topic: {text}"
        case "private":
            return f"{stamp}[private] {msg.sender} → {msg.to}: {text}"
        case _:
            return f"{stamp}*** {text}"


def shared_parts(file: SharedFile) -> tuple[str, str, str]:
    """A shared file as the chat shows it, in three parts: its name, what it is
    (its size, and a picture's width by height), and how to fetch it (``/get 8``, or
    ``expired``).
    The name came cleaned for terminals (protocol.transfer.check_file_name); it is no
    markup."""
    about = f" ({human_size(file.size)})"
    if file.media.startswith("image/"):
        about += f" [image {file.width}×{file.height}]" if file.width else " [image]"  # noqa: RUF001
    return file.name, about, "expired" if file.expired else f"/get {file.id}"


def to_json(msg: Message) -> str:
    """One Message as one line of JSON, every field (``ts`` in UTC, ISO 8601)."""
    fields: dict[str, object] = {
        "kind": msg.kind,
        "room": msg.room,
        "sender": msg.sender,
        "text": msg.text,
        "ts": format_ts(msg.ts),
        "seq": msg.seq,
        "id": msg.id,
        "to": msg.to,
        "replayed": msg.replayed,
    }
    if msg.file is not None:
        fields["file"] = file_body(msg.file)
    return json.dumps(fields, ensure_ascii=False)
