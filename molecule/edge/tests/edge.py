"""What the edge scenario's tests share: the site table, the probe's tools and files."""

from __future__ import annotations

import json
import os
import subprocess
import tempfile
import time
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml
from conftest import host, hosts_in, patience, timing
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


def nginx_setting(name: str) -> Any:
    """A variable of the nginx role as the scenario sets it: vars.yml, else the default."""
    defaults = yaml.safe_load(
        (REPOSITORY / "roles" / "nginx" / "defaults" / "main.yml").read_text()
    )
    return scenario_vars().get(name, defaults[name])


def per_second(rate: str) -> float:
    """nginx's rate syntax ("10r/s", "10r/m") as requests per second."""
    count, unit = rate.removesuffix("r/s").removesuffix("r/m"), rate[-1]
    return float(count) / (60 if unit == "m" else 1)


@dataclass
class Burst:
    """Requests sent at once: each answer's status and the file holding it (headers and
    body), and the probe's clock (ns) just before the first was sent and after the last
    answer came."""

    answers: list[tuple[str, str]]
    began_ns: int
    ended_ns: int


def burst(probe: Host, urls: list[str]) -> Burst:
    """Send every URL at once over one HTTP/2 connection (curl --parallel), each answer
    kept in its own file; the time is read on the probe, around curl alone."""
    folder = f"{PROBE_DIR}/burst-{uuid.uuid4().hex[:12]}"
    transfers = " ".join(f"-o {folder}/{number} {url}" for number, url in enumerate(urls))
    run = probe.run(
        f"mkdir -p {folder} && echo began $(date +%s%N) && curl -sS --max-time 60 "
        f"--cacert {ROOT_CA} --parallel --parallel-immediate --parallel-max 100 --include "
        f"-w '%{{http_code}} %{{filename_effective}}\\n' {transfers}; rc=$?; "
        "echo ended $(date +%s%N); exit $rc"
    )
    assert run.rc == 0, run.stderr
    lines = run.stdout.split("\n")
    clock = {w[0]: int(w[1]) for w in map(str.split, lines) if w and w[0] in ("began", "ended")}
    answers = [(w[0], w[1]) for w in map(str.split, lines) if len(w) == 2 and w[0].isdigit()]
    assert len(answers) == len(urls), run.stdout
    return Burst(answers=answers, began_ns=clock["began"], ended_ns=clock["ended"])


def rate_limit_bound(rate: str, burst_size: int, seconds: float) -> int:
    """The most requests nginx's `limit_req ... burst=B nodelay` at `rate` lets through in
    `seconds` from an idle client: B + 1 at once, one more per 1/rate seconds after, and one
    for nginx's rounding to milliseconds."""
    return burst_size + 1 + int(per_second(rate) * seconds) + 1


def limit_message(passed: int, sent: int, seconds: float, bound: int, rate: str, size: int) -> str:
    return timing(
        f"{passed} of {sent} passed in {seconds:.2f} s",
        f"{size + 1} to {bound} passing",
        f"burst {size} + 1 + rate {rate} x {seconds:.2f} s + 1 for rounding",
    )


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
    `systemctl reload` returned), or the old one when `patience(seconds)` are up."""
    deadline = time.monotonic() + patience(seconds)
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
