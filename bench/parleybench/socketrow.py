"""Row 3: idle authenticated WebSockets held open through nginx by the web tier, and the memory
each costs, against a bare Uvicorn echo server opening the same number in the same run.

Memory per socket is (resident memory while holding - resident memory just before opening)
÷ sockets held, for the web processes, for nginx, and for the channel-layer Redis (each Parley
socket joins its conversation's group there). Freed memory stays with a process, so nginx
replaces its workers before each measurement, as does Gunicorn before Parley's (SIGHUP, as a
deploy does; the echo server has served nothing yet), and the workers are warmed with a few
sockets: both servers start from the same state.
"""

from __future__ import annotations

import json
import os
import selectors
import signal
import subprocess
import time
from dataclasses import asdict
from pathlib import Path
from typing import Any

from parleybench.monitor import ProcessSampler, rss_kb
from parleybench.paths import BENCH_DIR, STATE_DIR, VENV_BIN
from parleybench.processes import descendants, wait_until
from parleybench.socketload import SocketResult, SocketSpec
from parleybench.stack import Stack

SOURCE_ADDRESSES = [f"127.0.0.{host}" for host in range(2, 10)]


class SocketClient:
    """One socketload process and the line protocol the harness speaks with it."""

    def __init__(self, name: str, spec: SocketSpec) -> None:
        directory = STATE_DIR / "sockets"
        directory.mkdir(parents=True, exist_ok=True)
        self.spec_path = directory / f"{name}.spec.json"
        self.out_path = directory / f"{name}.out.json"
        spec.save(self.spec_path)
        self.log = (directory / f"{name}.log").open("w")
        self.popen = subprocess.Popen(  # noqa: S603  (our own client)
            [
                str(VENV_BIN / "python"),
                "-m",
                "parleybench.socketload",
                str(self.spec_path),
                str(self.out_path),
            ],
            cwd=BENCH_DIR,
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=self.log,
            text=True,
            start_new_session=True,
        )

    def expect(self, word: str, timeout: float) -> list[int]:
        assert self.popen.stdout is not None  # noqa: S101  (a pipe, by construction)
        with selectors.DefaultSelector() as selector:
            selector.register(self.popen.stdout, selectors.EVENT_READ)
            if not selector.select(timeout):
                raise TimeoutError(f"socket client gave no {word} within {timeout:g}s")
        line = self.popen.stdout.readline().split()
        if not line or line[0] != word:
            raise RuntimeError(f"socket client said {line!r}, expected {word}")
        return [int(value) for value in line[1:]]

    def command(self, word: str) -> None:
        assert self.popen.stdin is not None  # noqa: S101
        self.popen.stdin.write(word + "\n")
        self.popen.stdin.flush()

    def finish(self) -> SocketResult:
        self.command("CLOSE")
        self.popen.wait(120)
        self.log.close()
        return SocketResult(**_json(self.out_path))

    def kill(self) -> None:
        if self.popen.poll() is None:
            self.popen.kill()
            self.popen.wait(10)
        self.log.close()


def _json(path: Path) -> dict[str, Any]:
    return json.loads(path.read_text())


def _used_memory(stack: Stack) -> int:
    client = stack.admin(stack.channels)
    try:
        return int(client.info("memory")["used_memory"])
    finally:
        client.close()


def restart_workers(root: int, expected: int, what: str) -> None:
    """SIGHUP a master and wait until `expected` new workers run and the old ones are gone."""
    old = set(descendants(root)) - {root}
    os.kill(root, signal.SIGHUP)

    def replaced() -> bool:
        current = set(descendants(root)) - {root}
        return len(current - old) >= expected

    wait_until(replaced, 120, f"new {what} workers")
    # The old workers hold no socket and exit at once; give them a moment to be gone.
    wait_until(lambda: len(set(descendants(root)) & old) <= 1, 60, f"old {what} workers to exit")


def warm(stack: Stack, name: str, spec: SocketSpec) -> None:
    """Open, check and close a few sockets on freshly started workers."""
    client = SocketClient(f"{name}-warm", spec)
    try:
        client.expect("OPENED", 120)
        client.command("CHECK")
        client.expect("CHECKED", 120)
        client.finish()
    finally:
        client.kill()


