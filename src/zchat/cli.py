"""The ``zchat`` command: a thin shell that turns options into a config and calls the
library. Heavy imports (zmq, prompt_toolkit) happen inside the commands, so that
``zchat --help`` stays fast."""

from __future__ import annotations

import logging
import sys
from collections.abc import Callable
from typing import Any, TypeVar

import click

from zchat import __version__

DEFAULT_HOST = "127.0.0.1"
DEFAULT_PORT = 5005
LOG_LEVELS = ["debug", "info", "warning", "error"]
F = TypeVar("F", bound=Callable[..., Any])


class Failure(click.ClickException):
    """One clear line on stderr, exit code 1, no traceback."""

    def show(self, file: object = None) -> None:
        click.echo(f"zchat: {self.message}", err=True)


class StartFailure(Failure):
    """The broker cannot start as configured: exit code 2."""

    exit_code = 2


def host_option(help: str) -> Callable[[F], F]:
    return click.option(
        "--host", envvar="ZCHAT_HOST", default=DEFAULT_HOST, show_default=True, help=help
    )


def port_option(help: str, lowest: int) -> Callable[[F], F]:
    return click.option(
        "--port",
        envvar="ZCHAT_PORT",
        type=click.IntRange(lowest, 65534),
        default=DEFAULT_PORT,
        show_default=True,
        help=help,
    )


def rooms_option(help: str) -> Callable[[F], F]:
    return click.option(
        "--room", "rooms", multiple=True, default=["general"], show_default=True, help=help
    )


def secure_options(f: F) -> F:
    """--secure, --server-key and --key, for the commands that connect to a broker."""
    f = click.option(
        "--key",
        envvar="ZCHAT_KEY",
        help="Secure mode: your key pair (env ZCHAT_KEY). Default: NAME.key_secret.",
    )(f)
    f = click.option(
        "--server-key",
        envvar="ZCHAT_SERVER_KEY",
        default="broker.key",
        show_default=True,
        help="Secure mode: the broker's public key file (env ZCHAT_SERVER_KEY).",
    )(f)
    return click.option(
        "--secure", is_flag=True, help="Connect with CURVE keys to a broker in secure mode."
    )(f)


def load_keys(secure: bool, server_key: str, key: str | None, name: str | None) -> Any:
    """The transport.Keys to connect with, or None in open mode."""
    if not secure:
        if key is not None:
            raise Failure("--key is for secure mode: add --secure")
        return None
    from zchat.client.transport import Keys
    from zchat.errors import ConfigError

    if key is None:
        if name is None:
            raise Failure("secure mode needs your key: --key NAME.key_secret")
        key = f"{name}.key_secret"
    try:
        return Keys.from_files(server_key, key)
    except ConfigError as exc:
        raise Failure(str(exc)) from None


def name_from_key(name: str | None, secure: bool, key: str | None) -> str | None:
    """In secure mode a name is the key's: --key alice.key_secret means Alice."""
    if name is None and secure and key is not None:
        from pathlib import Path

        return Path(key).name.removesuffix(".key_secret")
    return name


time_format_option = click.option(
    "--time-format",
    type=click.Choice(["time", "full", "none"]),
    default="time",
    show_default=True,
    help="Stamp lines [HH:MM:SS] (time), [YYYY-MM-DD HH:MM:SS] (full), or not (none).",
)

FLOOD_HINT_RATE = 20  # lines a second per publisher past the broker's default limit


@click.group(context_settings={"help_option_names": ["-h", "--help"], "max_content_width": 100})
@click.version_option(__version__, prog_name="zchat", message="%(prog)s %(version)s")
def main() -> None:
    """zchat: a group chat on ZeroMQ. Start a broker, then join it from other terminals."""


