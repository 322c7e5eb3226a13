"""Parley: a chat web endpoint where signed-in people talk to a large language model."""

# First, before any event loop runs in this process (web, worker, beat or manage.py).
from parley import asyncio_compat

asyncio_compat.install()

from parley.celery import app as celery_app  # noqa: E402

__all__ = ["celery_app"]
