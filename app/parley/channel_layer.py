"""The channel layer: channels-redis's pub/sub layer, with each socket's own channel kept local.

A reply's writer puts each frame's PUBLISH in the same MULTI as the frame's XADD
(`group_message`), one round trip and no lock per frame, where `group_send` would be a
second round trip under the layer's one lock per process.

Every frame Parley fans out goes to a conversation's group, and a group costs one PUBLISH per
message here, against about twenty commands in channels-redis's list-based layer (BENCHMARKS.md
finding 4). Nothing is ever sent to one socket's own channel from another process, so that
channel is only a local queue: opening a socket subscribes to nothing but its conversation's
group (once per process), and a Redis outage shows at `group_add`, where the consumer answers
the handshake 503.

Pub/sub delivers at most once: a frame published while a web process's subscription is down
is lost. The reply's Redis stream and the frames' sequence numbers make that good
(PROTOCOL.md, "Order and gaps").
"""

from __future__ import annotations

import asyncio
import uuid
from typing import Any

from channels_redis.pubsub import RedisPubSubChannelLayer


class PubSubChannelLayer(RedisPubSubChannelLayer):
    async def new_channel(self, prefix: str = "specific.") -> str:
        """A channel name with a local queue, subscribed to nothing in Redis."""
        layer = self._get_layer()
        channel = f"{layer.prefix}{prefix}{uuid.uuid4().hex}"
        layer.channels[channel] = asyncio.Queue()
        return channel

    def group_message(self, group: str, message: dict[str, Any]) -> tuple[str, bytes]:
        """The Redis channel and payload `group_send(group, message)` would PUBLISH."""
        return self._get_layer()._get_group_channel_name(group), self.serialize(message)
