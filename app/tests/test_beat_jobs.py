"""Every periodic job does its job, run by the real Celery worker; the schedules are seeded."""

from __future__ import annotations

import datetime as dt
import io
import json
import socket

from django.contrib.auth import get_user_model
from django.core.management import call_command
from django.utils import timezone
from django_celery_beat.models import PeriodicTask

from chat import jobs, replystream, tasks
from chat.models import (
    Conversation,
    DailyUsage,
    Message,
    ProviderCheck,
    ProviderModel,
)
from chat.protocol import server_frame
from chat.providers.registry import available_models
from parley import celery_app
from tests.chatclient import ChatSocket
from tests.processes import wait_until


def _seed() -> list[str]:
    out = io.StringIO()
    call_command("seed_schedules", stdout=out)
    return sorted(line.split(":", 1)[0] for line in out.getvalue().splitlines())


def test_seed_schedules_is_idempotent(transactional_db, settings) -> None:
    assert _seed() == ["created"] * 4
    # A second run changes nothing and says so, so a deploy can report "no change".
    assert _seed() == ["unchanged"] * 4
    settings.HEALTH_CHECK_INTERVAL = 120
    assert _seed() == ["unchanged", "unchanged", "unchanged", "updated"]
    settings.HEALTH_CHECK_INTERVAL = 60
    assert _seed() == ["unchanged", "unchanged", "unchanged", "updated"]
    names = sorted(PeriodicTask.objects.values_list("name", flat=True))
    assert names == [
        "parley: daily usage report",
        "parley: provider health check",
        "parley: purge old conversations",
        "parley: reap stuck replies",
    ]
    assert PeriodicTask.objects.get(name="parley: provider health check").interval.every == 60
    assert PeriodicTask.objects.get(name="parley: daily usage report").crontab.hour == "0"


def test_seeded_schedules_name_tasks_the_worker_runs(stack, worker) -> None:
    """Beat sends a task by its name only: a misspelt name is sent on schedule and dropped by
    every worker as unregistered, and nothing else would notice."""
    _seed()
    seeded = dict(PeriodicTask.objects.values_list("name", "task"))
    assert seeded == {
        "parley: purge old conversations": tasks.purge_old_conversations.name,
        "parley: daily usage report": tasks.build_usage_report.name,
        "parley: provider health check": tasks.check_providers.name,
        "parley: reap stuck replies": tasks.reap_stuck_replies.name,
    }
    # The running worker's own registry, asked through the broker as `celery inspect` does.
    hostname = f"{worker.name}@{socket.gethostname()}"
    replies = celery_app.control.inspect(timeout=10, destination=[hostname]).registered()
    assert replies, f"{hostname} did not answer"
    registered = set(replies[hostname])
    assert set(seeded.values()) <= registered, set(seeded.values()) - registered


def test_purge_deletes_only_old_conversations(stack, user) -> None:
    old = Conversation.objects.create(user=user, title="old")
    Conversation.objects.filter(pk=old.pk).update(updated_at=timezone.now() - dt.timedelta(days=91))
    Message.objects.create(conversation=old, role="user", content="forget me")
    recent = Conversation.objects.create(user=user, title="recent")
    # "New chat" pressed yesterday and never written in; one from just now may still be.
    left_empty = Conversation.objects.create(user=user)
    Conversation.objects.filter(pk=left_empty.pk).update(
        updated_at=timezone.now() - dt.timedelta(days=1, minutes=1)
    )
    tasks.purge_old_conversations.delay()
    wait_until(lambda: not Conversation.objects.filter(pk=old.pk).exists(), 30, "the purge")
    assert Conversation.objects.filter(pk=recent.pk).exists()
    assert not Conversation.objects.filter(pk=left_empty.pk).exists()
    assert not Message.objects.filter(content="forget me").exists()


def test_purge_counts_the_conversations_it_drops(user) -> None:
    long_ago = timezone.now() - dt.timedelta(days=91)
    old = Conversation.objects.create(user=user)
    Message.objects.create(conversation=old, role="user", content="one")
    Message.objects.create(conversation=old, role="user", content="two")
    left_empty = Conversation.objects.create(user=user)
    Conversation.objects.filter(pk__in=[old.pk, left_empty.pk]).update(updated_at=long_ago)
    Conversation.objects.create(user=user)  # recent: kept
    # The two messages deleted with their conversation are not counted as conversations.
    assert jobs.purge_old_conversations() == 2
    assert Conversation.objects.filter(user=user).count() == 1


def _finished_reply(conversation, day, *, ttft, duration, status="complete", tokens=10):
    user_message = Message.objects.create(conversation=conversation, role="user", content="q")
    reply = Message.objects.create(
        conversation=conversation, role="assistant", reply_to=user_message, model="fake-model",
        status=status, content="a", prompt_tokens=5, completion_tokens=tokens,
        time_to_first_token_ms=ttft, duration_ms=duration,
    )  # fmt: skip
    Message.objects.filter(pk=reply.pk).update(finished_at=day)
    return reply


