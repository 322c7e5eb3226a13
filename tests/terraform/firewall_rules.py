"""Read every inbound firewall rule of terraform/ with python-hcl2, without any provider.

A rule is where a port range meets a source: a `rule` of an hcloud_firewall (static or
dynamic), an aws_vpc_security_group_ingress_rule, an `ingress` block of an
aws_security_group, or an aws_security_group_rule of type ingress. Sources are literal CIDRs,
security groups, or expressions; an expression is traced through `local.` values and the
`for_each` behind `each.`/dynamic iterators to the inputs it comes from.
"""

from __future__ import annotations

import ipaddress
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import hcl2

ALL_PORTS = (0, 65535)
# The layout module's outputs whose values are admin or private networks, never a /0: its
# validation rules say so, and test_firewall_structure.py feeds it every spelling of the
# whole Internet and checks these outputs.
TRUSTED = {
    "module.layout.admin_cidrs",
    "module.layout.admin_cidrs_ipv4",
    "module.layout.admin_cidrs_ipv6",
    "module.layout.network_cidr",
    "module.layout.subnet_cidr",
}
REFERENCE = re.compile(
    r"\b(?:var|local|each)\.\w+|\bmodule\.\w+\.\w+|\bdata\.\w+\.\w+|\b\w+\.(?:value|key)\b"
)
OPTIONS = hcl2.SerializationOptions(strip_string_quotes=True, with_comments=False)


@dataclass
class Rule:
    """One inbound rule: where it is, its ports (None when not a literal) and its sources."""

    where: str
    ports: tuple[int, int] | None
    world: bool
    # CIDR-bearing inputs the non-literal sources come from; empty when all are literal.
    origins: set[str]
    security_group_source: bool

    def covers(self, port: int) -> bool:
        return self.ports is None or self.ports[0] <= port <= self.ports[1]


def is_world(source: Any) -> bool:
    """Whether a CIDR is the whole Internet: a prefix of length 0, however it is written
    (0.0.0.0/0, 0.0.0.0/00, ::/000, 0::0/0). A comparison of strings would miss all but one."""
    try:
        return ipaddress.ip_network(str(source), strict=False).prefixlen == 0
    except ValueError:
        return False


def _is_expression(value: Any) -> bool:
    return isinstance(value, str) and value.startswith("${")


def _literal_ports(protocol: Any, first: Any, last: Any) -> tuple[int, int] | None:
    if str(protocol) in {"-1", "all"}:
        return ALL_PORTS
    if _is_expression(first) or _is_expression(last) or first is None:
        return None
    return int(first), int(last if last is not None else first)


def _hcloud_ports(rule: dict) -> tuple[int, int] | None:
    port = rule.get("port")
    if rule.get("protocol") not in {"tcp", "udp"}:
        return (-1, -1)  # icmp, gre, esp: no port at all
    if port is None or port == "any":
        return ALL_PORTS
    if _is_expression(port):
        return None
    first, _, last = str(port).partition("-")
    return int(first), int(last or first)


