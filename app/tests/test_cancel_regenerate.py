"""Stop a reply (the model's stream is closed, not only the screen) and regenerate one."""

from __future__ import annotations

import time

from chat.cancelwatch import BACKSTOP_SECONDS
from chat.models import Message
from tests.chatclient import ChatSocket, assert_contiguous, delta_text
from tests.conftest import fake_llm_request
from tests.processes import wait_until
from tests.timing import patience, timing


def test_cancel_stops_the_model_within_a_second(chat: ChatSocket) -> None:
    """Bound: the model's stream is closed within BACKSTOP_SECONDS (1 s) of the stop's ack:
    the web tier has published the stop by then, and the worker's watch reads every stop key
    that often even if the publish were lost."""
    ack = chat.send_message("write a lot [fakellm:tokens=3000 tps=50]")
    reply_id = ack["reply_id"]
    chat.recv_until(lambda f: f["type"] == "delta" and f["reply_id"] == reply_id)
    chat.recv_until(lambda f: f["type"] == "delta" and f["reply_id"] == reply_id)
    cancelled_at = time.time()
    chat.ack_for(chat.send({"type": "cancel", "reply_id": reply_id}))
    acked_at = time.time()

    frames = chat.reply_frames(reply_id)
    done = frames[-1]
    assert done["type"] == "done"
    assert done["status"] == "cancelled"
    assert_contiguous(frames)
    assert done["content"].startswith(delta_text(frames))
    assert done["content"]

    # The fake model saw its client go away promptly, long before the 3000 tokens.
    record = wait_until(
        lambda: next(
            (r for r in fake_llm_request("GET", "/_fakellm/requests")
             if r["outcome"] == "client_disconnected"),
            None,
        ),
        patience(5),
        "the model stream to close",
    )  # fmt: skip
    assert record["ended_at"] - acked_at <= BACKSTOP_SECONDS, timing(
        f"{record['ended_at'] - acked_at:.2f} s from the stop's ack to the stream's close "
        f"({record['ended_at'] - cancelled_at:.2f} s from the stop)",
        f"{BACKSTOP_SECONDS} s",
        "chat.cancelwatch.BACKSTOP_SECONDS",
    )
    assert record["tokens_sent"] < 3000

    reply = Message.objects.get(pk=reply_id)
    assert reply.status == Message.Status.CANCELLED
    assert reply.content == done["content"]
    assert reply.usage_estimated  # the stream ended before the usage chunk
    assert reply.completion_tokens > 0


def test_cancel_of_a_finished_reply_changes_nothing(chat: ChatSocket) -> None:
    ack = chat.send_message("short one")
    done = chat.reply_frames(ack["reply_id"])[-1]
    client_id = chat.send({"type": "cancel", "reply_id": ack["reply_id"]})
    assert chat.ack_for(client_id)["reply_id"] == ack["reply_id"]
    reply = Message.objects.get(pk=ack["reply_id"])
    assert reply.status == Message.Status.COMPLETE
    assert reply.content == done["content"]


def test_cancel_of_someone_elses_reply_is_refused(chat: ChatSocket) -> None:
    client_id = chat.send({"type": "cancel", "reply_id": 987654})
    assert chat.error_for(client_id)["code"] == "not_found"


def test_regenerate_replaces_the_last_reply(chat: ChatSocket, conversation) -> None:
    first = chat.send_message("pick a word")
    old = chat.reply_frames(first["reply_id"])[-1]
    client_id = chat.send({"type": "regenerate", "model": "demo"})
    ack = chat.ack_for(client_id)
    assert ack["replaces"] == first["reply_id"]
    assert ack["message_id"] == first["message_id"]
    new = chat.reply_frames(ack["reply_id"])[-1]
    assert new["type"] == "done"
    assert new["content"] != old["content"]

    live = Message.objects.filter(
        conversation=conversation, role="assistant", superseded_at__isnull=True
    )
    assert list(live.values_list("pk", flat=True)) == [ack["reply_id"]]
    assert Message.objects.get(pk=first["reply_id"]).superseded_at is not None
    assert live.get().reply_to_id == first["message_id"]
    assert Message.objects.filter(conversation=conversation, role="user").count() == 1


def test_regenerate_with_nothing_to_regenerate(chat: ChatSocket) -> None:
    client_id = chat.send({"type": "regenerate"})
    assert chat.error_for(client_id)["code"] == "nothing_to_regenerate"
