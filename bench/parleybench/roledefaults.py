"""What the roles deploy by default, read from the roles themselves, so the harness measures
the site a sysadmin gets without setting anything (row 3's nginx, row 5's worker host).

A role whose defaults or template no longer read as expected stops the harness with a clear
error (the smoke runs this too), rather than letting it measure numbers of its own.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any

import yaml

from parleybench.paths import REPO_DIR

ROLES = REPO_DIR / "roles"
# The nginx role derives the workers' descriptor limit from their connections.
RLIMIT = re.compile(
    r"worker_rlimit_nofile \{\{ nginx_worker_connections \* (?P<per>\d+) \+ (?P<extra>\d+) \}\};"
)
TLS_LISTEN = re.compile(r"^\s*listen 443 ssl[^;]*;", re.MULTILINE)


def defaults(role: str) -> dict[str, Any]:
    path = ROLES / role / "defaults" / "main.yml"
    return yaml.safe_load(path.read_text()) or {}


@dataclass(frozen=True)
class NginxDefaults:
    worker_connections: int
    worker_rlimit_nofile: int
    reuseport: bool


def nginx() -> NginxDefaults:
    connections = int(defaults("nginx")["nginx_worker_connections"])
    main = (ROLES / "nginx" / "templates" / "nginx.conf.j2").read_text()
    match = RLIMIT.search(main)
    if match is None:
        raise RuntimeError("roles/nginx/templates/nginx.conf.j2: worker_rlimit_nofile not found")
    site = (ROLES / "nginx" / "templates" / "parley.conf.j2").read_text()
    listens = TLS_LISTEN.findall(site)
    if not listens:
        raise RuntimeError("roles/nginx/templates/parley.conf.j2: no `listen 443 ssl` line")
    return NginxDefaults(
        worker_connections=connections,
        worker_rlimit_nofile=connections * int(match["per"]) + int(match["extra"]),
        reuseport=any("reuseport" in line for line in listens),
    )


def celery_replies_in_flight(fallback: int) -> tuple[int, str]:
    """Replies in flight per worker host as the celery role deploys it, and where it came from.

    Until the role names it (`celery_replies_in_flight`, issue #19), the plan's figure stands.
    """
    value = defaults("celery").get("celery_replies_in_flight")
    if value is None:
        return fallback, "the plan's figure: roles/celery has no celery_replies_in_flight yet"
    return int(value), "roles/celery/defaults/main.yml"
