"""No firewall rule in terraform/ opens SSH, PostgreSQL, Redis or gunicorn to the Internet.

The fleet modules need their providers to plan, which this machine cannot download, so the
rules are read from the HCL itself (firewall_rules.py). SSH may only come from the layout
module's validated admin networks (its tests prove they are never a /0); the internal ports
only from the security groups of the tiers that use them; the Internet reaches 80 and 443
and nothing else. The last tests break a copy of terraform/ in the ways that matter and
show the check catches each.
"""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest
from firewall_rules import Module, findings, inbound_rules
from terraform_helpers import ROOT

TERRAFORM = ROOT / "terraform"
SSH = 22
INTERNAL = {8000, 5432, 6379, 6380}  # gunicorn, PostgreSQL, Redis broker and channel layer
SENSITIVE = {SSH} | INTERNAL


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


BROKEN = {
    "hcloud: HTTPS rule moved to SSH": (
        "modules/hcloud-fleet/firewall.tf",
        'port        = "443"',
        'port        = "22"',
        "port 22 open to 0.0.0.0/0",
    ),
    "hcloud: public port range over PostgreSQL": (
        "modules/hcloud-fleet/firewall.tf",
        'port        = "80"',
        'port        = "80-5432"',
        "port 5432 open to 0.0.0.0/0",
    ),
    "hcloud: SSH from any address": (
        "modules/hcloud-fleet/firewall.tf",
        'source_ips  = module.layout.admin_cidrs\n  }\n\n  rule {\n    description = "Ping',
        'source_ips  = ["0.0.0.0/0", "::/0"]\n  }\n\n  rule {\n    description = "Ping',
        "port 22 open to 0.0.0.0/0",
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
        "port 6379 open to 0.0.0.0/0",
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
        "port 6380 open to 0.0.0.0/0",
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
