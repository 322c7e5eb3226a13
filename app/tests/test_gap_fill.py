"""channels-redis drops group messages silently when a socket's channel is full. The consumer
notices the hole in the sequence numbers and fills it from the reply's Redis stream; a reply
that goes silent before its end is looked up again, in its stream or in the database."""

from __future__ import annotations

import asyncio
import contextlib
import json
import time

from asgiref.sync import async_to_sync
from channels.layers import get_channel_layer
from django.conf import settings

from chat import replystream
from chat.models import Message, conversation_group
from chat.protocol import server_frame
from parley.loop_local import close_loop_locals
from tests.chatclient import ChatSocket
from tests.timing import patience, timing


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


def store(redis_admin, frames: list[dict]) -> None:
    stream = replystream.stream_key(frames[0]["reply_id"])
    for frame in frames:
        redis_admin["channel_layer"].xadd(stream, {"f": json.dumps(frame)}, id=f"0-{frame['seq']}")


def deliver(conversation, event: dict) -> None:
    async_to_sync(get_channel_layer().group_send)(conversation_group(conversation.id), event)


def new_reply(conversation, **fields) -> Message:
    question = Message.objects.create(conversation=conversation, role="user", content="q")
    return Message.objects.create(
        conversation=conversation, role="assistant", reply_to=question, **fields
    )


def test_a_lost_end_is_recovered_from_the_stream(chat: ChatSocket, conversation, redis_admin):
    reply = new_reply(conversation, status="generating")
    frames = [
        server_frame("delta", reply_id=reply.pk, seq=1, text="one "),
        server_frame("delta", reply_id=reply.pk, seq=2, text="two"),
        server_frame("done", reply_id=reply.pk, seq=3, status="complete", content="one two"),
    ]
    store(redis_admin, frames)
    # Only the first frame reached the group; the rest, done included, was dropped, so no
    # later frame will ever show the gap.
    delivered = time.monotonic()
    deliver(conversation, {"type": replystream.REPLY_EVENT, "frame": frames[0]})
    assert chat.recv(timeout=patience(5)) == frames[0]
    assert [chat.recv(timeout=patience(10)) for _ in range(2)] == frames[1:]
    # After the silence (PARLEY_STREAM_RECOVER_AFTER), not at once: the consumer got the
    # first frame after it was delivered, so the rest cannot come sooner than that after.
    took, silence = time.monotonic() - delivered, settings.STREAM_RECOVER_AFTER
    assert took >= silence, timing(
        f"{took:.2f} s from delivery", f"at least {silence:g} s", "PARLEY_STREAM_RECOVER_AFTER"
    )
    chat.ping()


def test_a_lost_end_is_recovered_from_the_database(
    chat: ChatSocket, conversation, redis_admin
) -> None:
    reply = new_reply(conversation, status="generating")
    first = server_frame("delta", reply_id=reply.pk, seq=1, text="stored ")
    store(redis_admin, [first])
    deliver(conversation, {"type": replystream.REPLY_EVENT, "frame": first})
    assert chat.recv(timeout=5) == first
    # The worker ended the reply, but its last frames never reached Redis (nor this socket).
    Message.objects.filter(pk=reply.pk).update(
        status="complete", content="stored **end**", final_seq=4, prompt_tokens=7,
        completion_tokens=3,
    )  # fmt: skip
    done = chat.recv(timeout=10)
    assert (done["type"], done["seq"], done["status"], done["content"]) == (
        "done", 4, "complete", "stored **end**",
    )  # fmt: skip
    assert "<strong>end</strong>" in done["html"]
    assert done["usage"] == {"prompt_tokens": 7, "completion_tokens": 3, "estimated": False}
    chat.ping()
    assert [f["type"] for f in chat.received[-1:]] == ["pong"]


def test_a_reply_whose_every_frame_was_lost_still_arrives(
    chat: ChatSocket, conversation, redis_admin
) -> None:
    # Stored without its post_save signal, which would queue a real generation.
    question = Message.objects.create(conversation=conversation, role="user", content="q")
    [reply] = Message.objects.bulk_create(
        [Message(conversation=conversation, role="assistant", reply_to=question, status="pending")]
    )
    turn = server_frame("turn", message_id=reply.reply_to_id, reply_id=reply.pk, text="q",
                        model="fake-model", replaces=None)  # fmt: skip
    deliver(conversation, {"type": "turn.frame", "frame": turn})
    assert chat.recv(timeout=5) == turn
    # Still queued: looking it up finds nothing to send, and nothing is sent.
    time.sleep(2.5)
    chat.ping()
    assert chat.received[-1]["type"] == "pong"
    frames = [
        server_frame("delta", reply_id=reply.pk, seq=1, text="late "),
        server_frame("done", reply_id=reply.pk, seq=2, status="complete", content="late"),
    ]
    store(redis_admin, frames)  # written, and every group message lost
    assert [chat.recv(timeout=15) for _ in range(2)] == frames


def test_a_frame_on_its_way_when_the_reply_is_stopped_still_lands(
    chat: ChatSocket, conversation, redis_admin
) -> None:
    """A stop cancels the streaming task wherever it is, even between numbering a delta and
    storing it. The delta must land: the reply's end takes the next number, and a hole
    before it is one no stream can fill."""
    reply = new_reply(conversation, status="generating")

    async def stop_while_sending() -> None:
        publisher = replystream.ReplyPublisher(reply.pk, str(conversation.id), 0)
        # This loop's first Redis command: the publish is still connecting when stopped.
        sending = asyncio.ensure_future(publisher.publish("delta", text="cut off"))
        await asyncio.sleep(0)
        sending.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await sending
        assert sending.cancelled()  # the stop still reaches the streaming task
        await publisher.publish("done", status="cancelled", content="cut off", html="")
        await close_loop_locals()

    asyncio.run(stop_while_sending())
    stream = redis_admin["channel_layer"].xrange(replystream.stream_key(reply.pk))
    assert [json.loads(fields[b"f"])["seq"] for _, fields in stream] == [1, 2]
    assert [chat.recv(timeout=5)["type"] for _ in range(2)] == ["delta", "done"]
