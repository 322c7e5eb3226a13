"""One worker process writes many replies at once, and keeps every guarantee while it does.

The worker runs as roles/celery deploys it: Celery's `threads` pool, each task handing its
reply to the process's one event loop (`parley.worker_loop`).
"""

from __future__ import annotations

import asyncio
import os
import signal
import time

import pytest
from django.db import connection
from django_celery_beat.models import IntervalSchedule, PeriodicTask

from chat.cancelwatch import BACKSTOP_SECONDS
from chat.models import Message
from tests.chatclient import ChatSocket, assert_contiguous, delta_text
from tests.conftest import fake_llm_request
from tests.crowd import Crowd, people
from tests.processes import WORKER_REPLIES_IN_FLIGHT, start_beat, start_worker
from tests.timing import patience


def _completed_once_each(chats: list) -> None:
    """Every reply ended complete, its frames in order, its text the stored one, stored once."""
    for chat in chats:
        frames = chat.reply_frames()
        end = chat.end
        assert end is not None and end["type"] == "done" and end["status"] == "complete", end
        assert_contiguous(frames)
        assert delta_text(frames) == end["content"]
        replies = Message.objects.filter(reply_to_id=chat.message_id)
        assert replies.count() == 1, f"reply to {chat.message_id} stored {replies.count()} times"
        assert replies.get().content == end["content"]


def _signal_mid_reply(
    persons: list, message: str, pid: int, signum: signal.Signals, end_within: float
) -> list:
    """Each person sends `message` at once; once every reply has streamed a first delta, the
    worker `pid` gets `signum`; returns the chats once every reply has ended."""

    async def scenario() -> list:
        async with Crowd(persons) as crowd:
            await crowd.send_all(message)
            await crowd.wait_for(lambda c: c.first_delta_at is not None, 60, "a first delta")
            os.kill(pid, signum)
            await crowd.wait_for(lambda c: c.end is not None, end_within, "the end of its reply")
            return crowd.chats

    return asyncio.run(scenario())


@pytest.mark.timeout(patience(400))
def test_a_hundred_replies_stream_at_once_from_one_worker(stack, django_user_model) -> None:
    """The fake model holds every first token until 100 of its streams are open at once, so
    the replies complete in time only if one worker keeps all 100 model calls open together
    (a prefork pool of a few processes would hold them back in Celery's queue)."""
    count = 100
    assert count <= WORKER_REPLIES_IN_FLIGHT
    persons = people(count, django_user_model)

    async def scenario() -> list:
        async with Crowd(persons) as crowd:
            await crowd.send_all(f"together [fakellm:hold={count} ttft-ms=200 tps=20 tokens=40]")
            # Longer than the model's hold limit (120 s): if the stack cannot keep 100 calls
            # open, the model releases them late and the figure below says how many it saw.
            await crowd.wait_for(lambda c: c.end is not None, 200, "the end of its reply")
            return crowd.chats

    chats = asyncio.run(scenario())
    stats = fake_llm_request("GET", "/_fakellm/stats")
    assert stats["most_open_streams"] >= count, f"the model saw at most {stats} at once"
    _completed_once_each(chats)
    assert all(len(chat.end["content"].split()) == 40 for chat in chats)


