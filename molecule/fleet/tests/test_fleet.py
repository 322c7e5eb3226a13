"""The whole service, converged by site.yml, used from the outside: the probe trusts only
Pebble's root and reaches the site through nginx on lb1, as a person's browser would.

The tests run in file order on one xdist worker: the later ones restart and stop hosts.
"""

from __future__ import annotations

import json
import os
import re
import shlex
import subprocess
import time
import uuid
from pathlib import Path

import pytest
import yaml
from conftest import changed_app_copy, django, host, run_playbook, wait_until
from testinfra.host import Host

SITE = "chat.parley.test"
BASE = f"https://{SITE}"
ROOT = "/root/pebble-root.pem"
SCENARIO = Path(__file__).resolve().parent.parent
PROJECT = Path(os.environ["MOLECULE_PROJECT_DIRECTORY"])
VARS = yaml.safe_load((SCENARIO / "group_vars" / "all" / "site.yml").read_text())
USER = f"--user {VARS['app_admin_username']} --password {VARS['app_admin_password']}"
# A reply long enough to be interrupted: 200 tokens at 20 per second.
SLOW = "[fakellm:tokens=200 tps=20]"
ARTIFACTS = PROJECT / ".artifacts" / "fleet"


@pytest.fixture(scope="session")
def root(probe: Host) -> str:
    """Pebble's root, fetched once; the only CA the probe's clients trust."""
    fetch = probe.run(
        f"curl -sf --cacert /root/pebble-listener-ca.crt https://fleet-acme:15000/roots/0 -o {ROOT}"
    )
    assert fetch.rc == 0, fetch.stderr
    return ROOT


@pytest.fixture(scope="session")
def web1() -> Host:
    return host("web1")


def chatprobe(probe: Host, root: str, *messages: str) -> dict:
    sends = " ".join(f"--message {shlex.quote(m)}" for m in messages)
    run = probe.run(f"chatprobe --base {BASE} --cafile {root} {USER} --model fake-model {sends}")
    assert run.rc == 0, run.stderr
    return json.loads(run.stdout)


def reply_status(web: Host, reply_id: int) -> str:
    return django(
        web, f"from chat.models import Message; print(Message.objects.get(id={reply_id}).status)"
    )


def wait_for_json(probe: Host, path: str, seconds: int, source: str) -> dict:
    """The JSON document a client on the probe writes (whole, not half-written), once there."""

    def document() -> dict | None:
        read = probe.run(f"cat {path}")
        try:
            return json.loads(read.stdout) if read.rc == 0 else None
        except json.JSONDecodeError:
            return None

    return wait_until(f"{path} on the probe", document, seconds, source)


def current_releases() -> dict[str, str]:
    return {
        name: Path(host(name).check_output("readlink /srv/parley/current")).name
        for name in ("web1", "web2", "worker1", "beat1")
    }


def slow_at_the_lb() -> str:
    """What the lb logged about slow plain requests and errors: where a failed request went."""
    pick = (
        "import json, sys\n"
        "for line in sys.stdin:\n"
        "    entry = json.loads(line)\n"
        "    if entry['status'] != 101 and entry['request_time'] >= 5: print(line.strip())"
    )
    return (
        host("lb1")
        .run(
            f"python3 -c {shlex.quote(pick)} < /var/log/nginx/access.log | tail -20;"
            " tail -20 /var/log/nginx/error.log"
        )
        .stdout
    )


