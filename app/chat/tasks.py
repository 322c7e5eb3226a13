"""Celery tasks: the reply generation and the four periodic jobs Beat runs."""

from __future__ import annotations

import asyncio
import logging

from celery import shared_task
from celery.signals import task_failure

from chat import jobs
from chat.generation import run_reply_in_own_loop
from parley import metrics

logger = logging.getLogger(__name__)


@shared_task(name="chat.generate_reply", acks_late=True, reject_on_worker_lost=True)
def generate_reply(reply_id: int) -> None:
    """Stream one reply. One event loop for the whole reply, not one per delta."""
    asyncio.run(run_reply_in_own_loop(reply_id))


@shared_task(name="chat.purge_old_conversations")
def purge_old_conversations() -> int:
    return jobs.purge_old_conversations()


@shared_task(name="chat.build_usage_report")
def build_usage_report(day: str | None = None) -> int:
    return jobs.build_usage_report(day)


@shared_task(name="chat.check_providers")
def check_providers() -> int:
    return asyncio.run(jobs.check_providers())


@shared_task(name="chat.reap_stuck_replies")
def reap_stuck_replies() -> int:
    return asyncio.run(jobs.reap_stuck_replies())


@task_failure.connect
def count_task_failure(sender: object = None, **_: object) -> None:
    metrics.TASK_FAILURES.labels(getattr(sender, "name", "unknown")).inc()
