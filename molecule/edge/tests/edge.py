"""What the edge scenario's tests share: the site table, the probe's tools and files."""

from __future__ import annotations

import json
import os
import subprocess
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml
from conftest import host, hosts_in
from testinfra.host import Host

SCENARIO = Path(__file__).resolve().parent.parent
REPOSITORY = SCENARIO.parent.parent
VARS_FILE = SCENARIO / "vars.yml"
# Where the tests keep what they put on the probe.
PROBE_DIR = "/root/edge-tests"
# Pebble's issuing root, as the probe fetches it: the only CA the probe trusts for the sites.
ROOT_CA = f"{PROBE_DIR}/pebble-root.pem"
# What the scanners said, kept for the record beside the scenario logs.
ARTIFACTS = REPOSITORY / ".artifacts" / "edge"


def scenario_vars() -> dict[str, Any]:
    return yaml.safe_load(VARS_FILE.read_text())


def site(target: str) -> dict[str, Any]:
    """Names and issuer of an lb host."""
    return scenario_vars()["edge_sites"][target]


def own_name(target: str) -> str:
    """The test name that resolves to this lb host (and no other)."""
    for name, holder in scenario_vars()["edge_dns"].items():
        if holder == target:
            return name
    raise AssertionError(f"vars.yml resolves no name to {target}")


def peers(target: str) -> list[str]:
    """lb hosts that serve the certificate this host issues, besides itself."""
    sites = scenario_vars()["edge_sites"]
    return [h for h in hosts_in("lb") if h != target and sites[h]["issuer"] == target]


def probe_name() -> str:
    return hosts_in("probe")[0]


def install_probe_files(probe: Host) -> None:
    """Copy the probe-side scripts and fetch Pebble's root (idempotent; each xdist worker
    may do it, the content is the same). Each file is written beside its place and moved in,
    so a worker never runs a script another worker is halfway through copying."""
    assert probe.run(f"mkdir -p {PROBE_DIR}").rc == 0
    for script in (SCENARIO / "tests" / "probe").glob("*.py"):
        staged = f"{PROBE_DIR}/.{script.name}.{os.getpid()}"
        subprocess.run(["docker", "cp", str(script), f"{probe_name()}:{staged}"], check=True)
        assert probe.run(f"mv {staged} {PROBE_DIR}/{script.name}").rc == 0
    fetched = probe.run(
        "curl -sS --fail --cacert /root/pebble-listener-ca.crt "
        f"https://edge-acme:15000/roots/0 -o {ROOT_CA}.$$ && mv {ROOT_CA}.$$ {ROOT_CA}"
    )
    assert fetched.rc == 0, fetched.stderr


def curl(probe: Host, arguments: str) -> tuple[int, str, str]:
    """curl on the probe trusting Pebble's root only; returns rc, stdout, stderr."""
    result = probe.run(f"curl -sS --max-time 20 --cacert {ROOT_CA} {arguments}")
    return result.rc, result.stdout, result.stderr


def served_serial(probe: Host, name: str) -> str:
    """Serial of the certificate served for `name`, verified against Pebble's root."""
    result = probe.run(
        f"openssl s_client -connect {name}:443 -servername {name} -CAfile {ROOT_CA} "
        "-verify_return_error </dev/null 2>/dev/null | openssl x509 -noout -serial"
    )
    assert result.rc == 0, result.stderr
    return result.stdout.strip().split("=", 1)[1].upper()


def serial_after_reload(probe: Host, name: str, old: str, seconds: float = 15) -> str:
    """The serial served for `name` once it differs from `old` (nginx's reload finishes after
    `systemctl reload` returned), or the old one when the time is up."""
    deadline = time.monotonic() + seconds
    serial = served_serial(probe, name)
    while serial == old and time.monotonic() < deadline:
        time.sleep(0.5)
        serial = served_serial(probe, name)
    return serial


def ansible_playbook(playbook: Path, *arguments: str) -> subprocess.CompletedProcess:
    """Run a playbook of the repository against the scenario's inventory, with the scenario's
    role variables."""
    command = [
        "ansible-playbook",
        "-i",
        os.environ["MOLECULE_INVENTORY_FILE"],
        "--extra-vars",
        f"@{VARS_FILE}",
        str(playbook),
        *arguments,
    ]
    return subprocess.run(command, capture_output=True, text=True, check=False)


def keep_artifact(name: str, text: str) -> None:
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    (ARTIFACTS / name).write_text(text)


def json_report(output: str) -> dict[str, Any]:
    """The JSON document a probe script printed last."""
    return json.loads(output.strip().splitlines()[-1])


def lb(target: str) -> Host:
    return host(target)


@dataclass
class Refusal:
    """How a role run on one (alias of a) host ended."""

    failed_task: str
    message: str
    changed: int


def run_with_bad_inputs(
    role: str, container: str, good_vars: dict[str, Any], cases: dict[str, dict[str, Any]]
) -> dict[str, Refusal]:
    """Apply `role` once per case, all in one ansible-playbook run: each case is an inventory
    alias of `container` with the good variables plus its bad ones. Returns, per case, the
    first task that failed and its message, and how many changes it reported."""
    aliases = {f"{container}-{case}": case for case in cases}
    inventory = {
        "all": {
            "children": {
                "edge_bad_input": {
                    "hosts": {
                        alias: {
                            "ansible_connection": "docker",  # the short name Mitogen takes over
                            "ansible_host": container,
                            **cases[case],
                        }
                        for alias, case in aliases.items()
                    },
                    "vars": good_vars,
                }
            }
        }
    }
    play = [
        {
            "name": f"Apply {role} with bad input",
            "hosts": "edge_bad_input",
            "gather_facts": False,
            "roles": [{"role": role}],
        }
    ]
    env = dict(os.environ)
    env["ANSIBLE_STDOUT_CALLBACK"] = "ansible.posix.json"
    env["ANSIBLE_LOAD_CALLBACK_PLUGINS"] = "1"
    env.pop("ANSIBLE_CALLBACKS_ENABLED", None)
    with tempfile.TemporaryDirectory() as workdir:
        (Path(workdir) / "inventory.yml").write_text(yaml.safe_dump(inventory))
        (Path(workdir) / "play.yml").write_text(yaml.safe_dump(play))
        done = subprocess.run(
            [
                "ansible-playbook",
                "-i",
                os.environ["MOLECULE_INVENTORY_FILE"],
                "-i",
                f"{workdir}/inventory.yml",
                f"{workdir}/play.yml",
            ],
            capture_output=True,
            text=True,
            env=env,
            check=False,
        )
    assert done.returncode != 0, "every case should have failed"
    report = json.loads(done.stdout)
    refusals: dict[str, Refusal] = {}
    for play_report in report["plays"]:
        for task in play_report["tasks"]:
            for alias, outcome in task["hosts"].items():
                if outcome.get("failed") and aliases[alias] not in refusals:
                    items = [
                        r.get("msg", "") for r in outcome.get("results", []) if r.get("failed")
                    ]
                    refusals[aliases[alias]] = Refusal(
                        failed_task=task["task"]["name"],
                        message=" | ".join([str(outcome.get("msg", "")), *map(str, items)]),
                        changed=report["stats"][alias]["changed"],
                    )
    return refusals
