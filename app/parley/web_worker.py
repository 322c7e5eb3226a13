"""The Uvicorn worker Gunicorn runs: a stopping worker drains before it closes anything.

It goes on serving with `Connection: close` (and answers WebSocket handshakes 503) for at most
PARLEY_SHUTDOWN_DRAIN_MS, then stops accepting, waits for handshakes under way, and cancels
tasks that outlive their connections, so a restart or a `max_requests` recycling fails no
request. Why each step is there: docs/decisions/0002-draining-web-worker.md.
"""

from __future__ import annotations

import asyncio
import logging
import math
import os
import socket
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any, ClassVar

from gunicorn.arbiter import Arbiter
from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol
from uvicorn.server import Server
from uvicorn_worker import UvicornWorker


def _drain_seconds() -> float:
    """PARLEY_SHUTDOWN_DRAIN_MS, read as gunicorn.conf.py reads every server setting (it is one):
    PARLEY_ before GUNICORN_, an empty value is unset. That file's reader is not importable
    from here, and importing this package from it would load Celery into Gunicorn's master."""
    for variable in ("PARLEY_SHUTDOWN_DRAIN_MS", "GUNICORN_SHUTDOWN_DRAIN_MS"):
        raw = os.environ.get(variable)
        if raw:
            try:
                return int(raw) / 1000
            except ValueError:
                raise ValueError(
                    f"{variable} must be a whole number of milliseconds, got {raw!r}"
                ) from None
    return 5.0


DRAIN_SECONDS = _drain_seconds()
# A request on a connection accepted just before the worker stopped accepting is on its way.
LATE_REQUEST_SECONDS = 0.5
HANDSHAKE_WAIT_SECONDS = 10.0
ORPHAN_TASK_SECONDS = 2.0
POLL_SECONDS = 0.05
logger = logging.getLogger("uvicorn.error")
_APP_DIR = f"{Path(__file__).resolve().parent.parent}{os.sep}"
_REFUSED_BODY = b"This server process is stopping; connect again.\n"
REFUSED_UPGRADE = (
    b"HTTP/1.1 503 Service Unavailable\r\ncontent-type: text/plain; charset=utf-8\r\n"
    b"content-length: %d\r\nretry-after: 1\r\nconnection: close\r\n\r\n%s"
    % (len(_REFUSED_BODY), _REFUSED_BODY)
)


class DrainingHttpProtocol(HttpToolsProtocol):
    """Uvicorn's httptools protocol, except that once the worker drains every response asks
    the peer to close the connection. `draining` is per process: a worker runs one server."""

    draining = False

    def on_headers_complete(self) -> None:
        super().on_headers_complete()
        if DrainingHttpProtocol.draining and self.cycle is not None:
            self.cycle.keep_alive = False

    def handle_websocket_upgrade(self) -> None:
        if not DrainingHttpProtocol.draining:
            super().handle_websocket_upgrade()
            return
        # A socket opened now would be closed (1012) within seconds: refuse it instead, so the
        # client's next try reaches a worker that stays.
        self.transport.write(REFUSED_UPGRADE)
        self.transport.close()

    @classmethod
    def begin_drain(cls, connections: set[Any]) -> None:
        cls.draining = True
        for connection in list(connections):
            cycle = getattr(connection, "cycle", None)
            if isinstance(connection, cls) and cycle is not None and not cycle.response_complete:
                cycle.keep_alive = False


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


def waiting_at(task: asyncio.Task[Any]) -> str:
    """Where a task is suspended: the innermost frame of its chain of awaits that is not
    asyncio's own (a lock or a stream says little; who waits on it says more)."""
    asyncio_dir = str(Path(asyncio.__file__).parent)
    where, awaited = "?", task.get_coro()
    while awaited is not None:
        frame = getattr(awaited, "cr_frame", None) or getattr(awaited, "ag_frame", None)
        if frame is not None and not frame.f_code.co_filename.startswith(asyncio_dir):
            path = frame.f_code.co_filename.rpartition("site-packages/")[2]
            where = f"{path.removeprefix(_APP_DIR)}:{frame.f_lineno}"
        awaited = getattr(awaited, "cr_await", None) or getattr(awaited, "ag_await", None)
    return where


class DrainingServer(Server):
    async def shutdown(self, sockets: list[socket.socket] | None = None) -> None:
        DrainingHttpProtocol.begin_drain(self.server_state.connections)
        await self._wait_while(self._http_connections_open, DRAIN_SECONDS)
        for server in self.servers:
            server.close()
        for sock in sockets or []:
            sock.close()
        await self._wait_while(self._http_connections_open, LATE_REQUEST_SECONDS)
        await self._wait_while(self._handshakes_under_way, HANDSHAKE_WAIT_SECONDS)
        await super().shutdown()

    async def _wait_tasks_to_complete(self) -> None:
        """Uvicorn's wait (connections, then tasks), except that tasks outliving their
        connections are cancelled after ORPHAN_TASK_SECONDS instead of waited for forever."""
        state = self.server_state
        await self._wait_while(lambda: bool(state.connections) and not self.force_exit, math.inf)
        await self._wait_while(
            lambda: bool(state.tasks) and not self.force_exit, ORPHAN_TASK_SECONDS
        )
        left = [task for task in state.tasks if not task.done()]
        if left:
            logger.warning(
                "Cancelling %d task(s) still running %.0f s after their connections closed"
                " (waiting at %s)",
                len(left), ORPHAN_TASK_SECONDS, ", ".join(waiting_at(task) for task in left),
            )  # fmt: skip
            for task in left:
                task.cancel()
            await asyncio.wait(left, timeout=ORPHAN_TASK_SECONDS)

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
