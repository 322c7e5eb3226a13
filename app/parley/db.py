"""Database calls from async code, many at once, in a thread pool as large as the database pool.

Channels' `database_sync_to_async` runs every call of a process on one thread (its default,
thread-sensitive mode), so fifty people sending at once committed one after another, about a
second for the last on a busy 2-core host (BENCHMARKS.md, the waterfall). Each call here is
one self-contained unit of work (a transaction, or a query), so it may run on any thread;
each thread borrows a connection from the process's pool for the call and gives it back.
"""

from __future__ import annotations

import os
from collections.abc import Awaitable, Callable
from concurrent.futures import ThreadPoolExecutor
from functools import cache, wraps
from typing import ParamSpec, TypeVar

from channels.db import DatabaseSyncToAsync
from django.conf import settings

P = ParamSpec("P")
R = TypeVar("R")


@cache
def _executor() -> ThreadPoolExecutor:
    return ThreadPoolExecutor(
        max_workers=settings.DATABASE_POOL_MAX_SIZE, thread_name_prefix="parley-db"
    )


# A forked child (Gunicorn's workers, Celery's prefork pool) makes threads of its own.
os.register_at_fork(after_in_child=_executor.cache_clear)


def database_call(func: Callable[P, R]) -> Callable[P, Awaitable[R]]:
    """`func` made awaitable, run in the process's database thread pool."""

    @wraps(func)
    async def call(*args: P.args, **kwargs: P.kwargs) -> R:
        run = DatabaseSyncToAsync(func, thread_sensitive=False, executor=_executor())
        return await run(*args, **kwargs)

    return call
