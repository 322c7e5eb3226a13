"""Helpers every scenario's verify tests share.

Scenario hosts are docker containers; tests reach them with testinfra's docker backend and,
for what must be proven from the outside, through a probe container on the same network.
A test that needs one run per target host takes the `target` argument: it is parametrized
with every host of the scenario's `targets` group.
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
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
import testinfra
import yaml
from _pytest.nodeid import NodeId
from testinfra.host import Host

BOOT_TIMEOUT = 120


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


@pytest.hookimpl(tryfirst=True)
def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """Keep every test of one host on one xdist worker: a test that reboots a host must not
    run beside another test of that host. Tests without a target act on the first one,
    unless they name their own group (`@pytest.mark.xdist_group("...")`).

    xdist's `loadgroup` means to do this by appending "@<group>" to each test's node id, but
    it sets `item._nodeid`, which pytest 9 no longer reads (it keeps the id in `item._id`):
    the groups were silently lost and tests of one host ran at once. So the id is set here,
    on the attribute pytest reads."""
    first = hosts_in("targets")[0] if _inventory().get("targets") else "scenario"
    for item in items:
        chosen = item.get_closest_marker("xdist_group")
        if chosen:
            group = str(chosen.kwargs.get("name") or chosen.args[0])
        else:
            params = getattr(item, "callspec", None)
            group = str(params.params.get("target", first) if params else first)
            item.add_marker(pytest.mark.xdist_group(name=group))
        if "@" not in item.nodeid.rsplit("]", 1)[-1]:
            item._id = NodeId.parse(f"{item.nodeid}@{group}")


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
    result (scripts/run-scenarios prints them under it), such as what the TLS scanners said."""
    project = Path(os.environ.get("MOLECULE_PROJECT_DIRECTORY", "."))
    scenario = os.environ.get("MOLECULE_SCENARIO_NAME", "scenario")
    return project / ".artifacts" / scenario / "summary.txt"


def pytest_sessionstart(session: pytest.Session) -> None:
    """The summary holds this run's lines only. Cleared once, by the controller (xdist's
    workers have `workerinput`), before any worker runs a test."""
    if not hasattr(session.config, "workerinput"):
        summary_file().unlink(missing_ok=True)


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
    deadline = time.monotonic() + BOOT_TIMEOUT
    state = ""
    while time.monotonic() < deadline:
        state = subprocess.run(
            ["docker", "exec", name, "systemctl", "is-system-running", "--wait"],
            capture_output=True,
            text=True,
            check=False,
        ).stdout.strip()
        if state in {"running", "degraded"}:
            return
        time.sleep(1)
    pytest.fail(f"{name} did not boot within {BOOT_TIMEOUT} s (systemd says {state!r})")


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
