"""The faults section: each fault injected under a bounded load of open chats on the probe
(audit/probe/faultload.py, plus the scenario's httploop through nginx), then the damage
counted from the clients' records and from PostgreSQL.

Figures, per fault:
- messages: sent, acknowledged, refused with an error frame (the page puts the text back in
  the composer), or left without an answer because the socket went first;
- lost: a message neither refused nor in PostgreSQL (the user was not told, the text is gone);
- left unfinished: replies of the run's conversations still pending or generating once the load
  has drained (up to `drain` seconds after it stopped);
- unended: acknowledged messages whose reply the client never saw end (no done, no error);
- recovery: from the moment the fault was cleared (restarted, restored, or the moment it hit,
  for a fault the fleet must absorb) until every chat had a reply complete again;
- error codes: every reply that did not complete ended with one of the protocol's codes.
"""

from __future__ import annotations

import json
import secrets
import subprocess
import tempfile
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from audit.fleet import PROBE_ROOT, Fleet
from audit.report import Check

LOAD_DIR = "/root/audit"
LOAD_SCRIPT = Path(__file__).resolve().parent / "probe" / "faultload.py"
LOAD_PROMPT = "[fakellm:tokens=30 tps=30] Keep talking while the fleet breaks."
LOAD_USERS = [f"audit-load-{n}" for n in range(1, 5)]
# Each user stays under the app's 20 messages a minute (PARLEY_RATE_LIMIT_MESSAGES).
PACE = 4.0
WARMUP = 10.0
RECOVERY_TARGET = 30.0
# The worker is killed with at least this many replies streaming (of the 40 marked chats').
KILL_IN_FLIGHT = 30
REPLY_ERROR_CODES = {
    "provider_unavailable", "provider_rejected", "timeout", "stream_interrupted", "too_long",
    "stuck", "internal",
}  # fmt: skip


@dataclass
class Fault:
    key: str
    tried: str
    inject: Callable[[Fleet], None]
    restore: Callable[[Fleet], None] | None = None
    hold: float = 0
    # When the service must be whole again: after the restore, or at once (a fault the fleet
    # absorbs, such as a lost web host).
    clear_at: str = "restore"
    observe: float = 25
    drain: float = 90
    # Chats besides the steady load: prompt, count and the reply end each must come to.
    marked: list[dict] = field(default_factory=list)


# --- injections -----------------------------------------------------------------------------


def _streams_open(fleet: Fleet) -> int:
    """How many replies the fake model is streaming to the worker right now."""
    stats = fleet.sh(fleet.probe, "curl -sf http://127.0.0.1:8100/_fakellm/stats").stdout
    try:
        return int(json.loads(stats or "{}").get("open_streams", 0))
    except (json.JSONDecodeError, ValueError):
        return 0


def kill_worker(fleet: Fleet) -> None:
    """SIGKILL the worker process once the crowd's replies are streaming (systemd starts it
    again; the new process takes over what the dead one was writing)."""
    deadline = time.monotonic() + 60
    while _streams_open(fleet) < KILL_IN_FLIGHT and time.monotonic() < deadline:
        time.sleep(0.2)
    if _streams_open(fleet) < KILL_IN_FLIGHT:
        raise RuntimeError(f"fewer than {KILL_IN_FLIGHT} replies were streaming to kill")
    fleet.check(fleet.hosts("worker")[0], "systemctl kill --signal KILL parley-worker@default")


def _redis_units() -> str:
    return "redis-server@broker.service redis-server@layer.service"


def stop_redis(fleet: Fleet) -> None:
    fleet.check(fleet.hosts("redis")[0], f"systemctl stop {_redis_units()}")


def start_redis(fleet: Fleet) -> None:
    fleet.check(fleet.hosts("redis")[0], f"systemctl start {_redis_units()}")


def restart_postgres(fleet: Fleet) -> None:
    host = fleet.hosts("db")[0]
    units = fleet.check(host, "systemctl list-units --no-legend --plain 'postgresql@*'").split()
    fleet.check(host, f"systemctl restart {units[0]}", timeout=180)


