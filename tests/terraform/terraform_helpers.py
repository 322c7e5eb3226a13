"""What the Terraform tests share: paths, running Terraform through scripts/terraform with its
state in a directory of the caller's, and the hosts of inventory/example/hosts.yml.

A module of its own rather than conftest.py, so that importing it never picks up another
directory's conftest (molecule/ has one) when several test directories run together."""

from __future__ import annotations

import os
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
