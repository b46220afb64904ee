"""Archive bot: keeps a copy of every file shared in #general, and shares one back.

Each file someone shares is fetched (its SHA-256 checked) into the archive folder, and
the bot says where it went. `!latest` shares the newest file of the archive again.

python examples/archive_bot.py         # broker on ZCHAT_HOST / ZCHAT_PORT, or 127.0.0.1:5005
ZCHAT_ARCHIVE=~/kelas python examples/archive_bot.py    # the folder (default ./archive)
"""

import os
from pathlib import Path

from zchat import Client
from zchat.errors import TransferFailed

host = os.environ.get("ZCHAT_HOST", "127.0.0.1")
port = int(os.environ.get("ZCHAT_PORT", "5005"))
archive = Path(os.environ.get("ZCHAT_ARCHIVE", "archive")).expanduser()
archive.mkdir(parents=True, exist_ok=True)
newest: Path | None = None

with Client(name="archivebot", host=host, port=port, rooms=["general"], history=0) as chat:
    print(f"archivebot joined {host}:{port}, keeping files in {archive}", flush=True)
    for msg in chat:
        if msg.kind != "message" or msg.sender == chat.name:
            continue
        if msg.file is not None and not msg.file.expired:
            try:
                newest = chat.get_file(msg.file.id, archive)  # never overwrites: "a (1).pdf"
            except TransferFailed as failed:
                chat.send(f"could not keep {msg.file.name}: {failed}", room=msg.room)
                continue
            chat.send(f"kept {msg.file.name} as {newest.name} (sha256 {msg.file.sha256[:12]}…)")
        elif msg.text.strip() == "!latest" and newest is not None:
            chat.send_file(newest, room=msg.room)
