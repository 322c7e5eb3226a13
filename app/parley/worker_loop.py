"""The one event loop of a Celery worker process, on which every reply of the process runs.

A task (in a thread of Celery's `threads` pool, or the only thread of a prefork child) hands
its coroutine to this loop and waits for the result. The loop lives as long as the process,
so what is made on it (the model client, Redis clients, the channel layer's connections, the
shared cancel subscription) is made once per process and shared by every reply in flight:
a reply costs a coroutine, not a process.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextlib
import logging
import os
import threading
from collections.abc import Coroutine
from typing import Any, TypeVar

from parley.loop_local import close_loop_locals

try:
    import uvloop
except ImportError:  # requirements.in installs it on Linux only
    uvloop = None

logger = logging.getLogger(__name__)

T = TypeVar("T")
# How long stopping the loop waits for its resources to close.
CLOSE_TIMEOUT_SECONDS = 5.0

_lock = threading.Lock()
_loop: asyncio.AbstractEventLoop | None = None
_thread: threading.Thread | None = None


def _new_loop() -> asyncio.AbstractEventLoop:
    return uvloop.new_event_loop() if uvloop is not None else asyncio.new_event_loop()


def _serve(loop: asyncio.AbstractEventLoop) -> None:
    asyncio.set_event_loop(loop)
    loop.run_forever()


def event_loop() -> asyncio.AbstractEventLoop:
    """The process's loop, started on first use (after a prefork child has forked)."""
    global _loop, _thread  # noqa: PLW0603  (one loop per process, by design)
    with _lock:
        if _loop is None or _loop.is_closed():
            _loop = _new_loop()
            _thread = threading.Thread(
                target=_serve, args=(_loop,), name="parley-event-loop", daemon=True
            )
            _thread.start()
        return _loop


def run(coroutine: Coroutine[Any, Any, T], timeout: float | None = None) -> T:
    """Run the coroutine on the process's loop and wait for it; cancel it past `timeout`."""
    future = asyncio.run_coroutine_threadsafe(coroutine, event_loop())
    try:
        return future.result(timeout)
    except concurrent.futures.TimeoutError:
        future.cancel()
        with contextlib.suppress(concurrent.futures.CancelledError, Exception):
            future.result(CLOSE_TIMEOUT_SECONDS)
        raise


def stop() -> None:
    """Close what the loop holds and stop it (a worker that is shutting down)."""
    global _loop, _thread
    with _lock:
        loop, thread, _loop, _thread = _loop, _thread, None, None
    if loop is None or loop.is_closed():
        return
    closing = asyncio.run_coroutine_threadsafe(close_loop_locals(), loop)
    try:
        closing.result(CLOSE_TIMEOUT_SECONDS)
    except Exception:
        logger.warning("Closing the worker loop's clients failed", exc_info=True)
    loop.call_soon_threadsafe(loop.stop)
    if thread is not None:
        thread.join(CLOSE_TIMEOUT_SECONDS)


def _forget_after_fork() -> None:
    """A forked child inherits the parent's loop object but not its thread, and maybe a
    lock held by a thread it does not have: start anew."""
    global _loop, _thread, _lock
    _loop, _thread, _lock = None, None, threading.Lock()


os.register_at_fork(after_in_child=_forget_after_fork)
