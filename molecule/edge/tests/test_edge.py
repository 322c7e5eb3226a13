"""The edge roles (nginx, certbot), seen from a client that trusts only Pebble's root.

Each lb host under test (group `targets`) serves its own name (vars.yml); edge-lb13 also
shares its certificate with edge-lbpeer, whose tests run with edge-lb13's. The tests run in
file order on one xdist worker: the limits count the probe's requests, the renewals come
after the TLS scans, the bad input after the renewals.
"""

from __future__ import annotations

import json
import re
import secrets
import time
import uuid
from collections import Counter
from concurrent.futures import ThreadPoolExecutor

import pytest
from conftest import (
    add_to_summary,
    host,
    hosts_in,
    patience,
    run_playbook,
    timing,
    wait_until,
)
from edge import (
    PROBE_DIR,
    REPOSITORY,
    ROOT_CA,
    VARS_FILE,
    Burst,
    ansible_playbook,
    burst,
    curl,
    install_probe_files,
    json_report,
    keep_artifact,
    limit_message,
    nginx_setting,
    own_name,
    peers,
    rate_limit_bound,
    run_with_bad_inputs,
    serial_after_reload,
    served_serial,
    site,
)
from testinfra.host import Host

CSP = (
    "default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' data:; "
    "connect-src 'self'; frame-ancestors 'none'; base-uri 'self'; form-action 'self'"
)
HSTS = "max-age=63072000; includeSubDomains"


@pytest.fixture(scope="session")
def client(probe: Host) -> Host:
    """The probe, with the scripts it runs and Pebble's root in place."""
    install_probe_files(probe)
    return probe


# Hosts whose testssl.sh scan this worker has started.
_testssl_started: set[str] = set()


@pytest.fixture
def testssl_scan(client: Host, target: str) -> str:
    """testssl.sh takes longest of all the checks, so it runs in the background on the probe
    from the first test of its host on, beside the host's other checks, and its test collects
    the result. Nothing that runs meanwhile changes what it looks at: the certificate is only
    renewed after the testssl test. Returns the scan's unit on the probe."""
    unit = f"edge-testssl-{target}"
    if target not in _testssl_started:
        stem = f"{PROBE_DIR}/testssl-{target}"
        client.run(f"rm -f {stem}.json {stem}.log; systemctl reset-failed {unit}")
        # Every check but the client simulation, which only lists which clients connect.
        started = client.run(
            f"systemd-run --unit {unit} --collect testssl --quiet --color 0 --warnings off "
            f"--add-ca {ROOT_CA} --protocols --std --fs --server-preference --server-defaults "
            f"--headers --vulnerable --jsonfile {stem}.json --logfile {stem}.log "
            f"https://{own_name(target)}"
        )
        assert started.rc == 0, started.stderr
        _testssl_started.add(target)
    return unit


def headers_of(raw: str) -> dict[str, list[str]]:
    """Header lines of the response at the start of `raw` (curl's --dump-header output,
    maybe followed by the body), by lowercase name."""
    found: dict[str, list[str]] = {}
    for line in raw.split("\r\n\r\n", 1)[0].splitlines()[1:]:
        name, _, value = line.partition(":")
        found.setdefault(name.strip().lower(), []).append(value.strip())
    return found


def status_line(raw: str) -> str:
    return raw.lstrip().splitlines()[0].strip()


# --- TLS and HTTP ---------------------------------------------------------------------------


def test_https_serves_the_pebble_certificate_over_http2(
    client: Host, target: str, testssl_scan: str
) -> None:
    name = own_name(target)
    rc, out, err = curl(
        client, f"--http2 -o /dev/null -w '%{{http_code}} %{{http_version}}' https://{name}/"
    )
    assert rc == 0, err
    assert out == "200 2"
    chain = client.run(
        f"openssl s_client -connect {name}:443 -servername {name} -CAfile {ROOT_CA} "
        "-verify_return_error </dev/null 2>/dev/null "
        "| openssl x509 -noout -issuer -ext subjectAltName"
    )
    assert chain.rc == 0, chain.stderr
    assert "Pebble Intermediate CA" in chain.stdout
    for served in site(target)["names"]:
        assert f"DNS:{served}" in chain.stdout


def test_http_redirects_to_https_but_answers_acme_challenges(client: Host, target: str) -> None:
    name = own_name(target)
    rc, out, err = curl(
        client, f"-o /dev/null -w '%{{http_code}} %{{redirect_url}}' 'http://{name}/a/b?c=1'"
    )
    assert rc == 0, err
    assert out == f"301 https://{name}/a/b?c=1"
    # A challenge file in the webroot is served as it is over plain HTTP.
    token = secrets.token_urlsafe(24)
    server = host(site(target)["issuer"])
    webroot = "/var/www/acme/.well-known/acme-challenge"
    assert server.run(f"mkdir -p {webroot} && echo {token}.key > {webroot}/{token}").rc == 0
    try:
        rc, out, err = curl(client, f"--fail http://{name}/.well-known/acme-challenge/{token}")
        assert rc == 0, err
        assert out.strip() == f"{token}.key"
    finally:
        server.run(f"rm -f {webroot}/{token}")


