"""The operator's commands: ``zchat broker``, ``zchat keygen``, ``zchat admin``."""

from __future__ import annotations

import logging
import sys
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import click

from zchat.broker.guard import (
    DEFAULT_MAX_CONNECTIONS_PER_ADDRESS,
    DEFAULT_MAX_CONNECTIONS_PER_KEY,
    DEFAULT_MAX_SUBSCRIPTION_BYTES,
    DEFAULT_MAX_SUBSCRIPTIONS,
    DEFAULT_MAX_UNREAD_BYTES,
    DEFAULT_PENALTY_SECONDS,
    DEFAULT_SUBSCRIPTION_BURST,
    DEFAULT_SUBSCRIPTION_RATE,
    HANDSHAKE_SECONDS,
)
from zchat.broker.limits import QUIET_JOINS
from zchat.broker.orphans import REJOIN_GRACE_SECONDS
from zchat.cli.files import file_config, file_options
from zchat.cli.options import (
    LOG_LEVELS,
    Failure,
    StartFailure,
    host_option,
    port_option,
)


@click.command()
@host_option("Address to listen on (env ZCHAT_HOST).")
@port_option(
    "Clients send to PORT, listen on PORT+1 and move files on PORT+2 (accounts mode: and "
    "ask the broker's key on PORT+3); 0 picks free ones (env ZCHAT_PORT).",
    0,
)
@click.option(
    "--db",
    envvar="ZCHAT_DB",
    help="History database file (env ZCHAT_DB); ':memory:' keeps none; its folder must "
    "exist. Default: $XDG_DATA_HOME/zchat/history.db (~/.local/share/zchat/history.db) "
    "on port 5005, history-PORT.db on another port; in secure mode secure-history.db "
    "(secure-history-PORT.db) beside it, and accounts-history.db for --accounts. A file "
    "keeps one mode's history, for one broker.",
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
    "--accounts",
    is_flag=True,
    help="Accounts mode: CURVE encryption for every connection, and people log in with a "
    "password (`zchat user add NAME`). With --secure too, the keys in --keys log in as well.",
)
@click.option(
    "--allow-register",
    is_flag=True,
    help="Accounts mode: people may make their own account (zchat join --register).",
)
@click.option(
    "--print-invite",
    is_flag=True,
    help="Accounts mode: print the line people join with (the broker's key in it) and exit.",
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
    "--rejoin-grace",
    type=click.FloatRange(min=0),
    default=REJOIN_GRACE_SECONDS,
    show_default=True,
    help="Seconds the sessions of the previous broker (stopped or killed) are waited for: "
    "those back by then go on without a new join notice, the others are announced as left "
    "(broker restarted).",
)
@click.option(
    "--quiet-joins",
    type=click.IntRange(min=0),
    default=QUIET_JOINS,
    show_default=True,
    help="Above this many members, a room's joins and leaves are not announced one by one, "
    "but in sum once a minute ('37 joined, 12 left'); 0 announces each one.",
)
@click.option(
    "--admin-socket",
    help="The operator's socket file for `zchat admin`. "
    "Default: $XDG_RUNTIME_DIR/zchat/admin-PORT.sock (or /tmp/zchat-UID/...).",
)
@click.option(
    "--max-subscriptions",
    type=click.IntRange(min=1),
    default=DEFAULT_MAX_SUBSCRIPTIONS,
    show_default=True,
    help="Subscriptions one connection may hold; past it the connection is cut.",
)
@click.option(
    "--max-subscription-bytes",
    type=click.IntRange(min=64),
    default=DEFAULT_MAX_SUBSCRIPTION_BYTES,
    show_default=True,
    help="Total bytes of the topics one connection may hold; past it, it is cut.",
)
@click.option(
    "--subscription-rate",
    type=click.FloatRange(min=0),
    default=DEFAULT_SUBSCRIPTION_RATE,
    show_default=True,
    help="(Un)subscriptions a second one connection may make, sustained; 0 for no limit.",
)
@click.option(
    "--subscription-burst",
    type=click.IntRange(min=1),
    default=DEFAULT_SUBSCRIPTION_BURST,
    show_default=True,
    help="(Un)subscriptions one connection may make at once, before the rate applies.",
)
@click.option(
    "--max-unread",
    type=click.IntRange(min=1),
    default=DEFAULT_MAX_UNREAD_BYTES // 2**20,
    show_default=True,
    help="MiB of answers a connection may leave unread; past it, it is cut.",
)
@click.option(
    "--cut-penalty",
    type=click.FloatRange(min=0),
    default=DEFAULT_PENALTY_SECONDS,
    show_default=True,
    help="Seconds an address (in secure mode, a key) whose connection was cut is refused.",
)
@click.option(
    "--max-connections-per-key",
    type=click.IntRange(min=0),
    default=DEFAULT_MAX_CONNECTIONS_PER_KEY,
    show_default=True,
    help="Secure mode: connections one key may hold at once; past it the newest is cut "
    "(0: no bound).",
)
@click.option(
    "--max-connections-per-address",
    type=click.IntRange(min=0),
    default=DEFAULT_MAX_CONNECTIONS_PER_ADDRESS,
    show_default=True,
    help="Connections one peer address may hold at once, with or without a handshake; "
    "past it the newest is cut (0: no bound).",
)
@click.option(
    "--handshake-timeout",
    type=click.FloatRange(min=0.1),
    default=HANDSHAKE_SECONDS,
    show_default=True,
    help="Seconds a new connection has to finish its handshake before it is closed.",
)
@click.option(
    "--connection-limits/--no-connection-limits",
    default=True,
    show_default=True,
    help="Bound what one connection may make the broker hold (SECURITY.md); off only "
    "on a network you trust, or to fuzz the broker's rules.",
)
@file_options
def broker(
    host: str,
    port: int,
    db: str | None,
    retention: int,
    log_level: str,
    secure: bool,
    keys_dir: str,
    accounts: bool,
    allow_register: bool,
    print_invite: bool,
    rate: float,
    burst: int,
    send_queue: int,
    peer_timeout: float,
    rejoin_grace: float,
    quiet_joins: int,
    admin_socket: str | None,
    max_subscriptions: int,
    max_subscription_bytes: int,
    subscription_rate: float,
    subscription_burst: int,
    max_unread: int,
    cut_penalty: float,
    max_connections_per_key: int,
    max_connections_per_address: int,
    handshake_timeout: float,
    connection_limits: bool,
    **files: Any,
) -> None:
    """Run the broker: every client connects here. Stop it with Ctrl-C."""
    import signal

    from zchat.broker.guard import ConnectionLimits
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
            db=db or str(default_path("accounts" if accounts else secure, port)),
            retention=retention,
            rate=rate,
            burst=burst,
            sndhwm=send_queue,
            zmtp_heartbeat_timeout=peer_timeout,
            rejoin_grace=rejoin_grace,
            quiet_joins=quiet_joins,
            handshake_timeout=handshake_timeout,
            keys=keys_dir if secure else None,
            accounts=accounts,
            allow_register=allow_register,
            admin_socket=admin_socket or "",
            connection=ConnectionLimits(
                subscriptions=max_subscriptions,
                subscription_bytes=max_subscription_bytes,
                subscription_rate=subscription_rate,
                subscription_burst=subscription_burst,
                unread_bytes=max_unread * 2**20,
                penalty_seconds=cut_penalty,
                per_key=max_connections_per_key,
                per_address=max_connections_per_address,
                enabled=connection_limits,
            ),
            **file_config(**files),
        )
        if (allow_register or print_invite) and not accounts:
            raise ConfigError("--allow-register and --print-invite are for --accounts")
        if print_invite:
            _print_invite(config)
            return
        warning = warn_if_exposed(config)
        if warning:
            logging.getLogger("zchat.broker").warning(warning)
        server = Broker(config)
    except ConfigError as exc:
        raise StartFailure(str(exc)) from None
    for sig in (signal.SIGINT, signal.SIGTERM):
        signal.signal(sig, lambda *_: server.stop())
    server.run()


