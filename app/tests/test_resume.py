"""Reconnect mid-reply and resume from the last sequence number: no duplicate, no gap."""

from __future__ import annotations

from chat.models import Message
from tests.chatclient import ChatSocket, assert_contiguous, delta_text


def test_reconnect_resumes_without_duplicate_or_gap(stack, conversation, cookie) -> None:
    first = ChatSocket(conversation.id, cookie)
    ack = first.send_message("a long answer please [fakellm:tokens=400 tps=150]")
    reply_id = ack["reply_id"]
    before = []
    while len(before) < 3:
        frame = first.recv_until(lambda f: f.get("reply_id") == reply_id and "seq" in f)
        before.append(frame)
    first.close()  # a flaky phone: the socket is gone mid-reply
    last_seq = before[-1]["seq"]

    second = ChatSocket(conversation.id, cookie, query=f"?resume={reply_id}:{last_seq}")
    try:
        after = second.reply_frames(reply_id)
    finally:
        second.close()

    assert after[0]["seq"] == last_seq + 1
    frames = before + after
    assert_contiguous(frames)
    done = frames[-1]
    assert done["type"] == "done" and done["status"] == "complete"
    assert delta_text(frames) == done["content"]
    assert Message.objects.get(pk=reply_id).content == done["content"]


def test_resume_frame_replays_missed_frames(chat: ChatSocket) -> None:
    ack = chat.send_message("replay me")
    frames = chat.reply_frames(ack["reply_id"])
    chat.send({"type": "resume", "reply_id": ack["reply_id"], "after_seq": 2})
    replayed = [chat.recv_until(lambda f: f.get("reply_id") == ack["reply_id"])
                for _ in range(len(frames) - 2)]  # fmt: skip
    assert replayed == frames[2:]


def test_resume_after_the_stream_expired_comes_from_the_database(
    chat: ChatSocket, redis_admin
) -> None:
    ack = chat.send_message("keep me")
    done = chat.reply_frames(ack["reply_id"])[-1]
    redis_admin["channel_layer"].delete(f"parley:reply:{ack['reply_id']}:events")
    chat.send({"type": "resume", "reply_id": ack["reply_id"], "after_seq": 0})
    replayed = chat.recv_until(lambda f: f.get("reply_id") == ack["reply_id"])
    assert replayed["type"] == "done"
    assert replayed["seq"] == done["seq"]
    assert replayed["content"] == done["content"]


def test_a_tab_opened_mid_reply_gets_the_whole_reply(stack, conversation, cookie) -> None:
    writer = ChatSocket(conversation.id, cookie)
    try:
        # Slow enough that the reply is still being written when the second tab connects.
        ack = writer.send_message("a new tab joins [fakellm:tokens=150 tps=30]")
        writer.recv_until(lambda f: f["type"] == "delta")
        writer.recv_until(lambda f: f["type"] == "delta")
        late = ChatSocket(conversation.id, cookie)
        try:
            frames = late.reply_frames(ack["reply_id"])
        finally:
            late.close()
        assert_contiguous(frames)
        assert delta_text(frames) == frames[-1]["content"]
    finally:
        writer.close()
