"""A worker killed mid-reply, and model endpoints that fail: the user always gets an answer.

(A worker killed with many replies in flight, and a warm shutdown: test_replies_at_scale.)
"""

from __future__ import annotations

import os
import signal

from chat.models import Message
from chat.tasks import generate_reply
from tests.chatclient import ChatSocket, assert_contiguous, delta_text
from tests.conftest import fake_llm_request
from tests.processes import start_worker
from tests.timing import patience


def test_a_prefork_pool_process_killed_mid_reply_is_redelivered_at_once(
    chat: ChatSocket, worker_process, service_env
) -> None:
    """The prefork pool (the benchmark's baseline design) still writes replies, each child on
    its own loop; a child killed mid-reply makes Celery reject its task (acks_late,
    reject_on_worker_lost), and the redelivery starts the reply again, stored once."""
    worker_process["worker"].stop()
    prefork = start_worker(service_env, name="worker-prefork", pool=("prefork", 2))
    try:
        ack = chat.send_message("survive a crash [fakellm:tokens=250 tps=60]")
        reply_id = ack["reply_id"]
        chat.recv_until(lambda f: f["type"] == "delta" and f["reply_id"] == reply_id)
        children = prefork.children()
        assert children, "the prefork pool has no processes"
        for pid in children:  # one of them is writing this reply
            os.kill(pid, signal.SIGKILL)
        frames = chat.reply_frames(reply_id, timeout=90)
        assert prefork.alive()
    finally:
        prefork.stop()
    done = frames[-1]
    assert (done["type"], done["status"]) == ("done", "complete"), done
    assert_contiguous(frames)
    assert any(f.get("reset") for f in frames), "the client was not told to start over"
    # After the reset, the deltas spell exactly the stored reply: no duplicated text.
    assert delta_text(frames) == done["content"]
    assert len(done["content"].split()) == 250
    replies = Message.objects.filter(reply_to_id=ack["message_id"])
    assert replies.count() == 1, "a redelivered task stored a second reply"
    reply = replies.get()
    assert (reply.status, reply.attempt, reply.content) == ("complete", 2, done["content"])


def test_whole_worker_killed_is_redelivered_after_the_visibility_timeout(
    chat: ChatSocket, worker_process, service_env
) -> None:
    """The worker's host dies: nothing is left to reject the task, and no Beat runs to hand
    it over; acks_late keeps it in the broker, which gives it to the next worker once the
    visibility timeout has passed. The redelivery starts the reply again, stored once."""
    worker_process["worker"].stop()  # only workers with the short timeouts below take part
    short = {
        **service_env,
        "PARLEY_REPLY_TIME_LIMIT": "12",
        "PARLEY_REPLY_SOFT_TIME_LIMIT": "10",
        "PARLEY_BROKER_VISIBILITY_TIMEOUT": "14",
    }
    doomed = start_worker(short, name="worker-doomed")
    try:
        ack = chat.send_message("outlive the host [fakellm:tokens=120 tps=60]")
        chat.recv_until(lambda f: f["type"] == "delta" and f["reply_id"] == ack["reply_id"])
        os.killpg(doomed.pid, signal.SIGKILL)
    finally:
        doomed.stop()
    successor = start_worker(short, name="worker-successor")
    try:
        # A wait: the visibility timeout, kombu's restore interval (10 s), then the reply.
        visibility = int(short["PARLEY_BROKER_VISIBILITY_TIMEOUT"])
        frames = chat.reply_frames(ack["reply_id"], timeout=patience(visibility + 10 + 30))
    finally:
        successor.stop()
    assert frames[-1]["type"] == "done" and frames[-1]["status"] == "complete"
    assert_contiguous(frames)
    assert delta_text(frames) == frames[-1]["content"]
    reply = Message.objects.get(reply_to_id=ack["message_id"])
    assert (reply.status, reply.attempt) == (Message.Status.COMPLETE, 2)


