#!/usr/bin/python3
"""Stand-in for the web tier in the edge scenario, on python3-websockets 10 (Debian 12).

One port, like Gunicorn with Uvicorn workers: WebSocket upgrades on any path are echoed
frame by frame (no Origin check: refusing foreign origins is nginx's job under test); plain
GET requests get JSON describing the request as it arrived, so tests see what nginx
forwarded; /static/... answers like WhiteNoise (long-lived cache headers) and counts its
hits, so tests can tell a cached answer from a fresh one. Every answer carries weaker
security headers than nginx's, so tests can see nginx replace them.
"""

from __future__ import annotations

import asyncio
import collections
import http
import json
import socket

import websockets
from websockets.datastructures import Headers

PORT = 8000
STATIC_CACHE_CONTROL = "max-age=315360000, public, immutable"
hits: collections.Counter[str] = collections.Counter()


def respond(status: http.HTTPStatus, content_type: str, body: bytes, extra: list | None = None):
    headers = [
        ("Content-Type", content_type),
        ("Content-Length", str(len(body))),
        # websockets closes the connection after a plain HTTP answer; say so, so nginx does
        # not keep it for reuse.
        ("Connection", "close"),
        ("X-Frame-Options", "SAMEORIGIN"),
        ("Content-Security-Policy", "default-src *"),
        ("X-Upstream-Host", socket.gethostname()),
    ]
    return status, headers + (extra or []), body


async def answer_http(path: str, request_headers: Headers):
    if request_headers.get("Upgrade", "").lower() == "websocket":
        return None  # carry on with the WebSocket handshake
    hits[path] += 1
    if path.startswith("/static/"):
        body = f"/* static file {path} */\n".encode()
        extra = [("Cache-Control", STATIC_CACHE_CONTROL), ("X-Upstream-Hits", str(hits[path]))]
        return respond(http.HTTPStatus.OK, "text/javascript", body, extra)
    description = {
        "path": path,
        "headers": {name.lower(): value for name, value in request_headers.raw_items()},
        "upstream": socket.gethostname(),
        "hits": hits[path],
    }
    return respond(http.HTTPStatus.OK, "application/json", json.dumps(description).encode())


async def echo(websocket, path: str) -> None:
    async for message in websocket:
        await websocket.send(message)


async def main() -> None:
    # No host: every address, as nginx on the lb hosts reaches it over the scenario network.
    async with websockets.serve(echo, None, PORT, process_request=answer_http):
        await asyncio.Future()


if __name__ == "__main__":
    asyncio.run(main())
