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
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, replace
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from zchat.client.aio import AsyncClient
from zchat.client.core import ACK_SECONDS, FloodRefusal
from zchat.client.file_commands import COMMANDS as FILE_COMMANDS
from zchat.client.file_commands import USAGE as FILE_USAGE
from zchat.client.file_commands import FileCommands
from zchat.client.message import Message
from zchat.client.pacing import Pacer
from zchat.client.render import render
from zchat.client.roster import Roster
from zchat.client.transport import Keys
from zchat.errors import BrokerUnreachable, InvalidInput, JoinRefused, NotDelivered
from zchat.markup import mentions_name
from zchat.protocol import MAX_HISTORY, check_reason, check_room

COMMANDS = (
    ("/join #room", "enter a room and make it the current one"),
    ("/part [#room] [why]", "leave a room (default: the current one)"),
    ("/rooms", "list the rooms and how many are in each"),
    ("/who [#room] [NAME]", "who is in a room (a big one: those after NAME)"),
    ("/msg NAME text", "a private line, seen by NAME and you only"),
    ("/me text", 'an action: "* Alice waves"'),
    ("/nick NAME", "change your name, if it is free"),
    ("/topic [text]", "show the current room's topic, or set it"),
    ("/history [#room] [N]", "a room's last N lines (default: this room, 20)"),
    *FILE_COMMANDS,
    ("/passwd", "change your password (a broker with accounts)"),
    ("/kick NAME [why]", "admins (secure or accounts mode): end NAME's session"),
    ("/ban NAME [why]", "admins (secure or accounts mode): kick NAME and keep them out"),
    ("/unban NAME", "admins (secure or accounts mode): let NAME back in"),
    ("/help", "show this list"),
    ("/quit [reason]", "leave the chat (Ctrl-D or Ctrl-C also leave)"),
    ("//text", 'send a line that starts with "/"'),
)
_WIDTH = max(len(usage) for usage, _ in COMMANDS) + 2  # one column, two spaces after
USAGE = {usage.split()[0][1:]: usage for usage, _ in COMMANDS}  # "msg": "/msg NAME text"
MARKUP = (
    ("**bold**", "bold"),
    ("*italic* or _italic_", "italic"),
    ("~~strike~~", "struck through"),
    ("`code`", "code"),
    ("```python", "a code block, highlighted, up to a line of ```"),
    ("> quoted", "a quote (at the start of a line)"),
    ("@name", "a mention: their line is marked, their terminal rings"),
)
HELP = "\n".join(
    [
        "commands:",
        *(f"  {usage:<{_WIDTH}}{what}" for usage, what in COMMANDS),
        "anything else is sent to the current room, formatted:",
        *(f"  {typed:<{_WIDTH}}{what}" for typed, what in MARKUP),
        "a paste of several lines is one message; Alt-Enter starts a new line;",
        "Tab completes names and commands; Up and Down walk the lines you sent",
    ]
)
HISTORY_DEFAULT = 20


@dataclass(frozen=True)
class TerminalConfig:
    name: str
    host: str
    port: int
    rooms: tuple[str, ...]
    history: int = 50
    time_format: str = "time"
    connect_timeout: float = 10.0
    keys: Keys | None = None  # secure mode
    ask_name: Callable[[], str] | None = None  # the name was asked for: ask again if taken
    color: bool = False  # colours and formatting (a terminal only)
    bell: bool = True  # ring the terminal's bell when a line names you
    downloads: Path = Path(".")  # where /get saves files
    password: str | None = None  # an accounts broker's login (with keys)
    register: bool = False  # make the account first
    ask_password: Callable[[], str] | None = None  # a person: asked again if refused
    # a refused join (wrong mode, a failed handshake) looked into: the config to try
    # instead, or None to report the refusal as it is
    rethink: Callable[[JoinRefused], TerminalConfig | None] | None = None


