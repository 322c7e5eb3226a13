"""Celery tasks: the reply generation and the periodic jobs Beat runs.

Every coroutine runs on the worker process's one long-lived event loop (`parley.worker_loop`):
under the `threads` pool many replies share it at once, each task's thread only waiting for
its reply to end.
"""

from __future__ import annotations

import logging

from celery import shared_task
from celery.signals import task_failure
from django.conf import settings

from chat import jobs
from chat.generation import run_reply
from parley import metrics, worker_loop

logger = logging.getLogger(__name__)


@shared_task(name="chat.generate_reply", acks_late=True, reject_on_worker_lost=True)
def generate_reply(reply_id: int) -> None:
    """Stream one reply. Its own deadline ends it in time; the wait here is a backstop that
    holds whichever pool runs it, as the threads pool has no Celery time limits."""
    worker_loop.run(run_reply(reply_id), timeout=settings.REPLY_TIME_LIMIT)


@shared_task(name="chat.purge_old_conversations")
def purge_old_conversations() -> int:
    return jobs.purge_old_conversations()


@shared_task(name="chat.build_usage_report")
def build_usage_report(day: str | None = None) -> int:
    return jobs.build_usage_report(day)


@shared_task(name="chat.check_providers")
def check_providers() -> int:
    return worker_loop.run(jobs.check_providers())


@shared_task(name="chat.reap_stuck_replies")
def reap_stuck_replies() -> int:
    """End replies past the hard time limit, and hand those whose worker was lost to a live
    one (its claim restarts the reply; clients are told to start over)."""
    reaped = worker_loop.run(jobs.reap_stuck_replies())
    for reply_id in worker_loop.run(jobs.orphaned_replies()):
        generate_reply.delay(reply_id)
    return reaped


@task_failure.connect
def count_task_failure(sender: object = None, **_: object) -> None:
    metrics.TASK_FAILURES.labels(getattr(sender, "name", "unknown")).inc()
