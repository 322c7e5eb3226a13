"""The chat load client: N signed-in sockets through nginx, each sending messages in turn.

Per reply it records the time from sending the `send` frame to the first non-empty `delta`
(what the person sees as the first token), to `done`, the deltas and tokens received and any
error. A chat waits for its reply's `done` before thinking and sending the next message, as
a person does (the protocol refuses a second message while a reply is written: `busy`).
"""

from __future__ import annotations

import asyncio
import json
import random
import ssl
import time
from typing import Any

from websockets.asyncio.client import ClientConnection, connect

from parleybench.loadspec import (
    ChatTarget,
    LoadResult,
    LoadSpec,
    ReplyRecord,
    run_client,
    think_time,
)


def tls_context(cafile: str) -> ssl.SSLContext:
    return ssl.create_default_context(cafile=cafile)


async def open_chat(
    spec: LoadSpec, target: ChatTarget, context: ssl.SSLContext
) -> ClientConnection:
    return await connect(
        f"{spec.url}/ws/chat/{target.conversation}/",
        ssl=context,
        additional_headers={"Origin": spec.origin, "Cookie": f"sessionid={target.cookie}"},
        open_timeout=60,
        # A browser tab sends no pings of its own; it answers the server's.
        ping_interval=None,
        max_size=2**24,
    )


# A reply that has started streaming and then sends nothing for this long never finishes on
# the page either: the page fills a gap only when a later frame shows it, so a lost final
# frame leaves the reply unfinished on screen. Recorded as "stalled", not waited out.
STALL_SECONDS = 10.0


async def await_reply(
    socket: ClientConnection, record: ReplyRecord, client_id: str, started: float, limit: float
) -> None:
    """Read frames until this reply's done or error, filling in the record."""
    reply_id: int | None = None
    deadline = started + limit
    while True:
        remaining = deadline - time.perf_counter()
        if remaining <= 0:
            record.status = "timeout"
            return
        streaming = record.deltas > 0
        try:
            raw = await asyncio.wait_for(
                socket.recv(), min(remaining, STALL_SECONDS) if streaming else remaining
            )
        except TimeoutError:
            if streaming:
                record.status = "stalled" if remaining > STALL_SECONDS else "timeout"
                return
            raise
        frame: dict[str, Any] = json.loads(raw)
        kind = frame.get("type")
        if frame.get("id") == client_id:
            if kind == "ack":
                reply_id = record.reply_id = frame["reply_id"]
                continue
            if kind == "error":
                record.status, record.error = frame.get("code", "error"), frame.get("message", "")
                return
        if reply_id is None or frame.get("reply_id") != reply_id:
            continue  # our own `turn` echo, or a frame of no interest
        if kind == "delta":
            record.deltas += 1
            if frame.get("text") and record.ttft is None:
                record.ttft = time.perf_counter() - started
                record.first_delta_at = time.time()
        elif kind == "done":
            record.total = time.perf_counter() - started
            record.tokens = int((frame.get("usage") or {}).get("completion_tokens") or 0)
            record.chars = len(frame.get("content") or "")
            record.status = "complete" if frame.get("status") == "complete" else frame["status"]
            return
        elif kind == "error":
            record.total = time.perf_counter() - started
            record.status, record.error = frame.get("code", "error"), frame.get("message", "")
            return


async def run_chat(
    spec: LoadSpec, index: int, socket: ClientConnection, result: LoadResult
) -> None:
    rng = random.Random(spec.seed * 100_003 + index)  # noqa: S311  (a schedule)
    try:
        await asyncio.sleep(rng.uniform(0, spec.ramp))
        for reply in range(spec.replies):
            prompt = spec.prompt(index, reply)
            record = ReplyRecord(chat=index, index=reply, prompt=prompt, sent_at=time.time())
            result.replies.append(record)
            client_id = f"m{reply}"
            started = time.perf_counter()
            await socket.send(
                json.dumps(
                    {"v": 1, "type": "send", "id": client_id, "text": prompt, "model": spec.model}
                )
            )
            try:
                await await_reply(socket, record, client_id, started, spec.reply_timeout)
            except TimeoutError:
                record.status = "timeout"
            if record.status != "complete":
                return  # the conversation may still be busy: stop this chat, keep the record
            await asyncio.sleep(think_time(rng, spec))
    except Exception as error:  # a lost socket is a finding, recorded, not a client crash
        result.connect_errors.append(f"chat {index} lost: {type(error).__name__}: {error}")


async def open_all(
    spec: LoadSpec, context: ssl.SSLContext, result: LoadResult
) -> dict[int, ClientConnection]:
    """Every socket first, so connecting is not mixed into the measured replies."""
    gate = asyncio.Semaphore(50)
    sockets: dict[int, ClientConnection] = {}

    async def one(index: int, target: ChatTarget) -> None:
        async with gate:
            try:
                sockets[index] = await open_chat(spec, target, context)
            except Exception as error:  # a refused socket is a finding too
                result.connect_errors.append(f"chat {index}: {type(error).__name__}: {error}")

    await asyncio.gather(*(one(index, target) for index, target in enumerate(spec.chats)))
    return sockets


async def main(spec: LoadSpec) -> LoadResult:
    result = LoadResult(tag=spec.tag)
    context = tls_context(spec.cafile)
    sockets = await asyncio.wait_for(open_all(spec, context, result), spec.deadline)
    result.started_at = time.time()
    tasks = [
        asyncio.create_task(run_chat(spec, index, socket, result))
        for index, socket in sockets.items()
    ]
    try:
        _done, pending = await asyncio.wait(tasks, timeout=spec.deadline) if tasks else ((), ())
        for task in pending:
            task.cancel()
        await asyncio.gather(*pending, return_exceptions=True)
        if pending:
            result.connect_errors.append(f"{len(pending)} chats still running at the deadline")
    finally:
        result.ended_at = time.time()
        await asyncio.gather(
            *(socket.close() for socket in sockets.values()), return_exceptions=True
        )
    for record in result.replies:
        if record.status == "pending":
            record.status = "timeout"
    return result


if __name__ == "__main__":
    run_client(main)
