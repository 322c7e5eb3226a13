"""What the servers spent during one measurement: peak memory and CPU time of every process,
and the commands each Redis instance ran.

CPU seconds per reply are the figure least disturbed by other work on a shared machine:
a noisy neighbour makes a reply wait longer, not cost more cycles.
"""

from __future__ import annotations

import os
import re
import threading
import urllib.request
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import redis

from parleybench.processes import descendants

PAGE_KB = os.sysconf("SC_PAGE_SIZE") // 1024
TICKS = os.sysconf("SC_CLK_TCK")


@dataclass
class ProcessUsage:
    group: str
    pid: int
    command: str
    peak_rss_kb: int = 0
    cpu_start: float | None = None
    cpu_end: float = 0.0

    @property
    def cpu_seconds(self) -> float:
        return max(0.0, self.cpu_end - (self.cpu_start or 0.0))


def _read_usage(pid: int) -> tuple[int, float] | None:
    """(resident kB, user+system CPU seconds) of one process, or None if it is gone."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
        statm = Path(f"/proc/{pid}/statm").read_text()
    except OSError:
        return None
    # Fields after the command name (which may hold spaces) start at field 3.
    fields = stat.rsplit(")", 1)[1].split()
    cpu = (int(fields[11]) + int(fields[12])) / TICKS
    rss_kb = int(statm.split()[1]) * PAGE_KB
    return rss_kb, cpu


def _command(pid: int) -> str:
    try:
        raw = Path(f"/proc/{pid}/cmdline").read_bytes()
    except OSError:
        return "?"
    # Enough to tell processes apart (`celery worker`, `nginx: worker process`, `postgres: ...`).
    words = raw.replace(b"\0", b" ").decode(errors="replace").split()
    words = [word.rsplit("/", 1)[-1] for word in words[:3]]
    return " ".join(words)[:60]


class Repeating:
    """Calls `tick` every `interval` seconds on a background thread until `stop()`."""

    def __init__(self, tick: Callable[[], None], interval: float) -> None:
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, args=(tick, interval), daemon=True)
        self._thread.start()

    def _run(self, tick: Callable[[], None], interval: float) -> None:
        while not self._stop.wait(interval):
            tick()

    def stop(self) -> None:
        self._stop.set()
        self._thread.join()


@dataclass
class ProcessSampler:
    """Samples every process under the given roots until stopped (a background thread)."""

    roots: dict[str, list[int]]
    interval: float = 0.2
    usage: dict[int, ProcessUsage] = field(default_factory=dict)
    _ticker: Repeating | None = None

    def sample(self) -> None:
        for group, pids in self.roots.items():
            for root in pids:
                for pid in descendants(root):
                    reading = _read_usage(pid)
                    if reading is None:
                        continue
                    rss_kb, cpu = reading
                    entry = self.usage.get(pid)
                    if entry is None:
                        entry = self.usage[pid] = ProcessUsage(group, pid, _command(pid))
                        entry.cpu_start = cpu
                    entry.peak_rss_kb = max(entry.peak_rss_kb, rss_kb)
                    entry.cpu_end = cpu

    def __enter__(self) -> ProcessSampler:
        self.sample()
        self._ticker = Repeating(self.sample, self.interval)
        return self

    def __exit__(self, *_: object) -> None:
        if self._ticker is not None:
            self._ticker.stop()
        self.sample()

    def by_group(self) -> dict[str, dict[str, float]]:
        """Per group: sum of the processes' peak RSS (MiB), largest single one, CPU seconds."""
        summary: dict[str, dict[str, float]] = {}
        for entry in self.usage.values():
            group = summary.setdefault(
                entry.group,
                {"processes": 0, "peak_rss_mib": 0.0, "largest_rss_mib": 0.0, "cpu_seconds": 0.0},
            )
            group["processes"] += 1
            group["peak_rss_mib"] += entry.peak_rss_kb / 1024
            group["largest_rss_mib"] = max(group["largest_rss_mib"], entry.peak_rss_kb / 1024)
            group["cpu_seconds"] += entry.cpu_seconds
        return {
            name: {k: round(v, 3) for k, v in values.items()} for name, values in summary.items()
        }

    def processes(self) -> list[dict[str, object]]:
        return [
            {
                "group": e.group,
                "pid": e.pid,
                "command": e.command,
                "peak_rss_mib": round(e.peak_rss_kb / 1024, 1),
                "cpu_seconds": round(e.cpu_seconds, 3),
            }
            for e in sorted(self.usage.values(), key=lambda e: (e.group, e.pid))
        ]


