"""The common role, seen from outside each target and from its own shell where only that works."""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

import pytest
from conftest import host, hosts_in, port_states, reboot, run_playbook, wait_until
from testinfra.host import Host

ADMIN = "ops"
PROBE_KEY = "/root/ops_ed25519"
SSH_OPTIONS = (
    "-o BatchMode=yes -o StrictHostKeyChecking=no -o UserKnownHostsFile=/dev/null "
    "-o ConnectTimeout=10 -o LogLevel=ERROR"
)
# A port nothing opens: the firewall must drop it, not let the kernel answer "closed".
UNOPENED_PORT = 8080


@pytest.fixture(scope="session")
def ssh_key(probe: Host) -> str:
    """The administrator's private key, copied onto the probe."""
    key = Path(os.environ["MOLECULE_EPHEMERAL_DIRECTORY"]) / "ops_ed25519"
    probe_name = hosts_in("probe")[0]
    subprocess.run(["docker", "cp", str(key), f"{probe_name}:{PROBE_KEY}"], check=True)
    assert probe.run(f"chmod 600 {PROBE_KEY}").rc == 0
    return PROBE_KEY


def ssh(probe: Host, key: str, user: str, target: str, command: str) -> tuple[int, str]:
    result = probe.run(f"ssh -i {key} {SSH_OPTIONS} {user}@{target} {command}")
    return result.rc, result.stdout + result.stderr


@pytest.fixture
def listener(target: str):
    """A service listening on every address of the target, so only the firewall can hide it."""
    server = host(target)
    unit = "parley-test-listener"
    started = server.run(
        f"systemd-run --unit {unit} python3 -m http.server {UNOPENED_PORT} --bind 0.0.0.0"
    )
    assert started.rc == 0, started.stderr
    wait_until(
        "the test listener coming up on loopback",
        lambda: server.run(f"bash -c ': > /dev/tcp/127.0.0.1/{UNOPENED_PORT}'").rc == 0,
        30,
        "a Python http.server starting, a second here",
    )
    yield UNOPENED_PORT
    server.run(f"systemctl stop {unit}")


def test_only_ssh_is_reachable_from_outside(probe: Host, target: str, listener: int) -> None:
    states = port_states(probe, target, [22, listener])
    assert states == {22: "open", listener: "filtered"}


def test_dropin_opens_its_port_to_the_named_host_only(
    probe: Host, target: str, listener: int
) -> None:
    server = host(target)
    probe_ip = probe.run("hostname -I").stdout.split()[0]
    dropin = "/etc/nftables.d/90-molecule-test.nft"

    def allow(source: str) -> None:
        rule = f'tcp dport {listener} ip saddr {source} accept comment "molecule test"'
        assert server.run(f"printf '%s\\n' '{rule}' > {dropin}").rc == 0
        check = server.run(f"nft-check-dropin {dropin}")
        assert check.rc == 0, check.stderr
        assert server.run("systemctl reload nftables").rc == 0

    try:
        # Opened to another address: the probe still finds the port dropped.
        allow("192.0.2.99")
        assert port_states(probe, target, [listener]) == {listener: "filtered"}
        # Opened to the probe: now it gets through.
        allow(probe_ip)
        assert port_states(probe, target, [listener]) == {listener: "open"}
    finally:
        server.run(f"rm -f {dropin} && systemctl reload nftables")
    assert port_states(probe, target, [listener]) == {listener: "filtered"}


def test_a_dropin_that_does_not_parse_is_rejected(target: str) -> None:
    server = host(target)
    server.run("printf 'tcp dport 99999 acept\\n' > /tmp/broken.nft")
    check = server.run("nft-check-dropin /tmp/broken.nft")
    assert check.rc != 0
    assert "Error" in check.stderr


def test_administrator_logs_in_with_key_and_uses_sudo(
    probe: Host, ssh_key: str, target: str
) -> None:
    rc, output = ssh(probe, ssh_key, ADMIN, target, "sudo -n id -u")
    assert rc == 0, output
    assert output.strip() == "0"


def test_password_login_is_refused_even_with_the_right_password(probe: Host, target: str) -> None:
    server = host(target)
    password = "Correct-Horse-Battery-9"
    assert server.run(f"echo '{ADMIN}:{password}' | chpasswd").rc == 0
    try:
        result = probe.run(
            f"sshpass -p '{password}' ssh {SSH_OPTIONS.replace('BatchMode=yes', 'BatchMode=no')} "
            f"-o PubkeyAuthentication=no -o PreferredAuthentications=password,keyboard-interactive "
            f"{ADMIN}@{target} true"
        )
        assert result.rc != 0
        assert "Permission denied (publickey)" in result.stderr
    finally:
        server.run(f"usermod -p '!' {ADMIN}")


