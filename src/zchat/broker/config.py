"""The broker's configuration, and what its mode means for the operator's log."""

from __future__ import annotations

import socket
from dataclasses import dataclass, field

from zchat.broker.guard import HANDSHAKE_SECONDS, ConnectionLimits
from zchat.broker.limits import DEFAULT_BURST, DEFAULT_RATE, QUIET_JOINS, FileLimits
from zchat.broker.orphans import REJOIN_GRACE_SECONDS
from zchat.broker.store import DEFAULT_RETENTION
from zchat.errors import ConfigError


@dataclass(frozen=True)
class BrokerConfig:
    host: str = "127.0.0.1"
    port: int = 5005  # in-socket; the out-socket is port + 1, files port + 2; 0 picks free ones
    heartbeat_interval: float = 1.0  # seconds between the broker's sys/ heartbeats
    zmtp_heartbeat_ivl: float = 1.0  # ZMTP PING interval on both sockets
    zmtp_heartbeat_timeout: float = 5.0  # a peer silent this long is disconnected
    linger: float = 1.0  # seconds to flush the shutdown notice on close
    handshake_timeout: float = HANDSHAKE_SECONDS  # an unfinished handshake is closed then
    sndhwm: int = 10_000  # per-subscriber queue on the out-socket
    sndbuf: int = 0  # the kernel's send buffer per out-connection, bytes; 0: the system's
    db: str = ":memory:"  # the history database; ":memory:" keeps nothing
    retention: int = DEFAULT_RETENTION  # events kept per room
    rate: float = DEFAULT_RATE  # requests a second per session (0: no limit)
    burst: int = DEFAULT_BURST  # requests at once per session
    keys: str | None = None  # secure mode: the keys folder (keys.py)
    accounts: bool = False  # CURVE for all, and passwords for login keys (login_rules.py)
    allow_register: bool = False  # an accounts broker: people may make their own accounts
    admin_socket: str = ""  # the operator's socket file; "" for admin.default_path(port)
    # seconds the sessions of the previous broker are waited for (orphans.py)
    rejoin_grace: float = REJOIN_GRACE_SECONDS
    # above this many members a room's joins and leaves are told in sum; 0: each one
    quiet_joins: int = QUIET_JOINS
    connection: ConnectionLimits = field(default_factory=ConnectionLimits)  # per connection
    files: str | None = None  # the shared files' folder; None: beside db (files.py)
    file_limits: FileLimits = field(default_factory=FileLimits)

    def check(self) -> None:
        if self.sndhwm < 1:
            raise ConfigError("the send queue must hold at least 1 message (it is never unlimited)")
        if self.rate < 0 or self.burst < 1:
            raise ConfigError("the rate must be 0 (no limit) or more, and the burst at least 1")
        if self.rejoin_grace < 0:
            raise ConfigError("the rejoin grace period must be 0 seconds or more")
        if self.quiet_joins < 0:
            raise ConfigError("the quiet-joins size must be 0 (never quiet) or more")
        files = self.file_limits
        if files.max_file_size < 0 or files.quota < 0 or files.upload_timeout <= 0:
            raise ConfigError(
                "file limits: the largest file and the quota must be 0 bytes or more, "
                "and the upload timeout more than 0 seconds"
            )
        if files.transfers < 1:
            raise ConfigError("at least 1 transfer at a time must be allowed a session")


def warn_if_exposed(config: BrokerConfig) -> str | None:
    """What an open-mode broker on a non-loopback address exposes, or None."""
    if config.keys is not None or config.accounts or _loopback(config.host):
        return None
    return (
        f"open mode on {config.host}: anyone who can reach ports {config.port or 'N'} to "
        f"{config.port + 2 if config.port else 'N+2'} can read every room, join under any "
        "free name, speak and share files, and nothing is encrypted. Use --secure --keys DIR "
        "(see SECURITY.md)"
    )


@dataclass
class Turns:
    """How long the poll loop was busy at a time: the chat waits that long at worst."""

    longest: float = 0.0  # since the start
    recent: float = 0.0  # since the operator last asked (``taken``)
    over_50ms: int = 0

    def note(self, seconds: float) -> None:
        if seconds > self.recent:
            self.recent = seconds
            self.longest = max(self.longest, seconds)
        self.over_50ms += seconds > 0.05

    def taken(self) -> dict[str, float]:
        recent, self.recent = self.recent, 0.0
        return {
            "longest_ms": round(self.longest * 1000, 1),
            "longest_ms_since_last_asked": round(recent * 1000, 1),
            "over_50ms": self.over_50ms,
        }


MODES = {
    "open": "open mode",
    "secure": "secure mode (CURVE)",
    "accounts": "accounts mode (CURVE, passwords)",
}


def mode_of(config: BrokerConfig) -> str:
    """The broker's mode, as its history file keeps it: open, secure or accounts."""
    return "accounts" if config.accounts else "secure" if config.keys is not None else "open"


def public_host(host: str) -> str:
    """The host clients reach a broker at: its own, unless it listens on all of them;
    then the machine's name, if it names more than the loopback, else the address of
    its way out (a UDP socket's, connected to a documentation address: no packet is
    sent), else HOST for the operator to fill in."""
    if host not in ("0.0.0.0", "::", "*", ""):
        return host
    name = socket.getfqdn()
    try:
        if not _loopback(socket.gethostbyname(name)):
            return name
    except OSError:
        pass
    try:
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as probe:
            probe.connect(("192.0.2.1", 9))
            address = str(probe.getsockname()[0])
    except OSError:
        return "HOST"
    return address if not _loopback(address) else "HOST"


def _loopback(host: str) -> bool:
    return host in ("localhost", "::1") or host.startswith("127.")
