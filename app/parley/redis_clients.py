"""The async Redis client for the channel-layer instance, and key naming under parley:."""

from __future__ import annotations

import redis.asyncio as aioredis
from django.conf import settings

from parley.loop_local import LoopLocal
from parley.redis_retry import retry_options


def _new_channel_redis() -> aioredis.Redis:
    # A command holds a connection for its round trip: a worker writing hundreds of replies
    # at once would open one per reply in flight (and redis-py refuses past 100). Commands
    # wait for one of a bounded set instead.
    pool = aioredis.BlockingConnectionPool.from_url(
        settings.CHANNEL_LAYER_URL,
        max_connections=settings.REDIS_POOL_SIZE,
        timeout=10,
        socket_connect_timeout=5,
        socket_timeout=10,
        health_check_interval=30,
        **retry_options(),
    )
    return aioredis.Redis.from_pool(pool)


async def _close(client: aioredis.Redis) -> None:
    await client.aclose()


# One client (one connection pool) per event loop: redis.asyncio connections belong to it.
_channel_redis = LoopLocal(_new_channel_redis, _close)


def channel_redis() -> aioredis.Redis:
    """Async client for the channel-layer instance (streams, cancel signals, limits)."""
    return _channel_redis.get()


def key(*parts: object) -> str:
    """Build a key under the parley: prefix the production ACL allows."""
    return settings.KEY_PREFIX + ":".join(str(part) for part in parts)
