"""The small interface every LLM provider implements, and the values its stream yields."""

from __future__ import annotations

import math
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Protocol


@dataclass(frozen=True, slots=True)
class TextDelta:
    text: str


@dataclass(frozen=True, slots=True)
class Usage:
    prompt_tokens: int
    completion_tokens: int


class ProviderError(Exception):
    """A model call that failed; `code` is what the user's error frame carries."""

    def __init__(self, code: str, message: str) -> None:
        super().__init__(message)
        self.code = code
        self.message = message


ChatMessage = dict[str, str]


class Provider(Protocol):
    name: str
    label: str

    def stream(self, messages: list[ChatMessage], model: str) -> AsyncIterator[TextDelta | Usage]:
        """Yield the reply's text deltas, then its Usage when the endpoint reports one.

        Closing the iterator (or cancelling the task iterating it) must close the upstream
        connection, so the model stops generating.
        """
        ...

    async def list_models(self) -> list[str]: ...

    async def aclose(self) -> None: ...


def estimate_tokens(text: str) -> int:
    """A rough token count (about four characters a token for English) for broken streams."""
    return math.ceil(len(text) / 4) if text else 0
