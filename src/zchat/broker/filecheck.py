"""What the file port's worker thread does: hash an upload's chunks as they land, and
give the verdict on a finished one (whole, its SHA-256 as said, a picture or not).

The poll loop hands chunks over in order (files.py); the worker is one thread, below
the loop's priority, so hashing never slows the chat's lines.
"""

from __future__ import annotations

import contextlib
import hashlib
import logging
import os
import threading
from dataclasses import dataclass, field
from pathlib import Path

from zchat import protocol as p
from zchat.sharing.media import SNIFF_BYTES, sniff

log = logging.getLogger("zchat.broker")

# The hashing worker's nice value: below the poll loop's, which serves the chat.
WORKER_NICENESS = 10
# How much of a finished upload the worker reads at a time to hash it.
HASH_BLOCK = 1024 * 1024


@dataclass
class Hashing:
    """An upload's SHA-256 so far and its first bytes (to tell a picture): made as its
    chunks land, in the worker thread only, in order (the worker is one thread)."""

    digest: hashlib._Hash = field(default_factory=hashlib.sha256)
    head: bytearray = field(default_factory=bytearray)
    failed: str = ""

    def absorb(self, data: bytes | memoryview) -> None:
        self.digest.update(data)  # hashlib lets go of the GIL for blocks this large
        if len(self.head) < SNIFF_BYTES:
            self.head += data[: SNIFF_BYTES - len(self.head)]

    def absorb_file(self, path: Path, length: int) -> None:
        """The first ``length`` bytes of ``path``: what a resumed upload held already."""
        try:
            with path.open("rb") as stream:
                while length > 0 and (block := stream.read(min(HASH_BLOCK, length))):
                    self.absorb(block)
                    length -= len(block)
        except OSError as exc:
            self.failed = f"the broker cannot read the upload: {exc.strerror}"


@dataclass(frozen=True)
class Checked:
    """What the worker found of a finished upload."""

    token: str
    sha256: str
    media: p.SharedFile | None = None  # width, height and media type, if a picture
    problem: str = ""


def behind_the_chat() -> None:
    """The worker thread yields the CPU to the poll loop (Linux: a thread has its own
    nice value): hashing a file must not slow the chat's lines."""
    with contextlib.suppress(OSError, AttributeError):
        os.setpriority(os.PRIO_PROCESS, threading.get_native_id(), WORKER_NICENESS)


def conclude(hashing: Hashing, token: str, sha256: str, size: int) -> Checked:
    """The verdict on a finished upload (in the worker thread, after all its chunks)."""
    try:
        return _verdict(hashing, token, sha256, size)
    except Exception as exc:  # a bug must cost this upload, never the loop's answer
        log.exception("checking an upload failed")
        return Checked(token, sha256, problem=f"the broker failed to check the upload: {exc}")


def _verdict(hashing: Hashing, token: str, sha256: str, size: int) -> Checked:
    if hashing.failed:
        return Checked(token, sha256, problem=hashing.failed)
    found = hashing.digest.hexdigest()
    if (sha256 and found != sha256) or (not sha256 and size):
        return Checked(
            token, found,
            problem=f"the bytes received do not match their SHA-256 ({sha256[:12]}…): not stored",
        )  # fmt: skip
    media = sniff(bytes(hashing.head))
    if media is None:
        return Checked(token, found)
    return Checked(
        token, found, p.SharedFile(0, "-", 0, found, media.media, media.width, media.height)
    )
