"""Assertions and waits that depend on time, as molecule/conftest.py has them for the
scenarios. A bound follows from the setting under test and the time the test measured, and
its failure says both; a wait for a condition may grow on a slow machine, a bound never."""

from __future__ import annotations

import os

# PARLEY_TEST_SLOW=1 (a slow or loaded machine) lets waits for a condition last three times
# as long. It never widens a bound an assertion checks.
SLOW_FACTOR = 3 if os.environ.get("PARLEY_TEST_SLOW") == "1" else 1


def patience(seconds: float) -> float:
    """How long to wait for something that takes well under `seconds` on an idle machine."""
    return seconds * SLOW_FACTOR


def timing(measured: str, bound: str, source: str) -> str:
    """The message of an assertion whose bound depends on time: "timing bound: measured ...,
    bound ... (from ...)", so a failure log alone tells a slow machine from a broken one."""
    return f"timing bound: measured {measured}, bound {bound} (from {source})"
