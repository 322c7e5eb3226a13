"""Turn the measurements into bench/results/<stamp>.json and the Markdown tables.

Pass or fail is decided by comparisons with a design measured side by side in the same run
(differences and ratios), never by an absolute time: the targets below are the issue's.
"""

from __future__ import annotations

import os
import platform
import subprocess
from importlib import metadata
from pathlib import Path
from typing import Any

from parleybench import stats
from parleybench.cells import Cell
from parleybench.config import Plan
from parleybench.matrix import group_cells, paired, pooled
from parleybench.timeline import STEPS

PACKAGES = [
    "django",
    "channels",
    "channels-redis",
    "celery",
    "gunicorn",
    "uvicorn",
    "uvicorn-worker",
    "daphne",
    "websockets",
    "openai",
    "redis",
    "psycopg",
]


def machine() -> dict[str, Any]:
    cpu = next(
        (
            line.split(":", 1)[1].strip()
            for line in Path("/proc/cpuinfo").read_text().splitlines()
            if line.startswith("model name")
        ),
        "?",
    )
    memory_kib = int(Path("/proc/meminfo").read_text().split()[1])
    nginx = subprocess.run(["nginx", "-v"], capture_output=True, text=True, check=False)  # noqa: S607
    return {
        "cpu": cpu,
        "cores": os.cpu_count(),
        "memory_gib": round(memory_kib / 1024 / 1024, 1),
        "kernel": platform.release(),
        "debian": Path("/etc/debian_version").read_text().strip(),
        "python": platform.python_version(),
        "nginx": nginx.stderr.strip().removeprefix("nginx version: "),
        "packages": {name: _version(name) for name in PACKAGES},
    }


def _version(name: str) -> str:
    try:
        return metadata.version(name)
    except metadata.PackageNotFoundError:
        return "-"


def overhead_section(cells: list[Cell], plan: Plan) -> dict[str, Any]:
    grouped = group_cells(cells)
    designs = {
        f"{design}@{chats}": pooled(group, plan.overhead_model)
        for (design, chats), group in sorted(grouped.items())
    }
    levels = [level.chats for level in plan.overhead_levels]
    comparisons: dict[str, Any] = {}
    for chats in levels:

        def figure(design: str, name: str, q: str, chats: int = chats) -> float | None:
            entry = designs.get(f"{design}@{chats}")
            return None if entry is None else entry[name][q]

        comparisons[str(chats)] = {
            "a_minus_c_overhead_p50_ms": stats.difference(
                figure("a", "overhead_ms", "p50"), figure("c", "overhead_ms", "p50")
            ),
            "a_minus_c_overhead_p99_ms": stats.difference(
                figure("a", "overhead_ms", "p99"), figure("c", "overhead_ms", "p99")
            ),
            "a_minus_d_overhead_p50_ms": stats.difference(
                figure("a", "overhead_ms", "p50"), figure("d", "overhead_ms", "p50")
            ),
            "a_minus_c_per_round_p50_ms": paired(cells, "a", "c", chats, "overhead_ms"),
            "a_minus_d_per_round_p50_ms": paired(cells, "a", "d", chats, "overhead_ms"),
            "ttft_p50_ratio_to_d": {
                design: stats.ratio(figure(design, "ttft_ms", "p50"), figure("d", "ttft_ms", "p50"))
                for design in ("a", "b", "c", "a1", "p")
                if f"{design}@{chats}" in designs
            },
            "overhead_p50_ratio_p_to_a": stats.ratio(
                figure("p", "overhead_ms", "p50"), figure("a", "overhead_ms", "p50")
            ),
            "overhead_p50_ratio_a_to_c": stats.ratio(
                figure("a", "overhead_ms", "p50"), figure("c", "overhead_ms", "p50")
            ),
            "overhead_p50_ratio_b_to_a": stats.ratio(
                figure("b", "overhead_ms", "p50"), figure("a", "overhead_ms", "p50")
            ),
        }
    middle = str(levels[1] if len(levels) > 1 else levels[0])
    first = str(levels[0])
    targets = [
        _target(
            f"(a) - (c) p50 overhead at {middle} chats ≤ 5 ms",
            comparisons[middle]["a_minus_c_overhead_p50_ms"],
            5.0,
        ),
        _target(
            f"(a) - (c) p99 overhead at {middle} chats ≤ 25 ms",
            comparisons[middle]["a_minus_c_overhead_p99_ms"],
            25.0,
        ),
        _target(
            f"(a) - (d) p50 overhead at {first} chat < 20 ms",
            comparisons[first]["a_minus_d_overhead_p50_ms"],
            20.0,
            strict=True,
        ),
    ]
    return {"designs": designs, "comparisons": comparisons, "targets": targets}


