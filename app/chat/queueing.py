"""A new reply placeholder, once saved, queues its generation when its transaction commits.

The web side saves the user's message and an empty `pending` assistant message (the reply's
placeholder) in one transaction (`chat.services`); this `post_save` receiver sends the
placeholder to a Celery worker once that transaction has committed, so the worker finds the
rows. Regenerating saves a new placeholder and takes the same path.
"""

from __future__ import annotations

from django.conf import settings
from django.db import transaction
from django.db.models.signals import post_save
from django.dispatch import receiver

from chat.models import Message
from chat.tasks import generate_reply
from parley import timeline


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

    def send() -> None:
        timeline.mark(reply_id, "committed")
        try:
            generate_reply.delay(reply_id)
        except Exception as error:  # whatever the transport raises: kombu, redis, socket
            raise EnqueueError(reply_id) from error
        timeline.mark(reply_id, "task_published")

    transaction.on_commit(send)


@receiver(post_save, sender=Message, dispatch_uid="chat.enqueue_new_reply")
def enqueue_new_reply(sender: type[Message], instance: Message, created: bool, **_: object) -> None:
    placeholder = instance.role == Message.Role.ASSISTANT and instance.status == "pending"
    if created and placeholder:
        enqueue_generation(instance.pk)
