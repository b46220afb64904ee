"""The asyncio client: ``async with AsyncClient(name="bot") as chat: ...``.

The same ClientCore as the blocking Client; only the waiting is done with asyncio.
A background task keeps the session alive (pings, rejoin, acknowledgements) whether
or not the program is reading.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import AsyncIterator, Callable, Iterable
from pathlib import Path
from types import TracebackType

import zmq
import zmq.asyncio
from zmq.utils.monitor import parse_monitor_message

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


class AsyncClient:
    def __init__(
        self,
        name: str,
        host: str = DEFAULT_HOST,
        port: int = DEFAULT_PORT,
        rooms: Iterable[str] = ("general",),
        *,
        history: int = DEFAULT_HISTORY,
        context: zmq.asyncio.Context | None = None,
        keys: Keys | None = None,
        quiet: bool = False,
        password: str | None = None,
        register: bool = False,
    ) -> None:
        """``keys`` (transport.Keys) for a broker in secure mode. ``quiet``: only post;
        ``password`` and ``register``: an accounts broker's login (see Client)."""
        check_login(password, keys)
        self.core = ClientCore(
            name, rooms, history=history, secure=keys is not None, quiet=quiet,
            password=password, register=register,
        )  # fmt: skip
        self.endpoints = Endpoints(host, port)
        self.keys = keys
        self._monitor: zmq.asyncio.Socket | None = None
        self._ctx = context or zmq.asyncio.Context.instance()
        self._push = self._ctx.socket(zmq.PUSH)
        # Sends are never awaited: they go out at once or fail (Again: no broker). An
        # awaited send with NOBLOCK would queue behind the pump's wait for POLLOUT, and
        # wait with it for a broker that is gone; the plain socket below never waits.
        self._send_now: zmq.Socket[bytes] = zmq.Socket.shadow(self._push.underlying)
        self._sub = self._ctx.socket(zmq.SUB)
        self._files = self._ctx.socket(zmq.DEALER)
        self._files_now: zmq.Socket[bytes] = zmq.Socket.shadow(self._files.underlying)
        self.transfers = Transfers(lambda: self.core.secret)
        self._changed = asyncio.Event()  # set when events arrive or the state moves
        self._pump: asyncio.Task[None] | None = None

    @property
    def name(self) -> str:
        return self.core.name

    @property
    def rooms(self) -> tuple[str, ...]:
        return tuple(self.core.rooms)

    async def join(self, timeout: float = 5.0) -> None:
        """Connect and join; returns once the broker has welcomed this client."""
        if self.core.state is not State.NEW:
            raise ClientClosed("join() may be called once per AsyncClient")
        self._monitor = connect(self._push, self._sub, self.endpoints, self.core, self.keys)
        connect_files(self._files, self.endpoints, self.keys)
        self.core.start(time.monotonic(), timeout, self.endpoints.describe())
        self._pump = asyncio.get_running_loop().create_task(self._run())
        while self.core.joining:
            await self._wait_change()
        if self.core.failure is not None:
            await self._stop_pump()
            self._close_sockets()
            raise self.core.failure

    async def close(self, reason: str = "") -> None:
        if self._push.closed:
            return
        goodbye = self.core.leave(reason)
        if goodbye and self._pump is not None:
            try:
                for frames in goodbye:
                    self._send_now.send_multipart(frames, zmq.NOBLOCK)
            except zmq.Again:
                self.core.left()  # the broker is away; it will see the connection drop
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(LEAVE_WAIT_SECONDS):
                    while self.core.leaving:
                        await self._wait_change()
        await self._stop_pump()
        self._close_sockets()

    async def __aenter__(self) -> AsyncClient:
        await self.join()
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.close()

    async def send(self, text: str, room: str | None = None) -> str:
        """Hand one line to the broker (never blocks); see Client.send."""
        id_, frames = self.core.say(text, room, time.monotonic())
        await self._submit(frames, id_)
        return id_

    async def act(self, text: str, room: str | None = None) -> str:
        id_, frames = self.core.say(text, room, time.monotonic(), action=True)
        await self._submit(frames, id_)
        return id_

    async def msg(self, to: str, text: str) -> str:
        id_, frames = self.core.msg(to, text, time.monotonic())
        await self._submit(frames, id_)
        return id_

    async def enter(self, room: str, timeout: float = 5.0) -> bool:
        """Enter a room; True once in it, False after ``timeout`` (see Client.enter)."""
        await self._submit(self.core.enter(room))
        canonical = check_room(room)
        return await self._wait(lambda: canonical in self.core.rooms, timeout)

    async def part(self, room: str | None = None, reason: str = "", timeout: float = 5.0) -> bool:
        canonical = check_room(room) if room else (self.core.rooms or [""])[0]
        await self._submit(self.core.part(room, reason))
        return await self._wait(lambda: canonical not in self.core.rooms, timeout)

    async def _wait(self, done: Callable[[], bool], timeout: float) -> bool:
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(timeout):
                while not done():
                    await self._wait_change()
        return done()

    async def nick(self, name: str) -> None:
        await self._submit(self.core.nick(name))

    async def moderate(self, op: str, name: str, reason: str = "") -> None:
        """Admins, in secure mode: "kick", "ban" or "unban" ``name``; the answer comes
        as a Message."""
        await self._submit(self.core.moderate(op, name, reason))

    async def change_password(self, old: str, new: str) -> None:
        """An accounts broker: change your password (see Client.change_password)."""
        await self._submit(self.core.change_password(old, new))

    async def set_topic(self, text: str, room: str | None = None) -> None:
        await self._submit(self.core.set_topic(room, text))

    async def who(
        self, room: str | None = None, timeout: float = 5.0, after: str = ""
    ) -> Members | None:
        """Who is in a room, and its topic (see Client.who)."""
        id_, frames = self.core.who(room, after)
        answer = await self._ask(id_, frames, timeout)
        return answer if isinstance(answer, Members) else None

    async def query_topic(self, room: str | None = None) -> None:
        await self._submit(self.core.query_topic(room))

    async def list_rooms(self, timeout: float = 5.0) -> tuple[RoomInfo, ...] | None:
        """The rooms that have members (see Client.list_rooms)."""
        id_, frames = self.core.list_rooms()
        answer = await self._ask(id_, frames, timeout)
        return answer if isinstance(answer, tuple) else None

    async def _ask(self, id_: str, frames: list[bytes], timeout: float) -> Answer | None:
        try:
            await self._submit(frames)
        except NotDelivered:
            self.core.take_answer(id_)
            raise
        await self._wait(lambda: self.core.answered_with(id_), timeout)
        return self.core.take_answer(id_)

    async def history(self, count: int = 20, room: str | None = None) -> None:
        await self._submit(self.core.lookup(room, count))

    # --- files ----------------------------------------------------------------------------

    async def send_file(
        self,
        path: str | Path,
        room: str | None = None,
        to: str | None = None,
        *,
        progress: Progress | None = None,
        name: str = "",
    ) -> SharedFile:
        """Share a file (see Client.send_file); the chat goes on meanwhile. Cancelling
        the awaiting task cancels the transfer."""
        up = await self.start_upload(path, room, to, progress=progress, name=name)
        await self.finish(up)
        assert up.shared is not None
        return up.shared

    async def start_upload(
        self,
        path: str | Path,
        room: str | None = None,
        to: str | None = None,
        *,
        progress: Progress | None = None,
        name: str = "",
    ) -> Upload:
        """Begin sharing a file and return its transfer at once (``finish`` waits for
        it, ``cancel_transfer`` stops it)."""
        if self._push.closed:
            raise ClientClosed("this client is closed")
        source = Path(path).expanduser()
        place = share_place(room, to, self.core.rooms)
        up = self.transfers.upload(source, progress=progress, name=name, **place)
        self._flush_files()
        return up

    async def get_file(
        self, file_id: int, dest: str | Path | None = None, *, progress: Progress | None = None
    ) -> Path:
        """Fetch a shared file (see Client.get_file)."""
        down = self.start_download(file_id, dest, progress=progress)
        await self.finish(down)
        assert down.path is not None
        return down.path

    def start_download(
        self, file_id: int, dest: str | Path | None = None, *, progress: Progress | None = None
    ) -> Download:
        """Begin fetching a shared file and return its transfer at once."""
        if self._push.closed:
            raise ClientClosed("this client is closed")
        folder, chosen = destination(dest)
        down = self.transfers.download(file_id, folder, chosen, progress)
        self._flush_files()
        return down

    async def finish(self, transfer: Upload | Download) -> None:
        """Wait for a transfer to end; TransferFailed if it did not end whole."""
        try:
            while not transfer.over:
                if self.core.ended is not None:
                    raise TransferFailed("ended", "the session ended")
                if self._pump is None or self._pump.done():
                    raise TransferFailed("ended", "the client is closed")
                await self._wait_change()
        except BaseException:
            self.cancel_transfer(transfer.ask)
            raise
        if transfer.error is not None:
            raise transfer.error

    def cancel_transfer(self, ask: str) -> bool:
        """Stop a transfer (its ``ask``); False if none is running by that name."""
        cancelled = self.transfers.cancel(ask)
        self._flush_files()
        self._changed.set()  # a task in finish() sees it at once
        return cancelled

    async def list_files(
        self, room: str | None = None, timeout: float = 5.0
    ) -> tuple[t.Listed, ...]:
        """The files shared in a room (see Client.list_files)."""
        ask = self.transfers.listing(listed_room(room, self.core.rooms))
        self._flush_files()
        await self._wait(lambda: ask in self.transfers.answered, timeout)
        return self.transfers.take_listing(ask)

    def _flush_files(self) -> None:
        send_files(self._files_now, self.transfers)

    async def _submit(self, frames: list[bytes] | None, id_: str = "") -> None:
        if self._push.closed:
            raise ClientClosed("this client is closed")
        apply_subscriptions(self._sub, self.core)
        if frames is None:
            return
        try:
            self._send_now.send_multipart(frames, zmq.NOBLOCK)
        except zmq.Again:
            self.core.forget(id_)
            raise NotDelivered("the broker is unreachable, reconnecting…") from None

    async def receive(self, timeout: float | None = None) -> Message | None:
        """The next Message; None after ``timeout`` seconds, or once the session has
        ended for good (``core.ended``: kicked, banned) and every Message was read."""
        if self._push.closed:
            raise ClientClosed("this client is closed")
        if self.core.events:  # most calls, on a busy room: no timer to set up
            return self.core.events.popleft()
        try:
            async with asyncio.timeout(timeout):
                while not self.core.events:
                    if self.core.ended is not None:
                        return None
                    await self._wait_change()
        except TimeoutError:
            return None
        return self.core.events.popleft()

    async def __aiter__(self) -> AsyncIterator[Message]:
        while not self._push.closed and (self.core.events or self.core.ended is None):
            msg = await self.receive()
            if msg is not None:
                yield msg

    async def settle(self, timeout: float = 5.0) -> bool:
        """Wait until the broker has answered everything sent so far (True), or for
        ``timeout`` seconds."""
        try:
            id_, frames = self.core.barrier()
            await self._submit(frames)
        except NotDelivered:
            return False
        return await self._wait(lambda: self.core.answered(id_), timeout)

    async def flush(self, timeout: float = 5.0) -> bool:
        """Wait until every sent line is acknowledged or reported; True if all were."""
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(timeout):
                while self.core.unacknowledged:
                    await self._wait_change()
        return not self.core.unacknowledged

    # --- the pump -----------------------------------------------------------------------

    async def _wait_change(self) -> None:
        self._changed.clear()
        await self._changed.wait()

    async def _run(self) -> None:
        poller = zmq.asyncio.Poller()
        poller.register(self._sub, zmq.POLLIN)
        poller.register(self._files, zmq.POLLIN)
        if self._monitor is not None:
            poller.register(self._monitor, zmq.POLLIN)
        while True:
            now = time.monotonic()
            if now >= self.core.deadline():
                self.core.tick(now)
            apply_subscriptions(self._sub, self.core)
            if self.core.has_outbox:
                poller.register(self._push, zmq.POLLOUT)
            elif self._push in poller:
                poller.unregister(self._push)
            deadline = min(self.core.deadline(), self.transfers.deadline())
            timeout = max(0, int((deadline - now) * 1000))
            ready = dict(await poller.poll(timeout))
            if self._push in ready:
                for frames in self.core.take_outbox():
                    try:
                        self._send_now.send_multipart(frames, zmq.NOBLOCK)
                    except zmq.Again:
                        break  # control frames are sent again by the core's timers
            if self._sub in ready:
                while True:
                    try:
                        frames = await self._sub.recv_multipart(zmq.NOBLOCK)
                    except zmq.Again:
                        break
                    self.core.on_publish(frames, time.monotonic())
            if self._files in ready:
                self._drain_files()
            if self.transfers.active:
                self.transfers.tick(time.monotonic())
                self._flush_files()
            if self._monitor is not None and self._monitor in ready:
                event = parse_monitor_message(await self._monitor.recv_multipart())
                self.core.on_handshake(handshake_problem(event["event"], event["value"]))
            if self.core.take_reconnect(time.monotonic()):
                reconnect(self._push, self._sub, self.endpoints)
            if time.monotonic() >= self.core.deadline():
                self.core.tick(time.monotonic())
            if self.core.events or self.core.state is not State.JOINING or self._files in ready:
                self._changed.set()
            # a poll that finds traffic waiting returns without yielding: give the other
            # tasks (the prompt, the reader of events) their turn on every round
            await asyncio.sleep(0)

    def _drain_files(self) -> None:
        drain_files(self._files_now, self.transfers)

    async def _stop_pump(self) -> None:
        if self._pump is not None:
            self._pump.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._pump
            self._pump = None

    def _close_sockets(self) -> None:
        close_monitor(self._sub, self._monitor)
        self._push.close()
        self._sub.close()
        self._files.close()
