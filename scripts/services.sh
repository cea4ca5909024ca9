#!/usr/bin/env bash
# The portal's own PostgreSQL and Redis: `scripts/services.sh [start|stop|status]`.
#
# Not the machine's servers: Debian's PostgreSQL may trust every local connection, and its
# Redis has no password, so any job on the machine could read or write the portal's data.
# These instances live in var/ (or PORTAL_VAR_DIR) and listen on 127.0.0.1 only:
#   PostgreSQL  var/pg,    port PORTAL_DB_PORT (5433): pg_hba allows only scram-sha-256 over TCP
#               (and peer for the OS user postgres on a socket inside var/pg, mode 700); the
#               portal connects as role PORTAL_DB_USER (portal), not a superuser, with the
#               password in var/db_password (mode 600).
#   Redis       var/redis, port PORTAL_REDIS_PORT (6390): requirepass from var/redis_password
#               (mode 600), in var/redis/redis.conf (mode 600).
# They run as the OS users postgres and redis. `start` twice is harmless; `make stop` leaves
# them running (like the machine's own servers); `scripts/services.sh stop` stops them.
set -euo pipefail
cd "$(dirname "$0")/.."
VAR=$(realpath -m "${PORTAL_VAR_DIR:-var}")
PG_PORT=${PORTAL_DB_PORT:-5433}
REDIS_PORT=${PORTAL_REDIS_PORT:-6390}
DB=${PORTAL_DB_NAME:-portal}
ROLE=${PORTAL_DB_USER:-portal}
PGDATA=$VAR/pg
REDIS_DIR=$VAR/redis
cd /   # the servers' users need not be able to read the caller's directory

say() { echo "services: $*"; }
die() { echo "services: error: $*" >&2; exit 1; }

# secret FILE: a generated password, created once with mode 600; printed.
secret() {
  [ -s "$1" ] || (umask 077 && head -c 48 /dev/urandom | base64 | tr -dc 'A-Za-z0-9' | head -c 32 > "$1")
  chmod 600 "$1"
  cat "$1"
}

# reachable USER DIR: fail with the fix when USER cannot traverse down to DIR.
reachable() {
  local d=$2 blocked=""
  while [ "$d" != / ]; do
    runuser -u "$1" -- test -x "$d" 2>/dev/null || blocked=$d
    d=$(dirname "$d")
  done
  [ -z "$blocked" ] || die "$2 is not reachable by the $1 user ($blocked is mode $(stat -c %a "$blocked")):" \
    "chmod o+x $blocked, or set PORTAL_VAR_DIR to a directory every user can traverse"
}

# ---------------------------------------------------------------- PostgreSQL
pg_bin() {
  local version
  if [ -s "$PGDATA/PG_VERSION" ]; then version=$(cat "$PGDATA/PG_VERSION")
  else version=$(ls /usr/lib/postgresql 2>/dev/null | sort -n | tail -1); fi
  [ -n "$version" ] && [ -x "/usr/lib/postgresql/$version/bin/pg_ctl" ] \
    || die "PostgreSQL ${version:-server} binaries not found in /usr/lib/postgresql; run \`make deps\`"
  echo "/usr/lib/postgresql/$version/bin"
}

as_postgres() { runuser -u postgres -- "$@"; }
pg_admin() { as_postgres "$(pg_bin)/psql" -h "$PGDATA" -p "$PG_PORT" -d postgres -X -q -v ON_ERROR_STOP=1 "$@"; }
pg_running() { as_postgres "$(pg_bin)/pg_ctl" -D "$PGDATA" status >/dev/null 2>&1; }

pg_configure() {
  # Rewritten on every start: nothing else edits them, and a changed port takes effect at
  # the next restart.
  cat > "$PGDATA/portal.conf" <<EOF
listen_addresses = '127.0.0.1'
port = $PG_PORT
unix_socket_directories = '$PGDATA'
unix_socket_permissions = 0700
password_encryption = 'scram-sha-256'
EOF
  cat > "$PGDATA/pg_hba.conf" <<EOF
# Written by scripts/services.sh. No trust: a password for every network connection; the
# socket (inside this mode-700 directory) only for the postgres user itself, for administration.
local all postgres                peer
host  all all      127.0.0.1/32   scram-sha-256
EOF
  grep -qx "include = 'portal.conf'" "$PGDATA/postgresql.conf" \
    || echo "include = 'portal.conf'" >> "$PGDATA/postgresql.conf"
  chown postgres:postgres "$PGDATA/portal.conf" "$PGDATA/pg_hba.conf"
}

pg_start() {
  id postgres >/dev/null 2>&1 || die "no postgres user; run \`make deps\`"
  mkdir -p "$VAR"
  reachable postgres "$VAR"
  install -d -o postgres -g postgres -m 700 "$PGDATA"
  if [ ! -s "$PGDATA/PG_VERSION" ]; then
    say "creating PostgreSQL instance in $PGDATA"
    as_postgres "$(pg_bin)/initdb" -D "$PGDATA" -U postgres -E UTF8 --locale=C.UTF-8 \
      --auth-local=peer --auth-host=scram-sha-256 >/dev/null
  fi
  pg_configure
  if pg_running; then
    as_postgres "$(pg_bin)/pg_ctl" -D "$PGDATA" reload >/dev/null
  else
    pg_isready -q -h 127.0.0.1 -p "$PG_PORT" && stop_other_checkout "$PG_PORT" '/var/pg '
    pg_isready -q -h 127.0.0.1 -p "$PG_PORT" && die "127.0.0.1:$PG_PORT is taken by another PostgreSQL;" \
      "set PORTAL_DB_PORT to a free port"
    say "starting PostgreSQL on 127.0.0.1:$PG_PORT"
    as_postgres "$(pg_bin)/pg_ctl" -D "$PGDATA" -l "$PGDATA/server.log" -w -t 60 start >/dev/null \
      || die "PostgreSQL did not start; see $PGDATA/server.log"
  fi
  pg_role
}

