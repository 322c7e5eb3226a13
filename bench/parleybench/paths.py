"""Where things are: the checkout, the app, the bench's private state and its results."""

from __future__ import annotations

import sys
from pathlib import Path

BENCH_DIR = Path(__file__).resolve().parent.parent
REPO_DIR = BENCH_DIR.parent
APP_DIR = REPO_DIR / "app"
# Everything a run creates (database cluster, Redis data, nginx config, logs) lives here and is
# thrown away by the next run; nothing outside bench/ is written.
STATE_DIR = BENCH_DIR / ".state"
LOG_DIR = STATE_DIR / "logs"
RESULTS_DIR = BENCH_DIR / "results"
VENV_BIN = Path(sys.executable).parent
