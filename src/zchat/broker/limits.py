"""Flood control: a token bucket per session, and one per owner.

Each session may send ``burst`` requests at once, then ``rate`` a second. What goes
past that is dropped, and the sender is told once per burst (the next line it gets
through resets that). Pings and leaves are never limited.

A session's bucket is not all: leaving and joining again would fill it anew. So all
the sessions of one **owner** draw on a bucket of the owner's too, which outlives them:
in secure mode the owner is the key, and its bucket is the session's limit (one
person's sessions share it); in open mode it is the peer address, and its bucket is
OWNER_FACTOR times the session's (one address may be a whole classroom).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

DEFAULT_RATE = 20.0  # requests a second, sustained
DEFAULT_BURST = 50  # requests at once


@dataclass(frozen=True)
class RateLimit:
    rate: float = DEFAULT_RATE  # 0: no limit
    burst: int = DEFAULT_BURST

    @property
    def unlimited(self) -> bool:
        return self.rate <= 0

    def describe(self) -> str:
        return f"{self.rate:g} lines a second, {self.burst} at once"


# JOINs waiting for their inbox subscription, in all and from one peer address: past
# them the oldest (of that address) is forgotten. A JOIN is at most MAX_FRAME_BYTES.
MAX_PENDING_JOINS = 10_000
MAX_PENDING_JOINS_PER_ADDRESS = 64
# Rooms that did not exist before, made by the joins and enters from one peer address:
# NEW_ROOM_BURST at once, then NEW_ROOM_RATE a second. Each is a row in the history
# file for good, and a tail in each heartbeat while it is busy.
NEW_ROOM_RATE = 1.0
NEW_ROOM_BURST = 64


QUIET_JOINS = 200
# An address's bucket in open mode, in sessions' worth (see above).
OWNER_FACTOR = 4


@dataclass(frozen=True)
class RuleLimits:
    """What the rules bound beyond each session's flood limit (SECURITY.md, "Limits")."""

    pending_joins: int = MAX_PENDING_JOINS
    pending_joins_per_address: int = MAX_PENDING_JOINS_PER_ADDRESS
    new_rooms: RateLimit = RateLimit(NEW_ROOM_RATE, NEW_ROOM_BURST)
    # above this many members, a room's joins and leaves are told once a minute, in sum
    # (a notice each would cost every member a line per arrival: n² for n arrivals);
    # 0: always one each
    quiet_joins: int = QUIET_JOINS


@dataclass
class Bucket:
    tokens: float
    refilled: float  # when tokens was last brought up to date
    told: bool = False  # the sender was told of this burst's drops
    dropped: int = 0  # dropped in this burst

    @classmethod
    def full(cls, limit: RateLimit, now: float) -> Bucket:
        return cls(float(limit.burst), now)

    def take(self, limit: RateLimit, now: float) -> bool:
        """Spend one token if there is one (True); otherwise count a drop (False)."""
        if limit.unlimited:
            return True
        elapsed = max(0.0, now - self.refilled)
        self.tokens = min(float(limit.burst), self.tokens + elapsed * limit.rate)
        self.refilled = now
        if self.tokens >= 1.0:
            self.tokens -= 1.0
            return True
        self.dropped += 1
        return False

    def wait(self, limit: RateLimit) -> float:
        """Seconds until one token is back (as of the last ``take``), rounded up to the
        millisecond: when the next request gets through."""
        if limit.unlimited or self.tokens >= 1.0:
            return 0.0
        return math.ceil((1.0 - self.tokens) / limit.rate * 1000) / 1000

    def end_burst(self) -> int:
        """A line got through after drops: the burst is over. Returns how many were
        dropped in it."""
        dropped, self.dropped, self.told = self.dropped, 0, False
        return dropped


# --- shared files (files.py) ------------------------------------------------------------

DEFAULT_MAX_FILE_SIZE = 100 * 1024 * 1024
DEFAULT_FILES_QUOTA = 2 * 1024 * 1024 * 1024
DEFAULT_TRANSFERS = 4  # per session, uploads and downloads together
DEFAULT_UPLOAD_TIMEOUT = 600.0  # seconds an upload may stand idle before it is deleted


@dataclass(frozen=True)
class FileLimits:
    max_file_size: int = DEFAULT_MAX_FILE_SIZE
    quota: int = DEFAULT_FILES_QUOTA  # bytes stored in all
    transfers: int = DEFAULT_TRANSFERS  # at once, per session
    upload_timeout: float = DEFAULT_UPLOAD_TIMEOUT
