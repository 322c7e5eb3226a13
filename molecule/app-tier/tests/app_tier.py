"""What the app-tier scenario's two verify steps share: the site's names and variables, and
the names under which the probe reaches each app host."""

from __future__ import annotations

import os
import shlex
from pathlib import Path

import yaml
from conftest import host, hosts_in
from testinfra.host import Host

SITE = "chat.parley.test"
SCENARIO = Path(__file__).resolve().parent.parent
PROJECT = Path(os.environ["MOLECULE_PROJECT_DIRECTORY"])
VARS = yaml.safe_load((SCENARIO / "vars.yml").read_text())
# Variables the scenario gives single hosts (one app host lives away from the default app_root).
HOST_VARS = yaml.safe_load((SCENARIO / "molecule.yml").read_text())["provisioner"]["inventory"][
    "host_vars"
]
# What the app role tells gunicorn and celery, as every play that runs them passes it.
APP_EXPORTS = str(PROJECT / "playbooks" / "vars" / "app.yml")


def resolve_app_hosts(probe: Host) -> dict[str, str]:
    """Each app host's own name (<host>.chat.parley.test), resolving on the probe to that host,
    as nginx would reach it. Written under a lock, and only when it changes: /etc/hosts is
    never rewritten while another xdist worker's tests resolve names in it."""
    names = {name: f"{name}.{SITE}" for name in hosts_in("targets")}
    lines = [f"{host(name).check_output('hostname -I').split()[0]} {names[name]}" for name in names]
    stale = " ".join(f"-e ' {names[name]}'" for name in names)
    # /etc/hosts is bind-mounted by Docker: rewrite it in place, never replace it.
    script = (
        f"{{ grep -v -F {stale} /etc/hosts; printf '%s\\n' {' '.join(map(shlex.quote, lines))}; }}"
        " > /tmp/hosts.new"
        " && { cmp -s /tmp/hosts.new /etc/hosts || cat /tmp/hosts.new > /etc/hosts; }"
    )
    update = probe.run(f"flock /tmp/hosts.lock sh -c {shlex.quote(script)}")
    assert update.rc == 0, update.stderr
    return names


def app_root(name: str) -> str:
    """Where the app lives on a host: its own app_root, else the role's default."""
    return HOST_VARS.get(name, {}).get("app_root", "/srv/parley")


def current_release(name: str) -> str:
    return Path(host(name).check_output(f"readlink {app_root(name)}/current")).name


def web_pid(app: Host) -> str:
    return app.check_output("systemctl show --property MainPID --value parley-web.service")
