"""Read an OpenAI-style chat-completions stream cheaply: SSE lines, `json.loads`, two fields.

The SDK turns every chunk into pydantic models, which cost more CPU than the rest of the hop
(BENCHMARKS.md, finding 4); a reply needs only each chunk's text and the final usage. The
SDK still makes the request and raises its errors; only the body is read here.
"""

from __future__ import annotations

import json
from collections.abc import AsyncIterator

import httpx2
import openai

from chat.providers.base import TextDelta, Usage

DONE = "[DONE]"


async def read_stream(
    lines: AsyncIterator[str], request: httpx2.Request
) -> AsyncIterator[TextDelta | Usage]:
    """Yield the text deltas and usage of a chat-completions SSE body, given its lines.

    Reads to the end of the body, past `[DONE]`, so that an HTTP/1.1 connection can go back
    to the pool. An `error` in a chunk raises `openai.APIError`, as the SDK's reader does.
    """
    data: list[str] = []
    event = ""
    done = False
    async for line in lines:
        if line:
            if not line.startswith(":"):  # a comment (keep-alive) otherwise
                name, _, value = line.partition(":")
                value = value.removeprefix(" ")
                if name == "data":
                    data.append(value)
                elif name == "event":
                    event = value
            continue
        if data and not done:
            payload = "\n".join(data)
            if payload.startswith(DONE):
                done = True
            else:
                for item in _items(payload, event, request):
                    yield item
        data.clear()
        event = ""
    if data and not done and not data[0].startswith(DONE):
        for item in _items("\n".join(data), event, request):
            yield item


def _items(payload: str, event: str, request: httpx2.Request) -> list[TextDelta | Usage]:
    chunk = json.loads(payload)
    if not isinstance(chunk, dict):
        raise openai.APIError("The model sent a chunk that is not an object.", request, body=chunk)
    error = chunk.get("error")
    if error or event == "error":
        message = error.get("message") if isinstance(error, dict) else None
        if not isinstance(message, str) or not message:
            message = "An error occurred during streaming"
        raise openai.APIError(message, request, body=error)
    items: list[TextDelta | Usage] = []
    for choice in chunk.get("choices") or ():
        delta = choice.get("delta") if isinstance(choice, dict) else None
        content = delta.get("content") if isinstance(delta, dict) else None
        if content:
            items.append(TextDelta(content))
    usage = chunk.get("usage")
    if isinstance(usage, dict):
        items.append(
            Usage(
                prompt_tokens=usage.get("prompt_tokens") or 0,
                completion_tokens=usage.get("completion_tokens") or 0,
            )
        )
    return items
