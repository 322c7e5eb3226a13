"""The database side of a reply being written: claim it, then store how it ended.

Both run on the event loop that writes the reply, each in a thread of a pool of their own as
large as the database connection pool: Channels' default sends every database call of a
process through one thread, which would make a hundred replies claim one after another.
"""

from __future__ import annotations

import os
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from functools import cache

from channels.db import database_sync_to_async
from django.conf import settings
from django.db import connection, transaction
from django.utils import timezone

from chat.models import Message
from chat.providers.base import ChatMessage


@dataclass(frozen=True)
class ReplyJob:
    reply_id: int
    conversation_id: str
    user_id: int
    model: str
    messages: list[ChatMessage]
    attempt: int


@dataclass
class ReplyOutcome:
    status: str
    content: str
    final_seq: int
    prompt_tokens: int = 0
    completion_tokens: int = 0
    usage_estimated: bool = False
    time_to_first_token_ms: int | None = None
    duration_ms: int | None = None
    provider: str = ""
    error_code: str = ""
    error_message: str = ""


def _claim_reply(reply_id: int, writer: str) -> ReplyJob | None:
    """Mark a reply as generating and gather its context; None if there is nothing to do.

    A redelivered task finds its reply finished (nothing to do) or still generating from a
    worker that died (start it again: attempt > 1). The claim is committed without waiting for
    the disk: if PostgreSQL crashes before it is flushed, the reply is merely pending again
    and its redelivery claims it anew, while the person waits for no fsync before the model
    is asked.
    """
    with transaction.atomic():
        with connection.cursor() as cursor:
            cursor.execute("SET LOCAL synchronous_commit TO OFF")
        reply = (
            Message.objects.select_for_update(of=("self",))
            .select_related("conversation")
            .filter(pk=reply_id, role=Message.Role.ASSISTANT)
            .first()
        )
        if reply is None or reply.is_finished or reply.superseded_at is not None:
            return None
        reply.status = Message.Status.GENERATING
        reply.attempt += 1
        reply.content = ""
        reply.started_at = timezone.now()
        reply.written_by = writer
        reply.save(update_fields=["status", "attempt", "content", "started_at", "written_by"])
        history = list(
            Message.objects.filter(
                conversation_id=reply.conversation_id,
                superseded_at__isnull=True,
                created_at__lt=reply.created_at,
            )
            .exclude(role=Message.Role.ASSISTANT, content="")
            .order_by("-created_at", "-id")
            .values("role", "content")[: settings.CONTEXT_MESSAGES]
        )
    messages: list[ChatMessage] = []
    if settings.LLM_SYSTEM_PROMPT:
        messages.append({"role": "system", "content": settings.LLM_SYSTEM_PROMPT})
    messages.extend({"role": m["role"], "content": m["content"]} for m in reversed(history))
    return ReplyJob(
        reply_id=reply.pk,
        conversation_id=str(reply.conversation_id),
        user_id=reply.conversation.user_id,
        model=reply.model,
        messages=messages,
        attempt=reply.attempt,
    )


def _finish_reply(reply_id: int, attempt: int, outcome: ReplyOutcome) -> bool:
    """Store the final state; False if the reaper finished it first, or a later attempt (a
    writer that took the reply over) has it now."""
    updated = Message.objects.filter(
        pk=reply_id, attempt=attempt, status__in=Message.UNFINISHED
    ).update(
        status=outcome.status,
        content=outcome.content,
        final_seq=outcome.final_seq,
        prompt_tokens=outcome.prompt_tokens,
        completion_tokens=outcome.completion_tokens,
        usage_estimated=outcome.usage_estimated,
        time_to_first_token_ms=outcome.time_to_first_token_ms,
        duration_ms=outcome.duration_ms,
        provider=outcome.provider,
        error_code=outcome.error_code,
        error_message=outcome.error_message,
        finished_at=timezone.now(),
    )
    return updated == 1


@cache
def _executor() -> ThreadPoolExecutor:
    return ThreadPoolExecutor(
        max_workers=settings.DATABASE_POOL_MAX_SIZE, thread_name_prefix="parley-db"
    )


# A forked child (Celery's prefork pool) makes its own threads.
os.register_at_fork(after_in_child=_executor.cache_clear)


async def claim_reply(reply_id: int, writer: str) -> ReplyJob | None:
    claim = database_sync_to_async(_claim_reply, thread_sensitive=False, executor=_executor())
    return await claim(reply_id, writer)


async def finish_reply(reply_id: int, attempt: int, outcome: ReplyOutcome) -> bool:
    finish = database_sync_to_async(_finish_reply, thread_sensitive=False, executor=_executor())
    return await finish(reply_id, attempt, outcome)
