"""The smoke's verdict: the harness ran end to end and its results are well formed and
complete. No figure is compared with a time: a slow machine passes, a broken harness fails.
"""

from __future__ import annotations

import json
import math
import subprocess
import tempfile
from pathlib import Path
from typing import Any

from parleybench.config import Plan
from parleybench.matrix import (
    INFLIGHT_DESIGNS,
    OVERHEAD_DESIGNS,
    OVERHEAD_DIAGNOSTIC,
    THROUGHPUT_DESIGNS,
    WATERFALL_DESIGNS,
)
from parleybench.paths import BENCH_DIR, STATE_DIR, VENV_BIN
from parleybench.timeline import STEPS

APP_DESIGNS = {"a", "b", "c", "a1", "p"}
CELERY_DESIGNS = {"a", "b", "a1", "p"}
CONNECTIONS = {"postgres", "redis-broker", "redis-channels", "model"}


def _finite(value: object, where: str, problems: list[str]) -> None:
    if not isinstance(value, int | float) or not math.isfinite(value) or value < 0:
        problems.append(f"{where}: {value!r} is not a measured, non-negative number")


def check_reply_entry(key: str, entry: dict[str, Any], problems: list[str]) -> None:
    design = key.split("@", maxsplit=1)[0]
    if entry["complete"] == 0 or entry["complete"] != entry["replies"] or entry["errors"]:
        problems.append(
            f"{key}: {entry['complete']}/{entry['replies']} replies complete, "
            f"{entry['errors']} errors"
        )
    for name in ("ttft_ms", "overhead_ms", "done_ms"):
        for q in ("p50", "p95", "p99"):
            value = entry[name][q]
            if name == "overhead_ms":  # may be negative by a hair on a fast path; present is all
                if not isinstance(value, int | float):
                    problems.append(f"{key}.{name}.{q} missing")
            else:
                _finite(value, f"{key}.{name}.{q}", problems)
    for part, value in entry["split_p50_ms"].items():
        if value is None:
            problems.append(f"{key}: no {part} split (fake model log not matched)")
    if entry["tokens_per_reply"] <= 0:
        problems.append(f"{key}: no tokens received")
    layer = entry["layer_messages_per_reply"]
    if (design in APP_DESIGNS) != (layer > 0):
        problems.append(f"{key}: {layer} channel-layer messages per reply")
    for group, cpu in entry["cpu_ms_per_reply"].items():
        _finite(cpu, f"{key}.cpu.{group}", problems)
    if not any(rss > 0 for rss in entry["peak_rss_mib"].values()):
        problems.append(f"{key}: no process memory sampled")
    check_connections(key, entry, problems)
    check_waterfall_entry(key, design, entry, problems)


def check_connections(key: str, entry: dict[str, Any], problems: list[str]) -> None:
    if set(entry["connections"]) != CONNECTIONS:
        problems.append(f"{key}: new connections not counted: {entry['connections']}")
    for name, count in entry["connections"].items():
        _finite(count, f"{key}.connections.{name}", problems)
    if entry["most_open_streams"] < 1:
        problems.append(f"{key}: the fake model saw no stream open")


def check_waterfall_entry(
    key: str, design: str, entry: dict[str, Any], problems: list[str]
) -> None:
    """Every complete reply has each step its design takes: the timeline is read whole."""
    wanted = {"model_received", "model_first_token", "client_first_token"}
    if design in APP_DESIGNS:
        wanted |= {"frame_received", "task_started", "model_asked", "first_chunk",
                   "first_frame_relayed"}  # fmt: skip
    if design in CELERY_DESIGNS:
        wanted |= {"committed", "task_published"}
    for step, _who in STEPS:
        count = entry["waterfall_ms"][step]["n"]
        if step in wanted and count != entry["complete"]:
            problems.append(f"{key}: step {step} timed for {count} of {entry['complete']} replies")


def check_overhead(results: dict[str, Any], plan: Plan, problems: list[str]) -> None:
    overhead = results["overhead"]["designs"]
    for level in plan.overhead_levels:
        wanted = [*OVERHEAD_DESIGNS]
        if level is plan.overhead_levels[0]:
            wanted.append(OVERHEAD_DIAGNOSTIC)
        for design in wanted:
            key = f"{design}@{level.chats}"
            if key not in overhead:
                problems.append(f"overhead: no measurement of {key}")
            else:
                check_reply_entry(key, overhead[key], problems)


def check_throughput(results: dict[str, Any], problems: list[str]) -> None:
    throughput = results["throughput"]["designs"]
    for design in THROUGHPUT_DESIGNS:
        if design not in throughput:
            problems.append(f"throughput: no measurement of {design}")
            continue
        check_reply_entry(f"{design}@throughput", throughput[design], problems)
        _finite(throughput[design]["tokens_per_second"], f"{design} tokens/s", problems)
    if {"a", "a1"} <= throughput.keys() and not (
        throughput["a1"]["layer_messages_per_reply"] > throughput["a"]["layer_messages_per_reply"]
    ):
        problems.append("per-token sending did not send more channel-layer messages")


