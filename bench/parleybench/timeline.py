"""Each reply's steps, as the app logs them with PARLEY_REPLY_TIMELINE=1, for the waterfall.

Web and worker processes write `reply=<id> step=<name> at=<epoch seconds>` into their logs
(.state/logs/); this reads what the logs gained since the last read, so each measurement
costs only its own lines. Every clock is this machine's, the same as the load clients' and
the fake model's, so the steps line up with the client's send and first token.
"""

from __future__ import annotations

import re
from pathlib import Path

from parleybench.paths import LOG_DIR

STEP = re.compile(rb"reply=(\d+) step=(\w+) at=(\d+(?:\.\d+)?)")
# A reply's path in order, and who marks each step: the client, the web tier (consumer and
# on_commit hook), the worker, the fake model (its request log).
STEPS = (
    ("frame_received", "web: the send frame arrived"),
    ("committed", "web: message and placeholder committed"),
    ("task_published", "web: the Celery task is on the broker"),
    ("task_started", "worker: the task runs"),
    ("model_asked", "worker: the model request is made"),
    ("model_received", "model: the request arrived"),
    ("model_first_token", "model: its first token left"),
    ("first_chunk", "worker: the first token read"),
    ("first_frame_relayed", "web: the reply's first frame sent to the socket"),
    ("client_first_token", "client: the first token seen"),
)


class TimelineReader:
    """Follows every process log; `steps` maps a reply id to each step's first time."""

    def __init__(self, directory: Path = LOG_DIR) -> None:
        self.directory = directory
        self.offsets: dict[Path, int] = {}
        self.steps: dict[int, dict[str, float]] = {}

    def read(self) -> None:
        for path in sorted(self.directory.glob("*.log")):
            start = self.offsets.get(path, 0)
            with path.open("rb") as log:
                log.seek(start)
                data = log.read()
            # Only whole lines: a line being written now is read next time.
            end = data.rfind(b"\n") + 1
            self.offsets[path] = start + end
            for match in STEP.finditer(data, 0, end):
                reply, step, at = int(match[1]), match[2].decode(), float(match[3])
                # A redelivered reply marks its steps again; its first pass is the one timed.
                self.steps.setdefault(reply, {}).setdefault(step, at)

    def for_reply(self, reply_id: int | None) -> dict[str, float]:
        return {} if reply_id is None else self.steps.get(reply_id, {})
