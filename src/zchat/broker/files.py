"""The broker's file port: shares, uploads and downloads, on a socket of their own.

The chat's sockets never carry a file's bytes. The broker binds a ROUTER socket on
port + 2; a client connects a DEALER there (protocol/transfer.py draws the frames).
The poll loop hands each message here (``handle``), with the routing id of the
connection it came on and, in secure mode, its key's name.

Design rules:

* **Nothing is sent that was not asked for.** Uploads: the broker asks for each chunk
  (``want``), at most WINDOW ahead of what it has written. Downloads: the client asks
  (``get``), and gets one chunk per request. So libzmq's queues hold at most a window
  a transfer, and the high-water marks never drop a chunk.
* **Every request is checked, every time**: its secret names a session, of the key the
  frame came with; a chunk belongs to that session's upload, on that connection; a
  ``get`` is for a file the session may fetch (a member of its room, or its sender or
  recipient), in range. File ids are not secrets.
* **Limits refuse before any bytes move**: the size (``max_file_size``), the room left
  under the quota (the oldest files expire to make it), the transfers a session has
  at once, and the session's flood limit (an offer, an open, a listing and a cancel
  are requests like a line).
* **The poll loop never waits on a whole file.** It writes and reads one chunk at a
  time (``os.pwrite``, ``os.pread``); the SHA-256 of a finished upload is checked by a
  worker thread, whose answer comes back through the broker's wake-up pipe.
* **A file is shared only once it is whole and checked**: an upload's bytes are in
  ``partial/`` until then, and a mismatch deletes them.

An upload whose client went away (its broker restarted, its network dropped) resumes
when the client offers the same file again: the broker answers with the bytes it
holds. One idle for ``upload_timeout`` is deleted.
"""

from __future__ import annotations

import contextlib
import logging
import os
import secrets
import time
from collections import Counter, deque
from collections.abc import Callable, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field

import msgspec

from zchat import protocol as p
from zchat.broker.actions import Actions, Answer
from zchat.broker.filecheck import Checked, Hashing, behind_the_chat, conclude
from zchat.broker.filestore import FileStore, StoredFile, UploadRow
from zchat.broker.limits import FileLimits
from zchat.broker.presence import Session
from zchat.broker.rules import BrokerRules
from zchat.broker.store import StorageFull
from zchat.errors import InvalidInput, ProtocolError
from zchat.protocol import transfer as t
from zchat.sharing.disk import write_all
from zchat.sharing.naming import human_size

log = logging.getLogger("zchat.broker")

# A download nobody asked a chunk of for this long is closed (its slot freed).
OPEN_IDLE_SECONDS = 60.0
# Files a listing shows at most (the newest).
MAX_LISTED = 100
# An upload's row is touched on disk at most this often (each chunk touches it in memory).
TOUCH_SECONDS = 10.0


class RoomAnswer(Answer):
    """A file of a room the session is not in: the refusal names the room."""

    def __init__(self, room: str, text: str) -> None:
        super().__init__("not-in-room", text)
        self.room = room


@dataclass
class Upload:
    """An upload in progress on one connection."""

    row: UploadRow
    identity: bytes  # the connection it comes on
    ask: str
    secret: str  # the session that offered it
    received: int  # bytes written, in order
    asked: int  # bytes asked for (received <= asked <= size)
    touched: float  # monotonic
    saved: float  # when the row was last touched on disk (wall clock)
    checking: bool = False
    sha256: str = ""  # the sender's: from the offer, or from the last chunk
    hashing: Hashing = field(default_factory=Hashing)
    pending: deque[Future[None]] = field(default_factory=deque)  # its chunks being hashed


@dataclass
class Fetch:
    """A download a session opened: its chunks may be asked for."""

    share: StoredFile
    secret: str
    touched: float
    served: int = 0  # bytes sent up to: a get asks after them (nothing is asked twice)


@dataclass
class Counts:
    dropped: Counter[str] = field(default_factory=Counter)  # requests refused or dropped, by code
    uploaded: int = 0  # files shared
    bytes_in: int = 0
    bytes_out: int = 0


