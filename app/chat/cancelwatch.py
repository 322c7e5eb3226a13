"""Stop signals for every reply an event loop writes, through one shared Redis subscription.

A person's `cancel` sets the reply's cancel key and publishes on a channel of the same name
(`replystream.request_cancel`). Each loop keeps one pub/sub connection subscribed to the
channels of the replies it writes, and once a second reads every watched key in one round
trip, which catches a stop published while the subscription was down (Redis restarting).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging

from redis.asyncio.client import PubSub
from redis.exceptions import RedisError

from chat import replystream
from parley.background import cancel_and_wait
from parley.loop_local import LoopLocal
from parley.redis_clients import channel_redis

logger = logging.getLogger(__name__)

# How often the watched cancel keys are read, the backstop for a missed publish.
BACKSTOP_SECONDS = 1.0


class CancelWatch:
    def __init__(self) -> None:
        self.events: dict[str, asyncio.Event] = {}
        self.pubsub: PubSub | None = None
        self.reader: asyncio.Task[None] | None = None
        # Channels to subscribe to and to leave, sent together by one task (`_sync`): a
        # hundred replies starting at once cost one SUBSCRIBE and one MGET.
        self.joining: set[str] = set()
        self.leaving: set[str] = set()
        self.syncing: asyncio.Task[None] | None = None
        self.lock = asyncio.Lock()

    def watch(self, reply_id: int) -> asyncio.Event:
        """An event set once the reply is asked to stop. The subscription is made in the
        background: a stop asked before it is found by the key read that follows it."""
        channel = replystream.cancel_key(reply_id)
        event = self.events.setdefault(channel, asyncio.Event())
        self.joining.add(channel)
        self._schedule_sync()
        return event

    def forget(self, reply_id: int) -> None:
        channel = replystream.cancel_key(reply_id)
        if self.events.pop(channel, None) is not None:
            self.leaving.add(channel)
            self._schedule_sync()

    def _schedule_sync(self) -> None:
        if self.syncing is None or self.syncing.done():
            self.syncing = asyncio.create_task(self._sync())

    async def _sync(self) -> None:
        while self.joining or self.leaving:
            joining = [channel for channel in self.joining if channel in self.events]
            leaving = [channel for channel in self.leaving if channel not in self.events]
            self.joining.clear()
            self.leaving.clear()
            try:
                async with self.lock:
                    pubsub = self._connection()
                    if joining:
                        await pubsub.subscribe(*joining)
                    if leaving:
                        await pubsub.unsubscribe(*leaving)
                # Subscribed first, then read: a stop sent in between is seen either way.
                await self._read_keys(joining)
            except (RedisError, OSError) as error:
                # Losing Redis is not a stop: the reader subscribes again once it is back.
                logger.warning("The cancel watch could not subscribe (%s)", error)
            if self.events and (self.reader is None or self.reader.done()):
                self.reader = asyncio.create_task(self._read())

    def _connection(self) -> PubSub:
        if self.pubsub is None:
            self.pubsub = channel_redis().pubsub(ignore_subscribe_messages=True)
        return self.pubsub

    async def _read(self) -> None:
        """Set the event of each stop published, and look at every key once a second."""
        backstop_at = asyncio.get_running_loop().time() + BACKSTOP_SECONDS
        while self.events:
            if self.pubsub is None or self.pubsub.connection is None:
                await self._reconnect()  # its subscribe failed: Redis was away
                continue
            try:
                message = await self.pubsub.get_message(timeout=BACKSTOP_SECONDS)
                if message is not None and message.get("type") == "message":
                    event = self.events.get(message["channel"].decode())
                    if event is not None:
                        event.set()
                if asyncio.get_running_loop().time() >= backstop_at:
                    await self._read_keys(list(self.events))
                    backstop_at = asyncio.get_running_loop().time() + BACKSTOP_SECONDS
            except (RedisError, OSError) as error:
                logger.warning("The cancel watch lost Redis (%s); subscribing again", error)
                await self._reconnect()

    async def _read_keys(self, channels: list[str]) -> None:
        if not channels:
            return
        values = await channel_redis().mget(channels)
        for channel, value in zip(channels, values, strict=True):
            event = self.events.get(channel)
            if value is not None and event is not None:
                event.set()

    async def _reconnect(self) -> None:
        await asyncio.sleep(BACKSTOP_SECONDS)
        async with self.lock:
            old, self.pubsub = self.pubsub, None
            if old is not None:
                with contextlib.suppress(RedisError, OSError):
                    await old.aclose()
            with contextlib.suppress(RedisError, OSError):
                if self.events:
                    await self._connection().subscribe(*self.events)

    async def close(self) -> None:
        for task in (self.reader, self.syncing):
            if task is not None:
                await cancel_and_wait(task)
        if self.pubsub is not None:
            with contextlib.suppress(RedisError, OSError):
                await self.pubsub.aclose()


_watches = LoopLocal(CancelWatch, CancelWatch.close)


def cancel_watch() -> CancelWatch:
    """This loop's watch over the stop signals of the replies it writes."""
    return _watches.get()
