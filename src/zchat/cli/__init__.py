"""The ``zchat`` command: a thin shell that turns options into a config and calls the
library. Heavy imports (zmq, prompt_toolkit) happen inside the commands, so that
``zchat --help`` stays fast.

    chat.py     join, listen, send
    files.py    send-file, get-file
    operate.py  broker, keygen, admin
    users.py    user (accounts)
    login.py    logging in: the broker's key, the password
    measure.py  bench
    options.py  what they share: options, key loading, the one-line failure
"""

from __future__ import annotations

import click

from zchat import __version__
from zchat.cli import chat, files, measure, operate, users


@click.group(context_settings={"help_option_names": ["-h", "--help"], "max_content_width": 100})
@click.version_option(__version__, prog_name="zchat", message="%(prog)s %(version)s")
def main() -> None:
    """zchat: a group chat on ZeroMQ. Start a broker, then join it from other terminals."""


for command in (
    operate.broker,
    operate.keygen,
    operate.admin,
    users.user,
    chat.join,
    chat.listen,
    chat.send,
    files.send_file,
    files.get_file,
    measure.bench,
):
    main.add_command(command)
