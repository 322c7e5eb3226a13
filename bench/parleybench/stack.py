"""Bring up everything one run needs, once, so every design is measured against the same
database, Redis, fake model and nginx, and designs can be interleaved without restarts.

Idle designs cost nothing measurable while another is loaded (no sockets, no tasks), so all
of them stay up for the whole run.
"""

from __future__ import annotations

import json
import shutil
import ssl
import subprocess
from collections.abc import Callable
from dataclasses import dataclass, field

import redis

from parleybench import appservers, datastores, nginxconf, roledefaults, signin
from parleybench.config import Credentials, Plan, Ports
from parleybench.connections import ConnectionCounters
from parleybench.datastores import RedisInstance
from parleybench.paths import APP_DIR, BENCH_DIR, STATE_DIR, VENV_BIN
from parleybench.processes import Supervisor, ensure_ports_free, raise_open_files_limit
from parleybench.timeline import TimelineReader
from parleybench.tls import TlsFiles, make_certificates


@dataclass
class Stack:
    plan: Plan
    ports: Ports
    creds: Credentials
    tls: TlsFiles
    supervisor: Supervisor
    app_env: dict[str, str]
    nofile: int
    # Process roots to sample, by role: "postgres", "web-a", "celery", "nginx", ...
    roots: dict[str, list[int]] = field(default_factory=dict)
    cookies: dict[str, str] = field(default_factory=dict)
    conversations: list[tuple[str, str]] = field(default_factory=list)
    broker: RedisInstance | None = None
    channels: RedisInstance | None = None
    # Design a's worker: replies in flight, and which file said so.
    replies_in_flight: int = 0
    replies_in_flight_source: str = ""
    # Replies each Celery worker (by process role) writes at once.
    worker_slots: dict[str, int] = field(default_factory=dict)
    nginx_settings: dict[str, int | bool] = field(default_factory=dict)
    counters: ConnectionCounters | None = None
    timeline: TimelineReader = field(default_factory=TimelineReader)

    def ssl_context(self) -> ssl.SSLContext:
        return ssl.create_default_context(cafile=str(self.tls.ca))

    def admin(self, instance: RedisInstance | None) -> redis.Redis:
        assert instance is not None  # noqa: S101  (set by bring_up before any use)
        return instance.admin(self.creds)

    def broker_admin(self, db: int) -> redis.Redis:
        assert self.broker is not None  # noqa: S101  (set by bring_up before any use)
        return redis.Redis(
            host="127.0.0.1",
            port=self.broker.port,
            db=db,
            username=datastores.REDIS_ADMIN,
            password=self.creds.redis_admin_password,
            socket_timeout=10,
        )

    def take_conversations(self, count: int) -> list[tuple[str, str]]:
        """Conversations no other measurement has used, so histories stay comparable."""
        if count > len(self.conversations):
            raise RuntimeError(f"the seed made too few conversations ({count} more wanted)")
        taken, self.conversations = self.conversations[:count], self.conversations[count:]
        return taken


