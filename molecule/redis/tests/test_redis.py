"""The redis role, seen from an app host (redis-web), from an outsider (the probe) and, for the
single-host layout, from the Redis host's own loopback."""

from __future__ import annotations

import json
import re
import uuid

import pytest
from conftest import host, hosts_in, port_states, run_playbook
from redis_client import (
    ADMIN,
    BROKER,
    BROKER_PORT,
    CONVERGE_VARS,
    LAYER,
    LAYER_PORT,
    Login,
    redis,
    role_setting,
)
from testinfra.host import Host

PORTS = [BROKER_PORT, LAYER_PORT]
UNITS = {BROKER_PORT: "redis-server@broker.service", LAYER_PORT: "redis-server@layer.service"}


@pytest.fixture(scope="session")
def web() -> Host:
    """An app host that is not a Redis host: the firewall must let it in."""
    outside = [name for name in hosts_in("web") if name not in hosts_in("targets")]
    assert outside, "the scenario needs a host in group web that is not a target"
    return host(outside[0])


def unique_key(prefix: str) -> str:
    return f"{prefix}{uuid.uuid4().hex}"


@pytest.mark.parametrize("port", PORTS)
def test_clients_that_do_not_log_in_are_refused(web: Host, target: str, port: int) -> None:
    assert redis(web, target, port, "PING").startswith("NOAUTH")
    assert redis(web, target, port, "GET", "parley:anything").startswith("NOAUTH")


@pytest.mark.parametrize("port", PORTS)
def test_the_default_user_is_off(web: Host, target: str, port: int) -> None:
    # Switched off, the default user refuses every password; left on with nopass it would
    # take any of these.
    for password in ("", "anything", CONVERGE_VARS["redis_admin_password"]):
        reply = redis(web, target, port, "AUTH", "default", password)
        assert "WRONGPASS" in reply, reply
    assert "WRONGPASS" in redis(web, target, port, "AUTH", "anything")


@pytest.mark.parametrize(
    ("port", "login"),
    [
        # The channel layer's password is not the broker's, though the user name is the same.
        (BROKER_PORT, LAYER),
        (LAYER_PORT, BROKER),
        (BROKER_PORT, Login(ADMIN.user, ADMIN.password + "-wrong")),
    ],
    ids=["layer-password-on-broker", "broker-password-on-layer", "admin-wrong-password"],
)
def test_a_wrong_password_is_refused(web: Host, target: str, port: int, login: Login) -> None:
    reply = redis(web, target, port, "AUTH", login.user, login.password)
    assert "WRONGPASS" in reply, reply


def test_broker_user_queues_and_takes_tasks(web: Host, target: str) -> None:
    queue = unique_key("parley:celery:molecule-queue-")
    assert redis(web, target, BROKER_PORT, "LPUSH", queue, "task-1", login=BROKER) == "1"
    assert redis(web, target, BROKER_PORT, "LPUSH", queue, "task-2", login=BROKER) == "2"
    taken = redis(web, target, BROKER_PORT, "BRPOP", queue, "5", login=BROKER)
    assert taken.splitlines() == [queue, "task-1"]
    # Keys outside the app's prefix are out of its reach.
    denied = redis(web, target, BROKER_PORT, "LPUSH", "celery", "task", login=BROKER)
    assert denied.startswith("NOPERM"), denied


DANGEROUS_COMMANDS = [
    ["FLUSHALL"],
    ["FLUSHDB"],
    ["CONFIG", "GET", "maxmemory-policy"],
    ["CONFIG", "SET", "maxmemory", "0"],
    ["KEYS", "*"],
    ["DEBUG", "SLEEP", "0"],
    ["ACL", "LIST"],
    ["MODULE", "LIST"],
    ["REPLICAOF", "192.0.2.1", "6379"],
    ["MIGRATE", "192.0.2.1", "6379", "parley:x", "0", "1000"],
    ["INFO"],
    ["SHUTDOWN", "NOSAVE"],
]


@pytest.mark.parametrize("port", PORTS)
def test_app_users_cannot_run_dangerous_commands(web: Host, target: str, port: int) -> None:
    login = BROKER if port == BROKER_PORT else LAYER
    witness = unique_key("parley:molecule-witness-")
    assert redis(web, target, port, "SET", witness, "still here", login=login) == "OK"
    allowed = {}
    for command in DANGEROUS_COMMANDS:
        reply = redis(web, target, port, *command, login=login)
        # Redis refuses DEBUG to everyone (enable-debug-command no) before it asks the ACL.
        if not (reply.startswith("NOPERM") or reply.startswith("ERR DEBUG command not allowed")):
            allowed[" ".join(command)] = reply
    assert not allowed, f"the app user ran: {allowed}"
    # Whatever the replies said, the data and the instance are still there.
    assert redis(web, target, port, "GET", witness, login=login) == "still here"


