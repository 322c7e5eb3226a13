"""The designs compared, what serves each, and which processes are charged for its work."""

from __future__ import annotations

from dataclasses import dataclass

from parleybench.config import Ports

SHARED = ("postgres", "redis-broker", "redis-channels", "fakellm", "nginx")


@dataclass(frozen=True)
class Design:
    key: str
    title: str
    # The backend behind nginx; None for the floor, which talks to the fake model directly.
    backend_port: int | None
    # Process roles sampled while this design is loaded (see Stack.roots).
    roles: tuple[str, ...]
    # The broker database its Celery tasks queue in; None without Celery.
    queue_db: int | None = None
    # Its Celery worker's process role and metrics port (replies in flight); None without.
    worker: str | None = None
    worker_metrics_port: int | None = None

    @property
    def through_app(self) -> bool:
        return self.backend_port is not None


def all_designs(ports: Ports) -> dict[str, Design]:
    designs = [
        Design(
            "a",
            "Parley as deployed: nginx → Gunicorn+Uvicorn → Channels → signal → Celery "
            "(threads pool, many replies on one event loop) → channel layer",
            ports.parley,
            ("web-a", "celery", *SHARED),
            queue_db=0,
            worker="celery",
            worker_metrics_port=ports.worker_metrics,
        ),
        Design(
            "b",
            "the same app under Daphne (Celery as in a)",
            ports.daphne,
            ("web-b", "celery", *SHARED),
            queue_db=0,
            worker="celery",
            worker_metrics_port=ports.worker_metrics,
        ),
        Design(
            "c",
            "generation in-process in the consumer, no Celery",
            ports.inprocess,
            ("web-c", *SHARED),
        ),
        Design(
            "d", "the floor: the openai client reading the fake model directly", None, ("fakellm",)
        ),
        Design(
            "a1",
            "a with one channel-layer message per token (PARLEY_STREAM_FLUSH_TOKENS=1)",
            ports.per_token,
            ("web-a1", "celery-a1", *SHARED),
            queue_db=1,
            worker="celery-a1",
            worker_metrics_port=ports.worker_metrics_per_token,
        ),
        Design(
            "p",
            "a with the prefork worker of before: one reply per pool process",
            ports.prefork,
            ("web-p", "celery-p", *SHARED),
            queue_db=2,
            worker="celery-p",
            worker_metrics_port=ports.worker_metrics_prefork,
        ),
    ]
    return {design.key: design for design in designs}


def rotated(keys: list[str], turn: int) -> list[str]:
    """The designs in rotating order, so none always runs first (or right after another)."""
    shift = turn % len(keys)
    return keys[shift:] + keys[:shift]
