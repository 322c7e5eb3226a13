"""`bench/run [--smoke] [--rows ...]`: the whole matrix (rows 1, 2, 3, 5, the waterfall and
the profiles) in one run, or the smoke.

The full run writes bench/results/<stamp>.json, .md and the pictures (<stamp>-*.png) and
puts the tables into BENCHMARKS.md; the smoke writes under bench/.state/ and exits non-zero
if the harness is broken.
"""

from __future__ import annotations

import argparse
import fcntl
import json
import os
import shlex
import sys
import time
from datetime import UTC, datetime
from typing import Any

from parleybench import matrix, plots, report, socketrow, validate
from parleybench.cells import Cell, ConversationPool
from parleybench.config import FULL, SMOKE, Plan
from parleybench.paths import BENCH_DIR, REPO_DIR, RESULTS_DIR, STATE_DIR
from parleybench.processes import Supervisor
from parleybench.stack import bring_up

ROWS = ("overhead", "throughput", "inflight", "waterfall", "profile", "sockets")
DOC = REPO_DIR / "BENCHMARKS.md"
TABLE_START = "<!-- bench/run writes the latest results below; edit around them -->"
TABLE_END = "<!-- end of bench/run results -->"


def progress(message: str) -> None:
    print(
        f"[{time.strftime('%H:%M:%S')} load {os.getloadavg()[0]:.2f}] {message}",
        file=sys.stderr,
        flush=True,
    )


def measure(plan: Plan, rows: list[str]) -> tuple[dict[str, Any], list[Cell], dict[str, Any]]:
    sections: dict[str, Any] = {}
    cells: list[Cell] = []
    setup: dict[str, Any] = {}
    with Supervisor() as supervisor:
        progress(f"starting the servers ({plan.name} plan)")
        stack = bring_up(supervisor, plan, progress)
        pool = ConversationPool(stack)
        progress(
            f"servers up; signed in {len(stack.cookies)} users; design a's worker writes "
            f"{stack.replies_in_flight} replies at once ({stack.replies_in_flight_source})"
        )
        setup = {
            "replies_in_flight": stack.replies_in_flight,
            "replies_in_flight_source": stack.replies_in_flight_source,
            "nginx_settings": stack.nginx_settings,
        }
        matrix.warm_up(stack, pool, plan.overhead_model, progress)
        if "overhead" in rows:
            overhead = matrix.run_overhead_row(stack, pool, progress)
            sections["overhead"] = report.overhead_section(overhead, plan)
            cells += overhead
        if "throughput" in rows:
            throughput = matrix.run_throughput_row(stack, pool, progress)
            sections["throughput"] = report.throughput_section(throughput, plan)
            cells += throughput
        if "inflight" in rows:
            inflight = matrix.run_inflight_row(stack, pool, progress)
            sections["inflight"] = report.inflight_section(inflight, plan, stack.replies_in_flight)
            cells += inflight
        if "waterfall" in rows:
            falls = matrix.run_waterfall_row(stack, pool, progress)
            sections["waterfall"] = report.waterfall_section(falls, plan)
            cells += falls
        if "profile" in rows:
            sections["profile"] = matrix.run_profiles(stack, pool, progress)
        if "sockets" in rows:
            progress(f"holding {plan.sockets} sockets on the echo server, then on Parley")
            servers = socketrow.run_row(stack)
            for server in servers:
                progress(
                    f"sockets {server['design']}: {server['sockets_answering_after_hold']}"
                    f"/{server['sockets_wanted']} answering, {server['errors']} errors"
                )
            sections["sockets"] = report.sockets_section(servers, plan)
        progress("stopping the servers")
        if stack.counters is not None:
            stack.counters.close()
    return sections, cells, setup


def update_doc(table: str) -> None:
    text = DOC.read_text()
    start, end = text.index(TABLE_START) + len(TABLE_START), text.index(TABLE_END)
    DOC.write_text(text[:start] + "\n\n" + table + "\n" + text[end:])


def main() -> int:
    parser = argparse.ArgumentParser(prog="bench/run", description=__doc__)
    parser.add_argument("--smoke", action="store_true", help="seconds-long harness check")
    parser.add_argument("--rows", default=",".join(ROWS), help="comma-separated subset of rows")
    args = parser.parse_args()
    rows = list(ROWS) if args.smoke else [row for row in args.rows.split(",") if row]
    if unknown := set(rows) - set(ROWS):
        parser.error(f"unknown rows {sorted(unknown)}; choose from {ROWS}")
    plan = SMOKE if args.smoke else FULL
    # One run at a time: two would fight over ports and over the machine.
    lock = os.open(BENCH_DIR, os.O_RDONLY)
    try:
        fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        print("another bench/run is running", file=sys.stderr)
        return 2
    started, stamp = time.time(), datetime.now(UTC).strftime("%Y-%m-%dT%H%MZ")
    load_start = os.getloadavg()
    sections, cells, setup = measure(plan, rows)
    loads = [cell.load_average[0] for cell in cells] or [load_start[0]]
    results: dict[str, Any] = {
        "meta": {
            "stamp": stamp,
            "plan": plan.name,
            "command": "bench/run" + ("" if not sys.argv[1:] else " " + shlex.join(sys.argv[1:])),
            "duration_seconds": round(time.time() - started, 1),
            "machine": report.machine(),
            "load_start": load_start,
            "load_end": os.getloadavg(),
            "load_range": [min(loads), max(loads)],
            "overhead_model": plan.overhead_model.name,
            "throughput_model": plan.throughput_model.name,
            "inflight_model": plan.inflight_model.name,
            "model_transport": "https",
            **setup,
            "plan_settings": {
                "rounds": plan.rounds,
                "levels": [level.__dict__ for level in plan.overhead_levels],
                "throughput_level": plan.throughput_level.__dict__,
                "inflight_levels": list(plan.inflight_levels),
                "inflight_rounds": plan.inflight_rounds,
                "waterfall_level": plan.waterfall_level.__dict__,
                "sockets": plan.sockets,
                "web_workers": plan.web_workers,
                "replies_in_flight": setup.get("replies_in_flight"),
                "prefork_concurrency": plan.prefork_concurrency,
            },
        },
        **sections,
        "cells": [cell.to_json() for cell in cells],
    }
    # bench/results keeps full runs only; a smoke or a subset of rows stays in bench/.state.
    full = not args.smoke and set(rows) == set(ROWS)
    out_dir = RESULTS_DIR if full else STATE_DIR / "results"
    results["plots"] = plots.draw(cells, out_dir, stamp, plan)
    table = report.markdown(results)
    out_dir.mkdir(parents=True, exist_ok=True)
    (out_dir / f"{stamp}.json").write_text(json.dumps(results, separators=(",", ":")))
    (out_dir / f"{stamp}.md").write_text(table)
    print(table)
    progress(f"results: {out_dir / stamp}.json and .md")
    if args.smoke:
        problems = validate.check_results(results, plan) + validate.check_deploy_cost()
        for problem in problems:
            print(f"SMOKE FAILED: {problem}", file=sys.stderr)
        if problems:
            return 1
        progress(f"smoke passed in {time.time() - started:.0f} s")
    elif full:
        update_doc(report.markdown(results, image_prefix="bench/results/"))
        progress(f"{DOC.relative_to(REPO_DIR)} updated")
    return 0


if __name__ == "__main__":
    sys.exit(main())
