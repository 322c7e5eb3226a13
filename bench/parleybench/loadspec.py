"""What a load client is told to do and what it reports, shared by the chat and floor clients.

A load client is its own process (`python -m parleybench.chatload SPEC OUT` or
`parleybench.floorload`), so its CPU is not the harness's, and the harness can sample the
servers' memory and CPU while it runs. Every client is bounded: a fixed number of replies per
chat, a timeout per reply and a deadline for the whole run.
"""

from __future__ import annotations

import asyncio
import json
import random
import sys
from collections.abc import Awaitable, Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import uvloop


@dataclass
class ChatTarget:
    conversation: str = ""
    cookie: str = ""


@dataclass
class LoadSpec:
    tag: str
    model: str
    replies: int
    think: tuple[float, float]
    ramp: float
    reply_timeout: float
    deadline: float
    seed: int
    chats: list[ChatTarget]
    # The chat client: wss://host:port; the CA that signed nginx's and the model's certificates.
    url: str = ""
    origin: str = ""
    cafile: str = ""
    # The floor client: the fake model's OpenAI-compatible base URL.
    base_url: str = ""
    system_prompt: str = "You are a helpful assistant."

    @classmethod
    def load(cls, path: Path) -> LoadSpec:
        raw = json.loads(path.read_text())
        raw["chats"] = [ChatTarget(**chat) for chat in raw["chats"]]
        raw["think"] = tuple(raw["think"])
        return cls(**raw)

    def save(self, path: Path) -> None:
        path.write_text(json.dumps(asdict(self)))

    def prompt(self, chat: int, reply: int) -> str:
        # Unique per reply, so the fake model's request log can be matched to this reply.
        return f"bench {self.tag} chat {chat} reply {reply}: tell me about sockets"


@dataclass
class ReplyRecord:
    chat: int
    index: int
    prompt: str
    sent_at: float  # wall clock (time.time()), comparable with the fake model's log
    ttft: float | None = None  # seconds from sending to the first non-empty delta
    first_delta_at: float | None = None  # wall clock
    total: float | None = None  # seconds from sending to done
    deltas: int = 0
    tokens: int = 0
    chars: int = 0
    status: str = "pending"  # complete | error code | timeout
    error: str = ""
    reply_id: int | None = None  # the app's id of the reply (from the ack): its timeline


@dataclass
class LoadResult:
    tag: str
    started_at: float = 0.0
    ended_at: float = 0.0
    connect_errors: list[str] = field(default_factory=list)
    replies: list[ReplyRecord] = field(default_factory=list)

    def save(self, path: Path) -> None:
        path.write_text(json.dumps(asdict(self)))

    @classmethod
    def load(cls, path: Path) -> LoadResult:
        raw = json.loads(path.read_text())
        raw["replies"] = [ReplyRecord(**reply) for reply in raw["replies"]]
        return cls(**raw)


def think_time(rng: random.Random, spec: LoadSpec) -> float:
    low, high = spec.think
    return rng.uniform(low, high) if high > 0 else 0.0


def run_client(main: Callable[[LoadSpec], Awaitable[LoadResult]]) -> None:
    """Entry point of a load client process: read the spec, run on uvloop, write the result."""
    spec_path, out_path = Path(sys.argv[1]), Path(sys.argv[2])
    spec = LoadSpec.load(spec_path)
    result: Any
    # uvloop, as Uvicorn uses: the client's own loop should be the cheapest part of a run.
    with asyncio.Runner(loop_factory=uvloop.new_event_loop) as runner:
        result = runner.run(main(spec))
    result.save(out_path)