class Module:
    """The configuration of one directory: its locals, variable types and resources."""

    def __init__(self, directory: Path) -> None:
        self.directory = directory
        self.locals: dict[str, Any] = {}
        self.variable_types: dict[str, str] = {}
        self.resources: list[tuple[str, str, str, dict]] = []
        for tf_file in sorted(directory.glob("*.tf")):
            with tf_file.open() as handle:
                config = hcl2.load(handle, serialization_options=OPTIONS)
            for block in config.get("locals", []):
                self.locals.update({k: v for k, v in block.items() if not k.startswith("__")})
            for block in config.get("variable", []):
                for name, body in block.items():
                    self.variable_types[name] = str(body.get("type", "any"))
            for block in config.get("resource", []):
                for kind, named in block.items():
                    for name, body in named.items():
                        self.resources.append((tf_file.name, kind, name, body))

    def origins(self, expression: Any, iterators: dict[str, Any]) -> set[str]:
        """The CIDR-bearing inputs an expression is computed from (var., module., data.)."""
        found, seen, pending = set(), set(), [str(expression)]
        while pending:
            for ref in REFERENCE.findall(pending.pop()):
                if ref in seen:
                    continue
                seen.add(ref)
                head, _, rest = ref.partition(".")
                if head == "local":
                    pending.append(str(self.locals.get(rest, "")))
                elif head == "each" or head in iterators:
                    pending.append(str(iterators.get(head, "")))
                elif head == "var":
                    # Maps of objects, numbers and booleans carry no network.
                    kind = self.variable_types.get(rest, "any")
                    if not re.search(r"object|number|bool|map", kind):
                        found.add(ref)
                elif head in {"module", "data"}:
                    found.add(ref)
        return found

    def rules(self) -> list[Rule]:
        rules = []
        for file_name, kind, name, body in self.resources:
            where = f"{self.directory.name}/{file_name}: {kind}.{name}"
            iterators = {"each": body.get("for_each", "")}
            if kind == "hcloud_firewall":
                blocks = [(b, iterators) for b in body.get("rule", [])]
                for dynamic in body.get("dynamic", []):
                    for label, spec in dynamic.items():
                        if label == "rule":
                            scoped = {**iterators, label: spec.get("for_each", "")}
                            blocks += [(b, scoped) for b in spec.get("content", [])]
                for block, scope in blocks:
                    if block.get("direction") == "in":
                        rules.append(
                            self._rule(where, _hcloud_ports(block), block.get("source_ips"), scope)
                        )
            elif kind == "aws_vpc_security_group_ingress_rule":
                ports = _literal_ports(
                    body.get("ip_protocol"), body.get("from_port"), body.get("to_port")
                )
                sources = [body[k] for k in ("cidr_ipv4", "cidr_ipv6") if k in body]
                group = "referenced_security_group_id" in body or "prefix_list_id" in body
                rules.append(self._rule(where, ports, sources, iterators, group))
            elif kind in {"aws_security_group", "aws_security_group_rule"}:
                blocks = body.get("ingress", []) if kind == "aws_security_group" else [body]
                for block in blocks:
                    if kind == "aws_security_group_rule" and block.get("type") != "ingress":
                        continue
                    ports = _literal_ports(
                        block.get("protocol"), block.get("from_port"), block.get("to_port")
                    )
                    sources = [block.get("cidr_blocks"), block.get("ipv6_cidr_blocks")]
                    group = bool(
                        block.get("security_groups")
                        or block.get("source_security_group_id")
                        or block.get("self")
                    )
                    rules.append(self._rule(where, ports, sources, iterators, group))
        return rules

    def _rule(
        self,
        where: str,
        ports: tuple[int, int] | None,
        sources: Any,
        iterators: dict[str, Any],
        security_group_source: bool = False,
    ) -> Rule:
        world, origins = False, set()
        pending = sources if isinstance(sources, list) else [sources]
        for source in pending:
            if isinstance(source, list):
                pending.extend(source)
            elif _is_expression(source):
                origins |= self.origins(source, iterators) or {f"unresolved {source}"}
            elif source is not None:
                world |= is_world(source)
        return Rule(where, ports, world, origins, security_group_source)


def inbound_rules(root: Path) -> list[Rule]:
    """Every inbound rule of every Terraform directory under root."""
    directories = sorted({p.parent for p in root.rglob("*.tf") if ".terraform" not in p.parts})
    return [rule for directory in directories for rule in Module(directory).rules()]


def findings(root: Path, sensitive: set[int], internal: set[int]) -> list[str]:
    """What is wrong with the rules under root: a sensitive port open to the world (or to a
    source that cannot be traced to validated networks), an internal port open to any CIDR."""
    problems = []
    for rule in inbound_rules(root):
        untrusted = rule.origins - TRUSTED
        if rule.world and rule.ports is None:
            problems.append(f"{rule.where}: ports are computed and the source is the Internet")
        for port in sorted(sensitive):
            if rule.covers(port) and rule.world:
                problems.append(f"{rule.where}: port {port} open to the whole Internet (a /0)")
            elif rule.covers(port) and untrusted:
                problems.append(
                    f"{rule.where}: port {port} open to {sorted(untrusted)}, which cannot be "
                    "traced to the layout module's validated networks"
                )
        for port in sorted(internal):
            if rule.covers(port) and (rule.world or rule.origins):
                problems.append(
                    f"{rule.where}: internal port {port} open to a network; only the security "
                    "groups of the tiers that use it may reach it"
                )
    return problems
