"""Echo bot: answers "!echo words" with "words", in the room it was asked in.

python examples/echo_bot.py            # broker on ZCHAT_HOST / ZCHAT_PORT, or 127.0.0.1:5005
"""

import os

from zchat import Client

host = os.environ.get("ZCHAT_HOST", "127.0.0.1")
port = int(os.environ.get("ZCHAT_PORT", "5005"))

with Client(name="echobot", host=host, port=port, rooms=["general"]) as chat:
    print(f"echobot joined {host}:{port}", flush=True)
    for msg in chat:
        # replayed lines are history shown on joining: not questions asked of us now
        if msg.kind == "message" and not msg.replayed and msg.text.startswith("!echo "):
            chat.send(msg.text.removeprefix("!echo "), room=msg.room)
