"""A provider for any endpoint speaking OpenAI's chat-completions API, through the official SDK.

OpenAI, vLLM, Ollama (/v1), llama.cpp server and LiteLLM proxy all differ only by base URL.
Retries are ours, not the SDK's: they happen only before the first token, because retrying
after text has reached the user would show it twice. One provider (one HTTP connection pool)
serves every reply of an event loop; the SDK makes each request and raises its errors, and
`chat.providers.sse` reads the streamed body.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import random
import ssl
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Any

import httpx2
import openai

from chat.providers.base import ChatMessage, ProviderError, TextDelta, Usage
from chat.providers.sse import read_stream
from parley import metrics

logger = logging.getLogger(__name__)

_RETRYABLE = (
    openai.RateLimitError,
    openai.InternalServerError,
    openai.APIConnectionError,  # includes APITimeoutError
)


@dataclass
class _AttemptState:
    first_token_seen: bool = False


class OpenAICompatibleProvider:
    name = "openai"

    def __init__(  # noqa: PLR0913  (each is one documented setting)
        self,
        *,
        base_url: str,
        api_key: str,
        label: str,
        timeout: float,
        connect_timeout: float,
        max_retries: int,
        retry_base_delay: float,
        retry_max_delay: float,
        ssl_context: ssl.SSLContext,
        max_tokens: int = 0,
        keepalive_seconds: float = 60.0,
    ) -> None:
        self.label = label
        self.max_retries = max_retries
        self.retry_base_delay = retry_base_delay
        self.retry_max_delay = retry_max_delay
        self.max_tokens = max_tokens
        self.client = openai.AsyncOpenAI(
            base_url=base_url,
            # Local servers (vLLM, Ollama, llama.cpp) accept any key; the SDK insists on one.
            api_key=api_key or "not-needed",
            timeout=openai.Timeout(timeout, connect=connect_timeout),
            max_retries=0,
            # One pool for every reply on this loop: no connection cap of its own (the
            # worker's replies in flight bound it), idle connections kept for the next reply,
            # and the process's one SSL context instead of a new one per client.
            http_client=openai.DefaultAsyncHttpxClient(
                verify=ssl_context,
                limits=httpx2.Limits(
                    max_connections=None,
                    max_keepalive_connections=None,
                    keepalive_expiry=keepalive_seconds,
                ),
            ),
        )

    def retry_delay(self, attempt: int, error: Exception) -> float:
        """Exponential backoff with jitter (half to all of the step), honouring Retry-After."""
        ceiling = min(self.retry_max_delay, self.retry_base_delay * 2**attempt)
        delay = random.uniform(ceiling / 2, ceiling)  # noqa: S311  (jitter, not cryptography)
        if isinstance(error, openai.APIStatusError):
            retry_after = error.response.headers.get("retry-after")
            if retry_after:
                with contextlib.suppress(ValueError):
                    delay = max(delay, min(float(retry_after), self.retry_max_delay))
        return delay

    async def stream(
        self, messages: list[ChatMessage], model: str
    ) -> AsyncIterator[TextDelta | Usage]:
        attempt = 0
        while True:
            state = _AttemptState()
            try:
                async for item in self._attempt(messages, model, state):
                    yield item
            except asyncio.CancelledError:
                raise
            except Exception as error:
                # Connection refused, timeouts, HTTP errors, a dropped connection mid-stream or
                # a broken SSE event, whichever HTTP library the SDK uses underneath.
                final = self._final_error(error, state.first_token_seen)
                if final is None and attempt < self.max_retries:
                    await self._pause(attempt, error)
                    attempt += 1
                    continue
                raise (final or self._exhausted_error(error)) from error
            return

    async def _attempt(
        self, messages: list[ChatMessage], model: str, state: _AttemptState
    ) -> AsyncIterator[TextDelta | Usage]:
        request = self.client.chat.completions.with_streaming_response.create(
            **self._request(messages, model)
        )
        # `async with` closes the HTTP response however we leave: at the end, on an error, or
        # when the caller cancels us; closing it is what stops the model generating.
        async with request as response:
            async for item in read_stream(response.iter_lines(), response.http_request):
                if isinstance(item, TextDelta):
                    state.first_token_seen = True
                yield item

    @staticmethod
    def _final_error(error: Exception, first_token_seen: bool) -> ProviderError | None:
        """The error to end the reply with, or None when a retry may help."""
        if first_token_seen:
            # Retrying now would send the user the beginning of the reply a second time.
            return ProviderError(
                "stream_interrupted", "The connection to the model broke mid-reply."
            )
        if _read_timed_out(error):
            # Connected, asked, and nothing came back for LLM_TIMEOUT: the endpoint is up but
            # stuck or swamped. Each retry would keep the person waiting as long again (the
            # audit's hanging model took four minutes to end with three retries).
            return ProviderError("timeout", "The model endpoint did not answer in time.")
        if isinstance(error, openai.APIStatusError) and not isinstance(error, _RETRYABLE):
            return ProviderError(
                "provider_rejected",
                f"The model endpoint refused the request (HTTP {error.status_code}).",
            )
        return None

    @staticmethod
    def _exhausted_error(error: Exception) -> ProviderError:
        if isinstance(error, openai.APITimeoutError):
            return ProviderError("timeout", "The model endpoint did not answer in time.")
        if isinstance(error, openai.APIStatusError):
            return ProviderError(
                "provider_unavailable",
                f"The model endpoint kept failing (HTTP {error.status_code}).",
            )
        return ProviderError("provider_unavailable", "The model endpoint could not be reached.")

    async def _pause(self, attempt: int, error: Exception) -> None:
        delay = self.retry_delay(attempt, error)
        metrics.PROVIDER_RETRIES.inc()
        logger.warning("Model request failed (%s); retry %d in %.2fs", error, attempt + 1, delay)
        await asyncio.sleep(delay)

    def _request(self, messages: list[ChatMessage], model: str) -> dict[str, Any]:
        request: dict[str, Any] = {
            "model": model,
            "messages": messages,
            "stream": True,
            "stream_options": {"include_usage": True},
        }
        if self.max_tokens:
            request["max_tokens"] = self.max_tokens
        return request

    async def list_models(self) -> list[str]:
        page = await self.client.models.list()
        return sorted(model.id for model in page.data)

    async def aclose(self) -> None:
        await self.client.close()


def _read_timed_out(error: BaseException) -> bool:
    """The endpoint took the request and then sent nothing for LLM_TIMEOUT (before the
    response began, which the SDK wraps, or while it streamed, which it does not). Matched by
    name: the SDK's HTTP library is httpx or its fork, whose timeouts are distinct classes."""
    names = {type(error).__name__, type(error.__cause__).__name__}
    timed_out = isinstance(error, openai.APITimeoutError) or "ReadTimeout" in names
    return timed_out and "ConnectTimeout" not in names
