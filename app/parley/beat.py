"""A django-celery-beat scheduler that only sends tasks while it holds a leader lock.

django-celery-beat has no lock of its own, so a second Beat started by mistake would send
every periodic task twice. This scheduler keeps a Redis key on the broker instance
(parley:beat:leader, TTL PARLEY_BEAT_LOCK_TTL) that it renews on every tick; a Beat that does
not hold it sleeps and tries again, and takes over within one TTL if the leader dies.
"""

from __future__ import annotations

import logging
import os
import socket
import uuid

import redis
from django.conf import settings
from django_celery_beat.schedulers import DatabaseScheduler, ModelEntry

logger = logging.getLogger(__name__)

LOCK_KEY = "parley:beat:leader"
# Set the key only if it is ours (renew) or absent (take over); never steal a live lock.
_ACQUIRE_OR_RENEW = """
local current = redis.call('get', KEYS[1])
if current == ARGV[1] then
    return redis.call('pexpire', KEYS[1], ARGV[2])
elseif not current then
    return redis.call('set', KEYS[1], ARGV[1], 'PX', ARGV[2]) and 1 or 0
end
return 0
"""
_RELEASE = """
if redis.call('get', KEYS[1]) == ARGV[1] then return redis.call('del', KEYS[1]) end
return 0
"""


class LockedDatabaseScheduler(DatabaseScheduler):
    def __init__(self, *args: object, **kwargs: object) -> None:
        self.lock_token = f"{socket.gethostname()}:{os.getpid()}:{uuid.uuid4().hex[:8]}"
        self.lock_ttl_ms = settings.BEAT_LOCK_TTL * 1000
        self.lock_client = redis.Redis.from_url(
            settings.CELERY_BROKER_URL, socket_connect_timeout=5, socket_timeout=5
        )
        self.is_leader = False
        super().__init__(*args, **kwargs)

    def _hold_lock(self) -> bool:
        try:
            held = bool(
                self.lock_client.eval(
                    _ACQUIRE_OR_RENEW, 1, LOCK_KEY, self.lock_token, self.lock_ttl_ms
                )
            )
        except redis.RedisError as error:
            # Without Redis we cannot know who leads: sending nothing is the safe side.
            logger.warning("Beat cannot reach the broker Redis for its lock: %s", error)
            held = False
        if held != self.is_leader:
            logger.warning(
                "Beat %s %s the leader lock", self.lock_token, "took" if held else "lost"
            )
            if held:
                # Reread every entry's last run from the database: the previous leader ran
                # them since this process loaded its copy (beat_sync_every=1 keeps it current).
                # The heap is rebuilt from that too: one left from an earlier lead is stale.
                self._initial_read = True
                self._heap = None
        self.is_leader = held
        return held

    def reserve(self, entry: ModelEntry) -> ModelEntry:
        new_entry = super().reserve(entry)
        # django-celery-beat leaves the schedule holding the entry as it was before this run
        # (Celery's own scheduler replaces it). When a change it notices makes it rebuild the
        # heap from the schedule on the next tick, that stale entry is due again and the task
        # is sent twice: seen with two Beats starting together, 80 ms apart.
        self._schedule[new_entry.name] = new_entry
        return new_entry

    def tick(self, *args: object, **kwargs: object) -> float:
        if not self._hold_lock():
            # Try again well before a dead leader's lock could expire.
            return max(1.0, settings.BEAT_LOCK_TTL / 3)
        interval = super().tick(*args, **kwargs)
        return min(interval, max(1.0, settings.BEAT_LOCK_TTL / 3))

    def close(self) -> None:
        try:
            if self.is_leader:
                self.lock_client.eval(_RELEASE, 1, LOCK_KEY, self.lock_token)
        except redis.RedisError:
            logger.warning("Beat could not release its lock; it expires by itself")
        finally:
            super().close()