def stop_web(fleet: Fleet) -> None:
    host = fleet.app_host
    address = fleet.address(host)
    network = _docker(
        "inspect", "-f", "{{range $k, $v := .NetworkSettings.Networks}}{{$k}}{{end}}", host
    )
    _docker("stop", "-t", "30", host)
    # Docker hands a restarted container the lowest free address, not its own: keep its own,
    # which the data tier's firewall and pg_hba.conf name (as a VM keeps its address).
    _docker("network", "disconnect", network, host)
    _docker("network", "connect", "--ip", address, network, host)


def start_web(fleet: Fleet) -> None:
    _docker("start", fleet.app_host)
    fleet.wait_until_booted(fleet.app_host)
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        if fleet.sh(fleet.app_host, "curl -sf http://127.0.0.1:8000/healthz").ok:
            return
        time.sleep(1)
    raise RuntimeError(f"{fleet.app_host} did not serve again within 2 minutes")


def _docker(*args: str) -> str:
    return subprocess.run(
        ["docker", *args], check=True, capture_output=True, text=True
    ).stdout.strip()


def reload_nginx(fleet: Fleet) -> None:
    fleet.check(fleet.lb, "systemctl reload nginx")


def nothing(fleet: Fleet) -> None:
    del fleet


FAULTS = [
    Fault("worker-kill", "SIGKILL the worker process with 30 or more replies streaming",
          kill_worker, clear_at="inject", observe=45,
          marked=[{"prompt": "[fakellm:tokens=200 tps=20]", "count": 1, "chats": 40,
                   "expect": "complete"}]),
    Fault("redis-restart", "stop both Redis instances (broker and channel layer) for 10 s, "
          "then start them", stop_redis, start_redis, hold=10),
    Fault("postgres-restart", "restart PostgreSQL", restart_postgres),
    Fault("web-stop", "stop one web host (docker stop) for 20 s, then start it",
          stop_web, start_web, hold=20, clear_at="inject", observe=20),
    Fault("nginx-reload", "reload nginx", reload_nginx, clear_at="inject"),
    Fault(
        "llm", "the fake model answering 429 (always, and twice then fine), 500, hanging, "
        "and cutting the stream after 5 tokens", nothing, clear_at="inject", observe=15,
        drain=330,
        marked=[
            {"prompt": "[fakellm:429]", "count": 2, "expect": "provider_unavailable"},
            {"prompt": "[fakellm:429x2]", "count": 2, "expect": "complete"},
            {"prompt": "[fakellm:500]", "count": 2, "expect": "provider_unavailable"},
            # One PARLEY_LLM_TIMEOUT (60 s) and no retry: the person is not kept waiting.
            {"prompt": "[fakellm:hang]", "count": 1, "expect": "timeout", "within": 90},
            {"prompt": "[fakellm:disconnect-after=5 tokens=40]", "count": 2,
             "expect": "stream_interrupted"},
        ],
    ),
]  # fmt: skip


# --- the load -------------------------------------------------------------------------------


def marked_chats(fault: Fault) -> list[dict]:
    """One entry per marked chat: a spec with `chats: N` stands for N chats alike."""
    return [spec for spec in fault.marked for _ in range(spec.get("chats", 1))]


def ensure_users(fleet: Fleet, names: list[str], password: str) -> None:
    """The audit's own users (one per chat: the app limits messages per user). The password
    reaches the Django shell in its environment, never on a command line."""
    created = fleet.django(
        "import os\nfrom django.contrib.auth import get_user_model\n"
        f"for name in {names!r}:\n"
        "    user, _ = get_user_model().objects.get_or_create(username=name)\n"
        "    user.set_password(os.environ['PARLEY_AUDIT_PASSWORD'])\n"
        "    user.save()\n"
        f"emit({len(names)})\n",
        env={"PARLEY_AUDIT_PASSWORD": password},
    )
    if created != len(names):
        raise RuntimeError(f"could not create the audit's users: {created}")


