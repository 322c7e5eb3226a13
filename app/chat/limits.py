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


class RateLimited(Exception):
    """The user has started RATE_LIMIT_MESSAGES model calls in the last RATE_LIMIT_WINDOW s."""

    def __init__(self, wait: int) -> None:
        super().__init__(f"rate limited for {wait} s")
        self.wait = wait


@dataclass(frozen=True)
class MessageSlot:
    """One model call counted against a user's rate limit, until given back."""

    name: str
    member: str

    async def give_back(self) -> None:
        """Uncount it: what it was taken for started no model call."""
        await channel_redis().zrem(self.name, self.member)


async def take_message_slot(user_id: int) -> MessageSlot:
    """Count one model call (a message or a regeneration); raise RateLimited if over the limit.

    A sliding window (a sorted set of start times), so the limit holds over any window of
    RATE_LIMIT_WINDOW seconds, not only within calendar minutes.
    """
    window = settings.RATE_LIMIT_WINDOW
    now = time.time()
    slot = MessageSlot(key("ratelimit", "messages", user_id), f"{now:.6f}:{uuid.uuid4().hex[:8]}")
    redis = channel_redis()
    async with redis.pipeline(transaction=True) as pipe:
        pipe.zremrangebyscore(slot.name, 0, now - window)
        pipe.zadd(slot.name, {slot.member: now})
        pipe.zcard(slot.name)
        pipe.zrange(slot.name, 0, 0, withscores=True)
        pipe.expire(slot.name, window + 1)
        _, _, count, oldest, _ = await pipe.execute()
    if count <= settings.RATE_LIMIT_MESSAGES:
        return slot
    await slot.give_back()  # a refused message does not use up the allowance
    raise RateLimited(max(1, math.ceil(oldest[0][1] + window - now)))


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
