"""Conversations, their messages, and what the periodic jobs record about usage and providers."""

from __future__ import annotations

import uuid

from django.conf import settings
from django.db import models
from django.db.models import Q
from django.utils import timezone


class Conversation(models.Model):
    id = models.UUIDField(primary_key=True, default=uuid.uuid4, editable=False)
    user = models.ForeignKey(
        settings.AUTH_USER_MODEL, on_delete=models.CASCADE, related_name="conversations"
    )
    title = models.CharField(max_length=200, blank=True)
    model = models.CharField(max_length=200, blank=True)
    created_at = models.DateTimeField(auto_now_add=True)
    updated_at = models.DateTimeField(default=timezone.now, db_index=True)

    class Meta:
        ordering = ["-updated_at"]
        indexes = [models.Index(fields=["user", "-updated_at"], name="conversation_user_recent")]

    def __str__(self) -> str:
        return self.title or "New chat"


def conversation_group(conversation_id: uuid.UUID | str) -> str:
    """The channel-layer group every socket open on this conversation joins."""
    return f"conversation.{conversation_id}"


class Message(models.Model):
    class Role(models.TextChoices):
        USER = "user"
        ASSISTANT = "assistant"

    class Status(models.TextChoices):
        PENDING = "pending"
        GENERATING = "generating"
        COMPLETE = "complete"
        CANCELLED = "cancelled"
        ERROR = "error"

    UNFINISHED = (Status.PENDING, Status.GENERATING)

    conversation = models.ForeignKey(
        Conversation, on_delete=models.CASCADE, related_name="messages"
    )
    role = models.CharField(max_length=16, choices=Role.choices)
    content = models.TextField(blank=True)
    # A user message's name given by the client that sent it (`send.client_id`): a client
    # that lost its socket before the ack sends the message again under the same name, and
    # is answered with the first one's ack instead of a second copy.
    client_id = models.UUIDField(null=True, blank=True, editable=False)
    status = models.CharField(max_length=16, choices=Status.choices, default=Status.COMPLETE)
    # An assistant reply answers one user message; regenerating supersedes the live reply.
    reply_to = models.ForeignKey(
        "self", null=True, blank=True, on_delete=models.CASCADE, related_name="replies"
    )
    superseded_at = models.DateTimeField(null=True, blank=True)
    model = models.CharField(max_length=200, blank=True)
    provider = models.CharField(max_length=50, blank=True)
    error_code = models.CharField(max_length=50, blank=True)
    error_message = models.TextField(blank=True)
    # How many times a worker started this reply (more than one after a redelivery).
    attempt = models.PositiveSmallIntegerField(default=0)
    # The Celery node (`default@worker1`) whose process claimed it last: a worker restarted
    # under that name takes over what its dead predecessor was writing.
    written_by = models.CharField(max_length=255, blank=True)
    # Sequence number of the reply's last frame, so a late resume can be answered from here.
    final_seq = models.PositiveIntegerField(default=0)
    prompt_tokens = models.PositiveIntegerField(default=0)
    completion_tokens = models.PositiveIntegerField(default=0)
    usage_estimated = models.BooleanField(default=False)
    time_to_first_token_ms = models.PositiveIntegerField(null=True, blank=True)
    duration_ms = models.PositiveIntegerField(null=True, blank=True)
    created_at = models.DateTimeField(auto_now_add=True, db_index=True)
    started_at = models.DateTimeField(null=True, blank=True)
    finished_at = models.DateTimeField(null=True, blank=True, db_index=True)

    class Meta:
        ordering = ["created_at", "id"]
        constraints = [
            # The idempotency guard: however often a task is delivered, one user message has
            # at most one live assistant reply.
            models.UniqueConstraint(
                fields=["reply_to"],
                condition=Q(superseded_at__isnull=True),
                name="one_live_reply_per_message",
            ),
            # The other one: a message re-sent under its client_id is stored once.
            models.UniqueConstraint(
                fields=["conversation", "client_id"],
                condition=Q(client_id__isnull=False),
                name="one_message_per_client_id",
            ),
        ]
        indexes = [
            models.Index(
                fields=["status"],
                condition=Q(status__in=["pending", "generating"]),
                name="message_unfinished",
            )
        ]

    def __str__(self) -> str:
        return f"{self.role} #{self.pk}"

    @property
    def is_finished(self) -> bool:
        return self.status not in self.UNFINISHED


class DailyUsage(models.Model):
    """One row per day, user and model, written by the daily usage report job."""

    day = models.DateField()
    user = models.ForeignKey(
        settings.AUTH_USER_MODEL, on_delete=models.CASCADE, related_name="daily_usage"
    )
    model = models.CharField(max_length=200)
    requests = models.PositiveIntegerField(default=0)
    errors = models.PositiveIntegerField(default=0)
    cancelled = models.PositiveIntegerField(default=0)
    prompt_tokens = models.PositiveBigIntegerField(default=0)
    completion_tokens = models.PositiveBigIntegerField(default=0)
    ttft_p50_ms = models.PositiveIntegerField(null=True, blank=True)
    ttft_p95_ms = models.PositiveIntegerField(null=True, blank=True)
    duration_p50_ms = models.PositiveIntegerField(null=True, blank=True)
    duration_p95_ms = models.PositiveIntegerField(null=True, blank=True)
    generated_at = models.DateTimeField(auto_now=True)

    class Meta:
        ordering = ["-day", "user", "model"]
        constraints = [
            models.UniqueConstraint(fields=["day", "user", "model"], name="one_usage_row")
        ]
        verbose_name_plural = "daily usage"

    def __str__(self) -> str:
        return f"{self.day} {self.user_id} {self.model}"

    @property
    def total_tokens(self) -> int:
        return self.prompt_tokens + self.completion_tokens


class ProviderModel(models.Model):
    """A model an LLM endpoint offers, as last seen by the provider health check."""

    provider = models.CharField(max_length=50)
    name = models.CharField(max_length=200)
    available = models.BooleanField(default=True)
    last_seen_at = models.DateTimeField(default=timezone.now)

    class Meta:
        ordering = ["provider", "name"]
        constraints = [
            models.UniqueConstraint(fields=["provider", "name"], name="one_provider_model")
        ]

    def __str__(self) -> str:
        return f"{self.provider}/{self.name}"


class ProviderCheck(models.Model):
    """The outcome of one provider health check."""

    provider = models.CharField(max_length=50)
    checked_at = models.DateTimeField(default=timezone.now, db_index=True)
    ok = models.BooleanField()
    latency_ms = models.PositiveIntegerField(default=0)
    model_count = models.PositiveIntegerField(default=0)
    error = models.TextField(blank=True)

    class Meta:
        ordering = ["-checked_at"]

    def __str__(self) -> str:
        return f"{self.provider} {'ok' if self.ok else 'failing'} at {self.checked_at}"
