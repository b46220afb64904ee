"""zchat: a group chat on ZeroMQ. ``from zchat import Client`` for bots."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

__version__ = "0.1.0"
__all__ = ["Client", "Members", "Message", "RoomInfo", "__version__"]

if TYPE_CHECKING:
    from zchat.client.message import Members, Message, RoomInfo
    from zchat.client.sync import Client


def __getattr__(name: str) -> Any:
    # imported on first use, so that `zchat --help` does not load zmq
    if name == "Client":
        from zchat.client.sync import Client

        return Client
    if name in ("Message", "Members", "RoomInfo"):
        from zchat.client import message

        return getattr(message, name)
    raise AttributeError(f"module 'zchat' has no attribute {name!r}")
