"""The app tier (app, gunicorn, celery roles) against real PostgreSQL and Redis, seen from the
probe standing where the lb would."""

from __future__ import annotations

import json
import os
import re
import shlex
import shutil
import subprocess
import time
import uuid
from pathlib import Path

import pytest
import yaml
from conftest import host, hosts_in, run_playbook
from testinfra.host import Host

SITE = "chat.parley.test"
SCENARIO = Path(__file__).resolve().parent.parent
PROJECT = Path(os.environ["MOLECULE_PROJECT_DIRECTORY"])
VARS = yaml.safe_load((SCENARIO / "vars.yml").read_text())
UNITS = ["parley-web.service", "parley-worker@default.service", "parley-beat.service"]


@pytest.fixture(scope="session")
def app() -> Host:
    return host(hosts_in("targets")[0])


@pytest.fixture(scope="session")
def site(probe: Host, app: Host) -> str:
    """The site's name, resolving on the probe to the app host (as nginx would reach it)."""
    address = app.check_output("hostname -I").split()[0]
    # /etc/hosts is bind-mounted by Docker: rewrite it in place, never replace it.
    update = probe.run(
        f"{{ grep -v ' {SITE}$' /etc/hosts; echo '{address} {SITE}'; }} > /tmp/hosts.new"
        " && cat /tmp/hosts.new > /etc/hosts"
    )
    assert update.rc == 0, update.stderr
    return f"http://{SITE}:8000"


def chat(probe: Host, site: str, *messages: str, model: str = "fake-model") -> dict:
    sends = " ".join(f"--message '{m}'" for m in messages)
    run = probe.run(
        f"chatprobe --base {site} --forwarded-proto https --user {VARS['app_admin_username']} "
        f"--password {VARS['app_admin_password']} --model {model} {sends}"
    )
    assert run.rc == 0, run.stderr
    return json.loads(run.stdout)


def django(app: Host, code: str) -> str:
    """Run Python in the app's Django shell on the app host, as the app runs."""
    run = app.run(f"parley-manage shell --verbosity 0 --command {shlex.quote(code)}")
    assert run.rc == 0, run.stderr
    return run.stdout.strip()


def test_health_endpoints_answer_through_the_web_port(probe: Host, site: str) -> None:
    assert probe.check_output(f"curl -s -o /dev/null -w '%{{http_code}}' {site}/healthz") == "200"
    ready = probe.run(f"curl -s -w '\\n%{{http_code}}' {site}/readyz")
    body, status = ready.stdout.rsplit("\n", 1)
    assert status == "200", body
    checks = json.loads(body)
    assert checks, body


def test_anonymous_websocket_handshake_is_refused(probe: Host, site: str) -> None:
    conversation = uuid.uuid4()
    status = probe.check_output(
        f"curl -s -o /dev/null -w '%{{http_code}}' --http1.1 -H 'Connection: Upgrade' "
        f"-H 'Upgrade: websocket' -H 'Sec-WebSocket-Version: 13' "
        f"-H 'Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==' -H 'Origin: https://{SITE}' "
        f"-H 'X-Forwarded-Proto: https' {site}/ws/chat/{conversation}/"
    )
    assert status == "403"


def test_a_message_comes_back_as_a_reply_streamed_by_the_worker(
    probe: Host, app: Host, site: str
) -> None:
    before = json.loads(probe.check_output("curl -s http://127.0.0.1:8100/_fakellm/requests"))
    result = chat(probe, site, "Hello from the app-tier scenario")
    (reply,) = result["replies"]
    assert reply["status"] == "complete", reply
    assert reply["deltas"] >= 2 and reply["text_matches"], reply
    assert reply["seqs"] == list(range(1, len(reply["seqs"]) + 1))
    after = json.loads(probe.check_output("curl -s http://127.0.0.1:8100/_fakellm/requests"))
    assert len(after) > len(before), "the fake model never saw the request"
    stored = django(
        app,
        "from chat.models import Message; "
        f"m = Message.objects.get(id={reply['reply_id']}); print(m.status, len(m.content))",
    )
    assert stored == f"complete {len(reply['content'])}"


def test_the_worker_answers_celery_inspect_ping(app: Host) -> None:
    ping = app.run("parley-celery inspect ping --timeout 10")
    assert ping.rc == 0, ping.stderr
    assert "pong" in ping.stdout


def test_beat_fires_a_schedule_within_its_interval(app: Host) -> None:
    def runs() -> int:
        return int(
            django(
                app,
                "from django_celery_beat.models import PeriodicTask; "
                "print(PeriodicTask.objects.get(name='parley: reap stuck replies')"
                ".total_run_count)",
            )
        )

    first = runs()
    deadline = time.monotonic() + 3 * VARS["app_extra_settings"]["REAPER_INTERVAL"] + 20
    while time.monotonic() < deadline:
        if runs() > first:
            return
        time.sleep(2)
    pytest.fail("Beat did not send the reaper within three of its intervals")