def throughput_section(cells: list[Cell], plan: Plan) -> dict[str, Any]:
    designs = {
        design: pooled(group, plan.throughput_model)
        for (design, _chats), group in sorted(group_cells(cells).items())
    }

    def value(design: str, name: str) -> float | None:
        return designs[design][name] if design in designs else None

    ratio_to_floor = stats.ratio(value("a", "tokens_per_second"), value("d", "tokens_per_second"))
    per_token_ratio = stats.ratio(value("a1", "tokens_per_second"), value("d", "tokens_per_second"))
    fewer_messages = stats.ratio(
        value("a1", "layer_messages_per_reply"), value("a", "layer_messages_per_reply")
    )
    targets = [
        _target("coalesced (a) tokens/s ≥ 0.9 x floor (d)", ratio_to_floor, 0.9, higher=True),
        _target(
            "per-token (a1) ÷ coalesced (a) channel-layer messages per reply ≥ 10",
            fewer_messages,
            10.0,
            higher=True,
        ),
    ]
    return {
        "designs": designs,
        "comparisons": {
            "a_tokens_per_second_ratio_to_d": ratio_to_floor,
            "a1_tokens_per_second_ratio_to_d": per_token_ratio,
            "a1_to_a_layer_messages_per_reply": fewer_messages,
        },
        "targets": targets,
    }


def inflight_section(cells: list[Cell], plan: Plan, slots: int) -> dict[str, Any]:
    """Row 5: per N, each design pooled over its rounds, and the issue's three targets for
    design a: the model sees all N at once up to the worker's replies in flight, the first
    token's p99 within 250 ms of the model's own at that N, and no reply lost at any N."""
    designs = {
        f"{design}@{chats}": pooled(group, plan.inflight_model)
        for (design, chats), group in sorted(group_cells(cells).items())
    }
    model_ttft = float(plan.inflight_model.ttft_ms)
    comparisons: dict[str, Any] = {}
    for chats in plan.inflight_levels:
        a, p = designs.get(f"a@{chats}"), designs.get(f"p@{chats}")
        comparisons[str(chats)] = {
            "most_open_streams": {
                key.split("@")[0]: entry["most_open_streams"]
                for key, entry in designs.items()
                if key.endswith(f"@{chats}")
            },
            "ttft_p50_ratio_p_to_a": stats.ratio(
                p["ttft_ms"]["p50"] if p else None, a["ttft_ms"]["p50"] if a else None
            ),
            "ttft_p99_ratio_p_to_a": stats.ratio(
                p["ttft_ms"]["p99"] if p else None, a["ttft_ms"]["p99"] if a else None
            ),
        }
    held = [chats for chats in plan.inflight_levels if chats <= slots]
    targets = []
    for chats in held:
        entry = designs.get(f"a@{chats}")
        seen = entry["most_open_streams"] if entry else None
        targets.append({
            "target": f"(a) the model sees all {chats} requests at once",
            "measured": seen,
            "limit": chats,
            "met": None if seen is None else seen >= chats,
        })  # fmt: skip
    if held:
        top = designs.get(f"a@{held[-1]}")
        p99 = top["ttft_ms"]["p99"] if top else None
        targets.append(
            _target(
                f"(a) first token p99 - the model's own ({model_ttft:.0f} ms) at {held[-1]} "
                "chats ≤ 250 ms",
                None if p99 is None else round(p99 - model_ttft, 2),
                250.0,
            )
        )
    lost = sum(
        entry["replies"] - entry["complete"]
        for key, entry in designs.items()
        if key.startswith("a@")
    )
    sent = sum(entry["replies"] for key, entry in designs.items() if key.startswith("a@"))
    targets.append({
        "target": "(a) replies lost at every N = 0",
        "measured": f"{lost} of {sent}",
        "limit": 0,
        "met": lost == 0 and sent > 0,
    })  # fmt: skip
    return {
        "designs": designs,
        "comparisons": comparisons,
        "targets": targets,
        "slots": slots,
        "reply_seconds": round(plan.inflight_model.own_seconds, 1),
    }


