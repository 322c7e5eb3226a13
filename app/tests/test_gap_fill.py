"""channels-redis drops group messages silently when a socket's channel is full. The consumer
notices the hole in the sequence numbers and fills it from the reply's Redis stream."""

from __future__ import annotations

import json

from asgiref.sync import async_to_sync
from channels.layers import get_channel_layer

from chat import replystream
from chat.models import Message, conversation_group
from chat.protocol import server_frame
from tests.chatclient import ChatSocket


def test_dropped_frames_are_refilled_from_the_stream(chat: ChatSocket, conversation, redis_admin):
    question = Message.objects.create(conversation=conversation, role="user", content="q")
    reply = Message.objects.create(
        conversation=conversation, role="assistant", reply_to=question, status="generating"
    )
    texts = ["one ", "two ", "three ", "four"]
    frames = [
        server_frame("delta", reply_id=reply.pk, seq=i, text=t) for i, t in enumerate(texts, 1)
    ]
    stream = replystream.stream_key(reply.pk)
    for frame in frames:  # the worker stored all four frames…
        redis_admin["channel_layer"].xadd(stream, {"f": json.dumps(frame)}, id=f"0-{frame['seq']}")

    def deliver(frame: dict) -> None:
        async_to_sync(get_channel_layer().group_send)(
            conversation_group(conversation.id), {"type": replystream.REPLY_EVENT, "frame": frame}
        )

    # …but only the first and the last reached the group: two were dropped on the way.
    deliver(frames[0])
    deliver(frames[3])
    received = [chat.recv(timeout=5) for _ in range(4)]
    assert [f["seq"] for f in received] == [1, 2, 3, 4]
    assert "".join(f["text"] for f in received) == "one two three four"
    # A frame the socket already had is not sent again.
    deliver(frames[3])
    chat.ping()
    assert [f["type"] for f in chat.received[4:]] == ["pong"]
