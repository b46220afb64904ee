"""End to end, in a real pty: files shared from `zchat join` (/send, /get, /files,
/cancel) while the chat and the prompt go on, the progress under the line being typed;
and the same commands in a script (stdin a pipe)."""

from __future__ import annotations

import random
import re
import subprocess
import threading
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path

import pytest

from conftest import RunningBroker
from screen import ROWS, STAMP, WAIT, Terminal
from support import child_env, expect_message, zchat_command
from zchat import Client
from zchat.errors import ProtocolError
from zchat.protocol import transfer as t

MiB = 1024 * 1024


class Hold:
    """Holds the broker's file port at the first chunk sent, or asked for, at or past
    ``offset``, until ``release``: a transfer that is still running for as long as the
    test needs (on loopback, 50 MiB move in a tenth of a second). The broker's loop
    waits meanwhile, its chat too: a test releases it within seconds."""

    def __init__(self, broker: RunningBroker, offset: int) -> None:
        self.offset = offset
        self.holding = threading.Event()  # the broker waits on a chunk past offset
        self.released = threading.Event()
        self._handle = broker.broker.files.handle

    def handle(
        self, identity: bytes, frames: Sequence[bytes | memoryview], user: str | None, now: float
    ) -> object:
        try:
            request: t.Request | None = t.decode_request(frames)
        except ProtocolError:
            request = None
        moving = isinstance(request, t.Chunk | t.Get) and request.offset >= self.offset
        if moving and not self.released.is_set():
            self.holding.set()
            self.released.wait(WAIT)
        return self._handle(identity, frames, user, now)

    def release(self) -> None:
        self.released.set()


@pytest.fixture
def hold(broker: RunningBroker, monkeypatch: pytest.MonkeyPatch) -> Iterator[Callable[[int], Hold]]:
    """hold(offset) -> the broker's file port held there until released (at the end of
    the test, if not before)."""
    made: list[Hold] = []

    def start(offset: int) -> Hold:
        held = Hold(broker, offset)
        monkeypatch.setattr(broker.broker.files, "handle", held.handle)
        made.append(held)
        return held

    yield start
    for held in made:
        held.release()


def make_file(path: Path, size: int) -> bytes:
    data = random.Random(size).randbytes(size)
    path.write_bytes(data)
    return data


def shown(term: Terminal, pattern: str) -> None:
    term.wait_for(lambda t: t.row_of(pattern) is not None, repr(pattern))


def told(term: Terminal, text: str, times: int = 1) -> None:
    """``text`` written ``times`` times, wherever it wrapped on the screen (a long path
    takes two rows of it)."""
    encoded = text.encode()
    term.wait_for(lambda t: t.raw.count(encoded) >= times, repr(text))


def parts(folder: Path) -> list[Path]:
    return list(folder.glob(".*.zchat-part"))


def test_a_file_sent_while_a_line_is_typed_then_fetched_twice_and_listed(
    spawn: Callable[..., Terminal], hold: Callable[[int], Hold], tmp_path: Path
) -> None:
    downloads = tmp_path / "bob"
    downloads.mkdir()
    alice = spawn("Alice")
    bob = spawn("Bob", "--downloads", str(downloads))
    folder = tmp_path / "my files"
    folder.mkdir()
    data = make_file(folder / "big report.bin", 4 * MiB)
    held = hold(MiB)  # the upload stops part-way until released
    alice.type(f'/send "{folder}/big report.bin"\r')
    alice.wait_prompt()
    alice.type("half typed")
    toolbar = r"^↑1 big report\.bin [\d.]+ MB of 4\.2 MB \(\d\d%\)"
    alice.wait_for(
        lambda t: held.holding.is_set() and t.row_of(toolbar) is not None, "the upload part-way"
    )
    alice.wait_prompt("half typed")  # as it was, the status line below it
    assert alice.row_of(toolbar) == ROWS - 1, alice.dump()
    held.release()
    shared = STAMP + r"Alice shared big report\.bin \(4\.2 MB\): /get 1$"
    shown(alice, shared)
    alice.wait_for(lambda t: t.row_of("^↑1") is None, "no status line once it is done")
    alice.wait_prompt("half typed")
    alice.type("\r")
    shown(bob, STAMP + "Alice: half typed$")
    shown(bob, shared)

    bob.type("/get 1\r")
    told(bob, f"saved big report.bin (4.2 MB) to {downloads}/big report.bin, SHA-256 checked")
    assert (downloads / "big report.bin").read_bytes() == data
    bob.type("/get 1\r")  # a name in use is never overwritten
    told(bob, f"to {downloads}/big report (1).bin, SHA-256 checked")
    assert (downloads / "big report (1).bin").read_bytes() == data
    assert not parts(downloads)
    bob.type("/files\r")
    shown(bob, STAMP + r"\*\*\* files in #general:$")
    shown(bob, r"^  1  big report\.bin  4\.2 MB  Alice  \d\d:\d\d$")
    bob.type("/files #dev\r")
    shown(bob, STAMP + r"\*\*\* no files in #dev$")

    alice.type(f"/send {folder}/nothing.txt\r")
    told(alice, f"not sent: there is no file {folder}/nothing.txt")
    alice.type(f"/send {folder}\r")
    told(alice, f"not sent: {folder} is a folder: give a file")
    alice.type("/cancel\r")
    shown(alice, STAMP + r"\*\*\* no transfer is running$")
    bob.type("/files\r")  # nothing more was shared
    listed = re.compile(r"^  1  big report\.bin  4\.2 MB  Alice  \d\d:\d\d$")
    bob.wait_for(lambda t: len(list(filter(listed.search, t.lines))) == 2, "the second listing")
    assert bob.row_of(r"^  2  ") is None