@main.command()
@host_option("Address to listen on (env ZCHAT_HOST).")
@port_option("Clients send to PORT and listen on PORT+1; 0 picks a free pair (env ZCHAT_PORT).", 0)
@click.option(
    "--db",
    envvar="ZCHAT_DB",
    help="History database file (env ZCHAT_DB); ':memory:' keeps none. "
    "Default: $XDG_DATA_HOME/zchat/history.db (~/.local/share/zchat/history.db); "
    "in secure mode secure-history.db beside it. A file keeps one mode's history.",
)
@click.option(
    "--retention",
    type=click.IntRange(1, 10_000_000),
    default=10_000,
    show_default=True,
    help="Lines of history kept per room.",
)
@click.option(
    "--log-level",
    type=click.Choice(LOG_LEVELS, case_sensitive=False),
    default="info",
    show_default=True,
    help="How much the broker logs to stderr.",
)
@click.option(
    "--secure",
    is_flag=True,
    help="Secure mode: CURVE encryption, and only the users whose keys are in --keys.",
)
@click.option(
    "--keys",
    "keys_dir",
    default="keys",
    show_default=True,
    help="Secure mode: folder with broker.key_secret, users/NAME.key and an optional admins file.",
)
@click.option(
    "--rate",
    type=click.FloatRange(min=0),
    default=20.0,
    show_default=True,
    help="Requests a second each session may send, sustained; 0 for no limit.",
)
@click.option(
    "--burst",
    type=click.IntRange(min=1),
    default=50,
    show_default=True,
    help="Requests each session may send at once, before --rate applies.",
)
@click.option(
    "--send-queue",
    type=click.IntRange(min=1),
    default=10_000,
    show_default=True,
    help="Messages queued for each reader; a reader further behind loses live lines "
    "and fills them in from history.",
)
@click.option(
    "--peer-timeout",
    type=click.FloatRange(min=1),
    default=5.0,
    show_default=True,
    help="Seconds a silent connection (a peer gone without a word) is kept.",
)
@click.option(
    "--admin-socket",
    help="The operator's socket file for `zchat admin`. "
    "Default: $XDG_RUNTIME_DIR/zchat/admin-PORT.sock (or /tmp/zchat-UID/...).",
)
def broker(
    host: str,
    port: int,
    db: str | None,
    retention: int,
    log_level: str,
    secure: bool,
    keys_dir: str,
    rate: float,
    burst: int,
    send_queue: int,
    peer_timeout: float,
    admin_socket: str | None,
) -> None:
    """Run the broker: every client connects here. Stop it with Ctrl-C."""
    import signal

    from zchat.broker.server import Broker, BrokerConfig, warn_if_exposed
    from zchat.broker.store import default_path
    from zchat.errors import ConfigError

    logging.basicConfig(
        level=log_level.upper(),
        format="%(asctime)s %(levelname)s %(message)s",
        datefmt="%Y-%m-%d %H:%M:%S",
        stream=sys.stderr,
    )
    try:
        config = BrokerConfig(
            host=host,
            port=port,
            db=db or str(default_path(secure)),
            retention=retention,
            rate=rate,
            burst=burst,
            sndhwm=send_queue,
            zmtp_heartbeat_timeout=peer_timeout,
            keys=keys_dir if secure else None,
            admin_socket=admin_socket or "",
        )
        warning = warn_if_exposed(config)
        if warning:
            logging.getLogger("zchat.broker").warning(warning)
        server = Broker(config)
    except ConfigError as exc:
        raise StartFailure(str(exc)) from None
    for sig in (signal.SIGINT, signal.SIGTERM):
        signal.signal(sig, lambda *_: server.stop())
    server.run()


def _ask_name() -> str:
    from zchat.errors import InvalidInput
    from zchat.protocol import check_name

    while True:
        name: str = click.prompt("Username", prompt_suffix=": ")
        try:
            return check_name(name.strip())
        except InvalidInput as exc:
            click.echo(f"zchat: {exc}", err=True)


