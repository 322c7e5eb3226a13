"""The app tier (app, gunicorn, celery roles) against real PostgreSQL and Redis, on Debian 12
and Debian 13 at once, seen from the probe standing where the lb would.

Every per-host proof takes the `target` argument (each app host). The deploy and the
rollback restart the services of both app hosts, so they come last and first wait until every
earlier test has finished, on whichever xdist worker it ran.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import shlex
import subprocess
import tempfile
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
import yaml
from conftest import add_to_summary, changed_app_copy, django, host, hosts_in, run_playbook
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
BEAT = hosts_in("beat")[0]
# The units each app host runs, by the group that puts them there.
UNITS = {
    "web": "parley-web.service",
    "worker": "parley-worker@default.service",
    "beat": "parley-beat.service",
}
SANDBOXED = [
    pytest.param(name, unit, id=f"{name}-{unit}", marks=pytest.mark.xdist_group(name=name))
    for name in hosts_in("targets")
    for group, unit in UNITS.items()
    if name in hosts_in(group)
]
# Where each test leaves a mark when it ends (one folder per pytest run, shared by its xdist
# workers), and how long a fenced test waits for the earlier ones.
FINISHED = Path(tempfile.gettempdir()) / (
    "parley-app-tier-" + os.environ.get("PYTEST_XDIST_TESTRUNUID", uuid.uuid4().hex)
)
FENCE_TIMEOUT = 900


@pytest.fixture(autouse=True)
def _leave_a_mark_when_done(request: pytest.FixtureRequest) -> Iterator[None]:
    yield
    FINISHED.mkdir(exist_ok=True)
    (FINISHED / hashlib.sha256(request.node.nodeid.encode()).hexdigest()).touch()


@pytest.fixture
def after_every_earlier_test(request: pytest.FixtureRequest) -> None:
    """Wait until every test before this one (in file order) has finished, on any xdist
    worker: what follows restarts the services of both app hosts."""
    items = request.session.items
    earlier = items[: items.index(request.node)]
    deadline = time.monotonic() + FENCE_TIMEOUT
    while True:
        running = [
            item.nodeid
            for item in earlier
            if not (FINISHED / hashlib.sha256(item.nodeid.encode()).hexdigest()).exists()
        ]
        if not running:
            return
        if time.monotonic() > deadline:
            pytest.fail(f"earlier tests still unfinished after {FENCE_TIMEOUT} s: {running}")
        time.sleep(1)


@pytest.fixture(scope="session")
def host_names(probe: Host) -> dict[str, str]:
    """Each app host's own name (<host>.chat.parley.test), resolving on the probe to that host,
    as nginx would reach it. Written once, under a lock, whichever xdist worker comes first:
    /etc/hosts is never rewritten while the other worker's tests resolve names in it."""
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


@pytest.fixture
def site(host_names: dict[str, str], target: str) -> str:
    """The web port of the app host under test, under its own name."""
    return f"http://{host_names[target]}:8000"


@pytest.fixture
def app(target: str) -> Host:
    return host(target)


@pytest.fixture
def person(app: Host, target: str) -> tuple[str, str]:
    """A user that only this host's tests sign in as. The site hands a person's untouched
    conversation out again rather than a new one: the two hosts' tests, run at once as one
    user, were given the same conversation, and the later message was refused as busy."""
    name, password = f"probe-{target}", uuid.uuid4().hex
    django(
        app,
        "from django.contrib.auth import get_user_model; "
        f"u, _ = get_user_model().objects.get_or_create(username={name!r}); "
        f"u.set_password({password!r}); u.save()",
    )
    return name, password


def chat(
    probe: Host, site: str, person: tuple[str, str], *messages: str, model: str = "fake-model"
) -> dict:
    sends = " ".join(f"--message '{m}'" for m in messages)
    user, password = person
    run = probe.run(
        f"chatprobe --base {site} --forwarded-proto https --user {user} "
        f"--password {password} --model {model} {sends}"
    )
    assert run.rc == 0, run.stderr
    return json.loads(run.stdout)


