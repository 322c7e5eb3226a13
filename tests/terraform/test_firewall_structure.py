"""No firewall rule in terraform/ opens SSH, PostgreSQL, Redis or gunicorn to the Internet.

The fleet modules need their providers to plan, which this machine cannot download, so the
rules are read from the HCL itself (firewall_rules.py). SSH may only come from the layout
module's validated admin networks, which are never a /0: the module is applied here with every
spelling of the whole Internet and its trusted outputs checked; the internal ports
only from the security groups of the tiers that use them; the Internet reaches 80 and 443
and nothing else. The last tests break a copy of terraform/ in the ways that matter and
show the check catches each.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
from firewall_rules import TRUSTED, Module, findings, inbound_rules, is_world
from terraform_helpers import ADMIN_KEY, MODULES, ROOT, run_terraform

TERRAFORM = ROOT / "terraform"
SSH = 22
INTERNAL = {8000, 5432, 6379, 6380}  # gunicorn, PostgreSQL, Redis broker and channel layer
SENSITIVE = {SSH} | INTERNAL
GROUPS = ["lb", "web", "worker", "beat", "redis", "db"]


def test_rules_are_found_in_both_fleet_modules() -> None:
    # A parser that silently found nothing would pass everything below.
    where = {rule.where.split(":")[0] for rule in inbound_rules(TERRAFORM)}
    assert {"hcloud-fleet/firewall.tf", "aws-fleet/security.tf"} <= where, where
    assert len(inbound_rules(TERRAFORM)) >= 8


def test_no_sensitive_port_is_open_to_the_internet() -> None:
    assert findings(TERRAFORM, SENSITIVE, INTERNAL) == []


def test_the_internet_reaches_only_http_and_https() -> None:
    public = {rule.ports for rule in inbound_rules(TERRAFORM) if rule.world}
    assert public == {(80, 80), (443, 443)}


def test_ssh_comes_only_from_the_validated_admin_networks() -> None:
    ssh = [rule for rule in inbound_rules(TERRAFORM) if rule.ports == (SSH, SSH)]
    assert len(ssh) == 2, ssh  # one per cloud
    for rule in ssh:
        assert not rule.world
        assert rule.origins
        assert rule.origins <= {
            "module.layout.admin_cidrs",
            "module.layout.admin_cidrs_ipv4",
            "module.layout.admin_cidrs_ipv6",
        }, rule


def test_internal_services_admit_only_their_clients() -> None:
    # On AWS each internal port is opened to the security groups of these groups only (the
    # layout module's tests check how this becomes rules between pools).
    services = Module(TERRAFORM / "modules" / "layout").locals["internal_services"]
    matrix = {(s["group"], s["port"]): sorted(s["clients"]) for s in services}
    assert matrix == {
        ("web", 8000): ["lb"],
        ("redis", 6379): ["beat", "web", "worker"],
        ("redis", 6380): ["beat", "web", "worker"],
        ("db", 5432): ["beat", "web", "worker"],
    }


# Inputs to the layout module that must never come out of a trusted output as a /0: each
# spelling of the whole Internet, as an admin network or as the private network.
LAYOUT_INPUTS = {
    "admin networks": {"admin_cidrs": ["198.51.100.0/24", "2001:db8:10::/48"]},
    **{
        f"admin network {cidr}": {"admin_cidrs": ["198.51.100.0/24", cidr]}
        for cidr in ["0.0.0.0/0", "0.0.0.0/00", "0.0.0.0/000", "::/0", "::/000", "0::0/00"]
    },
    "private network 0.0.0.0/00": {"network_cidr": "0.0.0.0/00"},
}


@pytest.fixture(scope="module")
def layout_module(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    """A copy of the layout module (provider-free, it only computes values), initialised."""
    work = tmp_path_factory.mktemp("layout")
    module = work / "module"
    shutil.copytree(MODULES / "layout", module, ignore=shutil.ignore_patterns("tests"))
    run_terraform(module, "init", "-input=false", "-no-color", data_dir=work / "data")
    return module, work / "data"


@pytest.mark.parametrize("case", LAYOUT_INPUTS)
def test_trusted_layout_outputs_never_hold_the_internet(
    case: str, layout_module: tuple[Path, Path]
) -> None:
    # The rules above accept SSH from the TRUSTED outputs on the layout module's word; here
    # that word is checked by applying the module: an input it accepts must not come out as
    # a /0, however the prefix is written.
    module, data_dir = layout_module
    variables = {
        "name": "production",
        "pools": {"parley": {"count": 1, "groups": GROUPS, "size": "cx33"}},
        "ssh_public_keys": [ADMIN_KEY],
        "admin_cidrs": ["198.51.100.0/24"],
        **LAYOUT_INPUTS[case],
    }
    (module / "case.tfvars.json").write_text(json.dumps(variables))
    applied = run_terraform(
        module,
        "apply",
        "-auto-approve",
        "-input=false",
        "-no-color",
        "-var-file=case.tfvars.json",
        data_dir=data_dir,
        check=False,
    )
    world_given = any(
        is_world(cidr)
        for cidr in [*variables["admin_cidrs"], variables.get("network_cidr", "10.0.0.0/16")]
    )
    if applied.returncode != 0:
        # Refused: nothing reaches a firewall. Only the Internet may be refused here.
        assert world_given, applied.stdout + applied.stderr
        return
    outputs = json.loads(
        run_terraform(module, "output", "-json", "-no-color", data_dir=data_dir).stdout
    )
    for reference in sorted(TRUSTED):
        value = outputs[reference.removeprefix("module.layout.")]["value"]
        networks = value if isinstance(value, list) else [value]
        assert not [n for n in networks if is_world(n)], f"{reference} carries {networks}"
    assert not world_given, f"the layout module accepted {LAYOUT_INPUTS[case]}"


BROKEN = {
    "hcloud: HTTPS rule moved to SSH": (
        "modules/hcloud-fleet/firewall.tf",
        'port        = "443"',
        'port        = "22"',
        "port 22 open to the whole Internet",
    ),
    "hcloud: public port range over PostgreSQL": (
        "modules/hcloud-fleet/firewall.tf",
        'port        = "80"',
        'port        = "80-5432"',
        "port 5432 open to the whole Internet",
    ),
    "hcloud: SSH from any address": (
        "modules/hcloud-fleet/firewall.tf",
        'source_ips  = module.layout.admin_cidrs\n  }\n\n  rule {\n    description = "Ping',
        'source_ips  = ["0.0.0.0/0", "::/0"]\n  }\n\n  rule {\n    description = "Ping',
        "port 22 open to the whole Internet",
    ),
    "hcloud: SSH from the whole Internet with a padded prefix": (
        "modules/hcloud-fleet/firewall.tf",
        'source_ips  = module.layout.admin_cidrs\n  }\n\n  rule {\n    description = "Ping',
        'source_ips  = ["0.0.0.0/00", "::/000"]\n  }\n\n  rule {\n    description = "Ping',
        "port 22 open to the whole Internet",
    ),
    "aws: SSH from the unvalidated input": (
        "modules/aws-fleet/security.tf",
        "module.layout.admin_cidrs_ipv4) :",
        "var.admin_cidrs) :",
        "port 22 open to ['var.admin_cidrs']",
    ),
    "aws: Redis broker from the world": (
        "modules/aws-fleet/security.tf",
        "  referenced_security_group_id = aws_security_group.pool[each.value.client_pool].id",
        '  cidr_ipv4                    = "0.0.0.0/0"',
        "port 6379 open to the whole Internet",
    ),
    "aws: gunicorn from the VPC CIDR instead of the load balancers": (
        "modules/aws-fleet/security.tf",
        "  referenced_security_group_id = aws_security_group.pool[each.value.client_pool].id",
        "  cidr_ipv4                    = module.layout.network_cidr",
        "internal port 8000 open to a network",
    ),
    "aws: all protocols on the HTTPS rule": (
        "modules/aws-fleet/security.tf",
        'WebSockets from anyone"\n  ip_protocol       = "tcp"',
        'WebSockets from anyone"\n  ip_protocol       = "-1"',
        "port 6380 open to the whole Internet",
    ),
}


@pytest.mark.parametrize("case", BROKEN)
def test_a_broken_rule_is_caught(case: str, tmp_path: Path) -> None:
    relative, old, new, expected = BROKEN[case]
    copy = tmp_path / "terraform"
    shutil.copytree(TERRAFORM, copy, ignore=shutil.ignore_patterns(".terraform"))
    target = copy / relative
    text = target.read_text()
    assert text.count(old) == 1, f"{relative} no longer contains {old!r} once: update the case"
    target.write_text(text.replace(old, new))

    problems = findings(copy, SENSITIVE, INTERNAL)
    assert any(expected in problem for problem in problems), problems