def test_names_we_do_not_serve_get_nothing(client: Host, target: str) -> None:
    address = client.run(f"getent hosts {own_name(target)}").stdout.split()[0]
    # Port 80: the connection is reset without an answer (curl: 56, or 52 if it saw a close).
    rc, out, err = curl(client, f"-H 'Host: elsewhere.example' http://{address}/")
    assert rc in (52, 56), err
    assert out == ""
    # Port 443: no certificate is shown to a client naming another site, or none.
    for sni in ("-servername elsewhere.example", "-noservername"):
        handshake = client.run(f"openssl s_client -connect {address}:443 {sni} </dev/null")
        assert handshake.rc != 0
        assert "BEGIN CERTIFICATE" not in handshake.stdout


def test_security_headers_on_every_answer(client: Host, target: str) -> None:
    name = own_name(target)
    # An answer of the app (which sends weaker copies of some of these headers), and an
    # error nginx makes itself.
    for path in ("/", "/ws/no-origin/"):
        rc, out, err = curl(client, f"-o /dev/null --dump-header - https://{name}{path}")
        assert rc == 0, err
        headers = headers_of(out)
        assert headers["strict-transport-security"] == [HSTS]
        assert headers["content-security-policy"] == [CSP]
        assert headers["x-content-type-options"] == ["nosniff"]
        assert headers["x-frame-options"] == ["DENY"]
        assert headers["referrer-policy"] == ["same-origin"]
        assert "camera=()" in headers["permissions-policy"][0]
        assert headers["server"] == ["nginx"], "server_tokens must hide the version"


def test_the_app_is_told_who_asked_and_how(client: Host, target: str) -> None:
    name = own_name(target)
    probe_address = client.run("hostname -I").stdout.split()[0]
    rc, out, err = curl(client, f"-H 'X-Forwarded-For: 203.0.113.66' https://{name}/whoami")
    assert rc == 0, err
    seen = json.loads(out)["headers"]
    assert seen["host"] == name
    assert seen["x-forwarded-proto"] == "https"
    assert seen["x-forwarded-host"] == name
    # nginx is the first hop: what the client claims is dropped, its address is passed.
    assert seen["x-forwarded-for"] == probe_address
    assert len(seen["x-request-id"]) == 32


def test_large_bodies_are_refused(client: Host, target: str) -> None:
    name = own_name(target)
    # One file per target: both lb hosts run this test at once on the same probe, and a body
    # rewritten while curl sends it no longer matches its Content-Length (nginx: 400).
    body = f"{PROBE_DIR}/2m-{target}.bin"
    client.run(f"head -c 2097152 /dev/zero > {body}")
    rc, out, err = curl(
        client, f"-o /dev/null -w '%{{http_code}}' --data-binary @{body} https://{name}/"
    )
    assert rc == 0, err
    assert out == "413"


def test_static_files_are_cached_on_the_lb(client: Host, target: str) -> None:
    name = own_name(target)
    url = f"https://{name}/static/app.{uuid.uuid4().hex}.js"
    answers = []
    for _ in range(2):
        rc, out, err = curl(client, f"--dump-header - {url}")
        assert rc == 0, err
        answers.append(headers_of(out))
    first, second = answers
    assert first["x-cache-status"] == ["MISS"]
    assert second["x-cache-status"] == ["HIT"]
    # The app was asked once: the second answer is the lb's copy.
    assert second["x-upstream-hits"] == ["1"]
    assert second["cache-control"] == ["max-age=315360000, public, immutable"]
    assert second["strict-transport-security"] == [HSTS]


def test_ops_endpoints_answer_the_lb_only(client: Host, target: str) -> None:
    name = own_name(target)
    server = host(target)
    for path in ("/readyz", "/metrics", "/metrics/", "/%72eadyz"):
        rc, out, err = curl(client, f"-o /dev/null -w '%{{http_code}}' https://{name}{path}")
        assert rc == 0, err
        assert out == "403", f"{path} from outside"
        local = server.run(
            f"curl -sS -k -o /dev/null -w '%{{http_code}}' --resolve {name}:443:127.0.0.1 "
            f"https://{name}{path}"
        )
        assert local.stdout == "200", f"{path} from the lb itself: {local.stderr}"
    rc, out, err = curl(client, f"-o /dev/null -w '%{{http_code}}' https://{name}/healthz")
    assert out == "200", err


# --- WebSockets -----------------------------------------------------------------------------


def websocket(client: Host, name: str, origin: str) -> dict:
    option = f"--origin '{origin}'" if origin else ""
    result = client.run(f"python3 {PROBE_DIR}/ws_client.py --cafile {ROOT_CA} {option} {name}")
    assert result.rc == 0, result.stderr
    return json_report(result.stdout)


