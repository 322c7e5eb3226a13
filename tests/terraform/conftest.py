"""Helpers for the Terraform tests: run Terraform through scripts/terraform, render the
inventory module with given hosts, and keep every bit of Terraform state in pytest's tmp_path."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
from pathlib import Path
from typing import Any

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[2]
TERRAFORM = ROOT / "scripts" / "terraform"
MODULES = ROOT / "terraform" / "modules"


def run_terraform(
    workdir: Path,
    *args: str,
    data_dir: Path,
    embedded: bool = False,
    check: bool = True,
) -> subprocess.CompletedProcess[str]:
    """`terraform -chdir=workdir ARGS` with its .terraform directory under data_dir."""
    env = {**os.environ, "TF_DATA_DIR": str(data_dir), "TF_IN_AUTOMATION": "1"}
    if embedded:
        env["TERRAFORM"] = "embedded"
    result = subprocess.run(
        [str(TERRAFORM), f"-chdir={workdir}", *args],
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    if check and result.returncode != 0:
        pytest.fail(
            f"terraform {' '.join(args)} failed ({result.returncode}):\n"
            f"{result.stdout}\n{result.stderr}"
        )
    return result


def example_hosts() -> list[dict[str, Any]]:
    """The hosts of inventory/example/hosts.yml, as the inventory module takes them."""
    inventory = yaml.safe_load((ROOT / "inventory" / "example" / "hosts.yml").read_text())
    user = inventory["all"]["vars"]["ansible_user"]
    hosts: dict[str, dict[str, Any]] = {}
    for group, members in inventory["all"]["children"].items():
        for name, hostvars in members["hosts"].items():
            host = hosts.setdefault(
                name,
                {
                    "name": name,
                    "public_ip": hostvars["ansible_host"],
                    "private_ip": hostvars["private_ip"],
                    "groups": [],
                    "ssh_user": user,
                },
            )
            host["groups"].append(group)
    return list(hosts.values())


ADMIN_KEY = (
    "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIGw8hUvQ0HBbIrjw1tR5c2yTgH8gBVBc+5ziy4sTWyHb alice@laptop"
)


@pytest.fixture
def render_inventory(tmp_path: Path):
    """Apply a copy of the inventory module (it has no resources, only outputs) and write
    hosts.yml and group_vars/all/terraform.yml the way the environments do."""

    def render(hosts: list[dict[str, Any]], name: str = "inventory") -> Path:
        module = tmp_path / f"{name}-module"
        shutil.copytree(MODULES / "inventory", module, ignore=shutil.ignore_patterns("tests"))
        variables = {
            "hosts": hosts,
            "admin_users": [{"name": hosts[0]["ssh_user"], "ssh_keys": [ADMIN_KEY]}],
            "admin_cidrs": ["198.51.100.0/24"],
        }
        (module / "test.tfvars.json").write_text(json.dumps(variables))
        data_dir = tmp_path / f"{name}-data"
        run_terraform(module, "init", "-input=false", "-no-color", data_dir=data_dir)
        run_terraform(
            module,
            "apply",
            "-auto-approve",
            "-input=false",
            "-no-color",
            "-var-file=test.tfvars.json",
            data_dir=data_dir,
        )
        outputs = json.loads(
            run_terraform(module, "output", "-json", "-no-color", data_dir=data_dir).stdout
        )
        inventory = tmp_path / name
        (inventory / "group_vars" / "all").mkdir(parents=True)
        (inventory / "hosts.yml").write_text(outputs["hosts_yaml"]["value"])
        (inventory / "group_vars" / "all" / "terraform.yml").write_text(
            outputs["group_vars_yaml"]["value"]
        )
        return inventory

    return render