def test_channel_layer_user_does_what_channels_redis_does(web: Host, target: str) -> None:
    channel = unique_key("parley:asgi:molecule.")
    assert redis(web, target, LAYER_PORT, "ZADD", channel, "1", "message-1", login=LAYER) == "1"
    assert redis(web, target, LAYER_PORT, "EXPIRE", channel, "60", login=LAYER) == "1"
    # channels-redis sends and receives with Lua scripts.
    script = "redis.call('ZADD', KEYS[1], 2, ARGV[1]); return redis.call('ZCARD', KEYS[1])"
    assert redis(web, target, LAYER_PORT, "EVAL", script, "1", channel, "m-2", login=LAYER) == "2"
    assert redis(web, target, LAYER_PORT, "ZPOPMIN", channel, login=LAYER).splitlines() == [
        "message-1",
        "1",
    ]
    assert redis(web, target, LAYER_PORT, "PUBLISH", channel, "hello", login=LAYER) == "0"
    denied = redis(web, target, LAYER_PORT, "PUBLISH", "other-app", "hello", login=LAYER)
    assert denied.startswith("NOPERM"), denied


def test_broker_never_evicts_and_logs_every_write(web: Host, target: str) -> None:
    policy = redis(web, target, BROKER_PORT, "CONFIG", "GET", "maxmemory-policy", login=ADMIN)
    assert policy.splitlines() == ["maxmemory-policy", "noeviction"]
    limit = redis(web, target, BROKER_PORT, "CONFIG", "GET", "maxmemory", login=ADMIN)
    assert limit.splitlines() == ["maxmemory", str(512 * 1024 * 1024)]
    persistence = redis(web, target, BROKER_PORT, "INFO", "persistence", login=ADMIN)
    assert re.search(r"^aof_enabled:1\r?$", persistence, re.M), persistence
    fsync = redis(web, target, BROKER_PORT, "CONFIG", "GET", "appendfsync", login=ADMIN)
    assert fsync.splitlines() == ["appendfsync", "everysec"]


def test_channel_layer_evicts_expiring_keys_and_keeps_nothing(web: Host, target: str) -> None:
    policy = redis(web, target, LAYER_PORT, "CONFIG", "GET", "maxmemory-policy", login=ADMIN)
    assert policy.splitlines() == ["maxmemory-policy", "volatile-lru"]
    persistence = redis(web, target, LAYER_PORT, "INFO", "persistence", login=ADMIN)
    assert re.search(r"^aof_enabled:0\r?$", persistence, re.M), persistence
    save = redis(web, target, LAYER_PORT, "CONFIG", "GET", "save", login=ADMIN)
    assert save.splitlines() == ["save"] or save.splitlines() == ["save", ""]


def test_only_app_hosts_get_through_the_firewall(probe: Host, web: Host, target: str) -> None:
    assert port_states(web, target, PORTS) == {port: "open" for port in PORTS}
    assert port_states(probe, target, PORTS) == {port: "filtered" for port in PORTS}
    refused = probe.run(f"timeout 5 redis-cli -h {target} -p {BROKER_PORT} PING")
    assert refused.rc != 0


def test_broker_data_survives_a_restart_and_layer_data_does_not(web: Host, target: str) -> None:
    queue = unique_key("parley:celery:molecule-durable-")
    message = unique_key("parley:asgi:molecule-gone-")
    assert redis(web, target, BROKER_PORT, "LPUSH", queue, "queued task", login=BROKER) == "1"
    assert redis(web, target, LAYER_PORT, "SET", message, "x", "EX", "600", login=LAYER) == "OK"
    server = host(target)
    for unit in UNITS.values():
        restarted = server.run(f"systemctl restart {unit}")
        assert restarted.rc == 0, restarted.stderr
    assert redis(web, target, BROKER_PORT, "LRANGE", queue, "0", "-1", login=BROKER) == (
        "queued task"
    )
    assert redis(web, target, LAYER_PORT, "EXISTS", message, login=LAYER) == "0"


def test_app_on_the_redis_host_connects_over_loopback(target: str) -> None:
    """The single-host layout: the app runs beside Redis and connects to 127.0.0.1."""
    server = host(target)
    assert redis(server, "127.0.0.1", BROKER_PORT, "PING", login=BROKER) == "PONG"
    assert redis(server, "127.0.0.1", LAYER_PORT, "PING", login=LAYER) == "PONG"


