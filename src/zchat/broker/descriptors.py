"""File descriptors: every connection costs the broker one, and so do its sockets, its
history database and the admin socket. Past the process's limit libzmq can accept no
connection (its listener then spins on the refused accept) and nothing else can be
opened. So, as Redis and NATS do, the broker raises its soft limit to the hard one when
it starts, and keeps HEADROOM descriptors for itself: connections past the rest are cut
(guard.py)."""

from __future__ import annotations

import logging
import resource

log = logging.getLogger("zchat.broker")

# Descriptors kept for the broker itself: libzmq's own (a few per socket and I/O
# thread), the history database and its journal, the admin socket and its clients.
HEADROOM = 64
# RLIM_INFINITY as the hard limit: raise to this (Linux refuses more than nr_open).
CEILING = 1 << 20


def raise_open_files_limit() -> int:
    """Raise the soft limit on open files to the hard limit; returns the soft limit now
    in force (logged when it is not what it was)."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    wanted = CEILING if hard == resource.RLIM_INFINITY else hard
    if soft != resource.RLIM_INFINITY and soft < wanted:
        try:
            resource.setrlimit(resource.RLIMIT_NOFILE, (wanted, hard))
        except (ValueError, OSError) as exc:
            log.warning("could not raise the limit on open files from %d: %s", soft, exc)
            return soft
        log.info("raised the limit on open files from %d to %d", soft, wanted)
        return wanted
    return CEILING if soft == resource.RLIM_INFINITY else soft


def connection_budget(open_files: int) -> int:
    """How many connections the broker may hold with ``open_files`` descriptors."""
    return max(1, open_files - HEADROOM)
