"""How the audit reaches the fleet: its hosts and groups (from the scenario's molecule.yml), the
site's variables, commands inside containers, the Django shell of an app host."""

from __future__ import annotations

import json
import os
import re
import shlex
import subprocess
import time
from dataclasses import dataclass
from functools import cached_property
from pathlib import Path
from typing import Any

import yaml

PROJECT = Path(__file__).resolve().parent.parent
SCENARIO = PROJECT / "molecule" / "fleet"
ARTIFACTS = PROJECT / ".artifacts" / "audit"
# The groups that make up the site; the probe and the ACME server stand outside it.
SITE_GROUPS = ("lb", "web", "worker", "beat", "redis", "db")
# Where the probe keeps Pebble's root, the one CA its clients trust (as in tests/test_fleet.py).
PROBE_ROOT = "/root/pebble-root.pem"
# Variables whose values are secrets: none of them may ever reach a log.
SECRET_NAME = re.compile(r"password|secret|api_key|token", re.IGNORECASE)
JSON_MARK = "AUDIT-JSON "


@dataclass(frozen=True)
class Run:
    """What one command in a container did."""

    rc: int
    stdout: str
    stderr: str

    @property
    def ok(self) -> bool:
        return self.rc == 0

    @property
    def output(self) -> str:
        return (self.stdout + self.stderr).strip()


