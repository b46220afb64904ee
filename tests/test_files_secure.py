"""File sharing in secure mode, on real CURVE sockets: the file port is encrypted like
the chat, a connection without a listed key is refused, a session's secret is useless
with another key, a banned key fetches nothing, and the bytes on disk are private."""

from __future__ import annotations

import os
import stat
import time
from pathlib import Path

import pytest
import zmq
from zmq.utils.monitor import recv_monitor_message

from conftest import RunningBroker
from support import expect_message
from test_files import make_file

# the secure-mode fixtures, shared
from test_secure import MakeSecure, keys, keys_of, make_secure, secure_broker  # noqa: F401
from zchat.errors import TransferFailed
from zchat.protocol import transfer as t


def test_files_move_encrypted_and_are_kept_private(
    make_secure: MakeSecure, secure_broker: RunningBroker, tmp_path: Path
) -> None:
    alice, bob = make_secure("Alice"), make_secure("Bob")
    source = make_file(tmp_path, "soal.pdf", 600_000)
    file = alice.send_file(source)
    line = expect_message(bob, lambda m: m.file is not None)
    assert line.file == file and line.sender == "Alice"
    (tmp_path / "in").mkdir()
    assert bob.get_file(file.id, tmp_path / "in").read_bytes() == source.read_bytes()
    folder = secure_broker.broker.files.store.folder
    assert stat.S_IMODE(folder.stat().st_mode) == 0o700
    (content,) = [p for p in folder.glob("??/*")]
    assert stat.S_IMODE(content.stat().st_mode) & 0o077 == 0


def refused_at_handshake(port: int, keys_path: Path, who: str | None) -> bool:
    """Whether the file port refuses a DEALER with ``who``'s key (None: no CURVE)."""
    dealer = zmq.Context.instance().socket(zmq.DEALER)
    dealer.setsockopt(zmq.LINGER, 0)
    if who is not None:
        keys_of(keys_path, who).apply(dealer)
    monitor = dealer.get_monitor_socket(
        zmq.EVENT_HANDSHAKE_FAILED_NO_DETAIL
        | zmq.EVENT_HANDSHAKE_FAILED_PROTOCOL
        | zmq.EVENT_HANDSHAKE_FAILED_AUTH
        | zmq.EVENT_HANDSHAKE_SUCCEEDED
    )
    try:
        dealer.connect(f"tcp://127.0.0.1:{port + 2}")
        assert monitor.poll(5000), f"{who}: no handshake within 5 s"
        event = recv_monitor_message(monitor)["event"]
        return bool(event != zmq.EVENT_HANDSHAKE_SUCCEEDED)
    finally:
        dealer.disable_monitor()
        monitor.close()
        dealer.close()


def test_the_file_port_refuses_a_connection_without_a_listed_key(
    secure_broker: RunningBroker, keys: Path
) -> None:
    assert not refused_at_handshake(secure_broker.port, keys, "Bob")
    assert refused_at_handshake(secure_broker.port, keys, None)  # no CURVE at all
    assert refused_at_handshake(secure_broker.port, keys, "Mallory")  # a key not listed


def test_a_stolen_secret_fetches_nothing_with_another_key(
    make_secure: MakeSecure, secure_broker: RunningBroker, keys: Path, tmp_path: Path
) -> None:
    alice = make_secure("Alice")
    file = alice.send_file(make_file(tmp_path, "rahasia.txt", 100), to="Alice")
    dealer = zmq.Context.instance().socket(zmq.DEALER)
    dealer.setsockopt(zmq.LINGER, 0)
    keys_of(keys, "Bob").apply(dealer)
    dealer.connect(f"tcp://127.0.0.1:{secure_broker.port + 2}")
    try:
        stolen = t.Open(secret=alice.core.secret, ask="s1", file=file.id)
        dealer.send_multipart(t.encode_request(stolen))
        assert dealer.poll(5000)
        answer = t.decode_answer(dealer.recv_multipart())
    finally:
        dealer.close()
    assert isinstance(answer, t.Refusal) and answer.code == "unknown-session"


def test_a_banned_key_fetches_nothing(
    make_secure: MakeSecure, secure_broker: RunningBroker, keys: Path, tmp_path: Path
) -> None:
    alice, bob = make_secure("Alice"), make_secure("Bob")
    file = alice.send_file(make_file(tmp_path, "a.bin", 1000))
    alice.ban("Bob", "enough")
    end = time.monotonic() + 5
    while bob.core.ended is None:
        assert time.monotonic() < end, "Bob's session did not end"
        bob.receive(timeout=0.1)
    with pytest.raises(TransferFailed) as refused:
        bob.get_file(file.id, tmp_path)
    assert refused.value.code == "ended"
    assert refused_at_handshake(secure_broker.port, keys, "Bob")  # and its key stays out
    assert not [p for p in os.listdir(tmp_path) if p.endswith(".zchat-part")]
