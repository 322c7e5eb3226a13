"""The security section: TLS, reachability, sandboxing, Django's deploy check, Redis and
PostgreSQL access, secrets in logs, the WebSocket fuzz campaign and the HTTP abuse pass.

Each check returns a `Check` with its figure; none raises on a finding (an exception means the
check itself could not run, and is reported as a failure by the runner).
"""

from __future__ import annotations

import json
import re
import shlex
import threading
import time
from collections import Counter
from pathlib import Path

from audit import fuzz
from audit.fleet import PROBE_ROOT, Fleet
from audit.report import Check
from audit.web import Client, Response

HSTS_MINIMUM = 2 * 365 * 24 * 3600
TESTSSL_DIR = "/root/audit"
TESTSSL_UNIT = "audit-testssl"
# TCP ports an outsider may reach, by group; every other host of the site shows SSH only.
PUBLIC_PORTS = {"lb": {22, 80, 443}}
# Ports the quick scan looks at besides nmap's 1000 most common: everything the site runs.
SERVICE_PORTS = [22, 80, 443, 5432, 6379, 6380, 8000, 8100, 9809, 26379]
POSTGRES_PORT = 5432
REDIS_PORTS = {"broker": 6379, "layer": 6380}
# Units the roles write (parley-*, the backup) or confine with a drop-in (Redis, certbot):
# each must score 2.0 or lower. Debian's own units we leave as shipped are listed for reference.
OUR_UNIT_PATTERNS = ["parley-*", "redis-server@*", "postgresql-backup*", "certbot*"]
EXPECTED_UNITS = {
    "web": ["parley-web.service"],
    "worker": ["parley-worker@default.service"],
    "beat": ["parley-beat.service"],
    "redis": ["redis-server@broker.service", "redis-server@layer.service"],
    "db": ["postgresql-backup.service"],
    "lb": ["certbot.service"],
}
DEBIAN_UNITS = {"lb": ["nginx.service"], "db": ["postgresql@15-main.service"]}


def reproduce(key: str) -> str:
    return f"make audit ONLY={key}"


# --- TLS ------------------------------------------------------------------------------------


def start_testssl(fleet: Fleet) -> None:
    """testssl.sh takes minutes: it runs in the background on the probe while the rest goes on."""
    fleet.root_pem()
    stem = f"{TESTSSL_DIR}/testssl"
    fleet.check(
        fleet.probe,
        f"mkdir -p {TESTSSL_DIR} && rm -f {stem}.json {stem}.log && "
        f"(systemctl stop {TESTSSL_UNIT} ; systemctl reset-failed {TESTSSL_UNIT}) 2>/dev/null; "
        f"systemd-run --unit {TESTSSL_UNIT} --collect testssl --quiet --color 0 --warnings off "
        f"--add-ca {PROBE_ROOT} --protocols --std --fs --server-preference --server-defaults "
        f"--headers --vulnerable --jsonfile {stem}.json --logfile {stem}.log {fleet.base}",
    )


def testssl(fleet: Fleet) -> list[Check]:
    deadline = time.monotonic() + 600
    while fleet.sh(fleet.probe, f"systemctl is-active --quiet {TESTSSL_UNIT}").ok:
        if time.monotonic() > deadline:
            raise RuntimeError("testssl.sh did not finish within 10 minutes")
        time.sleep(3)
    findings = json.loads(fleet.check(fleet.probe, f"cat {TESTSSL_DIR}/testssl.json"))
    severities = Counter(f["severity"] for f in findings)
    serious = [f for f in findings if f["severity"] in {"HIGH", "CRITICAL"}]
    by_id = {f["id"]: f["finding"] for f in findings}
    offered = [
        name
        for name in ("SSLv2", "SSLv3", "TLS1", "TLS1_1", "TLS1_2", "TLS1_3")
        if by_id.get(name, "").startswith("offered")
    ]
    command = (
        f"docker exec {fleet.probe} testssl --add-ca {PROBE_ROOT} --protocols --std --fs "
        f"--server-preference --server-defaults --headers --vulnerable {fleet.base}"
    )
    return [
        Check(
            "security", "testssl", f"testssl.sh against {fleet.base} (protocols, ciphers, "
            "forward secrecy, server defaults, headers, every vulnerability test)",
            len(findings), f"{len(serious)} HIGH/CRITICAL of {len(findings)} findings "
            f"({', '.join(f'{k} {v}' for k, v in sorted(severities.items()))})",
            len(findings) > 50 and not serious, command,
            [f"{f['id']}: {f['severity']} {f['finding']}" for f in serious],
        ),
        Check(
            "security", "testssl-protocols", "protocol versions testssl.sh found offered",
            6, "offered: " + ", ".join(offered or ["none"]),
            offered == ["TLS1_2", "TLS1_3"], command,
        ),
    ]  # fmt: skip


