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


class QuotaExhausted(Exception):
    """The user has used DAILY_TOKEN_QUOTA tokens today (UTC)."""


@dataclass(frozen=True)
class MessageSlot:
    """One model call counted against a user's rate limit, until given back."""

    name: str
    member: str

    async def give_back(self) -> None:
        """Uncount it: what it was taken for started no model call."""
        await channel_redis().zrem(self.name, self.member)


# The quota, then the sliding window (a sorted set of start times, so the limit holds over any
# RATE_LIMIT_WINDOW seconds, not only within calendar minutes), in one round trip. Returns
# {0} when the quota is used up, {1, oldest start} when the window is full, {2} when counted.
ADMIT = """
local quota = tonumber(ARGV[1])
if quota > 0 and tonumber(redis.call('get', KEYS[1]) or '0') >= quota then return {0} end
local now, window = tonumber(ARGV[2]), tonumber(ARGV[3])
redis.call('zremrangebyscore', KEYS[2], 0, now - window)
if redis.call('zcard', KEYS[2]) >= tonumber(ARGV[4]) then
  return {1, redis.call('zrange', KEYS[2], 0, 0, 'withscores')[2]}
end
redis.call('zadd', KEYS[2], now, ARGV[5])
redis.call('expire', KEYS[2], window + 1)
return {2}
"""


async def admit_model_call(user_id: int) -> MessageSlot:
    """Count one model call (a message or a regeneration) against the user's limits.

    Raises QuotaExhausted or RateLimited, counting nothing; both checks are one Redis round
    trip on every message.
    """
    window = settings.RATE_LIMIT_WINDOW
    now = time.time()
    slot = MessageSlot(key("ratelimit", "messages", user_id), f"{now:.6f}:{uuid.uuid4().hex[:8]}")
    redis = channel_redis()
    verdict = await redis.eval(
        ADMIT, 2, _quota_key(user_id), slot.name,
        settings.DAILY_TOKEN_QUOTA, f"{now:.6f}", window, settings.RATE_LIMIT_MESSAGES,
        slot.member,
    )  # fmt: skip
    if verdict[0] == 0:
        raise QuotaExhausted
    if verdict[0] == 1:
        raise RateLimited(max(1, math.ceil(float(verdict[1]) + window - now)))
    return slot


def _quota_key(user_id: int) -> str:
    return key("quota", user_id, timezone.now().strftime("%Y%m%d"))


async def add_tokens_used(user_id: int, tokens: int) -> None:
    if tokens <= 0:
        return
    name = _quota_key(user_id)
    redis = channel_redis()
    async with redis.pipeline(transaction=True) as pipe:
        pipe.incrby(name, tokens)
        pipe.expire(name, QUOTA_KEY_TTL)
        await pipe.execute()