def raw_handshake(client: Host, name: str, origin: str | None) -> str:
    """The status line and headers nginx answers a WebSocket upgrade with (read as soon as
    they have come, however long the machine takes)."""
    option = f"--origin '{origin}'" if origin else ""
    result = client.run(
        f"python3 {PROBE_DIR}/ws_client.py --cafile {ROOT_CA} --head {option} {name}"
    )
    assert result.rc == 0, result.stderr
    return json_report(result.stdout)["head"] + "\r\n\r\n"


def test_websocket_upgrade_returns_101_and_echoes_frames(client: Host, target: str) -> None:
    name = own_name(target)
    handshake = raw_handshake(client, name, f"https://{name}")
    assert status_line(handshake).startswith("HTTP/1.1 101"), handshake
    assert headers_of(handshake)["upgrade"] == ["websocket"]
    assert websocket(client, name, f"https://{name}") == {
        "status": 101,
        "text_echoed": True,
        "binary_echoed": True,
    }


def test_cross_origin_websocket_is_refused(client: Host, target: str) -> None:
    name = own_name(target)
    for origin in ("https://evil.example", f"http://{name}", f"https://{name}.evil.example"):
        assert websocket(client, name, origin) == {"status": 403}, origin
        handshake = raw_handshake(client, name, origin)
        assert status_line(handshake).startswith("HTTP/1.1 403"), origin
        assert headers_of(handshake)["strict-transport-security"] == [HSTS]
    # A handshake without Origin is refused too, as the app refuses it.
    assert websocket(client, name, "") == {"status": 403}


# --- Abuse limits ---------------------------------------------------------------------------


def passed_and_refused(sent: Burst) -> tuple[list[str], list[str]]:
    """The files of the answers that passed (200) and of those refused (429); any other
    status fails the test."""
    codes = [code for code, _ in sent.answers]
    assert set(codes) <= {"200", "429"}, codes
    return (
        [path for code, path in sent.answers if code == "200"],
        [path for code, path in sent.answers if code == "429"],
    )


def test_sign_in_is_rate_limited_with_our_429_page(client: Host, target: str) -> None:
    """nginx_login_rate (10r/m) with nginx_login_burst (5), one budget for the app's sign-in
    and Django admin's: of 24 requests sent at once, half to each, between burst + 1 and
    burst + 1 + rate x the seconds they took (+ 1 for rounding) pass, counted together (two
    budgets would let at least 12 through), and every refusal is our 429 page."""
    name = own_name(target)
    rate, size = nginx_setting("nginx_login_rate"), nginx_setting("nginx_login_burst")
    urls = [f"https://{name}{path}" for _ in range(12) for path in ("/login/", "/admin/login/")]
    sent = burst(client, urls)
    seconds = (sent.ended_ns - sent.began_ns) / 1e9
    passed, refused = passed_and_refused(sent)
    bound = rate_limit_bound(rate, size, seconds)
    message = limit_message(len(passed), len(urls), seconds, bound, rate, size)
    add_to_summary(f"{target} sign-in limit: {message}")
    assert size + 1 <= len(passed) <= bound, message
    assert any("/admin/login/" in urls[int(path.rsplit("/", 1)[1])] for path in refused), (
        "Django admin's sign-in has a budget of its own: " + message
    )
    page = client.run(f"cat {refused[0]}").stdout
    assert status_line(page).endswith("429"), page
    assert headers_of(page)["strict-transport-security"] == [HSTS]
    assert "<title>Too many requests - Parley</title>" in page


def test_api_is_rate_limited_with_a_json_429(client: Host, target: str) -> None:
    """nginx_api_rate (10r/s) with nginx_api_burst (20): bursts of 60 requests at once,
    until one is refused, let between burst + 1 and burst + 1 + rate x the seconds from the
    first request to the last answer (+ 1 for rounding) through; refusals are JSON. Only a
    machine too slow to send 60 requests in (60 - 21) / 10 s sends a second burst."""
    name = own_name(target)
    rate, size = nginx_setting("nginx_api_rate"), nginx_setting("nginx_api_burst")
    sent: list[Burst] = []
    refused: list[str] = []
    deadline = time.monotonic() + patience(60)
    while not refused and time.monotonic() < deadline:
        sent.append(burst(client, [f"https://{name}/api/ping"] * 60))
        refused += passed_and_refused(sent[-1])[1]
    passed = sum(len(passed_and_refused(each)[0]) for each in sent)
    seconds = (sent[-1].ended_ns - sent[0].began_ns) / 1e9
    bound = rate_limit_bound(rate, size, seconds)
    message = limit_message(passed, 60 * len(sent), seconds, bound, rate, size)
    add_to_summary(f"{target} API limit: {message}")
    assert refused, "no request was refused: " + message
    assert size + 1 <= passed <= bound, message
    answer = client.run(f"cat {refused[0]}").stdout
    assert '{"error": "rate_limited"' in answer, answer


def test_websockets_per_address_are_limited(client: Host, target: str) -> None:
    name = own_name(target)
    held = client.run(
        f"python3 {PROBE_DIR}/ws_client.py --cafile {ROOT_CA} --origin https://{name} "
        f"--hold 50 {name}"
    )
    assert held.rc == 0, held.stderr
    assert json_report(held.stdout) == {"opened": 50, "refused_status": 429}