def test_a_stop_closes_the_model_stream_with_a_hundred_replies_in_flight(
    stack, django_user_model
) -> None:
    """Every one of 100 streaming replies is stopped at once. Bound: each model stream is
    closed within BACKSTOP_SECONDS of the stop's ack (the web tier has then stored and
    published the stop; the worker's shared watch reads every stop key that often even if
    the publish were lost)."""
    count = 100
    persons = people(count, django_user_model)

    async def scenario() -> tuple[list, list[float], list[float]]:
        async with Crowd(persons) as crowd:
            await crowd.send_all("long [fakellm:tokens=2000 tps=20]")
            await crowd.wait_for(lambda c: c.first_delta_at is not None, 60, "a first delta")
            first_sent = time.time()
            stops = {}
            for chat in crowd.chats:
                stops[chat.reply_id] = await crowd.send(
                    chat, {"type": "cancel", "reply_id": chat.reply_id}
                )

            def ack(chat: object) -> dict | None:
                return next((f for f in chat.frames if f.get("id") == stops[chat.reply_id]), None)

            await crowd.wait_for(ack, 60, "the ack of its stop")
            await crowd.wait_for(lambda c: c.end is not None, 60, "the end of its reply")
            return crowd.chats, first_sent, [ack(chat)["_wall"] for chat in crowd.chats]

    chats, first_sent, acked = asyncio.run(scenario())
    closed = sorted(
        (r["ended_at"], r["outcome"]) for r in fake_llm_request("GET", "/_fakellm/requests")
    )
    assert len(closed) == count and {o for _, o in closed} == {"client_disconnected"}, closed
    last_ack, latest_close = max(acked), closed[-1][0]
    assert latest_close - last_ack <= BACKSTOP_SECONDS, (
        f"the last model stream closed {latest_close - last_ack:.2f} s after the last stop's "
        f"ack (bound {BACKSTOP_SECONDS} s, the cancel watch's backstop); the {count} stops "
        f"were sent and acked within {last_ack - first_sent:.2f} s, the streams closed within "
        f"{latest_close - first_sent:.2f} s of the first stop"
    )
    for chat in chats:
        assert chat.end["type"] == "done" and chat.end["status"] == "cancelled", chat.end
        assert Message.objects.get(pk=chat.reply_id).status == Message.Status.CANCELLED


def test_a_hanging_model_ends_at_the_reply_deadline_without_celery_time_limits(
    chat: ChatSocket, worker_process, service_env
) -> None:
    """The threads pool enforces no Celery time limit: the reply's own deadline,
    PARLEY_REPLY_SOFT_TIME_LIMIT minus 5 s from the task's start, must end it. The model
    read timeout is set far beyond, so only the deadline can."""
    worker_process["worker"].stop()
    soft_limit, hard_limit = 10, 30
    limited = start_worker(
        {
            **service_env,
            "PARLEY_REPLY_SOFT_TIME_LIMIT": str(soft_limit),
            "PARLEY_REPLY_TIME_LIMIT": str(hard_limit),
            "PARLEY_LLM_TIMEOUT": "300",
        },
        name="worker-deadline",
    )
    try:
        sent_at = time.monotonic()
        ack = chat.send_message("say nothing [fakellm:hang]")
        end = chat.reply_frames(ack["reply_id"], timeout=hard_limit)[-1]
        elapsed = time.monotonic() - sent_at
    finally:
        limited.stop()
    assert (end["type"], end.get("code")) == ("error", "too_long"), end
    deadline = soft_limit - 5
    assert deadline <= elapsed < hard_limit, (
        f"the reply ended {elapsed:.1f} s after it was sent; its deadline is {deadline} s "
        f"after the task started (soft limit {soft_limit} s - 5 s), the hard limit {hard_limit} s"
    )
    [record] = fake_llm_request("GET", "/_fakellm/requests")
    assert record["outcome"] == "client_disconnected"  # the model's stream was closed


def _reap_every_second() -> None:
    every, _ = IntervalSchedule.objects.get_or_create(every=1, period="seconds")
    PeriodicTask.objects.create(name="reap", task="chat.reap_stuck_replies", interval=every)


def _handed_over(chats: list) -> None:
    """Every reply ended complete, its readers told to start over, stored once."""
    _completed_once_each(chats)
    for chat in chats:
        assert any(f.get("reset") for f in chat.reply_frames()), "not told to start over"
        assert Message.objects.get(pk=chat.reply_id).attempt == 2
    assert not Message.objects.filter(status__in=Message.UNFINISHED).exists()


def test_a_killed_worker_restarted_takes_over_every_reply_it_was_writing(
    stack, django_user_model, worker_process, service_env
) -> None:
    """SIGKILL of the worker process with 40 replies streaming; it is started again a second
    later (systemd's Restart= does it in production). The new process, under the same Celery
    node name, takes over at once every reply the dead one had locked."""
    worker_process["worker"].stop()
    doomed = start_worker(service_env, name="worker-killed", supervised=True)
    persons = people(40, django_user_model)

    try:
        # A wait, not a bound: the restart and a 6 s reply.
        chats = _signal_mid_reply(
            persons,
            "outlive the worker [fakellm:tokens=120 tps=20]",
            doomed.pid,
            signal.SIGKILL,
            90,
        )
    finally:
        doomed.stop()
    assert doomed.restarts >= 1
    assert "Taking over 40 replies" in doomed.log_text()
    _handed_over(chats)