def tls_versions(fleet: Fleet) -> Check:
    """openssl, willing to speak anything (security level 0), gets TLS 1.2 and 1.3 only."""
    fleet.root_pem()
    results = {}
    for version in ("tls1", "tls1_1", "tls1_2", "tls1_3"):
        cipher = "" if version == "tls1_3" else "-cipher DEFAULT@SECLEVEL=0"
        run = fleet.sh(
            fleet.probe,
            f"openssl s_client -connect {fleet.site}:443 -servername {fleet.site} "
            f"-CAfile {PROBE_ROOT} -{version} {cipher} </dev/null",
            timeout=30,
        )
        results[version] = run.ok and "Verify return code: 0" in run.stdout
    accepted = [v for v, ok in results.items() if ok]
    return Check(
        "security", "tls-versions", "one openssl s_client handshake per TLS version 1.0-1.3 "
        "(client at security level 0, so only the server can refuse)", len(results),
        "accepted: " + ", ".join(accepted or ["none"]), accepted == ["tls1_2", "tls1_3"],
        f"docker exec {fleet.probe} openssl s_client -connect {fleet.site}:443 "
        f"-servername {fleet.site} -tls1_1 -cipher DEFAULT@SECLEVEL=0",
    )  # fmt: skip


def sslyze(fleet: Fleet) -> Check:
    fleet.root_pem()
    command = (
        f"docker exec {fleet.probe} sslyze --mozilla_config=intermediate "
        f"--certinfo_ca_file {PROBE_ROOT} {fleet.site}:443"
    )
    run = fleet.sh(fleet.probe, command.split(" ", 3)[3], timeout=300)
    compliant = f"{fleet.site}:443: OK - Compliant." in run.stdout
    problems = [line.strip() for line in run.stdout.splitlines() if "FAILED" in line or "*" in line]
    return Check(
        "security", "sslyze", "sslyze against Mozilla's intermediate configuration", 1,
        "compliant" if compliant else "not compliant", run.ok and compliant, command,
        [] if compliant else problems[-20:] or [run.output[-1500:]],
    )  # fmt: skip


def _hsts_seconds(response: Response) -> int | None:
    values = response.headers.get("strict-transport-security", [])
    if len(values) != 1:
        return None
    match = re.search(r"max-age=(\d+)", values[0])
    return int(match.group(1)) if match else None


def hsts(fleet: Fleet, client: Client) -> Check:
    """Every HTTPS answer, successes and errors of the app and of nginx, carries HSTS."""
    anonymous = Client(fleet.site, client.address, client.cafile)
    static = re.search(r'/static/[^"\']+\.css', client.request("GET", "/").body)
    probes: list[tuple[str, Response]] = [
        ("page", client.request("GET", "/")),
        ("sign-in page", anonymous.request("GET", "/login/")),
        ("redirect to sign-in", anonymous.request("GET", "/")),
        ("health", anonymous.request("GET", "/healthz")),
        ("static file", anonymous.request("GET", static.group(0) if static else "/static/x.css")),
        ("404", anonymous.request("GET", "/no-such-page/")),
        ("403 CSRF", client.request("POST", "/c/new/", form={}, csrf=False)),
        ("403 ops", anonymous.request("GET", "/readyz")),
        ("405", anonymous.request("DELETE", "/healthz")),
        ("413", client.request("POST", "/c/new/", body=b"x" * (3 << 19))),
        ("400", anonymous.request("GET", "/", headers={"Host": "bad host name"})),
    ]
    status, headers, socket = client.websocket(
        f"/ws/chat/{'0' * 8}-0000-0000-0000-{'0' * 12}/", origin="https://evil.example"
    )
    if socket is not None:
        socket.close()
    ws = Response(status, {k: [v] for k, v in headers.items()}, "")
    probes.append(("403 WebSocket origin", ws))
    # 429: nginx's own answer once the sign-in rate is spent (the probe is exempt; we are not).
    for _ in range(15):
        answer = anonymous.request("GET", "/login/")
        if answer.status == 429:
            probes.append(("429", answer))
            break
    short = [
        f"{name} (HTTP {r.status}): HSTS {_hsts_seconds(r)}"
        for name, r in probes
        if (_hsts_seconds(r) or 0) < HSTS_MINIMUM
    ]
    statuses = sorted({r.status for _, r in probes})
    ages = sorted({_hsts_seconds(r) for _, r in probes}, key=lambda v: v or -1)
    return Check(
        "security", "hsts", "HSTS on answers of every kind: " + ", ".join(n for n, _ in probes),
        len(probes), f"{len(probes) - len(short)}/{len(probes)} carry max-age >= 2 years "
        f"(statuses {', '.join(map(str, statuses))}; max-age {ages})",
        not short and 429 in statuses, reproduce("hsts"), short,
    )  # fmt: skip


