"""The Redis locks on the replies an event loop writes, renewed together in one round trip.

A lock (a token and a TTL) says a live writer has the reply. A redelivered task whose first
delivery still runs finds the lock held and waits; one whose writer was killed finds it
expired after at most REPLY_LOCK_TTL seconds, and so does the reaper, which hands such a reply
to another worker (`chat.jobs.orphaned_replies`). A writer that finds its lock gone (the
channel-layer Redis restarted and kept nothing) takes it again; one that finds another token
there has been replaced and stops.

A token starts with its writer's Celery node name and process id, so a worker restarted under
the name of one that died can release its predecessor's locks at once
(`chat.jobs.replies_of_a_dead_predecessor`).
"""

from __future__ import annotations

import asyncio
import logging
import os
import socket
import time
import uuid
from dataclasses import dataclass, field

from django.conf import settings
from redis.exceptions import RedisError

from chat import replystream
from parley.background import cancel_and_wait
from parley.loop_local import LoopLocal
from parley.redis_clients import channel_redis

logger = logging.getLogger(__name__)

# Returns 1 when the lock is ours (renewed, or taken again after it vanished), 0 when another
# writer holds it.
RENEW = """
local held = redis.call('get', KEYS[1])
if held == ARGV[1] then return redis.call('pexpire', KEYS[1], ARGV[2]) end
if not held then
  redis.call('set', KEYS[1], ARGV[1], 'px', ARGV[2])
  return 1
end
return 0
"""
RELEASE = """
if redis.call('get', KEYS[1]) == ARGV[1] then return redis.call('del', KEYS[1]) end
return 0
"""


_node = f"web@{socket.gethostname()}"


def set_node(name: str) -> None:
    """Name this process's locks after its Celery node (`default@worker1`)."""
    global _node  # noqa: PLW0603  (one name per process)
    _node = name


def node() -> str:
    """This process's Celery node name (`default@worker1`), `web@<host>` outside a worker."""
    return _node


def owner() -> str:
    """What this process's lock tokens start with."""
    return f"{_node} {os.getpid()} "


def owner_of(token: bytes) -> tuple[str, int] | None:
    """The node name and process id a lock token names."""
    node, _, rest = token.decode(errors="replace").partition(" ")
    pid, _, _ = rest.partition(" ")
    return (node, int(pid)) if pid.isdigit() else None


@dataclass
class HeldLock:
    token: str
    # Set when another writer turned out to hold the reply: this one must stop.
    lost: asyncio.Event = field(default_factory=asyncio.Event)


class ReplyLocks:
    def __init__(self) -> None:
        self.held: dict[int, HeldLock] = {}
        self.renewer: asyncio.Task[None] | None = None
        redis = channel_redis()
        self.renew_script = redis.register_script(RENEW)
        self.release_script = redis.register_script(RELEASE)

    @property
    def ttl_ms(self) -> int:
        return settings.REPLY_LOCK_TTL * 1000

    async def acquire(self, reply_id: int, wait: float) -> HeldLock | None:
        """Take the reply's lock, waiting up to `wait` seconds for a holder to let go (None
        then). Redis failing is tried again within that time, then raised."""
        redis = channel_redis()
        name = replystream.lock_key(reply_id)
        token = owner() + uuid.uuid4().hex
        deadline = time.monotonic() + wait
        while True:
            try:
                if await redis.set(name, token, nx=True, px=self.ttl_ms):
                    break
            except (RedisError, OSError) as error:
                if time.monotonic() >= deadline:
                    raise
                logger.warning("Reply %s: could not ask for its lock (%s)", reply_id, error)
            if time.monotonic() >= deadline:
                return None
            await asyncio.sleep(0.25)
        lock = self.held[reply_id] = HeldLock(token)
        if self.renewer is None or self.renewer.done():
            self.renewer = asyncio.create_task(self._renew_all())
        return lock

    async def release(self, reply_id: int) -> None:
        lock = self.held.pop(reply_id, None)
        if lock is not None:
            name = replystream.lock_key(reply_id)
            await self.release_script(keys=[name], args=[lock.token])

    async def _renew_all(self) -> None:
        while self.held:
            await asyncio.sleep(self.ttl_ms / 3000)
            held = list(self.held.items())
            try:
                async with channel_redis().pipeline(transaction=False) as pipe:
                    for reply_id, lock in held:
                        await self.renew_script(
                            keys=[replystream.lock_key(reply_id)],
                            args=[lock.token, self.ttl_ms],
                            client=pipe,
                        )
                    results = await pipe.execute()
            except (RedisError, OSError) as error:
                logger.warning("Could not renew %d reply locks: %s", len(held), error)
                continue
            for (reply_id, lock), result in zip(held, results, strict=True):
                if not result:
                    logger.warning("Reply %s is held by another writer now; stopping", reply_id)
                    lock.lost.set()

    async def close(self) -> None:
        if self.renewer is not None:
            await cancel_and_wait(self.renewer)


_locks = LoopLocal(ReplyLocks, ReplyLocks.close)


def reply_locks() -> ReplyLocks:
    """This loop's locks on the replies it writes."""
    return _locks.get()
