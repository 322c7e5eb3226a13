"""Python 3.11's `asyncio.wait_for` can lose a cancellation; every Parley process replaces it.

Before Python 3.12, `wait_for` runs its awaitable as a separate task. When the task that
waits is cancelled in the same loop iteration in which that inner task finishes, `wait_for`
returns the inner result and the cancellation is gone (CPython gh-86296, fixed in 3.12 by
rewriting `wait_for` on `asyncio.timeout`). redis-py wraps every command it sends in
`wait_for` once a socket timeout is set, and channels-redis cancels a socket's pending
`receive` when the socket closes. A receive that loses its cancellation this way goes on
polling Redis (BZPOPMIN every 5 s) for a socket that is gone. While the process runs nobody
notices; when a web worker stops, Uvicorn waits for that task, which never ends. The worker
accepts nothing until Gunicorn kills it for its timeout (60 s). Two workers of a host stopping
together at `max_requests` then left the host silent for 30 s and more (found by the fleet's
tests: every worker with open sockets hung like this when it was recycled).

Debian 12 ships Python 3.11, so `install()` (run by `parley/__init__.py`, before any event
loop starts) puts in the 3.12 behaviour: the awaitable runs in the caller's own task inside
`asyncio.timeout`, so a cancellation always reaches it. On 3.12 and later it does nothing.
"""

from __future__ import annotations

import asyncio
import sys
from collections.abc import Awaitable
from typing import TypeVar

T = TypeVar("T")


async def wait_for(awaitable: Awaitable[T], timeout: float | None) -> T:  # noqa: ASYNC109
    """`asyncio.wait_for` as Python 3.12 defines it."""
    if timeout is not None and timeout <= 0:
        future = asyncio.ensure_future(awaitable)
        if not future.done():
            future.cancel()
            await asyncio.wait({future})
        try:
            return future.result()
        except asyncio.CancelledError as error:
            raise TimeoutError from error
    async with asyncio.timeout(timeout):
        return await awaitable


def install() -> None:
    if sys.version_info < (3, 12):
        asyncio.wait_for = wait_for  # type: ignore[assignment]
        asyncio.tasks.wait_for = wait_for  # type: ignore[assignment]
