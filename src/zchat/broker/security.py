"""The broker's ZAP handlers. Secure mode: CURVE on both broker sockets, and a ZAP
handler that knows the keys. Open mode: a ZAP handler that lets every connection in
but those from addresses the connection guard (guard.py) cut a moment ago.

The ZAP handler is pyzmq's ``zmq.auth`` ThreadAuthenticator, told two things: which
public keys may connect (the keys folder's users) and which name each one has. libzmq
then refuses unknown keys during the handshake, and stamps every frame a known key
sends with its name as the ``User-Id`` property, which the broker reads instead of
trusting anything the frame says.

A banned user's key is refused too, so a ban also stops them reading the rooms. The
ban itself ends the session at once (a ``kicked`` frame that says why); connections
the key made before it (a listener) stay until they drop, and none are let in again.
The refusal is ZAP status 400 like an unknown key's, the only one a client is told
of (a 300 hangs up in silence), so a client cannot tell the two apart.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable

import zmq
from zmq.auth.thread import ThreadAuthenticator
from zmq.utils import z85

from zchat.keys import KeyRing

log = logging.getLogger("zchat.broker")

REFUSAL_LOG_SECONDS = 10.0  # at most one log line per refused key in this long


ZAP_DOMAIN = b"zchat"  # open mode: set on the broker's sockets so that libzmq asks ZAP


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
    ) -> None:
        self.keyring = keyring
        self.banned: frozenset[str] = frozenset()  # lower-case names, replaced whole
        self.refused = 0
        self._lock = threading.Lock()
        self._logged: dict[bytes, float] = {}
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
        if key in self.keyring.users:
            return True
        self._refused(key, f"unknown key {key.decode('ascii')}")
        return False

    def is_banned(self, key: bytes) -> bool:
        """From zmq.auth's thread: is this (binary) public key a banned user's?"""
        z85_key = z85.encode(key)
        name = self.keyring.name_of(z85_key)
        if name is None or name.lower() not in self.banned:
            return False
        self._refused(z85_key, f"{name} is banned")
        return True

    def _refused(self, key: bytes, why: str) -> None:
        with self._lock:
            self.refused += 1
            now = time.monotonic()
            if now - self._logged.get(key, -REFUSAL_LOG_SECONDS) >= REFUSAL_LOG_SECONDS:
                if len(self._logged) > 1000:
                    self._logged.clear()
                self._logged[key] = now
                log.warning("refused a connection: %s", why)

    def name_of(self, key: bytes) -> str:
        return self.keyring.name_of(z85.encode(key)) or "?"

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
        if len(msg) >= 6 and self._address_refused(msg[3].decode("ascii", "replace")):
            self._send_zap_reply(msg[1], b"400", b"refused for a while")
            return
        await super().handle_zap_message(msg)


class _Authenticator(_Gate):
    def __init__(
        self,
        context: zmq.Context[zmq.Socket[bytes]],
        keys: KeyAuthenticator,
        refused: Callable[[str], bool],
    ) -> None:
        super().__init__(context, refused)
        self._keys = keys

    def curve_user_id(self, client_public_key: bytes) -> str:
        return self._keys.name_of(client_public_key)

    async def _authenticate_curve(self, domain: str, client_key: bytes) -> tuple[bool, bytes]:
        if self._keys.is_banned(client_key):
            return False, b"Banned"
        return await super()._authenticate_curve(domain, client_key)