class Load:
    """A bounded HTTP loop and a set of resuming chats on the probe, through nginx. Both keep
    their counts in a progress file: a test waits on those counts, before and after what it
    does, instead of sleeping for a time a slow machine might not fill."""

    def __init__(self, probe: Host, root: str, chats: int, first: str | None = None) -> None:
        """`first`: the chats' first message, sent by all of them at once (a crowd)."""
        self.probe = probe
        self.chats = chats
        talk = shlex.quote("[fakellm:tokens=60 tps=40] Keep talking, please.")
        crowd = f"--crowd --message {shlex.quote(first)} " if first else ""
        self.units = [f"httploop-{uuid.uuid4().hex[:8]}", f"chatload-{uuid.uuid4().hex[:8]}"]
        probe.run(
            "rm -f /tmp/load.stop /tmp/http.json /tmp/chats.json /tmp/http.progress"
            " /tmp/chats.progress"
        )
        for unit, command in zip(
            self.units,
            (
                f"/usr/local/bin/httploop --url {BASE}/healthz --url {BASE}/login/ "
                f"--cafile {root} --stop /tmp/load.stop --out /tmp/http.json "
                "--progress /tmp/http.progress --max-requests 1000000 --max-seconds 3600",
                f"/usr/local/bin/chatprobe --base {BASE} --cafile {root} {USER} "
                f"--model fake-model --load-chats {chats} --max-seconds 3600 {crowd}"
                f"--message {talk} --stop /tmp/load.stop --out /tmp/chats.json "
                "--progress /tmp/chats.progress",
            ),
            strict=True,
        ):
            started = probe.run(f"systemd-run --unit {unit} --collect /usr/bin/python3 {command}")
            assert started.rc == 0, started.stderr
        # Running: some requests answered, and as many replies completed as there are chats.
        self.wait_for_more(requests=10, complete=chats)

    def counts(self) -> tuple[int, int]:
        """Requests the HTTP loop made and replies the chats completed, so far."""
        http = self.probe.run("cat /tmp/http.progress").stdout.strip()
        chats = self.probe.run("cat /tmp/chats.progress").stdout.strip()
        return int(http or 0), json.loads(chats)["complete"] if chats else 0

    def wait_for_more(self, requests: int, complete: int) -> tuple[int, int]:
        """Wait until the loops have made `requests` more requests and completed `complete`
        more replies than now; returns the counts then."""
        now_requests, now_complete = self.counts()

        def enough() -> tuple[int, int] | None:
            done, finished = self.counts()
            more = done >= now_requests + requests and finished >= now_complete + complete
            return (done, finished) if more else None

        return wait_until(
            f"{requests} more requests and {complete} more complete replies",
            enough,
            120,
            "a request and a 60-token reply take seconds here",
        )

    def stop(self) -> tuple[dict, dict]:
        self.probe.run("touch /tmp/load.stop")
        http = wait_for_json(self.probe, "/tmp/http.json", 60, "one request's timeout, 30 s")
        chats = wait_for_json(self.probe, "/tmp/chats.json", 120, "each chat's last reply")
        self.probe.run(f"systemctl stop {' '.join(self.units)}")
        print(f"HTTP: {http['requests']} requests in {http['seconds']} s, {http['statuses']}")
        print(
            f"chats: {chats['replies']} replies ({chats['complete']} complete), "
            f"{chats['reconnects']} reconnects {chats['close_codes']}"
        )
        return http, chats


def test_the_certificate_comes_from_pebble_and_http_goes_to_https(probe: Host, root: str) -> None:
    handshake = probe.run(
        f"openssl s_client -connect {SITE}:443 -servername {SITE} -CAfile {root} "
        "-verify_return_error </dev/null"
    )
    assert handshake.rc == 0, handshake.stdout + handshake.stderr
    assert re.search(r"issuer=.*Pebble", handshake.stdout), handshake.stdout
    redirect = probe.check_output(
        f"curl -s -o /dev/null -w '%{{http_code}} %{{redirect_url}}' http://{SITE}/login/"
    )
    assert redirect == f"301 {BASE}/login/"


@pytest.mark.parametrize(
    ("name", "value", "message"),
    [
        ("certbot_acme_directory", "http://fleet-acme:14000/dir", "must be an https:// URL"),
        ("gunicorn_workers", -1, "gunicorn_workers must be 1 or more"),
        # The prefork pool's process count of before: an upgrade names replies_in_flight.
        (
            "celery_workers",
            [{"name": "default", "queues": ["celery"], "concurrency": 8}],
            "celery_workers.concurrency. Supported parameters include",
        ),
    ],
)
def test_site_refuses_a_bad_value_before_any_tier_runs(
    name: str, value: object, message: str
) -> None:
    """A bad value for a late tier (the lb's certbot, the web tier) stops site.yml in its
    pre-flight, on every host, before the first tier (common) has run anywhere."""
    run = run_playbook(str(PROJECT / "site.yml"), extra_vars={name: value})
    assert run.rc != 0, run.plays
    assert any(message in m for m in run.messages), run.messages
    assert run.plays == [
        "Check the inventory before touching any host",
        "Check every role's variables on the hosts it will converge",
    ], run.plays
    assert all(stats.get("changed", 0) == 0 for stats in run.stats.values()), run.stats


