"""Ending a background task: every long-lived helper (a renewer, a sender, a watchdog) needs it."""

from __future__ import annotations

import asyncio
import contextlib


async def cancel_and_wait(task: asyncio.Future[object]) -> None:
    """Cancel the task and wait until it has ended; its cancellation stays inside."""
    task.cancel()
    with contextlib.suppress(asyncio.CancelledError):
        await task
