"""The commands that talk in the chat: ``zchat join``, ``zchat listen``, ``zchat send``."""

from __future__ import annotations

import sys
import time
from dataclasses import replace
from pathlib import Path
from typing import Any

import click

from zchat.cli.login import (
    Login,
    ask_new_password,
    ask_password,
    changed_key,
    login_options,
    plan_login,
    server_address,
    wants_login,
)
from zchat.cli.options import (
    Failure,
    check_host,
    connect_timeout_option,
    host_option,
    load_keys,
    name_from_key,
    port_option,
    rooms_option,
    secure_options,
    time_format_option,
)


def _ask_name() -> str:
    from zchat.errors import InvalidInput
    from zchat.protocol import check_name

    while True:
        name = _read_line("Username: ").strip()
        if not name:
            continue
        try:
            return check_name(name)
        except InvalidInput as exc:
            click.echo(f"zchat: {exc}", err=True)


def _read_line(prompt: str) -> str:
    """One line typed at ``prompt``; Ctrl-C raises KeyboardInterrupt at once, Ctrl-D
    ends the program. A blocking read (input(), readline) misses a SIGINT that comes
    between the prompt and the read: the signal's handler runs, the read then waits
    for a key. Here the wait is a select(2) on stdin and on the wake-up descriptor the
    handler writes to, so the signal ends it whenever it comes."""
    import select
    import signal
    import socket

    click.echo(prompt, nl=False)
    wake_r, wake_w = socket.socketpair()
    wake_w.setblocking(False)
    previous = signal.set_wakeup_fd(wake_w.fileno(), warn_on_full_buffer=False)
    try:
        # a signal wakes the select: its Python handler runs as it returns (Ctrl-C
        # raises KeyboardInterrupt); another signal (a resized window) waits again
        while sys.stdin not in select.select([sys.stdin, wake_r], [], [])[0]:
            wake_r.recv(4096)
        line = sys.stdin.readline()
    finally:
        signal.set_wakeup_fd(previous)
        wake_r.close()
        wake_w.close()
    if not line:
        raise click.exceptions.Exit(1)
    return line.rstrip("\n")


def _colors(choice: str) -> bool:
    """--color: auto is on when stdout is a terminal that can show colours and NO_COLOR
    (no-color.org) is unset or empty; always and never say so whatever NO_COLOR says."""
    import os

    if choice != "auto":
        return choice == "always"
    dumb = os.environ.get("TERM", "") == "dumb"
    return sys.stdout.isatty() and not os.environ.get("NO_COLOR") and not dumb


def _downloads_folder(downloads: str) -> Path:
    """--downloads, checked at the start: /get would fail later, one file at a time."""
    folder = Path(downloads).expanduser()
    if not folder.is_dir():
        problem = "is not a folder" if folder.exists() else "does not exist"
        raise Failure(f"the downloads folder {downloads} {problem}")
    return folder


def _reach(host: str, port: int, timeout: float, interactive: bool) -> Login | None:
    """Wait to hear from the broker, or fail as joining would. An accounts broker
    (refused as the wrong mode, and its key port answers): how to log in to it."""
    from zchat.client.hello import has_accounts
    from zchat.client.listen import Listener
    from zchat.errors import BrokerUnreachable, JoinRefused

    try:
        with Listener(host, port, connect_timeout=timeout) as ears:
            ears.wait_heard()
    except JoinRefused as exc:
        if exc.code != "wrong-mode" or not has_accounts(host, port, timeout):
            raise Failure(str(exc)) from None
        return plan_login("", None, False, host, port, timeout, interactive)
    except BrokerUnreachable as exc:
        raise Failure(str(exc)) from None
    return None


