"""Per-user message rate limit and daily token quota: error frames with codes, socket stays."""

from __future__ import annotations

import time

from django.utils import timezone

from chat.models import Message
from tests.chatclient import ChatSocket


def test_message_rate_limit(chat: ChatSocket) -> None:
    codes = []
    for _ in range(21):
        time.sleep(0.25)  # stay under the per-socket frame rate; this is about messages
        client_id = chat.send({"type": "send", "text": "spam [fakellm:tokens=400 tps=50]"})
        frame = chat.recv_until(lambda f, cid=client_id: f.get("id") == cid)
        codes.append(frame.get("code") or frame["type"])
    assert codes[0] == "ack"
    assert codes[-1] == "rate_limited"
    assert Message.objects.filter(role="user").count() == 1
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
