"""psql driven from a container of the scenario, and the project's own playbooks run against
the scenario's hosts: how the tests talk to the database servers."""

from __future__ import annotations

import json
import os
import shlex
import subprocess
from pathlib import Path
from typing import Any

import yaml
from conftest import PlaybookRun, host
from testinfra.host import Host

SCENARIO = Path(__file__).resolve().parent.parent
PROJECT = SCENARIO.parent.parent
# The converge playbook is the one place the test password and settings are written down.
CONVERGE_VARS: dict[str, Any] = yaml.safe_load((SCENARIO / "converge.yml").read_text())[0]["vars"]
APP_PASSWORD: str = CONVERGE_VARS["postgresql_app_password"]
# Variables one host gets in molecule.yml (an override of what the role derives).
HOST_VARS: dict[str, dict[str, Any]] = yaml.safe_load((SCENARIO / "molecule.yml").read_text())[
    "provisioner"
]["inventory"].get("host_vars", {})
CA_ON_SERVER = "/etc/postgresql/tls/ca.crt"
BACKUP_DIR = "/var/backups/postgresql"


def trust_server_ca(client: Host, target: str) -> str:
    """Copy the target's certificate authority onto `client`; returns its path there."""
    pem = host(target).file(CA_ON_SERVER).content_string
    path = f"/tmp/{target}-ca.crt"
    written = client.run(f"printf '%s' {shlex.quote(pem)} > {path}")
    assert written.rc == 0, written.stderr
    return path


def psql(
    client: Host,
    sql: str,
    *,
    host_name: str,
    password: str = APP_PASSWORD,
    user: str = "parley",
    dbname: str = "parley",
    sslmode: str = "verify-full",
    rootcert: str | None = None,
    connect_timeout: int = 10,
) -> tuple[int, str]:
    """Run one statement with psql on `client` over TCP; returns psql's exit code and output."""
    conninfo = f"host={host_name} port=5432 user={user} dbname={dbname} sslmode={sslmode}"
    conninfo += f" connect_timeout={connect_timeout}"
    if rootcert:
        conninfo += f" sslrootcert={rootcert}"
    result = client.run(
        f"PGPASSWORD={shlex.quote(password)} timeout 30 psql {shlex.quote(conninfo)} "
        f"--no-psqlrc -v ON_ERROR_STOP=1 -Atc {shlex.quote(sql)}"
    )
    return result.rc, (result.stdout + result.stderr).strip()


def as_postgres(target: str, sql: str) -> str:
    """A statement run on the server itself by the postgres superuser (peer login)."""
    return host(target).check_output(f"runuser -u postgres -- psql -Atc {shlex.quote(sql)}")


def dumps(target: str) -> list[str]:
    """Names of the app database's dumps on the target, oldest first."""
    listing = host(target).check_output(f"ls -1 {BACKUP_DIR}")
    return sorted(name for name in listing.split() if name.endswith(".dump"))


def run_project_playbook(
    playbook: str, limit: str, extra_vars: dict[str, Any] | None = None
) -> tuple[PlaybookRun, list[str]]:
    """Run one of the project's playbooks (playbooks/NAME) as an operator would, with --limit,
    against the scenario's inventory. Returns what happened, from the json callback, and the
    messages of its "Report ..." tasks."""
    env = dict(os.environ)
    env["ANSIBLE_STDOUT_CALLBACK"] = "ansible.posix.json"
    env["ANSIBLE_LOAD_CALLBACK_PLUGINS"] = "1"
    env.pop("ANSIBLE_CALLBACKS_ENABLED", None)
    command = [
        "ansible-playbook",
        "-i",
        os.environ["MOLECULE_INVENTORY_FILE"],
        "--limit",
        limit,
        str(PROJECT / "playbooks" / playbook),
    ]
    if extra_vars:
        command += ["--extra-vars", json.dumps(extra_vars)]
    done = subprocess.run(command, capture_output=True, text=True, env=env, check=False)
    try:
        report = json.loads(done.stdout)
    except json.JSONDecodeError:
        return PlaybookRun(rc=done.returncode, stats={}, output=done.stdout + done.stderr), []
    failed: list[str] = []
    messages: list[str] = []
    printed: list[str] = []
    for play in report.get("plays", []):
        for task in play.get("tasks", []):
            for outcome in task.get("hosts", {}).values():
                if outcome.get("failed"):
                    failed.append(task["task"]["name"])
                    messages.append(str(outcome.get("msg", "")))
                elif task["task"]["name"].split(" : ")[-1].startswith("Report"):
                    printed.append(str(outcome.get("msg", "")))
    run = PlaybookRun(
        rc=done.returncode,
        stats=report.get("stats", {}),
        failed_tasks=failed,
        messages=messages,
        output=done.stderr,
    )
    return run, printed
