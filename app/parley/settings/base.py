"""Settings shared by every environment; all values come from PARLEY_* environment variables.

app/README.md has one table naming every variable with its default; keep them in step.
"""

from __future__ import annotations

from pathlib import Path

from django.core.exceptions import ImproperlyConfigured

from parley.env import (
    database_from_url,
    env_bool,
    env_float,
    env_int,
    env_list,
    env_str,
)
from parley.redis_retry import retry_options

BASE_DIR = Path(__file__).resolve().parent.parent.parent

SECRET_KEY = env_str("SECRET_KEY", "")
DEBUG = env_bool("DEBUG", False)
ALLOWED_HOSTS = env_list("ALLOWED_HOSTS", ["localhost", "127.0.0.1", "[::1]"])
CSRF_TRUSTED_ORIGINS = env_list("CSRF_TRUSTED_ORIGINS", [])

INSTALLED_APPS = [
    "django.contrib.admin",
    "django.contrib.auth",
    "django.contrib.contenttypes",
    "django.contrib.sessions",
    "django.contrib.messages",
    "whitenoise.runserver_nostatic",
    "django.contrib.staticfiles",
    "django_celery_beat",
    "channels",
    "chat",
]

MIDDLEWARE = [
    "django.middleware.security.SecurityMiddleware",
    "whitenoise.middleware.WhiteNoiseMiddleware",
    "parley.metrics.RequestMetricsMiddleware",
    "django.contrib.sessions.middleware.SessionMiddleware",
    "django.middleware.common.CommonMiddleware",
    "django.middleware.csrf.CsrfViewMiddleware",
    "django.contrib.auth.middleware.AuthenticationMiddleware",
    "django.contrib.messages.middleware.MessageMiddleware",
    "django.middleware.clickjacking.XFrameOptionsMiddleware",
]

ROOT_URLCONF = "parley.urls"
ASGI_APPLICATION = "parley.asgi.application"

TEMPLATES = [
    {
        "BACKEND": "django.template.backends.django.DjangoTemplates",
        "DIRS": [],
        "APP_DIRS": True,
        "OPTIONS": {
            "context_processors": [
                "django.template.context_processors.request",
                "django.contrib.auth.context_processors.auth",
                "django.contrib.messages.context_processors.messages",
            ],
        },
    },
]

# --- Database -------------------------------------------------------------------------------
# Django's advice for ASGI: no persistent connections (CONN_MAX_AGE=0), psycopg's pool instead.
DATABASES = {
    "default": database_from_url(env_str("DATABASE_URL", "postgres://parley@127.0.0.1:5432/parley"))
}
DATABASES["default"]["CONN_MAX_AGE"] = 0
# Also the number of threads a worker's replies claim and store through (chat.replystore).
DATABASE_POOL_MAX_SIZE = env_int("DATABASE_POOL_MAX_SIZE", 10)
if env_bool("DATABASE_POOL", True):
    DATABASES["default"]["OPTIONS"]["pool"] = {
        "min_size": env_int("DATABASE_POOL_MIN_SIZE", 1),
        "max_size": DATABASE_POOL_MAX_SIZE,
        "timeout": env_float("DATABASE_POOL_TIMEOUT", 10.0),
    }
DEFAULT_AUTO_FIELD = "django.db.models.BigAutoField"

AUTH_PASSWORD_VALIDATORS = [
    {"NAME": "django.contrib.auth.password_validation.UserAttributeSimilarityValidator"},
    {"NAME": "django.contrib.auth.password_validation.MinimumLengthValidator"},
    {"NAME": "django.contrib.auth.password_validation.CommonPasswordValidator"},
    {"NAME": "django.contrib.auth.password_validation.NumericPasswordValidator"},
]
LOGIN_URL = "login"
LOGIN_REDIRECT_URL = "chat:home"
LOGOUT_REDIRECT_URL = "login"
SESSION_COOKIE_AGE = env_int("SESSION_COOKIE_AGE", 14 * 24 * 3600)

LANGUAGE_CODE = "en-us"
TIME_ZONE = "UTC"
USE_I18N = True
USE_TZ = True

# --- Static files: WhiteNoise serves hashed names with far-future cache headers, so the
# load balancer's nginx needs no copy of the app.
STATIC_URL = "/static/"
STATIC_ROOT = Path(env_str("STATIC_ROOT", str(BASE_DIR / "staticfiles")))
STORAGES = {
    "default": {"BACKEND": "django.core.files.storage.FileSystemStorage"},
    "staticfiles": {"BACKEND": "whitenoise.storage.CompressedManifestStaticFilesStorage"},
}

