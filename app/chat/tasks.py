"""Celery tasks: the reply generation and the periodic jobs Beat runs.

Every coroutine runs on the worker process's one long-lived event loop (`parley.worker_loop`):
under the `threads` pool many replies share it at once, each task's thread only waiting for
its reply to end.
"""

from __future__ import annotations

import logging

from celery import shared_task
from celery.signals import task_failure, worker_init, worker_ready
from django.conf import settings
from django.utils import timezone

from chat import jobs
from chat.generation import run_reply
from chat.replylocks import set_node
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


_started_at = timezone.now()


@worker_init.connect
def name_reply_locks_after_this_node(sender: object = None, **_: object) -> None:
    global _started_at  # noqa: PLW0603  (when this worker process started)
    _started_at = timezone.now()
    set_node(getattr(sender, "hostname", "") or "worker")


@worker_ready.connect
def take_over_replies_of_a_dead_predecessor(sender: object = None, **_: object) -> None:
    """A worker restarted after it died (systemd's Restart=, after a SIGKILL or the OOM
    killer) queues again at once the replies its predecessor was writing."""
    node = getattr(sender, "hostname", "")
    if not node:
        return
    for reply_id in worker_loop.run(jobs.replies_of_a_dead_predecessor(node, _started_at)):
        generate_reply.delay(reply_id)


@task_failure.connect
def count_task_failure(sender: object = None, **_: object) -> None:
    metrics.TASK_FAILURES.labels(getattr(sender, "name", "unknown")).inc()
