"""The web worker's shutdown, against a real Gunicorn. When a worker stops (a restart, a
deploy, `max_requests` recycling), a request nginx sends on a connection it kept alive must
be answered (with `Connection: close`), never met by a closing socket; new connections are
still accepted while it drains, except WebSocket handshakes (503); and a handshake under way
must end as an open socket closed with 1012, which the page reconnects after, never as an
HTTP 500."""

from __future__ import annotations

import base64
import os
import signal
import socket
import struct
import subprocess
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from parley.web_worker import HANDSHAKE_WAIT_SECONDS, LATE_REQUEST_SECONDS, ORPHAN_TASK_SECONDS
from tests.processes import APP_DIR, ARTIFACTS, VENV_BIN, wait_until
from tests.slow_websocket_app import DECIDING
from tests.timing import patience, timing

# Gunicorn's --graceful-timeout below: a worker still busy then is killed by the master.
GRACEFUL_TIMEOUT = 30


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


class Gunicorn:
    def __init__(self, tmp_path: Path, drain_ms: int) -> None:
        self.port = free_port()
        empty_config = tmp_path / "gunicorn.conf.py"
        empty_config.write_text("")
        ARTIFACTS.mkdir(exist_ok=True)
        self.log = (ARTIFACTS / "web-worker-shutdown.log").open("ab")
        self.process = subprocess.Popen(
            [str(VENV_BIN / "gunicorn"), "-c", str(empty_config), "-k",
             "parley.web_worker.DrainingUvicornWorker", "-w", "1", "-b", f"127.0.0.1:{self.port}",
             "--graceful-timeout", str(GRACEFUL_TIMEOUT), "tests.slow_websocket_app:app"],
            cwd=APP_DIR, stdout=self.log, stderr=subprocess.STDOUT, start_new_session=True,
            env={**os.environ, "PARLEY_SHUTDOWN_DRAIN_MS": str(drain_ms)},
        )  # fmt: skip
        wait_until(lambda: answers(self.port), 30, "the test server")

    def stop(self) -> None:
        if self.process.poll() is None:
            os.killpg(self.process.pid, signal.SIGKILL)
        self.process.wait(10)
        self.log.close()


@pytest.fixture
def start_gunicorn(tmp_path: Path) -> Iterator[Callable[[int], Gunicorn]]:
    started: list[Gunicorn] = []

    def start(drain_ms: int) -> Gunicorn:
        started.append(Gunicorn(tmp_path, drain_ms))
        return started[-1]

    yield start
    for server in started:
        server.stop()


