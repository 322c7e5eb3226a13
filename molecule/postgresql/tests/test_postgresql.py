"""The postgresql role, seen from an app host (postgresql-web), from an outsider (the probe),
from the database host's own loopback (the single-host layout) and, for what only the
superuser may read, from the server's own postgres account."""

from __future__ import annotations

import re

import pytest
from conftest import host, hosts_in, port_states, run_playbook, wait_until
from pg_client import (
    APP_PASSWORD,
    BACKUP_DIR,
    CA_ON_SERVER,
    CONVERGE_VARS,
    HOST_VARS,
    as_postgres,
    dumps,
    psql,
    run_project_playbook,
    trust_server_ca,
)
from testinfra.host import Host

TIMER_DROPIN = "/run/systemd/system/postgresql-backup.timer.d/molecule.conf"


@pytest.fixture(scope="session")
def web() -> Host:
    """An app host that is not a database host: pg_hba.conf and the firewall must let it in."""
    outside = [name for name in hosts_in("web") if name not in hosts_in("targets")]
    assert outside, "the scenario needs a host in group web that is not a target"
    return host(outside[0])


@pytest.fixture
def rootcert(web: Host, target: str) -> str:
    return trust_server_ca(web, target)


def test_app_user_logs_in_over_tls_with_its_password(web: Host, target: str, rootcert: str) -> None:
    rc, out = psql(
        web,
        "SELECT ssl, version FROM pg_stat_ssl WHERE pid = pg_backend_pid()",
        host_name=target,
        rootcert=rootcert,
    )
    assert rc == 0, out
    ssl, version = out.split("|")
    assert ssl == "t"
    assert version in {"TLSv1.2", "TLSv1.3"}
    # verify-full: the certificate names the host the client asked for and chains to the CA.
    rc, out = psql(web, "SELECT current_user", host_name=target, rootcert=rootcert)
    assert (rc, out) == (0, "parley")


def test_a_wrong_password_fails(web: Host, target: str, rootcert: str) -> None:
    rc, out = psql(
        web, "SELECT 1", host_name=target, rootcert=rootcert, password=APP_PASSWORD + "-wrong"
    )
    assert rc != 0
    assert 'password authentication failed for user "parley"' in out, out


def test_a_connection_without_tls_is_refused(web: Host, target: str) -> None:
    rc, out = psql(web, "SELECT 1", host_name=target, sslmode="disable")
    assert rc != 0
    assert "pg_hba.conf rejects connection" in out and "no encryption" in out, out


@pytest.mark.parametrize(
    ("user", "dbname"), [("postgres", "parley"), ("parley", "postgres"), ("parley", "template1")]
)
def test_other_roles_and_databases_are_refused(
    web: Host, target: str, rootcert: str, user: str, dbname: str
) -> None:
    rc, out = psql(web, "SELECT 1", host_name=target, rootcert=rootcert, user=user, dbname=dbname)
    assert rc != 0
    assert "pg_hba.conf rejects connection" in out, out


def test_only_app_hosts_get_through_the_firewall(probe: Host, web: Host, target: str) -> None:
    assert port_states(web, target, [5432]) == {5432: "open"}
    assert port_states(probe, target, [5432]) == {5432: "filtered"}
    rc, out = psql(probe, "SELECT 1", host_name=target, sslmode="require", connect_timeout=3)
    assert rc != 0, out


def test_pg_hba_refuses_an_outsider_even_through_an_open_firewall(probe: Host, target: str) -> None:
    """Defence in depth: open the port to the probe for a moment; pg_hba.conf still says no."""
    server = host(target)
    probe_ip = probe.check_output("hostname -I").split()[0]
    dropin = "/etc/nftables.d/90-molecule-outsider.nft"
    rule = f'tcp dport 5432 ip saddr {probe_ip} accept comment "molecule test"'
    assert server.run(f"printf '%s\\n' '{rule}' > {dropin} && systemctl reload nftables").rc == 0
    try:
        rc, out = psql(probe, "SELECT 1", host_name=target, sslmode="require")
        assert rc != 0
        assert f'pg_hba.conf rejects connection for host "{probe_ip}"' in out, out
    finally:
        assert server.run(f"rm -f {dropin} && systemctl reload nftables").rc == 0