def run(config: TerminalConfig, interactive: bool) -> int:
    """Join, chat until the user leaves, return the exit code. A name asked for and
    taken is asked for again, outside the event loop: inside it, asyncio's own handler
    would take the first Ctrl-C at the prompt and leave it waiting for input. So is a
    password (up to LOGIN_TRIES times), and a refusal ``rethink`` can answer."""
    tries = 1
    while True:
        if config.password is None and config.ask_password is not None:
            config = replace(config, password=config.ask_password())
        outcome = asyncio.run(_main(config, interactive))
        if isinstance(outcome, int):
            return outcome
        retry = _retry(config, outcome, tries)
        if retry is None:
            print(f"zchat: {outcome}", file=sys.stderr)
            return 1
        tries += isinstance(outcome, JoinRefused) and outcome.code in LOGIN_REFUSALS
        config = retry


LOGIN_TRIES = 3  # passwords asked for at most, as sudo and ssh do
# a login refused for its password, or for coming too soon after one: each is a try
LOGIN_REFUSALS = ("login-failed", "login-throttled")


def _retry(config: TerminalConfig, refusal: Exception, tries: int) -> TerminalConfig | None:
    """The config to join with after ``refusal``, or None to give up."""
    if not isinstance(refusal, JoinRefused):
        return None
    if refusal.code == "name-taken" and config.ask_name is not None:
        print(f"zchat: {refusal}", file=sys.stderr)
        return replace(config, name=config.ask_name())
    if refusal.code in LOGIN_REFUSALS and config.ask_password and tries < LOGIN_TRIES:
        print(f"zchat: {refusal}", file=sys.stderr)
        return replace(config, password=config.ask_password())
    if config.rethink is not None and refusal.code in ("wrong-mode", "handshake-failed"):
        return config.rethink(refusal)
    return None


async def _main(config: TerminalConfig, interactive: bool) -> int | Exception:
    """The exit code; or why the join was refused, for ``run`` to decide."""
    client = AsyncClient(
        config.name,
        config.host,
        config.port,
        config.rooms,
        history=config.history,
        keys=config.keys,
        password=config.password,
        register=config.register,
    )
    try:
        await client.join(timeout=config.connect_timeout)
    except (JoinRefused, BrokerUnreachable) as exc:
        return exc
    chat = _Chat(client, config)
    try:
        if interactive:
            await chat.interactive()
        else:
            await chat.lines()
    finally:
        await chat.files.stop()
        await client.close(chat.reason)
    if client.core.ended is not None:  # kicked or banned
        return 1
    # a script is told, by the exit code too, that a line it gave was not delivered
    failed = chat.not_sent or chat.files.failed or client.core.undelivered
    return 0 if interactive or not failed else 1


