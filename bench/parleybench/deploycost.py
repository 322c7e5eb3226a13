"""Row 4: what a deploy costs. `site.yml` against an inventory, twice: the converge (from bare
hosts, if the inventory's hosts are bare) and a re-run that must change nothing.

    bench/deploy-cost INVENTORY [--playbook site.yml] [--out DIR] [-- ANSIBLE-PLAYBOOK ARGS]

Both runs use the repository's ansible.cfg and pinned Ansible (.venv), with the profile_tasks
callback; this parses each run's PLAY RECAP (changes per host) and profile (slowest tasks),
then runs the floor beside them: one `ping` per task each host ran in the re-run, same
inventory and connection, so the re-run is reported as a ratio to what merely reaching the
hosts that often costs on this machine. Writes deploy-<date>.json and .md. Exit status:
non-zero when a run fails or the re-run changes anything, since then the figure is not a
no-op re-run.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import subprocess
import sys
import time
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from pathlib import Path

from parleybench.paths import REPO_DIR, RESULTS_DIR

RECAP_LINE = re.compile(r"^(?P<host>\S+)\s+:\s+(?P<counts>(?:\w+=\d+\s*)+)$")
PROFILE_LINE = re.compile(r"^(?P<task>.+?)\s+-{3,}\s+(?P<seconds>\d+(?:\.\d+)?)s$")
PROFILE_LIMIT = 25


@dataclass
class PlaybookRun:
    label: str
    command: list[str]
    returncode: int
    wall_seconds: float
    hosts: dict[str, dict[str, int]] = field(default_factory=dict)
    slowest_tasks: list[tuple[str, float]] = field(default_factory=list)
    log: str = ""

    @property
    def changed(self) -> int:
        return sum(counts.get("changed", 0) for counts in self.hosts.values())

    @property
    def failed(self) -> int:
        return sum(
            counts.get("failed", 0) + counts.get("unreachable", 0) for counts in self.hosts.values()
        )


def parse_recap(output: str) -> dict[str, dict[str, int]]:
    """Per host the counts of the last PLAY RECAP in `output`."""
    hosts: dict[str, dict[str, int]] = {}
    lines = output.splitlines()
    starts = [index for index, line in enumerate(lines) if line.startswith("PLAY RECAP")]
    if not starts:
        return hosts
    for line in lines[starts[-1] + 1 :]:
        match = RECAP_LINE.match(line.strip())
        if match is None:
            if hosts:
                break
            continue
        counts = dict(pair.split("=") for pair in match.group("counts").split())
        hosts[match.group("host")] = {name: int(value) for name, value in counts.items()}
    return hosts


def parse_profile(output: str) -> list[tuple[str, float]]:
    """profile_tasks' closing list: (task, seconds), slowest first."""
    lines = output.splitlines()
    marks = [index for index, line in enumerate(lines) if re.fullmatch(r"=+", line.strip())]
    if not marks:
        return []
    tasks = []
    for line in lines[marks[-1] + 1 :]:
        match = PROFILE_LINE.match(line.strip())
        if match is not None:
            tasks.append((match.group("task").strip(), float(match.group("seconds"))))
    return sorted(tasks, key=lambda item: -item[1])


def run_playbook(label: str, command: list[str], log_path: Path) -> PlaybookRun:
    env = {
        **os.environ,
        "ANSIBLE_CALLBACKS_ENABLED": "ansible.posix.profile_tasks",
        "PROFILE_TASKS_TASK_OUTPUT_LIMIT": str(PROFILE_LIMIT),
        "ANSIBLE_NOCOLOR": "1",
        "ANSIBLE_FORCE_COLOR": "0",
        "PATH": f"{REPO_DIR / '.venv' / 'bin'}:{os.environ.get('PATH', '/usr/bin:/bin')}",
    }
    started = time.perf_counter()
    completed = subprocess.run(  # noqa: S603  (the operator's own playbook command)
        command, cwd=REPO_DIR, env=env, capture_output=True, text=True, check=False
    )
    wall = time.perf_counter() - started
    output = completed.stdout + completed.stderr
    log_path.write_text(output)
    return PlaybookRun(
        label=label,
        command=command,
        returncode=completed.returncode,
        wall_seconds=round(wall, 2),
        hosts=parse_recap(output),
        slowest_tasks=parse_profile(output),
        log=str(log_path),
    )


def floor_playbook(rerun: PlaybookRun) -> str:
    """The baseline run beside the re-run: every host of its recap runs as many `ping` tasks
    as it had tasks run (`ok`), over the same inventory and connection: what the re-run would
    cost if each task did nothing but reach its host and come back."""
    counts = {host: counts.get("ok", 0) for host, counts in rerun.hosts.items()}
    tasks = [
        {
            "name": f"Reach the host ({number})",
            "ansible.builtin.ping": None,
            "when": f"{number} < deploy_floor_counts[inventory_hostname]",
        }
        for number in range(max(counts.values(), default=0))
    ]
    play = {
        "name": "The floor: one ping per task the re-run ran",
        "hosts": ":".join(counts) or "all",
        "gather_facts": False,
        "vars": {"deploy_floor_counts": counts},
        "tasks": tasks,
    }
    return json.dumps([play], indent=1)


