"""Logging in to an accounts broker from the commands that join: which broker key to
trust (trust.py: --server-key, known_hosts, or a fingerprint to confirm), and where the
password comes from (a prompt, ZCHAT_PASSWORD or --password-file; never an argument,
which any user of the machine sees in `ps`)."""

from __future__ import annotations

import os
import stat
import sys
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

import click

from zchat.cli.options import Failure

F = TypeVar("F", bound=Callable[..., Any])
PASSWORD_ENV = "ZCHAT_PASSWORD"
MAX_PASSWORD_FILE_BYTES = 4096
LOGIN_TRIES = 3  # passwords asked for at most, as sudo and ssh do


def login_options(f: F) -> F:
    """--server, --password-file and --register, for the commands that join."""
    f = click.option(
        "--register",
        is_flag=True,
        help="Accounts mode: make your account first (if the broker allows it).",
    )(f)
    f = click.option(
        "--password-file",
        type=click.Path(dir_okay=False),
        help=f"Accounts mode: read your password from this file (mode 600), or set "
        f"{PASSWORD_ENV}; a person is asked for it.",
    )(f)
    return click.option(
        "--server",
        help="The broker as tcp://HOST:PORT (or HOST:PORT), instead of --host and --port.",
    )(f)


def server_address(server: str | None, host: str, port: int) -> tuple[str, int]:
    """--server, else --host and --port; both at once is a mistake, said so."""
    if server is None:
        return host, port
    from zchat.addresses import parse_server
    from zchat.errors import ConfigError

    ctx = click.get_current_context()
    for option in ("host", "port"):
        if ctx.get_parameter_source(option) is click.core.ParameterSource.COMMANDLINE:
            raise Failure(f"--server names the broker already: leave --{option} out")
    try:
        return parse_server(server)
    except ConfigError as exc:
        raise Failure(str(exc)) from None


@dataclass(frozen=True)
class Login:
    """How to log in: the broker's key, and the password (None: ask a person)."""

    server_key: bytes
    password: str | None
    register: bool

    def keys(self) -> Any:
        from zchat.client.transport import Keys

        return Keys.for_login(self.server_key)


def wants_login(
    secure: bool, password_file: str | None, register: bool, host: str, port: int
) -> bool:
    """Whether to log in with a password: asked for (a password given, --register, or
    --server-key without --secure), or a broker whose key this user trusts already."""
    if secure:
        if password_file or register or os.environ.get(PASSWORD_ENV):
            raise Failure("--secure logs in with a key file: a password is for --accounts brokers")
        return False
    ctx = click.get_current_context()
    given = ctx.get_parameter_source("server_key") is not click.core.ParameterSource.DEFAULT
    if given or password_file or register or os.environ.get(PASSWORD_ENV):
        return True
    from zchat.trust import KnownHosts, known_hosts_path

    return _trusted(KnownHosts(known_hosts_path()), host, port) is not None


def plan_login(
    server_key: str, password_file: str | None, register: bool, host: str, port: int,
    timeout: float, interactive: bool,
) -> Login:  # fmt: skip
    """The key to trust and the password to give; Failure says what is missing."""
    ctx = click.get_current_context()
    given = ctx.get_parameter_source("server_key") is not click.core.ParameterSource.DEFAULT
    key = _given_key(server_key) if given else trusted_key(host, port, timeout, interactive)
    password = read_password(password_file)
    if password is None and not interactive:
        raise Failure(
            f"no password: set {PASSWORD_ENV} or give --password-file FILE (a script "
            "cannot be asked for one)"
        )
    if password is None and not given:
        still_trusted(host, port, timeout)  # before a person types a password, as ssh
    return Login(key, password, register)


def _given_key(value: str) -> bytes:
    from zchat.errors import ConfigError
    from zchat.trust import server_key

    try:
        return server_key(value)
    except ConfigError as exc:
        raise Failure(str(exc)) from None


def _trusted(hosts: Any, host: str, port: int) -> bytes | None:
    from zchat.errors import ConfigError

    try:
        found: bytes | None = hosts.lookup(host, port)
    except ConfigError as exc:
        raise Failure(str(exc)) from None
    return found


