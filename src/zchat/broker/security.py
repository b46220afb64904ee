"""The broker's ZAP handlers. Secure mode: CURVE on both broker sockets, and a ZAP
handler that knows the keys. Open mode: a ZAP handler that lets every connection in
but those from addresses the connection guard (guard.py) cut a moment ago.

The ZAP handler is pyzmq's ``zmq.auth`` ThreadAuthenticator, told two things: which
public keys may connect (the keys folder's users) and which name each one has. libzmq
then refuses unknown keys during the handshake, and stamps every frame a known key
sends with its name as the ``User-Id`` property, which the broker reads instead of
trusting anything the frame says.

A banned user's key is refused too, so a ban also stops them reading the rooms. The
ban itself ends the session at once (a ``kicked`` frame that says why), and the
connection guard cuts the connections the key made before it (a listener). The
refusal is ZAP status 400 like an unknown key's, so a client cannot tell the two
apart. A key or address the guard cut a moment ago is refused with status 500 (a 300
would hang up in silence), which a client tells apart: it is let in again shortly.

An accounts broker's handler lets in any key, and names one it does not list after
the key itself (a login key, identity.py): its sessions' names come from passwords.
A login key whose session someone ended (kicked, banned, its password changed) is
refused for now, like a key cut a moment ago.

Refused handshakes are logged at most once per REFUSAL_LOG_SECONDS, the first at once
and the rest in sum (a peer making fresh keys must not flood the log).
"""

from __future__ import annotations

import itertools
import logging
import struct
import threading
import time
from collections import Counter
from collections.abc import Callable

import zmq
from zmq.auth.base import VERSION
from zmq.auth.thread import ThreadAuthenticator
from zmq.utils import z85

from zchat.broker.identity import login_key_user
from zchat.keys import KeyRing

log = logging.getLogger("zchat.broker")

REFUSAL_LOG_SECONDS = 10.0  # at most one log line of refused handshakes in this long
# The ZAP status for a connection refused for a while (a cut key or address).
REFUSED_FOR_NOW = b"500"


MAX_ADDRESSES_COUNTED = 10_000  # distinct addresses counted between two log lines
_KINDS = {"unknown": "unknown keys", "banned": "banned keys"}

ZAP_DOMAIN = b"zchat"  # open mode: set on the broker's sockets so that libzmq asks ZAP
# The property, on every frame of a connection let in, of the connection's number (the
# connection guard tells a new connection from an old one on the same descriptor by it)
CONNECTION_PROPERTY = "X-Connection"
_serials = itertools.count(1)  # for every handler of the process (a reload makes one)


class OpenGate:
    """Open mode's ZAP handler: every NULL connection is let in, but for addresses the
    connection guard is refusing for a while (``refused``)."""

    def __init__(
        self, context: zmq.Context[zmq.Socket[bytes]], refused: Callable[[str], bool]
    ) -> None:
        self._thread = _Gate(context, refused)
        self._thread.start()

    def secure(self, sock: zmq.Socket[bytes]) -> None:
        """Make ``sock`` ask the ZAP handler about each connection (before it binds)."""
        sock.zap_domain = ZAP_DOMAIN

    def stop(self) -> None:
        self._thread.stop()


