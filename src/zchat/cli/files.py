"""The commands that move files: ``zchat send-file``, ``zchat get-file``."""

from __future__ import annotations

import os
import secrets
import sys
import time
from typing import Any, ClassVar

import click

from zchat.cli.options import (
    Failure,
    check_host,
    host_option,
    load_keys,
    name_from_key,
    port_option,
    secure_options,
)

TIMEOUT_HELP = "Seconds to wait for the broker to answer the join."


class _Meter:
    """Progress on stderr, at most a few times a second, when it is a terminal."""

    def __init__(self, what: str) -> None:
        self.what = what
        self.shown = sys.stderr.isatty()
        self.start = time.monotonic()
        self.last = 0.0

    def __call__(self, done: int, total: int) -> None:
        now = time.monotonic()
        if not self.shown or (now - self.last < 0.25 and done < total):
            return
        self.last = now
        from zchat.sharing.progress import describe

        line = describe(done, total, now - self.start)
        click.echo(f"\r{self.what}: {line}\x1b[K", err=True, nl=done >= total)


def _client(name: str | None, host: str, port: int, rooms: list[str], secure: bool,
            server_key: str, key: str | None) -> Any:  # fmt: skip
    from zchat.client.sync import Client
    from zchat.errors import InvalidInput

    name = name_from_key(name, secure, key)
    if name is None:
        raise Failure("no name given: use --name NAME or set ZCHAT_NAME")
    keys = load_keys(secure, server_key, key, name)
    check_host(host)
    try:
        return Client(name, host, port, rooms=rooms, history=0, keys=keys, quiet=True)
    except InvalidInput as exc:
        raise Failure(str(exc)) from None


@click.command("send-file")
@click.argument("path", type=click.Path(dir_okay=False, path_type=str))
@click.option("--name", envvar="ZCHAT_NAME", help="Who shares it (env ZCHAT_NAME).")
@host_option("Broker address (env ZCHAT_HOST).")
@port_option("Broker port; files go to PORT+2 (env ZCHAT_PORT).", 1)
@click.option("--room", default="general", show_default=True, help="Room to share it in.")
@click.option("--to", help="Share it privately with this user instead (they must be here).")
@click.option("--timeout", type=click.FloatRange(min=0.1), default=5.0, show_default=True,
              help=TIMEOUT_HELP)  # fmt: skip
@secure_options
def send_file(
    path: str,
    name: str | None,
    host: str,
    port: int,
    room: str,
    to: str | None,
    timeout: float,
    secure: bool,
    server_key: str,
    key: str | None,
) -> None:
    """Share the file at PATH in a room (or with one user), and exit once the broker
    holds it whole and checked; prints its id (what `zchat get-file` and /get take).

    Joins quietly under --name for the time it takes. Exit code 0 when the file is
    shared, 1 otherwise, with the reason on stderr."""
    from zchat.errors import ZchatError

    client = _client(name, host, port, [room], secure, server_key, key)
    client.core.verb = "send-file"
    try:
        client.join(timeout=timeout)
        shared = client.send_file(path, room=room, to=to, progress=_Meter(os.path.basename(path)))
    except ZchatError as exc:
        raise Failure(str(exc)) from None
    finally:
        client.close()
    click.echo(shared.id)


@click.command("get-file")
@click.argument("file_id", metavar="ID", type=click.IntRange(min=1))
@click.option("-o", "--output", help="Where to save it: a folder, or a file name. "
              "Default: the downloads folder.")  # fmt: skip
@click.option("--downloads", envvar="ZCHAT_DOWNLOADS", default=".", show_default=True,
              help="The downloads folder (env ZCHAT_DOWNLOADS).")  # fmt: skip
@click.option("--name", envvar="ZCHAT_NAME",
              help="Who fetches it (env ZCHAT_NAME); a private file's sender or recipient. "
              "Default: a passing name.")  # fmt: skip
@host_option("Broker address (env ZCHAT_HOST).")
@port_option("Broker port; files come from PORT+2 (env ZCHAT_PORT).", 1)
@click.option("--timeout", type=click.FloatRange(min=0.1), default=5.0, show_default=True,
              help=TIMEOUT_HELP)  # fmt: skip
