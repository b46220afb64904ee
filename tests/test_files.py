"""File sharing on real sockets: shares in rooms and in private, sizes, resuming, checks,
limits and safe names. The broker's file port is port + 2 (broker/files.py)."""

from __future__ import annotations

import asyncio
import hashlib
import os
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
import zmq

from conftest import RunningBroker
from support import Proc, child_env, expect_message, start_broker, zchat_command
from zchat import Client, Message
from zchat.broker.limits import FileLimits
from zchat.errors import TransferFailed
from zchat.protocol import transfer as t

MakeClient = Callable[..., Client]
MiB = 1024 * 1024


def shared(sender: str) -> Callable[[Message], bool]:
    return lambda m: m.file is not None and m.sender == sender


def make_file(folder: Path, name: str, size: int) -> Path:
    path = folder / name
    path.write_bytes(os.urandom(size))
    return path


def digest(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def files_folder(broker: RunningBroker) -> Path:
    return broker.broker.files.store.folder


def stored_contents(broker: RunningBroker) -> list[Path]:
    """The bytes the broker keeps (not partial uploads)."""
    folder = files_folder(broker)
    return [p for p in folder.glob("??/*") if p.is_file()]


def partials(broker: RunningBroker) -> list[Path]:
    return list((files_folder(broker) / "partial").iterdir())


class RawFiles:
    """A DEALER on the file port, speaking the protocol by hand with a session's secret."""

    def __init__(self, ctx: zmq.Context[zmq.Socket[bytes]], port: int, secret: str) -> None:
        self.sock = ctx.socket(zmq.DEALER)
        self.sock.setsockopt(zmq.LINGER, 0)
        self.sock.connect(f"tcp://127.0.0.1:{port + 2}")
        self.secret = secret

    def send(self, request: t.Request) -> None:
        self.sock.send_multipart(t.encode_request(request))

    def answer(self, timeout: float = 5.0) -> t.Answer:
        assert self.sock.poll(timeout * 1000), f"no answer within {timeout} s"
        return t.decode_answer(self.sock.recv_multipart())

    def answers_until(
        self, done: Callable[[t.Answer], bool], timeout: float = 10.0
    ) -> list[t.Answer]:
        seen: list[t.Answer] = []
        end = time.monotonic() + timeout
        while not seen or not done(seen[-1]):
            left = end - time.monotonic()
            assert left > 0, f"not done within {timeout} s; saw {seen[-5:]}"
            seen.append(self.answer(left))
        return seen

    def offer(
        self, ask: str, data: bytes, room: str = "general", name: str = "x.bin", sha256: str = ""
    ) -> None:
        sha = sha256 or hashlib.sha256(data).hexdigest()
        self.send(
            t.Offer(secret=self.secret, ask=ask, name=name, size=len(data), sha256=sha, room=room)
        )

    def upload(self, ask: str, data: bytes, **offer: str) -> t.Answer:
        """Offer ``data`` and send every chunk asked for; the last answer."""
        self.offer(ask, data, **offer)
        while True:
            answer = self.answer()
            if isinstance(answer, t.Want):
                chunk = data[answer.offset : answer.offset + answer.size]
                self.send(
                    t.Chunk(
                        secret=self.secret,
                        ask=ask,
                        upload=answer.upload,
                        offset=answer.offset,
                        data=chunk,
                    )
                )
            elif not isinstance(answer, t.Accepted):
                return answer

    def close(self) -> None:
        self.sock.close()


@pytest.fixture
def raw(
    ctx: zmq.Context[zmq.Socket[bytes]], broker: RunningBroker
) -> Iterator[Callable[[Client], RawFiles]]:
    made: list[RawFiles] = []

    def make(client: Client) -> RawFiles:
        made.append(RawFiles(ctx, broker.port, client.core.secret))
        return made[-1]

    yield make
    for sock in made:
        sock.close()


# --- sharing ---------------------------------------------------------------------------------


def test_a_room_share_reaches_a_late_joiner(make_client: MakeClient, tmp_path: Path) -> None:
    alice = make_client("Alice")
    source = make_file(tmp_path, "tugas3.pdf", 300_000)
    file = alice.send_file(source)
    assert (file.name, file.size, file.sha256) == ("tugas3.pdf", 300_000, digest(source))
    seen = expect_message(alice, shared("Alice"))  # the room's line, to its sender too
    assert seen.text == f"shared tugas3.pdf (300 kB): /get {file.id}" and seen.room == "general"

    carol = make_client("Carol")  # an hour later: the share is in the history
    line = expect_message(carol, shared("Alice"))
    assert line.replayed and line.file == file
    (tmp_path / "carol").mkdir()
    saved = carol.get_file(file.id, tmp_path / "carol")
    assert saved == tmp_path / "carol" / "tugas3.pdf"
    assert saved.read_bytes() == source.read_bytes()
    listed = carol.list_files()
    assert [(x.file.id, x.sender, x.room) for x in listed] == [(file.id, "Alice", "general")]


def test_a_private_share_is_for_its_two_users_only(
    make_client: MakeClient,
    ctx: zmq.Context[zmq.Socket[bytes]],
    broker: RunningBroker,
    tmp_path: Path,
) -> None:
    spy = ctx.socket(zmq.SUB)  # a raw SUB of everything: narrowed to public topics
    spy.setsockopt(zmq.LINGER, 0)
    spy.setsockopt(zmq.SUBSCRIBE, b"")
    spy.connect(f"tcp://127.0.0.1:{broker.port + 1}")
    alice, bob, carol = make_client("Alice"), make_client("Bob"), make_client("Carol")
    source = make_file(tmp_path, "layar.png", 1000)
    file = alice.send_file(source, to="Bob")
    dm = expect_message(bob, lambda m: m.kind == "private" and m.file is not None)
    assert dm.file == file and dm.to == "Bob"
    assert dm.text == f"shared layar.png (1.0 kB): /get {file.id}"
    alice.send("after the file")
    expect_message(carol, lambda m: m.text == "after the file")  # Carol saw all before it
    seen = []
    while spy.poll(0):
        seen.append(b"|".join(spy.recv_multipart()))
    assert not [frame for frame in seen if b"layar" in frame]
    with pytest.raises(TransferFailed) as refused:
        carol.get_file(file.id, tmp_path)
    assert refused.value.code == "no-such-file"
    assert carol.list_files("@") == ()
    (tmp_path / "bob").mkdir()
    assert bob.get_file(file.id, tmp_path / "bob").read_bytes() == source.read_bytes()
    assert [x.to for x in bob.list_files("@")] == ["Bob"]
    spy.close()


@pytest.mark.parametrize("size", [0, 1, t.CHUNK_BYTES + 1, 50 * MiB])
def test_files_arrive_byte_for_byte(make_client: MakeClient, tmp_path: Path, size: int) -> None:
    alice, bob = make_client("Alice"), make_client("Bob")
    source = make_file(tmp_path, "data.bin", size)
    seen: list[tuple[int, int]] = []
    file = alice.send_file(source, progress=lambda done, total: seen.append((done, total)))
    assert seen[-1] == (size, size)
    (tmp_path / "in").mkdir()
    saved = bob.get_file(file.id, tmp_path / "in")
    assert saved.stat().st_size == size and digest(saved) == digest(source)
    assert not [p for p in (tmp_path / "in").iterdir() if p != saved]  # no part file left


def test_the_same_file_shared_twice_is_stored_once(
    make_client: MakeClient, broker: RunningBroker, tmp_path: Path
) -> None:
    alice = make_client("Alice")
    source = make_file(tmp_path, "a.bin", 5000)
    first, second = alice.send_file(source), alice.send_file(source, name="again.bin")
    assert first.id != second.id and first.sha256 == second.sha256
    assert len(stored_contents(broker)) == 1


def test_getting_never_overwrites(make_client: MakeClient, tmp_path: Path) -> None:
    alice = make_client("Alice")
    file = alice.send_file(make_file(tmp_path, "tugas3.pdf", 10))
    (tmp_path / "in").mkdir()
    (tmp_path / "in" / "tugas3.pdf").write_text("mine")
    assert alice.get_file(file.id, tmp_path / "in").name == "tugas3 (1).pdf"
    assert alice.get_file(file.id, tmp_path / "in").name == "tugas3 (2).pdf"
    assert (tmp_path / "in" / "tugas3.pdf").read_text() == "mine"
    named = alice.get_file(file.id, tmp_path / "in" / "mine.pdf")
    assert named == tmp_path / "in" / "mine.pdf"


@pytest.mark.parametrize(
    ("name", "saved"),
    [
        ("../../etc/passwd", "passwd"),
        (".bashrc", "bashrc"),
        ("CON", "_CON"),
        ("con.txt", "_con.txt"),
        ("a\x1b[31mb.txt", "a[31mb.txt"),
        ("x" * 296 + ".pdf", None),  # 300 bytes: cut to 255, the extension kept
    ],
)
def test_a_senders_name_is_saved_safely(
    make_client: MakeClient, tmp_path: Path, name: str, saved: str | None
) -> None:
    alice, bob = make_client("Alice"), make_client("Bob")
    file = alice.send_file(make_file(tmp_path, "plain.bin", 3), name=name)
    (tmp_path / "in").mkdir()
    path = bob.get_file(file.id, tmp_path / "in")
    assert path.parent == tmp_path / "in"
    if saved is not None:
        assert path.name.replace("\ufffd", "") == saved
    else:
        assert len(path.name.encode()) <= 255 and path.name.endswith(".pdf")
    assert "\x1b" not in file.name  # the chat shows the name cleaned, not its escapes


# --- resuming ------------------------------------------------------------------------------

_KILL_HALF_WAY = """
import os, signal, sys
from pathlib import Path
from zchat import Client
port, file_id, dest = int(sys.argv[1]), int(sys.argv[2]), Path(sys.argv[3])
def progress(done, total):
    if done >= total // 2:
        os.kill(os.getpid(), signal.SIGKILL)
with Client("Bob", port=port) as bob:
    bob.get_file(file_id, dest, progress=progress)
"""


def test_a_download_killed_half_way_resumes(
    make_client: MakeClient, broker: RunningBroker, tmp_path: Path
) -> None:
    alice = make_client("Alice")
    source = make_file(tmp_path, "big.bin", 8 * MiB)
    file = alice.send_file(source)
    dest = tmp_path / "in"
    dest.mkdir()
    child = subprocess.run(
        [sys.executable, "-c", _KILL_HALF_WAY, str(broker.port), str(file.id), str(dest)],
        env=child_env(),
        capture_output=True,
        timeout=60,
        check=False,
    )
    assert child.returncode == -9, child.stderr
    (part,) = dest.iterdir()
    held = part.stat().st_size
    assert part.name.endswith(".zchat-part") and 4 * MiB <= held < 8 * MiB
    starts: list[int] = []
    bob = make_client("Bob2")
    saved = bob.get_file(file.id, dest, progress=lambda done, total: starts.append(done))
    assert starts[0] == held  # went on from where it stopped
    assert digest(saved) == digest(source) and list(dest.iterdir()) == [saved]


def test_an_upload_resumes_after_a_broker_restart(procs: list[Proc], tmp_path: Path) -> None:
    db = str(tmp_path / "history.db")
    first, port = start_broker(db=db)
    procs.append(first)
    source = make_file(tmp_path, "big.bin", 16 * MiB)
    restarted: list[Proc] = []

    def progress(done: int, total: int) -> None:
        if not restarted and done >= total // 2:
            first.signal(9)
            first.wait()
            again, _ = start_broker(port=port, db=db)
            procs.append(again)
            restarted.append(again)

    with Client("Alice", port=port) as alice:
        file = alice.send_file(source, progress=progress)
        assert restarted
        restarted[0].expect(
            r"Alice offers big\.bin \(17 MB\) for #general, from byte [1-9]", "stderr"
        )
        (tmp_path / "in").mkdir()
        assert digest(alice.get_file(file.id, tmp_path / "in")) == digest(source)
    assert not list((tmp_path / "history-files" / "partial").iterdir())


@pytest.mark.broker(file_limits=FileLimits(upload_timeout=1.0))
def test_an_abandoned_upload_is_deleted_after_the_timeout(
    make_client: MakeClient, broker: RunningBroker, raw: Callable[[Client], RawFiles]
) -> None:
    alice = make_client("Alice")
    sock = raw(alice)
    sock.offer("a1", b"x" * 1000)
    assert isinstance(sock.answer(), t.Accepted)
    assert partials(broker)
    answers = sock.answers_until(lambda a: isinstance(a, t.Refusal))
    assert answers[-1].code == "timed-out"  # type: ignore[union-attr]
    assert not partials(broker)


# --- checks ---------------------------------------------------------------------------------


def test_an_upload_that_does_not_match_its_hash_is_refused(
    make_client: MakeClient, broker: RunningBroker, raw: Callable[[Client], RawFiles]
) -> None:
    alice, bob = make_client("Alice"), make_client("Bob")
    sock = raw(alice)
    wrong = hashlib.sha256(b"something else").hexdigest()
    answer = sock.upload("a1", os.urandom(300_000), sha256=wrong)
    assert isinstance(answer, t.Refusal) and answer.code == "hash-mismatch"
    assert not stored_contents(broker) and not partials(broker)
    alice.send("still here")
    expect_message(bob, lambda m: m.text == "still here")


def test_a_download_that_does_not_match_is_deleted(
    make_client: MakeClient, broker: RunningBroker, tmp_path: Path
) -> None:
    alice = make_client("Alice")
    file = alice.send_file(make_file(tmp_path, "a.bin", 100_000))
    (stored,) = stored_contents(broker)
    stored.write_bytes(os.urandom(100_000))  # the broker's disk let it down
    (tmp_path / "in").mkdir()
    with pytest.raises(TransferFailed) as failed:
        alice.get_file(file.id, tmp_path / "in")
    assert failed.value.code == "hash-mismatch" and "deleted" in str(failed.value)
    assert not list((tmp_path / "in").iterdir())


def test_bad_requests_on_the_file_port_are_refused(
    make_client: MakeClient, broker: RunningBroker, raw: Callable[[Client], RawFiles]
) -> None:
    alice, bob = make_client("Alice"), make_client("Bob")
    sock, other = raw(alice), raw(bob)
    secret = alice.core.secret
    sock.send(t.Open(secret=secret, ask="o1", file=999))
    assert sock.answer() == t.Refusal(
        ask="o1", code="no-such-file", text="there is no file 999 that you may fetch"
    )
    stored = sock.upload("u1", b"12345")
    assert isinstance(stored, t.Stored)
    number = stored.file.id
    sock.send(t.Get(secret=secret, ask="g0", file=number, offset=0, size=5))  # not opened
    assert sock.answer().code == "not-open"  # type: ignore[union-attr]
    sock.send(t.Open(secret=secret, ask="g1", file=number))
    assert isinstance(sock.answer(), t.Opened)
    sock.send(t.Get(secret=secret, ask="g1", file=number, offset=3, size=5))  # past the end
    assert sock.answer().code == "bad-range"  # type: ignore[union-attr]
    # a chunk that was not asked for, one of the wrong size, one for another's upload
    sock.offer("u2", b"a" * 1000)
    accepted = sock.answer()
    assert isinstance(accepted, t.Accepted)
    assert isinstance(sock.answer(), t.Want)
    other.send(
        t.Chunk(
            secret=bob.core.secret, ask="u2", upload=accepted.upload, offset=0, data=b"a" * 1000
        )
    )
    assert other.answer().code == "not-yours"  # type: ignore[union-attr]
    sock.send(t.Chunk(secret=secret, ask="u2", upload=accepted.upload, offset=0, data=b"a" * 999))
    assert sock.answer().code == "bad-chunk"  # type: ignore[union-attr]
    sock.sock.send_multipart([b"not json"])
    sock.sock.send_multipart([b'{"v":1,"type":"chunk"}'])  # no second frame
    sock.send(t.ListFiles(secret=secret, ask="l1", room="general"))
    listing = sock.answer()
    assert isinstance(listing, t.Listing) and [x.file.id for x in listing.files] == [number]
    assert broker.broker.files.counts.dropped["json"] >= 1
    assert len(stored_contents(broker)) == 1  # nothing stored was lost
    alice.send("the chat goes on")
    expect_message(bob, lambda m: m.text == "the chat goes on")


def test_ten_thousand_half_open_uploads_hold_four(
    make_client: MakeClient, broker: RunningBroker, raw: Callable[[Client], RawFiles]
) -> None:
    alice, bob = make_client("Alice"), make_client("Bob")
    sock = raw(alice)
    files = broker.broker.files
    for n in range(10_000):
        sock.offer(f"h{n}", n.to_bytes(4, "big") * 64)
    answers: list[t.Answer] = []
    end = time.monotonic() + 60
    # every offer is refused (and counted) or accepted; an answer to a peer that does
    # not read is dropped, and counted too
    while sum(files.counts.dropped[c] for c in ("too-many-transfers", "rate-limited")) < 9_996:
        assert time.monotonic() < end, files.counts
        if sock.sock.poll(50):
            answers.append(t.decode_answer(sock.sock.recv_multipart()))
    accepted = [a for a in answers if isinstance(a, t.Accepted)]
    assert len(accepted) <= FileLimits().transfers
    assert len(partials(broker)) == FileLimits().transfers
    assert sum(broker.broker.stats()["files"]["refused"].values()) >= 9_996  # admin stats
    bob.send("the chat goes on")  # Alice's requests spent her flood limit, not Bob's
    expect_message(alice, lambda m: m.text == "the chat goes on")


# --- limits ---------------------------------------------------------------------------------


@pytest.mark.broker(file_limits=FileLimits(max_file_size=1000))
def test_a_file_past_the_size_limit_is_refused_before_it_moves(
    make_client: MakeClient, broker: RunningBroker, tmp_path: Path
) -> None:
    alice = make_client("Alice")
    with pytest.raises(TransferFailed) as refused:
        alice.send_file(make_file(tmp_path, "big.bin", 1001))
    assert refused.value.code == "too-large"
    assert str(refused.value) == "big.bin is 1.0 kB; files of at most 1.0 kB may be shared here"
    assert not partials(broker) and broker.broker.files.counts.bytes_in == 0


@pytest.mark.broker(file_limits=FileLimits(quota=3 * MiB))
def test_past_the_quota_the_oldest_files_expire(make_client: MakeClient, tmp_path: Path) -> None:
    alice = make_client("Alice")
    first = alice.send_file(make_file(tmp_path, "one.bin", MiB))
    second = alice.send_file(make_file(tmp_path, "two.bin", MiB))
    alice.send_file(make_file(tmp_path, "three.bin", 2 * MiB))  # one.bin must go
    with pytest.raises(TransferFailed) as gone:
        alice.get_file(first.id, tmp_path)
    assert gone.value.code == "expired"
    assert alice.get_file(second.id, tmp_path).stat().st_size == MiB
    carol = make_client("Carol")  # the history says so
    line = expect_message(carol, lambda m: m.file is not None and m.file.id == first.id)
    assert line.file is not None and line.file.expired and line.text.endswith(": expired")
    with pytest.raises(TransferFailed) as too_big:
        alice.send_file(make_file(tmp_path, "huge.bin", 3 * MiB + 1))
    assert too_big.value.code == "quota"


@pytest.mark.broker(file_limits=FileLimits(transfers=2))
def test_a_session_runs_a_bounded_number_of_transfers(
    make_client: MakeClient, raw: Callable[[Client], RawFiles]
) -> None:
    alice = make_client("Alice")
    sock = raw(alice)
    codes = []
    for ask in ("a", "b", "c"):
        sock.offer(ask, ask.encode() * 1000)
        answer = sock.answer()
        while isinstance(answer, t.Want):
            answer = sock.answer()
        codes.append(answer.code if isinstance(answer, t.Refusal) else type(answer).__name__)
    assert codes == ["Accepted", "Accepted", "too-many-transfers"]
    sock.send(t.Cancel(secret=alice.core.secret, ask="a"))
    assert sock.answers_until(lambda a: isinstance(a, t.Refusal)).pop().code == "cancelled"  # type: ignore[union-attr]
    sock.offer("d", b"d" * 1000)
    assert isinstance(sock.answer(), t.Accepted)


@pytest.mark.broker(rate=1.0, burst=3)
def test_file_requests_count_against_the_flood_limit(
    make_client: MakeClient, raw: Callable[[Client], RawFiles]
) -> None:
    alice = make_client("Alice")
    sock = raw(alice)
    for n in range(4):
        sock.send(t.ListFiles(secret=alice.core.secret, ask=f"l{n}", room="general"))
    answers = [sock.answer() for _ in range(4)]
    assert isinstance(answers[-1], t.Refusal) and answers[-1].code == "rate-limited"


# --- the commands ------------------------------------------------------------------------------


def test_send_file_and_get_file_as_commands(broker: RunningBroker, tmp_path: Path) -> None:
    source = make_file(tmp_path, "laporan akhir.pdf", 70_000)
    port = str(broker.port)
    sent = subprocess.run(
        zchat_command("send-file", "--name", "bot", "--port", port, "--room", "lab", str(source)),
        env=child_env(),
        capture_output=True,
        text=True,
        timeout=30,
        check=False,
    )
    assert sent.returncode == 0, sent.stderr
    number = sent.stdout.strip()
    (tmp_path / "in").mkdir()
    got = subprocess.run(  # a file of #lab: get-file enters it
        zchat_command("get-file", number, "--port", port, "--downloads", str(tmp_path / "in")),
        env=child_env(),
        capture_output=True,
        text=True,
        timeout=30,
        check=False,
    )
    assert got.returncode == 0, got.stderr
    saved = Path(got.stdout.strip())
    assert saved.name == "laporan akhir.pdf" and saved.read_bytes() == source.read_bytes()
    missing = subprocess.run(
        zchat_command("get-file", "999", "--port", port, "-o", str(tmp_path)),
        env=child_env(),
        capture_output=True,
        text=True,
        timeout=30,
        check=False,
    )
    assert missing.returncode == 1
    assert missing.stderr == "zchat: there is no file 999 that you may fetch\n"


def test_the_asyncio_client_moves_files_while_the_chat_goes_on(
    broker: RunningBroker, make_client: MakeClient, tmp_path: Path
) -> None:
    from zchat.aio import AsyncClient

    bob = make_client("Bob")
    source = make_file(tmp_path, "big.bin", 20 * MiB)

    async def main() -> tuple[int, Path]:
        async with AsyncClient("Alice", port=broker.port) as alice:
            up = await alice.start_upload(source)
            await alice.send("while it uploads")  # the chat is not held up
            await alice.finish(up)
            assert up.shared is not None
            (tmp_path / "in").mkdir()
            saved = await alice.get_file(up.shared.id, tmp_path / "in")
            listed = await alice.list_files()
            return listed[0].file.id, saved

    number, saved = asyncio.run(main())
    expect_message(bob, lambda m: m.text == "while it uploads")
    assert digest(saved) == digest(source)
    assert expect_message(bob, shared("Alice")).file.id == number  # type: ignore[union-attr]


def test_one_broker_per_files_folder(broker: RunningBroker, tmp_path: Path) -> None:
    from zchat.broker.server import Broker, BrokerConfig
    from zchat.errors import ConfigError

    taken = str(files_folder(broker))
    with pytest.raises(ConfigError, match="is in use by another broker: give this one its own"):
        Broker(BrokerConfig(port=0, files=taken))


def test_a_file_that_cannot_be_shared_is_refused_before_anything_moves(
    make_client: MakeClient, broker: RunningBroker, tmp_path: Path
) -> None:
    from zchat.errors import InvalidInput

    alice = make_client("Alice")
    for path, why in ((tmp_path / "missing.pdf", "No such file"), (tmp_path, "not a file")):
        with pytest.raises(InvalidInput, match=why):
            alice.send_file(path)
    assert broker.broker.files.counts.bytes_in == 0 and not partials(broker)


# --- what a review found: each forced, on real sockets ----------------------------------------


@pytest.mark.broker(file_limits=FileLimits(quota=MiB))
def test_the_quota_holds_against_a_borrowed_hash(
    make_client: MakeClient,
    broker: RunningBroker,
    raw: Callable[[Client], RawFiles],
    tmp_path: Path,
) -> None:
    """An offer naming a stored file's SHA-256 (it is public) takes no room; bytes of
    another hash must not then be stored past the quota under it."""
    alice = make_client("Mallory")
    stored = alice.send_file(make_file(tmp_path, "a.bin", 600_000))
    answer = raw(alice).upload("m1", os.urandom(600_000), sha256=stored.sha256)
    # the bytes are checked against the offer's hash: refused, and nothing kept
    assert isinstance(answer, t.Refusal) and answer.code == "hash-mismatch"
    assert broker.broker.files.store.stored == 600_000 and len(stored_contents(broker)) == 1


@pytest.mark.broker(file_limits=FileLimits(quota=MiB))
def test_offers_that_send_nothing_expire_no_file(
    make_client: MakeClient,
    broker: RunningBroker,
    raw: Callable[[Client], RawFiles],
    tmp_path: Path,
) -> None:
    alice, mallory = make_client("Alice"), make_client("Mallory")
    kept = alice.send_file(make_file(tmp_path, "a.bin", 400_000))
    sock = raw(mallory)
    codes = []
    for ask in ("m1", "m2", "m3"):
        sock.offer(ask, os.urandom(400_000))
        answer = sock.answer()
        while isinstance(answer, t.Want):
            answer = sock.answer()
        codes.append(answer.code if isinstance(answer, t.Refusal) else type(answer).__name__)
    assert codes == ["Accepted", "Accepted", "quota"]  # reserved, never taken from Alice
    assert alice.get_file(kept.id, tmp_path / "back.bin").stat().st_size == 400_000


def test_a_link_planted_at_the_part_files_name_is_not_followed(
    make_client: MakeClient, tmp_path: Path
) -> None:
    alice, bob = make_client("Alice"), make_client("Bob")
    file = alice.send_file(make_file(tmp_path, "notes.txt", 5000))
    shared_folder = tmp_path / "shared"
    shared_folder.mkdir()
    victim = tmp_path / ".bashrc"
    victim.write_text("mine")
    (shared_folder / f".notes.txt.{file.sha256[:16]}.zchat-part").symlink_to(victim)
    with pytest.raises(TransferFailed) as refused:
        bob.get_file(file.id, shared_folder)
    assert refused.value.code == "local"
    assert victim.read_text() == "mine"
    assert not (shared_folder / "notes.txt").exists()


_FULL_DISK = """
import resource, signal, sys
from pathlib import Path
from zchat import Client
from zchat.errors import TransferFailed
signal.signal(signal.SIGXFSZ, signal.SIG_IGN)  # a full disk: writes come up short
resource.setrlimit(resource.RLIMIT_FSIZE, (100_000, 100_000))
with Client("Bob", port=int(sys.argv[1])) as bob:
    try:
        bob.get_file(int(sys.argv[2]), Path(sys.argv[3]))
    except TransferFailed as failed:
        print(failed.code)
"""


def test_a_download_onto_a_full_disk_fails_and_saves_nothing(
    make_client: MakeClient, broker: RunningBroker, tmp_path: Path
) -> None:
    alice = make_client("Alice")
    file = alice.send_file(make_file(tmp_path, "big.bin", 600_000))
    (tmp_path / "in").mkdir()
    child = subprocess.run(
        [sys.executable, "-c", _FULL_DISK, str(broker.port), str(file.id), str(tmp_path / "in")],
        env=child_env(), capture_output=True, text=True, timeout=60, check=False,
    )  # fmt: skip
    assert child.stdout.strip() == "local", child.stderr
    assert not (tmp_path / "in" / "big.bin").exists()


def test_empty_files_hold_no_transfer_slot(make_client: MakeClient, tmp_path: Path) -> None:
    alice = make_client("Alice")
    empty = alice.send_file(make_file(tmp_path, "empty.txt", 0))
    for n in range(FileLimits().transfers + 2):
        assert alice.get_file(empty.id, tmp_path / f"e{n}.txt").stat().st_size == 0
    assert alice.send_file(make_file(tmp_path, "after.bin", 10)).size == 10


def test_a_failing_progress_callback_ends_its_transfer_not_the_client(
    broker: RunningBroker, make_client: MakeClient, tmp_path: Path
) -> None:
    from zchat.aio import AsyncClient

    source = make_file(tmp_path, "a.bin", 3 * t.CHUNK_BYTES)

    def broken(done: int, total: int) -> None:
        if done:
            raise RuntimeError("progress bar fell over")

    async def main() -> str:
        async with AsyncClient("Alice", port=broker.port) as alice:
            with pytest.raises(TransferFailed) as failed:
                await asyncio.wait_for(alice.send_file(source, progress=broken), 30)
            again = await asyncio.wait_for(alice.send_file(source), 30)  # still works
            return f"{failed.value.code} {again.size}"

    assert asyncio.run(main()) == f"progress {3 * t.CHUNK_BYTES}"


def test_a_file_the_broker_cannot_store_is_refused_and_the_chat_goes_on(
    make_client: MakeClient, broker: RunningBroker, tmp_path: Path
) -> None:
    from support import read_only

    alice, bob = make_client("Alice"), make_client("Bob")
    source = make_file(tmp_path, "a.bin", 50_000)
    with read_only(files_folder(broker)), pytest.raises(TransferFailed) as refused:
        alice.send_file(source)  # its bytes arrive, but cannot be put in place
    assert refused.value.code == "storage"
    alice.send("still here")
    expect_message(bob, lambda m: m.text == "still here")
    assert alice.send_file(source).size == 50_000  # and once it can, it is


def test_chunks_asked_for_and_never_read_cost_the_broker_a_bounded_queue(
    make_client: MakeClient,
    broker: RunningBroker,
    raw: Callable[[Client], RawFiles],
    tmp_path: Path,
) -> None:
    alice, bob = make_client("Alice"), make_client("Bob")
    file = alice.send_file(make_file(tmp_path, "big.bin", 50 * MiB))
    sock = raw(bob)
    sock.sock.setsockopt(zmq.RCVHWM, 1)  # a reader that never reads
    sock.send(t.Open(secret=bob.core.secret, ask="g", file=file.id))
    for offset in range(0, file.size, t.CHUNK_BYTES):
        sock.send(
            t.Get(secret=bob.core.secret, ask="g", file=file.id, offset=offset, size=t.CHUNK_BYTES)
        )
    files, guard = broker.broker.files, broker.broker.guard
    end = time.monotonic() + 30
    # what its queue (32 messages) cannot take is dropped and counted, or it is cut
    while not (files.counts.dropped["unread"] or guard.cuts["unread"]):
        assert time.monotonic() < end, (files.counts, guard.cuts)
        alice.receive(timeout=0.05)
    assert files.counts.bytes_out < 40 * MiB  # not the whole file, queued for no one
    alice.send("the chat goes on")
    expect_message(bob, lambda m: m.text == "the chat goes on")