def test_passwords_are_scram_and_no_rule_trusts_or_takes_md5(
    web: Host, target: str, rootcert: str
) -> None:
    rc, out = psql(web, "SHOW password_encryption", host_name=target, rootcert=rootcert)
    assert (rc, out) == (0, "scram-sha-256")
    # pg_hba_file_rules and pg_authid are the superuser's to read.
    weak_rules = as_postgres(
        target,
        "SELECT count(*) FROM pg_hba_file_rules "
        "WHERE auth_method IN ('trust', 'md5', 'password') OR error IS NOT NULL",
    )
    assert weak_rules == "0"
    methods = as_postgres(target, "SELECT DISTINCT auth_method FROM pg_hba_file_rules ORDER BY 1")
    assert methods.split() == ["peer", "reject", "scram-sha-256"]
    assert (
        as_postgres(target, "SELECT count(*) FROM pg_authid WHERE rolpassword LIKE 'md5%'") == "0"
    )
    verifier = as_postgres(target, "SELECT rolpassword FROM pg_authid WHERE rolname = 'parley'")
    assert verifier.startswith("SCRAM-SHA-256$")


def test_scram_and_the_addresses_come_from_our_configuration(
    web: Host, target: str, rootcert: str
) -> None:
    """scram-sha-256 is PostgreSQL's own default since 14, so SHOW alone would pass without the
    role: the setting must come from the role's file. pg_settings names the file to the
    superuser only."""
    config_dir = as_postgres(target, "SHOW config_file").rsplit("/", 1)[0]
    ours = f"{config_dir}/conf.d/50-parley.conf"
    sources = as_postgres(
        target,
        "SELECT name, source, sourcefile FROM pg_settings "
        "WHERE name IN ('listen_addresses', 'password_encryption') ORDER BY name",
    )
    assert sources.splitlines() == [
        f"listen_addresses|configuration file|{ours}",
        f"password_encryption|configuration file|{ours}",
    ]
    private = host(target).check_output("hostname -I").split()[0]
    rc, out = psql(web, "SHOW listen_addresses", host_name=target, rootcert=rootcert)
    assert (rc, out) == (0, f"{private},127.0.0.1,::1")


def test_the_app_role_has_no_special_powers(web: Host, target: str, rootcert: str) -> None:
    rc, out = psql(
        web,
        "SELECT rolsuper, rolcreatedb, rolcreaterole, rolreplication, rolbypassrls "
        "FROM pg_roles WHERE rolname = current_user",
        host_name=target,
        rootcert=rootcert,
    )
    assert (rc, out) == (0, "f|f|f|f|f")
    rc, out = psql(
        web,
        "SELECT pg_get_userbyid(datdba), has_database_privilege('public', datname, 'CONNECT') "
        "FROM pg_database WHERE datname = current_database()",
        host_name=target,
        rootcert=rootcert,
    )
    assert (rc, out) == (0, "parley|f")


def test_app_on_the_database_host_connects_over_loopback(target: str) -> None:
    """The single-host layout: the app beside PostgreSQL connects to 127.0.0.1, over TLS."""
    server = host(target)
    rc, out = psql(
        server,
        "SELECT ssl FROM pg_stat_ssl WHERE pid = pg_backend_pid()",
        host_name="127.0.0.1",
        rootcert=CA_ON_SERVER,
    )
    assert (rc, out) == (0, "t")


def test_memory_settings_follow_the_hosts_ram(web: Host, target: str, rootcert: str) -> None:
    memtotal_kib = int(host(target).check_output("awk '/^MemTotal:/ {print $2}' /proc/meminfo"))
    memtotal_mb = memtotal_kib // 1024
    rc, out = psql(
        web,
        "SELECT current_setting('shared_buffers'), current_setting('effective_cache_size'), "
        "current_setting('maintenance_work_mem'), current_setting('work_mem'), "
        "current_setting('max_connections')",
        host_name=target,
        rootcert=rootcert,
    )
    assert rc == 0, out
    expected_work_mem = max(int(memtotal_mb * 0.75 / (200 * 3)), 4)
    # One host overrides shared_buffers (molecule.yml); the others get a quarter of RAM. An
    # override equal to the derived value would prove nothing.
    derived = int(memtotal_mb * 0.25)
    override = HOST_VARS.get(target, {}).get("postgresql_shared_buffers_mb")
    assert override != derived
    shared_buffers = override or derived
    expected = [
        f"{shared_buffers}MB",
        f"{int(memtotal_mb * 0.75)}MB",
        f"{min(memtotal_mb // 16, 2048)}MB",
        f"{expected_work_mem}MB",
        "200",
    ]
    # PostgreSQL shows a round number of megabytes in the largest unit that fits (6144MB -> 6GB).
    assert [normalised_mb(v) for v in out.split("|")[:4]] == [
        normalised_mb(v) for v in expected[:4]
    ]
    assert out.split("|")[4] == expected[4]