def test_cancel_stops_a_running_download_and_leaves_nothing(
    spawn: Callable[..., Terminal],
    hold: Callable[[int], Hold],
    make_client: Callable[..., Client],
    tmp_path: Path,
) -> None:
    alice = make_client("Alice")
    make_file(tmp_path / "big.bin", 8 * MiB)
    file = alice.send_file(tmp_path / "big.bin")
    downloads = tmp_path / "bob"
    downloads.mkdir()
    bob = spawn("Bob", "--downloads", str(downloads))
    bob.type("/get 99\r")  # transfer 1: no such file
    shown(bob, r"\*\*\* not saved: file 99: there is no file 99 that you may fetch$")
    held = hold(2 * MiB)
    bob.type(f"/get {file.id}\r")  # transfer 2
    toolbar = r"^↓2 big\.bin [\d.]+ MB of 8\.4 MB \(\d\d%\)"
    bob.wait_for(
        lambda t: held.holding.is_set() and t.row_of(toolbar) is not None, "the download part-way"
    )
    assert len(parts(downloads)) == 1
    bob.type(f"/cancel {file.id}\r")  # a file id: the download of it
    shown(bob, STAMP + r"\*\*\* cancelled ↓2 big\.bin: nothing saved$")
    assert not list(downloads.iterdir())  # the part file went with it
    bob.wait_for(lambda t: t.row_of("^↓2") is None, "no status line once it is cancelled")
    held.release()
    bob.type("/cancel 2\r")
    shown(bob, STAMP + r"\*\*\* no transfer is running$")


def run(*args: str, stdin: str = "") -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        zchat_command(*args), input=stdin, capture_output=True, text=True, env=child_env(),
        timeout=WAIT, check=False,
    )  # fmt: skip


def test_a_script_sends_and_fetches_files(
    broker: RunningBroker, make_client: Callable[..., Client], tmp_path: Path
) -> None:
    bob = make_client("Bob")
    carol = make_client("Carol", rooms=["dev"])
    notes = make_file(tmp_path / "notes.txt", 3000)
    make_file(tmp_path / "plan.txt", 10)
    plan = carol.send_file(tmp_path / "plan.txt", room="dev")
    lines = [f"/send @Bob {tmp_path}/notes.txt", f"/get {plan.id}", f"/send {tmp_path}/none"]
    result = run(
        "join", "--name", "Alice", "--port", str(broker.port), "--time-format", "none",
        "--downloads", str(tmp_path), stdin="\n".join(lines) + "\n",
    )  # fmt: skip
    out = result.stdout.splitlines()
    # progress at the start and at the end of each transfer, and what went wrong
    assert "*** sending notes.txt to @Bob (↑1)" in out, out
    assert "[private] Alice → Bob shared notes.txt (3.0 kB): /get 2" in out, out
    assert "*** sent ↑1 notes.txt (3.0 kB): /get 2" in out, out
    assert f"*** getting file {plan.id} (↓2)" in out, out
    assert f"*** not saved: file {plan.id} is in #dev: /join #dev to get it" in out, out
    assert f"*** not sent: there is no file {tmp_path}/none" in out, out
    assert result.returncode == 1  # a transfer failed
    private = expect_message(bob, lambda m: m.file is not None, timeout=WAIT)
    assert private.kind == "private" and private.file is not None
    assert bob.get_file(private.file.id, tmp_path / "got.txt").read_bytes() == notes


@pytest.mark.parametrize("problem", ["does not exist", "is not a folder"])
def test_a_downloads_folder_that_is_not_there_is_said_at_the_start(
    tmp_path: Path, problem: str
) -> None:
    folder = tmp_path / "downloads"
    if problem == "is not a folder":
        folder.write_text("")
    result = run("join", "--name", "Alice", "--downloads", str(folder))
    assert result.returncode == 1
    assert result.stderr == f"zchat: the downloads folder {folder} {problem}\n"
