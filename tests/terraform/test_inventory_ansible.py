"""The inventory Terraform writes is one Ansible accepts and site.yml runs against.

Each test applies the inventory module (it creates nothing, it renders text) with a layout's
hosts, writes hosts.yml and group_vars/all/terraform.yml as the environments do, and asks
Ansible itself: `ansible-inventory --list` must show every group with its hosts and their
variables, and `ansible-playbook site.yml --syntax-check` must accept it. The last tests run
the settings and Vault commands of terraform/envs/example/README.md on such an inventory and
check the result: the pre-flight play passes, and no file of inventory/example can replace
the administrators Terraform wrote.
"""

from __future__ import annotations

import json
import re
import shutil
import subprocess
from pathlib import Path
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
EXAMPLE = ROOT / "inventory" / "example"
# The password of inventory/example's vault (its README says so; no site may use it).
EXAMPLE_VAULT_PASSWORD = "parley-example-vault"
WALKTHROUGH = ROOT / "terraform" / "envs" / "example" / "README.md"
# The walk-through marks each shell block this module runs with this comment above it.
TESTED_BLOCK = re.compile(
    r"^<!-- tests/terraform/test_inventory_ansible\.py runs each block marked like this one -->\n"
    r"```sh\n(?P<code>.*?)^```$",
    re.MULTILINE | re.DOTALL,
)


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


def effective_hostvars(inventory: Path, password_file: Path) -> dict[str, dict[str, Any]]:
    """Every host's variables as Ansible resolves them, the vault opened."""
    result = ansible(
        "ansible-inventory",
        "-i",
        str(inventory),
        "--vault-password-file",
        str(password_file),
        "--list",
    )
    assert result.returncode == 0, result.stderr
    return json.loads(result.stdout)["_meta"]["hostvars"]


def test_example_group_vars_cannot_override_terraforms_admins(render_inventory, tmp_path) -> None:
    # A sysadmin who copies all of inventory/example/group_vars next to the files Terraform
    # wrote must still get Terraform's administrators and admin networks: the common role
    # installs keys with `exclusive: true`, so the example's placeholder key winning would
    # remove the real one and lock everybody out on the first run.
    inventory = render_inventory(example_hosts())
    shutil.copytree(EXAMPLE / "group_vars", inventory / "group_vars", dirs_exist_ok=True)
    password_file = tmp_path / "example-vault-password"
    password_file.write_text(EXAMPLE_VAULT_PASSWORD + "\n")

    hostvars = effective_hostvars(inventory, password_file)
    assert sorted(hostvars) == sorted(h["name"] for h in example_hosts())
    for name, variables in hostvars.items():
        assert variables["common_admin_users"] == [{"name": "admin", "ssh_keys": [ADMIN_KEY]}], name
        assert variables["common_firewall_ssh_cidrs"] == ["198.51.100.0/24"], name
        # The example's site settings still apply: only the administrators are Terraform's.
        assert variables["parley_site_names"] == ["chat.example.org"], name


def test_walkthrough_settings_and_vault_make_a_ready_inventory(render_inventory, tmp_path) -> None:
    # Step 7 of the walk-through, command for command, from a stand-in for the repository's
    # top directory: Terraform's inventory in inventory/production, the example beside it.
    blocks = [m["code"] for m in TESTED_BLOCK.finditer(WALKTHROUGH.read_text())]
    assert len(blocks) == 2, f"expected the settings and the Vault blocks, found {blocks}"
    site = tmp_path / "site"
    shutil.copytree(render_inventory(example_hosts()), site / "inventory" / "production")
    (site / "inventory" / "example").symlink_to(EXAMPLE)
    for code in blocks:
        result = subprocess.run(
            ["bash", "-euo", "pipefail", "-c", code],
            cwd=site,
            capture_output=True,
            text=True,
            timeout=120,
            check=False,
        )
        assert result.returncode == 0, f"{code}\n{result.stdout}{result.stderr}"

    inventory = site / "inventory" / "production"
    password_file = inventory / ".vault-password"
    vault = inventory / "group_vars" / "all" / "vault.yml"
    assert vault.read_text().startswith("$ANSIBLE_VAULT;"), "the Vault was written in clear"
    assert oct(password_file.stat().st_mode & 0o777) == "0o600"
    assert sorted(p.name for p in (inventory / "group_vars" / "all").iterdir()) == [
        "terraform.yml",
        "vars.yml",
        "vault.yml",
    ]
    # Every secret the settings map from the Vault is in the Vault the block made.
    opened = ansible(
        "ansible-vault", "view", "--vault-password-file", str(password_file), str(vault)
    )
    assert opened.returncode == 0, opened.stderr
    mapped = set(re.findall(r"\bvault_\w+", (EXAMPLE / "group_vars/all/vars.yml").read_text()))
    assert set(yaml.safe_load(opened.stdout)) == mapped

    # The pre-flight's inventory check (every group, every secret, shared secrets equal,
    # addresses) passes; its role-variable play needs the hosts' facts, and these hosts do
    # not exist.
    preflight = ansible(
        "ansible-playbook",
        "-i",
        str(inventory),
        "--vault-password-file",
        str(password_file),
        "--skip-tags",
        "role-variables",
        "playbooks/preflight.yml",
    )
    assert preflight.returncode == 0, preflight.stdout + preflight.stderr

    for name, variables in effective_hostvars(inventory, password_file).items():
        assert variables["common_admin_users"] == [{"name": "admin", "ssh_keys": [ADMIN_KEY]}], name
