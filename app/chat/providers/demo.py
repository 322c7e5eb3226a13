"""The built-in offline provider: deterministic replies, no network, labelled as a demo.

It is the default when no LLM endpoint is configured, so a fresh install shows the whole
streaming path working before anyone has an API key.
"""

from __future__ import annotations

import asyncio
import hashlib
import re
from collections.abc import AsyncIterator

from chat.providers.base import ChatMessage, TextDelta, Usage, estimate_tokens

DEMO_MODEL = "demo"
_TOKEN = re.compile(r"\s*\S+|\s+")

_OPENINGS = (
    "Thanks for your message.",
    "Here is a demo reply.",
    "Parley received your message.",
)


def demo_reply(prompt: str) -> str:
    """The reply for `prompt`: the same text for the same prompt, every time."""
    digest = hashlib.sha256(prompt.encode()).digest()
    opening = _OPENINGS[digest[0] % len(_OPENINGS)]
    quoted = " ".join(prompt.split())[:200]
    return (
        f"**Demo provider** — {opening} No language model is configured, so this reply "
        "is generated offline.\n\n"
        f"> {quoted}\n\n"
        "Your message had:\n\n"
        f"- **{len(prompt.split())}** words\n"
        f"- **{len(prompt)}** characters\n\n"
        "Set `PARLEY_LLM_BASE_URL` to an OpenAI-compatible endpoint (OpenAI, vLLM, Ollama, "
        "llama.cpp server or a LiteLLM proxy) to talk to a real model."
    )


def split_tokens(text: str) -> list[str]:
    """Cut text into word-sized pieces that join back into exactly `text`."""
    return _TOKEN.findall(text)


class DemoProvider:
    name = "demo"
    label = "Demo (offline)"

    def __init__(self, token_delay_ms: int) -> None:
        self.token_delay = token_delay_ms / 1000

    async def stream(
        self, messages: list[ChatMessage], model: str
    ) -> AsyncIterator[TextDelta | Usage]:
        prompt = next((m["content"] for m in reversed(messages) if m["role"] == "user"), "")
        pieces = split_tokens(demo_reply(prompt))
        for piece in pieces:
            await asyncio.sleep(self.token_delay)
            yield TextDelta(piece)
        prompt_tokens = sum(estimate_tokens(m["content"]) for m in messages)
        yield Usage(prompt_tokens=prompt_tokens, completion_tokens=len(pieces))

    async def list_models(self) -> list[str]:
        return [DEMO_MODEL]

    async def aclose(self) -> None:
        """Nothing to release: the demo holds no connection."""