pg_role() {
  [ "$ROLE" != postgres ] || die "PORTAL_DB_USER=postgres: the portal must not connect as a superuser"
  # CREATEDB: pytest-django creates and drops its test_<db> database as this role. It lets the
  # role make new databases, no more: it cannot read other roles' data or alter roles.
  pg_admin -v role="$ROLE" -v pw="$(secret "$VAR/db_password")" -v db="$DB" <<'SQL'
SELECT format('CREATE ROLE %I LOGIN', :'role')
 WHERE NOT EXISTS (SELECT 1 FROM pg_roles WHERE rolname = :'role') \gexec
ALTER ROLE :"role" LOGIN NOSUPERUSER NOCREATEROLE NOREPLICATION NOBYPASSRLS CREATEDB PASSWORD :'pw';
SELECT format('CREATE DATABASE %I OWNER %I', :'db', :'role')
 WHERE NOT EXISTS (SELECT 1 FROM pg_database WHERE datname = :'db') \gexec
SQL
}

pg_stop() {
  [ -s "$PGDATA/PG_VERSION" ] && pg_running || return 0
  as_postgres "$(pg_bin)/pg_ctl" -D "$PGDATA" -m fast -w stop >/dev/null
  say "stopped PostgreSQL ($PGDATA)"
}

# stop_other_checkout PORT PATTERN: the server on PORT is another checkout's instance of ours
# (its command line names <checkout>/var/pg, or it runs in <checkout>/var/redis), e.g. the
# development tree's when CI runs a fresh clone: stop it, as `cluster/ctl up` does with another
# checkout's cluster. One machine runs one portal's services on these ports.
stop_other_checkout() {
  local pid args
  pid=$(ss -Hltnp "sport = :$1" 2>/dev/null | grep -o 'pid=[0-9]*' | head -1 | cut -d= -f2)
  [ -n "$pid" ] || return 0
  args="$(tr '\0' ' ' < "/proc/$pid/cmdline" 2>/dev/null || true)cwd=$(readlink "/proc/$pid/cwd" || true)"
  grep -Eq -- "$2" <<<"$args" || return 0
  say "stopping another checkout's server on port $1 (pid $pid: $args)"
  kill -INT "$pid"   # PostgreSQL's fast shutdown; Redis shuts down too
  for _ in $(seq 100); do kill -0 "$pid" 2>/dev/null || return 0; sleep 0.2; done
}

# ---------------------------------------------------------------- Redis
redis_ping() { REDISCLI_AUTH=$(cat "$VAR/redis_password" 2>/dev/null) redis-cli -h 127.0.0.1 -p "$REDIS_PORT" ping 2>&1; }

redis_start() {
  id redis >/dev/null 2>&1 || die "no redis user; run \`make deps\`"
  mkdir -p "$VAR"
  reachable redis "$VAR"
  install -d -o redis -g redis -m 700 "$REDIS_DIR"
  local password conf=$REDIS_DIR/redis.conf
  password=$(secret "$VAR/redis_password")
  (umask 077 && cat > "$conf.new" <<EOF
# Written by scripts/services.sh.
bind 127.0.0.1
port $REDIS_PORT
requirepass $password
protected-mode yes
daemonize yes
dir $REDIS_DIR
pidfile $REDIS_DIR/redis.pid
logfile $REDIS_DIR/redis.log
save ""
appendonly no
EOF
  )
  chown redis:redis "$conf.new" && mv "$conf.new" "$conf"
  case $(redis_ping) in
    *NOAUTH*|*WRONGPASS*|*invalid\ password*) stop_other_checkout "$REDIS_PORT" 'cwd=.*/var/redis$' ;;
  esac
  case $(redis_ping) in
    PONG) return 0 ;;
    "") ;;
    *Connection\ refused*) ;;
    *) die "127.0.0.1:$REDIS_PORT is taken by another Redis (it refused our password);" \
         "set PORTAL_REDIS_PORT to a free port" ;;
  esac
  say "starting Redis on 127.0.0.1:$REDIS_PORT"
  runuser -u redis -- redis-server "$conf"
  for _ in $(seq 50); do [ "$(redis_ping)" = PONG ] && return 0; sleep 0.2; done
  die "Redis did not start; see $REDIS_DIR/redis.log"
}

redis_stop() {
  [ -s "$REDIS_DIR/redis.pid" ] && [ "$(redis_ping)" = PONG ] || return 0
  REDISCLI_AUTH=$(cat "$VAR/redis_password") redis-cli -h 127.0.0.1 -p "$REDIS_PORT" shutdown nosave >/dev/null 2>&1 || true
  say "stopped Redis ($REDIS_DIR)"
}

case "${1:-start}" in
  start) pg_start; redis_start; say "PostgreSQL on 127.0.0.1:$PG_PORT (database $DB, role $ROLE)" \
           "and Redis on 127.0.0.1:$REDIS_PORT are up; passwords in $VAR" ;;
  stop) redis_stop; pg_stop ;;
  status) pg_running && say "PostgreSQL running ($PGDATA)" || say "PostgreSQL stopped"
          [ "$(redis_ping)" = PONG ] && say "Redis running ($REDIS_DIR)" || say "Redis stopped" ;;
  *) echo "usage: $0 [start|stop|status]" >&2; exit 2 ;;
esac
