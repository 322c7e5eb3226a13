"""Helpers every scenario's verify tests share.

Scenario hosts are docker containers; tests reach them with testinfra's docker backend and,
for what must be proven from the outside, through a probe container on the same network.
A test that needs one run per target host takes the `target` argument: it is parametrized
with every host of the scenario's `targets` group.

xdist runs each test module on one worker, its tests in file order (`--dist loadfile`, in
.config/molecule/config.yml): tests that must not overlap share a module; tests that disturb
every host (a deploy, a rollback) have a module of their own, run in a later verify step.
"""

from __future__ import annotations

import fcntl
import json
import os
import shlex
import shutil
import subprocess
import tempfile
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

import pytest
import testinfra
import yaml
from testinfra.host import Host

BOOT_TIMEOUT = 120
T = TypeVar("T")

# PARLEY_TEST_SLOW=1 (a slow or loaded machine) lets the tests wait three times as long for a
# condition to come true: a host to boot, a scan to finish. It never widens a bound an
# assertion checks; those follow from the settings and the time each test measured.
SLOW_FACTOR = 3 if os.environ.get("PARLEY_TEST_SLOW") == "1" else 1


def patience(seconds: float) -> float:
    """How long to wait for something that takes well under `seconds` on an idle machine."""
    return seconds * SLOW_FACTOR


def timing(measured: str, bound: str, source: str) -> str:
    """The message of an assertion whose bound depends on time: what the test measured, the
    bound, and the setting the bound follows from. scripts/run-scenarios lists these lines
    ("timing bound: ...") under a failed scenario, so its log tells a slow machine from a
    broken service."""
    return f"timing bound: measured {measured}, bound {bound} (from {source})"


def wait_until(
    what: str, check: Callable[[], T], seconds: float, source: str, *, checked: bool = False
) -> T:
    """Poll `check` once a second until it returns something true, and return that; fail
    when `patience(seconds)` have passed. `source` says where the deadline comes from. A
    deadline that is itself what the test checks (a schedule keeping its interval) is
    `checked=True`: it follows from the setting alone and never grows."""
    limit = seconds if checked else patience(seconds)
    started = time.monotonic()
    while True:
        result = check()
        if result:
            return result
        waited = time.monotonic() - started
        if waited > limit:
            pytest.fail(
                f"{what} did not happen: " + timing(f"{waited:.1f} s", f"{limit:.0f} s", source),
                pytrace=False,
            )
        time.sleep(1)


def _inventory() -> dict[str, Any]:
    path = os.environ.get("MOLECULE_INVENTORY_FILE")
    if not path:
        pytest.exit("MOLECULE_INVENTORY_FILE is not set: run these tests through molecule verify")
    return yaml.safe_load(Path(path).read_text())


def hosts_in(group: str) -> list[str]:
    """Names of the scenario hosts in an inventory group, in inventory order.

    Molecule writes each group as a top-level key of its inventory file.
    """
    names = list((_inventory().get(group) or {}).get("hosts") or {})
    if not names:
        pytest.fail(f"the scenario has no host in group {group!r}", pytrace=False)
    return names


def host(name: str) -> Host:
    return testinfra.get_host(f"docker://{name}")


def pytest_generate_tests(metafunc: pytest.Metafunc) -> None:
    if "target" in metafunc.fixturenames:
        metafunc.parametrize("target", hosts_in("targets"))


