"""`private_address`: the one definition of a host's private address.

A host's private address is the inventory variable `private_ip` when the inventory sets it
(Terraform does), else the address of its default route from its gathered facts
(ansible_default_ipv4.address); an empty string when neither is known, for callers to check.
Every role and playbook takes an address this way, from the host's variables:
`{{ hostvars[name] | private_address }}`, or `map('extract', hostvars) | map('private_address')`
for a group.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any


def private_address(host_vars: Mapping[str, Any]) -> str:
    if "private_ip" in host_vars:
        return str(host_vars["private_ip"])
    facts = host_vars.get("ansible_facts") or {}
    route = facts.get("default_ipv4") or host_vars.get("ansible_default_ipv4") or {}
    return str(route.get("address", ""))


class FilterModule:
    def filters(self) -> dict[str, Any]:
        return {"private_address": private_address}
