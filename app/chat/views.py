"""Server-rendered pages: the conversation list and the chat view."""

from __future__ import annotations

import uuid

from django.conf import settings
from django.contrib.auth.decorators import login_required
from django.db.models import Count
from django.http import HttpRequest, HttpResponse
from django.shortcuts import get_object_or_404, redirect, render
from django.views.decorators.http import require_POST

from chat.models import Conversation, Message
from chat.providers.registry import available_models, default_model

SIDEBAR_CONVERSATIONS = 50


def _sidebar(request: HttpRequest, current: Conversation | None = None) -> list[Conversation]:
    """Recent conversations with messages, and the open one even while it is still empty."""
    listed = list(
        Conversation.objects.filter(user=request.user)
        .annotate(message_count=Count("messages"))
        .filter(message_count__gt=0)[:SIDEBAR_CONVERSATIONS]
    )
    if current is not None and current not in listed:
        listed.insert(0, current)
    return listed


@login_required
def home(request: HttpRequest) -> HttpResponse:
    latest = Conversation.objects.filter(user=request.user).first()
    if latest is not None:
        return redirect("chat:conversation", conversation_id=latest.id)
    return render(request, "chat/home.html", {"conversations": []})


@login_required
@require_POST
def new_conversation(request: HttpRequest) -> HttpResponse:
    # Pressed on a chat nobody has written in yet, "New chat" stays there instead of piling up
    # empty ones; anywhere else it is a conversation of its own, so two tabs never share one.
    current = _empty_conversation(request, request.POST.get("from", ""))
    conversation = current or Conversation.objects.create(user=request.user)
    return redirect("chat:conversation", conversation_id=conversation.id)


def _empty_conversation(request: HttpRequest, conversation_id: str) -> Conversation | None:
    try:
        wanted = uuid.UUID(conversation_id)
    except ValueError:
        return None
    return Conversation.objects.filter(user=request.user, pk=wanted, messages__isnull=True).first()


@login_required
def conversation(request: HttpRequest, conversation_id: uuid.UUID) -> HttpResponse:
    current = get_object_or_404(Conversation, pk=conversation_id, user=request.user)
    if request.method == "HEAD":
        # The chat page asks this each time its socket is refused, through a whole outage:
        # whether the chat still exists is all it wants, so the page is not rendered.
        return HttpResponse()
    messages = list(
        current.messages.filter(superseded_at__isnull=True).order_by("created_at", "id")
    )
    pending = [
        m.pk
        for m in messages
        if m.role == Message.Role.ASSISTANT and m.status in Message.UNFINISHED
    ]
    models = available_models()
    selected = current.model if current.model in {m.id for m in models} else default_model()
    return render(
        request,
        "chat/conversation.html",
        {
            "conversation": current,
            "conversations": _sidebar(request, current),
            "chat_messages": messages,
            "pending_reply": pending[-1] if pending else "",
            "models": models,
            "selected_model": selected,
            "max_chars": settings.MAX_MESSAGE_CHARS,
        },
    )


@login_required
@require_POST
def delete_conversation(request: HttpRequest, conversation_id: uuid.UUID) -> HttpResponse:
    get_object_or_404(Conversation, pk=conversation_id, user=request.user).delete()
    return redirect("chat:home")
