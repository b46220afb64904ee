"""Secure mode: CURVE on both broker sockets, and a ZAP handler that knows the keys.

The ZAP handler is pyzmq's ``zmq.auth`` ThreadAuthenticator, told two things: which
public keys may connect (the keys folder's users) and which name each one has. libzmq
then refuses unknown keys during the handshake, and stamps every frame a known key
sends with its name as the ``User-Id`` property, which the broker reads instead of
trusting anything the frame says.
"""

from __future__ import annotations

import logging
import threading
import time

import zmq
from zmq.auth.thread import ThreadAuthenticator
from zmq.utils import z85

from zchat.keys import KeyRing

log = logging.getLogger("zchat.broker")

REFUSAL_LOG_SECONDS = 10.0  # at most one log line per refused key in this long


class KeyAuthenticator:
    """Answers libzmq's ZAP requests for one context, from a KeyRing that can be
    replaced while running (``reload``)."""

    def __init__(self, context: zmq.Context[zmq.Socket[bytes]], keyring: KeyRing) -> None:
        self.keyring = keyring
        self.refused = 0
        self._lock = threading.Lock()
        self._logged: dict[bytes, float] = {}
        self._thread = _Authenticator(context, self)
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
        with self._lock:
            self.refused += 1
            now = time.monotonic()
            if now - self._logged.get(key, -REFUSAL_LOG_SECONDS) >= REFUSAL_LOG_SECONDS:
                if len(self._logged) > 1000:
                    self._logged.clear()
                self._logged[key] = now
                log.warning("refused a connection: unknown key %s", key.decode("ascii"))
        return False

    def name_of(self, key: bytes) -> str:
        return self.keyring.name_of(z85.encode(key)) or "?"

    def stop(self) -> None:
        self._thread.stop()


class _Authenticator(ThreadAuthenticator):
    def __init__(self, context: zmq.Context[zmq.Socket[bytes]], keys: KeyAuthenticator) -> None:
        super().__init__(context, log=logging.getLogger("zchat.broker.zap"))
        self._keys = keys

    def curve_user_id(self, client_public_key: bytes) -> str:
        return self._keys.name_of(client_public_key)