# --- Reachability ---------------------------------------------------------------------------


def _nmap(fleet: Fleet, source: str, targets: list[str], ports: str, timeout: float) -> dict:
    scan = fleet.sh(
        source,
        f"nmap -Pn -n -sT -p {ports} --min-rate 3000 --max-retries 1 --host-timeout 300s "
        f"-oG - {' '.join(targets)}",
        timeout=timeout,
    )
    if not scan.ok:
        raise RuntimeError(f"nmap failed: {scan.output[-1500:]}")
    opened: dict[str, set[int]] = {}
    addresses = {fleet.address(t): t for t in targets}
    for line in scan.stdout.splitlines():
        match = re.match(r"Host: (\S+) .*Ports: (.*)", line)
        if not match:
            continue
        name = addresses.get(match.group(1), match.group(1))
        listed = match.group(2).split("Ignored State")[0]
        opened[name] = {
            int(entry.strip().split("/")[0]) for entry in listed.split(",") if "/open/" in entry
        }
    return opened


def outside_ports(fleet: Fleet, *, full: bool) -> Check:
    """What an Internet client sees: nmap from the probe, outside the private network."""
    targets = fleet.site_hosts
    ports = "-" if full else "T:1-1024," + ",".join(map(str, SERVICE_PORTS))
    opened = _nmap(fleet, fleet.probe, targets, ports, timeout=900)
    wrong = []
    for name in targets:
        groups = [g for g, members in fleet.groups.items() if name in members]
        allowed = set().union({22}, *(PUBLIC_PORTS.get(g, set()) for g in groups))
        if opened.get(name) != allowed:
            wrong.append(f"{name}: open {sorted(opened.get(name, []))}, expected {sorted(allowed)}")
    figure = "; ".join(f"{n} {','.join(map(str, sorted(opened.get(n, []))))}" for n in targets)
    scope = "all 65535 TCP ports" if full else "ports 1-1024 and every service port"
    return Check(
        "security", "nmap-outside", f"nmap from {fleet.probe} (outside the site), {scope} of "
        f"each of {len(targets)} hosts: only 22/80/443 on lb, only 22 elsewhere",
        len(targets), "open: " + figure, not wrong,
        f"docker exec {fleet.probe} nmap -Pn -n -sT -p{ports} {' '.join(targets)}", wrong,
    )  # fmt: skip


def _connects(fleet: Fleet, source: str, target: str, port: int) -> bool:
    program = (
        "import socket,sys\n"
        "try:\n"
        f"    socket.create_connection(({target!r}, {port}), 3).close()\n"
        "except OSError:\n    sys.exit(1)\n"
    )
    return fleet.sh(source, f"python3 -c {shlex.quote(program)}", timeout=20).ok


def inside_ports(fleet: Fleet) -> Check:
    """The data tier answers the app hosts, and nobody else in the site (the lb)."""
    data = {h for g in ("db", "redis") for h in fleet.hosts(g)}
    app_hosts = [h for g in ("web", "worker", "beat") for h in fleet.hosts(g)]
    ports = [POSTGRES_PORT, *REDIS_PORTS.values()]
    wrong, tries = [], 0
    for target in sorted(data):
        for source in [*app_hosts, fleet.lb]:
            for port in ports:
                tries += 1
                reached = _connects(fleet, source, target, port)
                if reached != (source in app_hosts):
                    wrong.append(f"{source} -> {target}:{port} {'open' if reached else 'closed'}")
    return Check(
        "security", "nmap-inside", "TCP connects to PostgreSQL 5432 and Redis 6379/6380 from "
        f"each app host ({', '.join(app_hosts)}) and from {fleet.lb}",
        tries, f"{tries - len(wrong)}/{tries} as expected (app hosts reach, lb does not)",
        not wrong, reproduce("nmap-inside"), wrong,
    )  # fmt: skip


# --- Hosts ----------------------------------------------------------------------------------