def _start_load(fleet: Fleet, fault: Fault, password: str, limit: float) -> list[dict]:
    chats = [
        {"user": user, "password": password, "prompt": LOAD_PROMPT, "pace": PACE}
        for user in LOAD_USERS
    ]
    for number, spec in enumerate(marked_chats(fault), start=1):
        chats.append({"user": f"audit-marked-{number}", "password": password,
                      "prompt": f"{spec['prompt']} An audit question.", "pace": PACE,
                      "count": spec["count"]})  # fmt: skip
    config = {
        "base": fleet.base, "cafile": PROBE_ROOT, "stop": f"{LOAD_DIR}/stop",
        "max_seconds": limit, "drain_seconds": fault.drain, "chats": chats,
    }  # fmt: skip
    with tempfile.NamedTemporaryFile("w", suffix=".json", delete=False) as handle:
        json.dump(config, handle)
    fleet.check(fleet.probe, f"mkdir -p -m 0700 {LOAD_DIR}")
    fleet.copy_to(fleet.probe, Path(handle.name), f"{LOAD_DIR}/load.json")
    Path(handle.name).unlink()
    fleet.copy_to(fleet.probe, LOAD_SCRIPT, f"{LOAD_DIR}/faultload.py")
    fleet.check(
        fleet.probe,
        f"chmod 0600 {LOAD_DIR}/load.json; rm -f {LOAD_DIR}/stop {LOAD_DIR}/out.json "
        f"{LOAD_DIR}/http.json; systemctl reset-failed audit-load audit-http 2>/dev/null; "
        f"systemd-run --unit audit-http --collect /usr/bin/python3 /usr/local/bin/httploop "
        f"--url {fleet.base}/healthz --url {fleet.base}/login/ --cafile {PROBE_ROOT} "
        f"--stop {LOAD_DIR}/stop --out {LOAD_DIR}/http.json --max-requests 100000 "
        f"--max-seconds {limit:.0f} && "
        f"systemd-run --unit audit-load --collect /usr/bin/python3 {LOAD_DIR}/faultload.py "
        f"{LOAD_DIR}/load.json {LOAD_DIR}/out.json",
    )
    return chats


def _wait_for(fleet: Fleet, path: str, unit: str, seconds: float) -> dict:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        run = fleet.sh(fleet.probe, f"cat {path}")
        if run.ok and run.stdout.strip():
            return json.loads(run.stdout)
        if not fleet.sh(fleet.probe, f"systemctl is-active --quiet {unit}").ok:
            time.sleep(2)  # it may have written the file as it ended
            if not fleet.sh(fleet.probe, f"test -s {path}").ok:
                break
        time.sleep(2)
    log = fleet.sh(fleet.probe, "journalctl -u audit-load -u audit-http -n 40 --no-pager").stdout
    raise RuntimeError(f"{path} did not appear on the probe within {seconds:.0f} s: {log}")


DB_STATE = """
from chat.models import Conversation, Message
rows = Message.objects.filter(conversation_id__in=CONVERSATIONS).values(
    "id", "role", "content", "status", "error_code", "reply_to_id", "superseded_at")
emit([{**r, "superseded_at": bool(r["superseded_at"])} for r in rows])
"""


def _database(fleet: Fleet, conversations: list[str], drain: float) -> list[dict]:
    """The run's rows, once no reply is unfinished (or `drain` seconds have passed)."""
    code = DB_STATE.replace("CONVERSATIONS", repr(conversations))
    deadline = time.monotonic() + drain
    while True:
        rows = fleet.django(code)
        unfinished = [
            r for r in rows if r["role"] == "assistant" and r["status"] in {"pending", "generating"}
        ]
        if not unfinished or time.monotonic() > deadline:
            return rows
        time.sleep(5)


# --- one fault ------------------------------------------------------------------------------


