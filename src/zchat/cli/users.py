"""``zchat user``: the accounts of an accounts broker running on this machine, through
its admin socket (as ``zchat admin``: its owner only). The password is asked for here,
and hashed here (passwords.py): only its hash goes to the broker, and it is never an
argument (other users see arguments in `ps`)."""

from __future__ import annotations

from typing import Any

import click

from zchat.cli.login import PASSWORD_ENV, read_password
from zchat.cli.operate import ADMIN_SOCKET_HELP, AdminTarget, _admin, admin_target
from zchat.cli.options import Failure


@click.group()
@click.option("--port", envvar="ZCHAT_PORT", type=click.IntRange(1, 65534), default=5005,
              show_default=True, help="The broker's port (env ZCHAT_PORT).")  # fmt: skip
@click.option("--admin-socket", help=ADMIN_SOCKET_HELP)
@click.pass_context
def user(ctx: click.Context, port: int, admin_socket: str | None) -> None:
    """Add, change and remove the accounts of a broker started with --accounts.

    Run on the broker's machine, as the user running it. A password is asked for twice
    (without echo), or read from --password-file or ZCHAT_PASSWORD, or made up
    (--generate) and printed once."""
    ctx.obj = AdminTarget(port, admin_socket)


def _new_password(name: str, generate: bool, password_file: str | None) -> tuple[str, bool]:
    """The new password, checked (passwords.check_new_password); and whether to show it."""
    from zchat.errors import InvalidInput
    from zchat.passwords import check_new_password, generate_password

    if generate:
        return generate_password(), True
    password = read_password(password_file)
    if password is not None:
        try:
            return check_new_password(name, password), False
        except InvalidInput as exc:
            raise Failure(str(exc)) from None
    import sys

    if not sys.stdin.isatty():
        raise Failure(
            f"no password: give --password-file FILE, set {PASSWORD_ENV}, or --generate one"
        )
    while True:  # a person is asked again, told why
        password = click.prompt(
            f"New password for {name}", hide_input=True, confirmation_prompt=True, err=True
        )
        try:
            return check_new_password(name, password), False
        except InvalidInput as exc:
            click.echo(f"zchat: {exc}; again", err=True)


def _set_password(
    target: tuple[click.Context, int | None, str | None], op: str, name: str,
    generate: bool, password_file: str | None, **more: Any,
) -> None:  # fmt: skip
    """``op`` (user-add, user-passwd) with a new password's hash, made here; the
    broker's answer printed, and the password too if it was made up (--generate)."""
    from zchat.passwords import hash_password

    password, show = _new_password(name, generate, password_file)
    args = {"name": name, "hash": hash_password(password), **more}
    click.echo(_admin(*target, op, **args)["text"])
    if show:
        click.echo(f"password: {password}")


password_options = [
    click.option("--generate", is_flag=True, help="Make up a random password, and print it."),
    click.option(
        "--password-file",
        type=click.Path(dir_okay=False),
        help=f"Read the password from this file's first line (or set {PASSWORD_ENV}).",
    ),
]


def _with_password_options(f: Any) -> Any:
    for option in reversed(password_options):
        f = option(f)
    return f


@user.command("add")
@click.argument("name")
@click.option("--admin", is_flag=True, help="The account may /kick, /ban and /unban.")
@_with_password_options
@admin_target
def user_add(
    ctx: click.Context, port: int | None, admin_socket: str | None, name: str, admin: bool,
    generate: bool, password_file: str | None,
) -> None:  # fmt: skip
    """Make an account NAME, which logs in with its password."""
    from zchat.errors import InvalidInput
    from zchat.protocol import check_name

    try:
        check_name(name)
    except InvalidInput as exc:
        raise Failure(str(exc)) from None
    target = (ctx, port, admin_socket)
    _set_password(target, "user-add", name, generate, password_file, admin=admin)


@user.command("passwd")
@click.argument("name")
@_with_password_options
@admin_target
def user_passwd(
    ctx: click.Context, port: int | None, admin_socket: str | None, name: str,
    generate: bool, password_file: str | None,
) -> None:  # fmt: skip
    """Give NAME a new password; their sessions end (they log in with the new one)."""
    _set_password((ctx, port, admin_socket), "user-passwd", name, generate, password_file)


@user.command("del")
@click.argument("name")
@admin_target
def user_del(ctx: click.Context, port: int | None, admin_socket: str | None, name: str) -> None:
    """Delete NAME's account; their session ends. (Their lines stay in the history.)"""
    click.echo(_admin(ctx, port, admin_socket, "user-del", name=name)["text"])


@user.command("list")
@admin_target
def user_list(ctx: click.Context, port: int | None, admin_socket: str | None) -> None:
    """The accounts: name, admin or not, last login, failed logins since."""
    accounts = _admin(ctx, port, admin_socket, "users")["data"]
    if not accounts:
        click.echo("no accounts yet: add one with `zchat user add NAME`")
    for account in accounts:
        admin = " (admin)" if account["admin"] else ""
        last = f"last login {account['last']}" if account["last"] else "never logged in"
        failed = f", {account['failed']} failed since" if account["failed"] else ""
        click.echo(f"{account['name']}{admin}  {last}{failed}")