@pytest.mark.parametrize("port", PORTS)
def test_instances_listen_where_and_how_the_role_says(web: Host, target: str, port: int) -> None:
    """The settings the role writes, as the running instance reports them. redis-deb12 is given
    values of its own (molecule.yml): timeout 0 and maxclients 10000 are Redis's defaults too,
    so only another value proves the variable reaches the instance."""
    private = host(target).check_output("hostname -I").split()[0]

    def setting(name: str) -> str:
        reply = redis(web, target, port, "CONFIG", "GET", name, login=ADMIN).splitlines()
        assert reply[0] == name, reply
        return reply[1]

    # The private address and loopback; "-::1" binds ::1 only where the host has IPv6.
    assert setting("bind") == f"{private} 127.0.0.1 -::1"
    # Redis's default as well: this guards against a configuration that turns it off.
    assert setting("protected-mode") == "yes"
    assert setting("timeout") == str(role_setting(target, "redis_timeout"))
    assert setting("tcp-keepalive") == str(role_setting(target, "redis_tcp_keepalive"))
    assert setting("maxclients") == str(role_setting(target, "redis_maxclients"))


# Debian's redis-server@.service scores 1.1 on systemd-analyze security, with or without the
# role's drop-in, on Debian 12 and 13; taking away any one of its protections adds 0.1 or more.
SANDBOX_EXPOSURE_MAX = 1.1
# The checks it leaves open: a network server needs IPv4/IPv6 and the host's network, and a
# Unix socket for local administration; Debian limits devices with PrivateDevices= rather than
# DeviceAllow=, and sets no root image, ProcSubset= or UMask=. Any other open check is a
# protection that was lost, even one too small to move the rounded score (ProtectSystem=full
# instead of strict, for one).
SANDBOX_OPEN_CHECKS = {
    "DeviceAllow=",
    "IPAddressDeny=",
    "PrivateNetwork=",
    "ProcSubset=",
    "RestrictAddressFamilies=~AF_(INET|INET6)",
    "RestrictAddressFamilies=~AF_UNIX",
    "RootDirectory=/RootImage=",
    "UMask=",
}


@pytest.mark.parametrize("port", PORTS)
def test_instances_keep_debians_sandbox(target: str, port: int) -> None:
    server = host(target)
    verdict = server.run(f"systemd-analyze security --threshold=20 {UNITS[port]}")
    assert verdict.rc == 0, verdict.stdout
    exposure = re.search(r"Overall exposure level for \S+: ([0-9.]+)", verdict.stdout)
    assert exposure, verdict.stdout
    assert float(exposure.group(1)) <= SANDBOX_EXPOSURE_MAX, verdict.stdout
    checks = json.loads(server.check_output(f"systemd-analyze security --json=short {UNITS[port]}"))
    open_checks = {c["name"] for c in checks if float(c.get("exposure") or 0) > 0}
    assert open_checks == SANDBOX_OPEN_CHECKS


@pytest.mark.parametrize("port", PORTS)
def test_instances_get_the_roles_file_limit(target: str, port: int) -> None:
    server = host(target)
    unit = UNITS[port]
    wanted = int(role_setting(target, "redis_limit_nofile"))
    # Debian's unit sets its own limit: the role's must differ, or this test proves nothing.
    template = server.check_output(f"systemctl show --property=FragmentPath --value {unit}")
    debians = server.check_output(f"sed -n 's/^LimitNOFILE=//p' {template}")
    assert debians and int(debians) != wanted, f"Debian's unit already sets {debians}"
    configured = server.check_output(f"systemctl show --property=LimitNOFILE --value {unit}")
    assert int(configured) == wanted
    # systemd grants that limit up to its own hard limit, which a container engine may set
    # lower (20000 on this test bed); a real host's is far higher.
    pid = server.check_output(f"systemctl show --property=MainPID --value {unit}")
    assert open_files_limit(server, pid) == min(wanted, open_files_limit(server, "1"))
    assert server.check_output(f"ps -o user= -p {pid}") == "redis"


def open_files_limit(server: Host, pid: str) -> int:
    limits = server.check_output(f"cat /proc/{pid}/limits")
    found = re.search(r"^Max open files\s+(\d+)\s+(\d+)", limits, re.M)
    assert found, limits
    soft, hard = (int(n) for n in found.groups())
    assert soft == hard
    return hard


# Docker mounts /proc/sys read-only in the test bed's containers, so systemd-sysctl skips
# itself there (ConditionPathIsReadWrite=/proc/sys) and the kernel parameters the role writes
# are not in force. net.core.somaxconn belongs to a network namespace: the test applies it the
# way a booting host does (systemd-sysctl over every sysctl.d file) in a throwaway namespace of
# the target where /proc/sys is writable, after setting it low there. vm.overcommit_memory
# belongs to the one kernel the whole machine shares, so no test may write it; the test asks
# systemd-sysctl which value it would set, after every file of every package is read.
SOMAXCONN_BEFORE = 128


