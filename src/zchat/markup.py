"""Chat markup: a message's text as styled spans and code blocks. Pure, no I/O.

The markup is the small part that Slack, Discord and Matrix share::

    **bold**   *italic* _italic_   ~~strike~~   `code`   > a quoted line
    ```python          a fenced code block; an unclosed fence runs to the end
    print("hi")
    ```
    https://example.org/a      links: http and https URLs, shown as written
    @alice                     mentions

The API::

    parse(text) -> tuple[Block, ...]       Block = Span | CodeBlock
    plain(text) -> tuple[Span, ...]        the same records for a text without markup
    mentions(text) -> tuple[str, ...]      the names @mentioned, in order, once each
    mentions_name(text, name) -> bool      is name mentioned, with or without "@"?

A ``Span`` is inline text and its styles; a line break is ``Span("\\n")`` (a blank line
is two of them in a row). A ``CodeBlock`` stands for its fence lines too: the line
breaks on either side of it are implied, since it always takes lines of its own.
``parse("hi **all**\\n> see `x`")`` is::

    (Span("hi "), Span("all", bold=True), Span("\\n"),
     Span("see ", quote=True), Span("x", code=True, quote=True))

Everything else is literal text, as typed: ``2*3``, ``snake_case``, ``__init__.py``,
``# heading``, ``- list``, ``1. list``, ``    indented``, ``[text](url)`` (a link is
never hidden behind other text), ``<b>html</b>``, ``&amp;``. A backslash escapes markup
(``\\*not italic\\*``). Line breaks and every space are kept.

How (docs/architecture.md, "Formatting", says why): markdown-it-py with its "zero"
preset and only these rules enabled: the fence block rule (backticks only, ``~~~`` is
literal), and inline escape, backticks, strikethrough, emphasis, linkify (linkify-it-py,
http and https only). The rest is ours, where CommonMark and chat differ:

* Text is taken line by line: markup never spans lines (as in Slack), a quote is one
  ``> `` line (CommonMark would pull the next line into the quote), and no space is
  trimmed (CommonMark trims each line of a paragraph, and merges blank lines).
* ``__x__`` is not bold (no chat but Matrix has it, and Discord underlines): its
  underscores stay, so ``__init__.py`` reads as typed.
* A link's text is the URL as written: markdown-it would decode punycode hosts, and
  ``http://xn--80ak6aa92e.com`` would show as a look-alike of another host.
* Mentions are ours: ``@`` and a name (ASCII letters, digits, ``_``, ``-``, ``.``; a
  trailing ``.`` or ``-`` ends the sentence, not the name), not after a letter or digit
  (``bob@example.com`` is no mention), and never inside code or a link.

Most lines carry no markup: a line without ``* _ ~ ` \\`` and ``://`` never reaches
markdown-it, and markdown-it is imported on first need only.

Safety: whatever the text holds, no span or code block carries a control character
(other than the ``"\\n"`` of a line-break span), ESC, a bidirectional override or
isolate, U+2028 or U+2029: each becomes U+FFFD (``zchat.values.clean_text``). A tab
is a space in inline text, and goes to the next multiple of 4 columns in a code block.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from dataclasses import dataclass
from functools import cache
from typing import TYPE_CHECKING, TypeAlias

from zchat.values import MAX_NAME_CHARS, clean_text

if TYPE_CHECKING:
    from markdown_it import MarkdownIt

CODE_TAB_SIZE = 4


@dataclass(frozen=True, slots=True)
class Span:
    """Inline text with its styles."""

    text: str
    bold: bool = False
    italic: bool = False
    strike: bool = False
    code: bool = False  # inline `code`
    quote: bool = False  # on a "> " line
    link: str = ""  # the URL, when the span is a link (its text is the URL too)
    mention: str = ""  # the name, when the span is a mention (its text is "@name")


@dataclass(frozen=True, slots=True)
class CodeBlock:
    """A fenced block: its lines joined by "\\n" (no trailing newline), and the first
    word of the fence's info string ("python"), "" if none."""

    code: str
    lang: str = ""


Block: TypeAlias = Span | CodeBlock

LINE_BREAK = Span("\n")

_FENCE = "```"
# what only markdown-it understands; "@" and "> " are ours
_INLINE_MARKUP = re.compile(r"[*_~`\\]|://")
# "@" and a name, not after a letter, digit or name character (an e-mail address)
_MENTION = re.compile(r"(?<![\w.\-@])@([A-Za-z0-9_.\-]+)(?!\w)")
_WORD = re.compile(r"[\w.\-]+")
_NAME_ENDS = ".-"  # a sentence's, after a name: "ask @bob."
_QUOTE = "> "


def parse(text: str) -> tuple[Block, ...]:
    """The spans and code blocks of a message's text (the module docstring has the rules)."""
    lines = [_without_controls(line) for line in text.split("\n")]
    fences = _fences("\n".join(lines)) if _FENCE in text else {}
    blocks: list[Block] = []
    after_text = False  # a line break between two lines of text; a code block has its own
    number = 0
    while number < len(lines):
        if number in fences:
            block, number = fences[number]
            blocks.append(block)
            after_text = False
            continue
        if after_text:
            blocks.append(LINE_BREAK)
        blocks.extend(_line_spans(lines[number].replace("\t", " ")))
        after_text = True
        number += 1
    return tuple(blocks)


def plain(text: str) -> tuple[Span, ...]:
    """``text`` read as no markup (a reason, a notice): plain spans and line breaks,
    as clean as ``parse``'s."""
    spans: list[Span] = []
    for number, line in enumerate(text.split("\n")):
        if number:
            spans.append(LINE_BREAK)
        if line:
            spans.append(Span(clean_text(line)))
    return tuple(spans)


