"""A message's blocks (``zchat.markup``) as prompt_toolkit formatted text. Pure.

``styled(blocks, me="alice")`` is a list of ``(style, text)`` fragments, ready for
``prompt_toolkit.formatted_text.FormattedText``: bold, italic and strike as such; inline
code in ``class:code``; a link underlined; a mention bold in its name's colour
(``nick_style``), reversed when it names ``me``; a quoted line, and each line of a code
block, after a dim gutter ``│ ``. A code block takes lines of its own: it starts on the
line after the one the fragments begin on (the sender's name's). It is highlighted by
Pygments when its language is known (``class:pygments.keyword`` and the like, the
classes of prompt_toolkit's own ``PygmentsLexer``), left plain otherwise.

``STYLE`` colours the classes; merge it into the application's style after
prompt_toolkit's defaults. Its colours are mid-tones, readable on dark and on light
terminals alike.

No fragment's text holds a control character other than "\n" (prompt_toolkit prints
fragment text as it is): each span and code line goes through ``clean_text`` again,
whoever built the blocks.
"""

from __future__ import annotations

import zlib
from collections.abc import Iterable
from functools import lru_cache
from typing import TYPE_CHECKING

from prompt_toolkit.styles import Style
from prompt_toolkit.styles.pygments import pygments_token_to_classname

from zchat.markup import Block, CodeBlock, Span
from zchat.values import clean_text

if TYPE_CHECKING:
    from pygments.lexer import Lexer
    from pygments.token import _TokenType

Fragment = tuple[str, str]

GUTTER = ("class:gutter", "│ ")
NEWLINE = ("", "\n")
# mid-tones (xterm-256 colours), none too light for a white background nor too dark
# for a black one
NICK_COLOURS = (
    "#d75f5f",
    "#d7875f",
    "#af8700",
    "#87af00",
    "#5faf5f",
    "#00af87",
    "#5fafaf",
    "#5f87d7",
    "#8787d7",
    "#af5fd7",
    "#d75faf",
    "#af875f",
)
STYLE = Style.from_dict(
    {
        "gutter": "#808080",
        "code": "bg:#3a3a3a #e4e4e4",
        "link": "#5f87d7",
        "pygments.comment": "italic #808080",
        "pygments.keyword": "bold #af5fd7",
        "pygments.keyword.constant": "#d7875f",
        "pygments.operator.word": "bold #af5fd7",
        "pygments.name.builtin": "#5fafaf",
        "pygments.name.function": "#5f87d7",
        "pygments.name.class": "bold #5f87d7",
        "pygments.name.decorator": "#d75faf",
        "pygments.name.exception": "#d75f5f",
        "pygments.literal.string": "#5faf5f",
        "pygments.literal.number": "#d7875f",
    }
)
LEXER_CACHE = 64  # languages whose lexer is kept
# The languages highlighted: the sender names the lexer, so only these well-worn ones
# run on what others send (a little-used lexer may be slow on crafted text); any other
# name shows the block plain. Their aliases (py, js, sh, ...) are Pygments'.
HIGHLIGHTED = frozenset({
        "bash", "c", "cpp", "csharp", "css", "diff", "go", "haskell", "html", "ini", "java",
        "javascript", "json", "kotlin", "lua", "make", "markdown", "matlab", "perl", "php",
        "python", "r", "ruby", "rust", "scala", "sql", "swift", "toml", "typescript", "xml",
        "yaml",
})  # fmt: skip


def nick_style(name: str) -> str:
    """A colour for ``name``, the same in every run and for any case of the name."""
    digest = zlib.crc32(name.lower().encode("utf-8", "surrogatepass"))
    return NICK_COLOURS[digest % len(NICK_COLOURS)]


def styled(blocks: Iterable[Block], *, me: str | None = None) -> list[Fragment]:
    """prompt_toolkit fragments for ``blocks``; mentions of ``me`` stand out."""
    me_lower = me.lower() if me else ""
    out: list[Fragment] = []
    line_start = True
    after_code = False  # a code block takes lines of its own: what follows starts anew
    for block in blocks:
        if isinstance(block, CodeBlock):
            out.append(NEWLINE)  # below the sender's name, or the line before
            out.extend(_code_fragments(block))
            line_start, after_code = False, True
            continue
        if after_code:
            out.append(NEWLINE)
            line_start, after_code = True, False
        if block.text == "\n":
            out.append(NEWLINE)
            line_start = True
        elif block.text:
            if line_start and block.quote:
                out.append(GUTTER)
            out.append((_span_style(block, me_lower), clean_text(block.text)))
            line_start = False
    return out


def _span_style(span: Span, me_lower: str) -> str:
    """Classes first, then the attributes: in prompt_toolkit the later part wins."""
    parts = []
    if span.quote:
        parts.append("class:quote")
    if span.code:
        parts.append("class:code")
    if span.link:
        parts.append("class:link underline")
    if span.mention:
        parts.append(f"class:mention bold {nick_style(span.mention)}")
        if span.mention.lower() == me_lower:
            parts.append("reverse")
    if span.bold:
        parts.append("bold")
    if span.italic:
        parts.append("italic")
    if span.strike:
        parts.append("strike")
    return " ".join(parts)


def _code_fragments(block: CodeBlock) -> list[Fragment]:
    """Each line of the block after a gutter, highlighted if its language is known."""
    code = "\n".join(clean_text(line) for line in block.code.split("\n"))
    lexer = _lexer(block.lang) if block.lang else None
    out = [GUTTER]
    if lexer is None:
        for number, line in enumerate(code.split("\n")):
            if number:
                out.extend((NEWLINE, GUTTER))
            if line:
                out.append(("", line))
        return out
    # lexers expect a final newline; the text is clean, so no preprocessing is needed
    for _, token_type, text in lexer.get_tokens_unprocessed(code + "\n"):
        style = _CLASSES.get(token_type) or _token_class(token_type)
        if "\n" not in text:
            out.append((style, text))
            continue
        first, *rest = text.split("\n")
        if first:
            out.append((style, first))
        for piece in rest:
            out.extend((NEWLINE, GUTTER))
            if piece:
                out.append((style, piece))
    if out[-2:] == [NEWLINE, GUTTER]:  # the final newline's
        del out[-2:]
    return out


@lru_cache(maxsize=LEXER_CACHE)
def _lexer(lang: str) -> Lexer | None:
    """Pygments' lexer for a language's name or alias; never a guess, which is slow,
    and wrong on a few lines."""
    from pygments.lexers import get_lexer_by_name
    from pygments.util import ClassNotFound

    try:
        lexer = get_lexer_by_name(lang, stripnl=False, ensurenl=False)
    except ClassNotFound:
        return None
    return lexer if HIGHLIGHTED & {a.lower() for a in (lexer.name, *lexer.aliases)} else None


_CLASSES: dict[_TokenType, str] = {}  # Token.Keyword -> "class:pygments.keyword"


def _token_class(token_type: _TokenType) -> str:
    style = _CLASSES[token_type] = "class:" + pygments_token_to_classname(token_type)
    return style