def _print_invite(config: Any) -> None:
    """--print-invite: the broker's key (made if new) in the line people join with."""
    from zchat.broker.server import public_host
    from zchat.keys import load_keyring, own_keyring
    from zchat.protocol.hello import fingerprint
    from zchat.trust import invite

    if config.db == ":memory:":
        raise Failure("--print-invite needs a --db file: with ':memory:' the key is new each start")
    if not config.port:
        raise Failure("--print-invite needs the port people will join on: give --port N, not 0")
    key = (load_keyring(config.keys) if config.keys else own_keyring(config.db)).public
    click.echo(invite(public_host(config.host), config.port, key))
    click.echo(f"(the broker's key fingerprint: {fingerprint(key)})", err=True)


@click.command()
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


ADMIN_PORT_HELP = "The broker's port (env ZCHAT_PORT): it names the admin socket."
ADMIN_SOCKET_HELP = "The broker's admin socket file, if it was given one."


@dataclass(frozen=True)
class AdminTarget:
    """Which broker `zchat admin` talks to: its port, or its socket file."""

    port: int
    admin_socket: str | None

    def path(self) -> Path:
        from zchat.admin import default_path

        return Path(self.admin_socket) if self.admin_socket else default_path(self.port)


def admin_target(f: Callable[..., Any]) -> Callable[..., Any]:
    """--port and --admin-socket after the subcommand too (`zchat admin who --port 6000`):
    given there, they win over the ones before it."""
    f = click.option("--admin-socket", "admin_socket", help=ADMIN_SOCKET_HELP)(f)
    f = click.option("--port", type=click.IntRange(1, 65534), help=ADMIN_PORT_HELP)(f)
    return click.pass_context(f)


