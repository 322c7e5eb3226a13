"""redis-cli driven from a container of the scenario: how the tests talk to the instances."""

from __future__ import annotations

import json
import os
import shlex
import subprocess
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml
from conftest import PlaybookRun
from testinfra.host import Host

# The converge playbook is the one place the test passwords and settings are written down.
CONVERGE = Path(__file__).resolve().parent.parent / "converge.yml"
CONVERGE_VARS: dict[str, Any] = yaml.safe_load(CONVERGE.read_text())[0]["vars"]
# Settings one host gets in molecule.yml, so a test can tell the role's value from Redis's own.
HOST_VARS: dict[str, dict[str, Any]] = yaml.safe_load(
    (CONVERGE.parent / "molecule.yml").read_text()
)["provisioner"]["inventory"].get("host_vars", {})
ROLE_DEFAULTS: dict[str, Any] = yaml.safe_load(
    (CONVERGE.parents[2] / "roles" / "redis" / "defaults" / "main.yml").read_text()
)

BROKER_PORT = 6379
LAYER_PORT = 6380
APP_USER = "parley"
ADMIN_USER = "admin"


def role_setting(target: str, name: str) -> Any:
    """The value the role was given for `name` on `target`, with Ansible's precedence: the
    converge play's vars, then the host's inventory vars, then the role's default."""
    if name in CONVERGE_VARS:
        return CONVERGE_VARS[name]
    return HOST_VARS.get(target, {}).get(name, ROLE_DEFAULTS[name])


@dataclass(frozen=True)
class Login:
    user: str
    password: str


BROKER = Login(APP_USER, CONVERGE_VARS["redis_broker_password"])
LAYER = Login(APP_USER, CONVERGE_VARS["redis_layer_password"])
ADMIN = Login(ADMIN_USER, CONVERGE_VARS["redis_admin_password"])


def redis(client: Host, target: str, port: int, *command: str, login: Login | None = None) -> str:
    """Run one command with redis-cli on `client` against `target` and return Redis's reply.

    redis-cli exits 0 when Redis answers with an error, so the reply text is what tells;
    a non-zero exit means there was no answer at all (refused, dropped, timed out).
    """
    auth = ""
    if login:
        user, password = shlex.quote(login.user), shlex.quote(login.password)
        auth = f"--user {user} --pass {password} --no-auth-warning "
    words = " ".join(shlex.quote(word) for word in command)
    result = client.run(f"timeout 30 redis-cli -h {target} -p {port} {auth}{words}")
    assert result.rc == 0, f"no answer from {target}:{port}: {result.stdout}{result.stderr}"
    return result.stdout.strip()


def check_mode_run(plays: list[dict[str, Any]]) -> PlaybookRun:
    """Run plays with ansible-playbook --check against the scenario's inventory, as the
    scenario's check step does (molecule/conftest.py's run_playbook has no --check; a play's
    check_mode keyword is not the same: roles see ansible_check_mode false then)."""
    env = dict(os.environ)
    env["ANSIBLE_STDOUT_CALLBACK"] = "ansible.posix.json"
    env["ANSIBLE_LOAD_CALLBACK_PLUGINS"] = "1"
    env.pop("ANSIBLE_CALLBACKS_ENABLED", None)
    with tempfile.TemporaryDirectory() as workdir:
        book = Path(workdir) / "play.yml"
        book.write_text(yaml.safe_dump(plays))
        inventory = os.environ["MOLECULE_INVENTORY_FILE"]
        command = ["ansible-playbook", "--check", "-i", inventory, str(book)]
        done = subprocess.run(command, capture_output=True, text=True, env=env, check=False)
    try:
        report = json.loads(done.stdout)
    except json.JSONDecodeError:
        return PlaybookRun(rc=done.returncode, stats={}, output=done.stdout + done.stderr)
    failed = [
        task["task"]["name"]
        for play in report.get("plays", [])
        for task in play.get("tasks", [])
        for outcome in task.get("hosts", {}).values()
        if outcome.get("failed")
    ]
    return PlaybookRun(
        rc=done.returncode, stats=report.get("stats", {}), failed_tasks=failed, output=done.stderr
    )