def normalised_mb(value: str) -> int:
    number, unit = re.fullmatch(r"(\d+)(kB|MB|GB|TB)?", value).groups()  # type: ignore[union-attr]
    return int(number) * {"kB": 1 / 1024, "MB": 1, "GB": 1024, "TB": 1024 * 1024, None: 1}[unit]


def test_backup_timer_produces_a_dump(target: str) -> None:
    """The nightly timer, made to fire now by a runtime drop-in, runs the backup service."""
    server = host(target)
    before = set(dumps(target))
    make_due = (
        f"mkdir -p {TIMER_DROPIN.rsplit('/', 1)[0]} && "
        f"printf '[Timer]\\nOnActiveSec=1s\\nRandomizedDelaySec=0\\n' > {TIMER_DROPIN} && "
        "systemctl daemon-reload && systemctl restart postgresql-backup.timer"
    )
    assert server.run(make_due).rc == 0
    try:
        new = wait_until(
            "the timer producing a dump",
            lambda: set(dumps(target)) - before,
            90,
            "the drop-in's OnActiveSec=1s and a dump of a small database",
        )
        result = server.check_output(
            "systemctl show --property=Result --property=ExecMainStatus postgresql-backup.service"
        )
        assert "Result=success" in result and "ExecMainStatus=0" in result, result
        (dump,) = new
        listing = server.run(f"runuser -u postgres -- pg_restore --list {BACKUP_DIR}/{dump}")
        assert listing.rc == 0, listing.stderr
        assert "Format: CUSTOM" in listing.stdout
    finally:
        server.run(
            f"rm -f {TIMER_DROPIN} && systemctl daemon-reload && "
            "systemctl restart postgresql-backup.timer"
        )
    timers = server.check_output("systemctl show --property=TimersCalendar postgresql-backup.timer")
    assert "03:15:00" in timers, timers


def test_backups_keep_only_the_newest_and_leave_the_server_serving(
    web: Host, target: str, rootcert: str
) -> None:
    server = host(target)
    produced = []
    # Six in a row: more than systemd's default start limit (five starts in ten seconds), which
    # these tests once hit together with backup.yml; the unit lifts the limit.
    for _ in range(6):
        run = server.run("systemctl start postgresql-backup.service")
        assert run.rc == 0, run.stderr
        produced.append(dumps(target)[-1])
    assert dumps(target) == produced[-3:], "postgresql_backup_keep is 3 in converge.yml"
    # The service runs as postgres: had systemd removed that user's shared memory when it
    # ended (RemoveIPC=yes), the server would now refuse every new connection.
    assert psql(web, "SELECT 1", host_name=target, rootcert=rootcert) == (0, "1")
    mode = server.check_output(f"stat -c '%U %a' {BACKUP_DIR} {BACKUP_DIR}/{produced[-1]}")
    assert mode.splitlines() == ["postgres 700", "postgres 600"]


def test_backup_service_is_sandboxed(target: str) -> None:
    verdict = host(target).run("systemd-analyze security --threshold=20 postgresql-backup.service")
    assert verdict.rc == 0, verdict.stdout
    exposure = re.search(r"Overall exposure level for \S+: ([0-9.]+)", verdict.stdout)
    assert exposure, verdict.stdout
    assert float(exposure.group(1)) <= 2.0


def test_backup_and_restore_playbooks_bring_back_a_deleted_row(
    web: Host, target: str, rootcert: str
) -> None:
    sql = {"host_name": target, "rootcert": rootcert}

    def run(statement: str) -> str:
        rc, out = psql(web, statement, **sql)
        assert rc == 0, out
        return out

    run("DROP TABLE IF EXISTS molecule_restore")
    run("CREATE TABLE molecule_restore (id int PRIMARY KEY, note text)")
    run("INSERT INTO molecule_restore VALUES (1, 'keep me'), (2, 'me too')")
    try:
        backup, printed = run_project_playbook("backup.yml", limit=target)
        assert backup.rc == 0, backup.output or backup.messages
        dump = dumps(target)[-1]
        assert any(dump in line for line in printed), printed

        run("DELETE FROM molecule_restore WHERE id = 1")

        refused, _ = run_project_playbook(
            "restore.yml", limit=target, extra_vars={"postgresql_restore_dump": dump}
        )
        assert refused.rc != 0
        assert "Check that the restore was confirmed" in refused.failed_tasks[0]
        assert "postgresql_restore_confirm=yes" in refused.messages[0]
        assert refused.stats[target]["changed"] == 0
        assert run("SELECT count(*) FROM molecule_restore") == "1"

        restored, printed = run_project_playbook(
            "restore.yml",
            limit=target,
            extra_vars={"postgresql_restore_dump": dump, "postgresql_restore_confirm": "yes"},
        )
        assert restored.rc == 0, restored.output or restored.messages
        rows = run("SELECT id, note FROM molecule_restore ORDER BY id")
        assert rows.splitlines() == ["1|keep me", "2|me too"]
        # The state before the restore was dumped first, and the app still owns its tables.
        safety = dumps(target)[-1]
        assert safety != dump and any(safety in line for line in printed), printed
        run("INSERT INTO molecule_restore VALUES (3, 'writable')")
    finally:
        psql(web, "DROP TABLE IF EXISTS molecule_restore", **sql)


