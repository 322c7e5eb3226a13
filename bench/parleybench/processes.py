"""Child processes the harness starts, and the guarantee that every one of them is stopped.

Each child runs in a session of its own, so stopping it signals its whole process group
(Gunicorn's and Celery's workers, nginx's workers, a runuser'd postmaster). The Supervisor
stops them in reverse order on any exit: normal end, exception, Ctrl-C or SIGTERM.
"""

from __future__ import annotations

import contextlib
import os
import resource
import signal
import socket
import subprocess
import time
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from types import FrameType, TracebackType

from parleybench.paths import LOG_DIR


def raise_open_files_limit() -> int:
    """Lift the soft descriptor limit to the hard one; children inherit it.

    Without CAP_SYS_RESOURCE the hard limit itself cannot be raised, so that is the ceiling
    for every process here (nginx's worker_rlimit_nofile included).
    """
    _soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
    return hard


def wait_until(predicate: Callable[[], object], timeout: float, what: str) -> object:
    deadline = time.monotonic() + timeout
    while True:
        result = predicate()
        if result:
            return result
        if time.monotonic() > deadline:
            raise TimeoutError(f"timed out after {timeout:g}s waiting for {what}")
        time.sleep(0.05)


def port_open(port: int, host: str = "127.0.0.1") -> bool:
    with socket.socket() as probe:
        probe.settimeout(0.5)
        return probe.connect_ex((host, port)) == 0


def ensure_ports_free(ports: Sequence[int]) -> None:
    """Refuse to start over someone else's server: every port must be unused."""
    taken = [port for port in ports if port_open(port)]
    if taken:
        raise RuntimeError(f"ports already in use on 127.0.0.1: {taken}; is another bench running?")


class Process:
    """A child in its own session, logging to .state/logs/<name>.log."""

    def __init__(  # noqa: PLR0913  (what Popen needs, named)
        self,
        name: str,
        argv: Sequence[str],
        *,
        env: dict[str, str],
        cwd: Path,
        user: str | None = None,
        pass_fds: Sequence[int] = (),
        stop_signal: signal.Signals = signal.SIGTERM,
    ) -> None:
        LOG_DIR.mkdir(parents=True, exist_ok=True)
        self.name = name
        self.stop_signal = stop_signal
        self.log_path = LOG_DIR / f"{name}.log"
        self._log = self.log_path.open("ab")
        self._log.write(f"\n===== {time.ctime()} {' '.join(argv)}\n".encode())
        self._log.flush()
        self.popen = subprocess.Popen(  # noqa: S603  (our own argv, never a shell)
            list(argv),
            cwd=cwd,
            env=env,
            stdout=self._log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
            user=user,
            pass_fds=tuple(pass_fds),
        )

    @property
    def pid(self) -> int:
        return self.popen.pid

    def alive(self) -> bool:
        return self.popen.poll() is None

    def log_tail(self, lines: int = 30) -> str:
        text = self.log_path.read_text(errors="replace").splitlines()
        return "\n".join(text[-lines:])

    def check_alive(self) -> None:
        if not self.alive():
            raise RuntimeError(
                f"{self.name} exited with {self.popen.returncode}; its log ends:\n"
                + self.log_tail()
            )

    def stop(self, timeout: float = 20) -> None:
        """The stop signal to the whole group, KILL for what is left after `timeout`."""
        started = time.monotonic()
        if self.alive():
            _signal_group(self.pid, self.stop_signal)
            try:
                self.popen.wait(timeout)
            except subprocess.TimeoutExpired:
                _signal_group(self.pid, signal.SIGKILL)
                self.popen.wait(5)
        # Pool children can outlive their parent for a moment; the group still names them.
        _signal_group(self.pid, signal.SIGKILL)
        self._log.write(f"===== stopped in {time.monotonic() - started:.1f}s\n".encode())
        self._log.close()


def _signal_group(pid: int, sig: signal.Signals) -> None:
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(pid, sig)


def descendants(pid: int) -> list[int]:
    """The process and every process below it, read from /proc (children of each thread)."""
    found = [pid]
    index = 0
    while index < len(found):
        current = found[index]
        index += 1
        for task in _listdir(Path(f"/proc/{current}/task")):
            children = Path(f"/proc/{current}/task/{task}/children")
            with contextlib.suppress(OSError):
                found.extend(int(child) for child in children.read_text().split())
    return found


def _listdir(path: Path) -> list[str]:
    try:
        return [entry.name for entry in path.iterdir()]
    except OSError:
        return []


class Supervisor:
    """Owns every Process started in its `with` block and stops them all, last first."""

    def __init__(self) -> None:
        self.processes: list[Process] = []
        self._previous_handlers: dict[int, object] = {}

    def start(self, name: str, argv: Sequence[str], **kwargs: object) -> Process:
        process = Process(name, argv, **kwargs)  # type: ignore[arg-type]
        self.processes.append(process)
        return process

    def stop(self, process: Process) -> None:
        process.stop()
        self.processes.remove(process)

    def __enter__(self) -> Supervisor:
        for sig in (signal.SIGTERM, signal.SIGHUP):
            self._previous_handlers[sig] = signal.signal(sig, self._on_signal)
        return self

    @staticmethod
    def _on_signal(signum: int, _frame: FrameType | None) -> None:
        # Turned into an exception so the `with` block unwinds and stops every child.
        raise KeyboardInterrupt(f"signal {signum}")

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop_all()
        for sig, handler in self._previous_handlers.items():
            signal.signal(sig, handler)  # type: ignore[arg-type]

    def stop_all(self) -> None:
        # Ctrl-C while stopping must not leave the rest running.
        for process in reversed(list(self.processes)):
            with contextlib.suppress(Exception, KeyboardInterrupt):
                process.stop()
        self.processes.clear()

    def check_alive(self) -> None:
        for process in self.processes:
            process.check_alive()

    def by_name(self) -> Iterator[tuple[str, Process]]:
        for process in self.processes:
            yield process.name, process