@main.command()
@click.option("--name", envvar="ZCHAT_NAME", help="Your name in the chat (env ZCHAT_NAME).")
@host_option("Broker address (env ZCHAT_HOST).")
@port_option("Broker port; the broker also uses PORT+1 (env ZCHAT_PORT).", 1)
@rooms_option("Room to join; repeat for several. The first is where your lines go.")
@click.option(
    "--history",
    type=click.IntRange(0, 1000),
    default=50,
    show_default=True,
    help="Lines of each room's history to show on joining.",
)
@time_format_option
@click.option(
    "--connect-timeout",
    type=click.FloatRange(min=0.1),
    default=10.0,
    show_default=True,
    help="Seconds to wait for the broker before giving up.",
)
@secure_options
def join(
    name: str | None,
    host: str,
    port: int,
    rooms: tuple[str, ...],
    history: int,
    time_format: str,
    connect_timeout: float,
    secure: bool,
    server_key: str,
    key: str | None,
) -> None:
    """Join the chat. Type to talk; /help lists the commands.

    When stdin is not a terminal, each input line is sent as a message and each event
    is printed as one plain line; the end of input leaves the chat."""
    from zchat.client.terminal import TerminalConfig, run
    from zchat.errors import InvalidInput
    from zchat.protocol import check_name, check_room

    interactive = sys.stdin.isatty()
    name = name_from_key(name, secure, key)
    if name is None:
        if not interactive:
            raise Failure("no name given: use --name NAME or set ZCHAT_NAME")
        name = _ask_name()
    try:
        name = check_name(name)
        checked = tuple(check_room(r) for r in rooms)
    except InvalidInput as exc:
        raise Failure(str(exc)) from None
    keys = load_keys(secure, server_key, key, name)
    config = TerminalConfig(name, host, port, checked, history, time_format, connect_timeout, keys)
    sys.exit(run(config, interactive))