@pytest.mark.parametrize(
    ("bad_vars", "failing_check", "message"),
    [
        pytest.param(
            {"postgresql_restore_dump": "../../etc/shadow", "postgresql_restore_confirm": "yes"},
            "Check the dump's name",
            "no directory",
            id="path-instead-of-a-name",
        ),
        pytest.param(
            {
                "postgresql_restore_dump": "parley-20000101T000000Z.dump",
                "postgresql_restore_confirm": "yes",
            },
            "Check that the dump exists",
            "does not exist",
            id="dump-that-does-not-exist",
        ),
        pytest.param(
            {"postgresql_restore_confirm": "yes"},
            "Validating arguments against arg spec 'restore'",
            "postgresql_restore_dump",
            id="no-dump-named",
        ),
    ],
)
def test_restore_refuses_bad_input_before_any_change(
    bad_vars: dict, failing_check: str, message: str
) -> None:
    target = hosts_in("targets")[0]
    before = dumps(target)
    run, _ = run_project_playbook("restore.yml", limit=target, extra_vars=bad_vars)
    assert run.rc != 0, run.output
    assert failing_check in run.failed_tasks[0], run.failed_tasks
    assert message in run.messages[0], run.messages
    assert run.stats[target]["changed"] == 0
    # It stopped before the safety dump it takes ahead of a restore.
    assert dumps(target) == before


INVALID_INPUT = [
    pytest.param(
        {"postgresql_app_database": "parley chat"},
        "Check the database and role names",
        "postgresql_app_database must be a lowercase PostgreSQL identifier",
        id="database-name-with-a-space",
    ),
    pytest.param(
        {"postgresql_app_user": "Robert'); DROP TABLE students;--"},
        "Check the database and role names",
        "postgresql_app_user must be a lowercase PostgreSQL identifier",
        id="role-name-with-sql",
    ),
    pytest.param(
        {"postgresql_port": "fifty-four"},
        "Validating arguments against arg spec 'main'",
        "postgresql_port",
        id="port-not-a-number",
    ),
    pytest.param(
        {"postgresql_shared_buffers_mb": "lots"},
        "Validating arguments against arg spec 'main'",
        "postgresql_shared_buffers_mb",
        id="shared-buffers-lots",
    ),
    pytest.param(
        {"postgresql_app_password": "short"},
        "Check the app password",
        "at least 16 characters",
        id="short-password",
    ),
    pytest.param(
        {"postgresql_settings": {"listen_addresses": "*"}},
        "Check the further settings",
        "listen_addresses",
        id="setting-the-role-owns",
    ),
    pytest.param(
        {"postgresql_backup_on_calendar": "every night at three"},
        "Check the backup schedule",
        "postgresql_backup_on_calendar must be a systemd calendar expression",
        id="schedule-systemd-does-not-understand",
    ),
    pytest.param(
        {"postgresql_settings": {"statement_timeout": "lots"}},
        "Write the server settings",
        "failed to validate",
        id="setting-postgres-refuses",
    ),
]


@pytest.mark.parametrize(("bad_vars", "failing_check", "message"), INVALID_INPUT)
def test_invalid_input_fails_before_any_change(
    bad_vars: dict, failing_check: str, message: str
) -> None:
    target = hosts_in("targets")[0]
    play = {
        "name": "Apply postgresql with invalid input",
        "hosts": target,
        "vars": {
            "postgresql_app_password": APP_PASSWORD,
            "postgresql_backup_keep": CONVERGE_VARS["postgresql_backup_keep"],
        },
        "roles": [{"role": "postgresql"}],
    }
    snapshot = "find /etc -xdev -printf '%p %s %T@\\n' | sort | sha256sum"
    before = host(target).check_output(snapshot)
    run = run_playbook([play], extra_vars=bad_vars)
    assert run.rc != 0, run.output
    assert run.failed_tasks, run.output
    assert failing_check in run.failed_tasks[0], run.failed_tasks
    assert message in run.messages[0], run.messages
    assert run.stats[target]["changed"] == 0
    assert host(target).check_output(snapshot) == before
