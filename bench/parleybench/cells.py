"""One measurement: one design, one load, one round. Every row of the matrix is made of these.

Around the load client it records what the servers spent (CPU, peak memory of each process),
what each Redis instance executed (INFO commandstats before and after), the new connections
made to PostgreSQL, Redis and the model, the worker's memory against its replies in flight,
and what the fake model saw of each request, which splits a reply's time to first token into
the stack's part before the model was asked, the model's own part, and the stack's part after
it answered; each reply's timeline (timeline.py) cuts the stack's parts finer (the waterfall).
"""

from __future__ import annotations

import json
import os
import resource
import subprocess
import time
import urllib.request
from contextlib import nullcontext
from dataclasses import asdict, dataclass, field
from typing import Any

from parleybench import stats
from parleybench.config import LoadLevel, ModelSpec
from parleybench.designs import Design
from parleybench.loadspec import ChatTarget, LoadResult, LoadSpec, ReplyRecord
from parleybench.monitor import (
    InFlightSampler,
    ProcessSampler,
    QueueDepthSampler,
    command_calls,
    command_delta,
)
from parleybench.paths import BENCH_DIR, STATE_DIR, VENV_BIN
from parleybench.stack import Stack
from parleybench.timeline import STEPS

# kombu's list for the default queue, under the broker's global key prefix (settings).
CELERY_QUEUE_KEY = "parley:celery:celery"


@dataclass
class ModelTiming:
    """The fake model's view of one request (wall clock, same host as the client)."""

    started_at: float
    first_token_at: float | None
    connection: int = 0


@dataclass
class Cell:
    row: str
    design: str
    chats: int
    round: int
    model: str
    load: LoadResult
    model_timings: dict[str, ModelTiming]
    process_groups: dict[str, dict[str, float]]
    processes: list[dict[str, object]]
    redis_commands: dict[str, dict[str, int]]
    client_cpu_seconds: float
    # The machine's 1, 5 and 15 minute load averages when this measurement began.
    load_average: tuple[float, float, float]
    # Celery tasks waiting for a free pool process (designs with Celery only).
    queue_depth: dict[str, float] | None
    # New connections during the measurement: postgres, redis-broker, redis-channels, model.
    connections: dict[str, int] = field(default_factory=dict)
    # The fake model's own count: the most streams it had open at once.
    most_open_streams: int = 0
    # The worker's memory against its replies in flight (designs with Celery only).
    in_flight: dict[str, Any] | None = None
    # Each reply's steps as the app logged them, by reply id.
    timeline: dict[int, dict[str, float]] = field(default_factory=dict)
    summary: dict[str, Any] = field(default_factory=dict)

    def complete(self) -> list[ReplyRecord]:
        return [reply for reply in self.load.replies if reply.status == "complete"]

    def to_json(self) -> dict[str, Any]:
        """Everything measured, compact: per-reply records as rows under one header, with the
        fake model's timing of each, so every figure can be recomputed from the file."""
        data = asdict(self)
        del data["load"], data["model_timings"]
        rows = []
        for reply in self.load.replies:
            timing = self.model_timings.get(reply.prompt)
            rows.append([
                reply.chat, reply.index, reply.status, _round(reply.sent_at),
                _round(reply.ttft), _round(reply.first_delta_at), _round(reply.total),
                reply.deltas, reply.tokens, reply.chars,
                _round(timing.started_at if timing else None),
                _round(timing.first_token_at if timing else None),
                timing.connection if timing else None, reply.reply_id,
            ])  # fmt: skip
        data["replies"] = {"fields": REPLY_FIELDS, "rows": rows}
        data["connect_errors"] = self.load.connect_errors
        data["started_at"], data["ended_at"] = self.load.started_at, self.load.ended_at
        return data


REPLY_FIELDS = [
    "chat", "index", "status", "sent_at", "ttft", "first_delta_at", "total", "deltas", "tokens",
    "chars", "model_started_at", "model_first_token_at", "model_connection", "reply_id",
]  # fmt: skip