def mentions(text: str) -> tuple[str, ...]:
    """The names @mentioned in ``text``, in order, each once (compared without case)."""
    seen: dict[str, str] = {}
    for block in parse(text):
        if isinstance(block, Span) and block.mention:
            seen.setdefault(block.mention.lower(), block.mention)
    return tuple(seen.values())


def mentions_name(text: str, name: str) -> bool:
    """Whether ``text`` names ``name``: ``@alice``, or ``alice`` as a whole word
    (``Alice,`` and ``alice.`` do, ``alice-bot`` and ``malice`` do not), in any case,
    outside code and links."""
    wanted = name.lower()
    prose = "".join(
        block.text if isinstance(block, Span) and not (block.code or block.link) else "\n"
        for block in parse(text)
    )
    return any(word.group().rstrip(_NAME_ENDS).lower() == wanted for word in _WORD.finditer(prose))


def _without_controls(line: str) -> str:
    """``clean_text`` for a line, but tabs are kept for now: a code block expands them."""
    if line.isprintable():
        return line
    return "\t".join(clean_text(part) for part in line.split("\t"))


def _fences(text: str) -> dict[int, tuple[CodeBlock, int]]:
    """The code blocks of ``text``, by first line, with the line after each."""
    found = {}
    for token in _block_parser().parse(text):
        if token.type == "fence" and token.map:
            start, end = token.map
            code = token.content.removesuffix("\n").expandtabs(CODE_TAB_SIZE)
            lang = token.info.split(maxsplit=1)[0] if token.info.strip() else ""
            found[start] = (CodeBlock(code, lang), end)
    return found


def _line_spans(line: str) -> list[Span]:
    quote = line.startswith(_QUOTE) or line == _QUOTE.strip()
    if quote:
        line = line[len(_QUOTE) :]
    if not line:
        return []
    if not _INLINE_MARKUP.search(line):
        return list(_with_mentions(line, Span("", quote=quote)))
    return _joined(_inline_spans(line, quote))


def _inline_spans(line: str, quote: bool) -> Iterator[Span]:
    """Walk markdown-it's inline tokens of one line, keeping a depth per style."""
    [inline] = _inline_parser().parseInline(line)
    depth = {"strong": 0, "em": 0, "s": 0}
    in_link = False
    for token in inline.children or ():
        style = Span("", depth["strong"] > 0, depth["em"] > 0, depth["s"] > 0, quote=quote)
        kind, _, edge = token.type.rpartition("_")
        if token.type == "text":
            if in_link:
                yield _restyled(style, token.content, link=token.content)
            else:
                yield from _with_mentions(token.content, style)
        elif token.type == "code_inline":
            yield _restyled(style, token.content, code=True)
        elif kind == "strong" and token.markup == "__":
            yield _restyled(style, "__")  # not bold in chat: the underscores stay
        elif kind in depth:
            depth[kind] += 1 if edge == "open" else -1
        elif kind == "link":
            in_link = edge == "open"


def _with_mentions(text: str, style: Span) -> Iterator[Span]:
    """``text`` in ``style``, its @mentions split out as spans of their own."""
    start = 0
    for match in _MENTION.finditer(text):
        name = match.group(1).rstrip(_NAME_ENDS)
        if not name or len(name) > MAX_NAME_CHARS:
            continue
        at = match.start()
        if at > start:
            yield _restyled(style, text[start:at])
        start = at + 1 + len(name)
        yield _restyled(style, text[at:start], mention=name)
    if start < len(text):
        yield _restyled(style, text[start:])


def _restyled(
    style: Span, text: str, *, code: bool = False, link: str = "", mention: str = ""
) -> Span:
    return Span(text, style.bold, style.italic, style.strike, code, style.quote, link, mention)


def _joined(spans: Iterator[Span]) -> list[Span]:
    """Adjacent plain pieces of one look as one span; empty pieces dropped."""
    out: list[Span] = []
    for span in spans:
        if not span.text:
            continue
        if out and _look(out[-1]) == _look(span) and not (span.link or span.mention):
            out[-1] = _restyled(out[-1], out[-1].text + span.text, code=span.code)
        else:
            out.append(span)
    return out


def _look(span: Span) -> tuple[bool, bool, bool, bool, bool, str, str]:
    return (span.bold, span.italic, span.strike, span.code, span.quote, span.link, span.mention)


@cache
def _block_parser() -> MarkdownIt:
    """Fences only: every other line is a paragraph's, taken line by line."""
    from markdown_it import MarkdownIt
    from markdown_it.rules_block import make_fence_rule

    parser = MarkdownIt("zero").enable("fence").disable("inline")
    backticks_only = make_fence_rule(markers=("`",))
    parser.block.ruler.at("fence", backticks_only, {"alt": ["paragraph"]})
    return parser


@cache
def _inline_parser() -> MarkdownIt:
    from linkify_it import LinkifyIt
    from markdown_it import MarkdownIt

    class ChatMarkdown(MarkdownIt):
        def normalizeLinkText(self, link: str) -> str:  # noqa: N802 (markdown-it's name)
            return link  # as written: no punycode host decoded into a look-alike

    parser = ChatMarkdown("zero", {"linkify": True})
    parser.enable(["escape", "backticks", "strikethrough", "emphasis", "linkify"])
    parser.core.ruler.disable("linkify")  # the inline rule's twin, which links bare domains
    web_only = LinkifyIt()
    for schema in ("ftp:", "mailto:", "//"):
        web_only.add(schema, None)
    parser.linkify = web_only
    return parser