def run_fault(fleet: Fleet, fault: Fault, password: str) -> Check:
    limit = WARMUP + fault.hold + fault.observe + 240
    chats = _start_load(fleet, fault, password, limit)
    time.sleep(WARMUP)
    if not fleet.sh(fleet.probe, "systemctl is-active --quiet audit-load").ok:
        log = fleet.sh(fleet.probe, "journalctl -u audit-load -n 30 --no-pager").stdout
        raise RuntimeError(f"the load did not start: {log}")
    injected = time.time()
    restored = fault.restore is None
    try:
        fault.inject(fleet)
        cleared = time.time()
        if fault.restore is not None:
            time.sleep(fault.hold)
            fault.restore(fleet)
            restored = True
            if fault.clear_at == "restore":
                cleared = time.time()
        time.sleep(fault.observe)
    finally:
        fleet.sh(fleet.probe, f"touch {LOAD_DIR}/stop")
        if not restored and fault.restore is not None:
            fault.restore(fleet)
    http = _wait_for(fleet, f"{LOAD_DIR}/http.json", "audit-http", 120)
    load = _wait_for(fleet, f"{LOAD_DIR}/out.json", "audit-load", fault.drain + 120)
    fleet.sh(fleet.probe, f"rm -f {LOAD_DIR}/load.json")
    conversations = [c["conversation"] for c in load["chats"]]
    rows = _database(fleet, conversations, drain=90)
    return judge(fault, chats, http, load, rows, injected=injected, cleared=cleared)