@click.command()
@click.option("--name", envvar="ZCHAT_NAME", help="Your name in the chat (env ZCHAT_NAME).")
@host_option("Broker address (env ZCHAT_HOST).")
@port_option("Broker port; the broker also uses PORT+1 and PORT+2 (env ZCHAT_PORT).", 1)
@rooms_option("Room to join; repeat for several. The first is where your lines go.")
@click.option(
    "--history",
    type=click.IntRange(0, 1000),
    help="Lines of each room's history to show on joining. "
    "Default: 50 in a terminal, 0 when stdin is not one (a script).",
)
@time_format_option
@click.option(
    "--color",
    type=click.Choice(["auto", "always", "never"]),
    default="auto",
    show_default=True,
    help="Colours and formatting in a terminal: auto (unless NO_COLOR is set, or the "
    "output is not a terminal), always, or never.",
)
@click.option("--no-bell", is_flag=True, help="Do not ring the bell when a line names you.")
@click.option(
    "--downloads",
    envvar="ZCHAT_DOWNLOADS",
    default=".",
    show_default=True,
    help="The folder /get saves files in (env ZCHAT_DOWNLOADS).",
)
@connect_timeout_option("Seconds to wait for the broker before giving up.", 0.1)
@secure_options
@login_options
def join(
    name: str | None,
    host: str,
    port: int,
    rooms: tuple[str, ...],
    history: int | None,
    time_format: str,
    color: str,
    no_bell: bool,
    downloads: str,
    connect_timeout: float,
    secure: bool,
    server_key: str,
    key: str | None,
    server: str | None,
    password_file: str | None,
    register: bool,
) -> None:
    """Join the chat. Type to talk; /help lists the commands.

    When stdin is not a terminal, each input line is sent as a message and each event
    is printed as one plain line; the end of input leaves the chat."""
    from zchat.client.terminal import TerminalConfig, run
    from zchat.errors import InvalidInput
    from zchat.protocol import DEFAULT_HISTORY, check_name, check_room

    interactive = sys.stdin.isatty()
    host, port = server_address(server, host, port)
    check_host(host)
    folder = _downloads_folder(downloads)
    if history is None:  # a script wants what is said from now on, not the backlog
        history = DEFAULT_HISTORY if interactive else 0
    name = name_from_key(name, secure, key)
    asked = name is None
    if name is None and not interactive:
        raise Failure("no name given: use --name NAME or set ZCHAT_NAME")
    if interactive:  # a person waits: say for what
        click.echo(f"connecting to the broker at {host}:{port}…", err=True)
    login = None
    if wants_login(secure, password_file, register, host, port):
        login = plan_login(
            server_key, password_file, register, host, port, connect_timeout, interactive
        )
    elif name is None and not secure:  # (in secure mode the name finds the key to use)
        login = _reach(host, port, connect_timeout, interactive)  # before asking a name
    if name is None:
        name = _ask_name()
    try:
        name = check_name(name)
        checked = tuple(check_room(r) for r in rooms)
    except InvalidInput as exc:
        raise Failure(str(exc)) from None
    keys = load_keys(secure, server_key, key, name) if login is None else login.keys()
    config = TerminalConfig(
        name, host, port, checked, history, time_format, connect_timeout, keys,
        ask_name=_ask_name if asked else None,
        color=_colors(color), bell=not no_bell, downloads=folder,
    )  # fmt: skip
    if login is not None:
        config = _logging_in(config, login, interactive)
    elif not secure:  # an open join that meets a broker that wants a login
        config = replace(config, rethink=lambda refusal: _rethink(config, refusal, interactive))
    sys.exit(run(config, interactive))


def _logging_in(config: Any, login: Login, interactive: bool) -> Any:
    """The terminal's config for ``login``: its password (or a person asked for it),
    and a failed handshake looked into (has the broker's key changed?)."""
    ask = None
    if login.password is None and interactive:
        ask = ask_new_password if login.register else ask_password

    def rethink(refusal: Any) -> None:
        changed = changed_key(config.host, config.port, config.connect_timeout)
        if changed is not None:
            raise Failure(changed)

    return replace(
        config, keys=login.keys(), password=login.password, register=login.register,
        ask_password=ask, rethink=rethink,
    )  # fmt: skip


def _rethink(config: Any, refusal: Any, interactive: bool) -> Any:
    """An open join refused as the wrong mode: an accounts broker? Then log in."""
    from zchat.client.hello import has_accounts

    if refusal.code != "wrong-mode" or not has_accounts(
        config.host, config.port, config.connect_timeout
    ):
        return None  # not an accounts broker: a secure one, as the refusal says
    login = plan_login("", None, False, config.host, config.port, config.connect_timeout,
                       interactive)  # fmt: skip
    return _logging_in(replace(config, rethink=None), login, interactive)


