"""A transfer's progress in words: what the terminal's status line and the commands show."""

from __future__ import annotations

from zchat.sharing.naming import human_size

# Below this many seconds the speed is not told yet: a first chunk's speed says little.
SETTLING_SECONDS = 0.2


def describe(done: int, total: int, elapsed: float) -> str:
    """``1.2 MB of 3.4 MB (35%), 12 MB/s, 0:02 left``."""
    percent = 100 if total == 0 else min(100, done * 100 // total)
    line = f"{human_size(done)} of {human_size(total)} ({percent}%)"
    if elapsed < SETTLING_SECONDS or done == 0:
        return line
    speed = done / elapsed
    line += f", {human_size(int(speed))}/s"
    if done < total:
        line += f", {clock(int((total - done) / speed + 0.999))} left"
    return line


def clock(seconds: int) -> str:
    """``0:07``, ``12:30``, ``1:02:03``."""
    hours, rest = divmod(seconds, 3600)
    minutes, secs = divmod(rest, 60)
    return f"{hours}:{minutes:02d}:{secs:02d}" if hours else f"{minutes}:{secs:02d}"
