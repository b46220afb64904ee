"""The blocking client: ``with Client(name="bot") as chat: for msg in chat: ...``.

All rules live in ClientCore; this adapter only polls the two sockets. It does its
work (pings, rejoin, acknowledgements) while the program is inside ``receive``,
``send`` or iteration, so a bot should keep calling ``receive``.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable, Iterator
from pathlib import Path
from types import TracebackType

import zmq
from zmq.utils.monitor import recv_monitor_message

from zchat.client.core import LEAVE_WAIT_SECONDS, ClientCore, State
from zchat.client.message import Answer, Members, Message, RoomInfo
from zchat.client.transfers import (
    Download,
    Progress,
    Transfers,
    Upload,
    destination,
    listed_room,
    share_place,
)
from zchat.client.transport import (
    DEFAULT_HOST,
    DEFAULT_PORT,
    Endpoints,
    Keys,
    apply_subscriptions,
    check_login,
    close_monitor,
    connect,
    connect_files,
    drain_files,
    handshake_problem,
    reconnect,
    send_files,
)
from zchat.errors import ClientClosed, NotDelivered, TransferFailed
from zchat.protocol import DEFAULT_HISTORY, SharedFile, check_room
from zchat.protocol import transfer as t


class Client:
    def __init__(
        self,
        name: str,
        host: str = DEFAULT_HOST,
        port: int = DEFAULT_PORT,
        rooms: Iterable[str] = ("general",),
        *,
        history: int = DEFAULT_HISTORY,
        context: zmq.Context[zmq.Socket[bytes]] | None = None,
        keys: Keys | None = None,
        quiet: bool = False,
        password: str | None = None,
        register: bool = False,
    ) -> None:
        """``keys`` (transport.Keys) for a broker in secure mode. ``quiet``: only post
        (the broker announces neither the join nor the leave, and lists no member).
        ``password``: an accounts broker's login, with ``keys=Keys.for_login(KEY)``
        (never sent without keys); ``register``: make the account first, if the
        broker lets people do so."""
        check_login(password, keys)
        self.core = ClientCore(
            name, rooms, history=history, secure=keys is not None, quiet=quiet,
            password=password, register=register,
        )  # fmt: skip
        self.endpoints = Endpoints(host, port)
        self.keys = keys
        self._ctx = context or zmq.Context.instance()
        self._push: zmq.Socket[bytes] = self._ctx.socket(zmq.PUSH)
        self._sub: zmq.Socket[bytes] = self._ctx.socket(zmq.SUB)
        self._monitor: zmq.Socket[bytes] | None = None
        self._files: zmq.Socket[bytes] = self._ctx.socket(zmq.DEALER)
        self.transfers = Transfers(lambda: self.core.secret)
        self._poller = zmq.Poller()
        self._poller.register(self._sub, zmq.POLLIN)
        self._poller.register(self._files, zmq.POLLIN)

    @property
    def name(self) -> str:
        return self.core.name

    @property
    def rooms(self) -> tuple[str, ...]:
        return tuple(self.core.rooms)

    # --- life cycle ------------------------------------------------------------------

    def join(self, timeout: float = 5.0) -> None:
        """Connect and join; returns once the broker has welcomed this client.

        Raises JoinRefused (name taken or invalid, key refused) or BrokerUnreachable."""
        if self.core.state is not State.NEW:
            raise ClientClosed("join() may be called once per Client")
        self._monitor = connect(self._push, self._sub, self.endpoints, self.core, self.keys)
        connect_files(self._files, self.endpoints, self.keys)
        self._poller.register(self._monitor, zmq.POLLIN)
        self.core.start(time.monotonic(), timeout, self.endpoints.describe())
        while self.core.joining:
            self._step(self.core.deadline())
        if self.core.failure is not None:
            self._close_sockets()
            raise self.core.failure

    def close(self, reason: str = "") -> None:
        """Leave (with an optional reason) and close the sockets. Idempotent."""
        if self._push.closed:
            return
        goodbye = self.core.leave(reason)
        if goodbye:
            try:
                for frames in goodbye:
                    self._push.send_multipart(frames, zmq.NOBLOCK)
            except zmq.Again:
                self.core.left()  # the broker is away; it will see the connection drop
            end = time.monotonic() + LEAVE_WAIT_SECONDS
            while self.core.leaving and time.monotonic() < end:
                self._step(end)
        self._close_sockets()

    def __enter__(self) -> Client:
        self.join()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()

    # --- talking ------------------------------------------------------------------------

    def send(self, text: str, room: str | None = None) -> str:
        """Hand one line to the broker for ``room`` (default: the first room); returns
        its id. Raises InvalidInput (empty, too long) or NotDelivered (broker away, not
        in that room). A line the broker never echoes is reported later as a system
        Message."""
        self._step(time.monotonic())  # notice a broker restart before sending
        id_, frames = self.core.say(text, room, time.monotonic())
        self._submit(frames, id_)
        return id_

    def act(self, text: str, room: str | None = None) -> str:
        """An action line: ``act("waves")`` shows as ``* Alice waves``."""
        id_, frames = self.core.say(text, room, time.monotonic(), action=True)
        self._submit(frames, id_)
        return id_

    def msg(self, to: str, text: str) -> str:
        """A private line, seen by ``to`` and by this client only."""
        id_, frames = self.core.msg(to, text, time.monotonic())
        self._submit(frames, id_)
        return id_

    def enter(self, room: str, timeout: float = 5.0) -> bool:
        """Enter a room; returns once in it (True), or False after ``timeout`` (the
        broker's reason, if any, comes as a system Message). Its recent history and
        your join notice follow as Messages."""
        self._submit(self.core.enter(room))
        canonical = check_room(room)
        return self._wait(lambda: canonical in self.core.rooms, timeout)

    def part(self, room: str | None = None, reason: str = "", timeout: float = 5.0) -> bool:
        """Leave one room; returns once out of it (True), or False after ``timeout``."""
        canonical = check_room(room) if room else (self.core.rooms or [""])[0]
        self._submit(self.core.part(room, reason))
        return self._wait(lambda: canonical not in self.core.rooms, timeout)

    def _wait(self, done: Callable[[], bool], timeout: float) -> bool:
        end = time.monotonic() + timeout
        while not done() and time.monotonic() < end:
            self._step(min(end, self.core.deadline()))
        return done()

    def nick(self, name: str) -> None:
        self._submit(self.core.nick(name))

    def kick(self, name: str, reason: str = "") -> None:
        """Admins, in secure mode: end ``name``'s session; the answer comes as a Message."""
        self._submit(self.core.moderate("kick", name, reason))

    def ban(self, name: str, reason: str = "") -> None:
        """Admins, in secure mode: kick ``name`` and refuse them until unbanned."""
        self._submit(self.core.moderate("ban", name, reason))

    def unban(self, name: str) -> None:
        self._submit(self.core.moderate("unban", name))

    def change_password(self, old: str, new: str) -> None:
        """An accounts broker: change your password. The answer comes as a message
        ("password changed", or why not); once changed, a rejoin after a broker
        restart logs in with the new one."""
        self._submit(self.core.change_password(old, new))

    def set_topic(self, text: str, room: str | None = None) -> None:
        self._submit(self.core.set_topic(room, text))

    def who(self, room: str | None = None, timeout: float = 5.0, after: str = "") -> Members | None:
        """Who is in a room (any room; default: your first) and its topic, or None if
        the broker did not answer within ``timeout``. The answer also comes as a system
        Message (``in #room: …``), with the same record in its ``data``. A big room is
        told a page at a time: ``after`` (a name) asks for the names after it."""
        id_, frames = self.core.who(room, after)
        answer = self._ask(id_, frames, timeout)
        return answer if isinstance(answer, Members) else None

    def query_topic(self, room: str | None = None) -> None:
        """Ask for a room's topic; the answer comes as a system Message."""
        self._submit(self.core.query_topic(room))

    def list_rooms(self, timeout: float = 5.0) -> tuple[RoomInfo, ...] | None:
        """The rooms that have members, by name (each a RoomInfo: room, members, topic),
        or None if the broker did not answer within ``timeout``. The answer also comes
        as system Messages, one per room, each with its RoomInfo in ``data``."""
        id_, frames = self.core.list_rooms()
        answer = self._ask(id_, frames, timeout)
        return answer if isinstance(answer, tuple) else None

    def _ask(self, id_: str, frames: list[bytes], timeout: float) -> Answer | None:
        try:
            self._submit(frames)
        except NotDelivered:
            self.core.take_answer(id_)
            raise
        self._wait(lambda: self.core.answered_with(id_), timeout)
        return self.core.take_answer(id_)

    def history(self, count: int = 20, room: str | None = None) -> None:
        """Ask for the last ``count`` lines of a room; they come as Messages."""
        self._submit(self.core.lookup(room, count))

    # --- files ----------------------------------------------------------------------------

    def send_file(
        self,
        path: str | Path,
        room: str | None = None,
        to: str | None = None,
        *,
        progress: Progress | None = None,
        name: str = "",
    ) -> SharedFile:
        """Share a file in ``room`` (default: your first), or privately with ``to``;
        returns it as shared (its ``id`` is what ``get_file`` takes) once the broker
        has it whole and checked. ``progress(done, total)`` is called as bytes go;
        ``name``: what the chat calls it (default: the file's own name).
        Raises InvalidInput (no such file) or TransferFailed (refused: too large, the
        quota, a hash mismatch; ``code`` says which)."""
        self._check_open()
        source = Path(path).expanduser()
        place = share_place(room, to, self.core.rooms)
        up = self.transfers.upload(source, progress=progress, name=name, **place)
        self._run_transfer(up)
        assert up.shared is not None
        return up.shared

    def get_file(
        self,
        file_id: int,
        dest: str | Path | None = None,
        *,
        progress: Progress | None = None,
    ) -> Path:
        """Fetch shared file ``file_id`` into ``dest``: a folder (default: the current
        one), where it is saved under its own name made safe, or a file name. A name in
        use is never overwritten (``name (1).ext``). Returns the path once the file is
        whole and its SHA-256 checked; a download stopped half-way resumes on the next
        call. Raises TransferFailed (no such file, not in its room, expired, …)."""
        self._check_open()
        folder, chosen = destination(dest)
        down = self.transfers.download(file_id, folder, chosen, progress)
        self._run_transfer(down)
        assert down.path is not None
        return down.path

    def list_files(self, room: str | None = None, timeout: float = 5.0) -> tuple[t.Listed, ...]:
        """The files shared in ``room`` (default: your first; ``"@"``: the private ones
        to and from you), oldest first. BrokerUnreachable if no answer in ``timeout``."""
        self._check_open()
        ask = self.transfers.listing(listed_room(room, self.core.rooms))
        self._flush_files()
        self._wait(lambda: ask in self.transfers.answered, timeout)
        return self.transfers.take_listing(ask)

    def _run_transfer(self, transfer: Upload | Download) -> None:
        self._flush_files()
        try:
            while not transfer.over:
                if self.core.ended is not None:
                    self.transfers.cancel(transfer.ask)
                    raise TransferFailed("ended", "the session ended")
                self._step(self.core.deadline())
        except BaseException:  # interrupted (Ctrl-C): a download's part is kept
            self.transfers.cancel(transfer.ask, keep=True)
            self._flush_files()
            raise
        if transfer.error is not None:
            raise transfer.error

    def _flush_files(self) -> None:
        send_files(self._files, self.transfers)

    def _submit(self, frames: list[bytes] | None, id_: str = "") -> None:
        self._check_open()
        apply_subscriptions(self._sub, self.core)
        if frames is None:
            return
        try:
            self._push.send_multipart(frames, zmq.NOBLOCK)
        except zmq.Again:
            self.core.forget(id_)
            raise NotDelivered("the broker is unreachable, reconnecting…") from None

    def receive(self, timeout: float | None = None) -> Message | None:
        """The next Message, or None after ``timeout`` seconds (None: wait for ever), or
        once the session has ended for good (``core.ended``: kicked, banned) and every
        Message was read."""
        self._check_open()
        if self.core.events:  # most calls, on a busy room
            return self.core.events.popleft()
        end = None if timeout is None else time.monotonic() + timeout
        while not self.core.events:
            if self.core.ended is not None:
                return None
            now = time.monotonic()
            if end is not None and now >= end:
                return None
            self._step(self.core.deadline() if end is None else min(end, self.core.deadline()))
        return self.core.events.popleft()

    def __iter__(self) -> Iterator[Message]:
        while not self._push.closed and (self.core.events or self.core.ended is None):
            msg = self.receive()
            if msg is not None:
                yield msg

    def settle(self, timeout: float = 5.0) -> bool:
        """Wait until the broker has answered everything sent so far (True), or for
        ``timeout`` seconds."""
        try:
            id_, frames = self.core.barrier()
            self._submit(frames)
        except NotDelivered:
            return False
        return self._wait(lambda: self.core.answered(id_), timeout)

    def flush(self, timeout: float = 5.0) -> bool:
        """Wait until every sent line is acknowledged or reported; True if all were."""
        end = time.monotonic() + timeout
        while self.core.unacknowledged and time.monotonic() < end:
            self._step(min(end, self.core.deadline()))
        return not self.core.unacknowledged

    # --- the loop -----------------------------------------------------------------------

    def _step(self, until: float) -> None:
        """Wait for traffic until ``until`` (monotonic), and handle what came."""
        now = time.monotonic()
        until = min(until, self.transfers.deadline())
        if now >= self.core.deadline():
            self.core.tick(now)
        apply_subscriptions(self._sub, self.core)
        if self.core.has_outbox:
            self._poller.register(self._push, zmq.POLLOUT)
        elif self._push in self._poller:
            self._poller.unregister(self._push)
        ready = dict(self._poller.poll(max(0, int((until - now) * 1000))))
        if self._push in ready:
            for frames in self.core.take_outbox():
                try:
                    self._push.send_multipart(frames, zmq.NOBLOCK)
                except zmq.Again:
                    break  # control frames (join, ping) are sent again by the core's timers
        if self._sub in ready:
            self._drain()
        if self._files in ready:
            self._drain_files()
        if self._monitor is not None and self._monitor in ready:
            event = recv_monitor_message(self._monitor)
            self.core.on_handshake(handshake_problem(event["event"], event["value"]))
        now = time.monotonic()
        if self.transfers.active:
            self.transfers.tick(now)
        self._flush_files()
        if self.core.take_reconnect(now):
            reconnect(self._push, self._sub, self.endpoints)
        if now >= self.core.deadline():
            self.core.tick(now)

    def _drain(self) -> None:
        while True:
            try:
                frames = self._sub.recv_multipart(zmq.NOBLOCK)
            except zmq.Again:
                return
            self.core.on_publish(frames, time.monotonic())

    def _drain_files(self) -> None:
        drain_files(self._files, self.transfers)

    def _check_open(self) -> None:
        if self._push.closed:
            raise ClientClosed("this client is closed")

    def _close_sockets(self) -> None:
        close_monitor(self._sub, self._monitor)
        self._push.close()
        self._sub.close()
        self._files.close()