class Fleet:
    """The running fleet scenario, addressed by container name."""

    def __init__(self, scenario: Path = SCENARIO) -> None:
        self.scenario = scenario
        molecule = yaml.safe_load((scenario / "molecule.yml").read_text())
        self.groups: dict[str, list[str]] = {}
        for platform in molecule["platforms"]:
            for group in platform.get("groups", []):
                self.groups.setdefault(group, []).append(platform["name"])
        self.vars: dict[str, Any] = yaml.safe_load(
            (scenario / "group_vars" / "all" / "site.yml").read_text()
        )
        self.site: str = self.vars["parley_site_names"][0]
        self.base = f"https://{self.site}"
        ARTIFACTS.mkdir(parents=True, exist_ok=True)

    def nginx_setting(self, name: str) -> Any:  # noqa: ANN401  (whatever the variable holds)
        """A variable of the nginx role as the fleet sets it: its group_vars, else the role's
        default."""
        defaults = self.scenario.parent.parent / "roles" / "nginx" / "defaults" / "main.yml"
        return self.vars.get(name, yaml.safe_load(defaults.read_text())[name])

    # --- hosts ------------------------------------------------------------------------------

    def hosts(self, group: str) -> list[str]:
        return list(self.groups.get(group, []))

    @property
    def site_hosts(self) -> list[str]:
        """Every host of the site, each once, in the order the groups are listed."""
        names: list[str] = []
        for group in SITE_GROUPS:
            names += [h for h in self.hosts(group) if h not in names]
        return names

    @property
    def all_hosts(self) -> list[str]:
        names: list[str] = []
        for members in self.groups.values():
            names += [h for h in members if h not in names]
        return names

    @property
    def probe(self) -> str:
        return self.hosts("probe")[0]

    @property
    def lb(self) -> str:
        return self.hosts("lb")[0]

    @property
    def app_host(self) -> str:
        """The web host whose Django shell answers the audit's database questions."""
        return self.hosts("web")[0]

    def address(self, host: str) -> str:
        inspect = subprocess.run(
            ["docker", "inspect", "-f", "{{range .NetworkSettings.Networks}}{{.IPAddress}} {{end}}",
             host],
            capture_output=True, text=True, check=True,
        )  # fmt: skip
        return inspect.stdout.split()[0]

    def running(self, host: str) -> bool:
        inspect = subprocess.run(
            ["docker", "inspect", "-f", "{{.State.Running}}", host],
            capture_output=True, text=True, check=False,
        )  # fmt: skip
        return inspect.stdout.strip() == "true"

    # --- commands ---------------------------------------------------------------------------

    def sh(
        self,
        host: str,
        script: str,
        *,
        stdin: str | None = None,
        timeout: float = 120,
        env: dict[str, str] | None = None,
    ) -> Run:
        """Run a shell script in a container. `env` values travel in docker's API, never on a
        command line (where `ps` or a log could show them)."""
        command = ["docker", "exec", "-i"] if stdin is not None else ["docker", "exec"]
        for name in env or {}:
            command += ["-e", name]
        command += [host, "sh", "-c", script]
        try:
            done = subprocess.run(
                command,
                input=stdin,
                capture_output=True,
                text=True,
                timeout=timeout,
                check=False,
                env={**os.environ, **(env or {})},
            )
        except subprocess.TimeoutExpired as expired:
            return Run(124, _text(expired.stdout), f"timed out after {timeout} s")
        return Run(done.returncode, done.stdout, done.stderr)

    def check(
        self, host: str, script: str, *, stdin: str | None = None, timeout: float = 120
    ) -> str:
        run = self.sh(host, script, stdin=stdin, timeout=timeout)
        if not run.ok:
            raise RuntimeError(f"{host}: {script!r} failed ({run.rc}): {run.output[-2000:]}")
        return run.stdout

    def copy_to(self, host: str, local: Path, remote: str) -> None:
        subprocess.run(
            ["docker", "cp", str(local), f"{host}:{remote}"], check=True, capture_output=True
        )

    def django(
        self,
        code: str,
        host: str | None = None,
        timeout: float = 180,
        env: dict[str, str] | None = None,
    ) -> Any:  # noqa: ANN401  (whatever JSON the code emitted)
        """Run Python in the app's Django shell on an app host, as the services run (settings,
        user, release), and return what it printed with `emit(...)` (JSON). The code travels on
        stdin: a shell command line would end up in the host's journal. `env` names must start
        with PARLEY_ (parley-run passes only those on)."""
        program = (
            "import json\n"
            f"def emit(value):\n    print({JSON_MARK!r} + json.dumps(value), flush=True)\n" + code
        )
        run = self.sh(
            host or self.app_host,
            "parley-manage shell --verbosity 0 --command "
            + shlex.quote("import sys; exec(sys.stdin.read())"),
            stdin=program,
            timeout=timeout,
            env=env,
        )
        for line in run.stdout.splitlines():
            if line.startswith(JSON_MARK):
                return json.loads(line[len(JSON_MARK) :])
        raise RuntimeError(f"Django shell on {host or self.app_host} failed: {run.output[-3000:]}")

    # --- what the audit knows of the site ---------------------------------------------------

    @cached_property
    def secrets(self) -> dict[str, str]:
        """The site's secret values by variable name (test values here; Vault in production).
        Templated values only repeat one of these."""
        return {
            name: str(value)
            for name, value in self.vars.items()
            if SECRET_NAME.search(name) and isinstance(value, str) and "{{" not in value and value
        }

    @cached_property
    def admin(self) -> tuple[str, str]:
        return self.vars["app_admin_username"], self.vars["app_admin_password"]

    @cached_property
    def lb_address(self) -> str:
        return self.address(self.lb)

    def root_pem(self) -> Path:
        """Pebble's root on the probe and here: the one CA the audit's clients trust."""
        local = ARTIFACTS / "pebble-root.pem"
        if not self.sh(self.probe, f"test -s {PROBE_ROOT}").ok:
            self.check(
                self.probe,
                "curl -sSf --cacert /root/pebble-listener-ca.crt "
                f"https://{self.hosts('acme')[0]}:15000/roots/0 -o {PROBE_ROOT}",
            )
        local.write_text(self.check(self.probe, f"cat {PROBE_ROOT}"))
        return local

    def wait_until_booted(self, host: str, seconds: float = 120) -> bool:
        deadline = time.monotonic() + seconds
        while time.monotonic() < deadline:
            state = self.sh(host, "systemctl is-system-running --wait", timeout=seconds).stdout
            if state.strip() in {"running", "degraded"}:
                return True
            time.sleep(1)
        return False


def _text(value: bytes | str | None) -> str:
    if value is None:
        return ""
    return value.decode(errors="replace") if isinstance(value, bytes) else value