def trusted_key(host: str, port: int, timeout: float, interactive: bool) -> bytes:
    """The broker's key: the one this user trusts for HOST:PORT, or the one its key port
    tells, once the person has checked its fingerprint (trust on first use, as SSH)."""
    from zchat.client.hello import fetch_hello
    from zchat.errors import BrokerUnreachable, ConfigError, ProtocolError
    from zchat.trust import KnownHosts, known_hosts_path

    hosts = KnownHosts(known_hosts_path())
    known = _trusted(hosts, host, port)
    if known is not None:
        return known
    where = f"{host}:{port}"
    _key_port_listens(host, port, timeout)
    try:
        hello = fetch_hello(host, port, timeout)
    except (BrokerUnreachable, ProtocolError) as exc:
        raise Failure(str(exc)) from None
    if not interactive:
        raise Failure(
            f"the broker at {where} is not known here yet (its key's fingerprint is "
            f"{hello.fingerprint}): give --server-key KEY, as its operator's `zchat broker "
            "--print-invite` line does, or join once from a terminal to trust it"
        )
    click.echo(
        f"The broker at {where} is not known on this computer yet.\n"
        f"Its key's fingerprint is {hello.fingerprint}\n"
        "Compare it with the one its operator gives you (`zchat broker` logs it at start).",
        err=True,
    )
    if not click.confirm("Trust this key and connect?", default=False, err=True):
        raise Failure(f"not connected: the key of the broker at {where} is not trusted")
    try:
        hosts.remember(host, port, hello.key)
    except ConfigError as exc:
        raise Failure(str(exc)) from None
    click.echo(f"remembered in {known_hosts_path()}", err=True)
    return hello.key


def _key_port_listens(host: str, port: int, timeout: float) -> None:
    """Fail at once, before any password is asked or sent, if nothing listens on the
    key port (ZeroMQ would retry in silence till the timeout): an open or secure broker,
    or none."""
    import socket

    try:
        with socket.create_connection((host, port + 3), timeout=min(timeout, 3.0)):
            return
    except ConnectionRefusedError:
        raise Failure(
            f"the broker at {host}:{port} has no accounts (nothing listens on port {port + 3}, "
            "where an accounts broker tells its key): an open broker takes no password, "
            "and none was sent; join without one"
        ) from None
    except OSError:
        return  # unreachable, or slow: fetch_hello says so, after its timeout


def still_trusted(host: str, port: int, timeout: float) -> None:
    """Failure if the broker's key port tells another key than the one trusted
    (KeyChanged's loud paragraph), or does not answer. A person is asked for a password
    only after this: the handshake with a changed key would fail before the password
    is sent, but only once it had been typed."""
    from zchat.errors import BrokerUnreachable, ConfigError, ProtocolError

    try:
        _check_told_key(host, port, timeout)
    except (BrokerUnreachable, ProtocolError, ConfigError) as exc:
        raise Failure(str(exc)) from None


def changed_key(host: str, port: int, timeout: float) -> str | None:
    """After a failed handshake with a trusted key: what to say if the broker's key
    changed since (KeyChanged's loud paragraph), else None."""
    from zchat.errors import BrokerUnreachable, ConfigError, ProtocolError

    try:
        _check_told_key(host, port, timeout)
    except (BrokerUnreachable, ProtocolError):
        return None
    except ConfigError as exc:  # KeyChanged
        return str(exc)
    return None


def _check_told_key(host: str, port: int, timeout: float) -> None:
    """Ask the key port for the broker's key and check it against the one trusted for
    HOST:PORT: KeyChanged (a ConfigError) if they differ."""
    from zchat.client.hello import fetch_hello
    from zchat.trust import KnownHosts, known_hosts_path

    hello = fetch_hello(host, port, timeout)
    KnownHosts(known_hosts_path()).check(host, port, hello.key)


def read_password(password_file: str | None) -> str | None:
    """ZCHAT_PASSWORD, or the first line of --password-file; None if neither is given."""
    if password_file is not None:
        return _password_from(Path(password_file))
    return os.environ.get(PASSWORD_ENV) or None


def _password_from(path: Path) -> str:
    from zchat.errors import ConfigError
    from zchat.keys import read_bounded

    try:
        mode = stat.S_IMODE(path.stat().st_mode)
        data = read_bounded(path, MAX_PASSWORD_FILE_BYTES, "a password file")
    except OSError as exc:
        raise Failure(f"cannot read {path}: {exc.strerror or exc}") from None
    except ConfigError as exc:
        raise Failure(str(exc)) from None
    if mode & 0o077:
        raise Failure(f"{path} can be read by other users (mode {mode:o}): run chmod 600 {path}")
    password = data.decode("utf-8", "replace").split("\n", 1)[0].rstrip("\r")
    if not password:
        raise Failure(f"{path} holds no password on its first line")
    return password


def ask_password(prompt: str = "Password: ") -> str:
    """A password typed without echo; Ctrl-D or an empty one stops."""
    import getpass

    try:
        password = getpass.getpass(prompt, stream=sys.stderr)
    except EOFError:
        raise click.exceptions.Exit(1) from None
    if not password:
        raise Failure("no password given")
    return password


def ask_new_password() -> str:
    """A new account's password, typed twice (a typo would lock its owner out)."""
    while True:
        password = ask_password("New password: ")
        if ask_password("New password again: ") == password:
            return password
        click.echo("zchat: the two passwords differ; again", err=True)