def waterfall_section(cells: list[Cell], plan: Plan) -> dict[str, Any]:
    """The waterfall's own measurement (each design warmed, then measured): its steps, and
    the new connections per reply of a warm stack, which should be none."""
    designs = {
        f"{cell.design}@{cell.chats}@{cell.row}": pooled([cell], plan.overhead_model)
        for cell in cells
    }
    targets = []
    warm = designs.get(f"a@{plan.waterfall_level.chats}@waterfall")
    if warm is not None:
        for name in ("postgres", "redis-broker", "redis-channels", "model"):
            value = warm["connections_per_reply"].get(name)
            targets.append({
                "target": f"(a) new connections per reply to {name} after warm-up = 0",
                "measured": value,
                "limit": 0,
                "met": None if value is None else value == 0,
            })  # fmt: skip
    return {"designs": designs, "targets": targets}


def sockets_section(rows: list[dict[str, Any]], plan: Plan) -> dict[str, Any]:
    by_design = {row["design"]: row for row in rows}
    parley, echo = by_design.get("a"), by_design.get("echo")
    ratio = None
    if parley and echo:
        ratio = stats.ratio(parley["kib_per_socket"]["web"], echo["kib_per_socket"]["web"])
    targets = []
    if parley:
        held_all = parley["sockets_answering_after_hold"] == plan.sockets and parley["errors"] == 0
        targets.append(
            {
                "target": f"{plan.sockets} sockets held through nginx with 0 errors",
                "measured": f"{parley['sockets_answering_after_hold']} answering, "
                f"{parley['errors']} errors",
                "met": held_all,
            }
        )
    targets.append(_target("web memory per socket ≤ 3 x the bare echo server's", ratio, 3.0))
    return {"servers": rows, "web_kib_per_socket_ratio_to_echo": ratio, "targets": targets}


def _target(
    name: str, measured: float | None, limit: float, *, higher: bool = False, strict: bool = False
) -> dict[str, Any]:
    if measured is None:
        met = None
    elif higher:
        met = measured >= limit
    else:
        met = measured < limit if strict else measured <= limit
    return {"target": name, "measured": measured, "limit": limit, "met": met}


# --- Markdown ------------------------------------------------------------------------------


def _fmt(value: object) -> str:
    if value is None:
        return "-"
    if isinstance(value, float):
        return f"{value:.1f}" if abs(value) >= 10 else f"{value:.2f}"
    return str(value)


def _triple(distribution: dict[str, Any]) -> str:
    return " / ".join(_fmt(distribution[q]) for q in ("p50", "p95", "p99"))


def _cpu(entry: dict[str, Any]) -> str:
    cpu = entry["cpu_ms_per_reply"]
    parts = [f"{group} {value:.0f}" for group, value in cpu.items() if value >= 1]
    return f"**{sum(cpu.values()):.0f}** ({', '.join(parts)})"


def _rss(entry: dict[str, Any]) -> str:
    rss = entry["peak_rss_mib"]
    keys = [key for key in rss if key.startswith(("web", "celery"))]
    return ", ".join(f"{key} {rss[key]:.0f}" for key in keys) or "-"


# Above this 1-minute load average (on this 2-core machine) a figure carries a "busy" mark.
BUSY_LOAD = 2.0


