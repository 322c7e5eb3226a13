"""How the app's Redis clients retry a command whose connection failed.

Every client the app uses comes from a pool built from a URL (channels-redis's, and ours in
parley.redis_clients), and such pools hand out connections that do not retry at all: redis-py
only retries for clients it builds itself. A pooled connection the server has closed (its idle
`timeout`, a restart) then fails its next command, so after any Redis restart or quiet spell
the first socket opened or frame handled on each web process got HTTP 500 or `unavailable`
(the fleet audit saw both). With these options a command on a dead connection reconnects and
runs again, a few times within about two seconds; a Redis that stays away still fails fast.
"""

from __future__ import annotations

from redis.asyncio.retry import Retry
from redis.backoff import ExponentialWithJitterBackoff
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import TimeoutError as RedisTimeoutError

RETRIES = 3


def retry_options() -> dict[str, object]:
    """Keyword arguments for an asyncio Redis client or connection pool."""
    return {
        "retry": Retry(ExponentialWithJitterBackoff(base=0.05, cap=1.0), RETRIES),
        "retry_on_error": [RedisConnectionError, RedisTimeoutError],
    }
