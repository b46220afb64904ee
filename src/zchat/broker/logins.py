"""Password checks off the poll loop, and the throttle on guessing.

A check costs some 160 ms of a core (passwords.py): in the poll loop, a burst of
logins would hold back every chat line. The Hasher is one thread, at a lower priority
than the loop (as the file port's hashing worker is), fed from a bounded queue: the
loop hands it a Job and goes on; its Verdict comes back through the broker's wake-up
pipe. One thread, so logins never take more than one of the machine's cores, and a
full queue is refused at once ("busy") rather than waited for. A login from the address
its account last logged in from goes first (Hasher).

The Throttle answers guessing. Per account and per peer address, each refused login
makes the next one wait: 1 s after the first, doubling up to 60 s. An address has a few
refusals free first (a classroom behind one NAT mistypes too). A login asked for while
its wait runs is refused at once, unhashed: a guesser from one address costs the broker
almost nothing. A login that succeeds clears its account's wait, not its address's. Checks waiting
count too: one account has one at a time, one address MAX_CHECKS_PER_ADDRESS, so a
burst from one place cannot fill the queue before the first verdict comes back.
"""

from __future__ import annotations

import contextlib
import logging
import math
import os
import threading
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field

from zchat.passwords import hash_password, verify_password, waste_time

log = logging.getLogger("zchat.broker")

MAX_QUEUED = 32  # checks waiting for the thread in each queue (some 5 s of work): "busy"
BUSY_RETRY_SECONDS = 1.0  # a login refused as busy may be asked again after this long
# Checks of one address waiting at once (a classroom behind one NAT logs in at once);
# one account has one at a time. Past either, "login-throttled", asked again shortly.
MAX_CHECKS_PER_ADDRESS = 8
IN_FLIGHT_RETRY_SECONDS = 0.5
HASHER_NICENESS = 5  # below the poll loop, which serves the chat
FIRST_WAIT = 1.0  # seconds after a refused login
LONGEST_WAIT = 60.0
ADDRESS_FREE_FAILURES = 5  # refusals from one address before it waits too
FORGET_SECONDS = 900.0  # a key with no refusal for this long starts afresh
MAX_THROTTLED = 100_000  # keys remembered at most (the oldest go first)


@dataclass(frozen=True)
class Job:
    """``check``: does ``password`` match ``stored`` (None: a name without an account,
    hashed all the same); ``make``: a new account's hash; ``change``: check, then hash
    ``new``."""

    ticket: int
    kind: str
    password: str = field(repr=False)
    stored: str | None = field(default=None, repr=False)
    new: str = field(default="", repr=False)


@dataclass(frozen=True)
class Verdict:
    ticket: int
    ok: bool
    hash: str = field(default="", repr=False)  # make and change: the new hash


class Hasher:
    """The hashing thread. ``submit`` from the loop; ``take`` the verdicts there.

    Two queues, each of ``queued`` jobs: the urgent one is always served first. A login
    from the address its account last logged in from is urgent (so is a logged-in
    session's password change): guessers from elsewhere, however many their
    addresses, fill the other queue only, and the people who come back as usual still
    log in at once."""

    def __init__(self, wake: Callable[[], None], queued: int = MAX_QUEUED) -> None:
        self._wake = wake
        self._queued = queued
        self._urgent: deque[Job] = deque()
        self._normal: deque[Job] = deque()
        self._stopping = False
        self._ready = threading.Condition()
        self._done: deque[Verdict] = deque()
        self.checked = 0  # jobs done, for the stats
        self._thread = threading.Thread(target=self._run, name="zchat-hasher", daemon=True)
        self._thread.start()

    def submit(self, job: Job, urgent: bool = False) -> bool:
        """Queue ``job``; False if its queue is full (the login is refused as busy)."""
        line = self._urgent if urgent else self._normal
        with self._ready:
            if len(line) >= self._queued:
                return False
            line.append(job)
            self._ready.notify()
        return True

    def take(self) -> list[Verdict]:
        done = []
        while self._done:
            done.append(self._done.popleft())
        return done

    def stop(self) -> None:
        with self._ready:  # what waits is dropped: the broker is stopping
            self._stopping = True
            self._urgent.clear()
            self._normal.clear()
            self._ready.notify()
        self._thread.join(timeout=5.0)

    def _next(self) -> Job | None:
        with self._ready:
            while not (self._stopping or self._urgent or self._normal):
                self._ready.wait()
            if self._stopping:
                return None
            return (self._urgent or self._normal).popleft()

    def _run(self) -> None:
        with contextlib.suppress(OSError, AttributeError):  # Linux: a thread's own nice
            os.setpriority(os.PRIO_PROCESS, threading.get_native_id(), HASHER_NICENESS)
        while (job := self._next()) is not None:
            try:
                verdict = _work(job)
            except Exception:  # a bug costs this login, never the thread
                log.exception("a password check failed")
                verdict = Verdict(job.ticket, False)
            self.checked += 1
            self._done.append(verdict)
            self._wake()


def _work(job: Job) -> Verdict:
    if job.kind == "make":
        return Verdict(job.ticket, True, hash_password(job.password))
    if job.stored is None:
        waste_time(job.password)
        return Verdict(job.ticket, False)
    if not verify_password(job.password, job.stored):
        return Verdict(job.ticket, False)
    if job.kind == "change":
        return Verdict(job.ticket, True, hash_password(job.new))
    return Verdict(job.ticket, True)


@dataclass
class _Record:
    failures: int
    until: float  # refused until then
    last: float  # the last refusal


class Throttle:
    """Waits after refused logins, per key: ``account NAME`` and ``address ADDR``."""

    def __init__(self) -> None:
        self._records: dict[str, _Record] = {}

    def wait(self, keys: list[str], now: float) -> float:
        """Seconds until a login with these keys may be checked (0: now)."""
        waits = [record.until - now for key in keys if (record := self._records.get(key))]
        return max([0.0, *waits])

    def failed(self, keys: list[str], now: float) -> None:
        for key in keys:
            record = self._records.pop(key, None) or _Record(0, now, now)
            record.failures += 1
            free = ADDRESS_FREE_FAILURES if key.startswith("address ") else 0
            if record.failures > free:
                doubled = FIRST_WAIT * 2 ** min(record.failures - free - 1, 16)
                record.until = now + min(LONGEST_WAIT, doubled)
            record.last = now
            self._records[key] = record  # last refused, last in order
            if len(self._records) > MAX_THROTTLED:
                del self._records[next(iter(self._records))]

    def succeeded(self, key: str) -> None:
        self._records.pop(key, None)

    def expire(self, now: float) -> None:
        """Forget keys refused last more than FORGET_SECONDS ago (oldest first)."""
        while self._records:
            key, record = next(iter(self._records.items()))
            if now - record.last < FORGET_SECONDS:
                return
            del self._records[key]

    def __len__(self) -> int:
        return len(self._records)


def seconds_text(wait: float) -> str:
    """A wait as a person reads it: whole seconds, at least 1."""
    seconds = max(1, math.ceil(wait))
    return f"{seconds} second{'s' if seconds != 1 else ''}"
