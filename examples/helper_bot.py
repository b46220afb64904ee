"""Helper bot: answers when it is mentioned (@helperbot), with a code block showing how
to read the markup of a line in Python.

python examples/helper_bot.py          # broker on ZCHAT_HOST / ZCHAT_PORT, or 127.0.0.1:5005
"""

import os

from zchat import Client
from zchat.markup import CodeBlock, mentions_name

host = os.environ.get("ZCHAT_HOST", "127.0.0.1")
port = int(os.environ.get("ZCHAT_PORT", "5005"))
NAME = "helperbot"

with Client(name=NAME, host=host, port=port, rooms=["general"]) as chat:
    print(f"{NAME} joined {host}:{port}", flush=True)
    for msg in chat:
        # mentioned: @helperbot, or its name as a word, in any case (not inside code)
        if msg.kind != "message" or msg.replayed or not mentions_name(msg.text, NAME):
            continue
        # what the line held: its code blocks' languages, and who else it named
        blocks = [span for span in msg.spans() if isinstance(span, CodeBlock)]
        others = [name for name in msg.mentions if name.lower() != NAME]
        languages = ", ".join(block.lang or "plain" for block in blocks) or "none"
        reply = (
            f"@{msg.sender} your line had {len(blocks)} code block(s) ({languages})"
            + (f" and named {', '.join(others)}" if others else "")
            + ". To read a line's markup:\n"
            "```python\n"
            "for span in msg.spans():\n"
            "    print(span)\n"
            "```"
        )
        chat.send(reply, room=msg.room)
