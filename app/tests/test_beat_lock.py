"""Two Beat processes started by mistake send each periodic task once, not twice."""

from __future__ import annotations

import itertools
import os
import signal
import time

from django_celery_beat.models import IntervalSchedule, PeriodicTask

from chat.models import ProviderCheck
from tests.processes import start_beat, wait_until
from tests.timing import patience, timing

INTERVAL = 2
# Runs counted to tell one Beat from two: 16 s of one Beat's, 8 s of two's.
WINDOW_RUNS = 8


def _runs() -> list[float]:
    return sorted(c.checked_at.timestamp() for c in ProviderCheck.objects.filter(provider="openai"))


def _window(started: float) -> list[float]:
    return [t for t in _runs() if t >= started]


def _duplicates(runs: list[float]) -> list[tuple[float, float]]:
    """Pairs of runs closer than half an interval: the same due run sent twice."""
    return [(a, b) for a, b in itertools.pairwise(runs) if b - a < INTERVAL * 0.5]


def test_two_beats_send_each_task_once(stack, service_env) -> None:
    every, _ = IntervalSchedule.objects.get_or_create(every=INTERVAL, period="seconds")
    PeriodicTask.objects.create(name="health check", task="chat.check_providers", interval=every)
    env = {**service_env, "PARLEY_BEAT_LOCK_TTL": "3"}
    beats = [start_beat(env, "beat-a"), start_beat(env, "beat-b")]
    try:
        wait_until(lambda: len(_runs()) >= 1, patience(30), "the first run")
        # WINDOW_RUNS runs, however long they take here; then their count is held to what one
        # Beat sends in the time they took: one each INTERVAL, + 1 at each end of the window.
        # Two unguarded Beats send them in half the time, twice the bound.
        started = time.time()
        wait_until(lambda: len(_window(started)) >= WINDOW_RUNS, patience(60), "the runs")
        took = time.time() - started
        window = _window(started)
        bound = int(took / INTERVAL) + 2
        assert len(window) <= bound, timing(
            f"{len(window)} runs in {took:.1f} s", str(bound), f"one each INTERVAL {INTERVAL} s + 2"
        )
        assert _duplicates(_runs()) == [], _runs()
        leaders = [b for b in beats if "took the leader lock" in b.log_text()]
        assert len(leaders) == 1

        # The leader dies without releasing its lock; the other takes over within the TTL.
        os.killpg(leaders[0].pid, signal.SIGKILL)
        leaders[0].popen.wait(5)
        killed_at = time.time()
        standby = next(b for b in beats if b is not leaders[0])
        wait_until(lambda: "took the leader lock" in standby.log_text(), 15, "the takeover")
        wait_until(lambda: len([t for t in _runs() if t > killed_at]) >= 2, 20, "runs resumed")
        # Nor across the takeover: the new leader rereads what the dead one last ran.
        assert _duplicates(_runs()) == [], _runs()
    finally:
        for beat in beats:
            beat.stop()
