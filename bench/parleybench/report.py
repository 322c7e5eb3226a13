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
                for design in ("a", "b", "c", "a1")
                if f"{design}@{chats}" in designs
            },
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


def markdown(results: dict[str, Any]) -> str:
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
    if "overhead" in results:
        lines += _overhead_markdown(results["overhead"], meta)
    if "throughput" in results:
        lines += _throughput_markdown(results["throughput"], meta)
    if "profile" in results:
        lines += _profile_markdown(results["profile"])
    if "sockets" in results:
        lines += _sockets_markdown(results["sockets"])
    targets = [
        t
        for key in ("overhead", "throughput", "sockets")
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
        "| layer msgs/reply | peak RSS MiB (sum of the group) |",
        "|---|---|---|---|---|---|---|---|---|---|---|",
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
            f"{_fmt(entry['layer_messages_per_reply'])} | {_rss(entry)} |"
        )
    lines += [
        "",
        "| chats | (a)-(c) p50 / p99 ms | (a)-(c) p50 per round | (a)-(d) p50 ms "
        "| (a)-(d) p50 per round | overhead (a)÷(c) | overhead (b)÷(a) |",
        "|---|---|---|---|---|---|---|",
    ]
    for chats, c in section["comparisons"].items():
        lines.append(
            f"| {chats} | {_fmt(c['a_minus_c_overhead_p50_ms'])} / "
            f"{_fmt(c['a_minus_c_overhead_p99_ms'])} | {c['a_minus_c_per_round_p50_ms']} | "
            f"{_fmt(c['a_minus_d_overhead_p50_ms'])} | {c['a_minus_d_per_round_p50_ms']} | "
            f"{_fmt(c['overhead_p50_ratio_a_to_c'])} | {_fmt(c['overhead_p50_ratio_b_to_a'])} |"
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
        "| CPU ms per reply (by part) |",
        "|---|---|---|---|---|---|---|---|---|---|",
    ]
    floor = section["designs"].get("d", {}).get("tokens_per_second")
    for design, entry in section["designs"].items():
        lines.append(
            f"| {design} | {_ok(entry)} | "
            f"{_fmt(entry['tokens_per_second'])} | {entry['per_round']['tokens_per_second']} | "
            f"{_fmt(stats.ratio(entry['tokens_per_second'], floor))} | "
            f"{_fmt(entry['deltas_per_reply'])} | {_fmt(entry['layer_messages_per_reply'])} | "
            f"{_fmt(entry['redis_commands_per_reply'].get('channels'))} | {_queue(entry)} | "
            f"{_cpu(entry)} |"
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


def _sockets_markdown(section: dict[str, Any]) -> list[str]:
    lines = [
        "#### Row 3 — idle WebSockets held through nginx",
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
