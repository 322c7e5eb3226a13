# Sourced by bench/run and bench/deploy-cost: what both need before Python starts.
# Installs the Debian packages the servers come from (as `make -C app test` does) and builds
# bench/.venv from the app's lock and the bench's own, hash-checked, when either changed.
BENCH="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
REPO="$(dirname "$BENCH")"

bench_require_root() {
  if [ "$(id -u)" != 0 ]; then
    echo "bench: run as root (it installs packages and runs PostgreSQL as its own user)" >&2
    exit 2
  fi
}

bench_packages() {
  local missing=()
  command -v nginx >/dev/null || [ -x /usr/sbin/nginx ] || missing+=(nginx)
  command -v pg_ctlcluster >/dev/null || missing+=(postgresql)
  command -v redis-server >/dev/null || missing+=(redis-server)
  command -v openssl >/dev/null || missing+=(openssl)
  python3 -c 'import ensurepip, venv' 2>/dev/null || missing+=(python3-venv)
  if [ "${#missing[@]}" -gt 0 ]; then
    echo "bench: installing ${missing[*]}" >&2
    export DEBIAN_FRONTEND=noninteractive
    apt-get update -qq
    # Other jobs on the machine may hold dpkg's lock for a while; wait rather than fail.
    apt-get install -y -qq --no-install-recommends -o DPkg::Lock::Timeout=300 \
      "${missing[@]}" >/dev/null
  fi
}

bench_venv() {
  local stamp="$BENCH/.venv/.installed"
  if [ ! -f "$stamp" ] || [ "$REPO/app/requirements.lock" -nt "$stamp" ] \
    || [ "$BENCH/requirements.lock" -nt "$stamp" ]; then
    echo "bench: building bench/.venv" >&2
    test -x "$BENCH/.venv/bin/python" || python3 -m venv "$BENCH/.venv"
    local pip=("$BENCH/.venv/bin/python" -m pip install --quiet --disable-pip-version-check
      --require-hashes)
    "${pip[@]}" -r "$REPO/app/requirements.lock"
    "${pip[@]}" -r "$BENCH/requirements.lock"
    touch "$stamp"
  fi
}