# --- Redis: two roles, two URLs (they may point at the same server in development). Every
# key is under "parley:" because production's ACL users may touch nothing else.
CHANNEL_LAYER_URL = env_str("CHANNEL_LAYER_URL", "redis://127.0.0.1:6379/0")
CELERY_BROKER_URL = env_str("CELERY_BROKER_URL", "redis://127.0.0.1:6379/1")
KEY_PREFIX = "parley:"
# Connections a process keeps to the channel-layer instance for its own commands (streams,
# locks, limits); a command waits for a free one.
REDIS_POOL_SIZE = env_int("REDIS_POOL_SIZE", 32)

CHANNEL_LAYERS = {
    "default": {
        # Pub/sub: one PUBLISH per frame to a conversation's group (parley.channel_layer).
        "BACKEND": "parley.channel_layer.PubSubChannelLayer",
        "CONFIG": {
            # Its pool's connections retry once Redis has closed them (parley.redis_retry).
            "hosts": [{"address": CHANNEL_LAYER_URL, "socket_timeout": 30, **retry_options()}],
            "prefix": "parley:asgi",
        },
    }
}

# --- Replies: time limits, streaming and generation --------------------------------------
REPLY_TIME_LIMIT = env_int("REPLY_TIME_LIMIT", 600)
REPLY_SOFT_TIME_LIMIT = env_int("REPLY_SOFT_TIME_LIMIT", REPLY_TIME_LIMIT - 30)
BROKER_VISIBILITY_TIMEOUT = env_int("BROKER_VISIBILITY_TIMEOUT", REPLY_TIME_LIMIT + 300)
if not 0 < REPLY_SOFT_TIME_LIMIT < REPLY_TIME_LIMIT < BROKER_VISIBILITY_TIMEOUT:
    raise ImproperlyConfigured(
        "Need 0 < PARLEY_REPLY_SOFT_TIME_LIMIT < PARLEY_REPLY_TIME_LIMIT"
        " < PARLEY_BROKER_VISIBILITY_TIMEOUT, else a slow reply is delivered twice"
    )
GENERATION_MODE = env_str("GENERATION_MODE", "celery")
if GENERATION_MODE not in {"celery", "inprocess"}:
    raise ImproperlyConfigured("PARLEY_GENERATION_MODE must be celery or inprocess")
STREAM_FLUSH_MS = env_int("STREAM_FLUSH_MS", 30)
STREAM_FLUSH_TOKENS = env_int("STREAM_FLUSH_TOKENS", 16)
STREAM_TTL = env_int("STREAM_TTL", 3600)
STREAM_RECOVER_AFTER = env_float("STREAM_RECOVER_AFTER", 3.0)
# A live writer renews its reply's lock every third of this; a lost one is noticed after it.
REPLY_LOCK_TTL = env_int("REPLY_LOCK_TTL", 10)
# Log each reply's steps with their times (parley.timeline), for bench/'s waterfall.
REPLY_TIMELINE = env_bool("REPLY_TIMELINE", False)
CONTEXT_MESSAGES = env_int("CONTEXT_MESSAGES", 20)

# --- LLM providers ----------------------------------------------------------------------------
LLM_BASE_URL = env_str("LLM_BASE_URL", "")
LLM_API_KEY = env_str("LLM_API_KEY", "")
LLM_PROVIDER_LABEL = env_str("LLM_PROVIDER_LABEL", "OpenAI-compatible")
LLM_MODELS = env_list("LLM_MODELS", [])
LLM_TIMEOUT = env_float("LLM_TIMEOUT", 60.0)
LLM_CONNECT_TIMEOUT = env_float("LLM_CONNECT_TIMEOUT", 5.0)
LLM_MAX_RETRIES = env_int("LLM_MAX_RETRIES", 3)
LLM_RETRY_BASE_DELAY = env_float("LLM_RETRY_BASE_DELAY", 0.5)
LLM_RETRY_MAX_DELAY = env_float("LLM_RETRY_MAX_DELAY", 8.0)
LLM_MAX_TOKENS = env_int("LLM_MAX_TOKENS", 0)
# A CA bundle trusted for the endpoint besides the system's (a private vLLM, say).
LLM_CA_FILE = env_str("LLM_CA_FILE", "")
# Seconds an idle connection to the endpoint is kept for the next reply.
LLM_KEEPALIVE_SECONDS = env_float("LLM_KEEPALIVE_SECONDS", 60.0)
LLM_SYSTEM_PROMPT = env_str("LLM_SYSTEM_PROMPT", "You are a helpful assistant.")
DEMO_PROVIDER = env_bool("DEMO_PROVIDER", not LLM_BASE_URL)
DEMO_TOKEN_DELAY_MS = env_int("DEMO_TOKEN_DELAY_MS", 25)
DEFAULT_MODEL = env_str(
    "LLM_DEFAULT_MODEL", (LLM_MODELS[0] if LLM_MODELS else "") if LLM_BASE_URL else "demo"
)