def test_sign_in_send_and_the_streamed_reply_is_stored(probe: Host, root: str, web1: Host) -> None:
    result = chatprobe(probe, root, "Hello from the fleet")
    (reply,) = result["replies"]
    assert reply["status"] == "complete", reply
    assert reply["deltas"] >= 2 and reply["text_matches"], reply
    assert reply["seqs"] == list(range(1, len(reply["seqs"]) + 1))
    stored = django(
        web1,
        "from chat.models import Message; "
        f"m = Message.objects.get(id={reply['reply_id']}); print(m.status, len(m.content))",
    )
    assert stored == f"complete {len(reply['content'])}"


def fake_model_record(probe: Host, marker: str) -> dict | None:
    """What the fake model on the probe holds of the request whose prompt has `marker`."""
    seen = json.loads(probe.check_output("curl -s http://127.0.0.1:8100/_fakellm/requests"))
    return next((record for record in seen if marker in record["prompt"]), None)


def test_a_worker_killed_mid_reply_still_ends_the_reply(probe: Host, root: str, web1: Host) -> None:
    """The worker process is SIGKILLed once the model has streamed 20 of the reply's 200
    tokens (a second at 20 tokens per second), measured at the model, not after a sleep; the
    model's record then shows the stream was cut before its end. systemd starts the worker
    again, and it takes over the reply its predecessor was writing."""
    marker = uuid.uuid4().hex
    probe.run("rm -f /tmp/killed.json")
    started = probe.run(
        "systemd-run --unit killedreply --collect /bin/sh -c "
        + shlex.quote(
            f"chatprobe --base {BASE} --cafile {root} {USER} --model fake-model "
            f"--timeout 120 --message {shlex.quote(f'{SLOW} Write slowly. {marker}')}"
            " > /tmp/killed.part && mv /tmp/killed.part /tmp/killed.json"
        )
    )
    assert started.rc == 0, started.stderr
    worker = host("worker1")

    def streaming() -> bool:
        record = fake_model_record(probe, marker)
        return bool(record and record["tokens_sent"] >= 20)

    wait_until("the slow reply streaming", streaming, 60, "a reply's start, seconds here")
    killed = worker.run("systemctl kill --signal KILL parley-worker@default")
    assert killed.rc == 0, killed.stderr
    cut = fake_model_record(probe, marker)
    result = wait_for_json(probe, "/tmp/killed.json", 180, "the retried 10 s reply")
    (reply,) = result["replies"]
    print(f"after SIGKILL: {reply['status']} in {reply['total_s']} s, code {reply['code']}")
    assert cut and cut["tokens_sent"] < 200, f"the reply had ended before the kill: {cut}"
    assert reply["status"] == "complete" or reply["code"], reply
    assert reply["text_matches"], reply
    assert reply_status(web1, reply["reply_id"]) != "generating"


