"""Where a reply's CPU goes: py-spy sampling the servers while one design is loaded.

A diagnostic, not a figure: profiled measurements are reported apart and never pooled with
the matrix (sampling slows the processes a little). py-spy reads the processes' memory from
outside (ptrace), so nothing in the app changes; idle threads are not sampled, so the counts
are CPU work, not waiting.
"""

from __future__ import annotations

import re
import signal
import subprocess
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from types import TracebackType

from parleybench.paths import VENV_BIN

FRAME = re.compile(r"^(?P<function>.*?) \((?P<file>[^()]*?)(?::\d+)?\)$")
# Server, pool and event-loop plumbing: below nearly every stack, explaining nothing about
# a reply. Matched against the file of a frame (as _short prints it).
PLUMBING = re.compile(
    r"\((click/|gunicorn/|celery/bootsteps|celery/bin/|celery/worker/worker\.py|celery/apps/|"
    r"celery/concurrency/|billiard/|threading\.py|concurrent/futures/|asyncio/runners\.py|"
    r"asyncio/events\.py|asyncio/base_events\.py|uvicorn_worker/|uvicorn/_compat\.py|"
    r"uvicorn/server\.py|uvicorn/main\.py|kombu/asynchronous/|celery/__main__\.py|"
    r"[^()]*/bin/\w+\)|<frozen runpy>|runpy\.py)"
)
# A stack whose innermost frame is one of these is a thread waiting (for a socket, a lock, a
# timer, or in uvloop's C loop, which py-spy sees as its Python caller): not counted as work.
WAITING = re.compile(r"(^|\.)(select|poll|wait|sleep|accept|run_until_complete|run_forever)$")
TOP = 20


def _short(frame: str) -> str:
    match = FRAME.match(frame)
    if match is None:
        return frame
    path = match.group("file")
    for marker in ("site-packages/", "lib/python3.11/", "lib/python3.13/", "/app/"):
        if marker in path:
            path = path.split(marker, 1)[1]
            break
    return f"{match.group('function')} ({path})"


@dataclass
class GroupProfile:
    samples: int = 0
    waiting: int = 0
    inclusive: Counter[str] = field(default_factory=Counter)
    own: Counter[str] = field(default_factory=Counter)

    def add(self, stack: list[str], count: int) -> None:
        frames = [_short(frame) for frame in stack if not frame.startswith("process ")]
        if not frames:
            return
        if WAITING.search(frames[-1].split(" (", 1)[0]) or PLUMBING.search(frames[-1]):
            self.waiting += count
            return
        self.samples += count
        self.own[frames[-1]] += count
        for frame in set(frames):
            self.inclusive[frame] += count

    def summary(self) -> dict[str, object]:
        def share(counter: Counter[str]) -> list[tuple[str, float]]:
            ranked = [
                (frame, round(100 * count / max(1, self.samples), 1))
                for frame, count in counter.most_common()
                if not PLUMBING.search(frame)
            ]
            return ranked[:TOP]

        return {
            "samples": self.samples,
            "waiting_samples": self.waiting,
            "inclusive_percent": share(self.inclusive),
            "own_percent": share(self.own),
        }


def parse_raw(text: str, profile: GroupProfile) -> None:
    """py-spy's raw (collapsed) format: `frame;frame;... count` per line, root first."""
    for line in text.splitlines():
        stack_text, _, count = line.rpartition(" ")
        if stack_text and count.isdigit():
            profile.add(stack_text.split(";"), int(count))


class Profiler:
    """py-spy attached to every root (and its subprocesses) for the length of a `with`."""

    def __init__(self, roots: dict[str, list[int]], directory: Path, rate: int = 250) -> None:
        self.roots = roots
        self.directory = directory
        self.rate = rate
        self.spies: list[tuple[str, Path, subprocess.Popen[bytes]]] = []

    def __enter__(self) -> Profiler:
        self.directory.mkdir(parents=True, exist_ok=True)
        for group, pids in self.roots.items():
            for pid in pids:
                output = self.directory / f"{group}-{pid}.txt"
                spy = subprocess.Popen(  # noqa: S603  (our own argv)
                    [
                        str(VENV_BIN / "py-spy"),
                        "record",
                        "--pid",
                        str(pid),
                        "--subprocesses",
                        "--nonblocking",
                        "--full-filenames",
                        "--format",
                        "raw",
                        "--rate",
                        str(self.rate),
                        "--output",
                        str(output),
                    ],
                    stdout=subprocess.DEVNULL,
                    stderr=(output.with_suffix(".log")).open("wb"),
                )
                self.spies.append((group, output, spy))
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        # SIGINT is py-spy's "stop and write what you have".
        for _group, _output, spy in self.spies:
            spy.send_signal(signal.SIGINT)
        for _group, _output, spy in self.spies:
            try:
                spy.wait(60)
            except subprocess.TimeoutExpired:
                spy.kill()
                spy.wait(10)

    def summary(self) -> dict[str, dict[str, object]]:
        profiles: dict[str, GroupProfile] = {}
        for group, output, _spy in self.spies:
            if output.exists():
                parse_raw(
                    output.read_text(errors="replace"), profiles.setdefault(group, GroupProfile())
                )
        return {group: profile.summary() for group, profile in profiles.items()}
