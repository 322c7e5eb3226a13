"""pytest plugin (loaded by molecule.yml's verifier options) that keeps every test of one
host on one xdist worker, as molecule/conftest.py intends.

molecule/conftest.py marks each test with its xdist group, and xdist's `loadgroup` then
appends "@<group>" to the test's node id by setting `item._nodeid`. pytest 9 keeps the node
id in `item._id` instead, so that assignment is lost: every test lands on any worker, and
two tests of one host (a forced renewal and a snapshot of /etc, say) run at once. This
hook does what xdist means to, on the attribute pytest 9 reads: the group is the test's
`target`, or the one its own xdist_group mark names, else the first host of `targets`.
Remove it when molecule/conftest.py or xdist does this itself.
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest
import yaml
from _pytest.nodeid import NodeId


@pytest.hookimpl(tryfirst=True)
def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    inventory = yaml.safe_load(Path(os.environ["MOLECULE_INVENTORY_FILE"]).read_text())
    first = next(iter((inventory.get("targets") or {}).get("hosts") or {}), "scenario")
    for item in items:
        params = getattr(item, "callspec", None)
        group = str(params.params.get("target", first) if params else first)
        # A test may name its host's group itself (it acts on that host, not per target).
        chosen = item.get_closest_marker("xdist_group")
        if chosen:
            group = str(chosen.kwargs.get("name") or chosen.args[0])
        if "@" not in item.nodeid.rsplit("]", 1)[-1]:
            item._id = NodeId.parse(f"{item.nodeid}@{group}")