def test_root_cannot_log_in_even_with_a_valid_key(probe: Host, ssh_key: str, target: str) -> None:
    server = host(target)
    public_key = server.file(f"/home/{ADMIN}/.ssh/authorized_keys").content_string.strip()
    server.run(f"install -d -m 700 /root/.ssh && echo '{public_key}' > /root/.ssh/authorized_keys")
    try:
        rc, output = ssh(probe, ssh_key, "root", target, "true")
        assert rc != 0
        assert "Permission denied" in output
    finally:
        server.run("rm -f /root/.ssh/authorized_keys")


def test_sshd_offers_only_modern_algorithms(probe: Host, target: str) -> None:
    scan = probe.run(f"nmap -Pn -n -p 22 --script ssh2-enum-algos {target}")
    assert scan.rc == 0, scan.stderr
    offered = scan.stdout
    assert "chacha20-poly1305@openssh.com" in offered
    assert "curve25519-sha256" in offered
    for weak in (
        "-cbc",
        "hmac-sha1",
        "diffie-hellman-group1-",
        "diffie-hellman-group14-sha1",
        "hmac-md5",
        "ssh-dss",
    ):
        assert weak not in offered, f"sshd offers {weak}"


def test_firewall_and_sshd_survive_a_reboot(probe: Host, ssh_key: str, target: str) -> None:
    reboot(target)
    # Without the firewall an unopened port answers "closed"; dropped means the rules loaded.
    assert port_states(probe, target, [22, UNOPENED_PORT]) == {
        22: "open",
        UNOPENED_PORT: "filtered",
    }
    rc, output = ssh(probe, ssh_key, ADMIN, target, "true")
    assert rc == 0, output


def test_timezone_and_time_synchronisation(target: str) -> None:
    server = host(target)
    assert server.check_output("timedatectl show --property=Timezone --value") == "Etc/UTC"
    assert server.service("systemd-timesyncd").is_enabled


def test_unattended_upgrades_take_security_updates(target: str) -> None:
    server = host(target)
    assert (
        server.check_output("apt-config dump --format '%v' APT::Periodic::Unattended-Upgrade")
        == "1"
    )
    run = server.run("unattended-upgrade --dry-run --debug")
    assert run.rc == 0, run.stderr
    codename = server.system_info.codename
    assert f"codename={codename}-security" in run.stdout + run.stderr


def test_journal_is_persistent(target: str) -> None:
    server = host(target)
    server.run("logger -t molecule 'journal persistence check'")
    header = server.check_output("journalctl --header --system")
    assert "File path: /var/log/journal/" in header


INVALID_INPUT = [
    pytest.param(
        {"common_firewall_ssh_cidrs": ["10.0.0.300/24"]},
        "Check the networks allowed to reach sshd",
        "10.0.0.300/24",
        id="malformed-cidr",
    ),
    pytest.param(
        {"common_firewall_ssh_cidrs": ["192.0.2.7"]},
        "Check the networks allowed to reach sshd",
        "192.0.2.7",
        id="address-without-prefix",
    ),
    pytest.param(
        {"common_sshd_port": 70000},
        "Check the SSH port",
        "between 1 and 65535",
        id="port-out-of-range",
    ),
    pytest.param(
        {"common_sshd_port": "twenty-two"},
        "Validating arguments against arg spec 'main'",
        "common_sshd_port",
        id="port-not-a-number",
    ),
    pytest.param(
        {"common_admin_users": []},
        "Check that at least one administrator can log in",
        "lock everyone out",
        id="no-administrator",
    ),
    pytest.param(
        {"common_admin_users": [{"name": "ops", "ssh_keys": ["hunter2"]}]},
        "Check the administrators' names and keys",
        "OpenSSH public key",
        id="key-that-is-not-a-key",
    ),
]


@pytest.mark.parametrize(("bad_vars", "failing_check", "message"), INVALID_INPUT)
def test_invalid_input_fails_before_any_change(
    bad_vars: dict, failing_check: str, message: str
) -> None:
    target = hosts_in("targets")[0]
    key = (Path(os.environ["MOLECULE_EPHEMERAL_DIRECTORY"]) / "ops_ed25519.pub").read_text().strip()
    play = {
        "name": "Apply common with invalid input",
        "hosts": target,
        "vars": {"common_admin_users": [{"name": ADMIN, "ssh_keys": [key]}]},
        "roles": [{"role": "common"}],
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
