"""What each check found, and RELIABILITY.md written from it."""

from __future__ import annotations

import datetime as dt
import subprocess
from dataclasses import dataclass, field
from pathlib import Path

SECTIONS = {
    "security": "Security",
    "faults": "Faults under load",
}


@dataclass
class Check:
    """One line of the report: what was tried, how often, the figure, and the verdict."""

    section: str
    key: str
    tried: str
    tries: int
    figure: str
    passed: bool
    reproduce: str
    details: list[str] = field(default_factory=list)

    @property
    def verdict(self) -> str:
        return "pass" if self.passed else "**FAIL**"


def _cell(text: str) -> str:
    return text.replace("|", "\\|").replace("\n", " ")


def render(checks: list[Check], *, wall_seconds: float, command: str, notes: str) -> str:
    commit = subprocess.run(
        ["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True, check=False
    ).stdout.strip()
    failed = [c for c in checks if not c.passed]
    lines = [
        "# Reliability report",
        "",
        "The local fleet (Molecule scenario `fleet`: lb1, web1, web2, worker1, beat1, data1, with",
        "Pebble and a probe outside the site) attacked and broken on purpose, and what held.",
        f"Written by `{command}` on {dt.datetime.now(dt.UTC):%Y-%m-%d %H:%M} UTC at commit "
        f"`{commit or 'unknown'}`; the whole run took {wall_seconds / 60:.1f} minutes.",
        "",
        f"**{len(checks) - len(failed)} of {len(checks)} checks passed.**",
        "",
    ]
    for section, title in SECTIONS.items():
        rows = [c for c in checks if c.section == section]
        if not rows:
            continue
        lines += [
            f"## {title}",
            "",
            "| What was tried | Times | Figure | Result | Reproduce |",
            "| --- | --- | --- | --- | --- |",
        ]
        lines += [
            f"| {_cell(c.tried)} | {c.tries} | {_cell(c.figure)} | {c.verdict} | "
            f"`{_cell(c.reproduce)}` |"
            for c in rows
        ]
        lines.append("")
    detailed = [c for c in checks if c.details]
    if detailed:
        lines += ["## Details", ""]
        for check in detailed:
            lines.append(f"**{check.key}** ({check.verdict}):")
            lines.append("")
            lines += [f"- {_cell(d)}" for d in check.details]
            lines.append("")
    lines += [notes.strip(), ""]
    return "\n".join(lines)


def write(path: Path, checks: list[Check], **kwargs: object) -> None:
    path.write_text(render(checks, **kwargs))  # type: ignore[arg-type]