def _load(entry: dict[str, Any]) -> str:
    low, high = entry.get("load_average") or [None, None]
    if low is None:
        return "-"
    text = f"{low:.1f}" if low == high else f"{low:.1f}-{high:.1f}"
    return f"{text} busy" if high > BUSY_LOAD else text


def _picture(plots: dict[str, str], key: str, title: str, prefix: str) -> list[str]:
    return [f"![{title}]({prefix}{plots[key]})", ""] if key in plots else []


def markdown(results: dict[str, Any], image_prefix: str = "") -> str:
    meta = results["meta"]
    lines = [
        f"Run {meta['stamp']} ({meta['plan']} plan), `{meta['command']}`, "
        f"{meta['duration_seconds'] / 60:.1f} min. Machine: {meta['machine']['cores']} x "
        f"{meta['machine']['cpu']}, {meta['machine']['memory_gib']} GiB, Debian "
        f"{meta['machine']['debian']}, nginx {meta['machine']['nginx']}. Load average "
        f"(1 min) at start {meta['load_start'][0]:.2f}, at end {meta['load_end'][0]:.2f}, "
        f"over the measurements {meta['load_range'][0]:.2f}-{meta['load_range'][1]:.2f}.",
        "",
    ]
    busy = meta["load_range"][1] > BUSY_LOAD
    lines += [
        f"The fake model was reached over {meta.get('model_transport', 'http').upper()} by "
        "every design and the floor, in every row. "
        + (
            f"**The machine was busy: a load average above {BUSY_LOAD:g} (on "
            f"{meta['machine']['cores']} cores) during the measurements; each table's load "
            "column says which.**"
            if busy
            else ""
        ),
        "",
    ]
    plots = results.get("plots", {})
    if "overhead" in results:
        lines += _overhead_markdown(results["overhead"], meta)
        lines += _picture(plots, "row1", "Row 1: first token, each design", image_prefix)
    if "throughput" in results:
        lines += _throughput_markdown(results["throughput"], meta)
    if "inflight" in results:
        lines += _inflight_markdown(results["inflight"], meta)
        lines += _picture(plots, "row5", "Row 5: first token, each design and N", image_prefix)
        lines += _picture(plots, "row5-n", "Row 5: first token against N", image_prefix)
    if "waterfall" in results:
        lines += _waterfall_markdown(results)
    if "profile" in results:
        lines += _profile_markdown(results["profile"])
    if "sockets" in results:
        lines += _sockets_markdown(results["sockets"], meta)
    targets = [
        t
        for key in ("overhead", "throughput", "inflight", "waterfall", "sockets")
        if key in results
        for t in results[key]["targets"]
    ]
    lines += ["#### Targets", "", "| target | measured | met |", "|---|---|---|"]
    lines += [
        f"| {t['target']} | {_fmt(t['measured'])} | "
        f"{ {True: 'yes', False: '**no**', None: '-'}[t['met']] } |"
        for t in targets
    ]
    return "\n".join(lines) + "\n"


