"""The async Redis client for the channel-layer instance, and key naming under parley:.

redis.asyncio clients belong to the event loop that created their connections. Web workers
keep one loop for their life, while a Celery task runs each reply in its own asyncio.run(),
so async clients are cached per loop and closed with it.
"""

from __future__ import annotations

import asyncio
import weakref

import redis.asyncio as aioredis
from django.conf import settings

from parley.redis_retry import retry_options

_async_clients: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, aioredis.Redis] = (
    weakref.WeakKeyDictionary()
)


def channel_redis() -> aioredis.Redis:
    """Async client for the channel-layer instance (streams, cancel signals, limits)."""
    loop = asyncio.get_running_loop()
    client = _async_clients.get(loop)
    if client is None:
        client = aioredis.Redis.from_url(
            settings.CHANNEL_LAYER_URL,
            socket_connect_timeout=5,
            socket_timeout=10,
            health_check_interval=30,
            **retry_options(),
        )
        _async_clients[loop] = client
    return client


async def close_channel_redis() -> None:
    """Close this loop's client; call before a short-lived loop ends."""
    client = _async_clients.pop(asyncio.get_running_loop(), None)
    if client is not None:
        await client.aclose()


def key(*parts: object) -> str:
    """Build a key under the parley: prefix the production ACL allows."""
    return settings.KEY_PREFIX + ":".join(str(part) for part in parts)