def test_deploy_under_a_hundred_chats_fails_no_request_and_loses_no_frame(
    probe: Host, root: str, web1: Host, tmp_path: Path
) -> None:
    """A hundred chats send their first message at the same moment through nginx. The fake
    model holds each first token until 100 of its streams are open at once (`hold=100`), so
    those replies complete only if the one worker host keeps 100 model calls open together.
    Then deploy.yml runs while the chats go on talking, beside an HTTP loop: the loads are
    running before (requests answered, a hundred replies done) and after it (more of both),
    waited for on their own counts; nothing is lost and no reply is left unfinished."""
    crowd = 100
    before = current_releases()
    probe.check_output("curl -sf -X POST http://127.0.0.1:8100/_fakellm/reset")
    load = Load(probe, root, chats=crowd, first=f"[fakellm:hold={crowd} tokens=60 tps=20] Hi!")
    model = json.loads(probe.check_output("curl -sf http://127.0.0.1:8100/_fakellm/stats"))
    assert model["most_open_streams"] >= crowd, f"the model saw at most {model} at once"
    at_start = load.counts()
    started = time.monotonic()
    deploy = run_playbook(
        str(PROJECT / "playbooks" / "deploy.yml"),
        extra_vars={"app_local_path": str(changed_app_copy(tmp_path))},
    )
    took = time.monotonic() - started
    at_end = load.counts()
    load.wait_for_more(requests=10, complete=1)
    http, chats = load.stop()
    assert deploy.rc == 0, deploy.failed_tasks or deploy.output[-3000:]
    print(f"deploy.yml took {took:.0f} s; requests {at_start} -> {at_end} (HTTP, replies)")
    after = current_releases()
    assert len(set(after.values())) == 1 and set(after.values()) != set(before.values()), after
    assert at_end[0] > at_start[0], f"no request while the deploy ran {took:.0f} s"
    assert http["failures"] == [], (http, slow_at_the_lb())
    assert chats["connected"] == crowd, chats
    assert chats["replies"] > crowd and chats["errors"] == [], chats
    assert chats["gaps"] == [] and chats["duplicates"] == [] and chats["mismatches"] == [], chats
    assert chats["unacknowledged"] == 0, chats
    unfinished = django(
        web1,
        "from chat.models import Message; "
        "print(Message.objects.filter(status__in=Message.UNFINISHED).count())",
    )
    assert unfinished == "0", f"{unfinished} replies left pending or generating"
    # The deploy did cut chats off (each web host's restart closes its sockets with 1012).
    assert chats["close_codes"].get("1012", 0) > 0, chats
    upstream = host("lb1").check_output("parley-upstream status")
    assert "drained" not in upstream and upstream.count("serving") == 2, upstream


def test_a_rolling_restart_fails_no_request(probe: Host, root: str) -> None:
    pids = {
        name: host(name).check_output("systemctl show --property MainPID --value parley-web")
        for name in ("web1", "web2")
    }
    load = Load(probe, root, chats=4)
    at_start = load.counts()
    restart = run_playbook(str(PROJECT / "playbooks" / "restart.yml"))
    at_end = load.counts()
    load.wait_for_more(requests=10, complete=1)
    http, chats = load.stop()
    assert restart.rc == 0, restart.failed_tasks or restart.output[-3000:]
    assert at_end[0] > at_start[0], "no request while restart.yml ran"
    assert http["failures"] == [], (http, slow_at_the_lb())
    assert chats["gaps"] == [] and chats["duplicates"] == [] and chats["mismatches"] == [], chats
    for name, pid in pids.items():
        now = host(name).check_output("systemctl show --property MainPID --value parley-web")
        assert now != pid, f"parley-web on {name} was not restarted"


def test_status_lists_every_service_active() -> None:
    status = subprocess.run(
        ["ansible-playbook", "-i", os.environ["MOLECULE_INVENTORY_FILE"],
         str(PROJECT / "playbooks" / "status.yml")],
        capture_output=True, text=True, check=False,
    )  # fmt: skip
    assert status.returncode == 0, status.stdout[-3000:] + status.stderr[-3000:]
    for unit in ("nginx.service", "parley-web.service", "parley-worker@default.service",
                 "parley-beat.service", "redis-server@broker.service",
                 "postgresql-backup.timer"):  # fmt: skip
        assert re.search(rf"{re.escape(unit)} +active", status.stdout), status.stdout[-3000:]


