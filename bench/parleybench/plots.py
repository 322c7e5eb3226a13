"""The pictures kept beside each run's results: how the first token is spread, per design.

People read a curve faster than a table: each plot is the cumulative share of replies whose
first token came within a time (log scale, so 50 ms and 50 s both show), one line per
design, and row 5's p50 and p99 against N.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import matplotlib as mpl

mpl.use("Agg")  # files only, no display

import matplotlib.pyplot as plt
from matplotlib.axes import Axes
from matplotlib.ticker import FuncFormatter, NullFormatter

from parleybench import stats
from parleybench.cells import Cell
from parleybench.config import Plan

COLOURS = {"a": "tab:blue", "b": "tab:orange", "c": "tab:green", "d": "tab:gray",
           "p": "tab:red", "a1": "tab:purple"}  # fmt: skip


def _first_tokens_ms(cells: list[Cell]) -> dict[tuple[int, str], list[float]]:
    found: dict[tuple[int, str], list[float]] = {}
    for cell in cells:
        values = found.setdefault((cell.chats, cell.design), [])
        values += [reply.ttft * 1000 for reply in cell.complete() if reply.ttft is not None]
    return found


def _cdf(axes: Axes, values: Sequence[float], design: str) -> None:
    ordered = sorted(values)
    shares = [(index + 1) / len(ordered) for index in range(len(ordered))]
    axes.step(ordered, shares, where="post", label=f"{design} ({len(ordered)})",
              color=COLOURS.get(design))  # fmt: skip


def _plain_log_axis(axis: object) -> None:
    """Log scale labelled 50, 100, 1000 rather than 5x10^1, and no labels between."""
    axis.set_major_formatter(FuncFormatter(lambda value, _: f"{value:,.0f}"))  # type: ignore[attr-defined]
    axis.set_minor_formatter(NullFormatter())  # type: ignore[attr-defined]


def _distributions(cells: list[Cell], path: Path, title: str, model_ttft_ms: float) -> None:
    found = _first_tokens_ms(cells)
    levels = sorted({chats for chats, _design in found})
    figure, axes_list = plt.subplots(
        1, len(levels), figsize=(max(7, 5 * len(levels)), 4.2), squeeze=False, sharey=True
    )
    for axes, chats in zip(axes_list[0], levels, strict=True):
        for (level, design), values in sorted(found.items()):
            if level == chats and values:
                _cdf(axes, values, design)
        axes.axvline(model_ttft_ms, color="black", linestyle=":", linewidth=1)
        axes.set_xscale("log")
        _plain_log_axis(axes.xaxis)
        axes.set_title(f"{chats} chat{'s' if chats > 1 else ''}")
        axes.set_xlabel("first token at the client, ms (log); dotted: the model's own")
        axes.grid(visible=True, which="both", alpha=0.3)
        axes.legend(title="design (replies)", fontsize="small")
    axes_list[0][0].set_ylabel("share of replies")
    figure.suptitle(title, fontsize="medium")
    figure.tight_layout()
    figure.savefig(path, dpi=110)
    plt.close(figure)


def _against_n(cells: list[Cell], path: Path, plan: Plan) -> None:
    found = _first_tokens_ms(cells)
    figure, axes = plt.subplots(figsize=(7, 4.5))
    for design in sorted({design for _chats, design in found}):
        levels = sorted(chats for chats, name in found if name == design and found[chats, name])
        for q, style in ((50, "-"), (99, "--")):
            points = [stats.percentile(found[chats, design], q) for chats in levels]
            axes.plot(levels, points, style, marker="o", color=COLOURS.get(design),
                      label=f"{design} p{q}")  # fmt: skip
    own = plan.inflight_model.ttft_ms
    axes.axhline(own + 250, color="black", linestyle=":", linewidth=1,
                 label="target: the model's own + 250 ms")  # fmt: skip
    axes.set_xscale("log")
    axes.set_yscale("log")
    _plain_log_axis(axes.yaxis)
    axes.xaxis.set_minor_formatter(NullFormatter())
    axes.set_xticks(list(plan.inflight_levels), [str(n) for n in plan.inflight_levels])
    axes.set_xlabel("N chats sending at once")
    axes.set_ylabel("first token at the client, ms (log)")
    axes.set_title(f"Row 5: first token against N ({plan.inflight_model.name})", fontsize="small")
    axes.grid(visible=True, which="both", alpha=0.3)
    axes.legend(fontsize="small")
    figure.tight_layout()
    figure.savefig(path, dpi=110)
    plt.close(figure)


def draw(cells: list[Cell], out_dir: Path, stamp: str, plan: Plan) -> dict[str, str]:
    """Draw what the run measured; returns each picture's file name (in out_dir) by key."""
    out_dir.mkdir(parents=True, exist_ok=True)
    drawn: dict[str, str] = {}
    overhead = [cell for cell in cells if cell.row == "overhead"]
    if overhead:
        name = f"{stamp}-row1-first-token.png"
        title = f"Row 1: first token at the client, {plan.overhead_model.name}"
        _distributions(overhead, out_dir / name, title, plan.overhead_model.ttft_ms)
        drawn["row1"] = name
    inflight = [cell for cell in cells if cell.row == "inflight"]
    if inflight:
        name = f"{stamp}-row5-first-token.png"
        title = f"Row 5: first token at the client, N chats at once, {plan.inflight_model.name}"
        _distributions(inflight, out_dir / name, title, plan.inflight_model.ttft_ms)
        drawn["row5"] = name
        name = f"{stamp}-row5-first-token-against-n.png"
        _against_n(inflight, out_dir / name, plan)
        drawn["row5-n"] = name
    return drawn
