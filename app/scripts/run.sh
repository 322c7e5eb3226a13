#!/usr/bin/env bash
# `make -C app run`: Parley on http://127.0.0.1:8000 with the offline demo provider, plus the
# PostgreSQL and Redis it needs, a Celery worker and Celery Beat. Ctrl-C stops everything it
# started. Set PARLEY_LLM_BASE_URL (and PARLEY_LLM_API_KEY) to talk to a real model instead.
set -euo pipefail
cd "$(dirname "$0")/.."

scripts/services.sh install
scripts/services.sh up dev
set -a
. .state/dev.env
set +a
export DJANGO_SETTINGS_MODULE=parley.settings.dev
export PROMETHEUS_MULTIPROC_DIR="$PWD/.state/worker-metrics"
rm -rf "$PROMETHEUS_MULTIPROC_DIR" && mkdir -p "$PROMETHEUS_MULTIPROC_DIR"
export PARLEY_DEMO_PASSWORD="${PARLEY_DEMO_PASSWORD:-demo}"

.venv/bin/python manage.py migrate --noinput -v0
.venv/bin/python manage.py seed_schedules
.venv/bin/python manage.py ensure_user demo --password-env PARLEY_DEMO_PASSWORD --superuser

pids=()
stop() {
  trap - EXIT INT TERM
  kill "${pids[@]}" 2>/dev/null || true
  wait "${pids[@]}" 2>/dev/null || true
  scripts/services.sh down dev
}
trap stop EXIT INT TERM

.venv/bin/celery -A parley worker --loglevel INFO --pool threads --concurrency 50 & pids+=($!)
.venv/bin/celery -A parley beat --loglevel INFO --pidfile= & pids+=($!)
PROMETHEUS_MULTIPROC_DIR= .venv/bin/gunicorn -c gunicorn.conf.py & pids+=($!)

echo
echo "Parley: http://${PARLEY_BIND:-127.0.0.1:8000}/  (user demo, password $PARLEY_DEMO_PASSWORD; admin at /admin/)"
echo
wait -n "${pids[@]}"