def _exposure(fleet: Fleet, host: str, unit: str) -> tuple[float | None, bool]:
    run = fleet.sh(host, f"systemd-analyze security --threshold=20 --no-pager {unit}", timeout=60)
    match = re.search(r"Overall exposure level for \S+: ([0-9.]+)", run.stdout)
    return (float(match.group(1)) if match else None), run.ok


def units(fleet: Fleet) -> Check:
    scores, wrong, reference = [], [], []
    expected_by_host: dict[str, list[str]] = {}
    for group, expected in EXPECTED_UNITS.items():
        for host in fleet.hosts(group):
            expected_by_host.setdefault(host, []).extend(expected)
    for host, expected in expected_by_host.items():
        found = fleet.sh(
            host,
            "systemctl list-units --all --type=service --no-legend --plain "
            + " ".join(shlex.quote(p) for p in OUR_UNIT_PATTERNS),
        ).stdout
        present = {line.split()[0] for line in found.splitlines() if line.strip()}
        wrong += [f"{host}: {unit} is not installed" for unit in expected if unit not in present]
        for unit in sorted(present | set(expected)):
            exposure, passed = _exposure(fleet, host, unit)
            scores.append(f"{host} {unit.removesuffix('.service')} {exposure}")
            if exposure is None or exposure > 2.0 or not passed:
                wrong.append(f"{host}: {unit} exposure {exposure}")
    for group, debian_units in DEBIAN_UNITS.items():
        for host in fleet.hosts(group):
            for unit in debian_units:
                exposure, _ = _exposure(fleet, host, unit)
                reference.append(f"{host}: {unit} {exposure} (Debian's unit, as shipped)")
    return Check(
        "security", "units", "systemd-analyze security --threshold=20 on every unit the roles "
        "write or confine, on every host that runs it", len(scores),
        "; ".join(scores), not wrong and bool(scores),
        "docker exec web1 systemd-analyze security --threshold=20 parley-web.service",
        wrong + [f"for reference, not ours: {r}" for r in reference],
    )  # fmt: skip


# Silenced in parley.settings.production, and why: a silenced check must be one of these.
ALLOWED_SILENCED = {"security.W021": "HSTS preload, the domain owner's decision"}
ALL_DEPLOY_CHECKS = """
from django.core import checks
emit(sorted(m.id for m in checks.run_checks(include_deployment_checks=True)))
"""


def deploy_check(fleet: Fleet) -> Check:
    hosts = [h for g in ("web", "worker", "beat") for h in fleet.hosts(g)]
    wrong, figures = [], []
    for host in hosts:
        run = fleet.sh(host, "parley-manage check --deploy --fail-level WARNING", timeout=180)
        issues = re.search(
            r"System check identified (no|\d+) issues? \((\d+) silenced\)", run.output
        )
        clean = run.ok and issues is not None and issues.group(1) == "no"
        # Silenced checks are counted too: every one must be a deliberate, named choice.
        silenced = set(fleet.django(ALL_DEPLOY_CHECKS, host=host))
        unexplained = silenced - set(ALLOWED_SILENCED)
        figures.append(f"{host} {'0 issues' if clean else 'ISSUES'}, silenced {sorted(silenced)}")
        if not clean or unexplained:
            wrong.append(f"{host}: {run.output[-1500:]} silenced {sorted(unexplained)}")
    return Check(
        "security", "check-deploy", "manage.py check --deploy --fail-level WARNING with the "
        "deployed settings, on every app host", len(hosts), "; ".join(figures), not wrong,
        "docker exec web1 parley-manage check --deploy --fail-level WARNING",
        wrong + [f"silenced by design: {k} ({v})" for k, v in ALLOWED_SILENCED.items()],
    )  # fmt: skip


REDIS_PROBE = r"""
import os, socket, sys
host, port = sys.argv[1], int(sys.argv[2])
def ask(*commands):
    s = socket.create_connection((host, port), 5)
    for words in commands:
        parts = ["$%d\r\n%s\r\n" % (len(w.encode()), w) for w in words]
        s.sendall(("*%d\r\n" % len(words) + "".join(parts)).encode())
    s.settimeout(3)
    data = b""
    try:
        while data.count(b"\r\n") < len(commands):
            chunk = s.recv(4096)
            if not chunk:
                break
            data += chunk
    except OSError:
        pass
    s.close()
    answers = data.decode(errors="replace").split("\r\n")
    return answers[len(commands) - 1 if len(commands) > 1 else 0]
password = os.environ["AUDIT_REDIS_PASSWORD"]
for name, commands in [
    ("PING without AUTH", [["PING"]]),
    ("GET without AUTH", [["GET", "parley:x"]]),
    ("HELLO 3 without AUTH", [["HELLO", "3"]]),
    ("AUTH default (no password)", [["AUTH", "default", ""]]),
    ("AUTH default with the app's password", [["AUTH", "default", password]]),
    ("AUTH with the password alone", [["AUTH", password]]),
    ("AUTH parley with a wrong password", [["AUTH", "parley", "wrong-" + password[:3]]]),
    ("app user: CONFIG GET", [["AUTH", "parley", password], ["CONFIG", "GET", "*"]]),
    ("app user: FLUSHALL", [["AUTH", "parley", password], ["FLUSHALL"]]),
    ("app user: key outside parley:", [["AUTH", "parley", password], ["SET", "audit:x", "1"]]),
    ("app user: KEYS", [["AUTH", "parley", password], ["KEYS", "*"]]),
]:
    print(name + "\t" + ask(*commands))
"""


