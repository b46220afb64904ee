"""``from zchat.aio import AsyncClient``: the asyncio client."""

from zchat.client.aio import AsyncClient

__all__ = ["AsyncClient"]