def _round(value: float | None) -> float | None:
    return None if value is None else round(value, 6)


def _fakellm(stack: Stack, method: str, path: str) -> bytes:
    request = urllib.request.Request(
        f"https://127.0.0.1:{stack.ports.fakellm}{path}",
        method=method,
        data=b"" if method == "POST" else None,
    )
    with urllib.request.urlopen(  # noqa: S310  (loopback)
        request, timeout=30, context=stack.ssl_context()
    ) as response:
        return response.read()


def fakellm_requests(stack: Stack) -> list[dict[str, Any]]:
    """What the fake model saw since its last reset: one record per request."""
    return json.loads(_fakellm(stack, "GET", "/_fakellm/requests"))


def fakellm_stats(stack: Stack) -> dict[str, int]:
    """Streams open now, the most open at once since the reset, connections accepted."""
    return json.loads(_fakellm(stack, "GET", "/_fakellm/stats"))


class ConversationPool:
    """Each (design, level) keeps its own conversations across rounds, so every design's
    conversations carry the same history length when it is measured."""

    def __init__(self, stack: Stack) -> None:
        self.stack = stack
        self.assigned: dict[tuple[str, str, int], list[ChatTarget]] = {}

    def targets(self, row: str, design: str, chats: int) -> list[ChatTarget]:
        key = (row, design, chats)
        if key not in self.assigned:
            taken = self.stack.take_conversations(chats)
            self.assigned[key] = [
                ChatTarget(conversation, self.stack.cookies[user]) for user, conversation in taken
            ]
        return self.assigned[key]