def test_health_endpoints_answer_through_the_web_port(probe: Host, site: str) -> None:
    assert probe.check_output(f"curl -s -o /dev/null -w '%{{http_code}}' {site}/healthz") == "200"
    ready = probe.run(f"curl -s -w '\\n%{{http_code}}' {site}/readyz")
    body, status = ready.stdout.rsplit("\n", 1)
    assert status == "200", body
    checks = json.loads(body)["checks"]
    # 200 needs only PostgreSQL and Redis; the model endpoint is reported, so check it too.
    assert set(checks) >= {"database", "redis_channel_layer", "redis_broker", "broker", "llm"}
    assert all(check["ok"] for check in checks.values()), body


def test_anonymous_websocket_handshake_is_refused(probe: Host, site: str) -> None:
    conversation = uuid.uuid4()
    origin = site.removeprefix("http://").split(":")[0]
    status = probe.check_output(
        f"curl -s -o /dev/null -w '%{{http_code}}' --http1.1 -H 'Connection: Upgrade' "
        f"-H 'Upgrade: websocket' -H 'Sec-WebSocket-Version: 13' "
        f"-H 'Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==' -H 'Origin: https://{origin}' "
        f"-H 'X-Forwarded-Proto: https' {site}/ws/chat/{conversation}/"
    )
    assert status == "403"


def test_a_message_comes_back_as_a_reply_streamed_by_a_worker(
    probe: Host, app: Host, site: str, target: str, person: tuple[str, str]
) -> None:
    message = f"Hello from the app-tier scenario through {target} {uuid.uuid4().hex[:8]}"
    result = chat(probe, site, person, message)
    (reply,) = result["replies"]
    # The code and text first: pytest shortens a long dict and the reason would be cut off.
    assert reply["status"] == "complete", (reply.get("code"), reply.get("content"), reply)
    assert reply["deltas"] >= 2 and reply["text_matches"], reply
    assert reply["seqs"] == list(range(1, len(reply["seqs"]) + 1))
    seen = json.loads(probe.check_output("curl -s http://127.0.0.1:8100/_fakellm/requests"))
    assert any(message in record["prompt"] for record in seen), "the model never saw it"
    stored = django(
        app,
        "from chat.models import Message; "
        f"m = Message.objects.get(id={reply['reply_id']}); print(m.status, len(m.content))",
    )
    assert stored == f"complete {len(reply['content'])}"


def _replies_finished(app: Host) -> float:
    """Complete replies the host's worker has streamed, from its own metrics."""
    metrics = app.check_output(
        "python3 -c 'import urllib.request; "
        'print(urllib.request.urlopen("http://127.0.0.1:9809/metrics").read().decode())\''
    )
    return sum(
        float(line.rsplit(" ", 1)[1])
        for line in metrics.splitlines()
        if line.startswith("parley_replies_total{") and 'status="complete"' in line
    )


def test_the_worker_of_the_host_streams_replies(
    probe: Host, app: Host, site: str, person: tuple[str, str]
) -> None:
    """Both hosts' workers take from one queue: send replies until this host's worker has
    finished one."""
    before = _replies_finished(app)
    for _ in range(8):
        chat(probe, site, person, "Which worker streams this?")
        if _replies_finished(app) > before:
            return
    pytest.fail("the worker of this host finished no reply out of eight")


def test_the_worker_answers_celery_inspect_ping(app: Host) -> None:
    # Each host's own worker: any worker on the broker would answer an undirected ping.
    node = f"default@{app.check_output('hostname')}"
    ping = app.run(f"parley-celery inspect ping --timeout 10 --destination {node}")
    assert ping.rc == 0, ping.stdout + ping.stderr
    assert f"{node}: OK" in ping.stdout and "pong" in ping.stdout, ping.stdout


def test_beat_runs_on_the_beat_host_only(app: Host, target: str) -> None:
    state = app.run("systemctl is-active parley-beat.service").stdout.strip()
    assert state == ("active" if target == BEAT else "inactive"), state


