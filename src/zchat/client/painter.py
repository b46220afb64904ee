"""How a Message looks in a terminal that shows colours: the plain line's shape
(render.py), with the time dim, each name in its own colour (the same on every client
and every run), your own name reversed, the text formatted from its markup (bold,
italic, code, code blocks highlighted, mentions; zchat.markup, styled.py), and a line
that names you marked.

The escape codes come from prompt_toolkit's renderer, given fragments whose text is
sanitised (styled.py): nothing a message holds can reach the terminal as a code.
Only ``zchat join`` in a terminal imports this (it imports prompt_toolkit).
"""

from __future__ import annotations

import io
import os

from prompt_toolkit.data_structures import Size
from prompt_toolkit.formatted_text import FormattedText
from prompt_toolkit.output.vt100 import Vt100_Output
from prompt_toolkit.renderer import print_formatted_text
from prompt_toolkit.styles import Style, merge_styles

from zchat.client.message import Message
from zchat.client.render import TIME_FORMATS, shared_parts
from zchat.client.styled import STYLE, Fragment, nick_style, styled
from zchat.markup import parse
from zchat.protocol import SharedFile, clean_text

OWN_STYLE = Style.from_dict(
    {
        "stamp": "#808080",
        "room": "#808080",
        "notice": "#808080",
        "system": "#808080 italic",
        "private": "#d75faf",
        "named": "bold reverse",  # the stamp of a line that names you
        "error": "#d75f5f",
        "file": "bold underline",  # a shared file's name
    }
)


class Painter:
    """Messages as lines of text with escape codes, for a terminal that shows colours."""

    def __init__(self, me: str, time_format: str = "time", term: str | None = None) -> None:
        self.me = me
        self.pattern = TIME_FORMATS[time_format]
        self.style = merge_styles([STYLE, OWN_STYLE])
        self._buffer = io.StringIO()
        term = term if term is not None else os.environ.get("TERM")
        self._output = Vt100_Output(
            self._buffer, lambda: Size(rows=24, columns=80), term=term, enable_cpr=False
        )
        self.depth = self._output.get_default_color_depth()

    def line(self, msg: Message, current_room: str | None = None, named: bool = False) -> str:
        """``msg`` as ``render`` shows it, coloured and formatted; ``named``: it names you."""
        return self.paint(self.fragments(msg, current_room, named))

    def paint(self, fragments: list[Fragment]) -> str:
        print_formatted_text(
            self._output, FormattedText(fragments), self.style, color_depth=self.depth
        )
        self._output.flush()
        text = self._buffer.getvalue()
        self._buffer.seek(0)
        self._buffer.truncate()
        return text.rstrip("\r\n")

    def fragments(self, msg: Message, current_room: str | None, named: bool) -> list[Fragment]:
        out: list[Fragment] = []
        if self.pattern:
            stamp = f"[{msg.ts.astimezone().strftime(self.pattern)}]"
            out += [("class:named" if named else "class:stamp", stamp), ("", " ")]
        if msg.room and current_room and msg.room != current_room:
            out.append(("class:room", f"#{msg.room} "))
        sender = msg.sender or ""
        text = clean_text(msg.text) if msg.kind not in ("message", "action", "private") else ""
        match msg.kind:
            case "message" | "private" if msg.file is not None:
                if msg.kind == "private":
                    out += [("class:private", "[private] "), self._nick(sender), ("", " → ")]
                    out.append(self._nick(msg.to or ""))
                else:
                    out.append(self._nick(sender))
                out += self._shared(msg.file)
            case "message":
                out += [self._nick(sender), ("", ": "), *self._body(msg.text)]
            case "action":
                out += [("", "* "), self._nick(sender), ("", " "), *self._body(msg.text)]
            case "private":
                out += [("class:private", "[private] "), self._nick(sender), ("", " → ")]
                out += [self._nick(msg.to or ""), ("", ": "), *self._body(msg.text)]
            case "join":
                out += [self._nick(sender), ("class:notice", " joined")]
            case "leave":
                out += [self._nick(sender), ("class:notice", " left" + (f" ({text})" * bool(text)))]
            case "nick":
                out += [self._nick(sender), ("class:notice", " is now known as "), self._nick(text)]
            case "topic":
                said = f" set the topic: {text}" if text else " cleared the topic"
                out += [self._nick(sender), ("class:notice", said)]
            case _:
                out.append(("class:system", f"*** {text}"))
        return out

    def _shared(self, file: SharedFile) -> list[Fragment]:
        """`` shared NAME (SIZE): /get 7``: the name never read as markup."""
        name, about, fetch = shared_parts(file)
        style = "class:notice" if file.expired else "class:code"
        return [("", " shared "), ("class:file", name), ("", f"{about}: "), (style, fetch)]

    def _nick(self, name: str) -> Fragment:
        own = " reverse" if name.lower() == self.me.lower() else ""
        return (f"bold {nick_style(name)}{own}", name)

    def _body(self, text: str) -> list[Fragment]:
        return styled(parse(text), me=self.me)