def test_the_lb_itself_is_not_rate_limited(target: str) -> None:
    name = own_name(target)
    local = host(target).run(
        f"curl -sS -k --resolve {name}:443:127.0.0.1 -w '%{{http_code}}\\n' "
        + f"-o /dev/null https://{name}/login/ " * 20
    )
    assert local.rc == 0, local.stderr
    assert set(local.stdout.split()) == {"200"}


# --- The whole of it from outside --------------------------------------------------------------


def test_only_ssh_http_and_https_are_reachable(client: Host, target: str) -> None:
    scan = client.run(
        f"nmap -Pn -n -sT -p- --min-rate 10000 --max-retries 1 --host-timeout 120s -oG - {target}"
    )
    assert scan.rc == 0, scan.stderr
    ports = [line for line in scan.stdout.splitlines() if "Ports:" in line]
    assert len(ports) == 1, scan.stdout
    listed = ports[0].split("Ports:", 1)[1].split("Ignored State")[0]
    opened = {int(entry.split("/")[0]) for entry in listed.split(",") if "/open/" in entry}
    assert opened == {22, 80, 443}, scan.stdout
    assert "filtered (65532)" in ports[0], scan.stdout


def test_sslyze_finds_the_mozilla_intermediate_profile(client: Host, target: str) -> None:
    name = own_name(target)
    scan = client.run(
        f"sslyze --mozilla_config=intermediate --certinfo_ca_file {ROOT_CA} {name}:443"
    )
    keep_artifact(f"{target}-sslyze.txt", scan.stdout + scan.stderr)
    verdict = compliance(scan.stdout, name)
    add_to_summary(f"{target} sslyze --mozilla_config=intermediate: {verdict}")
    assert scan.rc == 0, scan.stdout[-3000:]
    assert f"{name}:443: OK - Compliant." in scan.stdout


def compliance(sslyze_output: str, name: str) -> str:
    """sslyze's verdict line on the Mozilla configuration ("NAME:443: OK - Compliant.")."""
    verdict = re.search(rf"^\s*({re.escape(name)}:443: .+)$", sslyze_output, re.MULTILINE)
    return verdict.group(1) if verdict else "no verdict (sslyze failed; see its artifact)"


# testssl.sh's severities, most serious first.
SEVERITIES = ("CRITICAL", "HIGH", "MEDIUM", "LOW", "WARN", "OK", "INFO")


def test_testssl_reports_nothing_high_or_critical(
    client: Host, target: str, testssl_scan: str
) -> None:
    report = f"{PROBE_DIR}/testssl-{target}.json"
    # Until the background scan (started with the host's first test) has finished.
    wait_until(
        "testssl.sh finishing",
        lambda: client.run(f"systemctl is-active --quiet {testssl_scan}").rc != 0,
        300,
        "a scan's time here, 5 minutes",
    )
    log = client.run(f"cat {PROBE_DIR}/testssl-{target}.log").stdout
    keep_artifact(f"{target}-testssl.txt", log)
    findings = json.loads(client.file(report).content_string)
    counts = Counter(f["severity"] for f in findings)
    add_to_summary(
        f"{target} testssl.sh: {len(findings)} findings: "
        + ", ".join(f"{severity} {counts[severity]}" for severity in SEVERITIES)
    )
    assert len(findings) > 50, log[-3000:]
    serious = [f for f in findings if f["severity"] in ("HIGH", "CRITICAL")]
    assert serious == [], serious
    # The scan did see our server: TLS 1.3 offered, TLS 1.0 not.
    by_id = {f["id"]: f["finding"] for f in findings}
    assert by_id["TLS1_3"].startswith("offered"), by_id["TLS1_3"]
    assert by_id["TLS1"] == "not offered"
    # No OCSP stapling: Let's Encrypt shut its OCSP responders down in 2025. (Pebble's
    # certificates name a responder, so testssl.sh rates the absence LOW.)
    assert by_id["OCSP_stapling"] == "not offered"
    # testssl.sh's session ticket findings (TLS_session_ticket, sessionresumption_ticket)
    # cannot tell whether tickets are off: with ssl_session_tickets off, OpenSSL still sends
    # TLS 1.3 tickets that are only keys into nginx's session cache, and whether testssl.sh
    # 3.0 sees one depends on timing (it did on edge-lb13, not on edge-lb12).
    # test_session_tickets_are_off looks at the tickets themselves.


def test_session_tickets_are_off(client: Host, target: str) -> None:
    """No stateless (RFC 5077) session tickets: one is the session's keys encrypted with a
    ticket key that lives far longer than any session, and whoever gets that key decrypts
    every recorded session since. TLS 1.2's ServerHello does not offer them; TLS 1.3's
    tickets are stateful, a 32-byte key into nginx's session cache, where a stateless ticket
    carries the whole session (about 200 bytes)."""
    name = own_name(target)
    offered, size = session_ticket(client, name, "-tls1_2")
    assert not offered and size == 0, (offered, size)
    _, size = session_ticket(client, name, "-tls1_3")
    assert size <= STATEFUL_TICKET_MAX, size