def get(conn: socket.socket) -> tuple[bytes, bytes]:
    """One keep-alive GET on an open connection: its status line and its headers, lowercased."""
    conn.sendall(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")
    received = b""
    while not received.endswith(b"\r\n0\r\n\r\n"):  # the chunked body's end
        chunk = conn.recv(4096)
        assert chunk, f"the connection closed instead of answering: {received!r}"
        received += chunk
    head = received.partition(b"\r\n\r\n")[0].lower()
    return head.split(b"\r\n", 1)[0], head


def upgrade_request() -> bytes:
    key = base64.b64encode(os.urandom(16)).decode()
    return (
        f"GET /ws/ HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
        f"Sec-WebSocket-Key: {key}\r\nSec-WebSocket-Version: 13\r\n\r\n".encode()
    )


def stopping_server(
    start_gunicorn: Callable[[int], Gunicorn], drain_ms: int
) -> tuple[Gunicorn, socket.socket]:
    """A server just sent TERM, and a connection it answered once and keeps alive."""
    server = start_gunicorn(drain_ms)
    conn = socket.create_connection(("127.0.0.1", server.port), 10)
    assert get(conn)[0] == b"http/1.1 200 ok"
    server.process.send_signal(signal.SIGTERM)
    return server, conn


def answered_with_close(port: int) -> bool:
    """A fresh connection's request is answered with `Connection: close`: the worker drains."""
    with socket.create_connection(("127.0.0.1", port), 10) as fresh:
        fresh.settimeout(patience(10))
        status, head = get(fresh)
    assert status == b"http/1.1 200 ok", head
    return b"connection: close" in head


def draining_server(start_gunicorn: Callable[[int], Gunicorn]) -> tuple[Gunicorn, socket.socket]:
    """A server draining (for at most 4 s), and the kept-alive connection that holds it there;
    waited for by asking, not by sleeping."""
    server, held = stopping_server(start_gunicorn, 4000)
    wait_until(lambda: answered_with_close(server.port), patience(4), "the drain to begin")
    return server, held


def test_a_request_on_a_kept_alive_connection_while_the_worker_stops_is_answered(
    start_gunicorn: Callable[[int], Gunicorn],
) -> None:
    """Every request is answered, the last with `Connection: close`, and then the worker
    closes the connection. Were it not draining, the worker would close the connection under
    a request (get() fails) at once, or when the 3 s drain ends: no time bound is needed to
    tell, only a deadline that keeps the loop finite."""
    server, conn = stopping_server(start_gunicorn, 3000)
    # Ask again every 100 ms, as nginx reuses a pooled connection: each request is answered
    # until one answer says the connection closes; then the worker closes it.
    began = time.monotonic()
    limit = 3 + patience(10)
    while True:
        status, head = get(conn)
        assert status == b"http/1.1 200 ok", head
        if b"connection: close" in head:
            break
        took = time.monotonic() - began
        assert took < limit, "no Connection: close while the worker drains " + timing(
            f"{took:.1f} s", f"{limit:.0f} s", "PARLEY_SHUTDOWN_DRAIN_MS 3000 + a wait"
        )
        time.sleep(0.1)
    conn.settimeout(patience(5))
    assert conn.recv(64) == b""
    conn.close()
    assert server.process.wait(patience(10)) == 0


def test_a_stopping_worker_goes_on_accepting_while_it_drains(
    start_gunicorn: Callable[[int], Gunicorn],
) -> None:
    """Gunicorn replaces a worker only once it has exited: one that stopped accepting for its
    whole drain would leave new connections waiting when its siblings recycle with it. A new
    connection made while it drains is answered before the drain (4 s) could have ended."""
    server, held = draining_server(start_gunicorn)
    began = time.monotonic()
    fresh = socket.create_connection(("127.0.0.1", server.port), 10)
    fresh.settimeout(patience(10))
    status, head = get(fresh)
    took = time.monotonic() - began
    assert status == b"http/1.1 200 ok" and b"connection: close" in head, head
    assert took < 4, timing(f"{took:.2f} s to an answer", "4 s", "PARLEY_SHUTDOWN_DRAIN_MS 4000")
    for conn in (fresh, held):
        conn.close()
    assert server.process.wait(patience(10)) == 0


def test_a_stopping_worker_refuses_a_new_websocket_503(
    start_gunicorn: Callable[[int], Gunicorn],
) -> None:
    """A socket it opened would be closed with 1012 within seconds."""
    server, held = draining_server(start_gunicorn)
    fresh = socket.create_connection(("127.0.0.1", server.port), 10)
    fresh.settimeout(patience(10))
    fresh.sendall(upgrade_request())
    received = b""
    while chunk := fresh.recv(4096):
        received += chunk
    assert received.startswith(b"HTTP/1.1 503 "), received
    assert b"\r\nretry-after: 1\r\n" in received
    for conn in (fresh, held):
        conn.close()
    assert server.process.wait(10) == 0


def test_the_drain_ends_once_the_peers_have_closed_their_connections(
    start_gunicorn: Callable[[int], Gunicorn],
) -> None:
    """With a 20 s drain, the worker exits well before the drain would have ended once the
    last kept-alive connection closes: measured from the TERM, the bound is the drain."""
    server, conn = stopping_server(start_gunicorn, 20_000)
    termed = time.monotonic()
    wait_until(lambda: answered_with_close(server.port), patience(10), "the drain to begin")
    conn.close()
    assert server.process.wait(patience(30)) == 0
    took = time.monotonic() - termed
    assert took < 20, timing(
        f"{took:.1f} s from TERM to exit", "20 s", "PARLEY_SHUTDOWN_DRAIN_MS 20000, ended early"
    )


def test_an_idle_connection_is_closed_by_the_worker_once_the_drain_is_over(
    start_gunicorn: Callable[[int], Gunicorn],
) -> None:
    """Not before the 1.5 s drain is over (it is measured from after the TERM, so at least the
    drain passes), and not left open: closed within the drain, the late-request wait and the
    handshake wait, the worker's whole shutdown."""
    server, conn = stopping_server(start_gunicorn, 1500)
    began = time.monotonic()
    latest = 1.5 + LATE_REQUEST_SECONDS + HANDSHAKE_WAIT_SECONDS
    conn.settimeout(latest + patience(10))
    assert conn.recv(64) == b""
    took = time.monotonic() - began
    assert 1.2 < took < latest, timing(
        f"closed after {took:.2f} s",
        f"1.2 to {latest:.1f} s",
        f"PARLEY_SHUTDOWN_DRAIN_MS 1500 + LATE_REQUEST_SECONDS {LATE_REQUEST_SECONDS} + "
        f"HANDSHAKE_WAIT_SECONDS {HANDSHAKE_WAIT_SECONDS}",
    )
    conn.close()
    assert server.process.wait(patience(10)) == 0


def test_a_task_that_outlives_its_connection_is_cancelled_instead_of_waited_for(
    start_gunicorn: Callable[[int], Gunicorn],
) -> None:
    """Uvicorn alone would wait for it until Gunicorn's timeout (not accepting meanwhile)."""
    server = start_gunicorn(100)
    with socket.create_connection(("127.0.0.1", server.port), 10) as conn:
        conn.sendall(b"GET /linger/ HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
        conn.settimeout(10)
        while conn.recv(4096):
            pass
    began = time.monotonic()
    server.process.send_signal(signal.SIGTERM)
    assert server.process.wait(GRACEFUL_TIMEOUT + patience(10)) == 0
    took = time.monotonic() - began
    # Waited for, the task would have held the worker until Gunicorn's graceful timeout.
    assert took < GRACEFUL_TIMEOUT, timing(
        f"{took:.1f} s from TERM to exit",
        f"{GRACEFUL_TIMEOUT} s",
        f"--graceful-timeout; cancelled after ORPHAN_TASK_SECONDS {ORPHAN_TASK_SECONDS}",
    )
    server.log.flush()
    log = (ARTIFACTS / "web-worker-shutdown.log").read_text()
    assert (
        "still running 2 s after their connections closed"
        " (waiting at tests/slow_websocket_app.py:" in log
    )


def test_a_handshake_under_way_at_shutdown_opens_then_closes_with_1012(
    start_gunicorn: Callable[[int], Gunicorn],
) -> None:
    gunicorn = start_gunicorn(100)
    server, port = gunicorn.process, gunicorn.port
    log = ARTIFACTS / "web-worker-shutdown.log"
    deciding = log.read_text().count(DECIDING)
    conn = socket.create_connection(("127.0.0.1", port), 10)
    conn.sendall(upgrade_request())
    # The app has the handshake (it logs when it starts deciding, for HANDSHAKE_SECONDS).
    wait_until(lambda: log.read_text().count(DECIDING) > deciding, patience(10), "the handshake")
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
    assert server.wait(patience(30)) == 0


@pytest.mark.parametrize(
    ("environment", "seconds"),
    [
        ({}, 5.0),
        ({"PARLEY_SHUTDOWN_DRAIN_MS": ""}, 5.0),
        ({"GUNICORN_SHUTDOWN_DRAIN_MS": "1500"}, 1.5),
        ({"PARLEY_SHUTDOWN_DRAIN_MS": "", "GUNICORN_SHUTDOWN_DRAIN_MS": "2500"}, 2.5),
        ({"PARLEY_SHUTDOWN_DRAIN_MS": "800", "GUNICORN_SHUTDOWN_DRAIN_MS": "2500"}, 0.8),
    ],
)
def test_the_drain_time_is_read_like_every_gunicorn_setting(
    environment: dict[str, str], seconds: float
) -> None:
    # As gunicorn.conf.py reads its settings: PARLEY_ first, then GUNICORN_, empty is unset.
    env = {k: v for k, v in os.environ.items() if not k.endswith("_SHUTDOWN_DRAIN_MS")}
    result = subprocess.run(
        [str(VENV_BIN / "python"), "-c", "import parley.web_worker as w; print(w.DRAIN_SECONDS)"],
        cwd=APP_DIR, env={**env, **environment}, capture_output=True, text=True, check=False,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    assert float(result.stdout) == seconds


def test_a_malformed_drain_time_is_refused_with_its_name() -> None:
    env = {k: v for k, v in os.environ.items() if not k.endswith("_SHUTDOWN_DRAIN_MS")}
    result = subprocess.run(
        [str(VENV_BIN / "python"), "-c", "import parley.web_worker"],
        cwd=APP_DIR, env={**env, "GUNICORN_SHUTDOWN_DRAIN_MS": "5s"},
        capture_output=True, text=True, check=False,
    )  # fmt: skip
    assert result.returncode != 0
    assert "GUNICORN_SHUTDOWN_DRAIN_MS must be a whole number of milliseconds" in result.stderr


def test_gunicorn_reads_its_counts_like_every_server_setting() -> None:
    read = (
        "import runpy; c = runpy.run_path('gunicorn.conf.py');"
        " print(c['max_requests'], c['timeout'])"
    )
    result = subprocess.run(
        [str(VENV_BIN / "python"), "-c", read], cwd=APP_DIR, capture_output=True, text=True,
        check=False, env={**os.environ, "PARLEY_MAX_REQUESTS": "", "GUNICORN_MAX_REQUESTS": "1234",
                          "PARLEY_TIMEOUT": "77", "GUNICORN_TIMEOUT": "5"},
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    assert result.stdout.split() == ["1234", "77"]


@pytest.mark.parametrize("variable", ["PARLEY_MAX_REQUESTS", "GUNICORN_GRACEFUL_TIMEOUT"])
def test_a_malformed_count_stops_gunicorn_with_its_name(variable: str) -> None:
    env = {k: v for k, v in os.environ.items() if not k.endswith(variable.split("_", 1)[1])}
    result = subprocess.run(
        [str(VENV_BIN / "gunicorn"), "-c", "gunicorn.conf.py", "--check-config"],
        cwd=APP_DIR, env={**env, variable: "2k"}, capture_output=True, text=True, check=False,
    )  # fmt: skip
    assert result.returncode != 0
    assert f"{variable} must be a whole number, got '2k'" in result.stderr