def redis_access(fleet: Fleet) -> Check:
    """From an app host (the firewall lets it in): every way in without the app user's
    password is refused, and the app user cannot step outside its ACL."""
    source = fleet.app_host
    passwords = {
        "broker": fleet.vars["app_broker_password"],
        "layer": fleet.vars["app_layer_password"],
    }
    target = fleet.hosts("redis")[0]
    address = fleet.address(target)
    wrong, tries = [], 0
    for role, port in REDIS_PORTS.items():
        run = fleet.sh(
            source,
            f"python3 -c {shlex.quote(REDIS_PROBE)} {address} {port}",
            env={"AUDIT_REDIS_PASSWORD": passwords[role]},
            timeout=60,
        )
        lines = [line.split("\t", 1) for line in run.stdout.splitlines() if "\t" in line]
        if len(lines) != 11:
            wrong.append(f"{role}: the probe did not run: {run.output[-500:]}")
        for name, answer in lines:
            tries += 1
            if not re.match(r"-(NOAUTH|WRONGPASS|NOPERM|ERR)", answer):
                wrong.append(f"{role} ({port}) {name}: {answer!r}")
    return Check(
        "security", "redis-auth", f"Redis broker and layer from {source}: PING/GET/HELLO without "
        "AUTH, the default user, a wrong password, the app user outside its ACL (CONFIG, "
        "FLUSHALL, KEYS, a key outside parley:)", tries,
        f"{tries - len(wrong)}/{tries} refused", not wrong and tries == 22,
        reproduce("redis-auth"), wrong,
    )  # fmt: skip


PG_OUTSIDE = """
import psycopg
from django.conf import settings
db = settings.DATABASES["default"]
results = {}
for name, options in {
    "without TLS": {"sslmode": "disable", "password": db["PASSWORD"]},
    "wrong password over TLS": {"sslmode": "require", "password": "wrong"},
    "as postgres over TLS": {"sslmode": "require", "user": "postgres", "password": "x"},
}.items():
    kwargs = {"host": db["HOST"], "port": db["PORT"] or 5432, "dbname": db["NAME"],
              "user": db["USER"], "connect_timeout": 5, **options}
    try:
        psycopg.connect(**kwargs).close()
        results[name] = "connected"
    except psycopg.OperationalError as error:
        results[name] = str(error).strip().splitlines()[-1][:200]
emit(results)
"""


def postgres_access(fleet: Fleet) -> Check:
    db_host = fleet.hosts("db")[0]
    rules = fleet.check(
        db_host,
        "runuser -u postgres -- psql -XAt -F '|' -c 'select line_number, type, database, "
        "user_name, address, auth_method from pg_hba_file_rules order by line_number'",
    )
    wrong = []
    lines = [line.split("|") for line in rules.splitlines() if line]
    methods = Counter(line[5] for line in lines)
    for number, kind, _db, _user, _address, method in lines:
        if method in {"trust", "md5", "password", "ident"}:
            wrong.append(f"pg_hba line {number}: {kind} {method}")
        if kind.startswith("host") and method not in {"reject"} and kind != "hostssl":
            wrong.append(f"pg_hba line {number}: {kind} without TLS accepts ({method})")
    encryption = fleet.check(
        db_host, "runuser -u postgres -- psql -XAt -c 'show password_encryption'"
    ).strip()
    stored = fleet.check(
        db_host,
        'runuser -u postgres -- psql -XAt -c "select rolname from pg_authid where '
        "rolpassword is not null and rolpassword not like 'SCRAM-SHA-256$%'\"",
    ).split()
    if encryption != "scram-sha-256":
        wrong.append(f"password_encryption = {encryption}")
    wrong += [f"role {role} has a non-SCRAM password" for role in stored]
    outside = fleet.django(PG_OUTSIDE)
    for name, result in outside.items():
        if result == "connected":
            wrong.append(f"from {fleet.app_host} {name}: connected")
    return Check(
        "security", "pg-hba", "pg_hba.conf rules as PostgreSQL loaded them, stored passwords, "
        f"and logins from {fleet.app_host} without TLS, with a wrong password, as postgres",
        len(lines) + 2 + len(outside),
        f"methods {dict(methods)}; password_encryption {encryption}; "
        f"{len(stored)} non-SCRAM passwords; {sum(r != 'connected' for r in outside.values())}/"
        f"{len(outside)} bad logins refused", not wrong,
        f"docker exec {db_host} runuser -u postgres -- psql -c 'table pg_hba_file_rules'",
        wrong + [f"{k}: {v}" for k, v in outside.items()],
    )  # fmt: skip