def check_inflight(results: dict[str, Any], plan: Plan, problems: list[str]) -> None:
    inflight = results["inflight"]["designs"]
    for chats in plan.inflight_levels:
        for design in INFLIGHT_DESIGNS:
            key = f"{design}@{chats}"
            if key not in inflight:
                problems.append(f"inflight: no measurement of {key}")
                continue
            entry = inflight[key]
            check_reply_entry(key, entry, problems)
            flight = entry["in_flight"]
            if design in CELERY_DESIGNS and (
                not flight or flight["most_in_flight"] < 1 or not flight["idle_rss_mib"]
            ):
                problems.append(f"inflight {key}: the worker's replies in flight unseen: {flight}")


def check_waterfall(results: dict[str, Any], plan: Plan, problems: list[str]) -> None:
    falls = results["waterfall"]["designs"]
    for design in WATERFALL_DESIGNS:
        for row in ("waterfall-warm", "waterfall"):
            key = f"{design}@{plan.waterfall_level.chats}@{row}"
            if key not in falls:
                problems.append(f"waterfall: no measurement of {key}")
            else:
                check_reply_entry(key, falls[key], problems)


def check_plots(results: dict[str, Any], problems: list[str]) -> None:
    for key in ("row1", "row5", "row5-n"):
        name = results.get("plots", {}).get(key)
        path = STATE_DIR / "results" / name if name else None
        if path is None or not path.exists() or path.stat().st_size == 0:
            problems.append(f"plot {key} not drawn: {name}")


def check_results(results: dict[str, Any], plan: Plan) -> list[str]:
    problems: list[str] = []
    json.loads(json.dumps(results, allow_nan=False))  # serialisable, no NaN
    check_overhead(results, plan, problems)
    check_throughput(results, problems)
    check_inflight(results, plan, problems)
    check_waterfall(results, plan, problems)
    check_plots(results, problems)
    for server in results["sockets"]["servers"]:
        wanted = server["sockets_wanted"]
        held = server["sockets_open"] == server["sockets_answering_after_hold"] == wanted
        if not held or server["errors"]:
            problems.append(f"sockets {server['design']}: {server}")
    for profile in results["profile"]:
        # A few replies in the smoke: some working samples, not necessarily in every process.
        if sum(group["samples"] for group in profile["groups"].values()) == 0:
            problems.append(f"profile of {profile['design']} ({profile['row']}): no samples")
    for section in ("overhead", "throughput", "inflight", "waterfall", "sockets"):
        for target in results[section]["targets"]:
            if target["met"] not in {True, False}:
                problems.append(f"target {target['target']!r} could not be evaluated")
    return problems


def check_deploy_cost() -> list[str]:
    """Row 4's harness on a real (tiny, local) playbook: converge changes, re-run does not."""
    problems: list[str] = []
    smoke = BENCH_DIR / "deploy-smoke"
    with tempfile.TemporaryDirectory(prefix="bench-deploy-") as scratch:
        out = Path(scratch) / "results"
        completed = subprocess.run(  # noqa: S603  (our own harness)
            [
                str(VENV_BIN / "python"),
                "-m",
                "parleybench.deploycost",
                str(smoke / "inventory.yml"),
                "--playbook",
                str(smoke / "playbook.yml"),
                "--out",
                str(out),
                "--",
                "-e",
                f"bench_smoke_dir={scratch}",
            ],
            cwd=BENCH_DIR,
            capture_output=True,
            text=True,
            timeout=300,
            check=False,
        )
        if completed.returncode != 0:
            return [f"deploy-cost failed: {completed.stdout[-2000:]}{completed.stderr[-2000:]}"]
        result = json.loads(next(out.glob("deploy-*Z.json")).read_text())  # not the floor playbook
    converge, rerun = result["runs"]
    if sum(host.get("changed", 0) for host in converge["hosts"].values()) < 1:
        problems.append(f"deploy-cost: the converge recap shows no change: {converge['hosts']}")
    if set(rerun["hosts"]) != {"localhost"} or result["rerun_changed"] != 0:
        problems.append(f"deploy-cost: the re-run recap is wrong: {rerun['hosts']}")
    if not rerun["slowest_tasks"]:
        problems.append("deploy-cost: no profile_tasks lines parsed")
    if result["floor"]["hosts"].get("localhost", {}).get("ok") != rerun["hosts"]["localhost"]["ok"]:
        problems.append(f"deploy-cost: the floor ran other tasks: {result['floor']['hosts']}")
    if not result["rerun_over_floor"]:
        problems.append("deploy-cost: no re-run ÷ floor ratio")
    return problems