@main.command()
@host_option("Broker address (env ZCHAT_HOST).")
@port_option("Broker port; the broker also uses PORT+1 (env ZCHAT_PORT).", 1)
@rooms_option("Room to listen to; repeat for several.")
@click.option("--json", "as_json", is_flag=True, help="Print JSON Lines with every field.")
@time_format_option
@click.option(
    "--count",
    type=click.IntRange(min=1),
    help="Stop after this many lines (system notices included).",
)
@secure_options
def listen(
    host: str,
    port: int,
    rooms: tuple[str, ...],
    as_json: bool,
    time_format: str,
    count: int | None,
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
    from zchat.errors import InvalidInput, JoinRefused
    from zchat.protocol import check_room

    try:
        checked = [check_room(room) for room in rooms]
    except InvalidInput as exc:
        raise Failure(str(exc)) from None
    keys = load_keys(secure, server_key, key, None)
    signal.signal(signal.SIGTERM, signal.default_int_handler)
    shown = 0
    try:
        with Listener(host, port, checked, keys=keys) as ears:
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
    except JoinRefused as exc:  # secure mode: the broker refused the handshake
        raise Failure(str(exc)) from None


@main.command()
@click.argument("text", required=False)
@click.option("--name", envvar="ZCHAT_NAME", help="Who speaks (env ZCHAT_NAME).")
@host_option("Broker address (env ZCHAT_HOST).")
@port_option("Broker port; the broker also uses PORT+1 (env ZCHAT_PORT).", 1)
@click.option("--room", default="general", show_default=True, help="Room to speak in.")
@click.option(
    "--timeout",
    type=click.FloatRange(min=0.1),
    default=5.0,
    show_default=True,
    help="Seconds to wait for the broker, and then for each line's confirmation.",
)
@secure_options
def send(
    text: str | None,
    name: str | None,
    host: str,
    port: int,
    room: str,
    timeout: float,
    secure: bool,
    server_key: str,
    key: str | None,
) -> None:
    """Say TEXT (or each line of stdin) in a room, and exit once the broker confirms.

    Joins under --name for the time it takes, so the name must be free. Exit code 0
    when every line was confirmed, 1 otherwise, with the reason on stderr."""
    from zchat.client.sync import Client
    from zchat.errors import InvalidInput, ZchatError
    from zchat.protocol import check_text

    name = name_from_key(name, secure, key)
    if name is None:
        raise Failure("no name given: use --name NAME or set ZCHAT_NAME")
    keys = load_keys(secure, server_key, key, name)
    lines = [text] if text is not None else [line.rstrip("\r\n") for line in sys.stdin]
    lines = [line for line in lines if line.strip()]
    if not lines:
        raise Failure("nothing to send: give TEXT or lines on stdin")
    for number, line in enumerate(lines, 1):  # all or nothing: check before joining
        try:
            check_text(line)
        except InvalidInput as exc:
            where = f"line {number}: " if text is None else ""
            raise Failure(f"nothing sent: {where}{exc}") from None
    try:
        client = Client(name, host, port, rooms=[room], history=0, keys=keys)
    except InvalidInput as exc:
        raise Failure(str(exc)) from None
    try:
        client.join(timeout=timeout)
        for line in lines:
            client.send(line, room)
        confirmed = client.flush(timeout=timeout)
        notes = [m.text for m in client.core.events if m.kind == "system"]
        limited = [note for note in notes if note.startswith("not sent: slow down")]
        if limited:  # past the broker's flood limit: the rest were dropped
            count = client.core.unacknowledged + len(client.core.undelivered)
            raise Failure(f"{count} of {len(lines)} lines not delivered: {limited[0][10:]}")
        if not confirmed:
            count = client.core.unacknowledged
            raise Failure(f"{count} line(s) not confirmed by the broker within {timeout:g} s")
        if client.core.undelivered:
            failed = [note for note in notes if note.startswith(("not sent", "not delivered"))]
            raise Failure(failed[0] if failed else "a line was not delivered")
    except ZchatError as exc:
        raise Failure(str(exc)) from None
    finally:
        client.close()


@main.command()
@host_option("Broker address (env ZCHAT_HOST).")
@port_option("Broker port; the broker also uses PORT+1 (env ZCHAT_PORT).", 1)
@click.option("--spawn", is_flag=True, help="Start a broker of its own (free ports, no history).")
@click.option(
    "--publishers",
    "-p",
    type=click.IntRange(1, 100),
    default=1,
    show_default=True,
    help="Publishing clients (joined, each in a thread).",
)
@click.option(
    "--subscribers",
    "-s",
    type=click.IntRange(1, 2000),
    default=10,
    show_default=True,
    help="Subscribing sockets (in worker processes, 25 per process).",
)
@click.option(
    "--messages",
    "-n",
    type=click.IntRange(min=1),
    default=10_000,
    show_default=True,
    help="Messages per publisher.",
)
@click.option(
    "--size",
    type=click.IntRange(40, 4096),
    default=100,
    show_default=True,
    help="Bytes of text per message.",
)
@click.option(
    "--rate",
    type=click.FloatRange(min=0),
    default=0.0,
    show_default=True,
    help="Messages per second per publisher; 0 sends as fast as the broker takes them.",
)
@click.option("--room", default="bench", show_default=True, help="Room to use.")
@click.option("--json", "as_json", is_flag=True, help="Print the result as one JSON object.")
def bench(
    host: str,
    port: int,
    spawn: bool,
    publishers: int,
    subscribers: int,
    messages: int,
    size: int,
    rate: float,
    room: str,
    as_json: bool,
) -> None:
    """Measure a broker: throughput, loss and end-to-end latency.

    Prints a progress line each second on stderr, then sent, delivered, lost, msgs/s
    and latency p50/p90/p99/max."""
    import json

    from zchat.bench import Bench, BenchConfig, ZchatTarget, spawn_broker
    from zchat.errors import ZchatError

    broker = None
    if spawn:
        broker, port = spawn_broker(host)
    config = BenchConfig(host, port, publishers, subscribers, messages, size, rate, room)
    try:
        result = Bench(config, ZchatTarget(host, port, room)).run()
    except ZchatError as exc:
        raise Failure(str(exc)) from None
    finally:
        if broker is not None:
            broker.terminate()
            broker.wait(10)
    if as_json:
        click.echo(json.dumps(result.as_dict()))
    else:
        for line in result.lines():
            click.echo(line)
    if result.lost and not spawn and result.sent_per_second / publishers > FLOOD_HINT_RATE:
        click.echo(
            f"zchat: each publisher sent {result.sent_per_second / publishers:,.0f} lines a "
            "second: a broker with the default flood limit (20 a second per session) drops "
            "most of them. Start it with --rate 0 to measure it, or use --spawn.",
            err=True,
        )


@main.command()
@click.argument("name")
@click.option(
    "--dir",
    "directory",
    default=".",
    show_default=True,
    help="Folder to write NAME.key and NAME.key_secret into.",
)
def keygen(name: str, directory: str) -> None:
    """Make a key pair for secure mode: NAME.key (public) and NAME.key_secret.

    Keep NAME.key_secret to yourself. A user gives NAME.key to the broker's operator,
    who copies it into the broker's keys/users folder; the broker's own pair is made
    with `zchat keygen broker --dir keys`, and its broker.key is given to the users."""
    from zchat.errors import ConfigError
    from zchat.keys import keygen as make

    try:
        public, secret = make(name, directory)
    except ConfigError as exc:
        raise Failure(str(exc)) from None
    click.echo(f"wrote {public} (public: give it out) and {secret} (secret: keep it)")


@main.group()
@port_option("The broker's port (env ZCHAT_PORT): it names the admin socket.", 1)
@click.option("--admin-socket", help="The broker's admin socket file, if it was given one.")
@click.pass_context
def admin(ctx: click.Context, port: int, admin_socket: str | None) -> None:
    """Kick, ban and list users of a broker running on this machine, as its owner."""
    from pathlib import Path

    from zchat.admin import default_path

    ctx.obj = Path(admin_socket) if admin_socket else default_path(port)


def _admin(ctx: click.Context, op: str, **args: str) -> dict[str, Any]:
    from zchat.admin import AdminError, request

    try:
        return request(ctx.obj, op, args)
    except AdminError as exc:
        raise Failure(str(exc)) from None


@admin.command("kick")
@click.argument("name")
@click.argument("reason", required=False, default="")
@click.pass_context
def admin_kick(ctx: click.Context, name: str, reason: str) -> None:
    """End NAME's session, telling them REASON. They may join again."""
    click.echo(_admin(ctx, "kick", name=name, reason=reason)["text"])


@admin.command("ban")
@click.argument("name")
@click.argument("reason", required=False, default="")
@click.pass_context
def admin_ban(ctx: click.Context, name: str, reason: str) -> None:
    """Kick NAME and refuse them until unbanned (kept across restarts)."""
    click.echo(_admin(ctx, "ban", name=name, reason=reason)["text"])


@admin.command("unban")
@click.argument("name")
@click.pass_context
def admin_unban(ctx: click.Context, name: str) -> None:
    """Let NAME join again."""
    click.echo(_admin(ctx, "unban", name=name)["text"])


@admin.command("who")
@click.pass_context
def admin_who(ctx: click.Context) -> None:
    """Everyone connected: name, rooms, address, time connected."""
    users = _admin(ctx, "who")["data"]
    if not users:
        click.echo("nobody is here")
    for user in users:
        rooms = " ".join(f"#{room}" for room in user["rooms"]) or "-"
        admin_mark = " (admin)" if user["admin"] else ""
        click.echo(
            f"{user['name']}{admin_mark}  {rooms}  from {user['peer']}  {user['seconds']:g} s"
        )


@admin.command("bans")
@click.pass_context
def admin_bans(ctx: click.Context) -> None:
    """The banned names, who banned them, when and why."""
    bans = _admin(ctx, "bans")["data"]
    if not bans:
        click.echo("nobody is banned")
    for ban in bans:
        why = f": {ban['reason']}" if ban["reason"] else ""
        click.echo(f"{ban['name']}  banned by {ban['by']} at {ban['ts']}{why}")


@admin.command("stats")
@click.pass_context
def admin_stats(ctx: click.Context) -> None:
    """Sessions, rooms, and frames dropped by kind, as JSON."""
    import json

    click.echo(json.dumps(_admin(ctx, "stats")["data"], sort_keys=True))


@admin.command("reload")
@click.pass_context
def admin_reload(ctx: click.Context) -> None:
    """Secure mode: read the keys folder again (new, replaced, withdrawn keys, admins)."""
    click.echo(_admin(ctx, "reload")["text"])
