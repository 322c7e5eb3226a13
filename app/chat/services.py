"""Synchronous database operations behind the WebSocket frames.

Each runs in one transaction and raises ChatError with the code the user's error frame will
carry, so a refused request leaves the database as it found it. Saving a reply's placeholder
queues its generation (`chat.queueing`) once the transaction commits.
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass

from django.contrib.auth.models import AbstractBaseUser
from django.db import transaction
from django.db.models import Exists, OuterRef
from django.utils import timezone

from chat.models import Conversation, Message
from chat.providers.registry import cached_model_ids, default_model
from chat.queueing import EnqueueError

TITLE_CHARS = 60


class ChatError(Exception):
    def __init__(self, code: str, message: str) -> None:
        super().__init__(message)
        self.code = code
        self.message = message


@dataclass(frozen=True)
class Turn:
    """A user message and the reply placeholder that answers it."""

    message_id: int
    reply_id: int
    text: str
    model: str
    replaces: int | None = None
    client_message_id: uuid.UUID | None = None
    # True when the message was already stored under its client_id: this is a re-send.
    duplicate: bool = False


def resolve_model(requested: str | None) -> str:
    model = requested or default_model()
    if model not in cached_model_ids.get():
        raise ChatError("unknown_model", f"Model {model!r} is not available.")
    return model


def owned_conversation(user: AbstractBaseUser, conversation_id: uuid.UUID | str) -> Conversation:
    try:
        return Conversation.objects.get(pk=conversation_id, user=user)
    except (Conversation.DoesNotExist, ValueError) as error:
        raise ChatError("not_found", "No such conversation.") from error


def _lock_conversation(user: AbstractBaseUser, conversation_id: str) -> Conversation:
    """Lock the conversation row so two sockets cannot start two replies at once; the same
    query says whether a reply is still being written (`conversation.busy`)."""
    unfinished = Message.objects.filter(
        conversation=OuterRef("pk"),
        role=Message.Role.ASSISTANT,
        status__in=Message.UNFINISHED,
        superseded_at__isnull=True,
    )
    conversation = (
        Conversation.objects.select_for_update(of=("self",))
        .annotate(busy=Exists(unfinished))
        .filter(pk=conversation_id, user=user)
        .first()
    )
    if conversation is None:
        raise ChatError("not_found", "No such conversation.")
    return conversation


def _ensure_idle(conversation: Conversation) -> None:
    if conversation.busy:  # type: ignore[attr-defined]  (annotated by _lock_conversation)
        raise ChatError("busy", "A reply is still being written; stop it or wait.")


def _lock_idle_conversation(user: AbstractBaseUser, conversation_id: str) -> Conversation:
    conversation = _lock_conversation(user, conversation_id)
    _ensure_idle(conversation)
    return conversation


def sent_turn(
    user: AbstractBaseUser, conversation_id: str, client_message_id: uuid.UUID, text: str
) -> Turn | None:
    """The turn a message stored under this client_id started, or None if there is none.

    Its reply is the one first created for it (the one its ack named), also after a
    regenerate superseded it. The same client_id with another text is a client's mistake,
    refused rather than answered for a message the client did not mean.
    """
    message = (
        Message.objects.filter(
            conversation_id=conversation_id,
            conversation__user=user,
            role=Message.Role.USER,
            client_id=client_message_id,
        )
        .only("pk", "content")
        .first()
    )
    if message is None:
        return None
    if message.content != text:
        raise ChatError(
            "client_id_conflict", "This client_id was already used for another message."
        )
    reply = (
        Message.objects.filter(reply_to=message, role=Message.Role.ASSISTANT)
        .order_by("created_at", "id")
        .only("pk", "model")
        .first()
    )
    if reply is None:  # cannot happen: a message and its reply are created together
        raise ChatError("not_found", "No such reply.")
    return Turn(
        message.pk, reply.pk, message.content, reply.model,
        client_message_id=client_message_id, duplicate=True,
    )  # fmt: skip


def post_message(
    user: AbstractBaseUser,
    conversation_id: str,
    text: str,
    model: str | None,
    client_message_id: uuid.UUID | None = None,
) -> Turn:
    """Save the user's message and its reply placeholder.

    Saving the reply's placeholder fires the post_save receiver in chat.queueing, which
    enqueues the generation once this transaction commits. A message already stored under the same
    client_id is not saved again: its turn comes back with `duplicate` set. That is checked
    under the conversation's lock, so a re-send racing its original (on another socket, maybe
    another web host) waits for it and then finds it.
    """
    named = False
    try:
        with transaction.atomic():
            conversation = _lock_conversation(user, conversation_id)
            if client_message_id is not None:
                turn = sent_turn(user, conversation_id, client_message_id, text)
                if turn is not None:
                    return turn
            chosen = resolve_model(model)
            _ensure_idle(conversation)
            message = Message.objects.create(
                conversation=conversation,
                role=Message.Role.USER,
                content=text,
                client_id=client_message_id,
            )
            reply = Message.objects.create(
                conversation=conversation,
                role=Message.Role.ASSISTANT,
                status=Message.Status.PENDING,
                reply_to=message,
                model=chosen,
            )
            if not conversation.title:
                conversation.title = " ".join(text.split())[:TITLE_CHARS]
                named = True
            conversation.model = chosen
            conversation.updated_at = timezone.now()
            conversation.save(update_fields=["title", "model", "updated_at"])
    except EnqueueError:
        # Stored, but the broker is away and no worker will write the reply: take the message
        # back (its reply goes with it), so `unavailable` means what it says, nothing changed,
        # and the same send (same client_id) works once the broker is back.
        with transaction.atomic():
            Message.objects.filter(pk=message.pk).delete()
            if named:
                Conversation.objects.filter(pk=conversation.pk).update(title="")
        raise ChatError(
            "unavailable", "The service is having trouble; try again shortly."
        ) from None
    return Turn(message.pk, reply.pk, text, chosen, client_message_id=client_message_id)


def regenerate_last(user: AbstractBaseUser, conversation_id: str, model: str | None) -> Turn:
    """Supersede the last finished reply with a new placeholder for the same user message."""
    try:
        return _supersede_last_reply(user, conversation_id, model)
    except EnqueueError as error:
        # As in post_message: the new reply cannot be queued, so nothing may change. It goes,
        # and the reply it superseded is live again.
        with transaction.atomic():
            new = Message.objects.filter(pk=error.reply_id).first()
            if new is not None:
                previous = (
                    Message.objects.filter(
                        reply_to_id=new.reply_to_id,
                        role=Message.Role.ASSISTANT,
                        superseded_at__isnull=False,
                    )
                    .order_by("-superseded_at", "-id")
                    .first()
                )
                new.delete()
                if previous is not None:
                    Message.objects.filter(pk=previous.pk).update(superseded_at=None)
        raise ChatError(
            "unavailable", "The service is having trouble; try again shortly."
        ) from None


def _supersede_last_reply(user: AbstractBaseUser, conversation_id: str, model: str | None) -> Turn:
    with transaction.atomic():
        conversation = _lock_idle_conversation(user, conversation_id)
        last = (
            Message.objects.filter(
                conversation=conversation,
                role=Message.Role.ASSISTANT,
                superseded_at__isnull=True,
            )
            .select_related("reply_to")
            .order_by("-created_at", "-id")
            .first()
        )
        if last is None or last.reply_to is None:
            raise ChatError("nothing_to_regenerate", "There is no reply to regenerate.")
        chosen = resolve_model(model or last.model)
        last.superseded_at = timezone.now()
        last.save(update_fields=["superseded_at"])
        reply = Message.objects.create(
            conversation=conversation,
            role=Message.Role.ASSISTANT,
            status=Message.Status.PENDING,
            reply_to=last.reply_to,
            model=chosen,
        )
        conversation.updated_at = timezone.now()
        conversation.model = chosen
        conversation.save(update_fields=["updated_at", "model"])
    return Turn(last.reply_to_id, reply.pk, last.reply_to.content, chosen, replaces=last.pk)


def cancellable_reply(user: AbstractBaseUser, conversation_id: str, reply_id: int) -> bool:
    """True when the reply is the user's, in this conversation and still being written."""
    reply = Message.objects.filter(
        pk=reply_id,
        conversation_id=conversation_id,
        conversation__user=user,
        role=Message.Role.ASSISTANT,
    ).first()
    if reply is None:
        raise ChatError("not_found", "No such reply.")
    return not reply.is_finished


def reply_in_conversation(conversation_id: str, reply_id: int) -> Message | None:
    return Message.objects.filter(
        pk=reply_id, conversation_id=conversation_id, role=Message.Role.ASSISTANT
    ).first()
