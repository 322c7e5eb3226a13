"""Health, metrics and the Redis ACL contract, checked against the running processes."""

from __future__ import annotations

import urllib.request

from chat import tasks
from tests.chatclient import ChatSocket
from tests.processes import WEB_PORT, WORKER_METRICS_PORT, wait_until


def _text(url: str) -> str:
    with urllib.request.urlopen(url, timeout=5) as response:  # noqa: S310  (loopback)
        return response.read().decode()


def test_healthz(web) -> None:
    assert _text(f"http://127.0.0.1:{WEB_PORT}/healthz") == '{"status": "ok"}'


def test_metrics_from_web_and_worker(chat: ChatSocket) -> None:
    ack = chat.send_message("measure me")
    chat.reply_frames(ack["reply_id"])
    # Both Gunicorn workers' samples are aggregated (multiprocess mode).
    web = _text(f"http://127.0.0.1:{WEB_PORT}/metrics")
    assert "parley_websockets_open 1.0" in web
    assert 'parley_ws_frames_total{type="send"}' in web
    assert "parley_http_requests_total" in web

    def worker_metrics() -> str | None:
        text = _text(f"http://127.0.0.1:{WORKER_METRICS_PORT}/metrics")
        return (
            text if 'parley_replies_total{model="fake-model",status="complete"}' in text else None
        )

    text = wait_until(worker_metrics, 10, "worker metrics")
    assert "parley_reply_time_to_first_token_seconds_count" in text
    assert "parley_reply_tokens_per_second_bucket" in text


def test_task_failures_are_counted(worker) -> None:
    tasks.build_usage_report.delay("not-a-date")  # raises ValueError in the worker
    failed = 'parley_task_failures_total{task="chat.build_usage_report"}'
    wait_until(
        lambda: failed in _text(f"http://127.0.0.1:{WORKER_METRICS_PORT}/metrics"), 15, failed
    )


def _readyz_with(monkeypatch, *, llm_up: bool, redis_up: bool) -> tuple[int, dict]:
    """/readyz's verdict with each dependency's check replaced by an answer or a failure."""
    import asyncio
    import json

    from django.test import RequestFactory

    from parley import ops

    def fail(*_: object) -> str:
        raise ConnectionError("down")

    async def afail(*_: object) -> str:
        raise ConnectionError("down")

    async def aok(*_: object) -> str:
        return "ok"

    monkeypatch.setattr(ops, "_database", lambda: "ok")
    monkeypatch.setattr(ops, "_broker", lambda: "ok" if redis_up else fail())
    monkeypatch.setattr(ops, "_redis_ping", aok if redis_up else afail)
    monkeypatch.setattr(ops, "_llm", aok if llm_up else afail)
    response = asyncio.run(ops.readyz(RequestFactory().get("/readyz")))
    return response.status_code, json.loads(response.content)


def test_readyz_reports_but_does_not_fail_on_the_model_endpoint(monkeypatch) -> None:
    status, body = _readyz_with(monkeypatch, llm_up=False, redis_up=True)
    assert status == 200 and body["status"] == "ok", body
    assert body["checks"]["llm"]["ok"] is False


def test_readyz_fails_when_redis_is_down(monkeypatch) -> None:
    status, body = _readyz_with(monkeypatch, llm_up=True, redis_up=False)
    assert status == 503 and body["status"] == "unavailable", body
