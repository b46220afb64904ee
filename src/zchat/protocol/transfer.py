"""The file port's wire format: what moves a shared file, apart from the chat.

Pure, as the rest of the protocol. Files never ride the chat's PULL and XPUB sockets:
the broker binds a ROUTER socket on port + 2, and a client connects a DEALER to it.
Each message is one JSON frame (``"v": 1``, a ``"type"``), and a chunk's bytes follow
as a second frame. Every request carries the session ``secret`` (the chat's) and an
``ask``: the client's name for the transfer, echoed in every answer about it.

Credit-based flow, as in the ZeroMQ guide's chapter 7: the side that receives asks for
each chunk, at most WINDOW at a time, and asks again as chunks land. Nothing is ever
sent that was not asked for, so no queue grows and no high-water mark drops a chunk.

Client -> broker (DEALER -> ROUTER)::

    offer   secret, ask, name, size, room | to, [sha256]   share a file (then: want/chunk)
    chunk   secret, ask, upload, offset, [sha256] + bytes the bytes a ``want`` asked for
            (the last one carries the file's sha256 if the offer did not)
    open    secret, ask, file                             start fetching file ``file``
    get     secret, ask, file, offset, size               one chunk (after ``open``)
    files   secret, ask, room                             the files shared in a room
    cancel  secret, ask                                   stop the transfer ``ask``

Broker -> client::

    accepted  ask, upload, offset, chunk     the offer is taken; bytes from ``offset``
    want      ask, upload, offset, size      send these bytes (one ``chunk``)
    stored    ask, file, duplicate           checked and shared (``file``: SharedFile)
    opened    ask, file, chunk               fetch it, ``chunk`` bytes a ``get`` at most
    data      ask, file, offset   + [bytes]  the bytes a ``get`` asked for
    listing   ask, room, files: [{file, sender, ts, room, to}]
    refused   ask, code, text, room          the transfer ``ask`` is over (or never began);
                                             ``room``: the one to enter ("not-in-room")
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime
from typing import Any, TypeAlias

import msgspec
from msgspec import Struct

from zchat.errors import ProtocolError
from zchat.protocol import decode
from zchat.protocol.decode import decode_file
from zchat.protocol.encode import file_body
from zchat.protocol.records import SharedFile
from zchat.protocol.topics import (
    ID_RE,
    MAX_ID_CHARS,
    PROTOCOL_VERSION,
    SHA256_RE,
    TOKEN_RE,
    format_ts,
    parse_ts,
)
from zchat.values import clean_text

# The bytes of one chunk: what the broker asks an uploader for, and the most a ``get``
# may ask. Large enough that the per-message cost is small beside the copy, small
# enough that WINDOW of them in flight is a few MiB.
CHUNK_BYTES = 256 * 1024
# Chunks asked for and not yet received, per transfer.
WINDOW = 8
# A file name on the wire: cleaned for terminals, at most this many UTF-8 bytes (a
# receiver saves it under a name of at most 255, sharing.naming.safe_name).
MAX_FILE_NAME_BYTES = 1024
# The JSON frame of a request (a name of MAX_FILE_NAME_BYTES, JSON-escaped, fits); a
# chunk adds its bytes. An answer's (a listing of many files) may be larger.
MAX_HEADER_BYTES = 8192
MAX_ANSWER_BYTES = 1024 * 1024
# The largest message the broker's file socket takes (ZMQ_MAXMSGSIZE, per frame).
MAX_MESSAGE_BYTES = CHUNK_BYTES + MAX_HEADER_BYTES
# The largest file size the wire can carry (the broker's --max-file-size is the limit).
MAX_FILE_BYTES = 2**53


# --- records: client -> broker ---------------------------------------------------------


class Offer(Struct, frozen=True, kw_only=True):
    secret: str
    ask: str
    name: str
    size: int
    sha256: str = ""  # the whole file's; "" to give it with the last chunk instead
    room: str = ""  # shared in a room ...
    to: str = ""  # ... or privately with one user


class Chunk(Struct, frozen=True, kw_only=True):
    secret: str
    ask: str
    upload: str
    offset: int
    data: bytes | memoryview = b""  # the second frame
    sha256: str = ""  # the last chunk: the whole file's, if the offer did not give it


class Open(Struct, frozen=True, kw_only=True):
    secret: str
    ask: str
    file: int


class Get(Struct, frozen=True, kw_only=True):
    secret: str
    ask: str
    file: int
    offset: int
    size: int


class ListFiles(Struct, frozen=True, kw_only=True):
    secret: str
    ask: str
    room: str


class Cancel(Struct, frozen=True, kw_only=True):
    secret: str
    ask: str


Request: TypeAlias = Offer | Chunk | Open | Get | ListFiles | Cancel


# --- records: broker -> client ---------------------------------------------------------


class Accepted(Struct, frozen=True, kw_only=True):
    ask: str
    upload: str  # the broker's token for this upload
    offset: int  # the bytes it holds already (a resumed upload): send from here
    chunk: int = CHUNK_BYTES


class Want(Struct, frozen=True, kw_only=True):
    ask: str
    upload: str
    offset: int
    size: int


class Stored(Struct, frozen=True, kw_only=True):
    ask: str
    file: SharedFile
    duplicate: bool = False  # the broker had these bytes already: none were sent


class Opened(Struct, frozen=True, kw_only=True):
    ask: str
    file: SharedFile
    chunk: int = CHUNK_BYTES


class Data(Struct, frozen=True, kw_only=True):
    ask: str
    file: int
    offset: int
    data: bytes | memoryview = b""  # the second frame


class Listed(Struct, frozen=True):
    """One file in a ``listing``: the file, who shared it when, and where."""

    file: SharedFile
    sender: str
    ts: datetime
    room: str = ""
    to: str = ""


class Listing(Struct, frozen=True, kw_only=True):
    ask: str
    room: str
    files: tuple[Listed, ...]


class Refusal(Struct, frozen=True, kw_only=True):
    ask: str
    code: str
    text: str
    room: str = ""  # "not-in-room": the room to enter to fetch the file


Answer: TypeAlias = Accepted | Want | Stored | Opened | Data | Listing | Refusal


# --- encoding --------------------------------------------------------------------------

_encode = msgspec.json.Encoder().encode


def _frame(kind: str, body: dict[str, Any]) -> bytes:
    return _encode({"v": PROTOCOL_VERSION, "type": kind, **body})


def encode_request(msg: Request) -> list[bytes | memoryview]:
    """The frames a client sends for ``msg`` (a chunk's bytes as the second)."""
    match msg:
        case Offer():
            body = {"secret": msg.secret, "ask": msg.ask, "name": msg.name, "size": msg.size}
            body |= {"sha256": msg.sha256, "room": msg.room, "to": msg.to}
            return [_frame("offer", body)]
        case Chunk():
            body = {"secret": msg.secret, "ask": msg.ask, "upload": msg.upload}
            body |= {"offset": msg.offset} | ({"sha256": msg.sha256} if msg.sha256 else {})
            return [_frame("chunk", body), msg.data]
        case Open():
            return [_frame("open", {"secret": msg.secret, "ask": msg.ask, "file": msg.file})]
        case Get():
            body = {"secret": msg.secret, "ask": msg.ask, "file": msg.file}
            return [_frame("get", body | {"offset": msg.offset, "size": msg.size})]
        case ListFiles():
            return [_frame("files", {"secret": msg.secret, "ask": msg.ask, "room": msg.room})]
        case Cancel():
            return [_frame("cancel", {"secret": msg.secret, "ask": msg.ask})]


def encode_answer(msg: Answer) -> list[bytes | memoryview]:
    """The frames the broker sends for ``msg`` (after the peer's routing id)."""
    match msg:
        case Accepted():
            body = {"ask": msg.ask, "upload": msg.upload, "offset": msg.offset}
            return [_frame("accepted", body | {"chunk": msg.chunk})]
        case Want():
            body = {"ask": msg.ask, "upload": msg.upload, "offset": msg.offset}
            return [_frame("want", body | {"size": msg.size})]
        case Stored():
            body = {"ask": msg.ask, "file": file_body(msg.file), "duplicate": msg.duplicate}
            return [_frame("stored", body)]
        case Opened():
            body = {"ask": msg.ask, "file": file_body(msg.file), "chunk": msg.chunk}
            return [_frame("opened", body)]
        case Data():
            body = {"ask": msg.ask, "file": msg.file, "offset": msg.offset}
            return [_frame("data", body), msg.data]
        case Listing():
            files = [_listed_body(item) for item in msg.files]
            return [_frame("listing", {"ask": msg.ask, "room": msg.room, "files": files})]
        case Refusal():
            body = {"ask": msg.ask, "code": msg.code, "text": msg.text}
            return [_frame("refused", body | ({"room": msg.room} if msg.room else {}))]


def _listed_body(item: Listed) -> dict[str, Any]:
    body = {"file": file_body(item.file), "sender": item.sender, "ts": format_ts(item.ts)}
    return body | {"room": item.room, "to": item.to}


# --- decoding --------------------------------------------------------------------------


class _Fields(decode._Fields):
    """decode.py's fields, with the file port's counts (up to a bound) and asks."""

    def count(self, key: str, most: int = MAX_FILE_BYTES) -> int:  # type: ignore[override]
        value = self.obj.get(key)
        if type(value) is not int or not 0 <= value <= most:
            raise ProtocolError("field", f"field {key!r} is not a whole number from 0 to {most}")
        return value

    def secret(self) -> str:
        return self.token("secret")

    def ask(self) -> str:
        value = self.text("ask")
        if not (0 < len(value) <= MAX_ID_CHARS and ID_RE.fullmatch(value)):
            raise ProtocolError("field", f"field 'ask' must be 1 to {MAX_ID_CHARS} safe characters")
        return value


def _load(frame: bytes | memoryview, most: int) -> tuple[str, _Fields]:
    """decode.py's checks (UTF-8 JSON, an object, the version, a type), after the
    file port's bound on a header's size."""
    if len(frame) > most:
        raise ProtocolError("size", f"a file-port header is at most {most} bytes")
    kind, fields = decode._load(bytes(frame))
    return kind, _Fields(fields.obj)


def check_file_name(name: str) -> str:
    """A shared file's name as the chat shows it: cleaned for terminals, one line, not
    empty, at most MAX_FILE_NAME_BYTES. ProtocolError says which rule it breaks."""
    shown = clean_text(name).strip()
    if not shown:
        raise ProtocolError("field", "the file name is empty")
    if len(shown.encode("utf-8")) > MAX_FILE_NAME_BYTES:
        raise ProtocolError(
            "field", f"the file name is longer than {MAX_FILE_NAME_BYTES} bytes in UTF-8"
        )
    return shown


def decode_request(frames: Sequence[bytes | memoryview]) -> Request:
    """What a client sent on the file port (without the routing id). The room and the
    recipient are left for the broker to check, as on the chat's in-socket."""
    if not 1 <= len(frames) <= 2:
        raise ProtocolError("frames", f"expected 1 or 2 frames, got {len(frames)}")
    kind, f = _load(frames[0], MAX_HEADER_BYTES)
    if (kind == "chunk") != (len(frames) == 2):
        raise ProtocolError("frames", "a chunk has two frames, every other request one")
    secret, ask = f.secret(), f.ask()
    match kind:
        case "offer":
            sha256 = _sha256(f)
            name, size = check_file_name(f.text("name")), f.count("size")
            room, to = f.text("room", ""), f.text("to", "")
            if bool(room) == bool(to):
                raise ProtocolError("field", "an offer names a room or a recipient, not both")
            return Offer(
                secret=secret, ask=ask, name=name, size=size, sha256=sha256, room=room, to=to
            )
        case "chunk":
            upload = f.text("upload")
            if not TOKEN_RE.fullmatch(upload):
                raise ProtocolError("field", "field 'upload' is not 32 lower-case hex digits")
            offset, sha256 = f.count("offset"), _sha256(f)
            data = frames[1]
            return Chunk(
                secret=secret, ask=ask, upload=upload, offset=offset, data=data, sha256=sha256
            )
        case "open":
            return Open(secret=secret, ask=ask, file=f.count("file"))
        case "get":
            file, offset = f.count("file"), f.count("offset")
            return Get(
                secret=secret, ask=ask, file=file, offset=offset, size=f.count("size", CHUNK_BYTES)
            )
        case "files":
            return ListFiles(secret=secret, ask=ask, room=f.text("room"))
        case "cancel":
            return Cancel(secret=secret, ask=ask)
    raise ProtocolError("type", f"unknown file-port request {kind!r}")


def _sha256(f: _Fields) -> str:
    """An optional ``sha256``: 64 lower-case hex digits, or ""."""
    sha256 = f.text("sha256", "")
    if sha256 and not SHA256_RE.fullmatch(sha256):
        raise ProtocolError("field", "field 'sha256' is not 64 lower-case hex digits")
    return sha256


def decode_answer(frames: Sequence[bytes | memoryview]) -> Answer:
    """What the broker sent on the file port."""
    if not 1 <= len(frames) <= 2:
        raise ProtocolError("frames", f"expected 1 or 2 frames, got {len(frames)}")
    kind, f = _load(frames[0], MAX_ANSWER_BYTES)
    if (kind == "data") != (len(frames) == 2):
        raise ProtocolError("frames", "a data answer has two frames, every other one")
    ask = f.ask()
    match kind:
        case "accepted":
            upload, offset = f.text("upload"), f.count("offset")
            return Accepted(
                ask=ask, upload=upload, offset=offset, chunk=f.count("chunk", CHUNK_BYTES)
            )
        case "want":
            upload, offset = f.text("upload"), f.count("offset")
            return Want(ask=ask, upload=upload, offset=offset, size=f.count("size", CHUNK_BYTES))
        case "stored":
            duplicate = f.obj.get("duplicate", False) is True
            return Stored(ask=ask, file=decode_file(f.obj.get("file")), duplicate=duplicate)
        case "opened":
            file = decode_file(f.obj.get("file"))
            return Opened(ask=ask, file=file, chunk=f.count("chunk", CHUNK_BYTES))
        case "data":
            return Data(ask=ask, file=f.count("file"), offset=f.count("offset"), data=frames[1])
        case "listing":
            listed = f.obj.get("files")
            if not isinstance(listed, list):
                raise ProtocolError("field", "field 'files' is not a list")
            return Listing(ask=ask, room=f.text("room"), files=tuple(_listed(x) for x in listed))
        case "refused":
            code, text = f.text("code"), clean_text(f.text("text"))
            return Refusal(ask=ask, code=code, text=text, room=f.text("room", ""))
    raise ProtocolError("type", f"unknown file-port answer {kind!r}")


def _listed(obj: Any) -> Listed:
    if not isinstance(obj, dict):
        raise ProtocolError("field", "a listed file is not a JSON object")
    f = _Fields(obj)
    sender = clean_text(f.text("sender"))
    ts = parse_ts(f.text("ts"))
    return Listed(decode_file(obj.get("file")), sender, ts, f.text("room", ""), f.text("to", ""))