def _overhead_markdown(section: dict[str, Any], meta: dict[str, Any]) -> list[str]:
    lines = [
        "#### Row 1 — time to first token and what the stack adds",
        "",
        f"Fake model: {meta['overhead_model']}. Overhead = first token seen by the client - "
        "the model's own time to first token. Split: before the model was asked / the "
        "model's own / after its first token (p50, from the fake model's request log).",
        "",
        "| chats | design | ok/sent | first token p50/p95/p99 ms | overhead p50/p95/p99 ms "
        "| split p50 ms | ÷ (d) p50 | Celery queue mean/max | CPU ms per reply (by part) "
        "| layer msgs/reply | peak RSS MiB (sum of the group) | load (1 min) |",
        "|---|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for key, entry in section["designs"].items():
        design, chats = key.split("@")
        split = entry["split_p50_ms"]
        ratio = section["comparisons"][chats]["ttft_p50_ratio_to_d"].get(design)
        lines.append(
            f"| {chats} | {design} | {_ok(entry)} | "
            f"{_triple(entry['ttft_ms'])} | {_triple(entry['overhead_ms'])} | "
            f"{_fmt(split['before_model'])} / {_fmt(split['model'])} / "
            f"{_fmt(split['after_model'])} | {_fmt(ratio)} | {_queue(entry)} | {_cpu(entry)} | "
            f"{_fmt(entry['layer_messages_per_reply'])} | {_rss(entry)} | {_load(entry)} |"
        )
    lines += [
        "",
        "| chats | (a)-(c) p50 / p99 ms | (a)-(c) p50 per round | (a)-(d) p50 ms "
        "| (a)-(d) p50 per round | overhead (a)÷(c) | overhead (b)÷(a) | overhead (p)÷(a) |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for chats, c in section["comparisons"].items():
        lines.append(
            f"| {chats} | {_fmt(c['a_minus_c_overhead_p50_ms'])} / "
            f"{_fmt(c['a_minus_c_overhead_p99_ms'])} | {c['a_minus_c_per_round_p50_ms']} | "
            f"{_fmt(c['a_minus_d_overhead_p50_ms'])} | {c['a_minus_d_per_round_p50_ms']} | "
            f"{_fmt(c['overhead_p50_ratio_a_to_c'])} | {_fmt(c['overhead_p50_ratio_b_to_a'])} | "
            f"{_fmt(c.get('overhead_p50_ratio_p_to_a'))} |"
        )
    return [*lines, ""]


def _throughput_markdown(section: dict[str, Any], meta: dict[str, Any]) -> list[str]:
    lines = [
        "#### Row 2 — streaming throughput, coalesced versus one message per token",
        "",
        f"Fake model: {meta['throughput_model']}, chats asking back to back.",
        "",
        "| design | ok/sent | tokens/s (median of rounds) | per round | ÷ (d) | deltas/reply "
        "| layer msgs/reply | channel-layer Redis cmds/reply | Celery queue mean/max "
        "| CPU ms per reply (by part) | load (1 min) |",
        "|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    floor = section["designs"].get("d", {}).get("tokens_per_second")
    for design, entry in section["designs"].items():
        lines.append(
            f"| {design} | {_ok(entry)} | "
            f"{_fmt(entry['tokens_per_second'])} | {entry['per_round']['tokens_per_second']} | "
            f"{_fmt(stats.ratio(entry['tokens_per_second'], floor))} | "
            f"{_fmt(entry['deltas_per_reply'])} | {_fmt(entry['layer_messages_per_reply'])} | "
            f"{_fmt(entry['redis_commands_per_reply'].get('channels'))} | {_queue(entry)} | "
            f"{_cpu(entry)} | {_load(entry)} |"
        )
    return [*lines, ""]


def _profile_markdown(profiles: list[dict[str, Any]]) -> list[str]:
    lines = [
        "#### Where the CPU goes (py-spy, apart from the figures above)",
        "",
        "Share of each process group's working samples (250 Hz; a thread waiting on a socket, "
        "lock or timer is not working) whose stack holds the function (inclusive), and the "
        "functions most often at the top of a stack (own). In brackets: that share of the "
        "group's measured CPU per reply, in ms.",
        "",
    ]
    for profile in profiles:
        lines += [
            f"Design {profile['design']}, {profile['chats']} chat(s), {profile['model']}, "
            f"{profile['replies']} replies; CPU ms per reply: {_cpu(profile)}",
            "",
            "| process | samples | top functions, inclusive % | top functions, own % |",
            "|---|---|---|---|",
        ]
        for group, values in profile["groups"].items():
            cpu = profile["cpu_ms_per_reply"].get(group, 0.0)

            def listed(ranked: list[list[Any]], count: int, cpu: float = cpu) -> str:
                return "; ".join(
                    f"`{frame}` {share:g}% ({share * cpu / 100:.0f})"
                    for frame, share in ranked[:count]
                )

            lines.append(
                f"| {group} | {values['samples']} | {listed(values['inclusive_percent'], 12)} "
                f"| {listed(values['own_percent'], 8)} |"
            )
        lines.append("")
    return lines


def _ok(entry: dict[str, Any]) -> str:
    text = f"{entry['complete']}/{entry['replies']}"
    failed = entry.get("failures") or {}
    if failed:
        text += " (" + ", ".join(f"{count} {how}" for how, count in failed.items()) + ")"
    return text


def _queue(entry: dict[str, Any]) -> str:
    if entry.get("queue_depth_max") is None:
        return "-"
    return f"{_fmt(entry['queue_depth_mean'])} / {entry['queue_depth_max']}"


def _sockets_markdown(section: dict[str, Any], meta: dict[str, Any]) -> list[str]:
    nginx = meta.get("nginx_settings") or {}
    lines = [
        "#### Row 3 — idle WebSockets held through nginx",
        "",
        "nginx with the nginx role's defaults: "
        f"{nginx.get('worker_connections', '?')} connections per worker, "
        f"{'reuseport' if nginx.get('reuseport') else 'no reuseport'} on the TLS listener, "
        f"descriptors {nginx.get('worker_rlimit_nofile', '?')} (the role's "
        f"{nginx.get('role_worker_rlimit_nofile', '?')}, capped at this machine's hard limit); "
        f"{meta['plan_settings']['web_workers']} Gunicorn workers (the gunicorn role's default "
        "on 2 cores). Load average (1 min) at the start of each server's measurement: "
        + ", ".join(
            f"{row['design']} {row.get('load_average', 0.0):.1f}" for row in section["servers"]
        )
        + ".",
        "",
        "| server | wanted | open | answering after hold | errors | opened per s "
        "| web KiB/socket | nginx KiB/socket | channel-layer Redis KiB/socket |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for row in section["servers"]:
        per = row["kib_per_socket"]
        lines.append(
            f"| {row['design']} | {row['sockets_wanted']} | {row['sockets_open']} | "
            f"{row['sockets_answering_after_hold']} | {row['errors']} | "
            f"{_fmt(row['opens_per_second'])} | {_fmt(per['web'])} | {_fmt(per['nginx'])} | "
            f"{_fmt(per['redis'])} |"
        )
    lines += [
        "",
        f"Web memory per socket, Parley ÷ echo: "
        f"{_fmt(section['web_kib_per_socket_ratio_to_echo'])}.",
        "",
    ]
    return lines


def _inflight_markdown(section: dict[str, Any], meta: dict[str, Any]) -> list[str]:
    lines = [
        "#### Row 5 — replies in flight: N chats send at once",
        "",
        f"Fake model: {meta['inflight_model']} (a {section['reply_seconds']:g}-second reply). "
        "One worker host: design a "
        f"is Celery's threads pool with {section['slots']} replies in flight "
        f"({meta.get('replies_in_flight_source', '')}); p is the prefork pool of before, "
        f"{meta['plan_settings']['prefork_concurrency']} processes; d is the floor's client "
        "holding N streams to the model itself. Over the model's own = first token at the "
        "client - the model's configured first token; the model's own as it measured it is "
        "beside. Worker memory: resident memory of the worker's processes just before the "
        "chats send, and at the most replies in flight (the worker's "
        "`parley_replies_in_flight`); per reply = the difference ÷ those replies.",
        "",
        "| N | design | ok/sent | model saw at once | first token p50/p95/p99 ms "
        "| over the model's own p50/p99 ms | model's own p50/p99 ms | Celery queue mean/max "
        "| most in flight | worker RSS idle → at most in flight MiB | KiB per reply in flight "
        "| idle MiB per slot | CPU ms per reply (by part) | load (1 min) |",
        "|---|---|---|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for key, entry in sorted(
        section["designs"].items(), key=lambda item: (int(item[0].split("@")[1]), item[0])
    ):
        design, chats = key.split("@")
        flight = entry.get("in_flight") or {}
        overhead = entry["overhead_ms"]
        own = entry["model_ttft_ms"]
        lines.append(
            f"| {chats} | {design} | {_ok(entry)} | {entry['most_open_streams']} | "
            f"{_triple(entry['ttft_ms'])} | {_fmt(overhead['p50'])} / {_fmt(overhead['p99'])} | "
            f"{_fmt(own['p50'])} / {_fmt(own['p99'])} | {_queue(entry)} | "
            f"{_fmt(flight.get('most_in_flight'))} | "
            + (
                f"{_fmt(flight.get('idle_rss_mib'))} → "
                f"{_fmt(flight.get('rss_at_most_in_flight_mib'))}"
                if flight
                else "-"
            )
            + f" | {_fmt(flight.get('kib_per_reply_in_flight'))} | "
            f"{_fmt(flight.get('idle_mib_per_slot'))} | {_cpu(entry)} | {_load(entry)} |"
        )
    lines += [
        "",
        "| N | model saw at once (a / p / d) | first token p50 (p)÷(a) | first token p99 (p)÷(a) |",
        "|---|---|---|---|",
    ]
    for chats, c in section["comparisons"].items():
        seen = c["most_open_streams"]
        lines.append(
            f"| {chats} | {seen.get('a', '-')} / {seen.get('p', '-')} / {seen.get('d', '-')} | "
            f"{_fmt(c['ttft_p50_ratio_p_to_a'])} | {_fmt(c['ttft_p99_ratio_p_to_a'])} |"
        )
    return [*lines, ""]


WATERFALL_HEAD = [step for step, _who in STEPS]
CONNECTIONS = ("postgres", "redis-broker", "redis-channels", "model")


def _waterfall_rows(results: dict[str, Any]) -> list[tuple[str, dict[str, Any]]]:
    """The waterfall's own cells first, then designs a and p of rows 1 and 5."""
    rows = []
    for key, entry in results["waterfall"]["designs"].items():
        design, chats, row = key.split("@")
        label = "warm-up pass" if row == "waterfall-warm" else "after warm-up"
        rows.append((f"waterfall, {label}, {design}, {chats} chats", entry))
    for section, name in (("overhead", "row 1"), ("inflight", "row 5")):
        for key, entry in results.get(section, {}).get("designs", {}).items():
            design, chats = key.split("@")
            if design in {"a", "p"}:
                rows.append((f"{name}, {design}, {chats} chats", entry))
    return rows


def _waterfall_markdown(results: dict[str, Any]) -> list[str]:
    meta = results["meta"]
    level = meta["plan_settings"]["waterfall_level"]
    lines = [
        "#### The waterfall — each step to the first token, and new connections per reply",
        "",
        "Milliseconds after the client sent its `send` frame, p50 / p99 over the replies, "
        "from the app's timeline (`PARLEY_REPLY_TIMELINE=1`) and the fake model's request "
        "log: "
        + "; ".join(f"*{step}* {who}" for step, who in STEPS)
        + f". The waterfall's own measurement: each design at {level['chats']} chats "
        f"sending {level['replies']} messages each ({meta['overhead_model']}), twice in a "
        "row; the first pass fills whatever its pools lack.",
        "",
        "| measurement | " + " | ".join(WATERFALL_HEAD) + " |",
        "|---|" + "---|" * len(WATERFALL_HEAD),
    ]
    rows = _waterfall_rows(results)
    for label, entry in rows:
        steps = entry["waterfall_ms"]
        cells = [
            f"{_fmt(steps[step]['p50'])} / {_fmt(steps[step]['p99'])}" if step in steps else "-"
            for step in WATERFALL_HEAD
        ]
        lines.append(f"| {label} | " + " | ".join(cells) + " |")
    lines += [
        "",
        "New connections per reply sent (PostgreSQL `pg_stat_database.sessions`, each Redis "
        "instance's `total_connections_received`, the fake model's connections that had not "
        "carried a request before), and in all:",
        "",
        "| measurement | replies | " + " | ".join(CONNECTIONS) + " | load (1 min) |",
        "|---|---|" + "---|" * (len(CONNECTIONS) + 1),
    ]
    for label, entry in rows:
        per, total = entry["connections_per_reply"], entry["connections"]
        cells = [f"{_fmt(per.get(name))} ({total.get(name, '-')})" for name in CONNECTIONS]
        lines.append(
            f"| {label} | {entry['replies']} | " + " | ".join(cells) + f" | {_load(entry)} |"
        )
    return [*lines, ""]