@click.command()
@host_option("Broker address (env ZCHAT_HOST).")
@port_option("Broker port; the broker also uses PORT+1 and PORT+2 (env ZCHAT_PORT).", 1)
@rooms_option("Room to listen to; repeat for several.")
@click.option("--json", "as_json", is_flag=True, help="Print JSON Lines with every field.")
@time_format_option
@click.option(
    "--count",
    type=click.IntRange(min=1),
    help="Stop after this many lines (system notices included).",
)
@connect_timeout_option("Seconds to wait to hear from the broker at first (0: for ever).", 0)
@secure_options
def listen(
    host: str,
    port: int,
    rooms: tuple[str, ...],
    as_json: bool,
    time_format: str,
    count: int | None,
    connect_timeout: float,
    secure: bool,
    server_key: str,
    key: str | None,
) -> None:
    """Print what is said in rooms, without joining: no name needed, invisible in /who.

    One line per event, in the terminal format or as JSON (--json). Follows the broker
    through restarts; stops on Ctrl-C, SIGTERM, or after --count lines."""
    import signal

    from zchat.client.listen import Listener
    from zchat.client.render import render, to_json
    from zchat.errors import BrokerUnreachable, InvalidInput, JoinRefused
    from zchat.protocol import check_room

    try:
        checked = [check_room(room) for room in rooms]
    except InvalidInput as exc:
        raise Failure(str(exc)) from None
    check_host(host)
    keys = load_keys(secure, server_key, key, None)
    signal.signal(signal.SIGTERM, signal.default_int_handler)
    shown = 0
    try:
        wait = connect_timeout or None
        with Listener(host, port, checked, keys=keys, connect_timeout=wait) as ears:
            where = ", ".join(f"#{room}" for room in checked)
            click.echo(
                f"listening to {where} on {ears.endpoints.describe()} (Ctrl-C stops)", err=True
            )
            for msg in ears:
                line = to_json(msg) if as_json else render(msg, time_format, checked[0])
                click.echo(line)
                sys.stdout.flush()
                shown += 1
                if count is not None and shown >= count:
                    break
    except KeyboardInterrupt:  # Ctrl-C or SIGTERM: a normal way to stop
        pass
    except (JoinRefused, BrokerUnreachable) as exc:  # a refused key; no broker at all
        if isinstance(exc, JoinRefused) and exc.code == "wrong-mode" and not secure:
            _accounts_cannot_listen(host, port)
        raise Failure(str(exc)) from None


def _accounts_cannot_listen(host: str, port: int) -> None:
    """A listener met a broker that wants CURVE: if it is an accounts broker (its key
    port answers), say that it shows its rooms to accounts only."""
    from zchat.client.hello import has_accounts

    if not has_accounts(host, port, 2.0):
        return
    raise Failure(
        f"the broker at {host}:{port} has accounts: it shows its rooms to people logged in "
        "only, so there is nothing to listen to without a login; join instead (zchat join "
        "--name NAME), or a bot: zchat send, or the Python Client with a password"
    )


