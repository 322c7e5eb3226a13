"""The Uvicorn worker Gunicorn runs: it drains for a moment before it closes connections.

Uvicorn's shutdown stops accepting and then at once closes every connection that has not
sent a request yet. A connection the worker accepted a moment before, whose request bytes
are still on their way, is then closed with data unread and the client sees a reset: one
failed request per restart and worker, under load. Waiting briefly between "stop accepting"
and "close idle connections" lets such requests arrive and be answered; connections still in
the kernel's queue were never accepted by this worker and go to the next one on the same
(systemd-held) socket.
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


class DrainingServer(Server):
    async def shutdown(self, sockets: list[socket.socket] | None = None) -> None:
        for server in self.servers:
            server.close()
        for sock in sockets or []:
            sock.close()
        await asyncio.sleep(DRAIN_SECONDS)
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
