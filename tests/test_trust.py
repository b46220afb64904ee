"""Trusting an accounts broker's key: fingerprints, the key port's codec (tables of
bytes), known_hosts on disk, the --server and --server-key values, and the key port
served and asked on real loopback sockets."""

from __future__ import annotations

import base64
import contextlib
import hashlib
import json
import logging
import os
import re
import shlex
import socket
import stat
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
import zmq
from hypothesis import given
from hypothesis import strategies as st
from zmq.utils import z85
from zmq.utils.monitor import recv_monitor_message

from zchat.addresses import parse_server
from zchat.broker.keyport import KeyPort
from zchat.client.hello import fetch_hello
from zchat.errors import BrokerUnreachable, ConfigError, ProtocolError
from zchat.keys import keygen
from zchat.protocol.hello import (
    HELLO_REQUEST,
    MAX_BROKER_HELLO_BYTES,
    MAX_HELLO_BYTES,
    BrokerHello,
    decode_broker_hello,
    encode_broker_hello,
    fingerprint,
    is_hello,
    z85_decode,
)
from zchat.trust import KeyChanged, KnownHosts, invite, known_hosts_path, server_key

RAW = bytes(range(32))
KEY = z85.encode(RAW)  # a public key, as brokers send them
OTHER = z85.encode(bytes(range(32, 64)))
Ctx = zmq.Context[zmq.Socket[bytes]]
WAIT = 5.0  # seconds a test waits for what must come

# --- fingerprints and Z85 --------------------------------------------------------------


def test_fingerprint_is_sshs() -> None:
    digest = hashlib.sha256(RAW).digest()
    expected = "SHA256:" + base64.b64encode(digest).decode().rstrip("=")
    assert fingerprint(KEY) == expected
    assert len(expected) == len("SHA256:") + 43 and "=" not in expected
    assert fingerprint(OTHER) != expected


def test_z85_as_rfc_32() -> None:
    assert z85_decode(b"HelloWorld") == bytes.fromhex("864FD26FB559F75B")


@given(st.binary(min_size=32, max_size=32))
def test_z85_round_trip(raw: bytes) -> None:
    assert z85_decode(z85.encode(raw)) == raw


@pytest.mark.parametrize(
    ("text", "says"),
    [
        (b"Hell", "groups of 5 characters, not 4"),
        (b"Hello~orld", "'~' is not a Z85 character"),
        (b"Hello\xffWorld"[:10], "byte 0xff"),
        (b"#####", "not a Z85 group"),  # 85**5 - 1 > 2**32 - 1
    ],
)
def test_z85_refuses(text: bytes, says: str) -> None:
    with pytest.raises(ProtocolError, match=says):
        z85_decode(text)


def test_fingerprint_of_no_key() -> None:
    with pytest.raises(ProtocolError, match="40 characters of Z85, and this one has 39"):
        fingerprint(KEY[:39])


# --- the key port's codec --------------------------------------------------------------


def test_broker_hello_round_trip() -> None:
    for register in (True, False):
        wire = encode_broker_hello(KEY, register)
        assert json.loads(wire) == {
            "v": 1,
            "type": "broker",
            "mode": "accounts",
            "key": KEY.decode(),
            "fingerprint": fingerprint(KEY),
            "register": register,
        }
        assert decode_broker_hello(wire) == BrokerHello("accounts", KEY, fingerprint(KEY), register)


def test_hello_request() -> None:
    assert json.loads(HELLO_REQUEST) == {"v": 1, "type": "hello"}
    assert is_hello(HELLO_REQUEST)
    assert is_hello(b'{"type": "hello", "v": 1, "later": "fields"}')


@pytest.mark.parametrize(
    "data",
    [
        b"",
        b"hello",
        b"\xff\xfe",
        b"[1]",
        b'{"v": 2, "type": "hello"}',
        b'{"v": true, "type": "hello"}',
        b'{"type": "hello"}',
        b'{"v": 1, "type": "broker"}',
        b'{"v": 1, "type": "hello", "pad": "' + b"x" * MAX_HELLO_BYTES + b'"}',
        b"[" * 100_000,
    ],
)
def test_not_hello(data: bytes) -> None:
    assert not is_hello(data)


