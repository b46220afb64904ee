"""Writing a transfer's bytes: all of them, or an error that says so."""

from __future__ import annotations

import errno
import os


def write_all(fd: int, data: bytes | memoryview, offset: int) -> None:
    """Write all of ``data`` at ``offset``. os.pwrite may write less than it is given
    (a disk that fills up): the rest is written, or OSError (ENOSPC) says why not. A
    short write ignored would leave a file that hashes right in memory and wrong on
    disk."""
    view = memoryview(data)
    while view:
        written = os.pwrite(fd, view, offset)
        if written <= 0:
            raise OSError(errno.ENOSPC, "no space left on the device")
        view, offset = view[written:], offset + written
