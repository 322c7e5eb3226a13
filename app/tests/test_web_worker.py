"""The web worker's shutdown, against a real Gunicorn: a WebSocket handshake under way when
the worker stops (a restart, a deploy, `max_requests` recycling) must end as an open socket
closed with 1012, which the page reconnects after, never as an HTTP 500."""

from __future__ import annotations

import base64
import os
import signal
import socket
import struct
import subprocess
import time
from pathlib import Path

import pytest

from tests.processes import APP_DIR, ARTIFACTS, VENV_BIN, wait_until


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def answers(port: int) -> bool:
    try:
        with socket.create_connection(("127.0.0.1", port), 1) as conn:
            conn.sendall(b"GET / HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
            return conn.recv(64).startswith(b"HTTP/1.1 200")
    except OSError:
        return False


@pytest.fixture
def slow_handshake_server(tmp_path: Path) -> tuple[subprocess.Popen[bytes], int]:
    port = free_port()
    empty_config = tmp_path / "gunicorn.conf.py"
    empty_config.write_text("")
    ARTIFACTS.mkdir(exist_ok=True)
    log = (ARTIFACTS / "web-worker-shutdown.log").open("ab")
    server = subprocess.Popen(
        [str(VENV_BIN / "gunicorn"), "-c", str(empty_config), "-k",
         "parley.web_worker.DrainingUvicornWorker", "-w", "1", "-b", f"127.0.0.1:{port}",
         "--graceful-timeout", "20", "tests.slow_websocket_app:app"],
        cwd=APP_DIR, stdout=log, stderr=subprocess.STDOUT, start_new_session=True,
        env={**os.environ, "PARLEY_SHUTDOWN_DRAIN_MS": "100"},
    )  # fmt: skip
    wait_until(lambda: answers(port), 30, "the test server")
    yield server, port
    if server.poll() is None:
        os.killpg(server.pid, signal.SIGKILL)
    server.wait(10)
    log.close()


def test_a_handshake_under_way_at_shutdown_opens_then_closes_with_1012(
    slow_handshake_server: tuple[subprocess.Popen[bytes], int],
) -> None:
    server, port = slow_handshake_server
    conn = socket.create_connection(("127.0.0.1", port), 10)
    key = base64.b64encode(os.urandom(16)).decode()
    conn.sendall(
        f"GET /ws/ HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
        f"Sec-WebSocket-Key: {key}\r\nSec-WebSocket-Version: 13\r\n\r\n".encode()
    )
    time.sleep(0.3)  # the app is deciding
    server.send_signal(signal.SIGTERM)
    received = b""
    conn.settimeout(15)
    while b"\r\n\r\n" not in received:
        chunk = conn.recv(4096)
        assert chunk, f"closed without an answer: {received!r}"
        received += chunk
    head, _, rest = received.partition(b"\r\n\r\n")
    assert head.startswith(b"HTTP/1.1 101"), head
    while len(rest) < 4:
        chunk = conn.recv(4096)
        assert chunk, f"no close frame after the 101: {rest!r}"
        rest += chunk
    opcode, length = rest[0] & 0x0F, rest[1] & 0x7F
    assert opcode == 0x8 and length >= 2, rest
    assert struct.unpack("!H", rest[2:4])[0] == 1012
    conn.close()
    assert server.wait(30) == 0
