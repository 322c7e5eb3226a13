"""Start and stop the real processes the tests talk to: fake LLM, Gunicorn, Celery worker/Beat."""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
import threading
import time
import urllib.request
from collections.abc import Callable
from pathlib import Path

from tests.timing import patience

APP_DIR = Path(__file__).resolve().parent.parent
ARTIFACTS = APP_DIR / ".artifacts"
VENV_BIN = Path(sys.executable).parent

# Below Linux's ephemeral range (32768-60999): an outgoing connection of the suite (to
# PostgreSQL, Redis, a server) never holds one of them when a server binds it.
WEB_PORT = 28000
FAKELLM_PORT = 28100
WORKER_METRICS_PORT = 28009


def wait_until(predicate: Callable[[], object], timeout: float, what: str) -> object:
    """Wait for a condition; `timeout` is what it takes on an idle machine, and grows with
    PARLEY_TEST_SLOW (a wait, never an asserted bound)."""
    seconds = patience(timeout)
    deadline = time.monotonic() + seconds
    while True:
        result = predicate()
        if result:
            return result
        if time.monotonic() > deadline:
            raise TimeoutError(f"timed out after {seconds:.0f} s waiting for {what}")
        time.sleep(0.05)


def http_ok(url: str) -> bool:
    try:
        with urllib.request.urlopen(url, timeout=1) as response:  # noqa: S310  (loopback)
            return response.status == 200
    except OSError:
        return False


# Every process the suite started: the session's end stops any a test left running (a test
# that failed before its own cleanup), so none outlives the suite on the shared services.
STARTED: list[Process] = []


class Process:
    """A child process in its own process group, logging to .artifacts/<name>.log."""

    def __init__(self, name: str, argv: list[str], env: dict[str, str]) -> None:
        ARTIFACTS.mkdir(exist_ok=True)
        self.name = name
        self.log_path = ARTIFACTS / f"{name}.log"
        self.log = self.log_path.open("ab")
        self.log_start = self.log.tell()
        self.argv, self.env = argv, env
        self.stopped = False
        self.popen = self._spawn()
        STARTED.append(self)

    def _spawn(self) -> subprocess.Popen[bytes]:
        self.log.write(f"\n===== start {time.ctime()} {' '.join(self.argv)}\n".encode())
        self.log.flush()
        return subprocess.Popen(
            self.argv,
            cwd=APP_DIR,
            env=self.env,
            stdout=self.log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )

    @property
    def pid(self) -> int:
        return self.popen.pid

    def alive(self) -> bool:
        return self.popen.poll() is None

    def log_text(self) -> str:
        """What this run of the process logged (the file keeps earlier runs too)."""
        with self.log_path.open("rb") as log:
            log.seek(self.log_start)
            return log.read().decode(errors="replace")

    def stop(self, timeout: float = 15) -> None:
        """TERM the whole process group, then KILL what is left (once: a later call does
        nothing, as the group's id may belong to another process by then)."""
        if self.stopped:
            return
        self.stopped = True
        if self.alive():
            with_group(self.pid, signal.SIGTERM)
            try:
                self.popen.wait(timeout)
            except subprocess.TimeoutExpired:
                with_group(self.pid, signal.SIGKILL)
                self.popen.wait(5)
        # Pool children may outlive their parent for a moment.
        with_group(self.pid, signal.SIGKILL)
        self.log.close()

    def children(self) -> list[int]:
        path = Path(f"/proc/{self.pid}/task/{self.pid}/children")
        try:
            return [int(pid) for pid in path.read_text().split()]
        except FileNotFoundError:
            return []


def with_group(pid: int, sig: signal.Signals) -> None:
    with contextlib.suppress(ProcessLookupError):
        os.killpg(pid, sig)


