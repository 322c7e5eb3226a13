"""The app tier (app, gunicorn, celery roles) against real PostgreSQL and Redis, on Debian 12
and Debian 13 at once, seen from the probe standing where the lb would.

Every per-host proof takes the `target` argument (each app host). The deploy and the
rollback, which restart the services of both app hosts, are in ../release/, the scenario's
second verify step.
"""

from __future__ import annotations

import json
import re
import uuid

import pytest
from app_tier import APP_EXPORTS, HOST_VARS, VARS, app_root, resolve_app_hosts
from conftest import add_to_summary, django, host, hosts_in, patience, run_playbook, wait_until
from testinfra.host import Host

BEAT = hosts_in("beat")[0]
# The units each app host runs, by the group that puts them there.
UNITS = {
    "web": "parley-web.service",
    "worker": "parley-worker@default.service",
    "beat": "parley-beat.service",
}
SANDBOXED = [
    pytest.param(name, unit, id=f"{name}-{unit}")
    for name in hosts_in("targets")
    for group, unit in UNITS.items()
    if name in hosts_in(group)
]


@pytest.fixture(scope="session")
def host_names(probe: Host) -> dict[str, str]:
    return resolve_app_hosts(probe)


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
    finished one (its metric counts a reply once the task has ended, a moment after the
    client saw the reply end, so the count is read again before the next is sent)."""
    before = _replies_finished(app)

    def one_more_streamed_here() -> bool:
        if _replies_finished(app) > before:
            return True
        chat(probe, site, person, "Which worker streams this?")
        return False

    wait_until("a reply streamed by this host's worker", one_more_streamed_here, 300,
               "five minutes of replies, about one every few seconds")  # fmt: skip


def test_the_worker_answers_celery_inspect_ping(app: Host) -> None:
    """Each host's own worker: any worker on the broker would answer an undirected ping.
    The reply is awaited patience(10) s: a loaded worker answers late, not wrongly."""
    node = f"default@{app.check_output('hostname')}"
    wait = patience(10)
    ping = app.run(f"parley-celery inspect ping --timeout {wait:.0f} --destination {node}")
    assert ping.rc == 0, ping.stdout + ping.stderr
    assert f"{node}: OK" in ping.stdout and "pong" in ping.stdout, ping.stdout


def test_beat_runs_on_the_beat_host_only(app: Host, target: str) -> None:
    state = app.run("systemctl is-active parley-beat.service").stdout.strip()
    assert state == ("active" if target == BEAT else "inactive"), state


def test_beat_fires_a_schedule_within_its_interval() -> None:
    """The reaper's count of runs grows within three of its intervals (REAPER_INTERVAL in
    vars.yml), plus 20 s for Beat's tick and the Django shell that reads it."""
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

    interval = VARS["app_extra_settings"]["REAPER_INTERVAL"]
    first = runs()
    # Three intervals, and 20 s for Beat's tick and the Django shell that reads the count.
    wait_until("Beat sending the reaper", lambda: runs() > first, 3 * interval + 20,
               f"3 x REAPER_INTERVAL ({interval} s) + 20 s", checked=True)  # fmt: skip


@pytest.mark.parametrize(("name", "unit"), SANDBOXED)
def test_units_run_the_release_under_the_hosts_app_root(name: str, unit: str) -> None:
    """The web, worker and Beat units follow app_root and app_config_dir, which the play hands
    them from the app role: a host that moved both still answers (the tests above, from the
    probe), and from the release and settings under its own paths."""
    app = host(name)
    root = app_root(name)
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
    snapshot = "find /etc /srv /opt -xdev -printf '%p %s %T@\\n' | sort | sha256sum"
    before = app.check_output(snapshot)
    run = run_playbook([gather, play], extra_vars=bad_vars, extra_inventory=inventory)
    assert run.rc != 0, run.output
    assert run.failed_tasks and failing_check in run.failed_tasks[0], run.failed_tasks
    assert message in run.messages[0], run.messages
    assert run.stats[target]["changed"] == 0
    assert app.check_output(snapshot) == before