# The last lines of each *.log file under /var/log written since {since} (the journal's files
# aside), each under a header naming it.
RECENT_LOG_FILES = (
    "find /var/log -path /var/log/journal -prune -o -type f -name '*.log' -newermt @{since} -print"
    ' | while read -r f; do echo; echo "==> $f <=="; tail -n 200 "$f"; done'
)


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_call(item: pytest.Item) -> Any:
    """When a test fails, keep every scenario host's journal of the time it ran (in
    .artifacts/<scenario>/journals/): the containers are gone when someone reads the report.
    Services that log to files of their own (nginx, PostgreSQL, Redis) are not in the journal:
    the end of every log file written while the test ran is kept with it."""
    began = time.time()
    outcome = yield
    if outcome.excinfo is None or outcome.excinfo[0] is pytest.skip.Exception:
        return
    project = Path(os.environ.get("MOLECULE_PROJECT_DIRECTORY", "."))
    scenario = os.environ.get("MOLECULE_SCENARIO_NAME", "scenario")
    folder = project / ".artifacts" / scenario / "journals"
    folder.mkdir(parents=True, exist_ok=True)
    test = item.name.split("@")[0].replace("/", "_")
    since = int(began) - 5
    for name in (_inventory().get("all") or {}).get("hosts") or {}:
        journal = subprocess.run(
            ["docker", "exec", name, "journalctl", "--no-pager", "--since", f"@{since}"],
            capture_output=True, text=True, timeout=60, check=False,
        )  # fmt: skip
        log_files = subprocess.run(
            ["docker", "exec", name, "sh", "-c", RECENT_LOG_FILES.format(since=since)],
            capture_output=True, text=True, timeout=60, check=False,
        )  # fmt: skip
        (folder / f"{test}.{name}.log").write_text(
            journal.stdout + journal.stderr + log_files.stdout + log_files.stderr
        )


def summary_file() -> Path:
    """`.artifacts/<scenario>/summary.txt`: a few lines a scenario's tests want read with its
    result (scripts/run-scenarios prints them under it), such as what the TLS scanners said.
    Every verify step of a run adds to it; the create step (molecule/shared/create.yml)
    empties it for a new run."""
    project = Path(os.environ.get("MOLECULE_PROJECT_DIRECTORY", "."))
    scenario = os.environ.get("MOLECULE_SCENARIO_NAME", "scenario")
    return project / ".artifacts" / scenario / "summary.txt"


def add_to_summary(line: str) -> None:
    """Append one line to the scenario's summary (xdist workers write to it side by side)."""
    path = summary_file()
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("a") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        handle.write(" ".join(line.split()) + "\n")


@pytest.fixture(scope="session")
def probe() -> Host:
    names = hosts_in("probe")
    assert names, "the scenario declares no host in group 'probe'"
    return host(names[0])


def port_states(probe: Host, target: str, ports: list[int], *, udp: bool = False) -> dict[int, str]:
    """What nmap on the probe sees of each port: open, closed or filtered."""
    spec = ",".join(str(p) for p in ports)
    scan = "-sU" if udp else "-sT"
    result = probe.run(
        f"nmap -Pn -n {scan} --max-retries 1 --host-timeout 60s -p {spec} -oG - {target}"
    )
    assert result.rc == 0, result.stderr
    states: dict[int, str] = {}
    for line in result.stdout.splitlines():
        if "Ports:" not in line:
            continue
        for entry in line.split("Ports:", 1)[1].split(","):
            number, state = entry.strip().split("/")[:2]
            states[int(number)] = state
    assert set(states) == set(ports), f"nmap reported {states} for {ports}:\n{result.stdout}"
    return states


def reboot(name: str) -> None:
    """Restart a container and wait until systemd has booted it again."""
    subprocess.run(["docker", "restart", "-t", "30", name], check=True, capture_output=True)

    def booted() -> bool:
        state = subprocess.run(
            ["docker", "exec", name, "systemctl", "is-system-running", "--wait"],
            capture_output=True,
            text=True,
            check=False,
        ).stdout.strip()
        return state in {"running", "degraded"}

    wait_until(f"{name} booting", booted, BOOT_TIMEOUT, "BOOT_TIMEOUT, a container's boot")