def secrets_in_logs(fleet: Fleet) -> Check:
    """Every secret value of the site, grepped in every host's journal and /var/log."""
    names = list(fleet.secrets)
    patterns = "\n".join(fleet.secrets[n] for n in names) + "\n"
    hits: dict[str, int] = {}
    lines_read = 0
    for host in fleet.site_hosts:
        # The patterns go in on stdin into a private temporary file: never onto a command line.
        run = fleet.sh(
            host,
            "umask 077; p=$(mktemp); l=$(mktemp); cat > $p; "
            "{ journalctl --no-pager -o cat; "
            "find /var/log -type f ! -name '*.journal' ! -name '*.gz' -exec cat {} + ; "
            "zcat -f /var/log/nginx/*.gz ; } > $l 2>/dev/null; "
            'echo "lines $(wc -l < $l)"; grep -aoF -f $p $l | sort | uniq -c; rm -f $p $l',
            stdin=patterns,
            timeout=300,
        )
        for line in run.stdout.splitlines():
            parts = line.split(None, 1)
            if parts and parts[0] == "lines":
                lines_read += int(parts[1]) if parts[1].isdigit() else 0
            elif len(parts) == 2 and parts[0].isdigit():
                for name in names:
                    if fleet.secrets[name] == parts[1]:
                        hits[f"{host}: {name}"] = int(parts[0])
    return Check(
        "security", "secrets-in-logs", f"every secret of the site ({', '.join(names)}) grepped in "
        "the journal and /var/log of every site host, after everything else ran",
        len(fleet.site_hosts), f"{sum(hits.values())} hits in {lines_read} log lines",
        not hits and lines_read > 1000, reproduce("secrets-in-logs"),
        [f"{where}: {count} hits" for where, count in hits.items()],
    )  # fmt: skip


# --- The WebSocket fuzz campaign ------------------------------------------------------------


def _web_state(fleet: Fleet) -> dict[str, str]:
    state = {}
    for host in fleet.hosts("web"):
        state[host] = fleet.sh(
            host, "systemctl show -p MainPID -p NRestarts --value parley-web.service"
        ).stdout.split()
    return {h: " ".join(v) for h, v in state.items()}


def _journal_since(fleet: Fleet, host: str, unit: str, since: float) -> str:
    return fleet.sh(
        host, f"journalctl --no-pager -o cat -u {unit} --since @{int(since)}", timeout=60
    ).stdout


# A web process dying, hanging or failing on a frame. Uvicorn logs a traceback at ERROR for
# every text frame that is not UTF-8 ("Invalid UTF-8 sequence received from client"), and
# answers it with a clean 1007 close: those tracebacks are counted apart, not as crashes.
CRASH_SIGNS = re.compile(
    r"WORKER TIMEOUT|was sent SIGKILL|exited with code|Segmentation|core dumped"
    r"|Exception in ASGI application|Frame \w+ failed"
)
UVICORN_UTF8 = "Invalid UTF-8 sequence received from client"


def _crash_lines(journal: str) -> tuple[list[str], int]:
    """Lines that show a crash, and how many of uvicorn's UTF-8 tracebacks there were."""
    lines = journal.splitlines()
    utf8 = sum(UVICORN_UTF8 in line for line in lines)
    crashes = [line for line in lines if CRASH_SIGNS.search(line)]
    tracebacks = sum(line.startswith("Traceback") for line in lines)
    if tracebacks > utf8:
        crashes.append(f"{tracebacks - utf8} tracebacks besides uvicorn's UTF-8 ones")
    return crashes, utf8


