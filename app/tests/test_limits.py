"""Per-user message rate limit and daily token quota: error frames with codes, socket stays."""

from __future__ import annotations

import time

from django.conf import settings
from django.utils import timezone

from chat.models import Message
from tests.chatclient import ChatSocket


def test_message_rate_limit(chat: ChatSocket) -> None:
    # Each message waits for its reply: a `send` refused as busy starts no model call and
    # would not count.
    for _ in range(settings.RATE_LIMIT_MESSAGES):
        ack = chat.send_message("quick [fakellm:tokens=1]")
        assert chat.reply_frames(ack["reply_id"])[-1]["type"] == "done"
    client_id = chat.send({"type": "send", "text": "one too many"})
    error = chat.error_for(client_id)
    assert error["code"] == "rate_limited"
    assert "try again in" in error["message"]
    assert Message.objects.filter(role="user").count() == settings.RATE_LIMIT_MESSAGES
    chat.ping()


def _earlier_messages(redis_admin, user, count: int) -> None:
    """Count `count` model calls the user started just now (the limit's sliding window)."""
    now = time.time()
    name = f"parley:ratelimit:messages:{user.pk}"
    redis_admin["channel_layer"].zadd(name, {f"earlier-{i}": now for i in range(count)})
    redis_admin["channel_layer"].expire(name, settings.RATE_LIMIT_WINDOW + 1)


def _cancel_once_streaming(chat: ChatSocket, reply_id: int) -> None:
    chat.recv_until(lambda f: f["type"] == "delta" and f["reply_id"] == reply_id)
    chat.send({"type": "cancel", "reply_id": reply_id})
    assert chat.reply_frames(reply_id)[-1]["status"] == "cancelled"


def test_regenerate_counts_against_the_message_rate_limit(
    chat: ChatSocket, user, redis_admin
) -> None:
    # Stop and regenerate in turns starts a model call each time: they count like messages.
    _earlier_messages(redis_admin, user, settings.RATE_LIMIT_MESSAGES - 2)
    ack = chat.send_message("go on and on [fakellm:tokens=3000 tps=50]")
    _cancel_once_streaming(chat, ack["reply_id"])
    again = chat.ack_for(chat.send({"type": "regenerate"}))  # the last call the limit allows
    _cancel_once_streaming(chat, again["reply_id"])

    client_id = chat.send({"type": "regenerate"})
    assert chat.error_for(client_id)["code"] == "rate_limited"
    replies = Message.objects.filter(role="assistant")
    assert sorted(replies.values_list("pk", flat=True)) == [ack["reply_id"], again["reply_id"]]
    assert replies.get(superseded_at__isnull=True).pk == again["reply_id"]
    chat.ping()


def test_refused_messages_do_not_use_up_the_rate_limit(chat: ChatSocket, user, redis_admin) -> None:
    _earlier_messages(redis_admin, user, settings.RATE_LIMIT_MESSAGES - 2)
    ack = chat.send_message("a long one [fakellm:tokens=3000 tps=50]")
    # Refusals start no model call, so none of them may cost the one call left.
    for frame in (
        {"type": "send", "text": "impatient"},
        {"type": "regenerate"},
        {"type": "send", "text": "impatient"},
        {"type": "regenerate"},
    ):
        assert chat.error_for(chat.send(frame))["code"] == "busy"
    unknown = chat.send({"type": "send", "text": "hi", "model": "no-such-model"})
    assert chat.error_for(unknown)["code"] == "unknown_model"
    _cancel_once_streaming(chat, ack["reply_id"])

    last = chat.send_message("the last one the limit allows")
    chat.reply_frames(last["reply_id"])
    client_id = chat.send({"type": "send", "text": "one too many"})
    assert chat.error_for(client_id)["code"] == "rate_limited"
    assert Message.objects.filter(role="user").count() == 2
    chat.ping()


def test_daily_token_quota(chat: ChatSocket, user, redis_admin) -> None:
    day = timezone.now().strftime("%Y%m%d")
    redis_admin["channel_layer"].set(f"parley:quota:{user.pk}:{day}", 200_000, ex=60)
    client_id = chat.send({"type": "send", "text": "one more?"})
    error = chat.error_for(client_id)
    assert error["code"] == "quota_exceeded"
    assert not Message.objects.exists()
    chat.ping()


def test_replies_count_against_the_quota(chat: ChatSocket, user, redis_admin) -> None:
    ack = chat.send_message("count me")
    chat.reply_frames(ack["reply_id"])
    reply = Message.objects.get(pk=ack["reply_id"])
    day = timezone.now().strftime("%Y%m%d")
    used = int(redis_admin["channel_layer"].get(f"parley:quota:{user.pk}:{day}"))
    assert used == reply.prompt_tokens + reply.completion_tokens
