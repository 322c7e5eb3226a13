"""The whole WebSocket round trip: send, ack, streamed deltas, done, persisted reply."""

from __future__ import annotations

from django.conf import settings

from chat.models import Message
from tests.chatclient import ChatSocket, assert_contiguous, delta_text
from tests.conftest import fake_llm_request


def test_reply_streams_in_order_and_is_stored(chat: ChatSocket, conversation) -> None:
    ack = chat.send_message("Tell me about sockets")
    reply_id = ack["reply_id"]
    assert ack["model"] == "fake-model"

    frames = chat.reply_frames(reply_id)
    deltas = [f for f in frames if f["type"] == "delta"]
    done = frames[-1]
    assert done["type"] == "done", done
    assert done["status"] == "complete"
    assert_contiguous(frames)
    # No delta carries more than a flush's worth of tokens (how few deltas there are is the
    # business of test_deltas_are_coalesced_and_the_text_is_unchanged).
    sizes = [len(delta["text"].split()) for delta in deltas]
    assert sum(sizes) == 60
    assert max(sizes) <= settings.STREAM_FLUSH_TOKENS
    # The reply text is exactly the model's text, in the deltas, the done frame and the DB.
    assert delta_text(frames) == done["content"]
    assert len(done["content"].split()) == 60
    assert done["usage"]["completion_tokens"] == 60
    assert done["usage"]["prompt_tokens"] > 0
    assert done["usage"]["estimated"] is False

    reply = Message.objects.get(pk=reply_id)
    assert reply.status == Message.Status.COMPLETE
    assert reply.content == done["content"]
    assert reply.completion_tokens == 60
    assert reply.final_seq == done["seq"]
    assert reply.time_to_first_token_ms is not None
    user_message = Message.objects.get(pk=ack["message_id"])
    assert user_message.content == "Tell me about sockets"
    assert reply.reply_to_id == user_message.pk
    conversation.refresh_from_db()
    assert conversation.title == "Tell me about sockets"

    # The model saw the whole conversation through the real openai client path.
    requests = fake_llm_request("GET", "/_fakellm/requests")
    assert [r["outcome"] for r in requests] == ["completed"]
    assert requests[0]["stream"] is True


def test_deltas_are_coalesced_and_the_text_is_unchanged(chat: ChatSocket) -> None:
    """A model sending tokens as fast as it can: the reply reaches the client in a small
    fraction of one frame per token, with exactly the model's text.

    At this pace the flush size, not the clock, closes a delta (tokens arrive far faster than
    PARLEY_STREAM_FLUSH_TOKENS per PARLEY_STREAM_FLUSH_MS), so the bound does not depend on
    timing: a slow, loaded machine only makes deltas fuller. Only pauses of the model's own
    stream longer than the flush window add deltas, and it would take hundreds of them.
    """
    tokens = 2000
    ack = chat.send_message(f"fast [fakellm:tokens={tokens} tps=100000]")
    frames = chat.reply_frames(ack["reply_id"])
    done = frames[-1]
    assert done["type"] == "done", done
    assert_contiguous(frames)
    deltas = [f for f in frames if f["type"] == "delta"]
    sizes = [len(delta["text"].split()) for delta in deltas]
    # The first token goes at once and alone: it is what the reader waits for.
    assert sizes[0] == 1
    assert max(sizes) <= settings.STREAM_FLUSH_TOKENS
    # One frame per token would be 2000; the flush size (16) makes it about 126.
    assert len(deltas) <= tokens // 4, f"{len(deltas)} deltas for {tokens} tokens"
    assert sum(sizes) == tokens
    assert done["usage"]["completion_tokens"] == tokens
    assert delta_text(frames) == done["content"]
    assert Message.objects.get(pk=ack["reply_id"]).content == done["content"]


def test_second_message_carries_history(chat: ChatSocket) -> None:
    first = chat.send_message("first question")
    chat.reply_frames(first["reply_id"])
    second = chat.send_message("second question")
    frames = chat.reply_frames(second["reply_id"])
    assert frames[-1]["type"] == "done"
    assert (
        Message.objects.get(pk=second["reply_id"]).prompt_tokens
        > Message.objects.get(pk=first["reply_id"]).prompt_tokens
    )


def test_demo_provider_is_labelled_and_deterministic(chat: ChatSocket) -> None:
    ack = chat.send_message("hello demo", model="demo")
    done = chat.reply_frames(ack["reply_id"])[-1]
    assert done["type"] == "done"
    assert done["content"].startswith("**Demo provider**")
    assert "<strong>Demo provider</strong>" in done["html"]
    again = chat.send_message("hello demo", model="demo")
    assert chat.reply_frames(again["reply_id"])[-1]["content"] == done["content"]


def test_other_tabs_see_the_turn_and_the_reply(chat: ChatSocket, conversation, cookie) -> None:
    other_tab = ChatSocket(conversation.id, cookie)
    try:
        ack = chat.send_message("seen from two tabs")
        turn = other_tab.recv_until(lambda f: f["type"] == "turn")
        assert turn["message_id"] == ack["message_id"]
        assert turn["text"] == "seen from two tabs"
        frames = other_tab.reply_frames(ack["reply_id"])
        assert_contiguous(frames)
        assert delta_text(frames) == frames[-1]["content"]
    finally:
        other_tab.close()


def test_send_while_a_reply_is_written_is_refused(chat: ChatSocket) -> None:
    ack = chat.send_message("a long one [fakellm:tokens=200 tps=100]")
    client_id = chat.send({"type": "send", "text": "impatient", "model": "fake-model"})
    error = chat.error_for(client_id)
    assert error["code"] == "busy"
    chat.reply_frames(ack["reply_id"])
    assert not Message.objects.filter(content="impatient").exists()
