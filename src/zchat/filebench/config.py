"""What a file benchmark runs, and the targets it is held to. Light to import: the CLI
reads its defaults from here."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

MIB = 1024 * 1024
# The bytes each baseline reads, sends and asks for at a time: zchat's chunk.
BLOCK_BYTES = 256 * 1024
# Chunks the bare pyzmq receiver keeps asked for: zchat's window.
CREDIT = 8

# The targets. zchat's MB/s over each baseline's, at least:
BARE_SHARE = 0.5
TCP_SHARE = 0.25
# The most the broker's and a client's RSS may grow while a file moves.
RSS_GROWTH_MIB = 64.0
# A chat line's p50 latency during a transfer over its quiet p50, at most.
LATENCY_RATIO = 2.0


@dataclass(frozen=True)
class FileBenchConfig:
    size_mib: int = 256
    reps: int = 1
    host: str = "127.0.0.1"
    folder: Path | None = None  # where the files go; None: a temporary folder on disk
    quiet_seconds: float = 3.0  # of chat before the transfers: the quiet latency
    line_every: float = 0.05  # seconds between the chatting client's lines
    timeout: float = 600.0  # seconds any one transfer may take, at most

    @property
    def size(self) -> int:
        return self.size_mib * MIB
