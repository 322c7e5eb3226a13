"""A reply's frames, kept in a Redis stream so that any web worker can replay what a client
missed, and fanned out live through the channel layer to the conversation's group.

Stream entry ids are "0-<seq>", so the sequence number is the id and "everything after seq N"
is one XRANGE. The stream expires STREAM_TTL seconds after its last write; the final reply is
in PostgreSQL, and Message.final_seq answers a resume that comes later than that.
"""

from __future__ import annotations

import asyncio
import json
from typing import Any

from channels.layers import get_channel_layer
from django.conf import settings

from chat.models import conversation_group
from chat.protocol import server_frame
from parley.redis_clients import channel_redis, key

# The channel-layer event type that ChatConsumer.reply_frame receives.
REPLY_EVENT = "reply.frame"


def stream_key(reply_id: int) -> str:
    return key("reply", reply_id, "events")


def cancel_key(reply_id: int) -> str:
    """Set (and published on as a pub/sub channel) when the user stops a reply."""
    return key("reply", reply_id, "cancel")


def lock_key(reply_id: int) -> str:
    return key("reply", reply_id, "lock")


async def read_frames(reply_id: int, after_seq: int) -> list[dict[str, Any]]:
    entries = await channel_redis().xrange(stream_key(reply_id), min=f"(0-{after_seq}", max="+")
    return [json.loads(fields[b"f"]) for _entry_id, fields in entries]


async def streamed_text(reply_id: int) -> str:
    """The text a reply's clients have been shown so far: its deltas joined, starting again
    after a reset (the protocol's own rule for a client)."""
    text: list[str] = []
    for frame in await read_frames(reply_id, 0):
        if frame["type"] == "delta":
            if frame.get("reset"):
                text.clear()
            text.append(frame["text"])
    return "".join(text)


async def last_seq(reply_id: int) -> int:
    entries = await channel_redis().xrevrange(stream_key(reply_id), count=1)
    if not entries:
        return 0
    entry_id = entries[0][0].decode()
    return int(entry_id.split("-", 1)[1])


async def discard(reply_id: int) -> None:
    await channel_redis().delete(stream_key(reply_id))


async def request_cancel(reply_id: int) -> None:
    redis = channel_redis()
    async with redis.pipeline(transaction=False) as pipe:
        pipe.set(cancel_key(reply_id), "1", ex=settings.STREAM_TTL)
        pipe.publish(cancel_key(reply_id), "1")
        await pipe.execute()


async def cancel_requested(reply_id: int) -> bool:
    return bool(await channel_redis().exists(cancel_key(reply_id)))


class ReplyPublisher:
    """Numbers a reply's frames; stores and publishes each in one round trip.

    One publisher per running reply; the reply's lock guarantees there is only one writer.
    """

    def __init__(self, reply_id: int, conversation_id: str, start_seq: int) -> None:
        self.reply_id = reply_id
        self.group = conversation_group(conversation_id)
        self.seq = start_seq
        self.layer = get_channel_layer()

    async def publish(self, frame_type: str, **fields: object) -> dict[str, Any]:
        self.seq += 1
        frame = server_frame(frame_type, reply_id=self.reply_id, seq=self.seq, **fields)
        write = asyncio.ensure_future(self._store_and_send(frame))
        try:
            await asyncio.shield(write)
        except asyncio.CancelledError:
            # The reply is being stopped while this frame is on its way, and its number is
            # taken: it lands before the caller stops, or the reply's last frame would follow
            # a hole that nothing can fill.
            await asyncio.wait([write])
            if not write.cancelled():
                # Retrieved, not raised: a Redis failing here fails the reply's end too,
                # which is written next and handled there.
                write.exception()
            raise
        return frame

    async def _store_and_send(self, frame: dict[str, Any]) -> None:
        """Store the frame in the stream and publish it to the group, in one transaction: a
        frame reaches sockets only if a socket that missed it can find it in the stream."""
        key_name = stream_key(self.reply_id)
        channel, payload = self.layer.group_message(
            self.group, {"type": REPLY_EVENT, "frame": frame}
        )
        async with channel_redis().pipeline(transaction=True) as pipe:
            pipe.xadd(key_name, {"f": json.dumps(frame)}, id=f"0-{frame['seq']}")
            pipe.expire(key_name, settings.STREAM_TTL)
            # Pub/sub delivers at most once; the sequence numbers let the consumer (and the
            # client) notice a frame that did not arrive and fill the gap from the stream.
            pipe.publish(channel, payload)
            await pipe.execute()
