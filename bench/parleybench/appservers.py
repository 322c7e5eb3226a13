"""The fake model and every server of every design, started from the app's own entry points.

Gunicorn reads app/gunicorn.conf.py exactly as roles/gunicorn runs it; Daphne serves the same
`parley.asgi:application`; Celery runs as roles/celery starts it (the threads pool, many
replies per process), or with the prefork pool of before for design p. The app runs with
production settings behind nginx's TLS, and reaches the fake model over HTTPS.
"""

from __future__ import annotations

import os
import shutil
import socket
import ssl
import urllib.request
from collections.abc import Callable
from dataclasses import dataclass

from parleybench.config import ModelSpec, Plan
from parleybench.paths import APP_DIR, BENCH_DIR, STATE_DIR, VENV_BIN
from parleybench.processes import Process, Supervisor, port_open, wait_until
from parleybench.tls import TlsFiles


@dataclass
class Started:
    """Processes just started and how to tell they are ready; servers boot in parallel."""

    processes: list[Process]
    ready: Callable[[], bool]
    what: str

    @property
    def pids(self) -> list[int]:
        return [process.pid for process in self.processes]


def wait_all(started: list[Started], timeout: float = 120) -> None:
    def all_ready() -> bool:
        for item in started:
            for process in item.processes:
                process.check_alive()
        return all(item.ready() for item in started)

    wait_until(all_ready, timeout, ", ".join(item.what for item in started))


def http_ok(url: str, context: ssl.SSLContext | None = None) -> bool:
    try:
        with urllib.request.urlopen(url, timeout=2, context=context) as response:  # noqa: S310
            return response.status == 200
    except OSError:
        return False


def _python_env(extra: dict[str, str] | None = None) -> dict[str, str]:
    env = {
        "PATH": f"{VENV_BIN}:/usr/local/bin:/usr/bin:/bin",
        "LANG": "C.UTF-8",
        "HOME": str(STATE_DIR),
        "PYTHONDONTWRITEBYTECODE": "1",
    }
    env.update(extra or {})
    return env


def start_fakellm(supervisor: Supervisor, port: int, default: ModelSpec, tls: TlsFiles) -> Process:
    """One fake model server over HTTPS, as every real provider is reached; each request's
    model name picks its pace (fakellm markers)."""
    process = supervisor.start(
        "fakellm",
        [
            str(VENV_BIN / "python"),
            "-m",
            "fakellm",
            "--host",
            "127.0.0.1",
            "--port",
            str(port),
            "--ttft-ms",
            str(default.ttft_ms),
            "--tokens-per-second",
            str(default.tokens_per_second),
            "--reply-tokens",
            str(default.reply_tokens),
            "--models",
            "fake-model",
            "--tls-cert",
            str(tls.certificate),
            "--tls-key",
            str(tls.key),
        ],
        env=_python_env(),
        cwd=APP_DIR,
    )
    context = ssl.create_default_context(cafile=str(tls.ca))
    wait_until(
        lambda: process.check_alive() or http_ok(f"https://127.0.0.1:{port}/v1/models", context),
        30,
        "the fake LLM server",
    )
    return process


def _logged(process: Process, text: str) -> bool:
    return text in process.log_path.read_text(errors="replace")


def _metrics_dir(name: str) -> str:
    path = STATE_DIR / "metrics" / name
    if path.exists():
        shutil.rmtree(path)
    path.mkdir(parents=True)
    return str(path)


def start_gunicorn(
    supervisor: Supervisor, name: str, port: int, app_env: dict[str, str], plan: Plan
) -> Started:
    env = _python_env(
        {
            **app_env,
            # Only how long a stop may take: after any two WebSockets were open, a stopping
            # worker waits for ASGI tasks that never end, so a stop always lasts this long
            # (BENCHMARKS.md, findings). 30 s by default; 5 s keeps the harness's exit quick.
            "PARLEY_GRACEFUL_TIMEOUT": "5",
            "PARLEY_BIND": f"127.0.0.1:{port}",
            "PARLEY_WEB_CONCURRENCY": str(plan.web_workers),
            "PROMETHEUS_MULTIPROC_DIR": _metrics_dir(name),
        }
    )
    process = supervisor.start(
        name, [str(VENV_BIN / "gunicorn"), "-c", "gunicorn.conf.py"], env=env, cwd=APP_DIR
    )
    return Started(
        [process], lambda: http_ok(f"http://127.0.0.1:{port}/healthz"), f"Gunicorn ({name})"
    )


