"""Design (d), the floor: the official `openai` client reading the fake model directly.

The same chats, schedule and model as the chat client, with nothing in between: no nginx, no
WebSocket, no database, no queue, no channel layer. What is left of its time to first token
beyond the model's own is the cost of HTTP and the SDK, the least any design can pay.
"""

from __future__ import annotations

import asyncio
import random
import ssl
import time

import openai

from parleybench.loadspec import LoadResult, LoadSpec, ReplyRecord, run_client, think_time


async def stream_reply(
    client: openai.AsyncOpenAI, spec: LoadSpec, record: ReplyRecord, started: float
) -> None:
    stream = await client.chat.completions.create(
        model=spec.model,
        messages=[
            {"role": "system", "content": spec.system_prompt},
            {"role": "user", "content": record.prompt},
        ],
        stream=True,
        stream_options={"include_usage": True},
    )
    async with stream:
        async for chunk in stream:
            if chunk.usage is not None:
                record.tokens = chunk.usage.completion_tokens or 0
            for choice in chunk.choices:
                text = choice.delta.content if choice.delta is not None else None
                if text:
                    record.deltas += 1
                    record.chars += len(text)
                    if record.ttft is None:
                        record.ttft = time.perf_counter() - started
                        record.first_delta_at = time.time()
    record.total = time.perf_counter() - started
    record.status = "complete"


async def run_chat(
    client: openai.AsyncOpenAI, spec: LoadSpec, index: int, result: LoadResult
) -> None:
    rng = random.Random(spec.seed * 100_003 + index)  # noqa: S311  (a schedule)
    await asyncio.sleep(rng.uniform(0, spec.ramp))
    for reply in range(spec.replies):
        prompt = spec.prompt(index, reply)
        record = ReplyRecord(chat=index, index=reply, prompt=prompt, sent_at=time.time())
        result.replies.append(record)
        started = time.perf_counter()
        try:
            await asyncio.wait_for(stream_reply(client, spec, record, started), spec.reply_timeout)
        except TimeoutError:
            record.status = "timeout"
        except openai.APIError as error:
            record.status, record.error = "error", f"{type(error).__name__}: {error}"
        if record.status != "complete":
            return
        await asyncio.sleep(think_time(rng, spec))


async def main(spec: LoadSpec) -> LoadResult:
    result = LoadResult(tag=spec.tag, started_at=time.time())
    # One client for every chat, as a front end holding one SDK client would; no retries, so
    # a failure shows as a failure. The model is reached over HTTPS, trusting the run's CA.
    client = openai.AsyncOpenAI(
        base_url=spec.base_url,
        api_key="not-needed",
        max_retries=0,
        http_client=openai.DefaultAsyncHttpxClient(
            verify=ssl.create_default_context(cafile=spec.cafile)
        ),
    )
    tasks = [
        asyncio.create_task(run_chat(client, spec, index, result))
        for index in range(len(spec.chats))
    ]
    try:
        _done, pending = await asyncio.wait(tasks, timeout=spec.deadline)
        for task in pending:
            task.cancel()
        await asyncio.gather(*pending, return_exceptions=True)
        if pending:
            result.connect_errors.append(f"{len(pending)} chats still running at the deadline")
    finally:
        result.ended_at = time.time()
        await client.close()
    for record in result.replies:
        if record.status == "pending":
            record.status = "timeout"
    return result


if __name__ == "__main__":
    run_client(main)