@dataclass
class PlaybookRun:
    """Outcome of one ansible-playbook run, from the json callback."""

    rc: int
    stats: dict[str, dict[str, int]]
    failed_tasks: list[str] = field(default_factory=list)
    messages: list[str] = field(default_factory=list)
    output: str = ""
    # Names of the plays that ran at least one task on some host, in order.
    plays: list[str] = field(default_factory=list)
    # (host, task) for every task and handler that changed something, in order.
    changed: list[tuple[str, str]] = field(default_factory=list)


def run_playbook(
    playbook: list[dict[str, Any]] | str,
    extra_vars: dict[str, Any] | None = None,
    extra_inventory: dict[str, Any] | None = None,
    tags: str | None = None,
) -> PlaybookRun:
    """Run a playbook (plays, or the path of a playbook file) against the scenario's
    inventory, plus `extra_inventory` if given, only the tasks of `tags` if given, and report
    what happened."""
    env = dict(os.environ)
    env["ANSIBLE_STDOUT_CALLBACK"] = "ansible.posix.json"
    env["ANSIBLE_LOAD_CALLBACK_PLUGINS"] = "1"
    # Another callback writing to stdout would corrupt the JSON report.
    env.pop("ANSIBLE_CALLBACKS_ENABLED", None)
    with tempfile.TemporaryDirectory() as workdir:
        if isinstance(playbook, str):
            book = Path(playbook)
        else:
            book = Path(workdir) / "play.yml"
            book.write_text(yaml.safe_dump(playbook))
        command = ["ansible-playbook", "-i", os.environ["MOLECULE_INVENTORY_FILE"]]
        if extra_inventory:
            extra = Path(workdir) / "extra-inventory.yml"
            extra.write_text(yaml.safe_dump(extra_inventory))
            command += ["-i", str(extra)]
        command.append(str(book))
        if extra_vars:
            command += ["--extra-vars", json.dumps(extra_vars)]
        if tags:
            command += ["--tags", tags]
        done = subprocess.run(command, capture_output=True, text=True, env=env, check=False)
    try:
        report = json.loads(done.stdout)
    except json.JSONDecodeError:
        return PlaybookRun(rc=done.returncode, stats={}, output=done.stdout + done.stderr)
    failed: list[str] = []
    messages: list[str] = []
    changed: list[tuple[str, str]] = []
    plays = [p["play"]["name"] for p in report.get("plays", []) if p.get("tasks")]
    for play in report.get("plays", []):
        for task in play.get("tasks", []):
            for name, outcome in task.get("hosts", {}).items():
                if outcome.get("changed"):
                    changed.append((name, task["task"]["name"]))
                if outcome.get("failed"):
                    failed.append(task["task"]["name"])
                    # A loop's own message only says an item failed; the items say why.
                    items = [
                        r.get("msg", "") for r in outcome.get("results", []) if r.get("failed")
                    ]
                    messages.append(" | ".join([str(outcome.get("msg", "")), *map(str, items)]))
    return PlaybookRun(
        rc=done.returncode,
        stats=report.get("stats", {}),
        failed_tasks=failed,
        messages=messages,
        output=done.stderr,
        plays=plays,
        changed=changed,
    )


def changed_app_copy(destination: Path) -> Path:
    """A copy of app/ with one file changed: deploying it gives a new release id, as a real
    change would, without touching the checkout."""
    source = Path(os.environ["MOLECULE_PROJECT_DIRECTORY"]) / "app"
    changed = destination / "app"
    shutil.copytree(
        source,
        changed,
        ignore=shutil.ignore_patterns(
            ".venv", "__pycache__", ".artifacts", ".state", "staticfiles"
        ),
    )
    with (changed / "chat" / "__init__.py").open("a") as marker:
        marker.write(f"# release marker {uuid.uuid4()}\n")
    return changed


def django(app: Host, code: str) -> str:
    """Run Python in the app's Django shell on an app host, as the app runs."""
    run = app.run(f"parley-manage shell --verbosity 0 --command {shlex.quote(code)}")
    assert run.rc == 0, run.stderr
    return run.stdout.strip()