def test_the_reaper_hands_the_replies_of_a_lost_worker_to_another(
    stack, django_user_model, worker_process, service_env
) -> None:
    """SIGKILL of a worker that nothing restarts (its host is gone) with 20 replies
    streaming, another worker alive. The reaper, run by Beat every second, finds each reply
    generating with its lock gone at two looks PARLEY_REPLY_LOCK_TTL apart and queues it
    again; the live worker writes it."""
    worker_process["worker"].stop()
    doomed = start_worker(service_env, name="worker-lost")
    _reap_every_second()
    persons = people(20, django_user_model)
    survivor = None

    async def scenario() -> list:
        nonlocal survivor
        async with Crowd(persons) as crowd:
            await crowd.send_all("outlive the host [fakellm:tokens=120 tps=20]")
            await crowd.wait_for(lambda c: c.first_delta_at is not None, 60, "a first delta")
            os.kill(doomed.pid, signal.SIGKILL)
            survivor = start_worker(service_env, name="worker-survivor")
            beat = start_beat(service_env, "beat-reaper")
            try:
                # A wait, not a bound: two looks a lock's lifetime apart, then a 6 s reply.
                await crowd.wait_for(lambda c: c.end is not None, 120, "the end of its reply")
            finally:
                beat.stop()
            return crowd.chats

    try:
        chats = asyncio.run(scenario())
    finally:
        doomed.stop()
        if survivor is not None:
            survivor.stop()
    _handed_over(chats)


def test_a_warm_shutdown_lets_the_replies_in_flight_finish(
    stack, django_user_model, worker_process, service_env
) -> None:
    """SIGTERM (what systemd sends on a deploy's restart) with 20 replies streaming: the
    worker takes no new task, finishes every reply in flight, then exits by itself."""
    worker_process["worker"].stop()
    stopping = start_worker(service_env, name="worker-warm")
    persons = people(20, django_user_model)

    try:
        chats = _signal_mid_reply(
            persons, "finish me [fakellm:tokens=60 tps=20]", stopping.pid, signal.SIGTERM, 60
        )
        exit_code = stopping.popen.wait(30)
    finally:
        stopping.stop()
    assert exit_code == 0, stopping.log_text()[-2000:]
    _completed_once_each(chats)
    for chat in chats:
        assert not any(f.get("reset") for f in chat.reply_frames())
        assert Message.objects.get(pk=chat.reply_id).attempt == 1


@pytest.fixture
def database_sessions():
    def count() -> int:
        with connection.cursor() as cursor:
            cursor.execute(
                "SELECT sessions FROM pg_stat_database WHERE datname = current_database()"
            )
            return cursor.fetchone()[0]

    return count


def test_replies_open_no_new_connection_once_warm(
    chat: ChatSocket, redis_admin, database_sessions
) -> None:
    """After a few replies have warmed the web and worker processes up, five more open no
    new connection to the model, to either Redis, or to PostgreSQL: the clients and pools
    live as long as the processes. The warm-up replies last a few lock renewals each, so the
    pools have grown to what one reply uses at once (a renewal, a stop check and a frame)."""
    for number in range(3):
        warm = chat.send_message(f"warm up {number} [fakellm:tokens=45 tps=30]")
        chat.reply_frames(warm["reply_id"])
    warm_requests = fake_llm_request("GET", "/_fakellm/requests")
    fake_llm_request("POST", "/_fakellm/reset")

    def redis_connections() -> dict[str, int]:
        return {
            name: client.info("stats")["total_connections_received"]
            for name, client in redis_admin.items()
        }

    redis_before, database_before = redis_connections(), database_sessions()
    for number in range(5):
        ack = chat.send_message(f"again {number}")
        assert chat.reply_frames(ack["reply_id"])[-1]["type"] == "done"
    requests = fake_llm_request("GET", "/_fakellm/requests")
    assert len(requests) == 5
    redis_after, database_after = redis_connections(), database_sessions()
    opened = {
        "model": len(
            {r["connection"] for r in requests} - {r["connection"] for r in warm_requests}
        ),
        "postgresql": database_after - database_before,
        **{f"redis {name}": redis_after[name] - redis_before[name] for name in redis_after},
    }
    assert set(opened.values()) == {0}, f"new connections during five replies: {opened}"
