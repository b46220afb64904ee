"""Time bot: answers "!time" with the time the broker stamped on the question (UTC).

python examples/time_bot.py
"""

import os

from zchat import Client

host = os.environ.get("ZCHAT_HOST", "127.0.0.1")
port = int(os.environ.get("ZCHAT_PORT", "5005"))

with Client(name="timebot", host=host, port=port) as chat:
    print("timebot ready", flush=True)
    for msg in chat:
        if msg.kind == "message" and not msg.replayed and msg.text.strip() == "!time":
            # the question's own stamp is the broker's time: no clock of ours to trust
            stamp = msg.ts.strftime("%Y-%m-%d %H:%M:%S UTC")
            chat.send(f"{msg.sender}: it is {stamp}", room=msg.room)