def _answer(**change: object) -> bytes:
    body = json.loads(encode_broker_hello(KEY, True)) | change
    return json.dumps({k: v for k, v in body.items() if v is not None}).encode()


@pytest.mark.parametrize(
    ("data", "code", "says"),
    [
        (b"not json", "json", "not UTF-8 JSON"),
        (b"[]", "json", "not a JSON object"),
        (_answer(v=2), "version", "version 2 is not supported"),
        (_answer(type="hello"), "type", "not 'broker'"),
        (_answer(mode="open"), "mode", "mode 'open'"),
        (_answer(mode=None), "field", "'mode' is missing"),
        (_answer(key=None), "field", "'key' is missing"),
        (_answer(key=KEY.decode()[:39]), "key", "this one has 39"),
        (_answer(key=KEY.decode()[:39] + "~"), "key", "'~' is not a Z85 character"),
        (_answer(key=KEY.decode()[:35] + "#####"), "key", "not a Z85 group"),
        (_answer(fingerprint=fingerprint(OTHER)), "fingerprint", "is not its key's"),
        (_answer(fingerprint=None), "field", "'fingerprint' is missing"),
        (_answer(register=None), "field", "'register'"),
        (_answer(register=1), "field", "'register'"),
        (_answer(pad="x" * MAX_BROKER_HELLO_BYTES), "size", f"more than {MAX_BROKER_HELLO_BYTES}"),
    ],
)
def test_bad_broker_hello(data: bytes, code: str, says: str) -> None:
    with pytest.raises(ProtocolError, match=says) as caught:
        decode_broker_hello(data)
    assert caught.value.code == code


# --- known_hosts -----------------------------------------------------------------------


@pytest.fixture
def hosts_file(tmp_path: Path) -> Path:
    return tmp_path / "config" / "zchat" / "known_hosts"


def test_remember_and_lookup(hosts_file: Path) -> None:
    old = os.umask(0o022)  # what most people have: files 644 unless made private
    try:
        KnownHosts(hosts_file).remember("chat.example.org", 5005, KEY)
    finally:
        os.umask(old)
    assert stat.S_IMODE(hosts_file.stat().st_mode) == 0o600
    assert stat.S_IMODE(hosts_file.parent.stat().st_mode) == 0o700
    assert stat.S_IMODE(hosts_file.parent.parent.stat().st_mode) == 0o700
    hosts = KnownHosts(hosts_file)  # what another zchat reads
    assert hosts.lookup("chat.example.org", 5005) == KEY
    assert hosts.lookup("chat.example.org", 5006) is None
    assert hosts.lookup("example.org", 5005) is None
    hosts.remember("chat.example.org", 5005, KEY)  # again: nothing written
    lines = hosts_file.read_text().splitlines()
    assert lines[0].startswith("#") and lines[1:] == [f"chat.example.org:5005 {KEY.decode()}"]


def test_host_case_and_ipv6(hosts_file: Path) -> None:
    hosts = KnownHosts(hosts_file)
    hosts.remember("Chat.Example.ORG", 5005, KEY)
    hosts.remember("::1", 6000, OTHER)
    assert hosts.lookup("chat.example.org", 5005) == KEY
    assert hosts.lookup("0:0::1", 6000) == OTHER
    assert f"[::1]:6000 {OTHER.decode()}" in hosts_file.read_text().splitlines()


def test_check(hosts_file: Path) -> None:
    hosts = KnownHosts(hosts_file)
    assert hosts.check("127.0.0.1", 5005, KEY) is False
    hosts.remember("127.0.0.1", 5005, KEY)
    assert hosts.check("127.0.0.1", 5005, KEY) is True
    with pytest.raises(ConfigError, match="not a broker's public key"):
        hosts.check("127.0.0.1", 5005, b"short")


