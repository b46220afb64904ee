"""`zchat admin reload`: the keys folder read again, off the broker's poll loop.

A keys folder may hold thousands of files, on a slow disk: reading and checking them
must not hold up the chat. So a reload reads the folder in a thread of its own
(``start``), which wakes the poll loop when it is done; the loop then takes the result
(``take``) and puts it in place in one step, between two batches of frames (the ZAP
handler's keys, the rules' policy, and the sessions of withdrawn keys ended together).
Until then the broker goes on with the keys it had.

One reload runs at a time: ``start`` refuses another while one is under way. The
thread touches nothing of the broker's; it only reads files (``load``, injected so that
tests can hold it).
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from zchat.errors import ConfigError
from zchat.keys import KeyRing, load_keyring

log = logging.getLogger("zchat.broker")

LoadKeys = Callable[[str | Path], KeyRing]


@dataclass(frozen=True)
class Reloaded:
    """A finished reload: for whom (the admin request's envelope), and the keys read,
    or why they were refused."""

    asker: list[bytes]
    keyring: KeyRing | None
    error: str = ""


class KeyReload:
    """Reads ``folder`` on request, in a thread; ``wake`` (from that thread) tells the
    poll loop a result is there to ``take``."""

    def __init__(
        self, folder: str, wake: Callable[[], None], load: LoadKeys = load_keyring
    ) -> None:
        self.folder = folder
        self._wake = wake
        self._load = load
        self._asker: list[bytes] | None = None  # set while a reload is under way
        self._done: Reloaded | None = None
        self._lock = threading.Lock()

    def start(self, asker: list[bytes]) -> bool:
        """Begin reading the folder for ``asker``; False if a reload is under way."""
        if self._asker is not None:
            return False
        self._asker = asker
        threading.Thread(target=self._read, args=(asker,), name="key-reload", daemon=True).start()
        return True

    def _read(self, asker: list[bytes]) -> None:
        try:
            done = Reloaded(asker, self._load(self.folder))
        except ConfigError as exc:
            done = Reloaded(asker, None, str(exc))
        except Exception as exc:  # a bug must not leave the reload under way for ever
            log.exception("reading the keys folder failed")
            done = Reloaded(asker, None, f"the broker failed to read the keys: {exc!r}")
        with self._lock:
            self._done = done
        self._wake()

    def take(self) -> Reloaded | None:
        """The finished reload, once (the poll loop's); None if none has finished."""
        with self._lock:
            done, self._done = self._done, None
        if done is not None:
            self._asker = None
        return done
