"""Row 3's client: open many idle WebSockets through nginx, hold them, prove they still answer.

`python -m parleybench.socketload SPEC OUT` opens its share of sockets (bounded concurrency,
spread over several loopback source addresses so ephemeral ports never run out), prints
`OPENED <open> <failed>`, then obeys the harness on stdin: `CHECK` sends one frame on every
socket and waits for its answer (a protocol `pong` from Parley, the echo from the echo
server) and prints `CHECKED <answered> <failed>`; `CLOSE` closes them all and writes OUT.
"""

from __future__ import annotations

import asyncio
import json
import ssl
import sys
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

import uvloop
from websockets.asyncio.client import ClientConnection, connect


@dataclass
class SocketSpec:
    url: str  # wss://127.0.0.1:PORT
    origin: str
    cafile: str
    paths: list[str]
    cookies: list[str]  # one per path; empty for the echo server
    source_addresses: list[str]
    concurrency: int
    open_timeout: float
    protocol_ping: bool  # Parley's {"type":"ping"} (True) or any text echoed back (False)

    @classmethod
    def load(cls, path: Path) -> SocketSpec:
        return cls(**json.loads(path.read_text()))

    def save(self, path: Path) -> None:
        path.write_text(json.dumps(asdict(self)))


@dataclass
class SocketResult:
    opened: int = 0
    open_failures: list[str] = field(default_factory=list)
    open_seconds: float = 0.0
    answered: int = 0
    check_failures: list[str] = field(default_factory=list)
    closed_early: int = 0


def say(line: str) -> None:
    sys.stdout.write(line + "\n")
    sys.stdout.flush()


async def open_one(spec: SocketSpec, index: int, context: ssl.SSLContext) -> ClientConnection:
    headers = {"Origin": spec.origin}
    if spec.cookies and spec.cookies[index]:
        headers["Cookie"] = f"sessionid={spec.cookies[index]}"
    source = spec.source_addresses[index % len(spec.source_addresses)]
    return await connect(
        spec.url + spec.paths[index],
        ssl=context,
        additional_headers=headers,
        open_timeout=spec.open_timeout,
        ping_interval=None,  # idle, as a tab in the background: it only answers pings
        local_addr=(source, 0),
    )


async def open_all(
    spec: SocketSpec, context: ssl.SSLContext, result: SocketResult
) -> list[ClientConnection]:
    gate = asyncio.Semaphore(spec.concurrency)
    sockets: list[ClientConnection] = []

    async def one(index: int) -> None:
        async with gate:
            try:
                sockets.append(await open_one(spec, index, context))
            except Exception as error:  # a refused socket is counted, not fatal
                if len(result.open_failures) < 50:
                    result.open_failures.append(f"{type(error).__name__}: {error}")
                else:
                    result.open_failures.append(type(error).__name__)

    started = time.perf_counter()
    await asyncio.gather(*(one(index) for index in range(len(spec.paths))))
    result.open_seconds = round(time.perf_counter() - started, 3)
    result.opened = len(sockets)
    return sockets


async def check(spec: SocketSpec, socket: ClientConnection, index: int) -> str | None:
    """None if the socket answers its frame within 30 s, else why not."""
    if spec.protocol_ping:
        frame, expected = json.dumps({"v": 1, "type": "ping", "id": f"h{index}"}), "pong"
    else:
        frame = expected = f"ping {index}"
    try:
        await socket.send(frame)
        async with asyncio.timeout(30):
            while True:
                answer = await socket.recv()
                if not spec.protocol_ping and answer == expected:
                    return None
                if spec.protocol_ping and json.loads(answer).get("type") == expected:
                    return None
    except Exception as error:  # closed by the server, timed out, ...
        return f"{type(error).__name__}: {error}"


async def check_all(spec: SocketSpec, sockets: list[ClientConnection]) -> list[str | None]:
    gate = asyncio.Semaphore(spec.concurrency)

    async def gated(socket: ClientConnection, index: int) -> str | None:
        async with gate:
            return await check(spec, socket, index)

    return await asyncio.gather(*(gated(socket, index) for index, socket in enumerate(sockets)))


async def main(spec: SocketSpec) -> SocketResult:
    result = SocketResult()
    context = ssl.create_default_context(cafile=spec.cafile)
    sockets = await open_all(spec, context, result)
    say(f"OPENED {result.opened} {len(result.open_failures)}")
    while True:
        command = (await asyncio.to_thread(sys.stdin.readline)).strip()
        if command == "CHECK":
            result.closed_early = sum(1 for socket in sockets if socket.close_code is not None)
            failures = await check_all(spec, sockets)
            result.check_failures = [failure for failure in failures if failure][:50]
            result.answered = sum(1 for failure in failures if failure is None)
            say(f"CHECKED {result.answered} {len(sockets) - result.answered}")
        elif command in {"CLOSE", ""}:  # "" is the harness having gone away
            break
    await asyncio.gather(*(socket.close() for socket in sockets), return_exceptions=True)
    return result


if __name__ == "__main__":
    outcome = uvloop.run(main(SocketSpec.load(Path(sys.argv[1]))))
    Path(sys.argv[2]).write_text(json.dumps(asdict(outcome)))
