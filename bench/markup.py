"""Formatting: µs to parse a message's markup and style it for the terminal.

    python bench/markup.py [--count N]

Each text is parsed (``zchat.markup.parse``) and styled (``zchat.client.styled.styled``)
N times, after a warm-up that imports markdown-it and loads the lexer; each figure is
the median of ROUNDS rounds. The texts: a plain chat line (most lines: they never reach
markdown-it), a line with bold, code, a mention and a link, and a 40-line Python code
block (for which Pygments' own share is shown too).
"""

from __future__ import annotations

import argparse
import statistics
import time
from collections.abc import Callable

from pygments.lexers import get_lexer_by_name

from zchat.client.styled import styled
from zchat.markup import parse

ROUNDS = 5
PLAIN = "ok so I pushed the fix to the branch, can you have a look now?"
MARKED = "**ship it** once `make test` passes, @bob: http://x.org/ci"
CODE_LINES = [
    line
    for n in range(10)
    for line in (
        f"def scale_{n}(values, factor={n}):",
        '    """Each value times the factor."""',
        "    return [value * factor for value in values]  # a copy",
        "",
    )
]
CODE = "```python\n" + "\n".join(CODE_LINES) + "\n```"
TEXTS = {  # name -> (text, target in µs, or 0 for none)
    f"plain line, {len(PLAIN)} chars": (PLAIN, 50),
    f"bold, code, mention and link, {len(MARKED)} chars": (MARKED, 0),
    f"python code block, {len(CODE_LINES)} lines, {len(CODE)} chars": (CODE, 2000),
}


def per_call(work: Callable[[], object], count: int) -> float:
    """µs per call of ``work``: the median of ROUNDS rounds of ``count`` calls."""
    work()
    rounds = []
    for _ in range(ROUNDS):
        start = time.perf_counter()
        for _ in range(count):
            work()
        rounds.append(time.perf_counter() - start)
    return 1e6 * statistics.median(rounds) / count


def lexing_alone(count: int) -> float:
    lexer = get_lexer_by_name("python")
    return per_call(lambda: list(lexer.get_tokens_unprocessed(CODE)), count)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--count", type=int, default=2000, help="calls per round")
    args = parser.parse_args()
    for name, (text, target) in TEXTS.items():
        us = per_call(lambda text=text: styled(parse(text), me="bob"), args.count)
        notes = [f"target: under {target} µs"] if target else []
        if text is CODE:
            notes.append(f"Pygments' lexing alone: {lexing_alone(args.count):.0f} µs")
        suffix = f" ({'; '.join(notes)})" if notes else ""
        print(f"{us:9.2f} µs per message  {name}{suffix}")


if __name__ == "__main__":
    main()