def app_environment(  # noqa: PLR0913  (everything the app's settings name)
    *,
    plan: Plan,
    ports: Ports,
    creds: Credentials,
    broker: RedisInstance,
    channels: RedisInstance,
    tls: TlsFiles,
) -> dict[str, str]:
    """Production settings, as /etc/parley/parley.env holds them, for loopback."""
    backends = (ports.parley, ports.daphne, ports.inprocess, ports.per_token, ports.prefork)
    fronts = [ports.tls(port) for port in backends]
    models = [plan.overhead_model.name, plan.throughput_model.name, plan.inflight_model.name]
    return {
        "DJANGO_SETTINGS_MODULE": "parley.settings.production",
        "PARLEY_SECRET_KEY": creds.secret_key,
        "PARLEY_ALLOWED_HOSTS": "127.0.0.1,localhost",
        # The site is on a non-default port here, so its origins are named (on 443 the Host
        # check alone would do).
        "PARLEY_CSRF_TRUSTED_ORIGINS": ",".join(f"https://127.0.0.1:{port}" for port in fronts),
        "PARLEY_DATABASE_URL": datastores.database_url(ports, creds),
        "PARLEY_CELERY_BROKER_URL": broker.url(creds),
        "PARLEY_CHANNEL_LAYER_URL": channels.url(creds),
        # HTTPS, as every real provider: a TLS handshake per reply would show here.
        "PARLEY_LLM_BASE_URL": f"https://127.0.0.1:{ports.fakellm}/v1",
        "PARLEY_LLM_CA_FILE": str(tls.ca),
        "PARLEY_LLM_MODELS": ",".join(models),
        # Each reply's steps in the processes' logs: the waterfall (timeline.py).
        "PARLEY_REPLY_TIMELINE": "1",
        "PARLEY_LLM_PROVIDER_LABEL": "fakellm",
        "PARLEY_DEMO_PROVIDER": "false",
        # The limits stay on (their Redis round trips are part of every message) but high
        # enough that a benchmark user sending hundreds of messages is never refused.
        "PARLEY_RATE_LIMIT_MESSAGES": "1000000",
        "PARLEY_DAILY_TOKEN_QUOTA": "1000000000000",
        "PARLEY_STATIC_ROOT": str(STATE_DIR / "static"),
    }


def _manage(app_env: dict[str, str], *args: str) -> str:
    env = {
        "PATH": f"{VENV_BIN}:/usr/bin:/bin",
        "LANG": "C.UTF-8",
        "HOME": str(STATE_DIR),
        **app_env,
    }
    completed = subprocess.run(  # noqa: S603  (our own argv)
        [str(VENV_BIN / "python"), *args],
        cwd=APP_DIR,
        env=env,
        capture_output=True,
        text=True,
        timeout=600,
        check=False,
    )
    if completed.returncode != 0:
        raise RuntimeError(f"{' '.join(args)} failed:\n{completed.stdout}\n{completed.stderr}")
    return completed.stdout


def conversations_needed(plan: Plan) -> int:
    """Every measurement uses conversations of its own (ConversationPool), so many are made."""
    overhead = sum(level.chats for level in plan.overhead_levels) * 4  # designs a, b, c, p
    inflight = sum(plan.inflight_levels) * 2  # designs a and p
    waterfall = plan.waterfall_level.chats * 2
    # Row 1's per-token diagnostic at one chat, row 2's three chat designs, row 3's sockets,
    # and a margin for the warm-up (2 chats x 6 designs) and the profiles.
    return overhead + 1 + 3 * plan.throughput_level.chats + inflight + waterfall + plan.sockets + 64