def test_key_changed(hosts_file: Path) -> None:
    hosts = KnownHosts(hosts_file)
    hosts.remember("other.example.org", 5005, OTHER)
    hosts.remember("::1", 5005, KEY)
    for attempt in (hosts.check, hosts.remember):
        with pytest.raises(KeyChanged) as caught:
            attempt("0::1", 5005, OTHER)
        changed = caught.value
        assert (changed.host, changed.port, changed.old, changed.new) == ("0::1", 5005, KEY, OTHER)
        assert (changed.path, changed.line) == (hosts_file, 3)
        assert str(changed) == (
            f"the broker at [0::1]:5005 now has a different key ({fingerprint(OTHER)}) than the "
            f"one you trusted ({fingerprint(KEY)}, {hosts_file} line 3). Someone may be "
            "intercepting the connection; or its operator changed its key. Ask the operator "
            f"for the broker's fingerprint, and if it is the new one, delete line 3 of {hosts_file}"
        )
    assert hosts.lookup("::1", 5005) == KEY


def test_lines_that_cannot_be_read(hosts_file: Path, caplog: pytest.LogCaptureFixture) -> None:
    hosts_file.parent.mkdir(parents=True)
    key, other = KEY.decode(), OTHER.decode()
    hosts_file.write_bytes(
        "\n".join(
            [
                "# mine",  # 1
                "",
                f"good.example:5005 {key}",  # 3
                "no-key.example:5005",  # 4
                f"no-port.example {key}",  # 5
                f"bad-port.example:0 {key}",  # 6
                f"short.example:5005 {key[:39]}",  # 7
                f"::1:5005 {key}",  # 8
                f"[nope]:5005 {key}",  # 9
                f"good.example:5005 {other}",  # 10: a second key for the same broker
                f"caf\xe9.example:5005 {key}",  # 11 (Latin-1, not UTF-8)
                f"[::1]:5005 {other}",  # 12, and no line end
            ]
        ).encode("latin-1")
    )
    hosts = KnownHosts(hosts_file)
    with caplog.at_level(logging.WARNING, logger="zchat.trust"):
        assert hosts.lookup("good.example", 5005) == KEY
        assert hosts.lookup("::1", 5005) == OTHER
        hosts.lookup("good.example", 5005)  # read again: no second warning
    skipped = [r.getMessage() for r in caplog.records]
    assert [int(m.split(" line ")[1].split()[0]) for m in skipped] == [4, 5, 6, 7, 8, 9, 10, 11]
    assert all(m.startswith(f"{hosts_file} line ") for m in skipped)
    assert "has another key" in skipped[-2] and "line 3" in skipped[-2]
    hosts.remember("new.example", 5005, KEY)
    assert hosts_file.read_bytes().endswith(f"{other}\nnew.example:5005 {key}\n".encode())


def test_known_hosts_too_big(hosts_file: Path) -> None:
    hosts_file.parent.mkdir(parents=True)
    hosts_file.write_bytes(b"#" * (1024 * 1024 + 10))
    with pytest.raises(ConfigError, match=re.escape(f"{hosts_file} holds 1,048,586 bytes")):
        KnownHosts(hosts_file).lookup("a", 5005)


