"""parley.asyncio_compat: a cancellation always reaches the task that waits in wait_for."""

from __future__ import annotations

import asyncio

import pytest

import parley  # noqa: F401  (installs the replacement, as every process of ours does)
from parley.asyncio_compat import wait_for


async def at_once() -> int:
    return 1


def cancelled_while_waiting(wait: object) -> bool:
    """Whether a task cancelled in the loop iteration in which the awaitable it waits for
    finishes ends cancelled (the stdlib's 3.11 wait_for returns the result instead, and the
    task goes on into its next wait as if never cancelled)."""

    async def caller() -> None:
        await wait(at_once(), 10)  # type: ignore[operator]
        await asyncio.sleep(10)

    async def main() -> bool:
        task = asyncio.create_task(caller())
        await asyncio.sleep(0)
        task.cancel()
        await asyncio.wait({task}, timeout=2)
        if not task.done():
            task.cancel()
            await asyncio.wait({task}, timeout=2)
            return False
        return task.cancelled()

    return asyncio.run(main())


def test_a_cancellation_during_wait_for_cancels_the_task() -> None:
    assert cancelled_while_waiting(wait_for)


def test_every_process_of_ours_uses_it() -> None:
    assert asyncio.wait_for is wait_for
    assert cancelled_while_waiting(asyncio.wait_for)


def test_it_still_times_out() -> None:
    async def slow() -> None:
        await asyncio.sleep(5)

    with pytest.raises(TimeoutError):
        asyncio.run(wait_for(slow(), 0.05))
    with pytest.raises(TimeoutError):
        asyncio.run(wait_for(slow(), 0))
    assert asyncio.run(wait_for(at_once(), None)) == 1
