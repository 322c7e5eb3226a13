"""The Uvicorn worker Gunicorn runs: on shutdown it lets nginx retire its connections first.

Uvicorn's shutdown stops accepting and then at once closes every connection that is not
answering a request. nginx keeps idle connections to the app open and reuses them; one it
reuses in the instant the worker closes it fails as "upstream prematurely closed", and nginx
retries a failed request only on *another* server: with a single web host left (the other
stopped or being deployed), that request is a 502. This happens at every restart and at every
`max_requests` recycling, under load many times an hour.

So a stopping worker closes no idle connection itself for up to PARLEY_SHUTDOWN_DRAIN_MS: it
stops accepting, answers any request that still arrives on a connection it holds with
`Connection: close` (nginx then drops that connection from its pool), and waits until its peers
have closed them. nginx closes idle upstream connections after its own `keepalive_timeout`
(4 s in roles/nginx), so a drain a little longer than that ends with nothing left to race;
without traffic the drain ends as soon as the last connection is gone. Connections still in
the kernel's queue were never accepted by this worker and go to the next one on the same
(systemd-held) socket.

WebSockets need one more wait. Uvicorn's shutdown answers a handshake the app has not decided
yet (the consumer is still checking the session and the conversation) with HTTP 500; only
sockets already open get the 1012 close a client reconnects after. So the worker also waits,
for at most HANDSHAKE_WAIT_SECONDS, until no handshake is under way: each then ends as an open
socket closed with 1012 (the page reconnects and resumes) or as the app's own refusal.
"""

from __future__ import annotations

import asyncio
import os
import socket
import sys
from collections.abc import Callable
from typing import Any, ClassVar

from gunicorn.arbiter import Arbiter
from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol
from uvicorn.server import Server
from uvicorn_worker import UvicornWorker

DRAIN_SECONDS = int(os.environ.get("PARLEY_SHUTDOWN_DRAIN_MS", "5000")) / 1000
HANDSHAKE_WAIT_SECONDS = 10.0
POLL_SECONDS = 0.05


class DrainingHttpProtocol(HttpToolsProtocol):
    """Uvicorn's httptools protocol, except that once `draining` is set every response it
    sends asks the peer to close the connection."""

    draining = False

    def on_headers_complete(self) -> None:
        super().on_headers_complete()
        if self.draining and self.cycle is not None:
            self.cycle.keep_alive = False

    def begin_drain(self) -> None:
        self.draining = True
        if self.cycle is not None and not self.cycle.response_complete:
            self.cycle.keep_alive = False


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
        for connection in list(self.server_state.connections):
            if isinstance(connection, DrainingHttpProtocol):
                connection.begin_drain()
        await self._wait_while(self._http_connections_open, DRAIN_SECONDS)
        await self._wait_while(self._handshakes_under_way, HANDSHAKE_WAIT_SECONDS)
        await super().shutdown()

    def _http_connections_open(self) -> bool:
        return any(isinstance(c, HttpToolsProtocol) for c in self.server_state.connections)

    def _handshakes_under_way(self) -> bool:
        return any(handshake_under_way(c) for c in list(self.server_state.connections))

    async def _wait_while(self, condition: Callable[[], bool], seconds: float) -> None:
        # Polled: Uvicorn's connections signal nothing when they close or answer a handshake.
        loop = asyncio.get_running_loop()
        deadline = loop.time() + seconds
        while loop.time() < deadline and condition():  # noqa: ASYNC110
            await asyncio.sleep(POLL_SECONDS)


class DrainingUvicornWorker(UvicornWorker):
    """UvicornWorker serving with DrainingServer and DrainingHttpProtocol (same otherwise)."""

    CONFIG_KWARGS: ClassVar[dict[str, Any]] = {
        "loop": "auto",
        "http": "parley.web_worker:DrainingHttpProtocol",
    }

    async def _serve(self) -> None:
        self.config.app = self.wsgi
        server = DrainingServer(config=self.config)
        self._install_sigquit_handler()
        await server.serve(sockets=self.sockets)
        if not server.started:
            sys.exit(Arbiter.WORKER_BOOT_ERROR)
