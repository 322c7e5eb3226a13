"""The periodic jobs' logic, callable without Celery (tests, management shell)."""

from __future__ import annotations

import datetime as dt
import logging
import os
import statistics
import time
from collections import defaultdict

from channels.db import database_sync_to_async
from django.conf import settings
from django.db import transaction
from django.db.models import Q, QuerySet
from django.utils import timezone

from chat import replystream
from chat.markdown import render_markdown
from chat.models import Conversation, DailyUsage, Message, ProviderCheck, ProviderModel
from chat.providers.registry import configured_providers
from chat.replylocks import RELEASE, owner_of
from parley.redis_clients import channel_redis, key

logger = logging.getLogger(__name__)

PROVIDER_CHECK_RETENTION = dt.timedelta(days=7)
# "New chat" makes a conversation at once; one never written in is dropped after this long
# (whatever the retention: it holds nothing to keep).
EMPTY_CONVERSATION_TTL = dt.timedelta(days=1)
# Grace beyond the hard time limit before a reply counts as stuck: a worker that is alive has
# ended it by then.
REAPER_GRACE = dt.timedelta(seconds=60)


def purge_old_conversations() -> int:
    """Delete conversations untouched for PARLEY_RETENTION_DAYS (0 keeps everything), and
    empty ones left for a day."""
    now = timezone.now()
    ProviderCheck.objects.filter(checked_at__lt=now - PROVIDER_CHECK_RETENTION).delete()
    emptied = _delete_conversations(
        Conversation.objects.filter(
            updated_at__lt=now - EMPTY_CONVERSATION_TTL, messages__isnull=True
        )
    )
    logger.info("Purged %d conversations left empty", emptied)
    if settings.RETENTION_DAYS <= 0:
        return emptied
    cutoff = now - dt.timedelta(days=settings.RETENTION_DAYS)
    count = _delete_conversations(Conversation.objects.filter(updated_at__lt=cutoff))
    logger.info("Purged %d conversations untouched since %s", count, cutoff)
    return emptied + count


def _delete_conversations(conversations: QuerySet[Conversation]) -> int:
    """Delete them (their messages go with them) and say how many conversations went."""
    _, deleted = conversations.delete()
    return deleted.get(Conversation._meta.label, 0)


def _percentile(values: list[int], fraction: float) -> int | None:
    if not values:
        return None
    if len(values) == 1:
        return values[0]
    cuts = statistics.quantiles(values, n=100, method="inclusive")
    return round(cuts[round(fraction * 100) - 1])


def build_usage_report(day: str | None = None) -> int:
    """Aggregate one UTC day's replies (yesterday by default) per user and model. Idempotent."""
    target = dt.date.fromisoformat(day) if day else timezone.now().date() - dt.timedelta(days=1)
    start = dt.datetime.combine(target, dt.time.min, tzinfo=dt.UTC)
    end = start + dt.timedelta(days=1)
    rows = Message.objects.filter(
        role=Message.Role.ASSISTANT, finished_at__gte=start, finished_at__lt=end
    ).values_list(
        "conversation__user_id",
        "model",
        "status",
        "prompt_tokens",
        "completion_tokens",
        "time_to_first_token_ms",
        "duration_ms",
    )
    groups: dict[tuple[int, str], list[tuple]] = defaultdict(list)
    for user_id, model, *rest in rows:
        groups[(user_id, model)].append(tuple(rest))
    with transaction.atomic():
        DailyUsage.objects.filter(day=target).exclude(
            user_id__in={user for user, _ in groups}
        ).delete()
        for (user_id, model), replies in groups.items():
            ttfts = sorted(r[3] for r in replies if r[3] is not None)
            durations = sorted(r[4] for r in replies if r[4] is not None)
            DailyUsage.objects.update_or_create(
                day=target,
                user_id=user_id,
                model=model,
                defaults={
                    "requests": len(replies),
                    "errors": sum(1 for r in replies if r[0] == Message.Status.ERROR),
                    "cancelled": sum(1 for r in replies if r[0] == Message.Status.CANCELLED),
                    "prompt_tokens": sum(r[1] for r in replies),
                    "completion_tokens": sum(r[2] for r in replies),
                    "ttft_p50_ms": _percentile(ttfts, 0.5),
                    "ttft_p95_ms": _percentile(ttfts, 0.95),
                    "duration_p50_ms": _percentile(durations, 0.5),
                    "duration_p95_ms": _percentile(durations, 0.95),
                },
            )
    return len(groups)


@database_sync_to_async
def _record_check(provider: str, ok: bool, latency_ms: int, models: list[str], error: str) -> None:
    now = timezone.now()
    with transaction.atomic():
        ProviderCheck.objects.create(
            provider=provider,
            ok=ok,
            latency_ms=latency_ms,
            model_count=len(models),
            error=error,
        )
        if not ok:
            return
        for name in models:
            ProviderModel.objects.update_or_create(
                provider=provider, name=name, defaults={"available": True, "last_seen_at": now}
            )
        ProviderModel.objects.filter(provider=provider).exclude(name__in=models).update(
            available=False
        )


async def check_providers() -> int:
    """Ask every configured provider for its models; refresh the list the UI offers."""
    healthy = 0
    for provider in configured_providers():
        started = time.monotonic()
        try:
            models = await provider.list_models()
        except Exception as error:
            await _record_check(
                provider.name,
                False,
                round((time.monotonic() - started) * 1000),
                [],
                f"{type(error).__name__}: {error}"[:500],
            )
            logger.warning("Provider %s failed its health check: %s", provider.name, error)
        else:
            await _record_check(
                provider.name, True, round((time.monotonic() - started) * 1000), models, ""
            )
            healthy += 1
    return healthy