@pytest.mark.xdist_group(name=BEAT)
def test_beat_fires_a_schedule_within_its_interval() -> None:
    beat = host(BEAT)

    def runs() -> int:
        return int(
            django(
                beat,
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


def _app_root(name: str) -> str:
    return HOST_VARS.get(name, {}).get("app_root", "/srv/parley")


@pytest.mark.parametrize(("name", "unit"), SANDBOXED)
def test_units_run_the_release_under_the_hosts_app_root(name: str, unit: str) -> None:
    """The web, worker and Beat units follow app_root and app_config_dir, which the play hands
    them from the app role: a host that moved both still answers (the tests above, from the
    probe), and from the release and settings under its own paths."""
    app = host(name)
    root = _app_root(name)
    config = HOST_VARS.get(name, {}).get("app_config_dir", "/etc/parley")
    directory = app.check_output(f"systemctl show --property WorkingDirectory --value {unit}")
    settings = app.check_output(f"systemctl show --property EnvironmentFiles --value {unit}")
    assert directory == f"{root}/current", directory
    assert f"{config}/parley.env " in settings, settings
    assert app.file(f"{root}/current/.complete").exists


@pytest.mark.parametrize(("name", "unit"), SANDBOXED)
def test_units_pass_the_sandbox_bar(name: str, unit: str) -> None:
    analysis = host(name).run(f"systemd-analyze security --threshold=20 --no-pager {unit}")
    exposure = re.search(r"Overall exposure level for \S+: ([0-9.]+)", analysis.stdout)
    assert exposure, analysis.stdout + analysis.stderr
    add_to_summary(f"{name} systemd-analyze security {unit}: exposure {exposure.group(1)}")
    assert analysis.rc == 0 and float(exposure.group(1)) <= 2.0, analysis.stdout


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
    bad_vars: dict, inventory: dict | None, role: str, failing_check: str, message: str
) -> None:
    target = hosts_in("targets")[0]
    app = host(target)
    gather = {
        "name": "Gather the facts of the hosts",
        "hosts": "all:!phantom-beat",
        "gather_facts": True,
    }
    play = {
        "name": f"Apply {role} with invalid input",
        "hosts": target,
        "vars_files": [APP_EXPORTS],
        "vars": VARS,
        "pre_tasks": [
            {
                "name": "Learn where the app lives",
                "ansible.builtin.import_role": {"name": "app", "tasks_from": "exports"},
            }
        ],
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


def _current_release(name: str) -> str:
    return Path(host(name).check_output(f"readlink {_app_root(name)}/current")).name


def _web_pid(app: Host) -> str:
    return app.check_output("systemctl show --property MainPID --value parley-web.service")


@pytest.mark.usefixtures("after_every_earlier_test")
def test_a_new_release_deploys_without_a_failed_request(
    probe: Host, host_names: dict[str, str], tmp_path: Path
) -> None:
    apps = {name: host(name) for name in host_names}
    old = {name: (_current_release(name), _web_pid(app)) for name, app in apps.items()}
    changed = changed_app_copy(tmp_path)

    urls = " ".join(
        f"--url http://{site}:8000/healthz --url http://{site}:8000/login/"
        for site in host_names.values()
    )
    probe.run("rm -f /tmp/loop.stop /tmp/loop.json")
    loop = probe.run(
        f"systemd-run --unit httploop --collect /usr/bin/python3 /usr/local/bin/httploop {urls} "
        "--header 'X-Forwarded-Proto: https' "
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
    new = {name: _current_release(name) for name in apps}
    assert len(set(new.values())) == 1, f"the app hosts run different releases: {new}"
    for name, app in apps.items():
        release, pid = old[name]
        assert new[name] != release, f"{name} stayed on release {release}"
        assert _web_pid(app) != pid, f"the web tier of {name} was not restarted"


@pytest.mark.usefixtures("after_every_earlier_test")
def test_rollback_restores_the_previous_release(probe: Host, host_names: dict[str, str]) -> None:
    previous: dict[str, str] = {}
    for name in host_names:
        app = host(name)
        root = _app_root(name)
        releases = app.check_output(
            f"for f in {root}/releases/*/.complete; do echo $(stat -c %Y $f) $(dirname $f);"
            " done | sort -n | awk '{print $2}'"
        ).split()
        assert len(releases) >= 2, f"{name}: the deploy test leaves two releases to choose from"
        current = releases.index(f"{root}/releases/{_current_release(name)}")
        assert current >= 1, f"{name}: the current release is the oldest one"
        previous[name] = Path(releases[current - 1]).name
    run = run_playbook(str(PROJECT / "playbooks" / "rollback.yml"), extra_vars=VARS)
    assert run.rc == 0, run.output
    for name, site in host_names.items():
        assert _current_release(name) == previous[name]
        ready = f"curl -s -o /dev/null -w '%{{http_code}}' http://{site}:8000/readyz"
        assert probe.check_output(ready) == "200", name
