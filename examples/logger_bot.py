"""Logger bot: appends every line of a room to a file, one plain line each.

python examples/logger_bot.py general chat.log
"""

import os
import sys

from zchat import Client
from zchat.client.render import render

room, path = sys.argv[1], sys.argv[2]
host = os.environ.get("ZCHAT_HOST", "127.0.0.1")
port = int(os.environ.get("ZCHAT_PORT", "5005"))

with (
    Client(name="logger", host=host, port=port, rooms=[room], history=0) as chat,
    open(path, "a", encoding="utf-8") as log,
):
    print(f"logging #{room} to {path}", flush=True)
    for msg in chat:
        if msg.room == room:
            line = render(msg, time_format="full")
            log.write(line + "\n")
            log.flush()
            print(f"logged: {line}", flush=True)