def run_cell(  # noqa: PLR0913  (one measurement is all of these)
    stack: Stack,
    pool: ConversationPool,
    design: Design,
    *,
    row: str,
    level: LoadLevel,
    model: ModelSpec,
    round_index: int,
    reply_timeout: float = 120.0,
) -> Cell:
    tag = f"{row}-{design.key}-{level.chats}-r{round_index}-{time.monotonic_ns() % 10**6}"
    spec = LoadSpec(
        tag=tag,
        model=model.name,
        replies=level.replies,
        think=level.think,
        ramp=level.ramp,
        reply_timeout=reply_timeout,
        deadline=level.ramp + level.replies * (level.think[1] + reply_timeout) + 60,
        seed=round_index * 7919 + level.chats,
        chats=(
            pool.targets(row, design.key, level.chats)
            if design.through_app
            else [ChatTarget() for _ in range(level.chats)]
        ),
    )
    spec.cafile = str(stack.tls.ca)
    if design.through_app:
        assert design.backend_port is not None  # noqa: S101  (through_app says so)
        front = stack.ports.tls(design.backend_port)
        spec.url, spec.origin = f"wss://127.0.0.1:{front}", f"https://127.0.0.1:{front}"
        client_module = "parleybench.chatload"
    else:
        spec.base_url = f"https://127.0.0.1:{stack.ports.fakellm}/v1"
        client_module = "parleybench.floorload"
    spec_path = STATE_DIR / "cells" / f"{tag}.spec.json"
    out_path = spec_path.with_suffix("").with_suffix(".out.json")
    spec_path.parent.mkdir(parents=True, exist_ok=True)
    spec.save(spec_path)

    _fakellm(stack, "POST", "/_fakellm/reset")
    counters = stack.counters
    assert counters is not None  # noqa: S101  (set by bring_up)
    load_average = os.getloadavg()
    redis_clients = {"channels": stack.admin(stack.channels), "broker": stack.admin(stack.broker)}
    queue_client = stack.broker_admin(design.queue_db or 0)
    # Every client of the harness connects before the counts start: its connections are not
    # the app's.
    queue_client.ping()
    before = {name: command_calls(client) for name, client in redis_clients.items()}
    connections_before = counters.snapshot()
    roots = {role: stack.roots[role] for role in design.roles}
    cpu_before = resource.getrusage(resource.RUSAGE_CHILDREN)
    queue = QueueDepthSampler(queue_client, CELERY_QUEUE_KEY)
    in_flight = (
        InFlightSampler(
            stack.roots[design.worker],
            design.worker_metrics_port,
            stack.worker_slots[design.worker],
        )
        if design.worker is not None and design.worker_metrics_port is not None
        else None
    )
    with (
        ProcessSampler(roots) as sampler,
        queue if design.queue_db is not None else nullcontext(),
        in_flight if in_flight is not None else nullcontext(),
    ):
        completed = subprocess.run(  # noqa: S603  (our own client)
            [str(VENV_BIN / "python"), "-m", client_module, str(spec_path), str(out_path)],
            cwd=BENCH_DIR,
            capture_output=True,
            text=True,
            timeout=spec.deadline + 120,
            check=False,
        )
    cpu_after = resource.getrusage(resource.RUSAGE_CHILDREN)
    if completed.returncode != 0:
        raise RuntimeError(f"load client {tag} failed:\n{completed.stderr[-4000:]}")
    after = {name: command_calls(client) for name, client in redis_clients.items()}
    connections = counters.since(connections_before)
    for client in [*redis_clients.values(), queue_client]:
        client.close()
    records = fakellm_requests(stack)
    timings = {
        record["prompt"]: ModelTiming(
            record["started_at"], record["first_token_at"], record.get("connection", 0)
        )
        for record in records
    }
    connections["model"] = counters.new_model_connections(
        [record.get("connection", 0) for record in records]
    )
    load = LoadResult.load(out_path)
    stack.timeline.read()
    cell = Cell(
        row=row,
        design=design.key,
        chats=level.chats,
        round=round_index,
        model=model.name,
        load=load,
        model_timings=timings,
        process_groups=sampler.by_group(),
        processes=sampler.processes(),
        redis_commands={name: command_delta(before[name], after[name]) for name in redis_clients},
        client_cpu_seconds=round(
            (cpu_after.ru_utime + cpu_after.ru_stime) - (cpu_before.ru_utime + cpu_before.ru_stime),
            3,
        ),
        load_average=load_average,
        queue_depth=queue.summary() if design.queue_db is not None else None,
        connections=connections,
        most_open_streams=int(fakellm_stats(stack).get("most_open_streams", 0)),
        in_flight=in_flight.summary() if in_flight is not None else None,
        timeline={
            reply.reply_id: stack.timeline.for_reply(reply.reply_id)
            for reply in load.replies
            if reply.reply_id is not None
        },
    )
    cell.summary = summarize(cell, model)
    return cell


def summarize(cell: Cell, model: ModelSpec) -> dict[str, Any]:
    """The figures of one cell; pooled figures over rounds are built from the same records."""
    replies = cell.complete()
    return {
        "replies": len(cell.load.replies),
        "complete": len(replies),
        "errors": len(cell.load.replies) - len(replies) + len(cell.load.connect_errors),
        "failures": failures(cell.load.replies),
        **reply_figures(replies, cell.model_timings, model),
        "throughput": throughput(replies),
        "cpu_ms_per_reply": {
            group: round(values["cpu_seconds"] * 1000 / max(1, len(replies)), 2)
            for group, values in cell.process_groups.items()
        },
        "peak_rss_mib": {
            group: values["peak_rss_mib"] for group, values in cell.process_groups.items()
        },
        "redis_commands_per_reply": {
            name: round(sum(calls.values()) / max(1, len(replies)), 2)
            for name, calls in cell.redis_commands.items()
        },
        "queue_depth": cell.queue_depth,
        "layer_messages_per_reply": round(layer_messages(cell) / max(1, len(replies)), 2),
        "waterfall_ms": waterfall(replies, cell.timeline, cell.model_timings),
        "connections": cell.connections,
        "connections_per_reply": {
            name: round(count / max(1, len(cell.load.replies)), 3)
            for name, count in cell.connections.items()
        },
        "most_open_streams": cell.most_open_streams,
        "in_flight": cell.in_flight,
        "load_average": cell.load_average[0],
    }


