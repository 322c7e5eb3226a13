"""Settings for pytest and for the server and worker processes the tests start.

Defaults for the test environment are filled in here, before base.py reads them: the URLs of
the local PostgreSQL and Redis that `scripts/services.sh up test` started (it writes them to
.state/test.env) and the fake LLM server the tests run on port 28100. Anything already set in
the environment wins.
"""

import os
from pathlib import Path

_STATE_ENV = Path(__file__).resolve().parents[2] / ".state" / "test.env"
if _STATE_ENV.exists():
    for _line in _STATE_ENV.read_text().splitlines():
        _name, _, _value = _line.partition("=")
        if _name.startswith("PARLEY_"):
            os.environ.setdefault(_name, _value)

TEST_DEFAULTS = {
    "PARLEY_LLM_BASE_URL": "http://127.0.0.1:28100/v1",
    "PARLEY_LLM_MODELS": "fake-model",
    "PARLEY_LLM_PROVIDER_LABEL": "fakellm",
    "PARLEY_DEMO_PROVIDER": "true",
    "PARLEY_LLM_TIMEOUT": "2",
    "PARLEY_LLM_MAX_RETRIES": "2",
    "PARLEY_LLM_RETRY_BASE_DELAY": "0.1",
    "PARLEY_LLM_RETRY_MAX_DELAY": "0.4",
    "PARLEY_REPLY_LOCK_TTL": "3",
    "PARLEY_STREAM_RECOVER_AFTER": "1",
    "PARLEY_DEMO_TOKEN_DELAY_MS": "10",
    "PARLEY_WORKER_METRICS_BIND": "127.0.0.1:28009",
}
for _name, _value in TEST_DEFAULTS.items():
    os.environ.setdefault(_name, _value)

from parley.env import env_str  # noqa: E402
from parley.settings.base import *  # noqa: E402

SECRET_KEY = env_str("SECRET_KEY", "test-only-key-test-only-key-test-only-key-0123456789")
DEBUG = False
# Hashing passwords slowly buys nothing in tests.
PASSWORD_HASHERS = ["django.contrib.auth.hashers.MD5PasswordHasher"]
# Plain storage so tests need no collectstatic; the manifest storage has a test of its own.
STORAGES = {
    "default": {"BACKEND": "django.core.files.storage.FileSystemStorage"},
    "staticfiles": {"BACKEND": "django.contrib.staticfiles.storage.StaticFilesStorage"},
}
# Serve static files straight from the apps (no collectstatic in tests).
WHITENOISE_USE_FINDERS = True
WHITENOISE_AUTOREFRESH = True