def _lb_log_since(fleet: Fleet, lines_before: int) -> list[dict]:
    log = fleet.sh(fleet.lb, f"tail -n +{lines_before + 1} /var/log/nginx/access.log").stdout
    entries = []
    for line in log.splitlines():
        try:
            entries.append(json.loads(line))
        except json.JSONDecodeError:
            continue
    return entries


def fuzz_campaign(fleet: Fleet, client: Client, *, frames: int, sockets: int, floods: int) -> Check:
    seed = int(time.time())
    cases = fuzz.draw_cases(frames, seed)
    before = _web_state(fleet)
    log_lines = int(fleet.check(fleet.lb, "wc -l < /var/log/nginx/access.log").strip() or 0)
    rate, burst = fleet.django(
        "from django.conf import settings\n"
        "emit([settings.WS_FRAMES_PER_SECOND, settings.WS_FRAME_BURST])"
    )
    limit = fuzz.FrameLimit(rate=float(rate), burst=int(burst))
    started = time.time()
    outcome = fuzz.run_campaign(client, cases, sockets=sockets, floods=floods, limit=limit)
    took = time.time() - started
    time.sleep(2)
    after = _web_state(fleet)
    crashes: list[str] = []
    utf8_logged = 0
    for host in fleet.hosts("web"):
        if before[host] != after[host]:
            crashes.append(f"{host}: parley-web MainPID/NRestarts {before[host]} -> {after[host]}")
        found, utf8 = _crash_lines(_journal_since(fleet, host, "parley-web.service", started))
        crashes += [f"{host}: {line[:300]}" for line in found][:10]
        utf8_logged += utf8
    # Nothing else runs meanwhile: any 5xx nginx logged in the window counts.
    errors_5xx = [e for e in _lb_log_since(fleet, log_lines) if int(e.get("status", 0)) >= 500]
    rows = fleet.django(
        "from chat.models import Message\n"
        f"emit(Message.objects.filter(conversation_id__in={outcome.conversations!r}).count())"
    )
    total = outcome.frames + outcome.flood_frames
    figure = (
        f"{total} frames ({outcome.frames} drawn + {outcome.flood_frames} in {outcome.floods} "
        f"floods) on {sockets} sockets in {took:.0f} s: {outcome.answered} answered "
        f"({sum(outcome.error_frames.values())} error frames, "
        f"{sum(outcome.clean_closes.values())} clean closes {dict(outcome.clean_closes)}), "
        f"{len(outcome.failures)} unanswered or wrong, {len(crashes)} crashes, "
        f"{len(errors_5xx)} 5xx, {rows} rows written, {outcome.liveness_pings} liveness pings"
    )
    passed = not outcome.failures and not crashes and not errors_5xx and rows == 0
    details = [f"kinds drawn: {dict(outcome.kinds)}", f"error codes: {dict(outcome.error_frames)}"]
    details += [f"seed {seed}; handshakes {dict(outcome.handshakes)}"]
    details += [f"uvicorn logged {utf8_logged} invalid UTF-8 frames at ERROR with a traceback "
                "(each answered with a 1007 close; not a crash)"]  # fmt: skip
    details += outcome.failures[:20] + crashes[:10]
    details += [f"5xx: {e}" for e in errors_5xx[:10]]
    return Check(
        "security", "fuzz", "WebSocket fuzz through nginx (Hypothesis: random JSON, one field "
        "wrong, unknown models, oversized, binary, invalid UTF-8, RFC 6455 violations, "
        "fragments, floods)", total, figure, passed,
        f"make audit ONLY=fuzz FRAMES={frames}", details,
    )  # fmt: skip


# --- HTTP abuse -----------------------------------------------------------------------------


def csrf(fleet: Fleet, client: Client) -> Check:
    anonymous = Client(fleet.site, client.address, client.cafile)
    anonymous.request("GET", "/login/")
    user, password = fleet.admin
    # The sign-in page is rate limited: a 429 says nothing about CSRF, so wait for a token.
    for _ in range(8):
        refused_sign_in = anonymous.request(
            "POST", "/login/", form={"username": user, "password": password}, csrf=False
        )
        if refused_sign_in.status != 429:
            break
        time.sleep(7)
    attempts = {
        "sign-in without token": refused_sign_in,
        "new conversation without token": client.request("POST", "/c/new/", form={}, csrf=False),
        "new conversation, token but foreign Origin": client.request(
            "POST", "/c/new/", form={},
            headers={"Origin": "https://evil.example", "Referer": "https://evil.example/"},
        ),
        "sign-out without token": client.request("POST", "/logout/", form={}, csrf=False),
    }  # fmt: skip
    wrong = [f"{name}: HTTP {r.status}" for name, r in attempts.items() if r.status != 403]
    home = client.request("GET", "/")
    # Signed in, the home page is the newest conversation (or a redirect to it).
    still_signed_in = home.status == 200 or (
        home.status == 302 and not (home.header("location") or "").startswith("/login/")
    )
    if not still_signed_in:
        wrong.append("the session did not survive the refused sign-out")
    return Check(
        "security", "csrf", "POSTs without a CSRF token or from a foreign Origin (sign-in, new "
        "conversation, sign-out)", len(attempts),
        f"{len(attempts) - sum('HTTP' in w for w in wrong)}/{len(attempts)} refused with 403",
        not wrong, reproduce("csrf"), wrong,
    )  # fmt: skip


