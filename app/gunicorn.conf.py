"""Gunicorn settings for Parley: the one place for server settings.

Every value comes from a PARLEY_* (or GUNICORN_*) environment variable with a sane default;
app/README.md lists them. Run: `gunicorn -c gunicorn.conf.py parley.asgi:application`.
"""

from __future__ import annotations

import multiprocessing
import os
import shutil
import tempfile
from pathlib import Path


def _setting(name: str) -> tuple[str, str] | None:
    """The variable that sets `name` and its value: PARLEY_ before GUNICORN_, empty is unset."""
    for variable in (f"PARLEY_{name}", f"GUNICORN_{name}"):
        if raw := os.environ.get(variable):
            return variable, raw
    return None


def _env(name: str, default: str) -> str:
    found = _setting(name)
    return found[1] if found else default


def _whole_number(name: str, default: int) -> int:
    """A count or a number of seconds; a malformed one stops Gunicorn naming the variable, not
    with a bare int() traceback that leaves the reader to guess which setting it was."""
    found = _setting(name)
    if found is None:
        return default
    variable, raw = found
    try:
        return int(raw)
    except ValueError:
        raise SystemExit(f"{variable} must be a whole number, got {raw!r}") from None


wsgi_app = "parley.asgi:application"
bind = _env("BIND", "127.0.0.1:8000").split(",")
# LLM traffic is I/O-bound and each Uvicorn worker is an event loop holding many sockets, so
# one worker per core (plus one) rather than Gunicorn's 2n+1 for sync workers.
workers = _whole_number("WEB_CONCURRENCY", multiprocessing.cpu_count() + 1)
# Uvicorn workers that drain briefly on shutdown, so a restart resets no connection.
worker_class = "parley.web_worker.DrainingUvicornWorker"
# Recycle workers now and then (memory growth); the jitter keeps them from restarting together.
max_requests = _whole_number("MAX_REQUESTS", 2000)
max_requests_jitter = _whole_number("MAX_REQUESTS_JITTER", 200)
# On TERM/HUP, open sockets get this long to finish; Uvicorn then closes WebSockets with 1012
# and clients reconnect and resume.
graceful_timeout = _whole_number("GRACEFUL_TIMEOUT", 30)
timeout = _whole_number("TIMEOUT", 60)
keepalive = _whole_number("KEEPALIVE", 5)
# Only these peers may set X-Forwarded-For/Proto (the lb's nginx).
forwarded_allow_ips = _env("FORWARDED_ALLOW_IPS", "127.0.0.1,::1")
proxy_allow_ips = forwarded_allow_ips
accesslog = _env("ACCESS_LOG", "-")
errorlog = "-"
loglevel = _env("LOG_LEVEL", "info").lower()
proc_name = "parley-web"
# Gunicorn's control socket (for `gunicornc`) defaults to ~/.gunicorn/, which the unit's
# sandbox keeps read-only: under systemd it goes into the unit's RuntimeDirectory.
if os.environ.get("RUNTIME_DIRECTORY"):
    control_socket = str(Path(os.environ["RUNTIME_DIRECTORY"].split(":")[0]) / "gunicorn.ctl")

# Prometheus multiprocess mode: each worker writes its samples under this directory, /metrics
# aggregates them. It is emptied at start so dead workers' counters do not linger.
_metrics_dir = os.environ.get("PROMETHEUS_MULTIPROC_DIR") or str(
    Path(tempfile.gettempdir()) / f"parley-web-metrics-{os.getpid()}"
)
os.environ["PROMETHEUS_MULTIPROC_DIR"] = _metrics_dir


def on_starting(server: object) -> None:
    path = Path(_metrics_dir)
    if path.exists():
        shutil.rmtree(path)
    path.mkdir(parents=True, mode=0o700)


def child_exit(server: object, worker: object) -> None:
    from prometheus_client import multiprocess

    multiprocess.mark_process_dead(worker.pid)
