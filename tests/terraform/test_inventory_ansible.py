"""The inventory Terraform writes is one Ansible accepts and site.yml runs against.

Each test applies the inventory module (it creates nothing, it renders text) with a layout's
hosts, writes hosts.yml and group_vars/all/terraform.yml as the environments do, and asks
Ansible itself: `ansible-inventory --list` must show every group with its hosts and their
variables, and `ansible-playbook site.yml --syntax-check` must accept it.
"""

from __future__ import annotations

import json
import subprocess
from typing import Any

import pytest
import yaml
from terraform_helpers import ADMIN_KEY, ROOT, example_hosts

GROUPS = ["lb", "web", "worker", "beat", "redis", "db"]
SINGLE_VM = [
    {
        "name": "parley1",
        "public_ip": "203.0.113.7",
        "private_ip": "10.0.1.2",
        "groups": GROUPS,
        "ssh_user": "admin",
    }
]
LAYOUTS = {"fleet": example_hosts(), "single-vm": SINGLE_VM}


def ansible(*args: str) -> subprocess.CompletedProcess[str]:
    """Run an Ansible command from the repository root, where ansible.cfg lives."""
    return subprocess.run(
        list(args), cwd=ROOT, capture_output=True, text=True, timeout=120, check=False
    )


def expected_groups(hosts: list[dict[str, Any]]) -> dict[str, list[str]]:
    return {g: [h["name"] for h in hosts if g in h["groups"]] for g in GROUPS}


def test_example_fleet_renders_the_example_inventory(render_inventory) -> None:
    inventory = render_inventory(example_hosts())
    rendered = yaml.safe_load((inventory / "hosts.yml").read_text())
    example = yaml.safe_load((ROOT / "inventory" / "example" / "hosts.yml").read_text())
    assert rendered == example
    # Same order as the example too: a reader finds the tiers from the edge inwards.
    assert list(rendered["all"]) == ["vars", "children"]
    assert list(rendered["all"]["children"]) == GROUPS


@pytest.mark.parametrize("layout", LAYOUTS)
def test_ansible_inventory_lists_every_group_and_host(layout: str, render_inventory) -> None:
    hosts = LAYOUTS[layout]
    inventory = render_inventory(hosts, name=layout)
    result = ansible("ansible-inventory", "-i", str(inventory), "--list")
    assert result.returncode == 0, result.stderr
    assert "[WARNING]" not in result.stderr, result.stderr
    listed = json.loads(result.stdout)

    assert sorted(listed["all"]["children"]) == sorted([*GROUPS, "ungrouped"])
    assert {g: listed[g]["hosts"] for g in GROUPS} == expected_groups(hosts)
    for host in hosts:
        hostvars = listed["_meta"]["hostvars"][host["name"]]
        assert hostvars["ansible_host"] == host["public_ip"]
        assert hostvars["private_ip"] == host["private_ip"]
        assert hostvars["ansible_user"] == host["ssh_user"]
        assert hostvars["common_admin_users"] == [
            {"name": host["ssh_user"], "ssh_keys": [ADMIN_KEY]}
        ]
        assert hostvars["common_firewall_ssh_cidrs"] == ["198.51.100.0/24"]


@pytest.mark.parametrize("layout", LAYOUTS)
def test_site_playbook_accepts_the_inventory(layout: str, render_inventory) -> None:
    inventory = render_inventory(LAYOUTS[layout], name=layout)
    result = ansible("ansible-playbook", "-i", str(inventory), "site.yml", "--syntax-check")
    assert result.returncode == 0, result.stdout + result.stderr
    assert "playbook: site.yml" in result.stdout


@pytest.mark.parametrize("layout", LAYOUTS)
def test_rendered_files_pass_the_repository_yamllint(layout: str, render_inventory) -> None:
    # Sites commit inventory/<env>/, so what Terraform writes must pass `make lint`.
    inventory = render_inventory(LAYOUTS[layout], name=layout)
    result = subprocess.run(
        ["yamllint", "--strict", "-c", str(ROOT / ".yamllint"), str(inventory)],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert result.returncode == 0, result.stdout + result.stderr