# Bytes a TLS 1.3 ticket that only names a cached session may take.
STATEFUL_TICKET_MAX = 48


def session_ticket(client: Host, name: str, version: str) -> tuple[bool, int]:
    """Handshake with `name` in one TLS version, waiting a second for TLS 1.3's tickets:
    whether the ServerHello offered RFC 5077 tickets, and the size in bytes of the last
    ticket the client kept (0: none)."""
    session = f"{PROBE_DIR}/session-{name}{version}.pem"
    handshake = client.run(
        f"rm -f {session}; sleep 1 | openssl s_client {version} -connect {name}:443 "
        f"-servername {name} -CAfile {ROOT_CA} -verify_return_error -tlsextdebug "
        f"-sess_out {session}"
    )
    assert handshake.rc == 0, handshake.stderr[-500:]
    offered = 'TLS server extension "session ticket"' in handshake.stdout
    text = client.check_output(f"openssl sess_id -in {session} -noout -text")
    dump = text.split("TLS session ticket:", 1)[1] if "TLS session ticket:" in text else ""
    # BIO_dump lines: "    0000 - 0a 1b ...-... 3f   ascii"; the hex takes 47 columns.
    rows = re.findall(r"^\s+[0-9a-f]{4} - (.{1,47})", dump, flags=re.MULTILINE)
    return offered, sum(len(re.findall(r"[0-9a-f]{2}", row)) for row in rows)


# --- Logs -----------------------------------------------------------------------------------


def test_json_access_log_survives_rotation(client: Host, target: str) -> None:
    name = own_name(target)
    server = host(target)

    def logged(path: str) -> dict:
        rc, _, err = curl(client, f"-o /dev/null https://{name}{path}")
        assert rc == 0, err
        lines = server.run(f'grep -F \'"uri":"{path}"\' /var/log/nginx/access.log')
        assert lines.rc == 0, f"{path} is not in the current access.log"
        return json.loads(lines.stdout.splitlines()[-1])

    entry = logged(f"/log-check/{uuid.uuid4().hex}")
    assert entry["status"] == 200
    assert isinstance(entry["request_time"], float)
    assert float(entry["upstream_response_time"]) >= 0
    assert entry["upstream_addr"].endswith(":8000")
    assert entry["protocol"] == "HTTP/2.0"
    assert entry["tls"] in ("TLSv1.2", "TLSv1.3")
    rotated = server.run("logrotate --force /etc/logrotate.d/nginx")
    assert rotated.rc == 0, rotated.stderr
    assert server.file("/var/log/nginx/access.log.1").exists
    # nginx writes to the new file after the rotation.
    assert logged(f"/log-check/{uuid.uuid4().hex}")["status"] == 200


# --- Certificates: issued once, renewed by the timer's service, shared ----------------------------


def test_certbot_timer_alone_schedules_renewals(target: str) -> None:
    server = host(target)
    assert server.service("certbot.timer").is_enabled
    assert server.service("certbot.timer").is_running
    jobs = server.run("grep -rl certbot /etc/cron.d /etc/cron.daily /etc/crontab /var/spool/cron")
    # Only the package's cron file, which does nothing where systemd runs.
    assert jobs.stdout.split() in ([], ["/etc/cron.d/certbot"]), jobs.stdout
    if jobs.stdout.strip():
        assert "! -d /run/systemd/system" in server.file("/etc/cron.d/certbot").content_string


def test_certbot_service_is_confined(target: str) -> None:
    analysis = host(target).run("systemd-analyze security --threshold=20 certbot.service")
    assert analysis.rc == 0, analysis.stdout[-2000:]


def test_a_later_run_asks_for_no_new_certificate(client: Host, target: str) -> None:
    """With a valid certificate in place the role orders nothing (Let's Encrypt limits how
    often one set of names may be issued)."""
    server = host(target)
    issued = "ls /etc/letsencrypt/archive/parley/ | grep -c '^cert'"
    before = (server.check_output(issued), served_serial(client, own_name(target)))
    play = {
        "name": "Apply certbot again",
        "hosts": target,
        "gather_facts": False,
        "vars_files": [str(VARS_FILE)],
        "roles": [{"role": "certbot"}],
    }
    run = run_playbook([play])
    assert run.rc == 0, run.output
    assert run.stats[target]["changed"] == 0, run.stats
    assert (server.check_output(issued), served_serial(client, own_name(target))) == before


