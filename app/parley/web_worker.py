"""The Uvicorn worker Gunicorn runs: it drains for a moment before it closes connections.

Uvicorn's shutdown stops accepting and then at once closes every connection that has not
sent a request yet. A connection the worker accepted a moment before, whose request bytes
are still on their way, is then closed with data unread and the client sees a reset: one
failed request per restart and worker, under load. Waiting briefly between "stop accepting"
and "close idle connections" lets such requests arrive and be answered; connections still in
the kernel's queue were never accepted by this worker and go to the next one on the same
(systemd-held) socket.

WebSockets need one more wait. Uvicorn's shutdown answers a handshake the app has not decided
yet (the consumer is still checking the session and the conversation) with HTTP 500; only
sockets already open get the 1012 close a client reconnects after. So the worker also waits,
for at most HANDSHAKE_WAIT_SECONDS, until no handshake is under way: each then ends as an open
socket closed with 1012 (the page reconnects and resumes) or as the app's own refusal. This
happens at every restart and every `max_requests` recycling, under load many times an hour.
"""

from __future__ import annotations

import asyncio
import os
import socket
import sys

from gunicorn.arbiter import Arbiter
from uvicorn.server import Server
from uvicorn_worker import UvicornWorker

DRAIN_SECONDS = int(os.environ.get("PARLEY_SHUTDOWN_DRAIN_MS", "500")) / 1000
HANDSHAKE_WAIT_SECONDS = 10.0


def handshake_under_way(connection: object) -> bool:
    """A WebSocket connection whose handshake the app has not answered yet (any of Uvicorn's
    WebSocket implementations; HTTP connections are never one)."""
    complete = getattr(connection, "handshake_complete", None)
    if complete is None:
        event = getattr(connection, "handshake_completed_event", None)
        if event is None:
            return False
        complete = event.is_set()
    transport = getattr(connection, "transport", None)
    closing = transport is None or transport.is_closing()
    return not complete and getattr(connection, "initial_response", None) is None and not closing


class DrainingServer(Server):
    async def shutdown(self, sockets: list[socket.socket] | None = None) -> None:
        for server in self.servers:
            server.close()
        for sock in sockets or []:
            sock.close()
        await asyncio.sleep(DRAIN_SECONDS)
        deadline = asyncio.get_running_loop().time() + HANDSHAKE_WAIT_SECONDS
        # Polled: Uvicorn's connections signal nothing when their app answers the handshake.
        while asyncio.get_running_loop().time() < deadline and any(  # noqa: ASYNC110
            handshake_under_way(c) for c in list(self.server_state.connections)
        ):
            await asyncio.sleep(0.05)
        await super().shutdown()


class DrainingUvicornWorker(UvicornWorker):
    """UvicornWorker serving with DrainingServer (same as its _serve otherwise)."""

    async def _serve(self) -> None:
        self.config.app = self.wsgi
        server = DrainingServer(config=self.config)
        self._install_sigquit_handler()
        await server.serve(sockets=self.sockets)
        if not server.started:
            sys.exit(Arbiter.WORKER_BOOT_ERROR)
