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
    "Default: $XDG_DATA_HOME/zchat/history.db (~/.local/share/zchat/history.db).",
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
def broker(host: str, port: int, db: str | None, retention: int, log_level: str) -> None:
    """Run the broker: every client connects here. Stop it with Ctrl-C."""
    import signal

    from zchat.broker.server import Broker, BrokerConfig
    from zchat.broker.store import default_path
    from zchat.errors import ConfigError

    logging.basicConfig(
        level=log_level.upper(),
        format="%(asctime)s %(levelname)s %(message)s",
        datefmt="%Y-%m-%d %H:%M:%S",
        stream=sys.stderr,
    )
    try:
        path = db or str(default_path())
        server = Broker(BrokerConfig(host=host, port=port, db=path, retention=retention))
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
@click.option(
    "--room",
    "rooms",
    multiple=True,
    default=["general"],
    show_default=True,
    help="Room to join; repeat for several. The first is where your lines go.",
)
@click.option(
    "--history",
    type=click.IntRange(0, 1000),
    default=50,
    show_default=True,
    help="Lines of each room's history to show on joining.",
)
@click.option(
    "--time-format",
    type=click.Choice(["time", "full", "none"]),
    default="time",
    show_default=True,
    help="Stamp lines [HH:MM:SS] (time), [YYYY-MM-DD HH:MM:SS] (full), or not (none).",
)
@click.option(
    "--connect-timeout",
    type=click.FloatRange(min=0.1),
    default=10.0,
    show_default=True,
    help="Seconds to wait for the broker before giving up.",
)
def join(
    name: str | None,
    host: str,
    port: int,
    rooms: tuple[str, ...],
    history: int,
    time_format: str,
    connect_timeout: float,
) -> None:
    """Join the chat. Type to talk; /help lists the commands.

    When stdin is not a terminal, each input line is sent as a message and each event
    is printed as one plain line; the end of input leaves the chat."""
    from zchat.client.terminal import TerminalConfig, run
    from zchat.errors import InvalidInput
    from zchat.protocol import check_name, check_room

    interactive = sys.stdin.isatty()
    if name is None:
        if not interactive:
            raise Failure("no name given: use --name NAME or set ZCHAT_NAME")
        name = _ask_name()
    try:
        name = check_name(name)
        checked = tuple(check_room(r) for r in rooms)
    except InvalidInput as exc:
        raise Failure(str(exc)) from None
    config = TerminalConfig(name, host, port, checked, history, time_format, connect_timeout)
    sys.exit(run(config, interactive))