def test_a_reply_that_waited_for_its_lock_still_ends_before_the_soft_time_limit(
    chat: ChatSocket, conversation, worker_process, service_env, redis_admin
) -> None:
    """A redelivered reply first waits (up to PARLEY_REPLY_LOCK_TTL + 1 s) for the lock of the
    delivery before it. Its deadline (PARLEY_REPLY_SOFT_TIME_LIMIT - 5 s from the task's
    start) counts that wait, so the reply still ends in time, as an error that says so."""
    worker_process["worker"].stop()  # only the worker with the short limits below takes part
    limited = start_worker(
        {
            **service_env,
            "PARLEY_REPLY_TIME_LIMIT": "30",
            "PARLEY_REPLY_SOFT_TIME_LIMIT": "10",  # the reply's deadline: 5 s after the start
            "PARLEY_REPLY_LOCK_TTL": "8",  # the task waits for the lock for up to 9 s
        },
        name="worker-limits",
    )
    try:
        # The turn as post_message stores it, without the post_save signal that would queue
        # it, then the redelivery, sent by hand.
        question = Message.objects.create(
            conversation=conversation, role="user", content="long [fakellm:tokens=2000 tps=50]"
        )
        [reply] = Message.objects.bulk_create([
            Message(conversation=conversation, role="assistant", reply_to=question,
                    model="fake-model", status=Message.Status.PENDING),
        ])  # fmt: skip
        # The delivery before still holds the lock, for 7 s of the task's 10.
        redis_admin["channel_layer"].set(f"parley:reply:{reply.pk}:lock", "earlier", px=7_000)
        generate_reply.delay(reply.pk)
        frames = chat.reply_frames(reply.pk, timeout=25)
    finally:
        limited.stop()
    end = frames[-1]
    assert (end["type"], end.get("code")) == ("error", "too_long"), end
    reply.refresh_from_db()
    assert (reply.status, reply.error_code) == (Message.Status.ERROR, "too_long")
    assert reply.final_seq == end["seq"]


def test_rate_limited_provider_is_retried_then_succeeds(chat: ChatSocket) -> None:
    ack = chat.send_message("busy model [fakellm:429x2]")
    done = chat.reply_frames(ack["reply_id"])[-1]
    assert done["type"] == "done" and done["status"] == "complete"
    outcomes = [r["outcome"] for r in fake_llm_request("GET", "/_fakellm/requests")]
    assert outcomes == ["failed_429", "failed_429", "completed"]
    assert Message.objects.get(pk=ack["reply_id"]).status == Message.Status.COMPLETE


def test_provider_failing_for_good_ends_with_a_clear_error(chat: ChatSocket) -> None:
    ack = chat.send_message("broken model [fakellm:500]")
    frames = chat.reply_frames(ack["reply_id"])
    error = frames[-1]
    assert error["type"] == "error"
    assert error["code"] == "provider_unavailable"
    assert "HTTP 500" in error["message"]
    outcomes = [r["outcome"] for r in fake_llm_request("GET", "/_fakellm/requests")]
    assert outcomes == ["failed_500"] * 3  # the first try and two retries
    reply = Message.objects.get(pk=ack["reply_id"])
    assert reply.status == Message.Status.ERROR
    assert reply.error_code == "provider_unavailable"
    assert reply.content == ""
    # The conversation is not stuck: the next message is accepted and answered.
    again = chat.send_message("is it back?")
    assert chat.reply_frames(again["reply_id"])[-1]["type"] == "done"


def test_provider_refusing_the_request_is_not_retried(chat: ChatSocket) -> None:
    ack = chat.send_message("bad request [fakellm:400]")
    error = chat.reply_frames(ack["reply_id"])[-1]
    assert error["type"] == "error"
    assert error["code"] == "provider_rejected"
    assert "HTTP 400" in error["message"]
    assert [r["outcome"] for r in fake_llm_request("GET", "/_fakellm/requests")] == ["failed_400"]


def test_hanging_provider_times_out(chat: ChatSocket) -> None:
    ack = chat.send_message("silent model [fakellm:hang]")
    error = chat.reply_frames(ack["reply_id"], timeout=60)[-1]
    assert error["type"] == "error"
    assert error["code"] == "timeout"
    assert Message.objects.get(pk=ack["reply_id"]).status == Message.Status.ERROR
    # Not retried: a model that took the request and went silent keeps the person waiting
    # LLM_TIMEOUT once, not once per retry.
    assert len(fake_llm_request("GET", "/_fakellm/requests")) == 1


def test_disconnect_mid_stream_keeps_the_partial_reply(chat: ChatSocket) -> None:
    ack = chat.send_message("cut me off [fakellm:disconnect-after=12]")
    frames = chat.reply_frames(ack["reply_id"])
    error = frames[-1]
    assert error["type"] == "error"
    assert error["code"] == "stream_interrupted"
    # The twelve tokens that arrived are kept, once: no retry after the first token.
    assert len(error["content"].split()) == 12
    assert delta_text(frames) == error["content"]
    assert len(fake_llm_request("GET", "/_fakellm/requests")) == 1
    reply = Message.objects.get(pk=ack["reply_id"])
    assert reply.status == Message.Status.ERROR
    assert reply.content == error["content"]
    assert reply.usage_estimated
    assert reply.completion_tokens >= 12
