"""Ports, credentials and the two plans: the full matrix and the minute-long smoke.

Every port is in 27xxx, apart from the app's own test services (28xxx, 55432, 5638x), so a
benchmark never collides with `make -C app test` running at the same time; and below Linux's
ephemeral range (32768-60999), where any outgoing connection of the run itself may hold a
port when a server binds it (a full run's nginx once failed to bind 59446 so).
"""

from __future__ import annotations

import secrets
from dataclasses import dataclass, field


@dataclass(frozen=True)
class Ports:
    postgres: int = 27432
    redis_broker: int = 27379
    redis_channels: int = 27380
    fakellm: int = 27100
    # Backends, on loopback behind nginx; each TLS front is its backend + 440.
    parley: int = 27001  # (a) Gunicorn + Uvicorn, Celery
    daphne: int = 27002  # (b) Daphne processes sharing one socket, Celery
    inprocess: int = 27003  # (c) Gunicorn + Uvicorn, generation in the consumer
    per_token: int = 27004  # (a) with one channel-layer message per token
    echo: int = 27005  # bare Uvicorn + websockets echo server (row 3's baseline)
    prefork: int = 27006  # (p) Gunicorn + Uvicorn, Celery's prefork pool of before
    worker_metrics: int = 27009
    worker_metrics_per_token: int = 27010
    worker_metrics_prefork: int = 27011

    def tls(self, backend: int) -> int:
        return backend + 440

    def all(self) -> list[int]:
        backends = [
            self.parley, self.daphne, self.inprocess, self.per_token, self.echo, self.prefork
        ]  # fmt: skip
        return [
            self.postgres,
            self.redis_broker,
            self.redis_channels,
            self.fakellm,
            self.worker_metrics,
            self.worker_metrics_per_token,
            self.worker_metrics_prefork,
            *backends,
            *(self.tls(port) for port in backends),
        ]


@dataclass(frozen=True)
class Credentials:
    """Fresh per run: nothing here is a secret worth keeping, but nothing is hard-coded."""

    db_password: str = field(default_factory=lambda: secrets.token_urlsafe(18))
    redis_password: str = field(default_factory=lambda: secrets.token_urlsafe(18))
    redis_admin_password: str = field(default_factory=lambda: secrets.token_urlsafe(18))
    user_password: str = field(default_factory=lambda: secrets.token_urlsafe(18))
    secret_key: str = field(default_factory=lambda: secrets.token_urlsafe(48))


@dataclass(frozen=True)
class ModelSpec:
    """How the fake model answers: its own cost, known so it can be subtracted."""

    ttft_ms: int
    tokens_per_second: int
    reply_tokens: int

    @property
    def name(self) -> str:
        # fakellm reads markers after '+' in the model name; the app offers exactly these names.
        return (
            f"fake-model+ttft-ms={self.ttft_ms}+tps={self.tokens_per_second}"
            f"+tokens={self.reply_tokens}"
        )

    @property
    def own_seconds(self) -> float:
        """The model's own time for a whole reply: first token, then one token per interval."""
        return self.ttft_ms / 1000 + (self.reply_tokens - 1) / self.tokens_per_second


@dataclass(frozen=True)
class LoadLevel:
    """One concurrency level: `chats` sockets, each sending `replies` messages in turn."""

    chats: int
    replies: int
    # Seconds a chat waits after a reply is done before sending the next (uniform range), and
    # the window over which the chats' first messages are spread.
    think: tuple[float, float]
    ramp: float


@dataclass(frozen=True)
class Plan:
    name: str
    rounds: int
    overhead_model: ModelSpec
    overhead_levels: tuple[LoadLevel, ...]
    throughput_model: ModelSpec
    throughput_level: LoadLevel
    sockets: int
    socket_clients: int
    socket_hold_seconds: float
    users: int
    # Row 5: N chats sending at once to a model with 10-second replies, in rounds of their own.
    inflight_model: ModelSpec
    inflight_levels: tuple[int, ...]
    inflight_rounds: int
    # The waterfall's own measurement: each design warmed at this level, then measured at it.
    waterfall_level: LoadLevel
    web_workers: int = 3
    # Design a's worker: Celery's threads pool writing this many replies at once on one event
    # loop, the celery role's `celery_replies_in_flight` per worker host (roledefaults.py).
    replies_in_flight: int = 200
    # Design p's worker: the prefork pool of before, one reply per process.
    prefork_concurrency: int = 8
    # Replies of each profiled (py-spy) measurement, apart from the matrix.
    profile_replies: int = 12


# What the issue asks for: 1, 50 and 200 chats. At 50 and 200, every chat sends one message
# at a random moment of a 20 s window: a person sending a message every 20 s or so, the
# window long enough for a p99 when pooled over the rounds. At 200 chats that offers 10
# replies a second, about half of what this 2-core machine serves when it is quiet (each
# reply costs ~100 ms of CPU in design a): a load, not an overload.
FULL = Plan(
    name="full",
    rounds=3,
    overhead_model=ModelSpec(ttft_ms=50, tokens_per_second=200, reply_tokens=40),
    overhead_levels=(
        LoadLevel(chats=1, replies=15, think=(0.05, 0.1), ramp=0.0),
        LoadLevel(chats=50, replies=1, think=(0.0, 0.0), ramp=20.0),
        LoadLevel(chats=200, replies=1, think=(0.0, 0.0), ramp=20.0),
    ),
    # A model faster than the stack: 16 chats asking back to back, so each design delivers
    # what it can, not what the model allows.
    throughput_model=ModelSpec(ttft_ms=0, tokens_per_second=1000, reply_tokens=300),
    throughput_level=LoadLevel(chats=16, replies=2, think=(0.0, 0.0), ramp=0.5),
    sockets=10_000,
    socket_clients=4,
    socket_hold_seconds=10,
    users=20,
    # The row 5: 200 ms to the first token, 20 tokens a second, 200 tokens: a reply
    # lasts 10 s, as real ones do, so what a worker host holds at once is what counts.
    inflight_model=ModelSpec(ttft_ms=200, tokens_per_second=20, reply_tokens=200),
    inflight_levels=(50, 200, 500),
    # One round: each measurement is N replies at once (a p99 of its own), and the prefork
    # design needs N / 8 x 10 s per measurement (about 11 minutes at N = 500).
    inflight_rounds=1,
    waterfall_level=LoadLevel(chats=10, replies=4, think=(0.05, 0.1), ramp=1.0),
)

# Enough to prove the harness runs end to end and writes well-formed results; never timed.
# Row 5's levels are above both workers' slots, so replies queue there too.
SMOKE = Plan(
    name="smoke",
    rounds=1,
    overhead_model=ModelSpec(ttft_ms=20, tokens_per_second=500, reply_tokens=10),
    overhead_levels=(LoadLevel(chats=2, replies=2, think=(0.0, 0.05), ramp=0.1),),
    throughput_model=ModelSpec(ttft_ms=0, tokens_per_second=2000, reply_tokens=40),
    throughput_level=LoadLevel(chats=2, replies=1, think=(0.0, 0.0), ramp=0.0),
    sockets=40,
    socket_clients=2,
    socket_hold_seconds=1,
    users=2,
    inflight_model=ModelSpec(ttft_ms=100, tokens_per_second=50, reply_tokens=10),
    inflight_levels=(3, 6),
    inflight_rounds=1,
    waterfall_level=LoadLevel(chats=2, replies=2, think=(0.0, 0.05), ramp=0.1),
    web_workers=1,
    replies_in_flight=4,
    prefork_concurrency=2,
    profile_replies=2,
)