@dataclass
class QueueDepthSampler:
    """How many tasks wait in the Celery queue (a Redis list), sampled while a design runs.

    Tasks waiting there have no pool process free to take them: the queue's depth tells
    queueing for the worker pool apart from slowness of the work itself.
    """

    client: redis.Redis
    key: str
    interval: float = 0.1
    samples: list[int] = field(default_factory=list)
    _ticker: Repeating | None = None

    def sample(self) -> None:
        self.samples.append(int(self.client.llen(self.key)))

    def __enter__(self) -> QueueDepthSampler:
        self._ticker = Repeating(self.sample, self.interval)
        return self

    def __exit__(self, *_: object) -> None:
        if self._ticker is not None:
            self._ticker.stop()

    def summary(self) -> dict[str, float]:
        if not self.samples:
            return {"mean": 0.0, "max": 0}
        return {"mean": round(sum(self.samples) / len(self.samples), 2), "max": max(self.samples)}


def rss_kb(pids: list[int]) -> int:
    """Resident memory now of these processes and everything below them."""
    total = 0
    for root in pids:
        for pid in descendants(root):
            reading = _read_usage(pid)
            if reading is not None:
                total += reading[0]
    return total


def command_calls(client: redis.Redis) -> dict[str, int]:
    stats = client.info("commandstats")
    return {
        name.removeprefix("cmdstat_"): int(values["calls"])
        for name, values in stats.items()
        if isinstance(values, dict)
    }


def command_delta(before: dict[str, int], after: dict[str, int]) -> dict[str, int]:
    # The harness's own INFO calls are not the app's work.
    delta = {name: calls - before.get(name, 0) for name, calls in after.items()}
    return {name: calls for name, calls in sorted(delta.items()) if calls > 0 and name != "info"}


IN_FLIGHT = re.compile(r"^parley_replies_in_flight(?:\{[^}]*\})? (\S+)$", re.MULTILINE)


def replies_in_flight(metrics_port: int) -> float | None:
    """The worker's `parley_replies_in_flight` gauge, or None if its endpoint did not answer."""
    url = f"http://127.0.0.1:{metrics_port}/metrics"
    try:
        with urllib.request.urlopen(url, timeout=2) as response:
            text = response.read().decode()
    except OSError:
        return None
    return sum(float(value) for value in IN_FLIGHT.findall(text))


@dataclass
class InFlightSampler:
    """A worker's resident memory and replies in flight, sampled together while a design runs.

    Memory per reply in flight = (memory at the most replies in flight - memory just before
    the load) / those replies: what one more reply costs a worker host, where the pool
    processes themselves (prefork's price per reply) are in the idle figure.
    """

    pids: list[int]
    metrics_port: int
    slots: int
    interval: float = 0.2
    idle_rss_kb: int = 0
    samples: list[tuple[int, float]] = field(default_factory=list)
    _ticker: Repeating | None = None

    def sample(self) -> None:
        in_flight = replies_in_flight(self.metrics_port)
        if in_flight is not None:
            self.samples.append((rss_kb(self.pids), in_flight))

    def __enter__(self) -> InFlightSampler:
        self.idle_rss_kb = rss_kb(self.pids)
        self._ticker = Repeating(self.sample, self.interval)
        return self

    def __exit__(self, *_: object) -> None:
        if self._ticker is not None:
            self._ticker.stop()

    def summary(self) -> dict[str, float | int | None]:
        most = max((in_flight for _rss, in_flight in self.samples), default=0.0)
        at_most = max((rss for rss, in_flight in self.samples if in_flight == most), default=0)
        per_reply = (at_most - self.idle_rss_kb) / most if most > 0 else None
        return {
            "slots": self.slots,
            "most_in_flight": int(most),
            "idle_rss_mib": round(self.idle_rss_kb / 1024, 1),
            "rss_at_most_in_flight_mib": round(at_most / 1024, 1),
            "peak_rss_mib": round(max((r for r, _ in self.samples), default=0) / 1024, 1),
            "kib_per_reply_in_flight": None if per_reply is None else round(per_reply, 1),
            "idle_mib_per_slot": round(self.idle_rss_kb / 1024 / max(1, self.slots), 2),
            "samples": len(self.samples),
        }