def layer_messages(cell: Cell) -> int:
    """Channel-layer messages: each is one PUBLISH to a conversation's group on the
    channel-layer instance (the pub/sub layer; a stop signal would be one too, and the
    benchmark sends none)."""
    return cell.redis_commands["channels"].get("publish", 0)


def waterfall(
    replies: list[ReplyRecord],
    timelines: dict[int, dict[str, float]],
    timings: dict[str, ModelTiming],
) -> dict[str, dict[str, float | int | None]]:
    """Each step of the way to the first token, in ms after the client sent its frame."""
    offsets: dict[str, list[float]] = {step: [] for step, _who in STEPS}
    for reply in replies:
        steps = dict(timelines.get(reply.reply_id, {})) if reply.reply_id is not None else {}
        timing = timings.get(reply.prompt)
        if timing is not None:
            steps["model_received"] = timing.started_at
            if timing.first_token_at is not None:
                steps["model_first_token"] = timing.first_token_at
        if reply.first_delta_at is not None:
            steps["client_first_token"] = reply.first_delta_at
        for step, at in steps.items():
            if step in offsets:
                offsets[step].append(at - reply.sent_at)
    return {step: stats.distribution_ms(values) for step, values in offsets.items()}


def failures(replies: list[ReplyRecord]) -> dict[str, int]:
    """How many replies ended other than complete, by how (timeout, stalled, an error code)."""
    counts: dict[str, int] = {}
    for reply in replies:
        if reply.status != "complete":
            counts[reply.status] = counts.get(reply.status, 0) + 1
    return counts


def reply_figures(
    replies: list[ReplyRecord], timings: dict[str, ModelTiming], model: ModelSpec
) -> dict[str, Any]:
    model_ttft = model.ttft_ms / 1000
    ttft = [reply.ttft for reply in replies if reply.ttft is not None]
    before_model: list[float] = []
    model_own: list[float] = []
    after_model: list[float] = []
    for reply in replies:
        timing = timings.get(reply.prompt)
        if timing is None or timing.first_token_at is None or reply.first_delta_at is None:
            continue
        before_model.append(timing.started_at - reply.sent_at)
        model_own.append(timing.first_token_at - timing.started_at)
        after_model.append(reply.first_delta_at - timing.first_token_at)
    return {
        "ttft_ms": stats.distribution_ms(ttft),
        # What the stack adds to the model's configured time to first token.
        "overhead_ms": stats.distribution_ms(value - model_ttft for value in ttft),
        "done_ms": stats.distribution_ms(r.total for r in replies if r.total is not None),
        # The model's own time to first token as it measured it (its load shows here).
        "model_ttft_ms": stats.distribution_ms(model_own),
        "split_p50_ms": {
            "before_model": stats.ms(stats.percentile(before_model, 50)),
            "model": stats.ms(stats.percentile(model_own, 50)),
            "after_model": stats.ms(stats.percentile(after_model, 50)),
        },
        "deltas_per_reply": round(sum(r.deltas for r in replies) / max(1, len(replies)), 2),
        "tokens_per_reply": round(sum(r.tokens for r in replies) / max(1, len(replies)), 2),
    }


def throughput(replies: list[ReplyRecord]) -> dict[str, float | None]:
    """Replies and tokens per second from the first send to the last done."""
    ended = [r.sent_at + r.total for r in replies if r.total is not None]
    if not replies or not ended:
        return {"seconds": None, "replies_per_second": None, "tokens_per_second": None}
    seconds = max(ended) - min(r.sent_at for r in replies)
    tokens = sum(r.tokens for r in replies)
    return {
        "seconds": round(seconds, 3),
        "replies_per_second": round(len(replies) / seconds, 2) if seconds > 0 else None,
        "tokens_per_second": round(tokens / seconds, 1) if seconds > 0 else None,
    }