def markdown(
    converge: PlaybookRun, rerun: PlaybookRun, inventory: str, floor: PlaybookRun | None = None
) -> str:
    hosts = len(rerun.hosts)
    rows = [
        f"| {run.label} | {run.wall_seconds:.1f} | {run.changed} | {run.failed} | {hosts} |"
        for run in (converge, rerun, floor)
        if run is not None
    ]
    slowest = "\n".join(f"| {task} | {seconds:.2f} |" for task, seconds in rerun.slowest_tasks[:10])
    share = sum(seconds for _task, seconds in rerun.slowest_tasks[:10])
    return (
        f"Inventory `{inventory}`, {hosts} hosts.\n\n"
        "| run | wall s | changed | failed/unreachable | hosts |\n|---|---|---|---|---|\n"
        + "\n".join(rows)
        + "\n\nSlowest tasks of the no-op re-run (profile_tasks):\n\n| task | s |\n|---|---|\n"
        + slowest
        + f"\n\nThose ten tasks: {share:.1f} s of the re-run's {rerun.wall_seconds:.1f} s.\n"
        + (
            f"\nRe-run ÷ floor (one `ping` per task each host ran, same run): "
            f"**{rerun.wall_seconds / floor.wall_seconds:.2f}**.\n"
            if floor is not None and floor.wall_seconds > 0
            else ""
        )
    )


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="bench/deploy-cost",
        usage="bench/deploy-cost INVENTORY [--playbook P] [--out DIR] [-- ANSIBLE-PLAYBOOK ARGS]",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("inventory")
    parser.add_argument("--playbook", default="site.yml")
    parser.add_argument("--out", type=Path, default=RESULTS_DIR)
    argv = sys.argv[1:] if argv is None else argv
    # Everything after `--` goes to ansible-playbook as it is.
    split = argv.index("--") if "--" in argv else len(argv)
    args = parser.parse_args(argv[:split])
    extra = argv[split + 1 :]
    playbook_bin = REPO_DIR / ".venv" / "bin" / "ansible-playbook"
    if not playbook_bin.exists():
        print(
            "No .venv/bin/ansible-playbook: run `make venv` at the repository root first.",
            file=sys.stderr,
        )
        return 2
    # Ansible runs from the repository root (its ansible.cfg, roles_path); names given
    # relative to the caller's directory are made absolute first.
    inventory = (
        str(Path(args.inventory).resolve()) if Path(args.inventory).exists() else args.inventory
    )
    playbook = Path(args.playbook)
    playbook = playbook.resolve() if playbook.exists() else REPO_DIR / playbook
    command = [str(playbook_bin), "-i", inventory, str(playbook), *extra]
    stamp = datetime.now(UTC).strftime("%Y-%m-%dT%H%M%SZ")
    args.out.mkdir(parents=True, exist_ok=True)
    converge = run_playbook("converge", command, args.out / f"deploy-{stamp}-converge.log")
    rerun = run_playbook("no-op re-run", command, args.out / f"deploy-{stamp}-rerun.log")
    # JSON (a playbook Ansible reads as YAML): the linters of the repository leave it alone.
    floor_path = args.out / f"deploy-{stamp}-floor.json"
    floor_path.write_text(floor_playbook(rerun))
    floor = run_playbook(
        "floor (ping)",
        [str(playbook_bin), "-i", inventory, str(floor_path), *extra],
        args.out / f"deploy-{stamp}-floor.log",
    )
    result = {
        "date": stamp,
        "inventory": args.inventory,
        "playbook": args.playbook,
        "load_average": os.getloadavg(),
        "runs": [asdict(converge), asdict(rerun)],
        "floor": asdict(floor),
        "rerun_changed": rerun.changed,
        "rerun_wall_seconds": rerun.wall_seconds,
        "rerun_over_floor": round(rerun.wall_seconds / floor.wall_seconds, 2)
        if floor.wall_seconds
        else None,
    }
    (args.out / f"deploy-{stamp}.json").write_text(json.dumps(result, indent=1))
    (args.out / f"deploy-{stamp}.md").write_text(markdown(converge, rerun, args.inventory, floor))
    print(markdown(converge, rerun, args.inventory, floor))
    problems = []
    for run in (converge, rerun, floor):
        if run.returncode != 0 or run.failed:
            problems.append(f"{run.label} failed (exit {run.returncode}); see {run.log}")
        if not run.hosts:
            problems.append(f"{run.label}: no PLAY RECAP found; see {run.log}")
    if rerun.changed:
        problems.append(f"the re-run changed {rerun.changed} things: not idempotent")
    for problem in problems:
        print(problem, file=sys.stderr)
    return 1 if problems else 0


if __name__ == "__main__":
    sys.exit(main())