class KeyAuthenticator:
    """Answers libzmq's ZAP requests for one context, from a KeyRing that can be
    replaced while running (``reload``), and refuses the addresses the connection
    guard is refusing for a while (``refused``)."""

    def __init__(
        self,
        context: zmq.Context[zmq.Socket[bytes]],
        keyring: KeyRing,
        refused: Callable[[str], bool] = lambda address: False,
        key_refused: Callable[[str], bool] = lambda name: False,
        *,
        logins: bool = False,
        login_barred: Callable[[str], bool] = lambda user: False,
    ) -> None:
        """``logins``: an accounts broker, which lets in any key (identity.py);
        ``login_barred``: is this login key's session ended by someone else (its
        connections are refused)."""
        self.keyring = keyring
        self.logins = logins
        self.login_barred = login_barred
        self.banned: frozenset[str] = frozenset()  # lower-case names, replaced whole
        self.refused = 0
        self.key_refused = key_refused
        self.address = "?"  # of the handshake being answered (the ZAP thread sets it)
        self._lock = threading.Lock()
        self._logged_at = -REFUSAL_LOG_SECONDS  # when the last line was logged
        self._unlogged: Counter[str] = Counter()  # why -> refusals not logged yet
        self._addresses: set[str] = set()  # where those came from
        self._thread = _Authenticator(context, self, refused)
        self._thread.start()
        self._thread.configure_curve_callback("*", credentials_provider=self)

    def secure(self, sock: zmq.Socket[bytes]) -> None:
        """Make ``sock`` a CURVE server with the broker's key (before it binds)."""
        sock.curve_server = True
        sock.curve_publickey = self.keyring.public
        sock.curve_secretkey = self.keyring.secret

    def reload(self, keyring: KeyRing) -> None:
        """New connections are checked against ``keyring``; open ones are kept."""
        self.keyring = keyring

    def callback(self, domain: str, key: bytes) -> bool:
        """zmq.auth's question, from its thread: may this Z85 public key connect?"""
        if key in self.keyring.users or self.logins:
            return True
        self._refused("unknown", f"unknown key {key.decode('ascii')}")
        return False

    def is_banned(self, key: bytes) -> bool:
        """From zmq.auth's thread: is this (binary) public key a banned user's?"""
        z85_key = z85.encode(key)
        name = self.keyring.name_of(z85_key)
        if name is None or name.lower() not in self.banned:
            return False
        self._refused("banned", f"{name} is banned")
        return True

    def _refused(self, kind: str, why: str) -> None:
        """Count a refusal; log it at once if nothing was logged lately, else later in
        sum (``report``)."""
        with self._lock:
            self.refused += 1
            now = time.monotonic()
            if now - self._logged_at >= REFUSAL_LOG_SECONDS and not self._unlogged:
                self._logged_at = now
                log.warning("refused a connection from %s: %s", self.address, why)
                return
            self._unlogged[kind] += 1
            if len(self._addresses) < MAX_ADDRESSES_COUNTED:
                self._addresses.add(self.address)

    def report(self, now: float) -> None:
        """The refusals not logged yet, in one line, once per REFUSAL_LOG_SECONDS (the
        broker's heartbeat calls it)."""
        if not self._unlogged or now - self._logged_at < REFUSAL_LOG_SECONDS:
            return
        with self._lock:
            unlogged, self._unlogged = self._unlogged, Counter()
            addresses, self._addresses = self._addresses, set()
            since, self._logged_at = self._logged_at, now
        count = sum(unlogged.values())
        kinds = ", ".join(f"{_KINDS[kind]}: {n:,}" for kind, n in sorted(unlogged.items()))
        many = "+" if len(addresses) >= MAX_ADDRESSES_COUNTED else ""
        log.warning(
            "refused %s handshake(s) from %d%s address(es) in the last %.0f s (%s)",
            f"{count:,}", len(addresses), many, now - since, kinds,
        )  # fmt: skip

    def for_now(self, key: bytes) -> bool:
        """From zmq.auth's thread: is this (binary) key refused for a while (cut)?"""
        z85_key = z85.encode(key)
        name = self.keyring.name_of(z85_key)
        if name is None:
            return self.logins and self.login_barred(login_key_user(z85_key))
        return self.key_refused(name)

    def name_of(self, key: bytes) -> str:
        z85_key = z85.encode(key)
        name = self.keyring.name_of(z85_key)
        if name is None:
            return login_key_user(z85_key) if self.logins else "?"
        return name

    def stop(self) -> None:
        self._thread.stop()


class _Gate(ThreadAuthenticator):
    """zmq.auth's handler, refusing penalised addresses before anything else."""

    def __init__(
        self, context: zmq.Context[zmq.Socket[bytes]], refused: Callable[[str], bool]
    ) -> None:
        super().__init__(context, log=logging.getLogger("zchat.broker.zap"))
        self._address_refused = refused

    async def handle_zap_message(self, msg: list[bytes]) -> None:
        address = msg[3].decode("ascii", "replace") if len(msg) >= 6 else "?"
        if self._address_refused(address):
            self._send_zap_reply(msg[1], REFUSED_FOR_NOW, b"refused for a while")
            return
        self._note_address(address)
        await super().handle_zap_message(msg)

    def _note_address(self, address: str) -> None:
        """The address of the handshake about to be answered."""

    def _send_zap_reply(
        self, request_id: bytes, status_code: bytes, status_text: bytes, user_id: str = ""
    ) -> None:
        """As zmq.auth's, and a connection let in gets its number (CONNECTION_PROPERTY)
        as metadata, which libzmq puts on each of its frames."""
        if status_code != b"200":
            super()._send_zap_reply(request_id, status_code, status_text, user_id)
            return
        name, value = CONNECTION_PROPERTY.encode(), str(next(_serials)).encode()
        metadata = bytes([len(name)]) + name + struct.pack(">I", len(value)) + value
        user = user_id.encode(self.encoding, "replace")
        self.zap_socket.send_multipart(
            [VERSION, request_id, status_code, status_text, user, metadata]
        )


class _Authenticator(_Gate):
    def __init__(
        self,
        context: zmq.Context[zmq.Socket[bytes]],
        keys: KeyAuthenticator,
        refused: Callable[[str], bool],
    ) -> None:
        super().__init__(context, refused)
        self._keys = keys

    def _note_address(self, address: str) -> None:
        self._keys.address = address

    def curve_user_id(self, client_public_key: bytes) -> str:
        return self._keys.name_of(client_public_key)

    async def handle_zap_message(self, msg: list[bytes]) -> None:
        # a key cut a moment ago: refused for now (status 500), before any other check
        if len(msg) == 7 and msg[5] == b"CURVE" and self._keys.for_now(msg[6]):
            self._send_zap_reply(msg[1], REFUSED_FOR_NOW, b"refused for a while")
            return
        await super().handle_zap_message(msg)

    async def _authenticate_curve(self, domain: str, client_key: bytes) -> tuple[bool, bytes]:
        if self._keys.is_banned(client_key):
            return False, b"Banned"
        return await super()._authenticate_curve(domain, client_key)
