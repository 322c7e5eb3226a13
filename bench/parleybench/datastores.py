"""PostgreSQL and the two Redis instances, private to the benchmark and started fresh each run.

PostgreSQL runs with its defaults (fsync and synchronous commit on, as roles/postgresql
deploys it): a commit's cost is part of the stack being measured. Redis gets the production
ACL (app/README.md) plus an admin user for INFO, which the app's user may not run; the broker
instance logs every write to an append-only file like the deployed broker, the channel-layer
instance keeps nothing on disk.
"""

from __future__ import annotations

import shutil
import signal
import subprocess
from dataclasses import dataclass
from pathlib import Path

import redis

from parleybench.config import Credentials, Ports
from parleybench.paths import STATE_DIR
from parleybench.processes import Process, Supervisor, wait_until

DB_NAME = "parley"
DB_USER = "parley"
REDIS_USER = "parley"
REDIS_ADMIN = "bench-admin"


def _postgres_bin() -> Path:
    versions = sorted(Path("/usr/lib/postgresql").iterdir(), key=lambda p: int(p.name))
    return versions[-1] / "bin"


def _as_postgres(argv: list[str], **kwargs: object) -> subprocess.CompletedProcess[str]:
    return subprocess.run(  # noqa: S603  (our own argv)
        argv, user="postgres", check=True, capture_output=True, text=True, **kwargs
    )


def start_postgres(supervisor: Supervisor, ports: Ports, creds: Credentials) -> Process:
    data = STATE_DIR / "postgres"
    sockets = STATE_DIR / "postgres-socket"
    for path in (data, sockets):
        path.mkdir(parents=True)
        shutil.chown(path, "postgres", "postgres")
    data.chmod(0o700)
    pg = _postgres_bin()
    _as_postgres(
        [
            str(pg / "initdb"),
            "-D",
            str(data),
            "-U",
            "postgres",
            "-E",
            "UTF8",
            "--auth-local=peer",
            "--auth-host=scram-sha-256",
        ]
    )
    process = supervisor.start(
        "postgres",
        [
            str(pg / "postgres"),
            "-D",
            str(data),
            "-c",
            f"port={ports.postgres}",
            "-c",
            "listen_addresses=127.0.0.1",
            "-c",
            f"unix_socket_directories={sockets}",
            # Every web, Daphne and Celery process keeps a pool of up to 10 connections.
            "-c",
            "max_connections=500",
        ],
        env={"PATH": "/usr/bin:/bin", "LANG": "C.UTF-8"},
        cwd=data,
        user="postgres",
        # SIGINT is PostgreSQL's fast shutdown; TERM would wait for every client to leave.
        stop_signal=signal.SIGINT,
    )
    psql = [
        str(pg / "psql"),
        "-h",
        str(sockets),
        "-p",
        str(ports.postgres),
        "-v",
        "ON_ERROR_STOP=1",
    ]

    def ready() -> bool:
        process.check_alive()
        return (
            subprocess.run(  # noqa: S603
                [str(pg / "pg_isready"), "-h", str(sockets), "-p", str(ports.postgres)],
                capture_output=True,
                check=False,
            ).returncode
            == 0
        )

    wait_until(ready, 60, "PostgreSQL")
    _as_postgres([*psql, "-c", f"CREATE ROLE {DB_USER} LOGIN PASSWORD '{creds.db_password}'"])
    _as_postgres([*psql, "-c", f"CREATE DATABASE {DB_NAME} OWNER {DB_USER}"])
    return process


def database_url(ports: Ports, creds: Credentials) -> str:
    return f"postgres://{DB_USER}:{creds.db_password}@127.0.0.1:{ports.postgres}/{DB_NAME}"


@dataclass(frozen=True)
class RedisInstance:
    role: str
    port: int

    def url(self, creds: Credentials, db: int = 0) -> str:
        return f"redis://{REDIS_USER}:{creds.redis_password}@127.0.0.1:{self.port}/{db}"

    def admin(self, creds: Credentials) -> redis.Redis:
        return redis.Redis(
            host="127.0.0.1",
            port=self.port,
            username=REDIS_ADMIN,
            password=creds.redis_admin_password,
            socket_timeout=10,
        )


def start_redis(
    supervisor: Supervisor, instance: RedisInstance, creds: Credentials, *, persistent: bool
) -> Process:
    directory = STATE_DIR / f"redis-{instance.role}"
    directory.mkdir(parents=True)
    persistence = "appendonly yes\nappendfsync everysec\n" if persistent else "appendonly no\n"
    config = directory / "redis.conf"
    config.write_text(
        f"bind 127.0.0.1\nport {instance.port}\ndaemonize no\ndir {directory}\n"
        f'save ""\n{persistence}maxmemory-policy noeviction\n'
        "user default off\n"
        f"user {REDIS_USER} on >{creds.redis_password} ~parley:* &parley:* "
        "&parley:celery:/fanout.celery.pidbox &parley:celery:/fanout.celeryev/worker.* "
        "+@all -@dangerous\n"
        # Only the harness uses this one: INFO commandstats and INFO memory are @dangerous.
        f"user {REDIS_ADMIN} on >{creds.redis_admin_password} ~* &* +@all\n"
    )
    config.chmod(0o600)
    process = supervisor.start(
        f"redis-{instance.role}", ["redis-server", str(config)], env={}, cwd=directory
    )
    client = instance.admin(creds)

    def ready() -> bool:
        process.check_alive()
        try:
            return bool(client.ping())
        except redis.ConnectionError:
            return False

    wait_until(ready, 30, f"Redis ({instance.role})")
    client.close()
    return process