def start_daphne(
    supervisor: Supervisor, name: str, port: int, app_env: dict[str, str], plan: Plan
) -> Started:
    """Daphne as Channels documents it for several processes: all serve one shared socket.

    Daphne has no worker processes of its own, so a supervisor (here, this harness) binds the
    socket and starts one Daphne per core-plus-one with `--fd`, the same process count as
    Gunicorn's workers.
    """
    listener = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    listener.bind(("127.0.0.1", port))
    listener.listen(4096)
    listener.set_inheritable(True)
    fd = listener.fileno()
    env = _python_env({**app_env, "PROMETHEUS_MULTIPROC_DIR": _metrics_dir(name)})
    processes = [
        supervisor.start(
            f"{name}-{index}",
            [
                str(VENV_BIN / "daphne"),
                "--fd",
                str(fd),
                "--proxy-headers",
                "--access-log",
                "-",
                "parley.asgi:application",
            ],
            env=env,
            cwd=APP_DIR,
            pass_fds=[fd],
        )
        for index in range(plan.web_workers)
    ]
    listener.close()
    return Started(
        processes,
        # They share the port, so each says it is listening in its own log.
        lambda: all(_logged(process, "Listening on") for process in processes),
        f"Daphne ({name})",
    )


def start_celery(  # noqa: PLR0913  (what differs between the workers, named)
    supervisor: Supervisor,
    name: str,
    app_env: dict[str, str],
    *,
    pool: str,
    concurrency: int,
    metrics_port: int,
) -> Started:
    """A worker as roles/celery's unit starts one (`--without-mingle`), with the pool given:
    `threads` and N replies in flight, or `prefork` and one reply per process."""
    env = _python_env(
        {
            **app_env,
            "PROMETHEUS_MULTIPROC_DIR": _metrics_dir(name),
            "PARLEY_WORKER_METRICS_BIND": f"127.0.0.1:{metrics_port}",
        }
    )
    process = supervisor.start(
        name,
        [
            str(VENV_BIN / "celery"),
            "-A",
            "parley",
            "worker",
            "--pool",
            pool,
            "--concurrency",
            str(concurrency),
            "--loglevel",
            "INFO",
            "--hostname",
            f"{name}@%h",
            "--without-mingle",
        ],
        env=env,
        cwd=APP_DIR,
    )
    return Started([process], lambda: _logged(process, " ready."), f"Celery ({name})")


def start_echo(supervisor: Supervisor, port: int, plan: Plan) -> Started:
    """Row 3's baseline: the same Uvicorn and WebSocket implementation, no Django, no auth."""
    process = supervisor.start(
        "echo",
        [
            str(VENV_BIN / "uvicorn"),
            "parleybench.echo_app:app",
            "--host",
            "127.0.0.1",
            "--port",
            str(port),
            "--workers",
            str(plan.web_workers),
            "--proxy-headers",
        ],
        env=_python_env({"PYTHONPATH": str(BENCH_DIR)}),
        cwd=BENCH_DIR,
    )
    return Started(
        [process], lambda: http_ok(f"http://127.0.0.1:{port}/healthz"), "the echo server"
    )


def start_nginx(supervisor: Supervisor, config_text: str, listen_ports: list[int]) -> Process:
    directory = STATE_DIR / "nginx"
    directory.mkdir(parents=True, exist_ok=True)
    config = directory / "nginx.conf"
    config.write_text(config_text)
    nginx = shutil.which("nginx") or "/usr/sbin/nginx"
    argv = [nginx, "-p", str(directory), "-c", str(config), "-e", str(directory / "error.log")]
    test = supervisor.start("nginx-config-test", [*argv, "-t"], env=dict(os.environ), cwd=directory)
    test.popen.wait(30)
    if test.popen.returncode != 0:
        raise RuntimeError(f"nginx rejected its configuration:\n{test.log_tail()}")
    supervisor.stop(test)
    process = supervisor.start(
        "nginx", [*argv, "-g", "daemon off;"], env=dict(os.environ), cwd=directory
    )

    def listening() -> bool:
        process.check_alive()
        return all(port_open(port) for port in listen_ports)

    wait_until(listening, 30, "nginx")
    return process
