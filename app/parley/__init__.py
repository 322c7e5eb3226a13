"""Parley: a chat web endpoint where signed-in people talk to a large language model."""

from parley.celery import app as celery_app

__all__ = ["celery_app"]
