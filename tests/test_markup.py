"""zchat.markup: one table of (text, blocks) drives the parser's tests. Pure and fast."""

from __future__ import annotations

import re
import unicodedata
from datetime import UTC, datetime
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from zchat import Message
from zchat.markup import Block, CodeBlock, Span, mentions, mentions_name, parse

NL = Span("\n")
FFFD = "\ufffd"


def bold(text: str) -> Span:
    return Span(text, bold=True)


def italic(text: str) -> Span:
    return Span(text, italic=True)


def code(text: str) -> Span:
    return Span(text, code=True)


def quote(text: str) -> Span:
    return Span(text, quote=True)


def link(url: str) -> Span:
    return Span(url, link=url)


def mention(name: str) -> Span:
    return Span("@" + name, mention=name)


CASES: list[tuple[str, tuple[Block, ...]]] = [
    # each rule
    ("hello world", (Span("hello world"),)),
    ("**bold**", (bold("bold"),)),
    ("*italic*", (italic("italic"),)),
    ("_italic_", (italic("italic"),)),
    ("~~strike~~", (Span("strike", strike=True),)),
    ("a `x = 1` b", (Span("a "), code("x = 1"), Span(" b"))),
    ("``a ` b``", (code("a ` b"),)),
    ("use ```x``` here", (Span("use "), code("x"), Span(" here"))),
    ("> quoted", (quote("quoted"),)),
    (
        "> **a** `b`",
        (Span("a", bold=True, quote=True), quote(" "), Span("b", code=True, quote=True)),
    ),
    (">no space", (Span(">no space"),)),
    ("  > indented", (Span("  > indented"),)),
    ("```python\nprint(1)\n```", (CodeBlock("print(1)", "python"),)),
    ("```py title x\nx\n```", (CodeBlock("x", "py"),)),
    ("```\nx\n\n  y\n```", (CodeBlock("x\n\n  y"),)),
    ("```\n```", (CodeBlock(""),)),
    ("```\nunclosed\n\nto the end", (CodeBlock("unclosed\n\nto the end"),)),
    (
        "```\n**not bold** `x` @bob http://x.org\n```",
        (CodeBlock("**not bold** `x` @bob http://x.org"),),
    ),
    ("~~~\nx\n~~~", (Span("~~~"), NL, Span("x"), NL, Span("~~~"))),
    # nesting
    ("**bold _italic_**", (bold("bold "), Span("italic", bold=True, italic=True))),
    ("*a **b** c*", (italic("a "), Span("b", bold=True, italic=True), italic(" c"))),
    ("~~**x**~~", (Span("x", bold=True, strike=True),)),
    ("**a `b` c**", (bold("a "), Span("b", bold=True, code=True), bold(" c"))),
    ("`**not bold** _x_ ~~y~~`", (code("**not bold** _x_ ~~y~~"),)),
    # literal: not in the chat subset, or not markup at all
    ("2*3", (Span("2*3"),)),
    ("2 * 3 * 4", (Span("2 * 3 * 4"),)),
    ("snake_case_name", (Span("snake_case_name"),)),
    ("**", (Span("**"),)),
    ("*", (Span("*"),)),
    ("***", (Span("***"),)),
    ("* item", (Span("* item"),)),
    ("__init__.py", (Span("__init__.py"),)),
    ("__not bold__", (Span("__not bold__"),)),
    ("**bold", (Span("**bold"),)),
    ("# not a heading", (Span("# not a heading"),)),
    ("- not a list", (Span("- not a list"),)),
    ("1. not a list", (Span("1. not a list"),)),
    ("    indented", (Span("    indented"),)),
    ("a   b  ", (Span("a   b  "),)),
    ("<b>html</b>", (Span("<b>html</b>"),)),
    ("&amp; &lt;", (Span("&amp; &lt;"),)),
    ("a\n---", (Span("a"), NL, Span("---"))),
    ("| a | b |\n|---|---|", (Span("| a | b |"), NL, Span("|---|---|"))),
    ("[text](http://x)", (Span("[text]("), link("http://x"), Span(")"))),
    ("![img](http://x/i.png)", (Span("![img]("), link("http://x/i.png"), Span(")"))),
    ("<http://x.org>", (Span("<"), link("http://x.org"), Span(">"))),
    (r"\*not italic\*", (Span("*not italic*"),)),
    # links
    ("see https://example.org/a?b=1#c", (Span("see "), link("https://example.org/a?b=1#c"))),
    ("http://x.org/a.", (link("http://x.org/a"), Span("."))),
    ("(see http://x.org/a)", (Span("(see "), link("http://x.org/a"), Span(")"))),
    ("http://x.org/wiki/A_(b)", (link("http://x.org/wiki/A_(b)"),)),
    ("**http://x.org**", (Span("http://x.org", bold=True, link="http://x.org"),)),
    ("http://xn--e1afmkfd.xn--p1ai/", (link("http://xn--e1afmkfd.xn--p1ai/"),)),
    ("example.org", (Span("example.org"),)),
    ("ftp://x.org mailto:a@x.org", (Span("ftp://x.org mailto:a@x.org"),)),
    ("`http://x.org`", (code("http://x.org"),)),
    # mentions
    ("@bob", (mention("bob"),)),
    ("ask @bob.", (Span("ask "), mention("bob"), Span("."))),
    ("@bob- @b.o_b-9", (mention("bob"), Span("- "), mention("b.o_b-9"))),
    ("(@bob's)", (Span("("), mention("bob"), Span("'s)"))),
    ("email@example.com", (Span("email@example.com"),)),
    ("`@bob`", (code("@bob"),)),
    ("**@bob**", (Span("@bob", bold=True, mention="bob"),)),
    ("http://x.org/@bob", (link("http://x.org/@bob"),)),
    ("@ alone", (Span("@ alone"),)),
    ("@" + "a" * 33, (Span("@" + "a" * 33),)),
    # lines
    ("a\nb", (Span("a"), NL, Span("b"))),
    ("a\n\n\nb", (Span("a"), NL, NL, NL, Span("b"))),
    ("\nx\n", (NL, Span("x"), NL)),
    ("**a\nb**", (Span("**a"), NL, Span("b**"))),
    ("> q\nnormal", (quote("q"), NL, Span("normal"))),
    ("> a\n>\n> b", (quote("a"), NL, NL, quote("b"))),
    ("text\n```\ncode\n```\nafter", (Span("text"), CodeBlock("code"), Span("after"))),
    ("a\n\n```\nc\n```\n\nb", (Span("a"), NL, CodeBlock("c"), NL, Span("b"))),
    ("```\none\n```\n```\ntwo\n```", (CodeBlock("one"), CodeBlock("two"))),
    # tabs
    ("a\tb", (Span("a b"),)),
    ("```\n\tx\n  \ty\n```", (CodeBlock("    x\n    y"),)),
]


