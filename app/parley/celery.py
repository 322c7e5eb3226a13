"""The Celery application: `celery -A parley worker` and `celery -A parley beat` run from app/."""

from __future__ import annotations

import logging
import os

from celery import Celery
from celery.signals import worker_init, worker_process_init, worker_shutdown

from parley import worker_loop

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "parley.settings.dev")

app = Celery("parley")
app.config_from_object("django.conf:settings", namespace="CELERY")
app.autodiscover_tasks()

logger = logging.getLogger(__name__)


@worker_init.connect
def start_metrics_server(**_: object) -> None:
    """Serve the worker host's Prometheus metrics (all pool processes aggregated)."""
    from django.conf import settings

    from parley.metrics import serve_metrics

    if settings.WORKER_METRICS_BIND:
        try:
            serve_metrics(settings.WORKER_METRICS_BIND)
        except OSError as error:
            # A second worker on the same host: it still works, only without its own exporter.
            logger.warning("No worker metrics on %s: %s", settings.WORKER_METRICS_BIND, error)


@worker_process_init.connect
def forget_inherited_database_pool(**_: object) -> None:
    """Drop a psycopg pool inherited through fork, without closing it.

    Celery's Django fix-up already detaches inherited connections; a pool has sockets and
    threads of the parent's, and closing it here would close the parent's sockets too. The
    child builds its own pool on first use. Django keeps pools in a class-level dict.
    """
    from django.db import connections

    for connection in connections.all(initialized_only=True):
        pools = getattr(type(connection), "_connection_pools", None)
        if pools is not None:
            pools.pop(connection.alias, None)


@worker_shutdown.connect
def close_worker_loop(**_: object) -> None:
    """After a warm shutdown has let every reply in flight finish: close the loop's clients."""
    worker_loop.stop()