def test_lb_hosts_sharing_a_certificate_serve_the_issuers(client: Host, target: str) -> None:
    sharing = peers(target)
    if not sharing:
        pytest.skip(f"no lb host shares {target}'s certificate")
    issuer_serial = served_serial(client, own_name(target))
    for peer in sharing:
        peer_name = own_name(peer)
        assert served_serial(client, peer_name) == issuer_serial
        # The peer has no challenge files of its own: it forwards to the issuing host, which
        # is how Pebble validated peer_name (it resolves to the peer only).
        token = secrets.token_urlsafe(24)
        webroot = "/var/www/acme/.well-known/acme-challenge"
        assert host(target).run(f"mkdir -p {webroot} && echo {token}.k > {webroot}/{token}").rc == 0
        try:
            rc, out, err = curl(
                client, f"--fail http://{peer_name}/.well-known/acme-challenge/{token}"
            )
            assert rc == 0, err
            assert out.strip() == f"{token}.k"
        finally:
            host(target).run(f"rm -f {webroot}/{token}")
        rc, out, err = curl(
            client,
            f"-o /dev/null -w '%{{http_code}}' http://{peer_name}/.well-known/acme-challenge/nothere",
        )
        assert out == "404", err
        if site(peer).get("tls_profile") == "modern":
            assert_modern_profile(client, peer, peer_name)


def assert_modern_profile(client: Host, peer: str, name: str) -> None:
    """TLS 1.3 only, and compliant with Mozilla's modern configuration in everything that is
    up to the server. The modern profile also wants the certificate signed with ECDSA; that
    is up to the CA, and Pebble's intermediate signs with RSA (Let's Encrypt signs ECDSA keys
    with its ECDSA intermediates), so that one finding, about the CA, is expected here."""
    for version, accepted in (("-tls1_2", False), ("-tls1_3", True)):
        handshake = client.run(
            f"openssl s_client {version} -connect {name}:443 -servername {name} "
            f"-CAfile {ROOT_CA} -verify_return_error </dev/null"
        )
        assert (handshake.rc == 0) is accepted, (version, handshake.stderr[-500:])
    scan = client.run(f"sslyze --mozilla_config=modern --certinfo_ca_file {ROOT_CA} {name}:443")
    keep_artifact(f"{peer}-sslyze-modern.txt", scan.stdout + scan.stderr)
    verdict = scan.stdout.split("COMPLIANCE AGAINST", 1)[-1]
    issues = set(re.findall(r"^\s+\* (\w+):", verdict, flags=re.MULTILINE))
    add_to_summary(
        f"{peer} sslyze --mozilla_config=modern: {compliance(scan.stdout, name)} "
        f"on {', '.join(sorted(issues)) or 'nothing'} (expected: only the CA's signature"
        " algorithm, Pebble signs with RSA)"
    )
    assert issues == {"certificate_signatures"}, verdict
    assert "Deployed certificate signatures are {'sha256WithRSAEncryption'}" in verdict


FORCE_RENEWAL = """[Service]
ExecStart=
ExecStart=/usr/bin/certbot -q renew --no-random-sleep-on-renew --force-renewal
"""


def force_renewal(server: Host) -> str:
    """Start certbot.service as certbot.timer does, with --force-renewal added for this once;
    returns what certbot.service logged."""
    dropin = "/run/systemd/system/certbot.service.d/zz-molecule-force-renewal.conf"
    try:
        assert server.run(f"mkdir -p {dropin.rsplit('/', 1)[0]}").rc == 0
        assert server.run(f"printf '%s' '{FORCE_RENEWAL}' > {dropin}").rc == 0
        assert server.run("systemctl daemon-reload").rc == 0
        renewal = server.run("systemctl start certbot.service")
        journal = server.run("journalctl -u certbot.service -n 30 --no-pager").stdout
        assert renewal.rc == 0, journal
        return journal
    finally:
        server.run(f"rm -f {dropin} && systemctl daemon-reload")


def test_a_renewal_does_not_reload_an_nginx_that_fails_its_check(client: Host) -> None:
    target = hosts_in("targets")[0]
    server = host(target)
    name = own_name(target)
    before = served_serial(client, name)
    broken = "/etc/nginx/conf.d/zz-molecule-broken.conf"
    assert server.run(f"echo 'parley_no_such_directive on;' > {broken}").rc == 0
    try:
        force_renewal(server)
        log = server.check_output("tail -n 40 /var/log/letsencrypt/letsencrypt.log")
        assert "nginx -t failed, nginx keeps serving the previous certificate" in log
        assert served_serial(client, name) == before, "nginx reloaded a failing configuration"
    finally:
        server.run(f"rm -f {broken}")
    # Fixed, the next reload takes the renewed certificate.
    assert server.run("systemctl reload nginx").rc == 0
    assert serial_after_reload(client, name, before) != before, timing(
        "the old serial still served", f"{patience(15):.0f} s", "a reload's time"
    )


def loop_progress(client: Host, path: str) -> dict[str, int]:
    """Requests per name the request loop has made so far (none before its first round)."""
    read = client.run(f"cat {path}")
    return json.loads(read.stdout) if read.rc == 0 else {}