def test_daily_usage_report(stack, user, conversation) -> None:
    yesterday = timezone.now() - dt.timedelta(days=1)
    for ttft in range(10, 110, 10):  # ten replies, ttft 10..100 ms
        _finished_reply(conversation, yesterday, ttft=ttft, duration=ttft * 10)
    _finished_reply(conversation, yesterday, ttft=None, duration=5, status="error", tokens=0)
    _finished_reply(conversation, timezone.now(), ttft=1, duration=1)  # today: not in the report

    tasks.build_usage_report.delay()
    row = wait_until(lambda: DailyUsage.objects.filter(user=user).first(), 30, "the report")
    assert row.day == yesterday.date()
    assert row.model == "fake-model"
    assert row.requests == 11
    assert row.errors == 1
    assert row.prompt_tokens == 55
    assert row.completion_tokens == 100
    assert row.ttft_p50_ms == 55
    assert row.ttft_p95_ms == 96
    assert row.duration_p95_ms is not None

    tasks.build_usage_report.delay()  # running it again changes nothing
    wait_until(
        lambda: DailyUsage.objects.get(pk=row.pk).generated_at > row.generated_at, 30, "rerun"
    )
    assert DailyUsage.objects.filter(user=user).count() == 1


def test_usage_report_is_in_the_admin(stack, client, django_user_model, user) -> None:
    DailyUsage.objects.create(
        day=timezone.now().date(), user=user, model="fake-model", requests=3, prompt_tokens=7
    )
    admin = django_user_model.objects.create_superuser("boss", "boss@example.org", "a-pass-123")
    client.force_login(admin)
    page = client.get("/admin/chat/dailyusage/")
    assert page.status_code == 200
    assert user.username in page.text and "fake-model" in page.text


def test_provider_health_check_refreshes_the_model_list(stack, settings) -> None:
    # Discover the endpoint's models instead of configuring them.
    settings.LLM_MODELS = []
    settings.DEFAULT_MODEL = ""
    assert [m.id for m in available_models()] == ["demo"]
    tasks.check_providers.delay()
    wait_until(lambda: ProviderCheck.objects.filter(provider="openai").exists(), 30, "the check")
    check = ProviderCheck.objects.get(provider="openai")
    assert check.ok and check.model_count == 2
    assert ProviderCheck.objects.get(provider="demo").ok
    assert set(ProviderModel.objects.values_list("name", flat=True)) == {
        "demo", "fake-model", "fake-large",
    }  # fmt: skip
    assert [m.id for m in available_models()] == ["demo", "fake-large", "fake-model"]


def test_reaper_ends_stuck_replies_and_tells_the_user(
    chat: ChatSocket, conversation, redis_admin
) -> None:
    user_message = Message.objects.create(conversation=conversation, role="user", content="q")
    stuck = Message.objects.create(
        conversation=conversation, role="assistant", reply_to=user_message, model="fake-model",
        status="generating", started_at=timezone.now() - dt.timedelta(hours=2),
    )  # fmt: skip
    # What its lost worker streamed: a first try, a reset (the redelivery), then the new text.
    streamed = [("Forgotten ", False), ("", True), ("Half of ", False), ("an answer", False)]
    for seq, (text, reset) in enumerate(streamed, 1):
        fields = {"reset": True} if reset else {}
        frame = server_frame("delta", reply_id=stuck.pk, seq=seq, text=text, **fields)
        redis_admin["channel_layer"].xadd(
            replystream.stream_key(stuck.pk), {"f": json.dumps(frame)}, id=f"0-{seq}"
        )
    fresh_message = Message.objects.create(conversation=conversation, role="user", content="q2")
    fresh = Message.objects.create(
        conversation=conversation, role="assistant", reply_to=fresh_message, model="fake-model",
        status="generating", started_at=timezone.now(),
    )  # fmt: skip
    tasks.reap_stuck_replies.delay()
    error = chat.recv_until(lambda f: f.get("reply_id") == stuck.pk and f["type"] != "delta")
    assert error["type"] == "error"
    assert error["code"] == "stuck"
    # The text its readers saw stays, in the frame and in the database.
    assert (error["seq"], error["content"]) == (len(streamed) + 1, "Half of an answer")
    stuck.refresh_from_db()
    assert stuck.status == Message.Status.ERROR
    assert stuck.content == "Half of an answer"
    fresh.refresh_from_db()
    assert fresh.status == Message.Status.GENERATING


def test_ensure_user_reports_whether_it_changed_anything(transactional_db, monkeypatch) -> None:
    def ensure(password: str) -> str:
        monkeypatch.setenv("PARLEY_TEST_ADMIN_PASSWORD", password)
        out = io.StringIO()
        call_command(
            "ensure_user",
            "root",
            "--password-env",
            "PARLEY_TEST_ADMIN_PASSWORD",
            "--superuser",
            stdout=out,
        )
        return out.getvalue().strip()

    assert ensure("first-Password-1") == "created user root"
    assert ensure("first-Password-1") == "unchanged user root"
    assert ensure("second-Password-2") == "updated user root"
    admin = get_user_model().objects.get(username="root")
    assert admin.is_superuser and admin.check_password("second-Password-2")
