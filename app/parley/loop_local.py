"""Values made once per event loop: clients whose connections belong to the loop that opened them.

A web worker and a Celery worker each keep one loop for their whole life, so each of these is
made once per process; a short-lived loop (a management command, a test) gets its own and
closes it with `close_loop_locals()` before it ends.
"""

from __future__ import annotations

import asyncio
import weakref
from collections.abc import Awaitable, Callable
from typing import Generic, TypeVar

T = TypeVar("T")

# Every LoopLocal, in the order made: closed in reverse, so a value closes before what it uses.
_every: list[LoopLocal[object]] = []


class LoopLocal(Generic[T]):
    """`get()` returns this loop's value, made by `factory` on first use; `close` ends it."""

    def __init__(self, factory: Callable[[], T], close: Callable[[T], Awaitable[object]]) -> None:
        self.factory = factory
        self.close_value = close
        self.values: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, T] = (
            weakref.WeakKeyDictionary()
        )
        _every.append(self)  # type: ignore[arg-type]

    def get(self) -> T:
        loop = asyncio.get_running_loop()
        value = self.values.get(loop)
        if value is None:
            value = self.values[loop] = self.factory()
        return value

    def peek(self) -> T | None:
        """This loop's value if it was made, without making it."""
        return self.values.get(asyncio.get_running_loop())

    async def close(self) -> None:
        value = self.values.pop(asyncio.get_running_loop(), None)
        if value is not None:
            await self.close_value(value)


async def close_loop_locals() -> None:
    """Close every value the running loop holds; call before the loop ends."""
    for local in reversed(_every):
        await local.close()
