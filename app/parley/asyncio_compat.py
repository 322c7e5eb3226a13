"""Python 3.11's `asyncio.wait_for` can lose a cancellation; every Parley process replaces it.

`install()`, run by `parley/__init__.py` before any event loop starts, puts in the Python 3.12
`wait_for` (the awaitable runs in the caller's task inside `asyncio.timeout`), so a cancelled
Redis receive always ends; on 3.12 and later it does nothing. Why:
docs/decisions/0003-asyncio-wait-for-on-python-3-11.md.
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
