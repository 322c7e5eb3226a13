"""`python -m audit`: every check against the running fleet, then RELIABILITY.md.

    python -m audit                       # everything; writes RELIABILITY.md
    python -m audit --only fuzz,csrf      # some checks; prints them, writes no report
    python -m audit --quick               # the cheap checks (as the fleet's verify runs them)

The fleet must be up; unless --no-converge is given, one that is not is brought up first with
`molecule converge -s fleet` (create, prepare and converge: some ten minutes).
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import time
import traceback
from collections.abc import Callable
from pathlib import Path

from audit import faults, security
from audit.fleet import PROJECT, Fleet
from audit.report import Check, write
from audit.web import Client

NOTES = """
## How to read this

- Every figure comes from the run above; `make audit` repeats all of it (bringing the fleet up
  with `molecule converge -s fleet` first if it is not running), `make audit ONLY=<key>` one
  check (keys in the Reproduce column; `FRAMES=<n>` sizes the fuzz campaign).
- **Security** checks look from where an attacker would: the probe container (outside the
  site's private network), this machine (an Internet client of the lb, not exempt from its
  rate limits), and an app host for what only the app tier may reach.
- **Faults** run one at a time under a steady load of four open chats (one user each, a
  message every 4 s each, replies of 30 tokens) plus a request loop on `/healthz` and `/login/`,
  all through nginx from the probe. *Lost* counts messages that were neither refused with an
  error frame nor found in PostgreSQL (a refused message goes back into the page's composer).
  *Left unfinished* counts replies still pending or generating once the load drained.
  *Recovery* runs from the moment the fault was cleared (the service restarted or restored, or
  at once for a fault the fleet must absorb: a killed worker, a lost web host, a reload) until
  every chat had a reply complete again; with a message every 4 s, a few seconds is the floor.
- The fleet's secrets here are the scenario's test values (Ansible Vault in production); the
  secrets check greps for every one of them.

## What the first runs found, and the fixes

Every one of these failed a check above before it was fixed in the code (not in the check):

- **Password guessing was not throttled** (`brute-force`: 30 of 30 guesses reached the app):
  nginx rate-limited `/accounts/login/`, a page the app does not have; the app signs in at
  `/login/` and Django's admin at `/admin/login/`. Both are limited now, with one budget
  (commit 6650154).
- **WebSocket handshakes got HTTP 500 at every web worker restart** (`nginx-reload`, `fuzz`):
  each Gunicorn worker recycles after `max_requests`, and Uvicorn answered handshakes still
  under way with 500. The worker now lets them finish and closes them with 1012 (c69f99c).
- **Stopping Redis left replies "generating" and conversations busy** (`redis-restart`):
  a reply whose Redis failed mid-stream was never ended (the reaper would have, 11 minutes
  later), a lost cancel watch ended another as "cancelled", and a message sent while the
  broker was down was stored with a reply nobody would write, though the user was told
  `unavailable`. Now the reply ends as an error in PostgreSQL (retrying PostgreSQL for 30 s),
  a resume gets that end from the database, and a refused send changes nothing (131d561).
- **A model that hung kept the person waiting four minutes** (`llm`: the `[fakellm:hang]`
  reply ended as `timeout` after 243 s): a read timeout before the first token was retried
  three times, `PARLEY_LLM_TIMEOUT` (60 s) each. A model that took the request and went silent
  is not retried now; the reply ends after one timeout (94f69d6).
- **The first socket or message after a Redis restart or a quiet spell failed** (`fuzz`):
  pooled Redis connections built from a URL do not retry in redis-py, and Redis closed idle
  clients after 300 s. The app's pools retry now (131d561) and Redis keeps idle clients
  (8f0d692).
"""

SECURITY_ORDER = [
    "sslyze", "tls-versions", "nmap-outside", "nmap-inside", "units", "check-deploy",
    "redis-auth", "pg-hba", "fuzz", "csrf", "ws-origin", "brute-force", "hsts", "testssl",
]  # fmt: skip
QUICK = [
    "tls-versions", "nmap-outside", "nmap-inside", "units", "check-deploy", "redis-auth",
    "pg-hba", "fuzz", "csrf", "ws-origin", "brute-force", "hsts", "secrets-in-logs",
]  # fmt: skip
FAULT_KEYS = [fault.key for fault in faults.FAULTS]
ALL_KEYS = [*SECURITY_ORDER, *FAULT_KEYS, "secrets-in-logs"]


def fleet_is_up(fleet: Fleet) -> bool:
    if not all(fleet.running(host) for host in fleet.all_hosts):
        return False
    try:
        fleet.root_pem()
    except RuntimeError:
        return False
    return fleet.sh(
        fleet.probe,
        f"curl -sf -o /dev/null --cacert /root/pebble-root.pem {fleet.base}/healthz",
        timeout=30,
    ).ok


def converge() -> None:
    print("The fleet is not up: molecule converge -s fleet", flush=True)
    env = {**os.environ, "NO_COLOR": "1", "ANSIBLE_HOME": str(PROJECT / ".cache" / "ansible")}
    env["PATH"] = f"{PROJECT / '.venv' / 'bin'}:{env['PATH']}"
    subprocess.run(["molecule", "converge", "-s", "fleet"], cwd=PROJECT, env=env, check=True)


def main() -> int:  # noqa: PLR0915  (one list of steps, in order)
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--only", help=f"comma-separated checks: {', '.join(ALL_KEYS)}")
    parser.add_argument("--quick", action="store_true", help="the cheap checks only")
    parser.add_argument("--frames", type=int, help="frames the fuzz campaign draws")
    parser.add_argument("--out", default=str(PROJECT / "RELIABILITY.md"))
    parser.add_argument("--no-converge", action="store_true", help="fail if the fleet is down")
    args = parser.parse_args()
    keys = args.only.split(",") if args.only else QUICK if args.quick else ALL_KEYS
    unknown = set(keys) - set(ALL_KEYS)
    if unknown:
        parser.error(f"unknown checks: {', '.join(sorted(unknown))}")
    full = keys == ALL_KEYS
    frames = args.frames or (3000 if full or not args.quick else 150)
    started = time.monotonic()

    fleet = Fleet()
    if not fleet_is_up(fleet):
        if args.no_converge:
            print("The fleet is not up (molecule converge -s fleet).", file=sys.stderr)
            return 2
        converge()
    fleet.root_pem()
    checks: list[Check] = []
    client: Client | None = None

    def run(key: str, step: Callable[[], Check | list[Check]]) -> None:
        if key not in keys:
            return
        print(f"- {key} ...", flush=True)
        began = time.monotonic()
        try:
            result = step()
        except Exception as error:
            traceback.print_exc()
            result = Check("security", key, key, 0, f"could not run: {error}", False,
                           f"make audit ONLY={key}")  # fmt: skip
        for check in result if isinstance(result, list) else [result]:
            checks.append(check)
            print(f"  {check.key}: {check.verdict} ({time.monotonic() - began:.0f} s) "
                  f"{check.figure}", flush=True)  # fmt: skip
            for detail in check.details[:8]:
                print(f"    {detail}", flush=True)

    def signed_in() -> Client:
        nonlocal client
        if client is None:
            client = security.signed_in_client(fleet)
        return client

    if "testssl" in keys:
        security.start_testssl(fleet)
    run("sslyze", lambda: security.sslyze(fleet))
    run("tls-versions", lambda: security.tls_versions(fleet))
    run("nmap-outside", lambda: security.outside_ports(fleet, full=not args.quick))
    run("nmap-inside", lambda: security.inside_ports(fleet))
    run("units", lambda: security.units(fleet))
    run("check-deploy", lambda: security.deploy_check(fleet))
    run("redis-auth", lambda: security.redis_access(fleet))
    run("pg-hba", lambda: security.postgres_access(fleet))
    run("fuzz", lambda: security.fuzz_campaign(
        fleet, signed_in(), frames=frames, sockets=10 if frames >= 1000 else 5,
        floods=5 if frames >= 1000 else 1,
    ))  # fmt: skip
    run("csrf", lambda: security.csrf(fleet, signed_in()))
    run("ws-origin", lambda: security.foreign_origin(fleet, signed_in()))
    # Guessing passwords spends the sign-in budget; the HSTS check then sees nginx's 429.
    run(
        "brute-force",
        lambda: security.brute_force(fleet, signed_in(), settle=0 if args.quick else 40),
    )
    run("hsts", lambda: security.hsts(fleet, signed_in()))
    run("testssl", lambda: security.testssl(fleet))
    chosen_faults = [k for k in FAULT_KEYS if k in keys]
    if chosen_faults:
        print(f"- faults: {', '.join(chosen_faults)} ...", flush=True)
        checks += faults.campaign(fleet, chosen_faults)
    run("secrets-in-logs", lambda: security.secrets_in_logs(fleet))

    wall = time.monotonic() - started
    failed = [c for c in checks if not c.passed]
    print(f"\n{len(checks) - len(failed)} of {len(checks)} checks passed in {wall / 60:.1f} min")
    for check in failed:
        print(f"FAILED {check.key}: {check.figure}")
    if full:
        write(Path(args.out), checks, wall_seconds=wall, command="make audit", notes=NOTES)
        print(f"wrote {args.out}")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
