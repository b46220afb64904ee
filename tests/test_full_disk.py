"""A full disk under a running broker: it refuses what it cannot store, to the sender,
publishes nothing it has not stored, keeps everything else working, and takes up
storing by itself once there is room again.

Three ways to fill the disk, all real SQLite failures: ``PRAGMA max_page_count`` on
the broker's own connection (SQLITE_FULL as a statement needs a page; runs anywhere),
a file size limit on a broker process (the commit's write fails: SQLITE_IOERR), and a
tiny tmpfs (the commit's write meets ENOSPC: SQLITE_FULL; needs root to mount).
"""

from __future__ import annotations

import contextlib
import logging
import resource
import signal
import subprocess
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
import zmq

from conftest import RunningBroker
from support import Proc, expect_message, start_broker
from zchat import Client, Message
from zchat import protocol as p
from zchat.broker.store import HistoryStore

REFUSED = "the broker cannot store anything ("
# A line this long never fits in a page: SQLite stores it on overflow pages of its own,
# so once the file may not grow, such a line is refused at once.
LONG = 3000
MOST_TRIES = 200  # lines said, at most, before the last pages are full


def cap(store: HistoryStore, pages: int | None = None) -> None:
    """Let the broker's file grow no more (or up to ``pages``): SQLite then answers a
    write that needs a new page as a full disk does. The broker's connection is shared
    with its thread; SQLite serialises the two."""
    db = store._db
    limit = pages or db.execute("PRAGMA page_count").fetchone()[0]
    db.execute(f"PRAGMA max_page_count = {limit}")


def said(text: str) -> Callable[[Message], bool]:
    return lambda m: m.kind == "message" and m.text == text


def refused_or_said(text: str) -> Callable[[Message], bool]:
    return lambda m: m.text == text or (m.kind == "system" and REFUSED in m.text)


def collect(client: Client, until: Callable[[Message], bool]) -> list[Message]:
    seen = []
    while not until(msg := expect_message(client, lambda _: True)):
        seen.append(msg)
    return [*seen, msg]


def test_a_full_disk_refuses_lines_to_their_sender_and_nothing_else(
    ctx: zmq.Context[zmq.Socket[bytes]], tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="zchat.broker")
    running = RunningBroker(ctx, db=str(tmp_path / "history.db"), rate=0)
    store = running.broker.store
    with contextlib.ExitStack() as clients:
        alice, bob, carol = (
            clients.enter_context(contextlib.closing(Client(name, port=running.port, context=ctx)))
            for name in ("Alice", "Bob", "Carol")
        )
        alice.join()
        bob.join()
        alice.send("stored")
        first = expect_message(bob, said("stored")).seq
        cap(store)

        long = "x" * LONG
        alice.send(long)
        refusal = expect_message(alice, refused_or_said(long))
        assert refusal.text.startswith(f"not sent: {REFUSED}database or disk is full)")
        assert alice.core.undelivered == [long]
        for i in range(MOST_TRIES):  # short lines fill what room the last pages have
            alice.send(text := f"short line {i:03d}")
            if expect_message(alice, refused_or_said(text)).kind == "system":
                break
        else:
            raise AssertionError(f"{MOST_TRIES} short lines all fit: the cap did not hold")
        alice.set_topic("a topic the disk has no room for " * 9)
        expect_message(alice, lambda m: m.text.startswith(f"error: {REFUSED}"))

        # everything else works: private lines, joins, who
        alice.msg("Bob", "psst")
        heard = collect(bob, lambda m: m.kind == "private" and m.text == "psst")
        assert not [m for m in heard if m.text in (long, text)], heard  # none was published
        carol.join()
        bob.who()
        expect_message(bob, lambda m: m.text == "in #general: Alice, Bob, Carol")
        alice.who()
        expect_message(alice, lambda m: m.text == "in #general: Alice, Bob, Carol")  # no topic

        cap(store, 1 << 30)  # room again: the next write simply succeeds
        alice.send("after")
        heard += collect(bob, said("after"))
        seqs = [first, *(m.seq for m in heard if m.seq is not None)]
        assert seqs == list(range(first, first + len(seqs)))  # no number spent on a refusal
        assert not [m for m in heard if "could not be recovered" in m.text]
        assert not [m for m in collect(carol, said("after")) if "recovered" in m.text]
        [stored], _ = store.history("general", seqs[-1] - 1, seqs[-1] + 1, 5)
        assert isinstance(stored, p.Chat) and stored.text == "after"
        assert running.thread.is_alive()
    running.stop()
    logged = [r.getMessage() for r in caplog.records]
    assert len([m for m in logged if "cannot be written (database or disk is full)" in m]) == 1
    assert len([m for m in logged if "can be written again" in m]) == 1


