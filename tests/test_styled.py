"""zchat.client.styled: blocks as prompt_toolkit fragments. Pure, but for one check that
a name's colour is the same in another process."""

from __future__ import annotations

import subprocess
import sys

import pytest
from prompt_toolkit.styles import Attrs, merge_styles
from prompt_toolkit.styles.defaults import default_pygments_style, default_ui_style

from support import child_env
from zchat.client.styled import GUTTER, NEWLINE, NICK_COLOURS, STYLE, nick_style, styled
from zchat.markup import Block, CodeBlock, Span, parse

APP_STYLE = merge_styles([default_ui_style(), default_pygments_style(), STYLE])
ALICE = nick_style("alice")


def attrs(style: str) -> Attrs:
    return APP_STYLE.get_attrs_for_style_str(style)


@pytest.mark.parametrize(
    ("text", "fragments"),
    [
        ("**hi** there", [("bold", "hi"), ("", " there")]),
        ("*a* ~~b~~", [("italic", "a"), ("", " "), ("strike", "b")]),
        ("run `make`", [("", "run "), ("class:code", "make")]),
        ("see http://x.org", [("", "see "), ("class:link underline", "http://x.org")]),
        ("hey @Alice", [("", "hey "), (f"class:mention bold {ALICE} reverse", "@Alice")]),
        ("**@alice**", [(f"class:mention bold {ALICE} reverse bold", "@alice")]),
        (
            "> a\n> b\nc",
            [
                GUTTER,
                ("class:quote", "a"),
                NEWLINE,
                GUTTER,
                ("class:quote", "b"),
                NEWLINE,
                ("", "c"),
            ],
        ),
        (
            "```\nx\n\ny\n```",
            [NEWLINE, GUTTER, ("", "x"), NEWLINE, GUTTER, NEWLINE, GUTTER, ("", "y")],
        ),
        ("a\n```\nx\n```\nb", [("", "a"), NEWLINE, GUTTER, ("", "x"), NEWLINE, ("", "b")]),
        (
            "a\n\n```\nx\n```\n\nb",
            [("", "a"), NEWLINE, NEWLINE, GUTTER, ("", "x"), NEWLINE, NEWLINE, ("", "b")],
        ),
    ],
)
def test_styled(text: str, fragments: list[tuple[str, str]]) -> None:
    assert styled(parse(text), me="alice") == fragments


def test_a_mention_of_someone_else_is_coloured_not_reversed() -> None:
    [(style, text)] = styled(parse("@bob"), me="alice")
    assert text == "@bob"
    assert attrs(style) == attrs(f"bold {nick_style('bob')}")
    assert attrs(style).reverse is not True
    assert attrs(styled(parse("@bob"), me="BOB")[0][0]).reverse is True


def test_a_python_code_block_is_highlighted_line_by_line() -> None:
    fragments = styled(parse("```python\ndef f(x):\n    return 'a'  # c\n```"))
    assert fragments[:3] == [NEWLINE, GUTTER, ("class:pygments.keyword", "def")]
    assert ("class:pygments.keyword", "return") in fragments
    assert "".join(text for _, text in fragments) == "\n│ def f(x):\n│     return 'a'  # c"
    styles = {style for style, _ in fragments}
    assert any(style.startswith("class:pygments.literal.string") for style in styles)
    assert any(style.startswith("class:pygments.comment") for style in styles)
    keyword = attrs("class:pygments.keyword")
    assert keyword.bold and keyword.color == "af5fd7"  # STYLE's, over prompt_toolkit's


@pytest.mark.parametrize("lang", ["py", "Python", "python3", "js", "sh", "rust", "yml"])
def test_common_languages_and_their_aliases_are_highlighted(lang: str) -> None:
    styles = {style for style, _ in styled([CodeBlock("if x: y = 'z'", lang)])}
    assert any(style.startswith("class:pygments") for style in styles), lang


@pytest.mark.parametrize("lang", ["no-such-language", "", "cobol", "brainfuck"])
def test_a_code_block_in_an_unknown_language_is_plain(lang: str) -> None:
    fragments = styled([CodeBlock("def f():\n    pass", lang)])
    assert fragments == [NEWLINE, GUTTER, ("", "def f():"), NEWLINE, GUTTER, ("", "    pass")]


HOSTILE = "\x1b[2J\x07\r\x00\u202e\u2028\x9b"
HOSTILE_BLOCKS: list[tuple[Block, ...]] = [
    parse(f"**{HOSTILE}** `{HOSTILE}` > {HOSTILE}\n> {HOSTILE} @bob{HOSTILE} http://x/{HOSTILE}"),
    parse(f"```python\ndef {HOSTILE}():\n    '{HOSTILE}'\n```\n```\n{HOSTILE}\n```"),
    # built by hand, not by parse: styled cleans them too
    (Span(HOSTILE), Span("a\nb"), Span(HOSTILE, mention=HOSTILE), Span("\t", code=True)),
    (CodeBlock(f"x = '{HOSTILE}'\n\t{HOSTILE}", "python"), CodeBlock(HOSTILE, "nope")),
]


@pytest.mark.parametrize("blocks", HOSTILE_BLOCKS)
def test_no_fragment_carries_a_control_character(blocks: tuple[Block, ...]) -> None:
    for style, text in styled(blocks, me="bob"):
        assert text == "\n" or text.isprintable(), (style, text)
        assert "\x1b" not in style


def test_every_style_is_one_prompt_toolkit_reads() -> None:
    text = "**a** *b* ~~c~~ `d` http://x.org @alice @bob\n> q\n```python\nif x: pass\n```"
    for style, _ in styled(parse(text), me="alice"):
        attrs(style)  # raises on an unknown colour


NICK_PROGRAM = "from zchat.client.styled import nick_style; print(nick_style('alice'))"


def test_a_names_colour_is_the_same_in_every_process() -> None:
    assert ALICE == "#af875f"  # crc32, not hash(): the same in every run
    for seed in ("1", "2"):
        shown = subprocess.run(
            [sys.executable, "-c", NICK_PROGRAM],
            capture_output=True,
            text=True,
            env=child_env(PYTHONHASHSEED=seed),
            timeout=60,
            check=True,
        )
        assert shown.stdout.strip() == ALICE


def test_names_spread_over_the_colours() -> None:
    names = [f"user{n}" for n in range(60)] + ["alice", "bob", "carol", "dave", "eve"]
    colours = {nick_style(name) for name in names}
    assert len(colours) >= 10
    assert colours <= set(NICK_COLOURS)
    assert nick_style("Alice") == nick_style("ALICE") == ALICE