def foreign_origin(fleet: Fleet, client: Client) -> Check:
    conversation = client.new_conversation()
    path = f"/ws/chat/{conversation}/"
    origins: dict[str, str | None] = {
        "https://evil.example": "https://evil.example",
        f"http://{fleet.site}": f"http://{fleet.site}",
        f"https://{fleet.site}.evil.example": f"https://{fleet.site}.evil.example",
        "null": "null",
        "no Origin": None,
    }
    wrong = []
    for name, origin in origins.items():
        status, _, socket = client.websocket(path, origin=origin)
        if socket is not None:
            socket.close()
        if status != 403:
            wrong.append(f"{name}: HTTP {status}")
    status, _, socket = client.websocket(path)
    if socket is None:
        wrong.append(f"own Origin with the session was refused too (HTTP {status})")
    else:
        socket.close()
    anonymous = Client(fleet.site, client.address, client.cafile)
    status, _, socket = anonymous.websocket(path)
    if socket is not None:
        socket.close()
        wrong.append("own Origin without a session was accepted")
    return Check(
        "security", "ws-origin", "WebSocket handshakes with a valid session from foreign or "
        "missing Origins, and from our Origin without a session", len(origins) + 1,
        f"{len(origins) + 1 - len(wrong)}/{len(origins) + 1} refused with 403; own Origin "
        "with a session accepted", not wrong, reproduce("ws-origin"), wrong,
    )  # fmt: skip


def brute_force(fleet: Fleet, client: Client, attempts: int = 30, settle: float = 0) -> Check:
    """Password guessing from one address (this machine: not exempt from nginx's limits).
    `settle` seconds first let the budget refill, so the figure shows the whole burst."""
    time.sleep(settle)
    guesser = Client(fleet.site, client.address, client.cafile)
    guesser.cookies["csrftoken"] = client.cookies["csrftoken"]
    user = fleet.admin[0]
    statuses: Counter[int] = Counter()
    lock = threading.Lock()
    started = time.monotonic()

    def guess(number: int) -> None:
        answer = guesser.request(
            "POST", "/login/", form={"username": user, "password": f"guess-{number}"}
        )
        with lock:
            statuses[answer.status] += 1

    threads = [threading.Thread(target=guess, args=(n,)) for n in range(attempts)]
    for thread in threads:
        thread.start()
        time.sleep(0.05)
    for thread in threads:
        thread.join()
    took = time.monotonic() - started
    reached = sum(v for k, v in statuses.items() if k != 429)
    # nginx's limit_req with nodelay lets burst + 1 through at once and one more each 1/rate
    # seconds, + 1 for its rounding to milliseconds.
    rate, burst = fleet.nginx_setting("nginx_login_rate"), fleet.nginx_setting("nginx_login_burst")
    count, unit = rate.removesuffix("r/s").removesuffix("r/m"), rate[-1]
    per_second = float(count) / (60 if unit == "m" else 1)
    allowed = burst + 1 + int(per_second * took) + 1
    return Check(
        "security", "brute-force", f"{attempts} sign-in attempts with wrong passwords from one "
        f"address in {took:.1f} s", attempts,
        f"{statuses[429]} throttled (429), {reached} reached the app "
        f"({dict(statuses)}; at most {allowed} may)",
        statuses[429] > 0 and reached <= allowed, reproduce("brute-force"),
        [f"timing bound: measured {reached} of {attempts} reached the app in {took:.1f} s, "
         f"bound {allowed} (from nginx_login_burst {burst} + 1 + nginx_login_rate {rate} x "
         f"{took:.1f} s + 1 for rounding)"],
    )  # fmt: skip


def signed_in_client(fleet: Fleet) -> Client:
    client = Client(fleet.site, fleet.lb_address, str(fleet.root_pem()))
    client.sign_in(*fleet.admin)
    return client


__all__ = ["Path"]