@pytest.mark.parametrize("unit", UNITS)
def test_units_pass_the_sandbox_bar(app: Host, unit: str) -> None:
    analysis = app.run(f"systemd-analyze security --threshold=20 --no-pager {unit}")
    exposure = re.search(r"Overall exposure level for \S+: ([0-9.]+)", analysis.stdout)
    assert exposure, analysis.stdout + analysis.stderr
    print(f"{unit}: exposure {exposure.group(1)}")
    assert analysis.rc == 0 and float(exposure.group(1)) <= 2.0, analysis.stdout


def _current_release(app: Host) -> str:
    return Path(app.check_output("readlink /srv/parley/current")).name


def _web_pid(app: Host) -> str:
    return app.check_output("systemctl show --property MainPID --value parley-web.service")


def test_a_new_release_deploys_without_a_failed_request(
    probe: Host, app: Host, site: str, tmp_path: Path
) -> None:
    old_release, old_pid = _current_release(app), _web_pid(app)
    changed = tmp_path / "app"
    shutil.copytree(
        PROJECT / "app",
        changed,
        ignore=shutil.ignore_patterns(
            ".venv", "__pycache__", ".artifacts", ".state", "staticfiles"
        ),
    )
    with (changed / "chat" / "__init__.py").open("a") as marker:
        marker.write(f"# release marker {uuid.uuid4()}\n")

    probe.run("rm -f /tmp/loop.stop /tmp/loop.json")
    loop = probe.run(
        "systemd-run --unit httploop --collect /usr/bin/python3 /usr/local/bin/httploop "
        f"--url {site}/healthz --url {site}/login/ --header 'X-Forwarded-Proto: https' "
        "--stop /tmp/loop.stop --out /tmp/loop.json --max-requests 200000 --max-seconds 900"
    )
    assert loop.rc == 0, loop.stderr
    time.sleep(2)
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
    time.sleep(2)
    probe.run("touch /tmp/loop.stop")
    for _ in range(60):
        if probe.file("/tmp/loop.json").exists:
            break
        time.sleep(1)
    assert deploy.returncode == 0, deploy.stdout[-3000:] + deploy.stderr[-3000:]
    report = json.loads(probe.file("/tmp/loop.json").content_string)
    print(
        f"requests during the deploy: {report['requests']} in {report['seconds']} s, "
        f"statuses {report['statuses']}"
    )
    assert report["requests"] > 50, report
    assert report["failures"] == [], report
    assert _current_release(app) != old_release
    assert _web_pid(app) != old_pid, "the web tier was not restarted onto the new release"


def test_rollback_restores_the_previous_release(app: Host, site: str, probe: Host) -> None:
    releases = app.check_output(
        "for f in /srv/parley/releases/*/.complete; do echo $(stat -c %Y $f) $(dirname $f); done"
        " | sort -n | awk '{print $2}'"
    ).split()
    assert len(releases) >= 2, "the deploy test leaves two releases to choose from"
    current = _current_release(app)
    previous = Path(releases[releases.index(f"/srv/parley/releases/{current}") - 1]).name
    run = run_playbook(str(PROJECT / "playbooks" / "rollback.yml"), extra_vars=VARS)
    assert run.rc == 0, run.output
    assert _current_release(app) == previous
    assert probe.check_output(f"curl -s -o /dev/null -w '%{{http_code}}' {site}/readyz") == "200"


INVALID_INPUT = [
    pytest.param(
        {"gunicorn_workers": -1},
        None,
        "gunicorn",
        "Check the worker count",
        "gunicorn_workers must be 1 or more",
        id="negative-worker-count",
    ),
    pytest.param(
        {},
        {"beat": {"hosts": {"phantom-beat": None}}},
        "celery",
        "Check that exactly one host runs Beat",
        "holds 2",
        id="two-beat-hosts",
    ),
    pytest.param(
        {"app_database_name": "parley db"},
        None,
        "app",
        "Check the database settings",
        "plain SQL names",
        id="database-name-with-a-space",
    ),
]


@pytest.mark.parametrize(
    ("bad_vars", "inventory", "role", "failing_check", "message"), INVALID_INPUT
)
def test_invalid_input_fails_before_any_change(
    app: Host, bad_vars: dict, inventory: dict | None, role: str, failing_check: str, message: str
) -> None:
    target = hosts_in("targets")[0]
    gather = {
        "name": "Gather the facts of the hosts",
        "hosts": "all:!phantom-beat",
        "gather_facts": True,
    }
    play = {
        "name": f"Apply {role} with invalid input",
        "hosts": target,
        "vars": VARS,
        "roles": [{"role": role}],
    }
    snapshot = "find /etc /srv -xdev -printf '%p %s %T@\\n' | sort | sha256sum"
    before = app.check_output(snapshot)
    run = run_playbook([gather, play], extra_vars=bad_vars, extra_inventory=inventory)
    assert run.rc != 0, run.output
    assert run.failed_tasks and failing_check in run.failed_tasks[0], run.failed_tasks
    assert message in run.messages[0], run.messages
    assert run.stats[target]["changed"] == 0
    assert app.check_output(snapshot) == before
