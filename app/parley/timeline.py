"""Timestamps of a reply's steps, for the benchmark's waterfall (PARLEY_REPLY_TIMELINE=1).

Off by default, when a mark costs one settings lookup. On, each mark is one log line
`reply=<id> step=<name> at=<epoch seconds>` from whichever process took the step (web or
worker); `bench/` reads them back from the processes' logs.
"""

from __future__ import annotations

import logging
import time

from django.conf import settings

logger = logging.getLogger("parley.timeline")


def mark(reply_id: int, step: str, at: float | None = None) -> None:
    if settings.REPLY_TIMELINE:
        logger.info("reply=%s step=%s at=%.6f", reply_id, step, time.time() if at is None else at)
