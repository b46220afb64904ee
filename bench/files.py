"""How fast a file moves through zchat, against the limits of moving it over loopback.

    python bench/files.py [--size-mib 1024] [--reps 3] [--json out.json]

A file of random bytes is made in a temporary folder on disk (it says where, and on
what filesystem). Then, each repetition, in this order and each timed on its own,
after writing (and deleting) a new file of that size from memory, no network: the
page cache's pace, which every receiver pays, and memory freed a moment ago for each
receiver to write into (zchat.filebench.run.write_new says why):

* a plain TCP copy (a Python socket copy, 256 KiB blocks; the receiver writes a file);
* a bare pyzmq DEALER/ROUTER credit-based transfer (the guide's fileio3: 256 KiB
  blocks, 8 in flight; the ROUTER preads, the DEALER writes a file);
* zchat: Alice ``send_file``s it to a broker of its own (history in a WAL file, the
  files beside it, its limits raised to fit), then Bob ``get_file``s it, each client
  in its own process. Meanwhile Carol says a line every 50 ms and Dave hears it: its
  latency quietly first, then during each transfer; and the broker's and the
  client's RSS, read from /proc.

It prints the tables (Markdown) and the targets met or not; ``--json`` writes every
figure. The same run is ``zchat bench --files``. Loopback only; every loop is
bounded in count and time.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from zchat.filebench.config import FileBenchConfig
from zchat.filebench.run import run

DEFAULT_MIB = 1024


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--size-mib", type=int, default=DEFAULT_MIB, help="the file's size")
    parser.add_argument("--reps", type=int, default=3, help="repetitions of every transfer")
    parser.add_argument("--json", type=Path, help="write every figure here")
    parser.add_argument("--folder", type=Path, help="where the files go (default: temporary)")
    parser.add_argument(
        "--quiet-seconds",
        type=float,
        default=FileBenchConfig.quiet_seconds,
        help="seconds of chat before the transfers, for the quiet latency",
    )
    args = parser.parse_args()
    config = FileBenchConfig(
        size_mib=args.size_mib, reps=args.reps, folder=args.folder,
        quiet_seconds=args.quiet_seconds,
    )  # fmt: skip
    result = run(config, lambda line: print(line, file=sys.stderr, flush=True))
    print("\n".join(result.lines()))
    if args.json:
        args.json.write_text(json.dumps(result.as_dict(), indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
