"""A new release and a rollback on both app hosts at once, the app-tier scenario's second
verify step: they restart every app service, so they run after every other test has ended,
in file order on one worker (the rollback needs the deploy's release)."""

from __future__ import annotations

import json
import os
import subprocess
from pathlib import Path

from app_tier import PROJECT, SCENARIO, VARS, app_root, current_release, resolve_app_hosts, web_pid
from conftest import changed_app_copy, host, run_playbook, wait_until
from testinfra.host import Host

# Requests the loop answers before the deploy starts and after it ended: the loop is proven
# to run on both sides of the deploy by what it counted, not by a sleep.
SIDE_REQUESTS = 10


def loop_requests(probe: Host) -> int:
    """Requests the loop on the probe has made so far (0 before its first)."""
    read = probe.run("cat /tmp/loop.progress")
    return int(read.stdout) if read.rc == 0 and read.stdout.strip() else 0


def test_a_new_release_deploys_without_a_failed_request(probe: Host, tmp_path: Path) -> None:
    """converge.yml with a changed app deploys a new release on both app hosts while a request
    loop runs against both: no request fails, and the loop made requests before, during and
    after the deploy (counted by the loop, whatever the machine's speed)."""
    host_names = resolve_app_hosts(probe)
    apps = {name: host(name) for name in host_names}
    old = {name: (current_release(name), web_pid(app)) for name, app in apps.items()}
    changed = changed_app_copy(tmp_path)

    urls = " ".join(
        f"--url http://{site}:8000/healthz --url http://{site}:8000/login/"
        for site in host_names.values()
    )
    probe.run("rm -f /tmp/loop.stop /tmp/loop.json /tmp/loop.progress")
    loop = probe.run(
        f"systemd-run --unit httploop --collect /usr/bin/python3 /usr/local/bin/httploop {urls} "
        "--header 'X-Forwarded-Proto: https' --progress /tmp/loop.progress "
        "--stop /tmp/loop.stop --out /tmp/loop.json --max-requests 1000000 --max-seconds 3600"
    )
    assert loop.rc == 0, loop.stderr
    wait_until("the loop's first requests", lambda: loop_requests(probe) >= SIDE_REQUESTS, 60,
               "SIDE_REQUESTS")  # fmt: skip
    before_deploy = loop_requests(probe)
    deploy = subprocess.run(
        [
            "ansible-playbook",
            "-i",
            os.environ["MOLECULE_INVENTORY_FILE"],
            str(SCENARIO / "converge.yml"),
            "--extra-vars",
            json.dumps({"app_local_path": str(changed)}),
        ],
        capture_output=True,
        text=True,
        check=False,
    )
    after_deploy = loop_requests(probe)
    wait_until(
        "the loop's requests after the deploy",
        lambda: loop_requests(probe) >= after_deploy + SIDE_REQUESTS,
        60,
        "SIDE_REQUESTS",
    )
    probe.run("touch /tmp/loop.stop")
    wait_until("the loop's report", lambda: probe.file("/tmp/loop.json").exists, 60,
               "one request's timeout, 30 s")  # fmt: skip
    assert deploy.returncode == 0, deploy.stdout[-3000:] + deploy.stderr[-3000:]
    report = json.loads(probe.file("/tmp/loop.json").content_string)
    print(
        f"requests during the deploy: {after_deploy - before_deploy} of {report['requests']} "
        f"in {report['seconds']} s, statuses {report['statuses']}"
    )
    assert report["failures"] == [], report
    assert after_deploy > before_deploy, "the loop made no request while the deploy ran"
    new = {name: current_release(name) for name in apps}
    assert len(set(new.values())) == 1, f"the app hosts run different releases: {new}"
    for name, app in apps.items():
        release, pid = old[name]
        assert new[name] != release, f"{name} stayed on release {release}"
        assert web_pid(app) != pid, f"the web tier of {name} was not restarted"


def test_rollback_restores_the_previous_release(probe: Host) -> None:
    host_names = resolve_app_hosts(probe)
    previous: dict[str, str] = {}
    for name in host_names:
        root = app_root(name)
        listing = host(name).check_output(
            f"for f in {root}/releases/*/.complete; do echo $(stat -c %Y $f) $(dirname $f);"
            " done | sort -n | awk '{print $2}'"
        )
        releases = listing.split()
        assert len(releases) >= 2, f"{name}: the deploy test leaves two releases to choose from"
        current = releases.index(f"{root}/releases/{current_release(name)}")
        assert current >= 1, f"{name}: the current release is the oldest one"
        previous[name] = Path(releases[current - 1]).name
    run = run_playbook(str(PROJECT / "playbooks" / "rollback.yml"), extra_vars=VARS)
    assert run.rc == 0, run.output
    for name, site in host_names.items():
        assert current_release(name) == previous[name]
        ready = f"curl -s -o /dev/null -w '%{{http_code}}' http://{site}:8000/readyz"
        assert probe.check_output(ready) == "200", name