def judge(  # noqa: PLR0913  (a fault, what the clients saw, and when)
    fault: Fault, chats: list[dict], http: dict, load: dict, rows: list[dict], *,
    injected: float, cleared: float,
) -> Check:  # fmt: skip
    messages = load["messages"]
    stored = [r["content"] for r in rows if r["role"] == "user"]
    copies = Counter(m["nonce"] for m in messages for text in stored if m["nonce"] in text)
    in_db = set(copies)
    twice = [nonce for nonce, count in copies.items() if count > 1]
    lost = [m for m in messages if m["nonce"] not in in_db and not m["refused"]]
    refused = Counter(m["refused"] for m in messages if m["refused"])
    refused_but_saved = [m for m in messages if m["refused"] and m["nonce"] in in_db]
    socket_lost = [m for m in messages if m["socket_lost"]]
    unanswered = [m for m in messages if m["answered_at"] is None]
    acked = [m for m in messages if m["reply_id"] is not None]
    unended = [m for m in acked if m["status"] is None]
    unfinished = [
        r for r in rows if r["role"] == "assistant" and r["status"] in {"pending", "generating"}
    ]
    ends = Counter(m["code"] or m["status"] for m in acked if m["status"] is not None)
    unclear = [m for m in acked if m["status"] == "error" and m["code"] not in REPLY_ERROR_CODES]
    # A complete reply's deltas must arrive whole and spell its text. A reply that ended in an
    # error may have lost frames with Redis: its error frame carries the stored text instead.
    stream_faults = [
        m for m in acked
        if m["duplicates"] or (m["status"] == "complete" and (m["gaps"] or not m["text_matches"]))
    ]  # fmt: skip
    # Recovery: every steady chat has had a reply complete after the fault cleared.
    steady = range(len(LOAD_USERS))
    firsts = []
    for chat in steady:
        ends_after = [m["ended_at"] for m in messages if m["chat"] == chat
                      and m["status"] == "complete" and m["ended_at"] >= cleared]  # fmt: skip
        firsts.append(min(ends_after) if ends_after else None)
    recovery = None if None in firsts else max(firsts) - cleared  # type: ignore[type-var]
    marked = list(enumerate(marked_chats(fault), start=len(LOAD_USERS)))
    durations: dict[str, list[float]] = {}
    for number, spec in marked:
        durations.setdefault(spec["prompt"], []).extend(
            round(m["ended_at"] - m["sent_at"], 1) for m in messages
            if m["chat"] == number and m["ended_at"]
        )  # fmt: skip
    marked_wrong = []
    for number, spec in marked:
        got = [m["code"] or m["status"] for m in messages if m["chat"] == number and m["status"]]
        if len(got) != spec["count"] or set(got) != {spec["expect"]}:
            marked_wrong.append(
                f"{spec['prompt']}: ended {got}, expected {spec['count']} x {spec['expect']}"
            )
    for spec in fault.marked:
        took = durations[spec["prompt"]]
        if "within" in spec and any(seconds > spec["within"] for seconds in took):
            marked_wrong.append(
                f"{spec['prompt']}: ended after {max(took):.0f} s, more than {spec['within']} s"
            )
    reconnects = sum(c["reconnects"] for c in load["chats"])
    close_codes: Counter[str] = Counter()
    for chat in load["chats"]:
        close_codes.update(chat["close_codes"])
    figure = (
        f"{len(messages)} messages from {len(chats)} chats: {len(acked)} acknowledged, "
        f"{sum(refused.values())} refused {dict(refused) if refused else ''}, "
        f"{len(socket_lost)} sent again after a lost socket, {len(unanswered)} never answered, "
        f"{len(twice)} stored twice; **lost {len(lost)}**; "
        f"**left unfinished {len(unfinished)}**; unended {len(unended)}; "
        f"replies ended {dict(ends)}; **recovery "
        + (f"{recovery:.1f} s" if recovery is not None else "none")
        + f"**; HTTP {len(http['failures'])} failed of {http['requests']}; "
        f"{reconnects} reconnects {dict(close_codes) if close_codes else ''}"
    )
    if durations:
        figure += "; marked replies took " + ", ".join(
            f"{k} {_seconds(v)}" for k, v in durations.items()
        )
    passed = (
        not lost and not twice and not unfinished and not unended and not unclear
        and not stream_faults and not marked_wrong
        and recovery is not None and recovery < RECOVERY_TARGET
    )  # fmt: skip
    details = [f"fault at {injected:.0f}, cleared at {cleared:.0f} (epoch s)"]
    details += [f"lost: {m}" for m in lost[:5]]
    details += [f"stored twice: {nonce}" for nonce in twice[:5]]
    details += [f"refused but stored: {m['nonce']} ({m['refused']})" for m in refused_but_saved[:5]]
    details += [f"left unfinished: reply {r['id']} {r['status']}" for r in unfinished[:5]]
    details += [f"unended: {m}" for m in unended[:5]]
    details += [f"unclear error: {m}" for m in unclear[:5]]
    details += [
        f"stream: {m['nonce']} gaps {m['gaps']} dups {m['duplicates']} text {m['text_matches']}"
        for m in stream_faults[:5]
    ]
    details += marked_wrong
    details += [f"HTTP failure: {f}" for f in http["failures"][:5]]
    return Check(
        "faults",
        fault.key,
        fault.tried,
        1,
        figure,
        passed,
        f"make audit ONLY={fault.key}",
        details if not passed or refused_but_saved or http["failures"] else [],
    )


def _seconds(took: list[float]) -> str:
    """A few durations as they are; many as their least, median and most."""
    if len(took) <= 5:
        return f"{took} s"
    ordered = sorted(took)
    middle = ordered[len(ordered) // 2]
    return f"{ordered[0]}/{middle}/{ordered[-1]} s (least/median/most of {len(took)})"


def campaign(fleet: Fleet, keys: list[str] | None = None) -> list[Check]:
    password = secrets.token_urlsafe(18)
    chosen = [f for f in FAULTS if keys is None or f.key in keys]
    marked = max((len(marked_chats(f)) for f in chosen), default=0)
    ensure_users(fleet, LOAD_USERS + [f"audit-marked-{n}" for n in range(1, marked + 1)], password)
    checks = []
    for fault in chosen:
        try:
            checks.append(run_fault(fleet, fault, password))
        except Exception as error:
            fleet.sh(fleet.probe, f"touch {LOAD_DIR}/stop")
            checks.append(Check("faults", fault.key, fault.tried, 1, f"could not run: {error}",
                                False, f"make audit ONLY={fault.key}"))  # fmt: skip
        print(f"  {checks[-1].key}: {checks[-1].verdict} {checks[-1].figure}", flush=True)
    return checks