@click.command()
@click.argument("text", required=False)
@click.option("--name", envvar="ZCHAT_NAME", help="Who speaks (env ZCHAT_NAME).")
@host_option("Broker address (env ZCHAT_HOST).")
@port_option("Broker port; the broker also uses PORT+1 and PORT+2 (env ZCHAT_PORT).", 1)
@click.option("--room", default="general", show_default=True, help="Room to speak in.")
@click.option(
    "--timeout",
    type=click.FloatRange(min=0.1),
    default=5.0,
    show_default=True,
    help="Seconds to wait for the broker, and then for each line's confirmation.",
)
@click.option(
    "--announce",
    is_flag=True,
    help="Join visibly: the room sees NAME join before the lines and leave after them. "
    "By default only the lines are seen.",
)
@click.option(
    "--whole",
    is_flag=True,
    help="Send all of stdin as one message of several lines (a code block, a log "
    "excerpt: at most 60 lines and 4096 bytes), not a message per line.",
)
@secure_options
@login_options
def send(
    text: str | None,
    name: str | None,
    host: str,
    port: int,
    room: str,
    timeout: float,
    announce: bool,
    whole: bool,
    secure: bool,
    server_key: str,
    key: str | None,
    server: str | None,
    password_file: str | None,
    register: bool,
) -> None:
    """Say TEXT (or each line of stdin) in a room, and exit once the broker confirms.

    Joins quietly under --name for the time it takes: the room sees the lines, not a
    join or a leave, and the name must be free. Exit code 0 when every line was
    confirmed, 1 otherwise, with the reason on stderr."""
    from zchat.client.pacing import Pacer
    from zchat.client.sync import Client
    from zchat.errors import InvalidInput, JoinRefused, ZchatError
    from zchat.protocol import check_text

    name = name_from_key(name, secure, key)
    if name is None:
        raise Failure("no name given: use --name NAME or set ZCHAT_NAME")
    host, port = server_address(server, host, port)
    login = None
    if wants_login(secure, password_file, register, host, port):
        login = plan_login(server_key, password_file, register, host, port, timeout, False)
    keys = load_keys(secure, server_key, key, name) if login is None else login.keys()
    if text is not None:
        lines = [text]
    elif whole:
        lines = [sys.stdin.read().rstrip("\r\n")]
    else:
        lines = [line.rstrip("\r\n") for line in sys.stdin]
    lines = [line for line in lines if line.strip()]
    if not lines:
        raise Failure("nothing to send: give TEXT or lines on stdin")
    for number, line in enumerate(lines, 1):  # all or nothing: check before joining
        try:
            check_text(line)
        except InvalidInput as exc:
            where = f"line {number}: " if text is None and not whole else ""
            raise Failure(f"nothing sent: {where}{exc}") from None
    check_host(host)
    try:
        client = Client(
            name, host, port, rooms=[room], history=0, keys=keys, quiet=not announce,
            password=login.password if login else None, register=bool(login and login.register),
        )  # fmt: skip
    except InvalidInput as exc:
        raise Failure(str(exc)) from None
    client.core.verb = "send"  # "the broker … is in secure mode: send with --secure …"
    client.core.says_again = True  # a line refused for flooding is said again
    pacer = Pacer()
    try:
        client.join(timeout=timeout)
        for number, line in enumerate(lines, 1):
            problem = _say_paced(client, pacer, line, room, timeout)
            if problem is not None:
                where = f"line {number} of {len(lines)}: " if len(lines) > 1 else ""
                raise Failure(f"{where}{problem} (the lines before it were delivered)")
    except JoinRefused as exc:
        _send_refused(exc, login is None and not secure, host, port, timeout)
    except ZchatError as exc:
        raise Failure(str(exc)) from None
    finally:
        client.close()


def _send_refused(refusal: Any, open_send: bool, host: str, port: int, timeout: float) -> None:
    """Failure for a refused send. An open send refused as the wrong mode by a broker
    with accounts (its key port answers): what a script must give to log in, as `zchat
    join` says it, not the refusal's "send with --secure" (for a secure broker)."""
    from zchat.client.hello import has_accounts

    if open_send and refusal.code == "wrong-mode" and has_accounts(host, port, timeout):
        plan_login("", None, False, host, port, timeout, False)  # no key or no password
    raise Failure(str(refusal)) from None  # anything else, a secure broker's too: as said


def _say_paced(client: Any, pacer: Any, line: str, room: str, timeout: float) -> str | None:
    """Say ``line`` and wait for its confirmation; None once confirmed, else why not.
    Past the broker's flood limit the line is refused: wait until the limit lets one more
    through (the refusal says when; ``pacer`` keeps to the limit from then on) and say it
    again, within ``timeout``. One line in flight at a time, so a refusal concerns that
    line only."""
    if client.core.flood is not None and pacer.ready_at() > time.monotonic() + timeout:
        return f"not sent: {client.core.flood.text}"  # the limit holds it past the timeout
    _serve_until(client, pacer.ready_at())  # the limit's pace: not part of the timeout
    end = time.monotonic() + timeout
    while True:
        _serve_until(client, pacer.ready_at())
        refused, flood = len(client.core.undelivered), client.core.flood
        pacer.spent(time.monotonic())
        client.send(line, room)
        if not client.flush(timeout=max(0.1, end - time.monotonic())):
            return f"not confirmed by the broker within {timeout:g} s (it may have arrived): {line}"
        if len(client.core.undelivered) > refused:  # refused, not for flooding
            notes = [m.text for m in client.core.events if m.kind == "system"]
            client.core.events.clear()
            return notes[-1] if notes else "not delivered"
        if client.core.flood is flood or client.core.flood.line is None:
            return None  # echoed: delivered
        pacer.learn(client.core.flood)
        if pacer.ready_at() > end:
            return f"not sent: {client.core.flood.text}"


def _serve_until(client: Any, until: float) -> None:
    """Wait until ``until`` (monotonic), keeping the connection served; lines ignored."""
    while (left := until - time.monotonic()) > 0:
        client.receive(timeout=left)
    client.core.events.clear()
