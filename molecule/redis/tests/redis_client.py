"""redis-cli driven from a container of the scenario: how the tests talk to the instances."""

from __future__ import annotations

import shlex
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml
from testinfra.host import Host

# The converge playbook is the one place the test passwords and settings are written down.
CONVERGE = Path(__file__).resolve().parent.parent / "converge.yml"
CONVERGE_VARS: dict[str, Any] = yaml.safe_load(CONVERGE.read_text())[0]["vars"]

BROKER_PORT = 6379
LAYER_PORT = 6380
APP_USER = "parley"
ADMIN_USER = "admin"


@dataclass(frozen=True)
class Login:
    user: str
    password: str


BROKER = Login(APP_USER, CONVERGE_VARS["redis_broker_password"])
LAYER = Login(APP_USER, CONVERGE_VARS["redis_layer_password"])
ADMIN = Login(ADMIN_USER, CONVERGE_VARS["redis_admin_password"])


def redis(client: Host, target: str, port: int, *command: str, login: Login | None = None) -> str:
    """Run one command with redis-cli on `client` against `target` and return Redis's reply.

    redis-cli exits 0 when Redis answers with an error, so the reply text is what tells;
    a non-zero exit means there was no answer at all (refused, dropped, timed out).
    """
    auth = ""
    if login:
        user, password = shlex.quote(login.user), shlex.quote(login.password)
        auth = f"--user {user} --pass {password} --no-auth-warning "
    words = " ".join(shlex.quote(word) for word in command)
    result = client.run(f"timeout 30 redis-cli -h {target} -p {port} {auth}{words}")
    assert result.rc == 0, f"no answer from {target}:{port}: {result.stdout}{result.stderr}"
    return result.stdout.strip()
