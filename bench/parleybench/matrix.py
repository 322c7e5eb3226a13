"""Rows 1, 2 and 5 and the waterfall: every design measured in rotating order, round after
round, in one run.

A slow minute on the shared machine then lands on every design alike instead of on whichever
happened to run in it; each figure is pooled over the rounds, and each comparison is also
made round by round (the spread of those paired figures is reported with them).
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import replace
from typing import Any

from parleybench import stats
from parleybench.cells import (
    Cell,
    ConversationPool,
    ModelTiming,
    failures,
    layer_messages,
    reply_figures,
    run_cell,
    waterfall,
)
from parleybench.config import LoadLevel, ModelSpec
from parleybench.designs import Design, all_designs, rotated
from parleybench.paths import STATE_DIR
from parleybench.profile import Profiler
from parleybench.stack import Stack

OVERHEAD_DESIGNS = ["a", "b", "c", "d", "p"]
# Row 1's diagnostic: design a without coalescing, which shows what the coalescing window
# adds to the first token. Measured at one chat only.
OVERHEAD_DIAGNOSTIC = "a1"
THROUGHPUT_DESIGNS = ["a", "a1", "d", "p"]
# Row 5: the worker host as deployed, the prefork worker of before, and the model on its own
# (the floor's client holding N streams: what the fake model itself does at N).
INFLIGHT_DESIGNS = ["a", "p", "d"]
# The waterfall's own measurement: each design warmed, then measured, at one level.
WATERFALL_DESIGNS = ["a", "p"]

Progress = Callable[[str], None]


def warm_up(stack: Stack, pool: ConversationPool, model: ModelSpec, progress: Progress) -> None:
    """A few replies on every design first: imports, pools and caches are not measured."""
    designs = all_designs(stack.ports)
    level = LoadLevel(chats=2, replies=2, think=(0.0, 0.05), ramp=0.2)
    for key in [*OVERHEAD_DESIGNS, OVERHEAD_DIAGNOSTIC]:  # p is among them
        cell = run_cell(
            stack, pool, designs[key], row="warmup", level=level, model=model, round_index=0
        )
        progress(f"warm-up {key}: {cell.summary['complete']}/{cell.summary['replies']} replies")
        if cell.summary["complete"] == 0:
            raise RuntimeError(
                f"design {key} answered nothing during warm-up: "
                f"{cell.load.connect_errors[:3]} {cell.load.replies[:2]}"
            )


def run_overhead_row(stack: Stack, pool: ConversationPool, progress: Progress) -> list[Cell]:
    plan, designs = stack.plan, all_designs(stack.ports)
    cells: list[Cell] = []
    for round_index in range(plan.rounds):
        for level_index, level in enumerate(plan.overhead_levels):
            keys = list(OVERHEAD_DESIGNS)
            if level is plan.overhead_levels[0]:
                keys.append(OVERHEAD_DIAGNOSTIC)
            for key in rotated(keys, round_index + level_index):
                cells.append(
                    _measure(
                        stack,
                        pool,
                        designs[key],
                        row="overhead",
                        level=level,
                        model=plan.overhead_model,
                        round_index=round_index,
                        progress=progress,
                    )
                )
    return cells


def run_throughput_row(stack: Stack, pool: ConversationPool, progress: Progress) -> list[Cell]:
    plan, designs = stack.plan, all_designs(stack.ports)
    cells: list[Cell] = []
    for round_index in range(plan.rounds):
        for key in rotated(THROUGHPUT_DESIGNS, round_index):
            cells.append(
                _measure(
                    stack,
                    pool,
                    designs[key],
                    row="throughput",
                    level=plan.throughput_level,
                    model=plan.throughput_model,
                    round_index=round_index,
                    progress=progress,
                )
            )
    return cells


def inflight_timeout(chats: int, slots: int, model: ModelSpec) -> float:
    """How long a reply of row 5 may take: the replies ahead of it drain `slots` at a time,
    each lasting the model's own time; twice that, plus two minutes for a busy machine."""
    waves = -(-chats // max(1, slots))
    return 2 * waves * model.own_seconds + 120


def run_inflight_row(stack: Stack, pool: ConversationPool, progress: Progress) -> list[Cell]:
    """Row 5: N chats send at once; what one worker host holds, and how soon each first token
    comes, against the prefork worker of before."""
    plan, designs = stack.plan, all_designs(stack.ports)
    cells: list[Cell] = []
    for round_index in range(plan.inflight_rounds):
        for level_index, chats in enumerate(plan.inflight_levels):
            level = LoadLevel(chats=chats, replies=1, think=(0.0, 0.0), ramp=0.0)
            for key in rotated(INFLIGHT_DESIGNS, round_index + level_index):
                design = designs[key]
                slots = stack.worker_slots[design.worker] if design.worker else chats
                cells.append(
                    _measure(
                        stack,
                        pool,
                        design,
                        row="inflight",
                        level=level,
                        model=plan.inflight_model,
                        round_index=round_index,
                        progress=progress,
                        reply_timeout=inflight_timeout(chats, slots, plan.inflight_model),
                    )
                )
    return cells


def run_waterfall_row(stack: Stack, pool: ConversationPool, progress: Progress) -> list[Cell]:
    """Each design twice in a row at the same level: the first pass opens whatever its pools
    lack (kept as "waterfall-warm"), the second shows what a warm stack needs per reply."""
    plan, designs = stack.plan, all_designs(stack.ports)
    cells: list[Cell] = []
    for key in WATERFALL_DESIGNS:
        for row in ("waterfall-warm", "waterfall"):
            cells.append(
                _measure(
                    stack,
                    pool,
                    designs[key],
                    row=row,
                    level=plan.waterfall_level,
                    model=plan.overhead_model,
                    round_index=0,
                    progress=progress,
                )
            )
    return cells


# Profiled apart from the matrix: the deployed design and the in-process one at one chat (where
# the time before the model is asked goes), and the deployed one at full stream (where its
# CPU per token goes).
PROFILED = (("a", "overhead"), ("c", "overhead"), ("a", "throughput"))


def run_profiles(stack: Stack, pool: ConversationPool, progress: Progress) -> list[dict[str, Any]]:
    plan, designs = stack.plan, all_designs(stack.ports)
    profiles = []
    for key, row in PROFILED:
        design = designs[key]
        if row == "overhead":
            model = plan.overhead_model
            level = LoadLevel(chats=1, replies=plan.profile_replies, think=(0.05, 0.1), ramp=0.0)
        else:
            level = replace(
                plan.throughput_level, chats=max(1, plan.throughput_level.chats // 2), replies=1
            )
            model = plan.throughput_model
        roles = [role for role in design.roles if role.startswith(("web", "celery"))]
        directory = STATE_DIR / "profiles" / f"{key}-{row}"
        with Profiler({role: stack.roots[role] for role in roles}, directory) as profiler:
            time.sleep(1)  # py-spy attaches to every process first
            cell = run_cell(
                stack, pool, design, row=f"profile-{row}", level=level, model=model, round_index=0
            )
        summary = profiler.summary()
        progress(
            f"profiled {key} ({row}): "
            + ", ".join(f"{group} {values['samples']} samples" for group, values in summary.items())
        )
        profiles.append(
            {
                "design": key,
                "row": row,
                "chats": level.chats,
                "model": model.name,
                "replies": cell.summary["complete"],
                "cpu_ms_per_reply": cell.summary["cpu_ms_per_reply"],
                "groups": summary,
            }
        )
    return profiles


def _measure(  # noqa: PLR0913  (passed straight to run_cell)
    stack: Stack,
    pool: ConversationPool,
    design: Design,
    *,
    row: str,
    level: LoadLevel,
    model: ModelSpec,
    round_index: int,
    progress: Progress,
    reply_timeout: float = 120.0,
) -> Cell:
    stack.supervisor.check_alive()
    cell = run_cell(
        stack,
        pool,
        design,
        row=row,
        level=level,
        model=model,
        round_index=round_index,
        reply_timeout=reply_timeout,
    )
    summary = cell.summary
    progress(
        f"{row} round {round_index + 1} design {design.key} chats {level.chats}: "
        f"{summary['complete']}/{summary['replies']} replies, {summary['errors']} errors, "
        f"first token p50/p99 {summary['ttft_ms']['p50']}/{summary['ttft_ms']['p99']} ms, "
        f"model saw {summary['most_open_streams']} at once, "
        f"{summary['throughput']['tokens_per_second']} tokens/s, new connections "
        f"{summary['connections']}"
    )
    return cell


def pooled(cells: list[Cell], model: ModelSpec) -> dict[str, Any]:
    """One design at one level: every round's replies together."""
    replies = [reply for cell in cells for reply in cell.complete()]
    timings: dict[str, ModelTiming] = {}
    for cell in cells:
        timings.update(cell.model_timings)
    count = max(1, len(replies))
    groups = sorted({group for cell in cells for group in cell.process_groups})
    commands: dict[str, int] = {}
    for cell in cells:
        for instance, calls in cell.redis_commands.items():
            commands[instance] = commands.get(instance, 0) + sum(calls.values())
    layer = sum(layer_messages(cell) for cell in cells)
    sent = max(1, sum(len(cell.load.replies) for cell in cells))
    connections: dict[str, int] = {}
    for cell in cells:
        for name, new in cell.connections.items():
            connections[name] = connections.get(name, 0) + new
    timelines = {reply: steps for cell in cells for reply, steps in cell.timeline.items()}
    in_flight = [cell.in_flight for cell in cells if cell.in_flight]
    loads = [cell.load_average[0] for cell in cells]
    return {
        "rounds": len(cells),
        "replies": sum(cell.summary["replies"] for cell in cells),
        "complete": len(replies),
        "errors": sum(cell.summary["errors"] for cell in cells),
        "failures": failures([reply for cell in cells for reply in cell.load.replies]),
        **reply_figures(replies, timings, model),
        "per_round": {
            "ttft_p50_ms": [cell.summary["ttft_ms"]["p50"] for cell in cells],
            "overhead_p50_ms": [cell.summary["overhead_ms"]["p50"] for cell in cells],
            "replies_per_second": [
                cell.summary["throughput"]["replies_per_second"] for cell in cells
            ],
            "tokens_per_second": [
                cell.summary["throughput"]["tokens_per_second"] for cell in cells
            ],
        },
        "replies_per_second": stats.median(
            cell.summary["throughput"]["replies_per_second"] for cell in cells
        ),
        "tokens_per_second": stats.median(
            cell.summary["throughput"]["tokens_per_second"] for cell in cells
        ),
        "cpu_ms_per_reply": {
            group: round(
                sum(c.process_groups.get(group, {}).get("cpu_seconds", 0.0) for c in cells)
                * 1000
                / count,
                2,
            )
            for group in groups
        },
        "peak_rss_mib": {
            group: max(c.process_groups.get(group, {}).get("peak_rss_mib", 0.0) for c in cells)
            for group in groups
        },
        "largest_process_rss_mib": {
            group: max(c.process_groups.get(group, {}).get("largest_rss_mib", 0.0) for c in cells)
            for group in groups
        },
        "redis_commands_per_reply": {
            instance: round(calls / count, 2) for instance, calls in commands.items()
        },
        "layer_messages_per_reply": round(layer / count, 2),
        "queue_depth_max": max(
            (cell.queue_depth["max"] for cell in cells if cell.queue_depth), default=None
        ),
        "queue_depth_mean": stats.median(
            cell.queue_depth["mean"] for cell in cells if cell.queue_depth
        ),
        "waterfall_ms": waterfall(replies, timelines, timings),
        "connections": connections,
        "connections_per_reply": {name: round(new / sent, 3) for name, new in connections.items()},
        "most_open_streams": max(cell.most_open_streams for cell in cells),
        "in_flight": _in_flight(in_flight),
        "load_average": [round(min(loads), 2), round(max(loads), 2)],
    }


def _in_flight(samples: list[dict[str, Any]]) -> dict[str, Any] | None:
    """Over rounds: the most replies in flight seen, and the median of the other figures."""
    if not samples:
        return None
    figures = ("idle_rss_mib", "rss_at_most_in_flight_mib", "peak_rss_mib",
               "kib_per_reply_in_flight", "idle_mib_per_slot")  # fmt: skip
    return {
        "slots": samples[0]["slots"],
        "most_in_flight": max(sample["most_in_flight"] for sample in samples),
        **{name: stats.median(sample[name] for sample in samples) for name in figures},
    }


def group_cells(cells: list[Cell]) -> dict[tuple[str, int], list[Cell]]:
    grouped: dict[tuple[str, int], list[Cell]] = {}
    for cell in cells:
        grouped.setdefault((cell.design, cell.chats), []).append(cell)
    return grouped


def paired(cells: list[Cell], left: str, right: str, chats: int, figure: str) -> list[float]:
    """Per round: left's figure minus right's (p50 of `figure`), where both ran."""
    by_round: dict[int, dict[str, float]] = {}
    for cell in cells:
        if cell.chats == chats and cell.design in {left, right}:
            value = cell.summary[figure]["p50"]
            if value is not None:
                by_round.setdefault(cell.round, {})[cell.design] = value
    return [
        round(values[left] - values[right], 2)
        for values in by_round.values()
        if left in values and right in values
    ]
