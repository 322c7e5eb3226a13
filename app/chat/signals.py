"""Saving a user's message enqueues its reply, once the transaction that saved it commits."""

from __future__ import annotations

from django.conf import settings
from django.db import transaction
from django.db.models.signals import post_save
from django.dispatch import receiver

from chat.models import Message


class EnqueueError(Exception):
    """The broker did not take a reply's task: no worker would ever write that reply."""

    def __init__(self, reply_id: int) -> None:
        super().__init__(f"could not queue reply {reply_id}")
        self.reply_id = reply_id


def enqueue_generation(reply_id: int) -> None:
    """Queue the reply for a Celery worker after commit (the worker must see the rows).

    The broker failing (Redis down) raises EnqueueError out of the commit, so the caller can
    take back what it saved instead of leaving a reply nobody writes.
    In the benchmark-only in-process mode the consumer runs the generation itself.
    """
    if settings.GENERATION_MODE != "celery":
        return
    from chat.tasks import generate_reply

    def send() -> None:
        try:
            generate_reply.delay(reply_id)
        except Exception as error:  # whatever the transport raises: kombu, redis, socket
            raise EnqueueError(reply_id) from error

    transaction.on_commit(send)


@receiver(post_save, sender=Message, dispatch_uid="chat.enqueue_reply_for_user_message")
def enqueue_reply_for_user_message(
    sender: type[Message], instance: Message, created: bool, **_: object
) -> None:
    if not created or instance.role != Message.Role.USER:
        return

    def enqueue() -> None:
        # The placeholder is created after the user message in the same transaction, so it
        # is looked up once that transaction has committed.
        reply_id = (
            Message.objects.filter(reply_to=instance, superseded_at__isnull=True)
            .values_list("pk", flat=True)
            .first()
        )
        if reply_id is not None:
            enqueue_generation(reply_id)

    transaction.on_commit(enqueue)
