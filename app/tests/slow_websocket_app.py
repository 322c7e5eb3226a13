"""An ASGI app whose WebSocket handshake takes a while to decide, as the chat consumer's does
under load (session, conversation and channel-layer lookups): test_web_worker.py restarts
the worker while one is under way. GET /linger/ answers, then goes on waiting for nothing,
as a task that lost its cancellation does."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from typing import Any

HANDSHAKE_SECONDS = 1.5
# Printed (to the server's log) when a handshake starts deciding: the test waits for it.
DECIDING = "slow_websocket_app: deciding a handshake"

Receive = Callable[[], Awaitable[dict[str, Any]]]
Send = Callable[[dict[str, Any]], Awaitable[None]]


async def app(scope: dict[str, Any], receive: Receive, send: Send) -> None:
    if scope["type"] == "http":
        await send({"type": "http.response.start", "status": 200, "headers": []})
        await send({"type": "http.response.body", "body": b"ok"})
        if scope["path"] == "/linger/":
            await asyncio.Event().wait()
    elif scope["type"] == "websocket":
        await receive()  # websocket.connect
        print(DECIDING, flush=True)
        await asyncio.sleep(HANDSHAKE_SECONDS)
        await send({"type": "websocket.accept"})
        while (await receive())["type"] != "websocket.disconnect":
            pass
