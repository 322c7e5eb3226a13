"""Operations endpoints: /healthz (process alive), /readyz (dependencies), /metrics."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable

from asgiref.sync import sync_to_async
from django.conf import settings
from django.db import connection
from django.http import HttpRequest, HttpResponse, JsonResponse
from django.views.decorators.cache import never_cache

from parley import metrics

CHECK_TIMEOUT_SECONDS = 3.0
# Checks reported by /readyz that do not make it fail.
INFORMATIONAL = frozenset({"llm"})


@never_cache
def healthz(request: HttpRequest) -> HttpResponse:
    return JsonResponse({"status": "ok"})


def _database() -> str:
    with connection.cursor() as cursor:
        cursor.execute("SELECT 1")
        cursor.fetchone()
    connection.close()
    return "ok"


async def _redis_ping(url: str) -> str:
    import redis.asyncio as aioredis

    client = aioredis.Redis.from_url(url, socket_connect_timeout=2, socket_timeout=2)
    try:
        await client.ping()
    finally:
        await client.aclose()
    return "ok"


def _broker() -> str:
    from parley.celery import app

    with app.connection_for_write() as conn:
        conn.ensure_connection(max_retries=1, timeout=2)
        # Declaring nothing, just proving a Celery (kombu) channel can be opened as Celery would.
        conn.default_channel.client.ping()
    return "ok"


async def _llm() -> str:
    from chat.providers.registry import openai_provider

    provider = openai_provider()  # this loop's client, shared with its replies: not closed
    if provider is None:
        return "ok (demo provider only)"
    models = await provider.list_models()
    return f"ok ({len(models)} models)"


async def _run(check: Callable[[], Awaitable[str]]) -> dict[str, object]:
    started = time.monotonic()
    try:
        detail = await asyncio.wait_for(check(), CHECK_TIMEOUT_SECONDS)
        ok = True
    except Exception as error:
        detail, ok = f"{type(error).__name__}: {error}"[:300], False
    return {"ok": ok, "detail": detail, "ms": round((time.monotonic() - started) * 1000)}


@never_cache
async def readyz(request: HttpRequest) -> HttpResponse:
    """200 when the web tier can serve (PostgreSQL and both Redis answer), else 503; the body
    names each check. The model's endpoint is reported, not required: without it pages,
    history and sign-in still work and each reply ends with a clear error, so an outage of
    the provider must not take every web host out of the load balancer or stop a deploy."""
    checks: dict[str, Callable[[], Awaitable[str]]] = {
        "database": sync_to_async(_database, thread_sensitive=False),
        "redis_channel_layer": lambda: _redis_ping(settings.CHANNEL_LAYER_URL),
        "redis_broker": lambda: _redis_ping(settings.CELERY_BROKER_URL),
        "broker": sync_to_async(_broker, thread_sensitive=False),
        "llm": _llm,
    }
    results = await asyncio.gather(*(_run(check) for check in checks.values()))
    body = dict(zip(checks, results, strict=True))
    healthy = all(result["ok"] for name, result in body.items() if name not in INFORMATIONAL)
    return JsonResponse(
        {"status": "ok" if healthy else "unavailable", "checks": body},
        status=200 if healthy else 503,
    )


@never_cache
def metrics_endpoint(request: HttpRequest) -> HttpResponse:
    payload, content_type = metrics.exposition()
    return HttpResponse(payload, content_type=content_type)
