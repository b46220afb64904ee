"""Options and helpers shared by the ``zchat`` commands."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, TypeVar

import click

DEFAULT_HOST = "127.0.0.1"
DEFAULT_PORT = 5005
LOG_LEVELS = ["debug", "info", "warning", "error"]
F = TypeVar("F", bound=Callable[..., Any])


class Failure(click.ClickException):
    """One clear line on stderr, exit code 1, no traceback."""

    def show(self, file: object = None) -> None:
        click.echo(f"zchat: {self.message}", err=True)


class StartFailure(Failure):
    """Nothing can start as configured (the broker's port is taken, the broker's host name
    does not resolve): exit code 2."""

    exit_code = 2


def check_host(host: str) -> None:
    """Fail at once (StartFailure) if ``host`` does not resolve: libzmq would retry for
    ever in silence, and the wait would end as "no answer from the broker"."""
    import socket

    try:
        socket.getaddrinfo(host, None, type=socket.SOCK_STREAM)
    except (OSError, UnicodeError) as exc:
        why = exc.strerror if isinstance(exc, OSError) and exc.strerror else str(exc)
        raise StartFailure(
            f"the host name {host!r} does not resolve ({why}): check --host or ZCHAT_HOST"
        ) from None


def host_option(help: str) -> Callable[[F], F]:
    return click.option(
        "--host", envvar="ZCHAT_HOST", default=DEFAULT_HOST, show_default=True, help=help
    )


def port_option(help: str, lowest: int) -> Callable[[F], F]:
    return click.option(
        "--port",
        envvar="ZCHAT_PORT",
        type=click.IntRange(lowest, 65533),
        default=DEFAULT_PORT,
        show_default=True,
        help=help,
    )


def connect_timeout_option(help: str, lowest: float) -> Callable[[F], F]:
    return click.option(
        "--connect-timeout",
        type=click.FloatRange(min=lowest),
        default=10.0,
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
