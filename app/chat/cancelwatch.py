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
        self.lock = asyncio.Lock()

    async def watch(self, reply_id: int) -> asyncio.Event:
        """An event set once the reply is asked to stop (maybe at once: asked already)."""
        channel = replystream.cancel_key(reply_id)
        event = self.events.setdefault(channel, asyncio.Event())
        try:
            async with self.lock:
                pubsub = self._connection()
                await pubsub.subscribe(channel)
            # Subscribed first, then read: a stop sent in between is seen either way.
            if await replystream.cancel_requested(reply_id):
                event.set()
        except (RedisError, OSError) as error:
            # Losing Redis is not a stop: the reader subscribes again once Redis is back.
            logger.warning("Reply %s: could not watch for a stop (%s)", reply_id, error)
        if self.reader is None or self.reader.done():
            self.reader = asyncio.create_task(self._read())
        return event

    async def forget(self, reply_id: int) -> None:
        channel = replystream.cancel_key(reply_id)
        if self.events.pop(channel, None) is None:
            return
        with contextlib.suppress(RedisError, OSError):
            async with self.lock:
                if self.pubsub is not None:
                    await self.pubsub.unsubscribe(channel)

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
                    await self._read_keys()
                    backstop_at = asyncio.get_running_loop().time() + BACKSTOP_SECONDS
            except (RedisError, OSError) as error:
                logger.warning("The cancel watch lost Redis (%s); subscribing again", error)
                await self._reconnect()

    async def _read_keys(self) -> None:
        channels = list(self.events)
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
        if self.reader is not None:
            self.reader.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self.reader
        if self.pubsub is not None:
            with contextlib.suppress(RedisError, OSError):
                await self.pubsub.aclose()


async def _close(watch: CancelWatch) -> None:
    await watch.close()


_watches = LoopLocal(CancelWatch, _close)


def cancel_watch() -> CancelWatch:
    """This loop's watch over the stop signals of the replies it writes."""
    return _watches.get()