@pytest.mark.parametrize(("text", "blocks"), CASES, ids=[repr(text) for text, _ in CASES])
def test_parse(text: str, blocks: tuple[Block, ...]) -> None:
    assert parse(text) == blocks


# Each kind of span with an unsafe character inside: "{c}" stands for it.
UNSAFE = ["\x1b", "\x07", "\r", "\x00", "\x85", "\u202e", "\u2066", "\u2028", "\u2029"]
UNSAFE_CASES: list[tuple[str, tuple[Block, ...]]] = [
    ("a{c}b", (Span(f"a{FFFD}b"),)),
    ("**a{c}b**", (bold(f"a{FFFD}b"),)),
    ("*a{c}b*", (italic(f"a{FFFD}b"),)),
    ("~~a{c}b~~", (Span(f"a{FFFD}b", strike=True),)),
    ("`a{c}b`", (code(f"a{FFFD}b"),)),
    ("```\na{c}b\n```", (CodeBlock(f"a{FFFD}b"),)),
    ("```py{c}\nx\n```", (CodeBlock("x", f"py{FFFD}"),)),
    ("> a{c}b", (quote(f"a{FFFD}b"),)),
    ("http://x.org/a{c}b", (link(f"http://x.org/a{FFFD}b"),)),
    ("@bob{c}", (mention("bob"), Span(FFFD))),
]


@pytest.mark.parametrize("char", UNSAFE, ids=[f"U+{ord(c):04X}" for c in UNSAFE])
@pytest.mark.parametrize(
    ("template", "blocks"), UNSAFE_CASES, ids=[text for text, _ in UNSAFE_CASES]
)
def test_unsafe_characters_come_out_as_replacement_characters(
    template: str, blocks: tuple[Block, ...], char: str
) -> None:
    assert parse(template.replace("{c}", char)) == blocks


