#!/usr/bin/env bash
# Start or stop the PostgreSQL cluster and the two Redis instances Parley needs locally.
#
#   scripts/services.sh install [--browser]   apt packages (postgresql, redis-server, python3-venv;
#                                            chromium and chromium-driver with --browser)
#   scripts/services.sh up dev|test           start them (idempotent), write .state/<env>.env
#   scripts/services.sh down dev|test         stop the Redis instances, and PostgreSQL if this
#                                            environment's `up` was the one that started it
#
# PostgreSQL: a private Debian cluster "parley" (15, port 55432, loopback only) managed with
# pg_ctlcluster, which works with systemd (it delegates) and without it (this sandbox).
# Redis: two redis-server processes per environment, each with the production ACL: default
# user off, user "parley" limited to keys ~parley:* and channels &parley:*, no @dangerous
# commands. A key outside parley: fails here exactly as it would in production.
set -euo pipefail

HERE="$(cd "$(dirname "$0")/.." && pwd)"
STATE="$HERE/.state"
PG_VERSION="${PG_VERSION:-}"
PG_CLUSTER=parley
PG_PORT="${PARLEY_PG_PORT:-55432}"
DB_USER=parley
DB_PASSWORD=parley-local-password
REDIS_PASSWORD=parley-local-password
ADMIN_PASSWORD=parley-local-admin

redis_ports() {
  case "$1" in
    dev) echo "56379 56380" ;;
    test) echo "56381 56382" ;;
    *) echo "environment must be dev or test" >&2; exit 2 ;;
  esac
}

pg_version() {
  if [ -z "$PG_VERSION" ]; then
    PG_VERSION="$(ls /usr/lib/postgresql | sort -n | tail -1)"
  fi
  echo "$PG_VERSION"
}

install() {
  local missing=()
  command -v pg_ctlcluster >/dev/null || missing+=(postgresql)
  command -v redis-server >/dev/null || missing+=(redis-server)
  if [ "${1:-}" = "--browser" ]; then
    [ -x /usr/bin/chromium ] || missing+=(chromium)
    [ -x /usr/bin/chromedriver ] || missing+=(chromium-driver)
  fi
  python3 -c 'import ensurepip, venv' 2>/dev/null || missing+=(python3-venv)
  command -v make >/dev/null || missing+=(make)
  if [ "${#missing[@]}" -gt 0 ]; then
    echo "Installing ${missing[*]}"
    export DEBIAN_FRONTEND=noninteractive
    # Wait for another apt run (the test bed's, a second checkout's) instead of failing on
    # dpkg's lock.
    apt-get -o DPkg::Lock::Timeout=600 update -qq
    apt-get -o DPkg::Lock::Timeout=600 install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
  fi
}

pg_up() {  # $1: the environment asking
  local version
  version="$(pg_version)"
  if ! pg_lsclusters -h | awk '{print $1" "$2}' | grep -qx "$version $PG_CLUSTER"; then
    pg_createcluster "$version" "$PG_CLUSTER" -p "$PG_PORT" \
      -o fsync=off -o synchronous_commit=off \
      -o full_page_writes=off -o max_connections=200 \
      -- --auth-local=peer --auth-host=scram-sha-256 >/dev/null
  fi
  if ! pg_lsclusters -h | awk -v c="$PG_CLUSTER" '$2==c {print $4}' | grep -q online; then
    pg_ctlcluster "$version" "$PG_CLUSTER" start
    # Only the caller that started PostgreSQL stops it again.
    touch "$STATE/postgres-started-by-$1"
  fi
  for _ in $(seq 1 50); do
    runuser -u postgres -- pg_isready -q -p "$PG_PORT" -h 127.0.0.1 && break
    sleep 0.2
  done
  runuser -u postgres -- psql -q -p "$PG_PORT" -v ON_ERROR_STOP=1 <<SQL
DO \$\$ BEGIN
  IF NOT EXISTS (SELECT FROM pg_roles WHERE rolname = '$DB_USER') THEN
    CREATE ROLE $DB_USER LOGIN CREATEDB PASSWORD '$DB_PASSWORD';
  END IF;
END \$\$;
SQL
  if ! runuser -u postgres -- psql -p "$PG_PORT" -tAc "SELECT 1 FROM pg_database WHERE datname='parley'" | grep -q 1; then
    runuser -u postgres -- createdb -p "$PG_PORT" -O "$DB_USER" parley
  fi
}

pg_down() {  # $1: the environment asking
  local version
  version="$(pg_version)"
  [ -f "$STATE/postgres-started-by-$1" ] || return 0
  rm -f "$STATE/postgres-started-by-$1"
  if pg_lsclusters -h 2>/dev/null | awk -v c="$PG_CLUSTER" '$2==c {print $4}' | grep -q online; then
    pg_ctlcluster "$version" "$PG_CLUSTER" stop -m fast
  fi
}

redis_up() {
  local env="$1" port dir
  for port in $(redis_ports "$env"); do
    dir="$STATE/redis-$port"
    mkdir -p "$dir"
    cat >"$dir/redis.conf" <<CONF
bind 127.0.0.1
port $port
daemonize yes
pidfile $dir/redis.pid
logfile $dir/redis.log
dir $dir
save ""
appendonly no
maxmemory-policy noeviction
user default off
user $DB_USER on >$REDIS_PASSWORD ~parley:* &parley:* &parley:celery:/fanout.celery.pidbox &parley:celery:/fanout.celeryev/worker.* +@all -@dangerous
# Not for the app: the tests read ACL LOG with it to prove the app never hit the ACL.
user parley-admin on >$ADMIN_PASSWORD ~* &* +@all
CONF
    if ! redis-cli -p "$port" --user "$DB_USER" --pass "$REDIS_PASSWORD" --no-auth-warning ping >/dev/null 2>&1; then
      redis-server "$dir/redis.conf"
    fi
    for _ in $(seq 1 50); do
      redis-cli -p "$port" --user "$DB_USER" --pass "$REDIS_PASSWORD" --no-auth-warning ping >/dev/null 2>&1 && break
      sleep 0.1
    done
  done
}

redis_down() {
  local env="$1" port pidfile pid
  for port in $(redis_ports "$env"); do
    pidfile="$STATE/redis-$port/redis.pid"
    [ -f "$pidfile" ] || continue
    pid="$(cat "$pidfile")"
    if kill -0 "$pid" 2>/dev/null; then
      kill "$pid"
      for _ in $(seq 1 50); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
    fi
  done
}

print_env() {
  local env="$1" broker channels
  read -r broker channels <<<"$(redis_ports "$env")"
  echo "PARLEY_DATABASE_URL=postgres://$DB_USER:$DB_PASSWORD@127.0.0.1:$PG_PORT/parley"
  echo "PARLEY_CELERY_BROKER_URL=redis://$DB_USER:$REDIS_PASSWORD@127.0.0.1:$broker/0"
  echo "PARLEY_CHANNEL_LAYER_URL=redis://$DB_USER:$REDIS_PASSWORD@127.0.0.1:$channels/0"
}

case "${1:-}" in
  install) install "${2:-}" ;;
  up) mkdir -p "$STATE"; pg_up "${2:?dev or test}"; redis_up "$2"; print_env "$2" >"$STATE/$2.env" ;;
  down) redis_down "${2:?dev or test}"; pg_down "$2" ;;
  env) print_env "${2:?dev or test}" ;;
  *) echo "usage: $0 install [--browser] | up dev|test | down dev|test | env dev|test" >&2; exit 2 ;;
esac
