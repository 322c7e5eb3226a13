"""The render_inventory fixture: the inventory module applied into pytest's tmp_path."""

from __future__ import annotations

import json
import shutil
from pathlib import Path
from typing import Any

import pytest
from terraform_helpers import ADMIN_KEY, MODULES, run_terraform


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