def test_forced_renewal_changes_the_serial_without_a_failed_request(
    client: Host, target: str
) -> None:
    """certbot.service (as certbot.timer starts it: confined, with the ACME CA and the deploy
    hook) renews with --force-renewal while a bounded loop of fresh HTTPS connections runs;
    lb hosts sharing the certificate get it from playbooks/renew-certs.yml. The test waits
    until the loop has made five requests to each name before the renewal starts, and five
    more after every host serves the new certificate: what the loop saw, not a time."""
    rounds = 5
    server = host(target)
    names = [own_name(target)] + [own_name(p) for p in peers(target)]
    before = {name: served_serial(client, name) for name in names}
    stop_file = f"{PROBE_DIR}/renewal-{target}.stop"
    progress = f"{PROBE_DIR}/renewal-{target}.progress"
    client.run(f"rm -f {stop_file} {progress}")
    # Bounds that only end a loop the test lost track of.
    loop = (
        f"python3 {PROBE_DIR}/request_loop.py --cafile {ROOT_CA} --stop-file {stop_file} "
        f"--progress {progress} --max-requests 100000 --max-seconds 1800 {' '.join(names)}"
    )

    def made_at_least(count: int) -> dict[str, int]:
        seen = loop_progress(client, progress)
        return seen if seen and min(seen.values()) >= count else {}

    with ThreadPoolExecutor(max_workers=1) as pool:
        running = pool.submit(client.run, loop)
        try:
            wait_until("the loop's first requests", lambda: made_at_least(rounds), 60, "a start")
            force_renewal(server)
            after_renewal = serial_after_reload(client, own_name(target), before[own_name(target)])
            assert after_renewal != before[own_name(target)], "nginx still serves the old one " + (
                timing("no new serial", f"{patience(15):.0f} s", "a reload's time")
            )
            if peers(target):
                shared = ansible_playbook(
                    REPOSITORY / "playbooks" / "renew-certs.yml",
                    "--limit",
                    ",".join([target, *peers(target)]),
                )
                assert shared.returncode == 0, shared.stdout[-3000:] + shared.stderr[-2000:]
            renewed = max(loop_progress(client, progress).values())
            wait_until(
                "the loop's requests after the renewal",
                lambda: made_at_least(renewed + rounds),
                60,
                "five requests per name",
            )
        finally:
            client.run(f"touch {stop_file}")
        finished = running.result()
    assert finished.rc == 0, finished.stderr
    report = json_report(finished.stdout)
    assert report["stopped_by"] == "stop file", report
    for name in names:
        seen = report["names"][name]
        assert seen["failures"] == [], f"{name}: {seen['failures'][:5]}"
        assert seen["requests"] >= 2 * rounds, seen
        assert seen["serials"][0] == before[name], seen
        assert seen["serials"][-1] == after_renewal, (name, seen)
        assert served_serial(client, name) == after_renewal


# --- Bad input and broken configuration ---------------------------------------------------------

# Bad input is tried on the first target (nginx) and the last (certbot); a broken
# configuration on the last. Like every test here they run in file order, after the renewals.
FIRST_TARGET = hosts_in("targets")[0]
LAST_TARGET = hosts_in("targets")[-1]
SNAPSHOT = "find /etc /var/www -xdev -printf '%p %s %T@\\n' | sort | sha256sum"


def test_a_configuration_nginx_rejects_never_reaches_it(client: Host) -> None:
    target = LAST_TARGET
    server = host(target)
    site_file = "/etc/nginx/sites-available/parley.conf"
    before = server.check_output(f"sha256sum {site_file}")
    play = {
        "name": "Apply nginx with a directive nginx does not know",
        "hosts": target,
        "vars_files": [str(VARS_FILE)],
        "roles": [{"role": "nginx"}],
    }
    run = run_playbook(
        [{"name": "Gather the web tier's facts", "hosts": "web", "tasks": []}, play],
        extra_vars={"nginx_server_extra_directives": ["parley_no_such_directive on;"]},
    )
    assert run.rc != 0, run.output
    assert [t.split(" : ")[-1] for t in run.failed_tasks] == ["Write the chat site"], (
        run.failed_tasks
    )
    assert "failed to validate" in run.messages[0], run.messages
    assert run.stats[target]["changed"] == 0
    assert server.check_output(f"sha256sum {site_file}") == before
    _, out, err = curl(client, f"-o /dev/null -w '%{{http_code}}' https://{own_name(target)}/")
    assert out == "200", err
    # The running nginx is untouched, and would reload the configuration on disk fine.
    assert server.run("nginx -t -q").rc == 0
    # What the check said, with the path the file was meant for.
    server.run(f"sed 's/^}}$/parley_no_such_directive on; }}/' {site_file} > /root/broken.conf")
    check = server.run("nginx-check-conf /root/broken.conf /etc/nginx/sites-enabled/parley.conf")
    assert check.rc == 1
    assert 'unknown directive "parley_no_such_directive"' in check.stderr, check.stderr
    assert "/etc/nginx/sites-enabled/parley.conf" in check.stderr, check.stderr