class _Chat:
    def __init__(self, client: AsyncClient, config: TerminalConfig) -> None:
        self.client = client
        self.config = config
        self.current = self.home = client.rooms[0]
        self.is_terminal = True
        self.reason = ""
        self.last_nick: tuple[str | None, str, object] | None = None
        self.out: Callable[[str], None] = print
        self.retype = ""  # a line that could not be sent, offered again at the prompt
        self.entering: str | None = None  # the room a /join is entering
        self.not_sent = 0  # lines typed that could not be sent (too long, no broker)
        self.roster = Roster(client.name)
        self.bell = False  # ring on a mention (a person's terminal, asked for)
        self.paint: Callable[[Message, str | None, bool], str] | None = None  # colours
        # self.out is looked up at each line: line mode replaces it
        out = lambda text: self.out(text)  # noqa: E731, PLW0108
        self.files = FileCommands(client, config.downloads, self.note, out)

    @property
    def room(self) -> str | None:
        """The current room: the one chosen last that we are still in."""
        rooms = self.client.rooms
        if self.current not in rooms:
            self.current = rooms[0] if rooms else ""
        return self.current or None

    def prompt(self) -> str:
        """``#general> ``, and what is unread elsewhere: ``#general (#dev: 3, 1 mention)> ``."""
        self.roster.seen(self.room)
        unread = self.roster.summary()
        where = f"#{self.room}" if self.room else ""
        if unread:
            where = f"{where} ({unread})".lstrip()
        return f"{where}> " if where else "> "

    def reference(self) -> str | None:
        """Lines from rooms other than this one carry the room's name. In a terminal it
        is the current room; for a script, the first room, so the output is stable."""
        return (self.entering or self.room) if self.is_terminal else self.home

    def show(self, msg: Message) -> None:
        if msg.kind == "nick" and not msg.replayed:  # one rename, one event per room: show once
            key = (msg.sender, msg.text, msg.ts)
            if key == self.last_nick:
                return
            self.last_nick = key
        mentioned = _names(msg, self.client.name)
        self.roster.heard(msg, self.room, mentioned)
        if msg.kind == "leave" and msg.sender == self.client.name and msg.room:
            self.roster.left(msg.room)
        if self.paint is not None:
            self.out(self.paint(msg, self.reference(), mentioned))
        else:
            self.out(render(msg, self.config.time_format, self.reference()))
        if mentioned and self.bell and not msg.replayed:
            sys.stdout.write("\a")  # once per line; shown nowhere
            sys.stdout.flush()

    def note(self, text: str) -> None:
        self.show(Message.system(text, datetime.now(UTC)))

    async def _print_events(self) -> None:
        async for msg in self.client:
            self.show(msg)

    async def handle(self, line: str) -> bool:
        """One line typed by the user: a command, or a line to send. False: leave."""
        if line.startswith("/") and not line.startswith("//"):
            command, _, rest = line[1:].partition(" ")
            if command.lower() in FILE_USAGE:  # /send, /get, /files, /cancel
                await self.files.command(command.lower(), rest.strip(), self.room)
                return True
            if command.lower() == "passwd":  # asks for the passwords itself, hidden
                await self._change_password()
                return True
            return await self.command(command.lower(), rest.strip())
        if line.strip():
            await self._attempt(self.client.send(line.removeprefix("/"), self.room), line)
        return True

    async def command(self, command: str, rest: str) -> bool:
        client = self.client
        first, _, more = rest.partition(" ")
        room = first if first.startswith("#") else None
        match command:
            case "quit" | "exit":
                try:
                    self.reason = check_reason(rest)
                except InvalidInput as exc:
                    self.note(f"not leaving: {exc}")
                    return True
                return False
            case "help":
                for help_line in HELP.splitlines():
                    self.out(help_line)
            case "join" if first and not more:
                # waits (briefly) for the broker, so that the next line goes to the room;
                # meanwhile its history is shown as the current room's, without its name
                with contextlib.suppress(InvalidInput):  # said by the attempt
                    self.entering = check_room(first)
                try:
                    if await self._attempt(client.enter(first)):
                        self.current = check_room(first)
                finally:
                    self.entering = None
            case "part":
                await self._attempt(client.part(room or self.room, more if room else rest))
            case "rooms":
                await self._attempt(client.list_rooms())
            case "who":  # a big room's next page: the names after one
                await self._attempt(client.who(room or self.room, after=_after(room, more, rest)))
            case "msg" if first and more.strip():
                await self._attempt(client.msg(first, more), more)
            case "me" if rest:
                await self._attempt(client.act(rest, self.room), rest)
            case "nick" if rest:  # a name with a space gets the name rule, not the usage
                await self._attempt(client.nick(rest))
            case "topic" if rest:
                await self._attempt(client.set_topic(rest, self.room))
            case "topic":
                await self._attempt(client.query_topic(self.room))
            case "history":
                count = _count(more.strip() if room else rest, HISTORY_DEFAULT)
                if count is None:
                    self.note(f"usage: /history [#room] [N], N from 1 to {MAX_HISTORY}")
                else:
                    await self._attempt(client.history(count, room or self.room))
            case "kick" | "ban" if first:
                await self._attempt(client.moderate(command, first, more.strip()))
            case "unban" if first and not more:
                await self._attempt(client.moderate(command, first))
            case "join" | "msg" | "me" | "nick" | "kick" | "ban" | "unban":
                self.note(f"usage: {USAGE[command]}")
            case _:
                self.note(f"unknown command /{command}, try /help")
        return True

    async def _change_password(self) -> None:
        """/passwd: the old password and the new one twice, typed without echo, in a
        prompt of their own (the chat's keeps what is typed, for Up)."""
        if not self.is_terminal or self.client.core.password is None:
            self.note("/passwd is for an accounts broker, in a terminal (zchat user passwd)")
            return
        from prompt_toolkit import PromptSession

        asked: PromptSession[str] = PromptSession(erase_when_done=True)
        typed = []
        for prompt in ("Old password: ", "New password: ", "New password again: "):
            line = await _ask_hidden(asked, prompt)
            if not line:
                self.note("password not changed")
                return
            typed.append(line)
        if typed[1] != typed[2]:
            self.note("password not changed: the two new ones differ")
            return
        await self._attempt(self.client.change_password(typed[0], typed[1]))

    async def _attempt(self, request: Awaitable[object], text: str = "") -> bool:
        """Run one request; say so if it could not be sent. True if it went out.
        ``text``: the line typed, for a line (said, /me, /msg); "" for other commands."""
        try:
            await request
        except InvalidInput as exc:  # worded as the broker words its refusals
            self.note(f"not sent: {exc}" if text else f"error: {exc}")
        except NotDelivered as exc:
            self.note(f"not sent ({exc.reason}): {text}" if text else str(exc))
        else:
            return True
        self.not_sent += bool(text)
        self.retype = text  # what was typed is not lost: it is back at the prompt
        return False

    async def interactive(self) -> None:
        from prompt_toolkit import PromptSession
        from prompt_toolkit.patch_stdout import patch_stdout

        from zchat.client.prompting import ChatCompleter, SentLines, key_bindings, sent_lines_path

        sent = SentLines(sent_lines_path(self.client.name))
        commands = [usage.split()[0] for usage, _ in COMMANDS if usage.startswith("/")]
        self.bell = self.config.bell
        if self.config.color:
            from zchat.client.painter import Painter

            self.paint = Painter(self.client.name, self.config.time_format).line
        # the line typed disappears on Enter: the broker's echo, stamped, replaces it
        session: PromptSession[str] = PromptSession(
            erase_when_done=True,
            history=sent,
            completer=ChatCompleter(commands, lambda: self.roster.completions(self.room)),
            complete_while_typing=False,
            key_bindings=key_bindings(),
        )
        self.files.show_on(session)  # transfers' progress, under the line being typed
        loop = asyncio.get_running_loop()
        with patch_stdout(raw=True):
            # the printer ends when the session ends for good (kicked, banned)
            printer = loop.create_task(self._print_events())
            told = False  # that the lines sent are not kept
            try:
                while True:
                    retype, self.retype = self.retype, ""
                    asker = loop.create_task(_ask(session, self.prompt, retype))
                    await asyncio.wait({asker, printer}, return_when="FIRST_COMPLETED")
                    if not asker.done():
                        await _cancel(asker)
                        break
                    line = asker.result()
                    if line is None or not await self.handle(line.rstrip("\n")):
                        break
                    if sent.problem and not told:
                        told = True
                        self.note(f"{sent.problem}: the lines you send are kept this time only")
            finally:
                await _cancel(printer)

    async def lines(self) -> None:
        """stdin is not a terminal: one line in is one line sent, one event one line out."""
        self.out = lambda text: print(text, flush=True)
        self.is_terminal = False
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
        self.client.core.says_again = True  # what the flood limit refuses, _paced says again
        pacer = Pacer()
        try:
            while not stop.is_set():
                getter = loop.create_task(inbox.get())
                stopper = loop.create_task(stop.wait())
                waiting = {getter, stopper, printer}
                done, _ = await asyncio.wait(waiting, return_when="FIRST_COMPLETED")
                stopper.cancel()
                if getter not in done:
                    getter.cancel()
                    break
                line = getter.result()
                if line is None or not await self._paced(line, pacer, stop):
                    break
            # what was typed before the end must be confirmed (or reported), and every
            # answer shown, before leaving
            # (a line unanswered for ACK_SECONDS is looked for in history, then reported)
            await self.client.flush(2 * ACK_SECONDS + 1)
            await self.files.wait(stop)  # the files it sent or asked for, whole
            if await _wait_until(pacer.ready_at(), stop):  # settling costs a request too
                pacer.spent(time.monotonic())
                await self.client.settle()
        finally:
            await _cancel(printer)
            while self.client.core.events:
                self.show(self.client.core.events.popleft())

    async def _paced(self, line: str, pacer: Pacer, stop: asyncio.Event) -> bool:
        """One line of a script, at the broker's pace: a line said waits for its echo
        before the next goes, so the order holds; one the flood limit refused is said
        again once the limit lets it through, and from then on every request waits for
        the limit (``pacer``). False: leave."""
        core = self.client.core
        while True:
            if not await _wait_until(pacer.ready_at(), stop):
                return False
            flood = core.flood
            pacer.spent(time.monotonic())
            if not await self.handle(line):
                return False
            if core.unacknowledged:  # a line said: its echo, or its refusal
                await self.client.flush(2 * ACK_SECONDS + 1)
            refusal = core.flood
            if refusal is None or refusal is flood:
                return True
            if flood is None:  # the first time: say why the script slows down
                self.note(_flood_note(refusal))
            pacer.learn(refusal)
            if refusal.line is None:  # a command (reported by the client), not a line
                return True


