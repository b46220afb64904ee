"""What the broker can learn of one of libzmq's connections from its descriptor, and
the one thing it does to one: its TCP peer, the bytes the peer acknowledged, and
``shut``, the cut. The descriptors stay libzmq's: nothing here closes one. (What a
frame tells of its connection is in frames.py.)
"""

from __future__ import annotations

import contextlib
import socket
import struct
from collections.abc import Iterator

# struct tcp_info (linux/tcp.h): tcpi_bytes_acked is the u64 at offset 120.
_TCP_INFO_BYTES = 136
_BYTES_ACKED = struct.Struct("=Q")
_BYTES_ACKED_AT = 120


def shut(fd: int) -> None:
    """``shutdown(2)`` both ways on libzmq's descriptor ``fd``: libzmq sees the
    connection end as if its peer had closed it, and closes the descriptor itself."""
    with contextlib.suppress(OSError), _borrowed(fd) as sock:
        sock.shutdown(socket.SHUT_RDWR)


@contextlib.contextmanager
def _borrowed(fd: int) -> Iterator[socket.socket]:
    """A socket object for libzmq's descriptor ``fd``, given back (never closed) after;
    OSError if ``fd`` is not a socket."""
    sock = socket.socket(fileno=fd)
    try:
        yield sock
    finally:
        sock.detach()  # the descriptor stays libzmq's


def peer_of(fd: int) -> tuple[str, int] | None:
    """The TCP peer of ``fd`` (ip, port), or None if it is not a connected TCP socket."""
    try:
        with _borrowed(fd) as sock:
            peer = sock.getpeername()
    except OSError:
        return None
    return (str(peer[0]), int(peer[1])) if isinstance(peer, tuple) else None


def bytes_acked(fd: int) -> int | None:
    """How many bytes the peer of ``fd`` has acknowledged (Linux TCP_INFO), or None."""
    tcp_info = getattr(socket, "TCP_INFO", None)
    if tcp_info is None:
        return None
    try:
        with _borrowed(fd) as sock:
            info = sock.getsockopt(socket.IPPROTO_TCP, tcp_info, _TCP_INFO_BYTES)
    except OSError:
        return None
    if len(info) < _BYTES_ACKED_AT + _BYTES_ACKED.size:
        return None
    return int(_BYTES_ACKED.unpack_from(info, _BYTES_ACKED_AT)[0])