@database_sync_to_async
def _stuck_replies() -> list[Message]:
    cutoff = timezone.now() - dt.timedelta(seconds=settings.REPLY_TIME_LIMIT) - REAPER_GRACE
    # A generating reply is judged by when its worker started it, a pending one by when it
    # was queued (a long queue is not a dead worker).
    stuck = Q(status=Message.Status.GENERATING, started_at__lt=cutoff) | Q(
        status=Message.Status.PENDING, created_at__lt=cutoff
    )
    return list(
        Message.objects.filter(stuck, role=Message.Role.ASSISTANT).select_related("conversation")
    )


@database_sync_to_async
def _mark_stuck(reply_id: int, final_seq: int, content: str) -> bool:
    return (
        Message.objects.filter(pk=reply_id, status__in=Message.UNFINISHED).update(
            status=Message.Status.ERROR,
            content=content,
            error_code="stuck",
            error_message="The reply was never finished (its worker was lost).",
            final_seq=final_seq,
            finished_at=timezone.now(),
        )
        == 1
    )


async def reap_stuck_replies() -> int:
    """End replies still pending or generating past the hard time limit, telling the user."""
    reaped = 0
    for reply in await _stuck_replies():
        publisher = replystream.ReplyPublisher(
            reply.pk, str(reply.conversation_id), await replystream.last_seq(reply.pk)
        )
        # The text streamed before the worker was lost is kept, as a reply that fails keeps
        # its partial text: the stored reply says what its readers saw.
        content = await replystream.streamed_text(reply.pk)
        if await _mark_stuck(reply.pk, publisher.seq + 1, content):
            await publisher.publish(
                "error",
                code="stuck",
                message="The reply was never finished (its worker was lost).",
                content=content,
                html=render_markdown(content),
            )
            reaped += 1
    if reaped:
        logger.warning("Reaped %d stuck replies", reaped)
    return reaped


@database_sync_to_async
def _generating_replies(started_before: dt.datetime, written_by: str | None = None) -> list[int]:
    """Replies a worker (this node, if named) started before then, within the hard time
    limit (past it, `reap_stuck_replies` ends them)."""
    replies = Message.objects.filter(
        role=Message.Role.ASSISTANT,
        status=Message.Status.GENERATING,
        started_at__lt=started_before,
        started_at__gte=timezone.now() - dt.timedelta(seconds=settings.REPLY_TIME_LIMIT),
    )
    if written_by is not None:
        replies = replies.filter(written_by=written_by)
    return list(replies.values_list("pk", flat=True))


async def replies_of_a_dead_predecessor(node: str, started_at: dt.datetime) -> list[int]:
    """Replies still generating that a process of this Celery node started before this one:
    that process is dead (systemd started this one in its place), so they are taken over at
    once. Locks it still holds are released, so the redelivery does not wait for them."""
    mine = await _generating_replies(started_at, written_by=node)
    if not mine:
        return []
    redis = channel_redis()
    tokens = await redis.mget([replystream.lock_key(reply_id) for reply_id in mine])
    for reply_id, token in zip(mine, tokens, strict=True):
        held_by = owner_of(token) if token is not None else None
        if held_by is not None and held_by[0] == node and held_by[1] != os.getpid():
            await redis.eval(RELEASE, 1, replystream.lock_key(reply_id), token)
    logger.warning("Taking over %d replies of this worker's predecessor: %s", len(mine), mine)
    return mine


def _orphan_mark_key(reply_id: int) -> str:
    return key("reply", reply_id, "orphan")


async def orphaned_replies() -> list[int]:
    """Replies whose writer is gone: generating, and their lock absent at two looks at least
    REPLY_LOCK_TTL apart. A live writer renews its lock every third of that time, and takes it
    again if Redis lost it (a restart of the channel-layer instance keeps nothing), so only a
    writer that is dead (a worker killed, its host lost) misses both looks. Each reply is
    named once: the caller hands it to a live worker, whose claim starts it again."""
    ttl = settings.REPLY_LOCK_TTL
    candidates = await _generating_replies(timezone.now() - dt.timedelta(seconds=ttl))
    if not candidates:
        return []
    redis = channel_redis()
    async with redis.pipeline(transaction=False) as pipe:
        for reply_id in candidates:
            pipe.exists(replystream.lock_key(reply_id))
            pipe.get(_orphan_mark_key(reply_id))
        seen = await pipe.execute()
    now = time.time()
    orphans: list[int] = []
    async with redis.pipeline(transaction=False) as pipe:
        for index, reply_id in enumerate(candidates):
            locked, marked = seen[2 * index], seen[2 * index + 1]
            if locked:
                pipe.delete(_orphan_mark_key(reply_id))
            elif marked is None:
                pipe.set(_orphan_mark_key(reply_id), f"{now:.3f}", ex=4 * ttl)
            elif marked != b"handed-over" and now - float(marked) >= ttl:
                pipe.set(_orphan_mark_key(reply_id), "handed-over", ex=4 * ttl)
                orphans.append(reply_id)
        await pipe.execute()
    if orphans:
        logger.warning("Handing %d replies of a lost worker to another: %s", len(orphans), orphans)
    return orphans
