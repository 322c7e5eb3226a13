"""How the app's Redis clients retry a command whose connection failed.

Pools built from a URL hand out connections that never retry, so a connection Redis had closed
(idle timeout, restart) failed the next request. With these options a command on a dead
connection reconnects and runs again, a few times within about two seconds; a Redis that stays
away still fails fast. Why: docs/decisions/0004-redis-commands-retry-on-a-dead-connection.md.
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