Send = Callable[[bytes, Sequence[bytes | memoryview]], bool]


class FileService:
    def __init__(
        self,
        store: FileStore,
        rules: BrokerRules,
        limits: FileLimits,
        send: Send,
        wake: Callable[[], None],
        *,
        clock: Callable[[], float] = time.time,
    ) -> None:
        """``send(identity, frames)``: to one connection, False if it could not take
        them; ``wake()``: make the poll loop look round (any thread) for ``checked``."""
        self.store = store
        self.rules = rules
        self.limits = limits
        self.counts = Counts()
        self._send = send
        self._wake = wake
        self._clock = clock  # the wall clock, for upload rows that outlive the broker
        self._uploads: dict[str, Upload] = {}  # token -> upload on a connection
        self._asks: dict[tuple[bytes, str], str] = {}  # (identity, ask) -> upload token
        self._fetches: dict[tuple[bytes, str], Fetch] = {}  # (identity, ask) -> download
        self._busy: Counter[str] = Counter()  # session secret -> its transfers
        self._worker = ThreadPoolExecutor(
            1, thread_name_prefix="zchat-files", initializer=behind_the_chat
        )
        self._checked: deque[Checked] = deque()
        for stray in store.strays():
            stray.unlink(missing_ok=True)

    # --- requests ---------------------------------------------------------------------

    def handle(
        self, identity: bytes, frames: Sequence[bytes | memoryview], user: str | None, now: float
    ) -> Actions:
        """One message from the file socket (without its routing id)."""
        actions = Actions()
        try:
            request = t.decode_request(frames)
        except ProtocolError as exc:
            self.counts.dropped[exc.code] += 1
            return actions
        session = self.rules.presence.by_secret.get(request.secret)
        if session is None or not self.rules.policy.same_key(session.user, user):
            self._refuse(identity, request.ask, "unknown-session", "join the chat first")
            return actions
        session.last_seen = now
        try:
            match request:
                case t.Chunk():
                    self._chunk(identity, session, request, now)
                case t.Get():
                    self._get(identity, session, request, now)
                case _:
                    self._admit(session, now)
                    self._dispatch(identity, session, request, now, actions)
        except Answer as answer:
            room = answer.room if isinstance(answer, RoomAnswer) else ""
            self._refuse(identity, request.ask, answer.code, answer.text, room)
        return actions

    def _dispatch(
        self, identity: bytes, session: Session, request: t.Request, now: float, actions: Actions
    ) -> None:
        match request:
            case t.Offer():
                self._offer(identity, session, request, now)
            case t.Open(ask=ask, file=number):
                share = self._fetchable(session, number)
                key = (identity, ask)
                self._close_fetch(key)  # opened again (a stalled download): its slot too
                if share.size:  # nothing to ask of an empty file: no slot held
                    self._take_slot(session)
                    self._fetches[key] = Fetch(share, session.secret, now)
                self._answer(identity, t.Opened(ask=ask, file=share.shared))
            case t.ListFiles(ask=ask, room=room):
                self._listing(identity, session, ask, room)
            case t.Cancel(ask=ask):
                self._cancel(identity, ask, "cancelled", "cancelled by its sender")

    def _admit(self, session: Session, now: float) -> None:
        wait = self.rules.admit_request(session, now)
        if wait is not None:
            raise Answer("rate-limited", f"slow down: try again in {wait:.1f} s")

    # --- uploads ----------------------------------------------------------------------

    def _offer(self, identity: bytes, session: Session, offer: t.Offer, now: float) -> None:
        room, to = self._place(session, offer)
        limits = self.limits
        if self._busy[session.secret] >= limits.transfers:
            self._take_slot(session)  # refused, before any file expires for it
        if offer.size > limits.max_file_size:
            raise Answer(
                "too-large",
                f"{offer.name} is {human_size(offer.size)}; files of at most "
                f"{human_size(limits.max_file_size)} may be shared here",
            )
        row = self.store.upload_of(session.name, offer, room, to)
        taken = self._asks.get((identity, offer.ask))  # offered again (stalled): the same
        if taken is not None and (row is None or taken != row.token):
            raise Answer("bad-ask", f"transfer {offer.ask!r} is already in progress")
        held = self._uploads.get(row.token) if row is not None else None
        if held is not None and held.checking:
            raise Answer("busy", f"{offer.name} is being checked; wait for the answer")
        if row is None:
            self._reserve(offer.size)
        if held is not None:
            self._forget_upload(held)  # the same upload, offered again: resumed
        self._take_slot(session)
        if row is None:
            row = UploadRow(
                secrets.token_hex(16), session.name.lower(), offer.sha256, offer.size,
                offer.name, room, to, self._clock(),
            )  # fmt: skip
            self.store.begin(row)
        held_bytes = held.received if held is not None else self._held(row)
        upload = Upload(row, identity, offer.ask, session.secret, held_bytes, held_bytes, now, 0.0)
        upload.sha256 = offer.sha256 or row.sha256
        if held is not None:  # its chunks are hashed already, or on their way
            upload.hashing, upload.pending = held.hashing, held.pending
            upload.sha256 = upload.sha256 or held.sha256
        elif held_bytes:  # resumed after a restart: what it holds is hashed first
            path = self.store.partial(row.token)
            upload.pending.append(self._worker.submit(upload.hashing.absorb_file, path, held_bytes))
        self._uploads[row.token] = upload
        self._asks[(identity, offer.ask)] = row.token
        self._answer(identity, t.Accepted(ask=offer.ask, upload=row.token, offset=held_bytes))
        log.info(
            "%s offers %s (%s) for %s%s",
            session.name, offer.name, human_size(offer.size), f"#{room}" if room else to,
            f", from byte {held_bytes}" if held_bytes else "",
        )  # fmt: skip
        self._ask_more(upload)

    def _place(self, session: Session, offer: t.Offer) -> tuple[str, str]:
        """(room, "") or ("", recipient): where the file is shared, checked."""
        if offer.room:
            return self.rules.member_room(session, offer.room), ""
        recipient = self.rules.presence.holder(offer.to)
        if recipient is None:
            raise Answer("no-such-user", f"no user named {offer.to!r} is here")
        return "", recipient.name

    def _reserve(self, size: int) -> None:
        """An offer of ``size`` bytes: refused if it could never fit under the quota, or
        if the uploads in progress hold the room (no stored file expires for bytes that
        have not come: an offer that never sends any must not wipe the files)."""
        quota = self.limits.quota
        if size > quota:
            raise Answer(
                "quota",
                f"this broker keeps {human_size(quota)} of files in all; this file is bigger",
            )
        if self.store.reserved() + size > quota:
            raise Answer(
                "quota", "the broker's file storage is taken by uploads in progress; try later"
            )

    def _make_room(self, size: int, sha256: str) -> None:
        """Room for ``size`` new bytes that have come and been checked: the oldest files
        expire until they fit (nothing, if these bytes are kept already)."""
        if self.store.held(sha256):
            return
        while self.store.stored + size > self.limits.quota:
            oldest = self.store.oldest()
            if oldest is None:
                raise Answer("quota", "the broker's file storage is full")
            self._expire(oldest)

    def _expire(self, share: StoredFile) -> None:
        self.store.expire(share)
        log.info("file %d (%s) expired: the files quota was reached", share.id, share.name)
        if not share.room or not share.seq:
            return
        event = self.rules.store.event(share.room, share.seq)
        if isinstance(event, p.Chat) and event.file is not None:
            file = msgspec.structs.replace(event.file, expired=True)
            text = f"shared {file.name} ({human_size(file.size)}): expired"
            self.rules.store.rewrite(msgspec.structs.replace(event, text=text, file=file))

    def _held(self, row: UploadRow) -> int:
        try:
            return self.store.partial(row.token).stat().st_size
        except FileNotFoundError:
            with contextlib.suppress(OSError):
                self.store.partial(row.token).touch()
            return 0

    def _ask_more(self, upload: Upload) -> None:
        """Keep WINDOW chunks asked for, up to the end."""
        size = upload.row.size
        ahead = t.WINDOW * t.CHUNK_BYTES
        while upload.asked < size and upload.asked - upload.received < ahead:
            chunk = min(t.CHUNK_BYTES, size - upload.asked)
            want = t.Want(ask=upload.ask, upload=upload.row.token, offset=upload.asked, size=chunk)
            if not self._answer(upload.identity, want):
                return  # gone: it offers again when it is back
            upload.asked += chunk
        if upload.received == size and not upload.checking:
            self._check(upload)

    def _chunk(self, identity: bytes, session: Session, chunk: t.Chunk, now: float) -> None:
        upload = self._uploads.get(chunk.upload)
        if upload is None or upload.identity != identity or upload.ask != chunk.ask:
            self.counts.dropped["not-yours"] += 1
            raise Answer("not-yours", "no such upload on this connection: offer the file again")
        if upload.secret != session.secret and upload.row.sender != session.name.lower():
            self.counts.dropped["not-yours"] += 1
            raise Answer("not-yours", "that upload is another session's")
        if chunk.offset != upload.received or upload.checking:
            # asked for before the upload was offered again (its sender stalled): the
            # bytes at ``received`` are asked for anew
            self.counts.dropped["stale-chunk"] += 1
            return
        expected = min(t.CHUNK_BYTES, upload.row.size - upload.received)
        last = upload.received + expected == upload.row.size
        if len(chunk.data) != expected or (last and not (upload.sha256 or chunk.sha256)):
            self.counts.dropped["bad-chunk"] += 1
            self._cancel(
                identity, chunk.ask, "bad-chunk",
                f"chunk at {chunk.offset} of {len(chunk.data)} bytes; wanted {expected} "
                f"bytes at {upload.received}{', with the SHA-256' if last else ''}: "
                "offer the file again",
            )  # fmt: skip
            return
        if last and chunk.sha256:
            if upload.sha256 and chunk.sha256 != upload.sha256:
                self.counts.dropped["bad-chunk"] += 1
                self._cancel(
                    identity, chunk.ask, "bad-chunk",
                    "the last chunk's SHA-256 is not the offer's: offer the file again",
                )  # fmt: skip
                return
            upload.sha256 = chunk.sha256
        path = self.store.partial(upload.row.token)
        try:
            fd = os.open(path, os.O_WRONLY | os.O_NOFOLLOW)
            try:
                write_all(fd, chunk.data, chunk.offset)
            finally:
                os.close(fd)
        except OSError as exc:
            self._cancel(
                identity, chunk.ask, "storage", f"the broker cannot store it: {exc.strerror}"
            )
            return
        self._hash(upload, chunk.data)
        upload.received += expected
        upload.touched = now
        self.counts.bytes_in += expected
        wall = self._clock()
        if wall - upload.saved >= TOUCH_SECONDS:
            upload.saved = wall
            self.store.touch(upload.row.token, wall)
        self._ask_more(upload)

    def _hash(self, upload: Upload, data: bytes | memoryview) -> None:
        """Hand a chunk to the worker, which hashes it beside the loop. Should it fall
        behind (a slow machine, a fast network), the loop waits for it: the chunks held
        for hashing stay within two windows."""
        pending = upload.pending
        pending.append(self._worker.submit(upload.hashing.absorb, data))
        while pending and (pending[0].done() or len(pending) > 2 * t.WINDOW):
            pending.popleft().result()

    def _check(self, upload: Upload) -> None:
        upload.checking = True
        upload.pending.clear()  # the worker takes them in order: the conclusion comes last
        token, sha256, size = upload.row.token, upload.sha256, upload.row.size
        future = self._worker.submit(conclude, upload.hashing, token, sha256, size)
        future.add_done_callback(self._done)

    def _done(self, future: Future[Checked]) -> None:
        """The worker's answer (in the worker's thread): handed to the poll loop."""
        self._checked.append(future.result())  # _check answers every failure
        self._wake()

    def checked(self) -> Actions:
        """Share the uploads the worker found whole; refuse the others (poll loop)."""
        actions = Actions()
        while self._checked:
            found = self._checked.popleft()
            upload = self._uploads.get(found.token)
            if upload is None:
                continue  # cancelled meanwhile
            try:
                self._share(upload, found, actions)
            except Answer as answer:  # its bytes go before its sender hears why
                if self._uploads.get(found.token) is upload:
                    self._drop_upload(upload)
                self._refuse(upload.identity, upload.ask, answer.code, answer.text)
        return actions

    def _share(self, upload: Upload, found: Checked, actions: Actions) -> None:
        row = upload.row
        if found.problem:
            self.counts.dropped["hash-mismatch"] += 1
            raise Answer("hash-mismatch", found.problem)
        session = self.rules.presence.by_secret.get(upload.secret)
        if session is None:
            raise Answer("unknown-session", "your session ended before the file was stored")
        try:
            if self.store.partial(row.token).stat().st_size != row.size:
                raise Answer("storage", "the broker's disk did not keep every byte: not stored")
            self._make_room(row.size, found.sha256)  # on the bytes' own hash
            fresh = self.store.keep(row.token, found.sha256, row.size)
        except OSError as exc:
            raise Answer("storage", f"the broker cannot store it: {exc.strerror or exc}") from None
        self.store.end(row.token, keep_bytes=True)
        self._forget_upload(upload)
        media = found.media
        share = StoredFile(
            0, found.sha256, row.size, row.name, media.media if media else "",
            media.width if media else 0, media.height if media else 0, session.name,
            row.room, row.to, self.rules.clock(), 0, False,
        )  # fmt: skip
        try:
            share = self.store.add(share)
            seq = self.rules.share(session, share.shared, row.room, row.to, actions)
        except StorageFull as full:
            raise Answer("storage", full.text) from None
        if seq:
            self.store.numbered(share.id, seq)
        self.counts.uploaded += 1
        stored = t.Stored(ask=upload.ask, file=share.shared, duplicate=not fresh)
        self._answer(upload.identity, stored)
        log.info(
            "%s shared %s (%s) as file %d", session.name, row.name, human_size(row.size), share.id
        )

    def _cancel(self, identity: bytes, ask: str, code: str, text: str) -> None:
        """End transfer ``ask`` of this connection, and tell it why."""
        token = self._asks.get((identity, ask))
        if token is not None and token in self._uploads:
            self._drop_upload(self._uploads[token])
        self._close_fetch((identity, ask))
        self._refuse(identity, ask, code, text)

    def _close_fetch(self, key: tuple[bytes, str]) -> None:
        fetch = self._fetches.pop(key, None)
        if fetch is not None:
            self._release(fetch.secret)

    def _release(self, secret: str) -> None:
        self._busy[secret] -= 1
        if self._busy[secret] <= 0:
            del self._busy[secret]

    def _drop_upload(self, upload: Upload) -> None:
        self._forget_upload(upload)
        self.store.end(upload.row.token)

    def _forget_upload(self, upload: Upload) -> None:
        self._uploads.pop(upload.row.token, None)
        self._asks.pop((upload.identity, upload.ask), None)
        self._release(upload.secret)

    # --- downloads --------------------------------------------------------------------

    def _fetchable(self, session: Session, number: int) -> StoredFile:
        share = self.store.get(number)
        if share is None or not share.may_fetch(session.name, session.rooms):
            if share is not None and share.room:
                raise RoomAnswer(share.room, f"file {number} is in #{share.room}: join it to fetch")
            raise Answer("no-such-file", f"there is no file {number} that you may fetch")
        if share.expired:
            raise Answer("expired", f"file {number} ({share.name}) expired: it is no longer kept")
        return share

    def _get(self, identity: bytes, session: Session, get: t.Get, now: float) -> None:
        fetch = self._fetches.get((identity, get.ask))
        if fetch is None or fetch.secret != session.secret or fetch.share.id != get.file:
            self.counts.dropped["not-open"] += 1
            raise Answer("not-open", f"file {get.file} is not open here: send open first")
        share = self._fetchable(session, get.file)  # still a member, still kept
        if get.offset < fetch.served:  # asked again: open it again to start over
            self.counts.dropped["bad-range"] += 1
            raise Answer("bad-range", f"bytes before {fetch.served} were sent: open it again")
        if get.size == 0 or get.offset + get.size > share.size:
            self.counts.dropped["bad-range"] += 1
            raise Answer(
                "bad-range",
                f"file {share.id} has {share.size} bytes; asked {get.size} at {get.offset}",
            )
        try:
            fd = os.open(self.store.content(share.sha256), os.O_RDONLY | os.O_NOFOLLOW)
            try:
                data = os.pread(fd, get.size, get.offset)
            finally:
                os.close(fd)
        except OSError as exc:
            raise Answer(
                "storage", f"the broker cannot read file {share.id}: {exc.strerror}"
            ) from None
        if len(data) != get.size:
            raise Answer(
                "storage", f"file {share.id} is shorter on the broker's disk than it should be"
            )
        fetch.touched = now
        fetch.served = get.offset + get.size
        if get.offset + get.size == share.size:  # the last bytes: its slot is free
            self._close_fetch((identity, get.ask))
        if self._answer(identity, t.Data(ask=get.ask, file=share.id, offset=get.offset, data=data)):
            self.counts.bytes_out += len(data)

    def _take_slot(self, session: Session) -> None:
        if self._busy[session.secret] >= self.limits.transfers:
            raise Answer(
                "too-many-transfers",
                f"at most {self.limits.transfers} transfers at once; wait for one to end",
            )
        self._busy[session.secret] += 1

    def _listing(self, identity: bytes, session: Session, ask: str, room: str) -> None:
        if room.startswith("@"):
            shares = self.store.between(session.name, MAX_LISTED)
        else:
            try:
                room = p.check_room(room)
            except InvalidInput as exc:
                raise Answer("bad-room", str(exc)) from None
            shares = self.store.in_room(room, MAX_LISTED)
        listed = tuple(t.Listed(s.shared, s.sender, s.ts, s.room, s.to) for s in shares)
        self._answer(identity, t.Listing(ask=ask, room=room, files=listed))

    # --- timers -----------------------------------------------------------------------

    def expire(self, now: float) -> None:
        """Once a beat: idle downloads are closed, idle uploads deleted."""
        for key, fetch in list(self._fetches.items()):
            if now - fetch.touched >= OPEN_IDLE_SECONDS:
                self._close_fetch(key)
        timeout = self.limits.upload_timeout
        for upload in list(self._uploads.values()):
            if now - upload.touched >= timeout and not upload.checking:
                self._drop_upload(upload)
                self._refuse(upload.identity, upload.ask, "timed-out", "the upload stood idle")
        for row in self.store.idle_since(self._clock() - timeout):
            if row.token not in self._uploads:
                log.info("an upload of %s by %s stood idle: deleted", row.name, row.sender)
                self.store.end(row.token)

    def close(self) -> None:
        self._worker.shutdown(wait=True, cancel_futures=True)
        self.store.close()

    # --- answers ----------------------------------------------------------------------

    def _answer(self, identity: bytes, answer: t.Answer) -> bool:
        """Send one answer; False (counted) if its connection is gone or not reading."""
        if self._send(identity, t.encode_answer(answer)):
            return True
        self.counts.dropped["unread"] += 1
        return False

    def _refuse(self, identity: bytes, ask: str, code: str, text: str, room: str = "") -> None:
        self.counts.dropped[code] += 1
        self._answer(identity, t.Refusal(ask=ask, code=code, text=text, room=room))