# --- Limits -----------------------------------------------------------------------------------
MAX_MESSAGE_CHARS = env_int("MAX_MESSAGE_CHARS", 8000)
RATE_LIMIT_MESSAGES = env_int("RATE_LIMIT_MESSAGES", 20)
RATE_LIMIT_WINDOW = env_int("RATE_LIMIT_WINDOW", 60)
DAILY_TOKEN_QUOTA = env_int("DAILY_TOKEN_QUOTA", 200_000)
WS_FRAMES_PER_SECOND = env_float("WS_FRAMES_PER_SECOND", 5.0)
WS_FRAME_BURST = env_int("WS_FRAME_BURST", 20)

# --- Periodic jobs (seeded into django-celery-beat by `manage.py seed_schedules`) ----------
RETENTION_DAYS = env_int("RETENTION_DAYS", 90)
HEALTH_CHECK_INTERVAL = env_int("HEALTH_CHECK_INTERVAL", 60)
# The reaper also hands replies of a lost worker to a live one: it runs often, and is cheap.
REAPER_INTERVAL = env_int("REAPER_INTERVAL", 15)
USAGE_REPORT_CRON = env_str("USAGE_REPORT_CRON", "15 0 * * *")
BEAT_LOCK_TTL = env_int("BEAT_LOCK_TTL", 30)

# --- Celery (read by parley/celery.py with namespace CELERY) ---------------------------------
CELERY_BROKER_TRANSPORT_OPTIONS = {
    # Every broker key, queue and pub/sub channel (pidbox, events) gets this prefix.
    "global_keyprefix": "parley:celery:",
    # Fixed fanout prefix (instead of "/<db>."), so the two PSUBSCRIBE patterns the broker's
    # ACL must name exactly (Redis matches pattern subscriptions literally) never change:
    # parley:celery:/fanout.celery.pidbox and parley:celery:/fanout.celeryev/worker.*
    # (kombu strips a fanout prefix only when it starts with "/" and ends with ".").
    "fanout_prefix": "/fanout.",
    "visibility_timeout": BROKER_VISIBILITY_TIMEOUT,
    # Look for tasks of dead workers every 10 s (kombu's default is about every 100 s), so a
    # reply whose worker host died comes back at most 10 s after the visibility timeout.
    "unacked_restore_interval": 10,
    "unacked_restore_throttle": 1,
}
CELERY_BROKER_CONNECTION_RETRY_ON_STARTUP = True
CELERY_TASK_IGNORE_RESULT = True
CELERY_RESULT_BACKEND = None
CELERY_TASK_ACKS_LATE = True
CELERY_TASK_REJECT_ON_WORKER_LOST = True
CELERY_WORKER_PREFETCH_MULTIPLIER = 1
CELERY_TASK_TIME_LIMIT = REPLY_TIME_LIMIT
CELERY_TASK_SOFT_TIME_LIMIT = REPLY_SOFT_TIME_LIMIT
CELERY_TASK_SERIALIZER = "json"
CELERY_ACCEPT_CONTENT = ["json"]
CELERY_TIMEZONE = TIME_ZONE
CELERY_WORKER_HIJACK_ROOT_LOGGER = False
CELERY_WORKER_SEND_TASK_EVENTS = False
CELERY_BEAT_SCHEDULER = "parley.beat:LockedDatabaseScheduler"
# Beat must renew its lock well inside BEAT_LOCK_TTL, so it wakes at least this often.
CELERY_BEAT_MAX_LOOP_INTERVAL = max(1, BEAT_LOCK_TTL // 3)
# Write each entry's last run to the database as soon as it is sent, so a Beat taking over
# the lock knows what already ran.
CELERY_BEAT_SYNC_EVERY = 1

# --- Metrics ---------------------------------------------------------------------------------
WORKER_METRICS_BIND = env_str("WORKER_METRICS_BIND", "127.0.0.1:9809")

LOG_LEVEL = env_str("LOG_LEVEL", "INFO").upper()
LOGGING = {
    "version": 1,
    "disable_existing_loggers": False,
    "formatters": {
        "plain": {"format": "%(asctime)s %(levelname)s %(name)s %(process)d %(message)s"}
    },
    "handlers": {"console": {"class": "logging.StreamHandler", "formatter": "plain"}},
    "root": {"handlers": ["console"], "level": LOG_LEVEL},
    "loggers": {"httpx": {"level": "WARNING"}, "httpx2": {"level": "WARNING"}},
}
