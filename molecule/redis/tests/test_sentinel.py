"""The optional Sentinel layout (group redis_ha): replication, Sentinel's answers to the app,
a real failover, the old primary coming back as a replica, and the role re-run afterwards
changing nothing. Seen from the app host (redis-web) and the outsider (the probe).

The converge step leaves the pair out (to keep the scenario short); this module converges it
first, with the play of converge.yml (in --check mode first, as the scenario does for its
other hosts), while test_redis.py runs on the other worker."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import pytest
import yaml
from conftest import host, hosts_in, port_states, run_playbook, wait_until
from redis_client import (
    ADMIN,
    BROKER,
    BROKER_PORT,
    CONVERGE,
    CONVERGE_VARS,
    LAYER,
    LAYER_PORT,
    check_mode_run,
    redis,
)
from testinfra.host import Host

SENTINEL_PORT = 26379
BROKER_MASTER = "parley-broker"
LAYER_MASTER = "parley-layer"
# Seconds to wait for what takes a few seconds here (a write reaching a replica, the old
# primary coming back as a replica).
DEADLINE = 120
SCENARIO = Path(__file__).resolve().parent.parent


@pytest.fixture(scope="module", autouse=True)
def converged_pair() -> None:
    """The Sentinel pair, converged before this module's first test (the module runs on one
    xdist worker, beside test_redis.py, its tests in file order)."""
    play = yaml.safe_load(CONVERGE.read_text())[0]
    play["hosts"] = "redis_ha"
    play["vars_files"] = [str(CONVERGE.parent / name) for name in play["vars_files"]]
    # As the scenario does for the other hosts: --check on the fresh hosts first.
    check = check_mode_run([play])
    assert check.rc == 0, check.output or check.failed_tasks or check.messages
    run = run_playbook([play])
    assert run.rc == 0, run.output or run.failed_tasks or run.messages


@pytest.fixture(scope="module")
def web() -> Host:
    outside = [name for name in hosts_in("web") if name not in hosts_in("targets")]
    return host(outside[0])


@pytest.fixture(scope="module")
def pair() -> dict[str, str]:
    """The Sentinel hosts by private address."""
    return {
        host(name).check_output("hostname -I").split()[0]: name for name in hosts_in("redis_ha")
    }


def primary_of(web: Host, sentinel_host: str, master: str) -> str:
    reply = redis(
        web,
        sentinel_host,
        SENTINEL_PORT,
        "SENTINEL",
        "get-master-addr-by-name",
        master,
        login=BROKER,
    )
    return reply.splitlines()[0] if reply else ""


def wait_for(what: str, check: Callable[[], bool], seconds: float = DEADLINE) -> None:
    wait_until(what, check, seconds, f"DEADLINE ({seconds:.0f} s) for what takes seconds here")


def failover_deadline() -> float:
    """Seconds a failover may take by the pair's settings (molecule.yml): the primary is
    judged down after redis_sentinel_down_after_ms, and a failover that stalls is tried again
    after twice redis_sentinel_failover_timeout_ms; DEADLINE more for the polls from here."""
    settings = yaml.safe_load((SCENARIO / "molecule.yml").read_text())["provisioner"]["inventory"][
        "group_vars"
    ]["redis_ha"]
    down_after = settings["redis_sentinel_down_after_ms"] / 1000
    return down_after + 2 * settings["redis_sentinel_failover_timeout_ms"] / 1000 + DEADLINE


def test_sentinel_refuses_clients_that_do_not_log_in(web: Host) -> None:
    for name in hosts_in("redis_ha"):
        assert redis(web, name, SENTINEL_PORT, "PING").startswith("NOAUTH")
        assert redis(web, name, SENTINEL_PORT, "PING", login=BROKER) == "PONG"
        assert redis(web, name, SENTINEL_PORT, "PING", login=LAYER) == "PONG"


def test_app_users_may_ask_sentinel_but_not_command_it(web: Host, pair: dict[str, str]) -> None:
    for name in hosts_in("redis_ha"):
        for master in (BROKER_MASTER, LAYER_MASTER):
            assert primary_of(web, name, master) in pair
        for command in (
            ["SENTINEL", "FAILOVER", BROKER_MASTER],
            ["SENTINEL", "SET", BROKER_MASTER, "quorum", "1"],
            ["SENTINEL", "REMOVE", LAYER_MASTER],
            ["SENTINEL", "RESET", "*"],
        ):
            reply = redis(web, name, SENTINEL_PORT, *command, login=BROKER)
            assert reply.startswith("NOPERM"), f"{command}: {reply}"


def test_only_app_hosts_and_peers_get_through_the_firewall(probe: Host, web: Host) -> None:
    ports = [BROKER_PORT, LAYER_PORT, SENTINEL_PORT]
    for name in hosts_in("redis_ha"):
        assert port_states(web, name, ports) == {port: "open" for port in ports}
        assert port_states(probe, name, ports) == {port: "filtered" for port in ports}


def test_replicas_hold_what_was_written_to_the_primary(web: Host, pair: dict[str, str]) -> None:
    for port, master, login in (
        (BROKER_PORT, BROKER_MASTER, BROKER),
        (LAYER_PORT, LAYER_MASTER, LAYER),
    ):
        primary = pair[primary_of(web, hosts_in("redis_ha")[0], master)]
        (replica,) = [name for name in pair.values() if name != primary]
        key = f"parley:molecule:replicated-{port}"
        assert redis(web, primary, port, "SET", key, "on both", "EX", "600", login=login) == "OK"
        wait_for(
            f"{key} reaching {replica}",
            lambda: redis(web, replica, port, "GET", key, login=login) == "on both",  # noqa: B023
        )
        refused = redis(web, replica, port, "SET", key, "on one", login=login)
        assert refused.startswith("READONLY"), refused


def test_failover_and_the_old_primary_returning_as_a_replica(
    web: Host, pair: dict[str, str]
) -> None:
    first = hosts_in("redis_ha")[0]
    old_primary = pair[primary_of(web, first, BROKER_MASTER)]
    (new_primary,) = [name for name in pair.values() if name != old_primary]
    new_address = next(address for address, name in pair.items() if name == new_primary)
    queue = "parley:celery:molecule-failover"
    redis(web, old_primary, BROKER_PORT, "DEL", queue, login=BROKER)
    assert redis(web, old_primary, BROKER_PORT, "LPUSH", queue, "survives", login=BROKER) == "1"
    wait_for(
        "the task reaching the replica",
        lambda: redis(web, new_primary, BROKER_PORT, "LLEN", queue, login=BROKER) == "1",
    )

    server = host(old_primary)
    assert server.run("systemctl stop redis-server@broker.service").rc == 0
    try:
        for sentinel in pair.values():
            wait_for(
                f"the Sentinel on {sentinel} naming {new_primary} the broker's primary",
                lambda: primary_of(web, sentinel, BROKER_MASTER) == new_address,  # noqa: B023
                failover_deadline(),
            )
        assert redis(web, new_primary, BROKER_PORT, "RPOP", queue, login=BROKER) == "survives"
        assert redis(web, new_primary, BROKER_PORT, "LPUSH", queue, "new", login=BROKER) == "1"
    finally:
        assert server.run("systemctl start redis-server@broker.service").rc == 0

    def replicates_new_primary() -> bool:
        role = server.run(
            f"REDISCLI_AUTH={ADMIN.password} redis-cli -s /run/redis-broker/redis-server.sock "
            f"--user {ADMIN.user} ROLE"
        ).stdout.split()
        return role[:3] == ["slave", new_address, str(BROKER_PORT)]

    wait_for(f"{old_primary} coming back as a replica of {new_primary}", replicates_new_primary)
    wait_for(
        "the returned replica catching up",
        lambda: (
            redis(web, old_primary, BROKER_PORT, "LRANGE", queue, "0", "-1", login=BROKER) == "new"
        ),
    )

    # Re-running the role after the failover changes nothing and moves no primary back.
    play = {
        "name": "Apply redis again after a failover",
        "hosts": "redis_ha",
        "vars": {
            name: value for name, value in CONVERGE_VARS.items() if name.endswith("_password")
        },
        "roles": [{"role": "redis"}],
    }
    run = run_playbook([play])
    assert run.rc == 0, run.output or run.messages
    for name in pair.values():
        assert run.stats[name]["changed"] == 0, run.stats
    for sentinel in pair.values():
        assert primary_of(web, sentinel, BROKER_MASTER) == new_address
