"""zchat's one exception tree.

ZchatError                       base of everything zchat raises on purpose
├── ProtocolError                a frame breaks the wire format (the peer's fault);
│                                .code names the rule, for counting
├── InvalidInput (ValueError)    a name, room, text or reason given to us is not
│                                acceptable (the caller's fault); the message names
│                                the value and the limit
├── JoinRefused                  the broker answered the join with a refusal;
│                                .code is the broker's reason ("name-taken", ...)
├── BrokerUnreachable            no answer from the broker within the deadline
├── NotDelivered                 a line could not be handed to the broker (it is
│                                away, or the session is being re-established)
├── ClientClosed                 the client was closed and cannot be used again
├── TransferFailed               a file was refused, cancelled, or did not arrive
│                                whole; .code names why ("too-large", "hash-mismatch", ...)
└── ConfigError                  the broker cannot start as configured
                                 (port in use, bad address)
"""

from __future__ import annotations


class ZchatError(Exception):
    """Base class of every error zchat raises on purpose."""


class ProtocolError(ZchatError):
    """A frame does not follow the wire format described in docs/protocol.md."""

    def __init__(self, code: str, detail: str) -> None:
        super().__init__(detail)
        self.code = code


class InvalidInput(ZchatError, ValueError):
    """A value given by the user or the program is not acceptable."""


class JoinRefused(ZchatError):
    """The broker refused to let this client join."""

    def __init__(self, code: str, detail: str) -> None:
        super().__init__(detail)
        self.code = code


class BrokerUnreachable(ZchatError):
    """The broker did not answer in time."""


class NotDelivered(ZchatError):
    """A line was not handed to the broker; the user must be told. ``reason`` says why."""

    def __init__(self, reason: str) -> None:
        super().__init__(f"not sent: {reason}")
        self.reason = reason


class ClientClosed(ZchatError):
    """The client has been closed."""


class TransferFailed(ZchatError):
    """A file transfer did not end with a complete, checked file."""

    def __init__(self, code: str, detail: str, room: str = "") -> None:
        super().__init__(detail)
        self.code = code
        self.room = room  # "not-in-room": the room the file was shared in


class ConfigError(ZchatError):
    """The broker or client cannot start with this configuration."""