def test_kernel_parameters_apply_as_at_boot(target: str) -> None:
    server = host(target)
    wanted = role_setting(target, "redis_sysctl")
    assert int(wanted["net.core.somaxconn"]) != SOMAXCONN_BEFORE
    knob = "/proc/sys/net/core/somaxconn"
    applied = server.run(
        "unshare --net --mount --propagation private sh -ec "
        f"'mount -o remount,bind,rw /proc/sys; echo {SOMAXCONN_BEFORE} > {knob}; "
        f"/lib/systemd/systemd-sysctl --prefix=/net/core/somaxconn; cat {knob}'"
    )
    assert applied.rc == 0, applied.stderr
    assert int(applied.stdout) == int(wanted["net.core.somaxconn"]), applied.stderr

    merged = server.check_output("/lib/systemd/systemd-sysctl --cat-config")
    last: dict[str, str] = {}
    for line in merged.splitlines():
        name, equals, value = line.partition("=")
        if equals and not line.lstrip().startswith(("#", ";")):
            last[name.strip().lstrip("-")] = value.strip()
    assert last.get("vm.overcommit_memory") == str(wanted["vm.overcommit_memory"]), last


INVALID_INPUT = [
    pytest.param(
        {"redis_broker_maxmemory": "lots"},
        "Check the memory limits",
        "redis_broker_maxmemory must be a Redis memory size",
        id="maxmemory-lots",
    ),
    pytest.param(
        {"redis_layer_port": "six thousand"},
        "Validating arguments against arg spec 'main'",
        "redis_layer_port",
        id="port-not-a-number",
    ),
    pytest.param(
        {"redis_layer_port": 6379},
        "Check the instance names and ports",
        "two different TCP ports",
        id="both-instances-on-one-port",
    ),
    pytest.param(
        {"redis_broker_instance": "Broker 1"},
        "Check the instance names and ports",
        "lowercase",
        id="instance-name-with-a-space",
    ),
    pytest.param(
        {"redis_layer_acl": "~* +@all >letmein"},
        "Check the app users' ACL rules",
        ">letmein",
        id="password-inside-the-acl",
    ),
    pytest.param(
        {"redis_admin_password": "short"},
        "Check the passwords",
        "redis_admin_password must be at least 16 characters",
        id="short-password",
    ),
    pytest.param(
        {"redis_sentinel_enabled": True, "redis_sentinel_password": ""},
        "Check the replication and Sentinel passwords",
        "redis_sentinel_password is required when redis_sentinel_enabled is true",
        id="sentinel-without-its-password",
    ),
    pytest.param(
        {"redis_sentinel_enabled": True, "redis_sentinel_quorum": 3},
        "Check the group of replicating hosts and the first primary",
        "redis_sentinel_quorum (3) between 1 and their number (2)",
        id="quorum-larger-than-the-sentinels",
    ),
    pytest.param(
        {"redis_layer_maxmemory_policy": "evict-everything"},
        "Validating arguments against arg spec 'main'",
        "redis_layer_maxmemory_policy",
        id="unknown-policy",
    ),
]


@pytest.mark.parametrize(("bad_vars", "failing_check", "message"), INVALID_INPUT)
def test_invalid_input_fails_before_any_change(
    bad_vars: dict, failing_check: str, message: str
) -> None:
    target = hosts_in("targets")[0]
    passwords = {name: value for name, value in CONVERGE_VARS.items() if name.endswith("_password")}
    play = {
        "name": "Apply redis with invalid input",
        "hosts": target,
        "vars": passwords,
        "roles": [{"role": "redis"}],
    }
    snapshot = "find /etc /var/lib/redis -xdev -printf '%p %s %T@\\n' | sort | sha256sum"
    before = host(target).check_output(snapshot)
    run = run_playbook([play], extra_vars=bad_vars)
    assert run.rc != 0, run.output
    assert run.failed_tasks, run.output
    assert failing_check in run.failed_tasks[0], run.failed_tasks
    assert message in run.messages[0], run.messages
    assert run.stats[target]["changed"] == 0
    assert host(target).check_output(snapshot) == before


def test_a_missing_password_is_named(target: str) -> None:
    play = {
        "name": "Apply redis without the admin password",
        "hosts": target,
        "vars": {
            "redis_broker_password": CONVERGE_VARS["redis_broker_password"],
            "redis_layer_password": CONVERGE_VARS["redis_layer_password"],
        },
        "roles": [{"role": "redis"}],
    }
    run = run_playbook([play])
    assert run.rc != 0, run.output
    assert "Validating arguments against arg spec 'main'" in run.failed_tasks[0]
    assert "redis_admin_password" in run.messages[0], run.messages
    assert run.stats[target]["changed"] == 0
