"""Prometheus metrics shared by the web and worker processes.

Gunicorn and Celery's prefork pool both run several processes, so when
PROMETHEUS_MULTIPROC_DIR is set (gunicorn.conf.py sets it for the web; the worker's unit sets
it) prometheus_client writes per-process files and the exporters aggregate them.
"""

from __future__ import annotations

import os
from collections.abc import Awaitable, Callable
from typing import Any

from asgiref.sync import iscoroutinefunction, markcoroutinefunction
from django.http import HttpRequest, HttpResponse
from prometheus_client import (
    CONTENT_TYPE_LATEST,
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    generate_latest,
    start_http_server,
)
from prometheus_client import multiprocess as prometheus_multiprocess

HTTP_REQUESTS = Counter(
    "parley_http_requests_total", "HTTP requests answered", ["method", "status"]
)
OPEN_SOCKETS = Gauge(
    "parley_websockets_open", "WebSocket connections open", multiprocess_mode="livesum"
)
WS_FRAMES = Counter("parley_ws_frames_total", "WebSocket frames received", ["type"])
WS_ERRORS = Counter("parley_ws_errors_total", "Error frames sent to clients", ["code"])
REPLIES = Counter("parley_replies_total", "Replies finished", ["status", "model"])
TIME_TO_FIRST_TOKEN = Histogram(
    "parley_reply_time_to_first_token_seconds",
    "From the model request to its first non-empty delta",
    buckets=(0.05, 0.1, 0.25, 0.5, 1, 2, 4, 8, 16, 32),
)
TOKENS_PER_SECOND = Histogram(
    "parley_reply_tokens_per_second",
    "Completion tokens divided by the time from first to last token",
    buckets=(1, 5, 10, 20, 40, 80, 160, 320, 640),
)
REPLIES_IN_FLIGHT = Gauge(
    "parley_replies_in_flight",
    "Replies a worker is writing now",
    multiprocess_mode="livesum",
)
TOKENS = Counter("parley_tokens_total", "Tokens used", ["kind", "model"])
PROVIDER_RETRIES = Counter(
    "parley_provider_retries_total", "Model requests retried before the first token"
)
TASK_FAILURES = Counter("parley_task_failures_total", "Celery tasks that raised", ["task"])


def registry() -> CollectorRegistry:
    """The registry to export: every process's samples in multiprocess mode."""
    if os.environ.get("PROMETHEUS_MULTIPROC_DIR"):
        aggregate = CollectorRegistry()
        prometheus_multiprocess.MultiProcessCollector(aggregate)
        return aggregate
    from prometheus_client import REGISTRY

    return REGISTRY


def exposition() -> tuple[bytes, str]:
    return generate_latest(registry()), CONTENT_TYPE_LATEST


def serve_metrics(bind: str) -> None:
    """Start the worker's metrics HTTP server on host:port in a daemon thread."""
    host, _, port = bind.rpartition(":")
    start_http_server(int(port), addr=host.strip("[]") or "127.0.0.1", registry=registry())


def mark_process_dead(pid: int) -> None:
    if os.environ.get("PROMETHEUS_MULTIPROC_DIR"):
        prometheus_multiprocess.mark_process_dead(pid)


class RequestMetricsMiddleware:
    """Count HTTP requests by method and status (not by path, to keep cardinality bounded)."""

    sync_capable = True
    async_capable = True

    def __init__(self, get_response: Callable[[HttpRequest], Any]) -> None:
        self.get_response = get_response
        if iscoroutinefunction(get_response):
            markcoroutinefunction(self)

    def __call__(self, request: HttpRequest) -> HttpResponse | Awaitable[HttpResponse]:
        if iscoroutinefunction(self):
            return self._acall(request)
        response = self.get_response(request)
        HTTP_REQUESTS.labels(request.method, str(response.status_code)).inc()
        return response

    async def _acall(self, request: HttpRequest) -> HttpResponse:
        response = await self.get_response(request)
        HTTP_REQUESTS.labels(request.method, str(response.status_code)).inc()
        return response
