"""A real HTTP/1.1 server speaking OpenAI's chat-completions protocol, streaming over SSE.

Connections are kept alive between requests (HTTP/1.1), as real endpoints do; each request's
record names its connection, so a client's new connections can be counted. With a
certificate and key (`--tls-cert`, `--tls-key`) it speaks HTTPS.

Endpoints:
- POST /v1/chat/completions (stream or not; `stream_options.include_usage` honoured)
- GET  /v1/models
- GET  /_fakellm/requests   what each request got, and when the client went away
- POST /_fakellm/reset      forget requests and failure counters

Markers select a behaviour per request, so one server serves good and failing requests. They
go in the last user message as `[fakellm:MARKER MARKER ...]` or in the model name after a
plus sign (`fake-model+429x1`):
- `429`, `500`, `400`...  answer with that HTTP status (any 4xx/5xx) every time
- `429xN`, `500xN`, ...   answer with that status to the first N requests with this prompt
- `hang`                  accept the request and never answer
- `hangxN`                hang for the first N requests with this prompt
- `disconnect-after=N`    stream N tokens, then drop the connection mid-body
- `tokens=N`, `tps=N`, `ttft-ms=N`   reply length, tokens per second, time to first token
- `echo`                  reply with the prompt's own text (minus the marker)
- `no-usage`              never send the usage chunk
- `hold=N`                hold the first token until N streams are open at once (or 120 s
                          have passed): a client that cannot keep N requests open never
                          gets its first token in time
- GET /_fakellm/stats     streams open now, the most open at once, connections accepted
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import itertools
import json
import logging
import random
import re
import ssl
import time
from dataclasses import asdict, dataclass, field, replace
from typing import Any

logger = logging.getLogger("fakellm")

MARKER = re.compile(r"\[fakellm:([^\]]*)\]")
TOKEN = re.compile(r"\s*\S+|\s+")
WORDS = [
    "the",
    "quick",
    "brown",
    "fox",
    "jumps",
    "over",
    "a",
    "lazy",
    "dog",
    "while",
    "streams",
    "of",
    "tokens",
    "flow",
    "from",
    "model",
    "to",
    "browser",
    "through",
    "sockets",
    "queues",
    "and",
    "workers",
    "each",
    "one",
    "carrying",
    "a",
    "few",
    "words",
    "at",
    "a",
    "time",
]
MAX_BODY = 8 * 1024 * 1024
# Markers that set a field of Behaviour: name -> (field, conversion of the value).
BEHAVIOUR_MARKERS = {
    "tokens": ("reply_tokens", int),
    "tps": ("tokens_per_second", float),
    "ttft-ms": ("ttft", lambda value: float(value) / 1000),
}
# The longest a `hold=N` request waits for the others before it streams anyway.
HOLD_LIMIT_SECONDS = 120.0
# How often a held stream sends an SSE comment.
HOLD_COMMENT_SECONDS = 0.5


@dataclass(frozen=True)
class Behaviour:
    ttft: float = 0.05
    tokens_per_second: float = 200.0
    reply_tokens: int = 60


@dataclass
class RequestRecord:
    id: int
    model: str
    markers: list[str]
    prompt: str
    stream: bool
    started_at: float
    connection: int = 0
    outcome: str = "pending"
    tokens_sent: int = 0
    first_token_at: float | None = None
    ended_at: float | None = None


@dataclass
class Plan:
    behaviour: Behaviour
    status: int = 200
    hang: bool = False
    disconnect_after: int | None = None
    echo: bool = False
    usage: bool = True
    hold: int = 0
    markers: list[str] = field(default_factory=list)


class FakeLLM:
    def __init__(self, behaviour: Behaviour, models: list[str], default_markers: str = "") -> None:
        self.behaviour = behaviour
        self.models = models
        self.default_markers = default_markers.split()
        self.records: list[RequestRecord] = []
        self.failures_served: dict[tuple[str, str], int] = {}
        self.ids = itertools.count(1)
        self.connection_ids = itertools.count(1)
        self.connections = 0
        self.open_streams = 0
        self.most_open_streams = 0

    # --- HTTP plumbing ---------------------------------------------------------------------

    async def serve_forever(self, host: str, port: int, tls: ssl.SSLContext | None = None) -> None:
        server = await asyncio.start_server(
            self.handle_connection, host, port, ssl=tls, backlog=1024
        )
        logger.info("listening on %s:%d%s", host, port, " (TLS)" if tls else "")
        async with server:
            await server.serve_forever()

    async def handle_connection(
        self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter
    ) -> None:
        connection = next(self.connection_ids)
        self.connections += 1
        try:
            while True:
                request = await self.read_request(reader)
                if request is None:
                    break
                method, path, headers, body = request
                keep_alive = await self.route(
                    method=method,
                    path=path,
                    headers=headers,
                    body=body,
                    reader=reader,
                    writer=writer,
                    connection=connection,
                )
                if not keep_alive:
                    break
        except (ConnectionError, asyncio.IncompleteReadError):
            pass
        finally:
            writer.close()
            with contextlib.suppress(ConnectionError):
                await writer.wait_closed()

    @staticmethod
    async def read_request(
        reader: asyncio.StreamReader,
    ) -> tuple[str, str, dict[str, str], bytes] | None:
        line = await reader.readline()
        if not line:
            return None
        method, path, _version = line.decode("latin-1").split(" ", 2)
        headers: dict[str, str] = {}
        while True:
            header = await reader.readline()
            if header in (b"\r\n", b"\n", b""):
                break
            name, _, value = header.decode("latin-1").partition(":")
            headers[name.strip().lower()] = value.strip()
        length = int(headers.get("content-length", "0"))
        if length > MAX_BODY:
            raise ConnectionError("request body too large")
        body = await reader.readexactly(length) if length else b""
        return method, path.split("?", 1)[0], headers, body

    @staticmethod
    async def respond_json(
        writer: asyncio.StreamWriter,
        status: int,
        payload: object,
        extra_headers: dict[str, str] | None = None,
    ) -> None:
        body = json.dumps(payload).encode()
        reason = {200: "OK", 400: "Bad Request", 404: "Not Found", 429: "Too Many Requests",
                  500: "Server Error", 503: "Service Unavailable"}  # fmt: skip
        head = [
            f"HTTP/1.1 {status} {reason.get(status, 'Error')}",
            "Content-Type: application/json",
            f"Content-Length: {len(body)}",
            "Connection: keep-alive",
            *(f"{k}: {v}" for k, v in (extra_headers or {}).items()),
        ]
        writer.write(("\r\n".join(head) + "\r\n\r\n").encode() + body)
        await writer.drain()

    async def route(  # noqa: PLR0913  (the parts of one HTTP request)
        self,
        *,
        method: str,
        path: str,
        headers: dict[str, str],
        body: bytes,
        reader: asyncio.StreamReader,
        writer: asyncio.StreamWriter,
        connection: int,
    ) -> bool:
        if method == "GET" and path.rstrip("/").endswith("/v1/models"):
            data = [{"id": m, "object": "model", "owned_by": "fakellm"} for m in self.models]
            await self.respond_json(writer, 200, {"object": "list", "data": data})
            return True
        if method == "POST" and path.rstrip("/").endswith("/v1/chat/completions"):
            return await self.chat_completions(
                json.loads(body or b"{}"), reader, writer, connection
            )
        if method == "GET" and path == "/_fakellm/requests":
            await self.respond_json(writer, 200, [asdict(r) for r in self.records])
            return True
        if method == "GET" and path == "/_fakellm/stats":
            stats = {"open_streams": self.open_streams, "connections": self.connections,
                     "most_open_streams": self.most_open_streams}  # fmt: skip
            await self.respond_json(writer, 200, stats)
            return True
        if method == "POST" and path == "/_fakellm/reset":
            self.records.clear()
            self.failures_served.clear()
            self.most_open_streams = self.open_streams
            self.connections = 0
            await self.respond_json(writer, 200, {"ok": True})
            return True
        await self.respond_json(writer, 404, {"error": {"message": f"no route {path}"}})
        return True

    # --- behaviour ---------------------------------------------------------------------------

    def plan(self, model: str, prompt: str) -> Plan:
        markers = list(self.default_markers)
        base_model, *model_markers = model.split("+")
        markers += model_markers
        for group in MARKER.findall(prompt):
            markers += group.replace(",", " ").split()
        plan = Plan(behaviour=self.behaviour, markers=markers)
        for marker in markers:
            name, _, value = marker.partition("=")
            times = re.fullmatch(r"([45]\d\d|hang)(?:x(\d+))?", marker)
            if times:
                self._plan_failure(plan, marker, times, f"{base_model}\0{prompt}")
            elif name in BEHAVIOUR_MARKERS:
                field_name, convert = BEHAVIOUR_MARKERS[name]
                plan.behaviour = replace(plan.behaviour, **{field_name: convert(value)})
            elif name == "disconnect-after":
                plan.disconnect_after = int(value)
            elif name == "hold":
                plan.hold = int(value)
            elif name == "echo":
                plan.echo = True
            elif name == "no-usage":
                plan.usage = False
        return plan

    def _plan_failure(self, plan: Plan, marker: str, times: re.Match[str], request: str) -> None:
        """A status or hang marker: every time, or for the first N requests of this prompt."""
        kind, limit = times.group(1), times.group(2)
        key = (marker, hashlib.sha256(request.encode()).hexdigest())
        served = self.failures_served.get(key, 0)
        if limit is None or served < int(limit):
            self.failures_served[key] = served + 1
            if kind == "hang":
                plan.hang = True
            else:
                plan.status = int(kind)

    def reply_tokens(self, prompt: str, plan: Plan) -> list[str]:
        if plan.echo:
            return TOKEN.findall(MARKER.sub("", prompt).strip())
        rng = random.Random(hashlib.sha256(prompt.encode()).digest())  # noqa: S311
        count = plan.behaviour.reply_tokens
        return [("" if i == 0 else " ") + rng.choice(WORDS) for i in range(count)]

    async def chat_completions(
        self,
        request: dict[str, Any],
        reader: asyncio.StreamReader,
        writer: asyncio.StreamWriter,
        connection: int,
    ) -> bool:
        model = str(request.get("model", ""))
        messages = request.get("messages") or []
        prompt = next(
            (str(m.get("content", "")) for m in reversed(messages) if m.get("role") == "user"),
            "",
        )
        stream = bool(request.get("stream"))
        plan = self.plan(model, prompt)
        record = RequestRecord(
            id=next(self.ids),
            model=model,
            markers=plan.markers,
            prompt=prompt[:200],
            stream=stream,
            started_at=time.time(),
            connection=connection,
        )
        self.records.append(record)

        if plan.hang:
            record.outcome = "hang"
            await reader.read()  # until the client gives up and closes
            record.outcome, record.ended_at = "client_disconnected", time.time()
            return False
        if plan.status != 200:
            record.outcome, record.ended_at = f"failed_{plan.status}", time.time()
            kind = {429: "rate_limit_exceeded"}.get(
                plan.status, "server_error" if plan.status >= 500 else "invalid_request_error"
            )
            await self.respond_json(
                writer,
                plan.status,
                {"error": {"message": f"fakellm injected {plan.status}", "type": kind}},
                {"Retry-After": "0"} if plan.status == 429 else None,
            )
            return True

        tokens = self.reply_tokens(prompt, plan)
        prompt_tokens = sum(len(str(m.get("content", ""))) // 4 + 1 for m in messages)
        completion_id = f"chatcmpl-fake{record.id}"
        if not stream:
            await asyncio.sleep(plan.behaviour.ttft)
            record.outcome, record.tokens_sent, record.ended_at = (
                "completed",
                len(tokens),
                time.time(),
            )
            await self.respond_json(writer, 200, {
                "id": completion_id, "object": "chat.completion", "created": int(time.time()),
                "model": model,
                "choices": [{"index": 0, "finish_reason": "stop",
                             "message": {"role": "assistant", "content": "".join(tokens)}}],
                "usage": {"prompt_tokens": prompt_tokens, "completion_tokens": len(tokens),
                          "total_tokens": prompt_tokens + len(tokens)},
            })  # fmt: skip
            return True
        include_usage = plan.usage and bool(
            (request.get("stream_options") or {}).get("include_usage")
        )
        return await self.stream_reply(
            writer=writer,
            reader=reader,
            record=record,
            plan=plan,
            tokens=tokens,
            completion_id=completion_id,
            model=model,
            prompt_tokens=prompt_tokens,
            include_usage=include_usage,
        )

    async def stream_reply(  # noqa: PLR0913  (everything one streamed reply needs)
        self,
        *,
        writer: asyncio.StreamWriter,
        reader: asyncio.StreamReader,
        record: RequestRecord,
        plan: Plan,
        tokens: list[str],
        completion_id: str,
        model: str,
        prompt_tokens: int,
        include_usage: bool,
    ) -> bool:
        writer.write(
            b"HTTP/1.1 200 OK\r\nContent-Type: text/event-stream\r\nCache-Control: no-cache\r\n"
            b"Transfer-Encoding: chunked\r\nConnection: keep-alive\r\n\r\n"
        )
        await writer.drain()
        # The client closing its end (a cancel) shows up as EOF on the reader: watch for it so
        # the record says exactly when the client went away. An HTTP/1.1 client sends nothing
        # else before the response ends, so the watch takes no byte of a next request.
        gone = asyncio.create_task(reader.read(1))
        created = int(time.time())

        async def send(data: bytes) -> None:
            writer.write(f"{len(data):x}\r\n".encode() + data + b"\r\n")
            await writer.drain()

        async def event(payload: object) -> None:
            await send(f"data: {json.dumps(payload)}\n\n".encode())

        def chunk(delta: dict[str, str], finish: str | None = None) -> dict[str, object]:
            return {"id": completion_id, "object": "chat.completion.chunk", "created": created,
                    "model": model,
                    "choices": [{"index": 0, "delta": delta, "finish_reason": finish}]}  # fmt: skip

        async def pause(seconds: float) -> bool:
            """Sleep, or return True at once if the client went away meanwhile."""
            done, _ = await asyncio.wait({gone}, timeout=seconds)
            return bool(done)

        self.open_streams += 1
        self.most_open_streams = max(self.most_open_streams, self.open_streams)
        try:
            record.outcome = "streaming"
            if await pause(plan.behaviour.ttft):
                return self._client_left(record)
            held_until = time.monotonic() + HOLD_LIMIT_SECONDS
            next_comment = time.monotonic() + HOLD_COMMENT_SECONDS
            while self.open_streams < plan.hold and time.monotonic() < held_until:
                if await pause(0.01):
                    return self._client_left(record)
                if time.monotonic() >= next_comment:
                    # An SSE comment, as real endpoints send while a model thinks: the
                    # client's read timeout measures silence, and a held stream is not silent.
                    await send(b": held\n\n")
                    next_comment += HOLD_COMMENT_SECONDS
            await event(chunk({"role": "assistant", "content": ""}))
            interval = 1 / plan.behaviour.tokens_per_second
            for index, token in enumerate(tokens):
                if plan.disconnect_after is not None and index >= plan.disconnect_after:
                    record.outcome, record.ended_at = "server_disconnected", time.time()
                    writer.transport.abort()
                    return False
                if index and await pause(interval):
                    return self._client_left(record)
                await event(chunk({"content": token}))
                record.tokens_sent += 1
                if record.first_token_at is None:
                    record.first_token_at = time.time()
            await event(chunk({}, "stop"))
            if include_usage:
                await event({
                    "id": completion_id, "object": "chat.completion.chunk", "created": created,
                    "model": model, "choices": [],
                    "usage": {"prompt_tokens": prompt_tokens, "completion_tokens": len(tokens),
                              "total_tokens": prompt_tokens + len(tokens)},
                })  # fmt: skip
            data = b"data: [DONE]\n\n"
            writer.write(f"{len(data):x}\r\n".encode() + data + b"\r\n0\r\n\r\n")
            await writer.drain()
            record.outcome, record.ended_at = "completed", time.time()
        except ConnectionError:
            return self._client_left(record)
        finally:
            self.open_streams -= 1
            gone.cancel()
            with contextlib.suppress(asyncio.CancelledError, ConnectionError):
                await gone
        # Kept for the next request, unless the watch read something (a pipelining client).
        return gone.cancelled()

    @staticmethod
    def _client_left(record: RequestRecord) -> bool:
        record.outcome, record.ended_at = "client_disconnected", time.time()
        return False