@contextlib.contextmanager
def small_tmpfs(where: Path) -> Iterator[Path]:
    where.mkdir()
    mounted = subprocess.run(
        ["mount", "-t", "tmpfs", "-o", "size=2m", "tmpfs", str(where)],
        capture_output=True,
        text=True,
        check=False,
    )
    if mounted.returncode != 0:
        pytest.skip(f"cannot mount a small tmpfs here: {mounted.stderr.strip()}")
    try:
        yield where
    finally:
        subprocess.run(["umount", "-l", str(where)], check=True)


def take_every_byte(folder: Path) -> Path:
    """A file that fills the file system of ``folder`` until ENOSPC."""
    filler = folder / "filler"
    with open(filler, "wb", buffering=0) as out, contextlib.suppress(OSError):
        while out.write(b"\0" * 4096):
            pass
    return filler


def limit_file_size(pid: int, size: int) -> None:
    """No file of process ``pid`` may grow past ``size`` bytes (a write past it fails
    with EFBIG; Python ignores the SIGXFSZ that comes with it)."""
    resource.prlimit(pid, resource.RLIMIT_FSIZE, (size, resource.RLIM_INFINITY))


@pytest.mark.parametrize("how", ["file size limit", "tmpfs"])
def test_a_broker_process_on_a_full_disk_keeps_running_and_recovers(
    ctx: zmq.Context[zmq.Socket[bytes]], tmp_path: Path, procs: list[Proc], how: str
) -> None:
    with contextlib.ExitStack() as stack:
        folder = tmp_path
        if how == "tmpfs":
            folder = stack.enter_context(small_tmpfs(tmp_path / "disk"))
        broker, port = start_broker("--rate", "0", db=str(folder / "history.db"))
        procs.append(broker)
        alice = stack.enter_context(Client("Alice", port=port, context=ctx))
        bob = stack.enter_context(Client("Bob", port=port, context=ctx))
        alice.send("stored")
        expect_message(bob, said("stored"))
        if how == "tmpfs":
            filler = take_every_byte(folder)
        else:  # the write-ahead log, the file each commit grows
            limit_file_size(broker.popen.pid, (folder / "history.db-wal").stat().st_size)

        for i in range(MOST_TRIES):  # the commit that would grow the file fails
            alice.send(text := f"line {i:03d} " + "x" * 500)
            if expect_message(alice, refused_or_said(text)).kind == "system":
                break
        else:
            raise AssertionError(f"{MOST_TRIES} lines were all stored: the disk did not fill")
        alice.msg("Bob", "still here")  # a private line needs no disk
        heard = collect(bob, lambda m: m.kind == "private" and m.text == "still here")
        assert not [m for m in heard if m.text == text]
        broker.expect(r"ERROR history database .* cannot be written \(", "stderr")

        if how == "tmpfs":
            filler.unlink()
        else:
            limit_file_size(broker.popen.pid, resource.RLIM_INFINITY)
        alice.send("after")
        heard = collect(bob, said("after"))
        assert not [m for m in heard if "could not be recovered" in m.text]
        broker.expect(r"history database .* can be written again", "stderr")
        assert broker.popen.poll() is None
        broker.signal(signal.SIGTERM)
        assert broker.wait() == 0
        broker.collect()
        assert not [line for line in broker.lines["stderr"] if "Traceback" in line]