BIDI_AND_SEPARATORS = "\u202a\u202b\u202c\u202d\u202e\u2066\u2067\u2068\u2069\u2028\u2029"
PIECES = [*"*_~`>@\\ \n\t#-.()[]a", "**", "~~", "```", "```py", "> ", "@bob", "http://x.org/"]
HOSTILE = ["\x1b", "\x07", "\r", "\x00", "\x85", "\u202e", "\u2028", "\ud800"]
MARKUP_TEXTS = st.lists(st.sampled_from(PIECES + HOSTILE), max_size=40).map("".join)


def unsafe(char: str) -> bool:
    return unicodedata.category(char) in ("Cc", "Cs") or char in BIDI_AND_SEPARATORS


@settings(max_examples=300, deadline=None, database=None)
@given(st.one_of(MARKUP_TEXTS, st.text(max_size=80)))
def test_any_text_parses_to_clean_blocks(text: str) -> None:
    for block in parse(text):
        # a code block's lines are apart by LF; a Span("\n") is a line break
        shown = block.code.split("\n") if isinstance(block, CodeBlock) else [block.text]
        for line in shown:
            if line != "\n":
                assert not any(map(unsafe, line)), block
        if isinstance(block, Span):
            assert block.text, "no empty spans"


@pytest.mark.parametrize(
    ("text", "names"),
    [
        ("hi @bob and @alice, @Bob again", ("bob", "alice")),
        ("@bob. @carl-", ("bob", "carl")),
        ("`@bob` email@example.com http://x.org/@dan", ()),
        ("```\n@bob\n```\n> @carl", ("carl",)),
        ("no one", ()),
    ],
)
def test_mentions(text: str, names: tuple[str, ...]) -> None:
    assert mentions(text) == names


@pytest.mark.parametrize(
    ("text", "name", "named"),
    [
        ("hi @alice", "alice", True),
        ("hi Alice, how are you", "alice", True),
        ("ALICE.", "alice", True),
        ("ask alice-", "alice", True),
        ("malice and alices", "alice", False),
        ("alice-bot and alice.b and alice_", "alice", False),
        ("`alice` and\n```\nalice\n```", "alice", False),
        ("see http://alice.example.org", "alice", False),
        ("**ali**ce", "alice", True),
        ("j.doe: hi", "j.doe", True),
    ],
)
def test_mentions_name(text: str, name: str, named: bool) -> None:
    assert mentions_name(text, name) is named


TS = datetime(2025, 1, 1, tzinfo=UTC)


@pytest.mark.parametrize("kind", ["message", "action", "private"])
def test_a_messages_text_is_markup(kind: str) -> None:
    msg = Message(kind, None, "alice", "**hi** @bob", TS)  # type: ignore[arg-type]
    assert msg.spans() == (bold("hi"), Span(" "), mention("bob"))
    assert msg.mentions == ("bob",)


@pytest.mark.parametrize("kind", ["topic", "leave", "system"])
def test_other_texts_are_plain_spans(kind: str) -> None:
    msg = Message(kind, "general", "alice", "**not** @bob\x1b", TS)  # type: ignore[arg-type]
    assert msg.spans() == (Span(f"**not** @bob{FFFD}"),)
    assert msg.mentions == ()
    assert Message(kind, "general", "alice", "", TS).spans() == ()  # type: ignore[arg-type]
    two_lines = Message(kind, "general", "alice", "a_b_\n\n`c`", TS)  # type: ignore[arg-type]
    assert two_lines.spans() == (Span("a_b_"), NL, NL, Span("`c`"))


API_DOC = Path(__file__).resolve().parent.parent / "docs" / "api.md"


class SentLines:
    def __init__(self) -> None:
        self.lines: list[str] = []

    def send(self, text: str) -> None:
        self.lines.append(text)


def test_the_api_docs_formatting_example_runs_as_written(
    capsys: pytest.CaptureFixture[str],
) -> None:
    doc = API_DOC.read_text(encoding="utf-8")
    section = doc[doc.index("### Formatting") :]
    match = re.search(r"```python\n(.*?)```", section, re.S)
    assert match, "no python example under ### Formatting"
    text = "hi **echobot**, run:\n```sh\nmake test\n```"
    chat = SentLines()
    msg = Message("message", "general", "alice", text, TS)
    exec(match.group(1), {"msg": msg, "chat": chat})
    assert capsys.readouterr().out == "hi ECHOBOT, run:\n--- sh ---\nmake test\n"
    assert chat.lines == ["@alice yes?"]