def hold_sockets(  # noqa: PLR0913  (one measurement is all of these)
    stack: Stack,
    *,
    name: str,
    backend_port: int,
    web_roles: list[str],
    paths: list[str],
    cookies: list[str],
    protocol_ping: bool,
    restart_web: bool,
) -> dict[str, Any]:
    plan = stack.plan
    load_average = os.getloadavg()[0]
    front = stack.ports.tls(backend_port)
    clients_wanted = max(1, min(plan.socket_clients, len(paths)))
    shares = [list(range(index, len(paths), clients_wanted)) for index in range(clients_wanted)]
    web_pids = [pid for role in web_roles for pid in stack.roots[role]]
    nginx_pids = stack.roots["nginx"]
    if restart_web:
        for pid in web_pids:
            restart_workers(pid, plan.web_workers, name)
    for pid in nginx_pids:
        restart_workers(pid, os.cpu_count() or 1, "nginx")

    def spec_for(indexes: list[int]) -> SocketSpec:
        return SocketSpec(
            url=f"wss://127.0.0.1:{front}",
            origin=f"https://127.0.0.1:{front}",
            cafile=str(stack.tls.ca),
            paths=[paths[i] for i in indexes],
            cookies=[cookies[i] for i in indexes] if cookies else [],
            source_addresses=SOURCE_ADDRESSES,
            concurrency=64,
            open_timeout=60,
            protocol_ping=protocol_ping,
        )

    warm(stack, name, spec_for(list(range(min(len(paths), 4 * plan.web_workers)))))
    before = {"web": rss_kb(web_pids), "nginx": rss_kb(nginx_pids), "redis": _used_memory(stack)}
    clients: list[SocketClient] = []
    try:
        for index, share in enumerate(shares):
            clients.append(SocketClient(f"{name}-{index}", spec_for(share)))
        started = time.perf_counter()
        opened = [client.expect("OPENED", 600) for client in clients]
        open_seconds = time.perf_counter() - started
        roots = {"web": web_pids, "nginx": nginx_pids}
        with ProcessSampler(roots, interval=0.5) as sampler:
            time.sleep(plan.socket_hold_seconds)
        held = {"web": rss_kb(web_pids), "nginx": rss_kb(nginx_pids), "redis": _used_memory(stack)}
        for client in clients:
            client.command("CHECK")
        checked = [client.expect("CHECKED", 300) for client in clients]
        results = [client.finish() for client in clients]
    finally:
        for client in clients:
            client.kill()
    open_count = sum(values[0] for values in opened)
    answered = sum(values[0] for values in checked)
    errors = sum(values[1] for values in opened) + sum(values[1] for values in checked)
    per_socket = {
        part: round((held[part] - before[part]) / max(1, open_count), 2)
        for part in ("web", "nginx")
    }  # kB
    return {
        "design": name,
        "sockets_wanted": len(paths),
        "sockets_open": open_count,
        "sockets_answering_after_hold": answered,
        "errors": errors,
        "open_seconds": round(open_seconds, 2),
        "opens_per_second": round(open_count / open_seconds, 1) if open_seconds else None,
        "hold_seconds": plan.socket_hold_seconds,
        "load_average": load_average,
        "rss_before_kib": before,
        "rss_held_kib": held,
        "kib_per_socket": {
            **per_socket,
            "redis": round((held["redis"] - before["redis"]) / 1024 / max(1, open_count), 3),
        },
        "peak_during_hold": sampler.by_group(),
        "clients": [asdict(result) for result in results],
    }


def run_row(stack: Stack) -> list[dict[str, Any]]:
    """The bare echo server first, then Parley as deployed, the same number of sockets each."""
    count = stack.plan.sockets
    echo = hold_sockets(
        stack,
        name="echo",
        backend_port=stack.ports.echo,
        web_roles=["echo"],
        paths=[f"/ws/echo/{index}/" for index in range(count)],
        cookies=[],
        protocol_ping=False,
        # It has served nothing but a health check since it started: fresh already.
        restart_web=False,
    )
    targets = stack.take_conversations(count)
    parley = hold_sockets(
        stack,
        name="a",
        backend_port=stack.ports.parley,
        web_roles=["web-a"],
        paths=[f"/ws/chat/{conversation}/" for _user, conversation in targets],
        cookies=[stack.cookies[user] for user, _conversation in targets],
        protocol_ping=True,
        # Rows 1 and 2 ran on these workers; new ones start from the echo server's state.
        restart_web=True,
    )
    return [echo, parley]
