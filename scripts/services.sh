#!/usr/bin/env bash
# Make sure PostgreSQL and Redis run on 127.0.0.1, as on a fresh Debian 12 machine, and that
# the portal's database exists. Leaves already-running services alone.
set -euo pipefail
cd "$(dirname "$0")/.."

if ! pg_isready -q -h 127.0.0.1 -p 5432; then
  version=$(ls /etc/postgresql | sort -n | tail -1)
  echo "services: starting PostgreSQL $version"
  pg_ctlcluster --skip-systemctl-redirect "$version" main start
  for _ in $(seq 50); do pg_isready -q -h 127.0.0.1 -p 5432 && break; sleep 0.2; done
fi

# A fresh Debian PostgreSQL asks for a password on 127.0.0.1: give the postgres role one,
# kept in var/ (git-ignored), which settings read through PORTAL_DB_PASSWORD_FILE.
if ! psql -h 127.0.0.1 -U postgres -w -tAc 'select 1' >/dev/null 2>&1; then
  mkdir -p var && umask 077
  [ -s var/db_password ] || head -c 18 /dev/urandom | base64 | tr -d '/+=' > var/db_password
  runuser -u postgres -- psql -q -c "ALTER ROLE postgres PASSWORD '$(cat var/db_password)'"
fi
export PGPASSWORD=$(cat var/db_password 2>/dev/null || true)
db=${PORTAL_DB_NAME:-portal}
if [ "$(psql -h 127.0.0.1 -U postgres -tAc "select 1 from pg_database where datname='$db'")" != 1 ]; then
  echo "services: creating database $db"
  createdb -h 127.0.0.1 -U postgres "$db"
fi

if ! redis-cli -h 127.0.0.1 -p 6379 ping >/dev/null 2>&1; then
  echo "services: starting Redis"
  mkdir -p /var/lib/redis /var/log/redis
  redis-server --daemonize yes --bind 127.0.0.1 --port 6379 --save "" --appendonly no \
    --dir /var/lib/redis --logfile /var/log/redis/portal.log
  for _ in $(seq 50); do redis-cli ping >/dev/null 2>&1 && break; sleep 0.2; done
fi
echo "services: PostgreSQL and Redis are up"