def _flood_note(refusal: FloodRefusal) -> str:
    if refusal.rate is None:  # an older broker: only its words
        return f"{refusal.text}; the lines it refuses are said again when it allows"
    return (
        f"the broker's flood limit holds the lines back (at most {refusal.rate:g} a "
        f"second, {refusal.burst} at once): they go at its pace"
    )


async def _wait_until(when: float, stop: asyncio.Event) -> bool:
    """Wait until ``when`` (monotonic); False if ``stop`` is set first."""
    if when <= time.monotonic() or stop.is_set():
        return not stop.is_set()
    with contextlib.suppress(TimeoutError):
        async with asyncio.timeout(max(0.0, when - time.monotonic())):
            await stop.wait()
    return not stop.is_set()


async def _ask(session: Any, prompt: Callable[[], str], typed: str = "") -> str | None:
    """One line typed (``typed`` is there already); None for Ctrl-D or Ctrl-C (caught
    here: a task must not let KeyboardInterrupt out)."""
    try:
        line: str = await session.prompt_async(prompt, default=typed)
    except (EOFError, KeyboardInterrupt):
        return None
    return line


async def _ask_hidden(session: Any, prompt: str) -> str | None:
    """A password typed without echo; None for Ctrl-D or Ctrl-C."""
    try:
        line: str = await session.prompt_async(prompt, is_password=True)
    except (EOFError, KeyboardInterrupt):
        return None
    return line


async def _cancel(task: asyncio.Task[Any]) -> None:
    task.cancel()
    with contextlib.suppress(asyncio.CancelledError):
        await task


def _count(text: str, default: int) -> int | None:
    if not text:
        return default
    if text.isdigit() and 1 <= int(text) <= MAX_HISTORY:
        return int(text)
    return None


def _after(room: str | None, more: str, rest: str) -> str:
    """The name after ``/who [#room]``: where a big room's next page starts."""
    return (more if room else rest).strip()


def _names(msg: Message, me: str) -> bool:
    """Is ``msg`` for ``me``: a line someone else said that names me, or a private one?"""
    if msg.kind not in ("message", "action", "private") or msg.sender == me:
        return False
    # a shared file's line is the broker's words: its name mentions nobody
    return msg.kind == "private" or (msg.file is None and mentions_name(msg.text, me))
