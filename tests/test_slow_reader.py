"""A reader that stops reading costs the broker a bounded queue, never its memory; once
it reads again, it fills what it lost from history, in order."""

from __future__ import annotations

import itertools
import re
import signal
from pathlib import Path

import zmq

from support import Proc, start_broker, zchat_command
from zchat import Client

LINES = 12_000
TEXT_BYTES = 3_000  # 12,000 lines of 3 kB: 36 MB pass the stalled reader by
QUEUE = 100  # --send-queue: messages held for each reader
LINE = re.compile(r"^Fast: \d{5} x")


def rss_kib(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    raise AssertionError("no VmRSS")


def test_a_stalled_reader_costs_a_bounded_queue_then_catches_up(
    procs: list[Proc], ctx: zmq.Context[zmq.Socket[bytes]], tmp_path: Path
) -> None:
    db = str(tmp_path / "history.db")  # on disk: an in-memory history would hold it all
    # the reader is stopped for longer than the default 5 s a silent peer is kept
    args = ("--send-queue", str(QUEUE), "--rate", "0", "--peer-timeout", "120")
    args += ("--retention", str(2 * LINES))
    broker, port = start_broker(*args, db=db)
    procs.append(broker)
    reader = Proc(zchat_command("join", "--name", "Slow", "--port", str(port),
                                "--history", "0", "--time-format", "none"))  # fmt: skip
    procs.append(reader)
    reader.expect(r"in #general: ")
    with Client("Fast", port=port, context=ctx) as fast:
        fast.send("warm-up")
        reader.expect(r"^Fast: warm-up$")
        before = rss_kib(broker.popen.pid)
        reader.signal(signal.SIGSTOP)  # alive, connected, and reading nothing
        try:
            for i in range(LINES):
                fast.send(f"{i:05d} " + "x" * TEXT_BYTES)
            assert fast.flush(timeout=60), "the broker did not confirm every line"
            grown = rss_kib(broker.popen.pid) - before
        finally:
            reader.signal(signal.SIGCONT)
        # unbounded, the broker would hold all the reader did not take (36 MB); with a
        # queue of 10,000 it holds about 30 MB, with 100 about 6 MB (SQLite's cache,
        # the in-socket's queue)
        assert grown < 16 * 1024, f"broker RSS grew by {grown} KiB"
        # then it reads on: the lines its queue dropped come from history, in turns of
        # at most 1,000, each line shown once and in order; nothing vanishes in silence
        fast.send("done")
        reader.expect(r"^Fast: done$", timeout=60)
    shown = [int(line[6:11]) for line in reader.lines["stdout"] if LINE.match(line)]
    notes = [line for line in reader.lines["stdout"] if not LINE.match(line)]
    jumps = [(a, b) for a, b in itertools.pairwise(shown) if b != a + 1]
    assert shown == list(range(LINES)), (len(shown), jumps, notes)
    reader.close_stdin()
    assert reader.wait() == 0