def test_known_hosts_path(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.delenv("ZCHAT_KNOWN_HOSTS", raising=False)
    monkeypatch.delenv("XDG_CONFIG_HOME", raising=False)
    monkeypatch.setenv("HOME", str(tmp_path))
    assert known_hosts_path() == tmp_path / ".config" / "zchat" / "known_hosts"
    monkeypatch.setenv("XDG_CONFIG_HOME", str(tmp_path / "xdg"))
    assert known_hosts_path() == tmp_path / "xdg" / "zchat" / "known_hosts"
    monkeypatch.setenv("ZCHAT_KNOWN_HOSTS", str(tmp_path / "mine"))
    assert known_hosts_path() == tmp_path / "mine"


# --- --server, --server-key, and the operator's invitation -----------------------------


@pytest.mark.parametrize(
    ("url", "host", "port"),
    [
        ("tcp://chat.example.org:6000", "chat.example.org", 6000),
        ("TCP://chat.example.org:6000", "chat.example.org", 6000),
        ("chat.example.org:6000", "chat.example.org", 6000),
        ("chat.example.org", "chat.example.org", 5005),
        ("tcp://10.0.0.1", "10.0.0.1", 5005),
        ("tcp://[::1]:5005", "::1", 5005),
        ("[fe80::1%eth0]:7000", "fe80::1%eth0", 7000),
        ("[::1]", "::1", 5005),
        (" localhost:1 ", "localhost", 1),
        ("localhost:65532", "localhost", 65532),
    ],
)
def test_parse_server(url: str, host: str, port: int) -> None:
    assert parse_server(url) == (host, port)


@pytest.mark.parametrize(
    ("url", "says"),
    [
        ("udp://host:5005", "with tcp://, not udp://"),
        ("ws://host", "not ws://"),
        ("host:0", "port '0' is not a number from 1 to 65532"),
        ("host:65533", "port '65533'"),
        ("host:http", "port 'http'"),
        ("host:", "port ''"),
        ("host:-5", "port '-5'"),
        ("tcp://host:5005/", "port '5005/'"),
        ("::1", "IPv6 address goes in brackets"),
        ("tcp://[::1", "no ']'"),
        ("[::1]5005", "'5005' after ']' is not :PORT"),
        ("[host]:5005", "[host] is not an IPv6 address"),
        ("", "'' is not a host name"),
        ("tcp://", "'' is not a host name"),
        ("user@host:5005", "'user@host' is not a host name"),
        ("-host", "'-host' is not a host name"),
    ],
)
def test_parse_server_refuses(url: str, says: str) -> None:
    with pytest.raises(ConfigError) as err:
        parse_server(url)
    assert says in str(err.value) and str(err.value).startswith(f"--server {url!r}: ")


def test_server_key(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    public, secret = keygen("broker", tmp_path)
    key = server_key(str(public))
    assert len(key) == 40 and fingerprint(key)
    assert server_key(str(secret)) == key
    assert server_key(KEY.decode()) == KEY
    monkeypatch.chdir(tmp_path)
    (tmp_path / KEY.decode()[:5]).mkdir()  # a key that is also a folder's name: the file wins
    with pytest.raises(ConfigError, match="no key file at"):
        server_key(KEY.decode()[:5])


@pytest.mark.parametrize("value", ["broker.key", KEY.decode()[:39], "a" * 5000, "x\0y"])
def test_server_key_refuses(value: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    with pytest.raises(ConfigError) as err:
        server_key(value)
    assert "is neither a key file (there is no file of that name)" in str(err.value)
    assert "nor a broker's public key" in str(err.value)


def test_invite() -> None:
    line = invite("::1", 5005, KEY)
    assert shlex.split(line) == [
        "zchat",
        "join",
        "--server",
        "tcp://[::1]:5005",
        "--server-key",
        KEY.decode(),
    ]
    assert invite("chat.example.org", 6000, KEY).startswith(
        "zchat join --server tcp://chat.example.org:6000 --server-key '"
    )


# --- the key port on real sockets ------------------------------------------------------


@contextlib.contextmanager
def key_port(ctx: Ctx, reply: bytes) -> Iterator[tuple[int, KeyPort]]:
    """A KeyPort served in a thread, as the broker's loop would: the ROUTER's port."""
    sock = ctx.socket(zmq.ROUTER)
    served = KeyPort(sock, reply)
    served.configure()
    port = sock.bind_to_random_port("tcp://127.0.0.1")
    stop = threading.Event()

    def serve() -> None:
        while not stop.is_set():
            if sock.poll(50):
                served.drain()

    thread = threading.Thread(target=serve, name="key-port", daemon=True)
    thread.start()
    try:
        yield port, served
    finally:
        stop.set()
        thread.join(WAIT)
        sock.close(linger=0)
    assert not thread.is_alive()


def test_fetch_hello(ctx: Ctx) -> None:
    with key_port(ctx, encode_broker_hello(KEY, False)) as (port, _):
        hello = fetch_hello("127.0.0.1", port - 3, WAIT, context=ctx)
    assert hello == BrokerHello("accounts", KEY, fingerprint(KEY), False)


def test_fetch_hello_from_no_broker(ctx: Ctx) -> None:
    with (
        key_port(ctx, b'{"v": 1, "type": "broker"}') as (port, _),
        pytest.raises(ProtocolError) as err,
    ):
        fetch_hello("127.0.0.1", port - 3, WAIT, context=ctx)
    assert str(err.value) == (
        f"the key port at 127.0.0.1:{port} is not a zchat broker's: field 'mode' is missing "
        "or not a str"
    )


def test_fetch_hello_unanswered(ctx: Ctx) -> None:
    with socket.socket() as closed:  # bound, not listening: connections are refused
        closed.bind(("127.0.0.1", 0))
        port = closed.getsockname()[1]
        started = time.monotonic()
        with pytest.raises(BrokerUnreachable) as err:
            fetch_hello("127.0.0.1", port - 3, 0.3, context=ctx)
    assert time.monotonic() - started < WAIT
    assert str(err.value) == (
        f"no answer from the broker's key port at 127.0.0.1:{port} within 0.3 s: is "
        f"127.0.0.1:{port - 3} a zchat broker with --accounts? (it tells its key on port {port})"
    )


def _dealer(ctx: Ctx, port: int) -> zmq.Socket[bytes]:
    dealer = ctx.socket(zmq.DEALER)
    dealer.setsockopt(zmq.LINGER, 0)
    dealer.connect(f"tcp://127.0.0.1:{port}")
    return dealer


def _drain_until_answered(served: KeyPort) -> None:
    deadline = time.monotonic() + WAIT
    while time.monotonic() < deadline:
        if served.sock.poll(100) and served.drain():
            return
    raise AssertionError("no hello answered")


@pytest.fixture
def router(ctx: Ctx) -> Iterator[tuple[int, KeyPort]]:
    """A KeyPort drained by the test itself, not a thread."""
    sock = ctx.socket(zmq.ROUTER)
    served = KeyPort(sock, b"the reply")
    served.configure()
    yield sock.bind_to_random_port("tcp://127.0.0.1"), served
    sock.close(linger=0)


def test_key_port_ignores_what_is_no_hello(ctx: Ctx, router: tuple[int, KeyPort]) -> None:
    port, served = router
    dealer = _dealer(ctx, port)
    dealer.send(b"nonsense")
    dealer.send(b'{"v": 1, "type": "join"}')
    dealer.send_multipart([HELLO_REQUEST, b"more"])
    dealer.send(HELLO_REQUEST)  # after the others, on the same connection
    _drain_until_answered(served)
    assert served.ignored == 3
    assert dealer.poll(WAIT * 1000) and dealer.recv_multipart() == [b"the reply"]
    assert not dealer.poll(0)
    dealer.close()


def test_key_port_survives_a_long_request(ctx: Ctx, router: tuple[int, KeyPort]) -> None:
    port, served = router
    big = _dealer(ctx, port)
    cut = big.get_monitor_socket(zmq.EVENT_DISCONNECTED)
    big.send(b" " * (MAX_HELLO_BYTES + 1) + HELLO_REQUEST)
    assert cut.poll(WAIT * 1000), "libzmq did not cut the connection"
    assert recv_monitor_message(cut)["event"] == zmq.EVENT_DISCONNECTED
    big.disable_monitor()
    cut.close()
    big.close()
    dealer = _dealer(ctx, port)
    dealer.send(HELLO_REQUEST)
    _drain_until_answered(served)
    assert dealer.poll(WAIT * 1000) and dealer.recv_multipart() == [b"the reply"]
    assert served.ignored == 0  # the long one never reached it
    dealer.close()