@click.group()
@port_option(ADMIN_PORT_HELP, 1)
@click.option("--admin-socket", help=ADMIN_SOCKET_HELP)
@click.pass_context
def admin(ctx: click.Context, port: int, admin_socket: str | None) -> None:
    """Kick, ban and list users of a broker running on this machine, as its owner.

    --port and --admin-socket may come before or after the subcommand."""
    ctx.obj = AdminTarget(port, admin_socket)


def _admin(
    ctx: click.Context, port: int | None, admin_socket: str | None, op: str, **args: Any
) -> dict[str, Any]:
    from zchat.admin import AdminError, request

    before: AdminTarget = ctx.obj
    target = AdminTarget(
        before.port if port is None else port,
        before.admin_socket if admin_socket is None else admin_socket,
    )
    try:
        return request(target.path(), op, args)
    except AdminError as exc:
        raise Failure(str(exc)) from None


@admin.command("kick")
@click.argument("name")
@click.argument("reason", required=False, default="")
@admin_target
def admin_kick(
    ctx: click.Context, port: int | None, admin_socket: str | None, name: str, reason: str
) -> None:
    """End NAME's session, telling them REASON. They may join again."""
    click.echo(_admin(ctx, port, admin_socket, "kick", name=name, reason=reason)["text"])


@admin.command("ban")
@click.argument("name")
@click.argument("reason", required=False, default="")
@admin_target
def admin_ban(
    ctx: click.Context, port: int | None, admin_socket: str | None, name: str, reason: str
) -> None:
    """Kick NAME and refuse them until unbanned (kept across restarts)."""
    click.echo(_admin(ctx, port, admin_socket, "ban", name=name, reason=reason)["text"])


@admin.command("unban")
@click.argument("name")
@admin_target
def admin_unban(ctx: click.Context, port: int | None, admin_socket: str | None, name: str) -> None:
    """Let NAME join again."""
    click.echo(_admin(ctx, port, admin_socket, "unban", name=name)["text"])


@admin.command("who")
@admin_target
def admin_who(ctx: click.Context, port: int | None, admin_socket: str | None) -> None:
    """Everyone connected: name, rooms, address, time connected."""
    users = _admin(ctx, port, admin_socket, "who")["data"]
    if not users:
        click.echo("nobody is here")
    for user in users:
        rooms = " ".join(f"#{room}" for room in user["rooms"]) or "-"
        admin_mark = " (admin)" if user["admin"] else ""
        admin_mark += " (quiet)" if user.get("quiet") else ""
        click.echo(
            f"{user['name']}{admin_mark}  {rooms}  from {user['peer']}  {user['seconds']:g} s"
        )


@admin.command("bans")
@admin_target
def admin_bans(ctx: click.Context, port: int | None, admin_socket: str | None) -> None:
    """The banned names, who banned them, when and why."""
    bans = _admin(ctx, port, admin_socket, "bans")["data"]
    if not bans:
        click.echo("nobody is banned")
    for ban in bans:
        why = f": {ban['reason']}" if ban["reason"] else ""
        click.echo(f"{ban['name']}  banned by {ban['by']} at {ban['ts']}{why}")


@admin.command("stats")
@admin_target
def admin_stats(ctx: click.Context, port: int | None, admin_socket: str | None) -> None:
    """Sessions, rooms, and frames dropped by kind, as JSON."""
    import json

    click.echo(json.dumps(_admin(ctx, port, admin_socket, "stats")["data"], sort_keys=True))


@admin.command("reload")
@admin_target
def admin_reload(ctx: click.Context, port: int | None, admin_socket: str | None) -> None:
    """Secure mode: read the keys folder again (new, replaced, withdrawn keys, admins)."""
    click.echo(_admin(ctx, port, admin_socket, "reload")["text"])