def base_env(database_url: str, **overrides: str) -> dict[str, str]:
    env = dict(os.environ)
    env.update(
        DJANGO_SETTINGS_MODULE="parley.settings.test",
        PARLEY_DATABASE_URL=database_url,
        PYTHONUNBUFFERED="1",
    )
    env.update(overrides)
    return env


def start_fakellm(port: int = FAKELLM_PORT) -> Process:
    process = Process(
        "fakellm",
        [sys.executable, "-m", "fakellm", "--host", "127.0.0.1", "--port", str(port),
         "--ttft-ms", "20", "--tokens-per-second", "200", "--reply-tokens", "60"],
        dict(os.environ),
    )  # fmt: skip
    wait_until(lambda: http_ok(f"http://127.0.0.1:{port}/v1/models"), 15, "fakellm")
    return process


class SupervisedProcess(Process):
    """Started again one second after it exits with a failure, as systemd's
    `Restart=on-failure` does for the Celery units of roles/celery: a worker whose broker
    connection drops while it acks a task can die of kombu's "Unrecoverable error"."""

    def __init__(self, name: str, argv: list[str], env: dict[str, str]) -> None:
        super().__init__(name, argv, env)
        self.restarts = 0
        self._stopping = threading.Event()
        self._watch = threading.Thread(target=self._restart_on_failure, daemon=True)
        self._watch.start()

    def _restart_on_failure(self) -> None:
        while not self._stopping.wait(0.2):
            if self.popen.poll() not in (None, 0) and not self._stopping.wait(1):
                self.restarts += 1
                self.popen = self._spawn()

    def stop(self, timeout: float = 15) -> None:
        self._stopping.set()
        if self._watch.is_alive():
            self._watch.join()
        super().stop(timeout)


def start_web(env: dict[str, str], port: int = WEB_PORT, name: str = "web") -> Process:
    metrics_dir = ARTIFACTS / f"{name}-metrics"
    process = Process(
        name,
        [str(VENV_BIN / "gunicorn"), "-c", "gunicorn.conf.py"],
        {
            **env,
            "PARLEY_BIND": f"127.0.0.1:{port}",
            "PARLEY_WEB_CONCURRENCY": "2",
            "PARLEY_GRACEFUL_TIMEOUT": "3",
            "PROMETHEUS_MULTIPROC_DIR": str(metrics_dir),
        },
    )
    wait_until(lambda: http_ok(f"http://127.0.0.1:{port}/healthz"), 30, f"{name} server")
    return process


# Replies one worker writes at once, as roles/celery runs it (the `threads` pool on one loop).
WORKER_REPLIES_IN_FLIGHT = 100


def start_worker(
    env: dict[str, str],
    name: str = "worker",
    supervised: bool = False,
    pool: tuple[str, int] = ("threads", WORKER_REPLIES_IN_FLIGHT),
) -> Process:
    """A Celery worker as deployed; `pool` is Celery's pool and its concurrency."""
    metrics_dir = ARTIFACTS / f"{name}-metrics"
    if metrics_dir.exists():
        for stale in metrics_dir.glob("*.db"):
            stale.unlink()
    metrics_dir.mkdir(parents=True, exist_ok=True)
    process = (SupervisedProcess if supervised else Process)(
        name,
        [str(VENV_BIN / "celery"), "-A", "parley", "worker", "--pool", pool[0],
         "--concurrency", str(pool[1]), "--loglevel", "INFO", "--hostname", f"{name}@%h",
         "--without-mingle"],
        {**env, "PROMETHEUS_MULTIPROC_DIR": str(metrics_dir)},
    )  # fmt: skip
    wait_until(lambda: " ready." in process.log_text(), 60, name)
    return process


def start_beat(env: dict[str, str], name: str) -> Process:
    return Process(
        name,
        [str(VENV_BIN / "celery"), "-A", "parley", "beat", "--loglevel", "INFO",
         "--pidfile", ""],
        env,
    )  # fmt: skip


def stop_every_process() -> None:
    for process in STARTED:
        process.stop()