def test_site_with_tags_firewall_changes_only_the_firewall() -> None:
    """`site.yml --tags firewall` runs one concern on every host: a drop-in edited by hand is
    written back and nftables reloaded; nothing else changes and no service restarts."""
    services = {
        "lb1": ["nginx"],
        "web1": ["parley-web"],
        "web2": ["parley-web"],
        "worker1": ["parley-worker@default"],
        "beat1": ["parley-beat"],
        "data1": ["postgresql@15-main", "redis-server@broker", "redis-server@layer"],
    }

    def main_pids() -> dict[str, str]:
        return {
            f"{name} {unit}": host(name).check_output(
                f"systemctl show --property MainPID --value {unit}"
            )
            for name, units in services.items()
            for unit in units
        }

    dropin = "/etc/nftables.d/50-postgresql.nft"
    data1 = host("data1")
    before = main_pids()
    assert data1.run(f"echo '# edited by hand' >> {dropin}").rc == 0
    run = run_playbook(str(PROJECT / "site.yml"), tags="firewall")
    assert run.rc == 0, run.failed_tasks or run.output[-3000:]
    print(f"changed: {run.changed}")
    assert {name for name, _ in run.changed} == {"data1"}, run.changed
    tasks = [task.split(" : ")[-1] for _, task in run.changed]
    assert len(tasks) == 2, run.changed
    assert tasks[0].startswith("Write the firewall drop-in"), run.changed
    assert tasks[1] == "Reload nftables", run.changed
    assert "edited by hand" not in data1.file(dropin).content_string
    assert 'comment "postgresql clients"' in data1.check_output("nft list chain inet parley input")
    assert main_pids() == before, "a service restarted"


def test_the_chat_page_in_chromium(probe: Host, root: str) -> None:
    """Headless Chromium on this machine drives the real page through nginx over WSS,
    trusting only Pebble's root (an NSS database of its own) and resolving the site to lb1."""
    address = "{{range .NetworkSettings.Networks}}{{.IPAddress}}{{end}}"
    lb1 = subprocess.run(
        ["docker", "inspect", "-f", address, "lb1"],
        check=True, capture_output=True, text=True,
    ).stdout.strip()  # fmt: skip
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    pem = ARTIFACTS / "pebble-root.pem"
    pem.write_text(probe.file(root).content_string)
    python = PROJECT / "app" / ".venv" / "bin" / "python"
    subprocess.run(["make", "-C", str(PROJECT / "app"), "browser"], check=True)
    # Chromium runs on this machine, where the other scenarios of make test create and remove
    # containers: each new veth is a network change to it, and it aborts the page's requests
    # with ERR_NETWORK_CHANGED (seen once). A person would load the page again; so does this
    # test, from the start, for that error only.
    for _attempt in range(3):
        run = subprocess.run(
            [str(python), str(SCENARIO / "tests" / "browser.py"), "--base", BASE,
             "--address", lb1, "--root", str(pem), "--user", VARS["app_admin_username"],
             "--password", VARS["app_admin_password"], "--model", "fake-model",
             "--screenshot", str(ARTIFACTS / "chat.png")],
            capture_output=True, text=True, timeout=300, check=False,
        )  # fmt: skip
        if run.returncode == 0 or "ERR_NETWORK_CHANGED" not in run.stderr:
            break
        print("Chromium saw the host's network change (ERR_NETWORK_CHANGED); again")
    assert run.returncode == 0, run.stdout[-3000:] + run.stderr[-3000:]
    print(run.stdout.strip())
    assert (ARTIFACTS / "chat.png").stat().st_size > 10_000


# Last: web1 stays down, and the scenario's destroy follows.
def test_traffic_goes_on_without_web1(probe: Host, root: str) -> None:
    """With web1 stopped, the loads go on: 50 more requests and 4 more complete replies
    (one per chat) are waited for on their counts, and none of it failed."""
    load = Load(probe, root, chats=4)
    subprocess.run(["docker", "stop", "-t", "30", "web1"], check=True, capture_output=True)
    load.wait_for_more(requests=50, complete=4)
    http, chats = load.stop()
    assert http["failures"] == [], (http, slow_at_the_lb())
    assert chats["errors"] == [] and chats["gaps"] == [] and chats["mismatches"] == [], chats
    assert chats["complete"] > 4, chats
    logs = host("lb1").check_output("tail -n 400 /var/log/nginx/access.log")
    used = {json.loads(line)["upstream_addr"] for line in logs.splitlines()[-50:]}
    print(f"last 50 requests went to {used}")
