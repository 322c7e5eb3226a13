"""The audit's cheap checks (audit/, the same code `make audit` runs) inside the fleet's verify:
TLS versions, reachability from outside and inside, unit sandboxing, Django's deploy check,
Redis and PostgreSQL access, a small WebSocket fuzz campaign, the HTTP abuse pass and secrets
in logs. The long parts (full port scans, testssl.sh, sslyze, thousands of fuzz frames, the
faults) are `make audit`'s alone.

The fleet's verify runs on one xdist worker, this module before test_fleet.py: these checks
scan every host and sign in from this machine, so they must not run while another test stops
a host or signs in from here.
"""

from __future__ import annotations

import pytest
from conftest import add_to_summary

from audit import security
from audit.fleet import Fleet
from audit.report import Check
from audit.web import Client

QUICK_FRAMES = 150


@pytest.fixture(scope="module")
def fleet() -> Fleet:
    return Fleet()


@pytest.fixture(scope="module")
def client(fleet: Fleet) -> Client:
    return security.signed_in_client(fleet)


def passes(check: Check) -> None:
    add_to_summary(f"audit {check.key}: {check.figure}")
    for detail in check.details:
        print(f"  {detail}")
    assert check.passed, "\n".join([check.figure, *check.details])


def test_only_tls_1_2_and_1_3_are_spoken(fleet: Fleet) -> None:
    passes(security.tls_versions(fleet))


def test_outsiders_reach_ssh_http_and_https_of_the_lb_and_ssh_elsewhere(fleet: Fleet) -> None:
    passes(security.outside_ports(fleet, full=False))


def test_the_app_hosts_alone_reach_postgresql_and_redis(fleet: Fleet) -> None:
    passes(security.inside_ports(fleet))


def test_every_unit_we_ship_passes_the_sandbox_bar(fleet: Fleet) -> None:
    passes(security.units(fleet))


def test_djangos_deploy_check_finds_nothing(fleet: Fleet) -> None:
    passes(security.deploy_check(fleet))


def test_redis_refuses_everyone_but_the_app_user_within_its_acl(fleet: Fleet) -> None:
    passes(security.redis_access(fleet))


def test_postgresql_takes_scram_over_tls_only(fleet: Fleet) -> None:
    passes(security.postgres_access(fleet))


def test_websocket_fuzz_gets_an_answer_for_every_bad_frame(fleet: Fleet, client: Client) -> None:
    passes(security.fuzz_campaign(fleet, client, frames=QUICK_FRAMES, sockets=5, floods=1))


def test_posts_without_csrf_token_are_refused(fleet: Fleet, client: Client) -> None:
    passes(security.csrf(fleet, client))


def test_websockets_from_foreign_origins_are_refused(fleet: Fleet, client: Client) -> None:
    passes(security.foreign_origin(fleet, client))


def test_password_guessing_is_throttled(fleet: Fleet, client: Client) -> None:
    passes(security.brute_force(fleet, client))


def test_every_answer_carries_hsts(fleet: Fleet, client: Client) -> None:
    passes(security.hsts(fleet, client))


def test_no_secret_reaches_a_log(fleet: Fleet) -> None:
    passes(security.secrets_in_logs(fleet))
