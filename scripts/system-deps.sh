#!/usr/bin/env bash
# Make sure the system programs the test suites need exist:
#   PostgreSQL server binaries >= 14 (initdb, pg_ctl, postgres, pg_dump, pg_restore, psql),
#   redis-server and redis-cli, openssl, shellcheck (for ansible-test sanity);
#   for the container engine tests: podman, runc and a Compose CLI (docker-compose).
# As root, missing ones are installed with apt-get; otherwise the packages are named.
# Installing the Debian PostgreSQL packages here never creates or starts a cluster:
# the tests start their own throwaway servers. The engine packages are optional: when
# they cannot be installed this says so and goes on, and the engine tests skip.
set -euo pipefail

min_pg=14
missing=()
engine_missing=()

pg_ok() {
  local d v
  for d in /usr/lib/postgresql/*/bin; do
    if ! { [ -x "$d/initdb" ] && [ -x "$d/pg_ctl" ] && [ -x "$d/pg_dump" ]; }; then continue; fi
    v=${d%/bin}; v=${v##*/}
    [ "${v%%.*}" -ge "$min_pg" ] 2>/dev/null && return 0
  done
  if command -v initdb >/dev/null && command -v pg_ctl >/dev/null && command -v pg_dump >/dev/null; then
    v=$(initdb --version | grep -oE '[0-9]+' | head -1)
    [ "${v:-0}" -ge "$min_pg" ] && return 0
  fi
  return 1
}

pg_ok || missing+=(postgresql postgresql-client)
command -v redis-server >/dev/null || missing+=(redis-server)
command -v redis-cli >/dev/null || missing+=(redis-tools)
command -v openssl >/dev/null || missing+=(openssl)
command -v shellcheck >/dev/null || missing+=(shellcheck)
command -v git >/dev/null || missing+=(git)

# The container engine tests: rootful Podman (its Docker API) with runc, and a Compose CLI.
command -v podman >/dev/null || engine_missing+=(podman)
command -v runc >/dev/null || engine_missing+=(runc)
if ! command -v docker-compose >/dev/null && ! docker compose version >/dev/null 2>&1; then
  engine_missing+=(docker-compose)
fi

if [ ${#missing[@]} -eq 0 ] && [ ${#engine_missing[@]} -eq 0 ]; then
  echo "system-deps: PostgreSQL >= $min_pg, redis-server, redis-cli, openssl, shellcheck, podman, runc, compose: present"
  exit 0
fi

if [ "$(id -u)" -ne 0 ]; then
  if [ ${#engine_missing[@]} -gt 0 ]; then
    echo "system-deps: container engine packages missing: ${engine_missing[*]} (the engine tests will skip;" \
      "they need root anyway)" >&2
  fi
  [ ${#missing[@]} -eq 0 ] && exit 0
  echo "system-deps: missing packages: ${missing[*]}" >&2
  echo "system-deps: install them as root, e.g.: sudo apt-get install -y ${missing[*]}" >&2
  exit 1
fi

export DEBIAN_FRONTEND=noninteractive
if ! apt-get update -qq; then
  [ ${#missing[@]} -gt 0 ] && exit 1
  echo "system-deps: apt-get update failed; trying the package lists at hand" >&2
fi
if [ ${#missing[@]} -gt 0 ]; then
  echo "system-deps: installing ${missing[*]}"
  # No default cluster: the test harness starts its own servers.
  mkdir -p /etc/postgresql-common/createcluster.d
  printf 'create_main_cluster = false\n' > /etc/postgresql-common/createcluster.d/ringhub-tests.conf
  apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
  # Debian starts redis-server after install; the tests never use it, so stop it again.
  if [[ " ${missing[*]} " == *" redis-server "* ]] && command -v systemctl >/dev/null; then
    systemctl stop redis-server >/dev/null 2>&1 || true
  fi
  pg_ok || { echo "system-deps: PostgreSQL >= $min_pg still not found after install" >&2; exit 1; }
fi
if [ ${#engine_missing[@]} -gt 0 ]; then
  echo "system-deps: installing ${engine_missing[*]} (container engine tests)"
  if ! apt-get install -y -qq --no-install-recommends "${engine_missing[@]}" >/dev/null; then
    echo "system-deps: could not install ${engine_missing[*]}: the container engine tests will skip" >&2
  fi
  # A packaged podman.socket is not what the tests use (they start a private service); leave it off.
  if [[ " ${engine_missing[*]} " == *" podman "* ]] && command -v systemctl >/dev/null \
    && systemctl is-active --quiet podman.socket 2>/dev/null; then
    systemctl stop podman.socket >/dev/null 2>&1 || true
  fi
fi
echo "system-deps: done"