# Every check of the roles' validate.yml, and one the argument specs make: (bad variables,
# the check that must fail, words its message must hold).
NGINX_BAD_INPUT = {
    "server-name-with-a-space": (
        {"nginx_server_names": ["chat 12.parley.test"]},
        "Check the server names",
        "chat 12.parley.test",
    ),
    "duplicate-server-names": (
        {"nginx_server_names": ["chat12.parley.test", "chat12.parley.test"]},
        "Check the server names",
        "distinct",
    ),
    "upstream-port-out-of-range": (
        {"nginx_upstream_port": 70000},
        "Check the ports and counts",
        "nginx_upstream_port must be 1-65535",
    ),
    "rate-not-in-nginx-syntax": (
        {"nginx_login_rate": "10 per minute"},
        "Check the request rates",
        "nginx_login_rate",
    ),
    "size-not-in-nginx-syntax": (
        {"nginx_client_max_body_size": "1 MB"},
        "Check the sizes",
        "nginx_client_max_body_size",
    ),
    "location-without-slashes": (
        {"nginx_websocket_location": "ws"},
        "Check the locations",
        "nginx_websocket_location",
    ),
    "relative-certificate-path": (
        {"nginx_tls_certificate": "fullchain.pem"},
        "Check the paths",
        "nginx_tls_certificate",
    ),
    "header-with-a-quote": (
        {"nginx_referrer_policy": 'same-origin"; evil'},
        "Check the header values",
        "nginx_referrer_policy",
    ),
    "malformed-cidr": (
        {"nginx_ops_allow_cidrs": ["10.0.0.300/24"]},
        "Check the networks exempt from limits and allowed to the ops endpoints",
        "10.0.0.300/24",
    ),
    "two-directives-in-one-entry": (
        {"nginx_server_extra_directives": ["a on;\nb off;"]},
        "Check the extra directives",
        "one directive per entry",
    ),
    "empty-upstream-group": (
        {"nginx_upstream_group": "nosuchgroup"},
        "Check that the hosts the site points at are known",
        "nosuchgroup",
    ),
    "unknown-tls-profile": (
        {"nginx_tls_profile": "old"},
        "Validating arguments against arg spec 'main'",
        "nginx_tls_profile",
    ),
}
CERTBOT_BAD_INPUT = {
    "acme-url-not-https": (
        {"certbot_acme_directory": "http://edge-acme:14000/dir"},
        "Check the ACME directory URL",
        "https:// URL",
    ),
    "domain-with-a-space": (
        {"certbot_domains": ["chat 13.parley.test"]},
        "Check the domains",
        "chat 13.parley.test",
    ),
    "wildcard-domain": (
        {"certbot_domains": ["*.parley.test"]},
        "Check the domains",
        "*.parley.test",
    ),
    "malformed-email": (
        {"certbot_email": "ops at example"},
        "Check the contact address, certificate name and key type",
        "ops at example",
    ),
    "ca-bundle-not-pem": (
        {"certbot_acme_ca_bundle": "not a certificate"},
        "Check the ACME server's CA",
        "PEM",
    ),
    "relative-webroot": (
        {"certbot_webroot": "var/www/acme"},
        "Check the paths",
        "certbot_webroot",
    ),
    "issuer-not-in-inventory": (
        {"certbot_issuer": "lb-that-does-not-exist"},
        "Check the issuing host and the renewal switches",
        "lb-that-does-not-exist",
    ),
    "unknown-key-type": (
        {"certbot_key_type": "dsa"},
        "Validating arguments against arg spec 'main'",
        "certbot_key_type",
    ),
}


def bad_input_runs(role: str, target: str, good: dict, cases: dict) -> dict:
    """Run the role once with every case (on aliases of `target`); /etc must not change."""
    before = host(target).check_output(SNAPSHOT)
    refusals = run_with_bad_inputs(
        role, target, good, {case: bad for case, (bad, _, _) in cases.items()}
    )
    assert host(target).check_output(SNAPSHOT) == before, "the host changed"
    return refusals


@pytest.fixture(scope="module")
def nginx_refusals() -> dict:
    good = {"nginx_server_names": site(FIRST_TARGET)["names"], "nginx_acme_issuer": FIRST_TARGET}
    return bad_input_runs("nginx", FIRST_TARGET, good, NGINX_BAD_INPUT)


@pytest.fixture(scope="module")
def certbot_refusals() -> dict:
    good = {
        "certbot_domains": site(LAST_TARGET)["names"],
        "certbot_issuer": LAST_TARGET,
        "certbot_acme_directory": "https://edge-acme:14000/dir",
    }
    return bad_input_runs("certbot", LAST_TARGET, good, CERTBOT_BAD_INPUT)


def assert_refused(refusals: dict, case: str, cases: dict) -> None:
    _, failing_check, words = cases[case]
    refusal = refusals.get(case)
    assert refusal, f"{case} did not fail"
    assert refusal.failed_task.split(" : ")[-1].startswith(failing_check), refusal
    assert words in refusal.message, refusal
    assert refusal.changed == 0, refusal


@pytest.mark.parametrize("case", NGINX_BAD_INPUT)
def test_nginx_bad_input_fails_before_any_change(case: str, nginx_refusals: dict) -> None:
    assert_refused(nginx_refusals, case, NGINX_BAD_INPUT)


@pytest.mark.parametrize("case", CERTBOT_BAD_INPUT)
def test_certbot_bad_input_fails_before_any_change(case: str, certbot_refusals: dict) -> None:
    assert_refused(certbot_refusals, case, CERTBOT_BAD_INPUT)
