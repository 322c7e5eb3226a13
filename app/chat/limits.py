"""Per-user limits kept in the channel-layer Redis, and the per-socket frame rate limit."""

from __future__ import annotations

import math
import time
import uuid
from dataclasses import dataclass, field

from django.conf import settings
from django.utils import timezone

from parley.redis_clients import channel_redis, key

QUOTA_KEY_TTL = 2 * 24 * 3600


@dataclass
class FrameBucket:
    """A token bucket: `rate` frames a second on average, bursts up to `burst`."""

    rate: float
    burst: int
    tokens: float = field(init=False)
    updated: float = field(init=False)
    last_error_at: float = field(default=0.0, init=False)

    def __post_init__(self) -> None:
        self.tokens = float(self.burst)
        self.updated = time.monotonic()

    def take(self) -> bool:
        now = time.monotonic()
        self.tokens = min(self.burst, self.tokens + (now - self.updated) * self.rate)
        self.updated = now
        if self.tokens >= 1:
            self.tokens -= 1
            return True
        return False

    def should_report(self) -> bool:
        """At most one error frame a second for a flood, so the answer is no flood itself."""
        now = time.monotonic()
        if now - self.last_error_at >= 1:
            self.last_error_at = now
            return True
        return False


async def message_rate_exceeded(user_id: int) -> int:
    """Count one message; return seconds to wait if over the limit, else 0.

    A sliding window (a sorted set of send times), so the limit holds over any window of
    RATE_LIMIT_WINDOW seconds, not only within calendar minutes.
    """
    window = settings.RATE_LIMIT_WINDOW
    now = time.time()
    name = key("ratelimit", "messages", user_id)
    member = f"{now:.6f}:{uuid.uuid4().hex[:8]}"
    redis = channel_redis()
    async with redis.pipeline(transaction=True) as pipe:
        pipe.zremrangebyscore(name, 0, now - window)
        pipe.zadd(name, {member: now})
        pipe.zcard(name)
        pipe.zrange(name, 0, 0, withscores=True)
        pipe.expire(name, window + 1)
        _, _, count, oldest, _ = await pipe.execute()
    if count <= settings.RATE_LIMIT_MESSAGES:
        return 0
    await redis.zrem(name, member)  # a refused message does not use up the allowance
    return max(1, math.ceil(oldest[0][1] + window - now))


def _quota_key(user_id: int) -> str:
    return key("quota", user_id, timezone.now().strftime("%Y%m%d"))


async def tokens_used_today(user_id: int) -> int:
    value = await channel_redis().get(_quota_key(user_id))
    return int(value or 0)


async def add_tokens_used(user_id: int, tokens: int) -> None:
    if tokens <= 0:
        return
    name = _quota_key(user_id)
    redis = channel_redis()
    async with redis.pipeline(transaction=True) as pipe:
        pipe.incrby(name, tokens)
        pipe.expire(name, QUOTA_KEY_TTL)
        await pipe.execute()


async def quota_exhausted(user_id: int) -> bool:
    quota = settings.DAILY_TOKEN_QUOTA
    return quota > 0 and await tokens_used_today(user_id) >= quota