def bring_up(supervisor: Supervisor, plan: Plan, progress: Callable[[str], None]) -> Stack:
    ports, creds = Ports(), Credentials()
    ensure_ports_free(ports.all())
    nofile = raise_open_files_limit()
    if STATE_DIR.exists():
        shutil.rmtree(STATE_DIR)
    STATE_DIR.mkdir(parents=True)
    STATE_DIR.chmod(0o755)  # PostgreSQL's user must reach its data directory below
    tls = make_certificates(STATE_DIR / "tls")
    broker = RedisInstance("broker", ports.redis_broker)
    channels = RedisInstance("channels", ports.redis_channels)
    app_env = app_environment(
        plan=plan, ports=ports, creds=creds, broker=broker, channels=channels, tls=tls
    )
    stack = Stack(
        plan, ports, creds, tls, supervisor, app_env, nofile, broker=broker, channels=channels
    )
    if plan.name == "full":
        in_flight = roledefaults.celery_replies_in_flight(plan.replies_in_flight)
    else:  # the smoke keeps its toy size whatever the role says
        in_flight = (plan.replies_in_flight, f"the {plan.name} plan")
    stack.replies_in_flight, stack.replies_in_flight_source = in_flight
    stack.worker_slots = {
        "celery": stack.replies_in_flight,
        "celery-a1": stack.replies_in_flight,
        "celery-p": plan.prefork_concurrency,
    }

    stack.roots["postgres"] = [datastores.start_postgres(supervisor, ports, creds).pid]
    stack.roots["redis-broker"] = [
        datastores.start_redis(supervisor, broker, creds, persistent=True).pid
    ]
    stack.roots["redis-channels"] = [
        datastores.start_redis(supervisor, channels, creds, persistent=False).pid
    ]
    stack.roots["fakellm"] = [
        appservers.start_fakellm(supervisor, ports.fakellm, plan.overhead_model, tls).pid
    ]
    stack.counters = ConnectionCounters.open(stack.admin(broker), stack.admin(channels), app_env)

    progress("data stores and the fake model up; migrating")
    _manage(app_env, "manage.py", "migrate", "--noinput", "-v0")
    _manage(app_env, "manage.py", "collectstatic", "--noinput", "-v0")
    seeded = json.loads(
        _manage(
            {
                **app_env,
                "PYTHONPATH": f"{APP_DIR}:{BENCH_DIR}",
                "BENCH_USER_PASSWORD": creds.user_password,
            },
            "-m",
            "parleybench.seed",
            str(plan.users),
            str(conversations_needed(plan)),
        )
    )
    stack.conversations = [(user, conversation) for user, conversation in seeded["conversations"]]

    progress(f"seeded {len(stack.conversations)} conversations; starting the servers")
    per_token_env = {
        **app_env,
        # Its own broker database, so its tasks reach only its own worker.
        "PARLEY_CELERY_BROKER_URL": broker.url(creds, db=1),
        "PARLEY_STREAM_FLUSH_TOKENS": "1",
    }
    # Its own broker database too: design p's web tier queues for its prefork worker only.
    prefork_env = {**app_env, "PARLEY_CELERY_BROKER_URL": broker.url(creds, db=2)}
    threads = {"pool": "threads", "concurrency": stack.replies_in_flight}
    servers = {
        "web-a": appservers.start_gunicorn(supervisor, "web-a", ports.parley, app_env, plan),
        "celery": appservers.start_celery(
            supervisor, "celery", app_env, **threads, metrics_port=ports.worker_metrics
        ),
        "web-b": appservers.start_daphne(supervisor, "web-b", ports.daphne, app_env, plan),
        "web-c": appservers.start_gunicorn(
            supervisor,
            "web-c",
            ports.inprocess,
            {**app_env, "PARLEY_GENERATION_MODE": "inprocess"},
            plan,
        ),
        "web-a1": appservers.start_gunicorn(
            supervisor, "web-a1", ports.per_token, per_token_env, plan
        ),
        "celery-a1": appservers.start_celery(
            supervisor,
            "celery-a1",
            per_token_env,
            **threads,
            metrics_port=ports.worker_metrics_per_token,
        ),
        "web-p": appservers.start_gunicorn(supervisor, "web-p", ports.prefork, prefork_env, plan),
        "celery-p": appservers.start_celery(
            supervisor,
            "celery-p",
            prefork_env,
            pool="prefork",
            concurrency=plan.prefork_concurrency,
            metrics_port=ports.worker_metrics_prefork,
        ),
        "echo": appservers.start_echo(supervisor, ports.echo, plan),
    }
    appservers.wait_all(list(servers.values()))
    progress("servers up; starting nginx")
    stack.roots.update({role: started.pids for role, started in servers.items()})

    frontends = [
        nginxconf.Frontend(name, ports.tls(port), port)
        for name, port in (
            ("a", ports.parley),
            ("b", ports.daphne),
            ("c", ports.inprocess),
            ("a1", ports.per_token),
            ("p", ports.prefork),
            ("echo", ports.echo),
        )
    ]
    stack.nginx_settings = nginxconf.settings(nofile)
    config = nginxconf.render(frontends, tls, STATE_DIR / "nginx", nofile)
    nginx = appservers.start_nginx(supervisor, config, [front.listen_port for front in frontends])
    stack.roots["nginx"] = [nginx.pid]

    stack.cookies = signin.sign_in_all(
        ports.tls(ports.parley), stack.ssl_context(), seeded["users"], creds.user_password
    )
    return stack
