"""``zchat join``: the chat in a terminal, or line by line when stdin is a pipe.

Both modes use the same AsyncClient a bot uses. In a terminal, prompt_toolkit keeps
the line being typed intact while incoming lines are printed above it.
"""

from __future__ import annotations

import asyncio
import contextlib
import signal
import sys
import threading
from collections.abc import Callable
from dataclasses import dataclass

from zchat.client.aio import AsyncClient
from zchat.client.core import ACK_SECONDS
from zchat.client.message import Message
from zchat.client.render import render
from zchat.errors import BrokerUnreachable, InvalidInput, JoinRefused, NotDelivered
from zchat.protocol import check_reason

HELP = """\
commands:
  /help            show this list
  /quit [reason]   leave the chat (Ctrl-D or Ctrl-C also leave)
  //text           send a line that starts with "/"
anything else is sent to the current room"""


@dataclass(frozen=True)
class TerminalConfig:
    name: str
    host: str
    port: int
    rooms: tuple[str, ...]
    time_format: str = "time"
    connect_timeout: float = 10.0


def run(config: TerminalConfig, interactive: bool) -> int:
    """Join, chat until the user leaves, return the exit code."""
    return asyncio.run(_main(config, interactive))


async def _main(config: TerminalConfig, interactive: bool) -> int:
    client = AsyncClient(config.name, config.host, config.port, config.rooms)
    try:
        await client.join(timeout=config.connect_timeout)
    except (JoinRefused, BrokerUnreachable) as exc:
        print(f"zchat: {exc}", file=sys.stderr)
        return 1
    chat = _Chat(client, config)
    try:
        if interactive:
            await chat.interactive()
        else:
            await chat.lines()
    finally:
        await client.close(chat.reason)
    return 0


class _Chat:
    def __init__(self, client: AsyncClient, config: TerminalConfig) -> None:
        self.client = client
        self.config = config
        self.room = client.rooms[0]
        self.reason = ""
        self.out: Callable[[str], None] = print

    def show(self, msg: Message) -> None:
        self.out(render(msg, self.config.time_format, self.room))

    def note(self, text: str) -> None:
        self.out(f"*** {text}")

    async def _print_events(self) -> None:
        async for msg in self.client:
            self.show(msg)

    async def handle(self, line: str) -> bool:
        """One line typed by the user: a command, or a line to send. False: leave."""
        if line.startswith("/") and not line.startswith("//"):
            command, _, rest = line[1:].partition(" ")
            match command.lower():
                case "quit" | "exit":
                    try:
                        self.reason = check_reason(rest.strip())
                    except InvalidInput as exc:
                        self.note(f"not leaving: {exc}")
                    else:
                        return False
                case "help":
                    for help_line in HELP.splitlines():
                        self.out(help_line)
                case _:
                    self.note(f"unknown command /{command}, try /help")
            return True
        if not line.strip():
            return True
        text = line.removeprefix("/")
        try:
            await self.client.send(text, self.room)
        except InvalidInput as exc:
            self.note(f"not sent: {exc}")
        except NotDelivered as exc:
            self.note(f"not sent ({exc.reason}): {text}")
        return True

    async def interactive(self) -> None:
        from prompt_toolkit import PromptSession
        from prompt_toolkit.patch_stdout import patch_stdout

        # the line typed disappears on Enter: the broker's echo, stamped, replaces it
        session: PromptSession[str] = PromptSession(erase_when_done=True)
        with patch_stdout(raw=True):
            printer = asyncio.get_running_loop().create_task(self._print_events())
            try:
                while True:
                    try:
                        line = await session.prompt_async(f"#{self.room}> ")
                    except (EOFError, KeyboardInterrupt):
                        break
                    if not await self.handle(line):
                        break
            finally:
                await _cancel(printer)

    async def lines(self) -> None:
        """stdin is not a terminal: one line in is one line sent, one event one line out."""
        self.out = lambda text: print(text, flush=True)
        loop = asyncio.get_running_loop()
        inbox: asyncio.Queue[str | None] = asyncio.Queue()

        def read() -> None:
            for line in sys.stdin:
                loop.call_soon_threadsafe(inbox.put_nowait, line.rstrip("\r\n"))
            loop.call_soon_threadsafe(inbox.put_nowait, None)

        threading.Thread(target=read, name="zchat-stdin", daemon=True).start()
        stop = asyncio.Event()
        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.add_signal_handler(sig, stop.set)
        printer = loop.create_task(self._print_events())
        try:
            while not stop.is_set():
                getter = loop.create_task(inbox.get())
                stopper = loop.create_task(stop.wait())
                done, _ = await asyncio.wait({getter, stopper}, return_when="FIRST_COMPLETED")
                stopper.cancel()
                if getter not in done:
                    getter.cancel()
                    break
                line = getter.result()
                if line is None or not await self.handle(line):
                    break
            # what was typed before the end must be confirmed (or reported) before leaving
            await self.client.flush(ACK_SECONDS + 1)
        finally:
            await _cancel(printer)
            while self.client.core.events:
                self.show(self.client.core.events.popleft())


async def _cancel(task: asyncio.Task[None]) -> None:
    task.cancel()
    with contextlib.suppress(asyncio.CancelledError):
        await task