@secure_options
def get_file(
    file_id: int,
    output: str | None,
    downloads: str,
    name: str | None,
    host: str,
    port: int,
    timeout: float,
    secure: bool,
    server_key: str,
    key: str | None,
) -> None:
    """Fetch shared file ID, check its SHA-256, and print where it was saved. A name in
    use is never overwritten (`name (1).ext`); a download stopped half-way resumes.

    Joins quietly for the time it takes, and enters the file's room if it must. Exit
    code 0 when the file is complete and checked, 1 otherwise."""
    from zchat.errors import TransferFailed, ZchatError

    if name is None and not secure:
        name = f"fetch-{secrets.token_hex(3)}"
    dest = output if output is not None else downloads
    if output is None and not os.path.isdir(downloads):
        raise Failure(f"the downloads folder {downloads} does not exist")
    client = _client(name, host, port, ["general"], secure, server_key, key)
    client.core.verb = "get-file"
    meter = _Meter(f"file {file_id}")
    try:
        client.join(timeout=timeout)
        try:
            saved = client.get_file(file_id, dest, progress=meter)
        except TransferFailed as exc:
            if exc.code != "not-in-room" or not exc.room or not client.enter(exc.room, timeout):
                raise
            saved = client.get_file(file_id, dest, progress=meter)
    except ZchatError as exc:
        raise Failure(str(exc)) from None
    finally:
        client.close()
    click.echo(saved)


# --- the broker's options -----------------------------------------------------------------


class ByteSize(click.ParamType):  # type: ignore[type-arg]
    """A number of bytes: ``100M``, ``2G``, ``512K``, ``1.5G`` (powers of 1024) or bytes."""

    name = "size"
    _UNITS: ClassVar[dict[str, int]] = {
        "": 1,
        "B": 1,
        "K": 2**10,
        "M": 2**20,
        "G": 2**30,
        "T": 2**40,
    }

    def convert(self, value: Any, param: click.Parameter | None, ctx: click.Context | None) -> int:
        if isinstance(value, int):
            return value
        text = str(value).strip().upper().removesuffix("IB").removesuffix("B")
        unit = text[-1:] if text[-1:] in self._UNITS else ""
        try:
            number = float(text[: len(text) - len(unit)])
        except ValueError:
            self.fail(f"{value!r} is not a size: write 100M, 2G, 512K or a number of bytes")
        if number < 0:
            self.fail(f"{value!r}: a size is 0 or more")
        return int(number * self._UNITS[unit])


def file_options(f: Any) -> Any:
    """The broker's options for shared files (FileLimits' defaults)."""
    from zchat.broker.limits import FileLimits

    limits = FileLimits()
    options = [
        click.option(
            "--upload-timeout", type=click.FloatRange(min=1), default=limits.upload_timeout,
            show_default=True,
            help="Seconds an unfinished upload may stand idle (its client gone) before its "
            "bytes are deleted; one resumed sooner goes on where it stopped.",
        ),
        click.option(
            "--max-transfers", type=click.IntRange(min=1), default=limits.transfers,
            show_default=True, help="File transfers one session may run at once.",
        ),
        click.option(
            "--files-quota", type=ByteSize(), default="2G", show_default=True,
            help="Bytes of shared files kept in all; past it the oldest files expire.",
        ),
        click.option(
            "--max-file-size", type=ByteSize(), default="100M", show_default=True,
            help="The largest file that may be shared.",
        ),
        click.option(
            "--files", "files_dir",
            help="Folder of the shared files (made private). Default: beside --db "
            "(history.db: history-files/); with --db :memory: a temporary folder, removed "
            "at exit.",
        ),
    ]  # fmt: skip
    for option in options:
        f = option(f)
    return f


def file_config(
    files_dir: str | None,
    max_file_size: int,
    files_quota: int,
    max_transfers: int,
    upload_timeout: float,
) -> dict[str, Any]:
    """BrokerConfig's fields for the options of ``file_options``."""
    from zchat.broker.limits import FileLimits

    limits = FileLimits(max_file_size, files_quota, max_transfers, upload_timeout)
    return {"files": files_dir, "file_limits": limits}
