#!/bin/bash
# One entrypoint for the stack's three images; the first argument names the service.
#
#   portal image:   web | worker | beat | migrate | manage ARGS...
#   slurm image:    slurmdbd | slurm-init | slurmctld | slurmd NODE | slurmrestd
#   services image: postgres | redis | mariadb | proxy
#
# Each starts as root for what only root may do (read the mounted secrets, start munged, make
# directories and users), then runs its daemon in the foreground as the account it belongs to.
# Secrets arrive as files under /run/secrets (compose.yaml) and are never written into an image
# layer; what a daemon must own is copied, owner and mode set, into /run/stack (a tmpfs).
set -euo pipefail

SECRETS=/run/secrets
PRIVATE=/run/stack
PORTS_FILE=/etc/slurm/stack.ports
log() { echo "entrypoint[$ROLE]: $*" >&2; }
die() { log "$*"; exit 1; }

secret() {  # secret NAME: the file's path, or a clear error naming the missing secret
  [ -s "$SECRETS/$1" ] || die "secret $1 is missing or empty (compose.yaml mounts it from \$STACK_SECRETS)"
  echo "$SECRETS/$1"
}

own_copy() {  # own_copy SECRET OWNER MODE: a private copy the daemon's account may read
  install -d -m 755 "$PRIVATE"
  install -o "$2" -g "$(id -gn "$2")" -m "$3" "$(secret "$1")" "$PRIVATE/$1"
  echo "$PRIVATE/$1"
}

wait_tcp() {  # wait_tcp PORT WHAT [SECONDS]
  local deadline=$((SECONDS + ${3:-120}))
  until (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null; do
    [ $SECONDS -lt $deadline ] || die "$2 on 127.0.0.1:$1 did not answer"
    sleep 1
  done
}

# ------------------------------------------------------------------ users and Slurm's config

add_users() {
  # The cluster's users, with the same uids in every container (as NSS/LDAP gives a real
  # cluster): /etc/stack/users lists "name uid" per line. A site mounts its own passwd instead.
  local name uid
  [ -f /etc/stack/users ] || return 0
  while read -r name uid _; do
    case "$name" in ''|'#'*) continue ;; esac
    getent passwd "$name" >/dev/null && continue
    groupadd --gid "$uid" "$name" 2>/dev/null || true
    useradd --uid "$uid" --gid "$uid" --home-dir "/home/$name" --shell /bin/bash "$name"
  done < /etc/stack/users
}

make_homes() {
  # Home directories live on the shared `home` volume, as on a cluster's NFS: jobs write their
  # output there on a compute node and the portal reads it back.
  local name uid
  [ -f /etc/stack/users ] || return 0
  while read -r name uid _; do
    case "$name" in ''|'#'*) continue ;; esac
    [ "$uid" -ge 1000 ] || continue
    [ -d "/home/$name" ] || install -d -o "$name" -g "$name" -m 750 "/home/$name"
  done < /etc/stack/users
}

slurm_config() {
  # The site's config is mounted read-only at /etc/slurm-site; Slurm reads /etc/slurm, where
  # the files that carry secrets are added here (slurmdbd.conf's database password).
  install -d /etc/slurm
  cp -a /etc/slurm-site/. /etc/slurm/
  # Slurm 23.11 and later load a cgroup plugin unless told not to; 22.05 needs no cgroup.conf.
  if [ ! -e /etc/slurm/cgroup.conf ] && ! sinfo -V | grep -qE ' (22\.|23\.02)'; then
    echo "CgroupPlugin=disabled" > /etc/slurm/cgroup.conf
  fi
}

start_munged() {
  install -d -o munge -g munge -m 755 /run/munge
  install -d -o munge -g munge -m 700 /etc/munge
  install -o munge -g munge -m 400 "$(secret munge_key)" /etc/munge/munge.key
  # More threads than the default 2: every CLI call and every job step asks munge.
  runuser -u munge -- /usr/sbin/munged --num-threads 8
  local i
  for i in $(seq 50); do munge -n >/dev/null 2>&1 && return 0; sleep 0.1; done
  die "munged did not start"
}

# ------------------------------------------------------------------ the services image

run_postgres() {
  local data=/var/lib/postgresql/data bin
  bin=$(ls -d /usr/lib/postgresql/*/bin | sort -V | tail -1)
  install -d -o postgres -g postgres -m 700 "$data"
  install -d -o postgres -g postgres /run/postgresql
  if [ ! -s "$data/PG_VERSION" ]; then
    log "first start: initdb"
    own_copy pg_superuser_password postgres 400 >/dev/null
    runuser -u postgres -- "$bin/initdb" -D "$data" -U postgres --auth-local=peer \
      --auth-host=scram-sha-256 --pwfile="$PRIVATE/pg_superuser_password" >/dev/null
  fi
  local port=${STACK_POSTGRES_PORT:?}
  # Roles and database on every start (idempotent): a changed db_password takes effect.
  runuser -u postgres -- "$bin/pg_ctl" -D "$data" -w -o "-c listen_addresses='' -p $port" start >/dev/null
  runuser -u postgres -- psql -X -q -p "$port" -v ON_ERROR_STOP=1 \
    -v pw="$(cat "$(secret db_password)")" <<'SQL'
SELECT 'CREATE ROLE portal LOGIN' WHERE NOT EXISTS (SELECT 1 FROM pg_roles WHERE rolname = 'portal') \gexec
ALTER ROLE portal LOGIN NOSUPERUSER NOCREATEROLE NOCREATEDB PASSWORD :'pw';
SELECT 'CREATE DATABASE portal OWNER portal' WHERE NOT EXISTS (SELECT 1 FROM pg_database WHERE datname = 'portal') \gexec
SQL
  runuser -u postgres -- "$bin/pg_ctl" -D "$data" -w stop >/dev/null
  exec runuser -u postgres -- "$bin/postgres" -D "$data" -c listen_addresses=127.0.0.1 -c port="$port" \
    -c unix_socket_directories=/run/postgresql
}

run_redis() {
  local conf
  install -d -o redis -g redis /var/lib/redis
  conf=$(umask 077; mktemp)
  # requirepass in a file, not on the command line, where `ps` would show it. Append-only:
  # the broker's queued tasks survive a restart.
  printf 'bind 127.0.0.1\nport %s\nrequirepass %s\ndir /var/lib/redis\nappendonly yes\n' \
    "${STACK_REDIS_PORT:?}" "$(cat "$(secret redis_password)")" > "$conf"
  chown redis "$conf"
  exec runuser -u redis -- redis-server "$conf"
}

run_mariadb() {
  local port=${STACK_MARIADB_PORT:?} pw
  install -d -o mysql -g mysql /var/lib/mysql /run/mysqld
  if [ ! -d /var/lib/mysql/mysql ]; then
    log "first start: mariadb-install-db"
    mariadb-install-db --user=mysql --datadir=/var/lib/mysql --skip-test-db >/dev/null
  fi
  runuser -u mysql -- mariadbd --skip-networking --socket=/run/mysqld/init.sock &
  local i
  for i in $(seq 100); do mariadb --socket=/run/mysqld/init.sock -e 'SELECT 1' >/dev/null 2>&1 && break; sleep 0.2; done
  pw=$(cat "$(secret slurmdbd_db_password)")
  [[ $pw =~ ^[A-Za-z0-9_-]+$ ]] || die "slurmdbd_db_password: letters, digits, - and _ only"
  mariadb --socket=/run/mysqld/init.sock <<SQL
CREATE DATABASE IF NOT EXISTS slurm_acct_db;
CREATE USER IF NOT EXISTS 'slurm'@'127.0.0.1' IDENTIFIED BY '$pw';
ALTER USER 'slurm'@'127.0.0.1' IDENTIFIED BY '$pw';
GRANT ALL ON slurm_acct_db.* TO 'slurm'@'127.0.0.1';
SQL
  mariadb-admin --socket=/run/mysqld/init.sock shutdown
  wait
  # slurmdbd's documented settings for a busy accounting database.
  exec runuser -u mysql -- mariadbd --bind-address=127.0.0.1 --port="$port" --skip-name-resolve \
    --innodb-buffer-pool-size=256M --innodb-lock-wait-timeout=900 --max-allowed-packet=64M
}

run_proxy() {
  sed -e "s/@PROXY_PORT@/${STACK_PROXY_PORT:?}/" -e "s/@WEB_PORT@/${STACK_WEB_PORT:?}/" \
    /etc/stack/nginx.conf > /etc/nginx/nginx.conf
  exec nginx -g 'daemon off;'
}

# ------------------------------------------------------------------ the slurm image

slurm_common() {
  add_users
  slurm_config
  install -d -o slurm -g slurm /var/log/slurm /run/slurm /var/spool/slurmctld
  install -d /var/spool/slurmd
  own_copy slurm_jwt_key slurm 400 >/dev/null
  start_munged
}

run_slurmdbd() {
  slurm_common
  local pw
  pw=$(cat "$(secret slurmdbd_db_password)")
  (umask 077; sed "s/@DB_PASSWORD@/$pw/" /etc/slurm/slurmdbd.conf.in > /etc/slurm/slurmdbd.conf)
  chown slurm:slurm /etc/slurm/slurmdbd.conf
  wait_tcp "${STACK_MARIADB_PORT:?}" MariaDB
  exec /usr/sbin/slurmdbd -D
}

run_slurm_init() {
  # One-shot: the cluster, the portal's operator (fleet reads with a JWT) and the portal's own
  # account as a Slurm admin (drain, resume and sacctmgr writes through munge). Teams'
  # accounts come later from the portal's own reconciler. "Already exists" counts as done.
  slurm_common
  local cluster
  cluster=$(sed -n 's/^ClusterName=//p' /etc/slurm/slurm.conf)
  sacctmgr_ok add cluster "$cluster"
  sacctmgr_ok add account ops description=portal-operators organization=portal
  sacctmgr_ok add user portalop account=ops adminlevel=Operator
  sacctmgr_ok add user portal account=ops adminlevel=Admin
  log "accounting ready for cluster $cluster"
}

sacctmgr_ok() {
  local out
  if ! out=$(sacctmgr -i "$@" 2>&1); then
    grep -qiE 'already (exist|there)|nothing new added|didn.t affect' <<<"$out" || die "sacctmgr $*: $out"
  fi
}

run_slurmctld() {
  slurm_common
  wait_tcp "$(port_of dbd)" slurmdbd
  # Started as root, it drops to SlurmUser itself.
  exec /usr/sbin/slurmctld -D
}

run_slurmd() {
  local node=${1:?slurmd needs the node name}
  slurm_common
  make_homes
  install -d -m 700 "/var/lib/portal-node/$node"
  # The emulated GPUs' device files (Slurm counts GPUs from gres.conf's File= entries).
  install -d /dev/emulated-gpu
  local i
  for i in 0 1 2 3; do [ -e "/dev/emulated-gpu/nvidia$i" ] || mknod -m 666 "/dev/emulated-gpu/nvidia$i" c 1 3; done
  # The node's own report key (the portal derives the same from the master key).
  install -m 400 "$(secret "health_key_$node")" "/var/lib/portal-node/$node/health.key"
  install -d -m 755 /srv/portal/checkpoints
  emulated_gpus "$node"
  wait_tcp "$(port_of ctld)" slurmctld
  exec /usr/sbin/slurmd -D -N "$node"
}

run_slurmrestd() {
  slurm_common
  wait_tcp "$(port_of ctld)" slurmctld
  local plugins=openapi/slurmctld,openapi/slurmdbd
  # 22.05 and 23.02 name each API version's plugin.
  case "$(slurmrestd -V)" in *" 22."*|*" 23.02"*) plugins=openapi/v0.0.38,openapi/dbv0.0.38 ;; esac
  # Never as root or SlurmUser (slurmrestd refuses both): its own unprivileged account.
  # slurmrestd unshares its System V IPC and file namespaces as a lock-down; Docker's seccomp
  # profile refuses unshare(2), and the container already has IPC and mount namespaces of its own.
  exec runuser -u slurmrest -- env SLURM_JWT=daemon SLURMRESTD_SECURITY=disable_unshare_sysv,disable_unshare_files \
    /usr/sbin/slurmrestd -a rest_auth/jwt -s "$plugins" "127.0.0.1:$(port_of restd)"
}

emulated_gpus() {
  # Healthy emulated GPUs on the node's first start; a restart keeps an injected fault, as a
  # reboot would not heal broken hardware.
  python3 - "$1" <<'PY'
import sys
sys.path.insert(0, "/opt/portal")
from slurm_plugins import emulated
node, state_dir = sys.argv[1], "/var/lib/portal-gpu"
if emulated.read_state(state_dir, node) is None:
    emulated.write_state(state_dir, node, emulated.healthy_state(node, 4))
PY
}

port_of() { sed -n "s/^$1=//p" "$PORTS_FILE"; }

# ------------------------------------------------------------------ the portal image

portal_common() {
  add_users
  [ -d /etc/slurm-site ] && slurm_config
  start_munged
  make_homes
  export SLURM_JWT_KEY_FILE PORTAL_HEALTH_MASTER_KEY_FILE PORTAL_SECRET_KEY_FILE PORTAL_DB_PASSWORD_FILE \
         PORTAL_REDIS_PASSWORD_FILE
  SLURM_JWT_KEY_FILE=$(own_copy slurm_jwt_key portal 400)
  PORTAL_HEALTH_MASTER_KEY_FILE=$(own_copy health_master_key portal 400)
  PORTAL_SECRET_KEY_FILE=$(own_copy portal_secret_key portal 400)
  PORTAL_DB_PASSWORD_FILE=$(own_copy db_password portal 400)
  PORTAL_REDIS_PASSWORD_FILE=$(own_copy redis_password portal 400)
  export PORTAL_DEV_SECRETS=false
}

# As `portal`, keeping only what root would otherwise be needed for: setuid/setgid (the gateway
# runs token-authenticated Slurm commands as `nobody`, so only the token counts) and
# dac_read_search (job output files live in users' homes; portal/jobs/output.py reads only a
# job's own file, owned by the job's user, never through a symlink).
PORTAL_CAPS=+setuid,+setgid,+dac_read_search
as_portal() {
  exec setpriv --reuid portal --regid portal --init-groups --inh-caps="-all,$PORTAL_CAPS" \
    --ambient-caps="-all,$PORTAL_CAPS" --bounding-set="-all,$PORTAL_CAPS" -- "$@"
}

run_portal() {
  local what=$1; shift
  portal_common
  case "$what" in
    web)
      # Processes, not threads (scripts/portal.sh says why); --keep-alive for the live pages' polls.
      as_portal gunicorn portal.wsgi:application --bind "127.0.0.1:${STACK_WEB_PORT:?}" \
        --workers "${PORTAL_WEB_WORKERS:-$(( $(nproc) * 2 + 1 ))}" --threads 1 --keep-alive 10 \
        --worker-tmp-dir /dev/shm --access-logfile - ;;
    worker)
      as_portal env PORTAL_DB_STATEMENT_TIMEOUT="${PORTAL_WORKER_DB_STATEMENT_TIMEOUT:-60}" \
        PORTAL_DB_LOCK_TIMEOUT="${PORTAL_WORKER_DB_LOCK_TIMEOUT:-30}" \
        celery -A workers.celery worker --loglevel INFO --concurrency "${PORTAL_WORKER_CONCURRENCY:-2}" \
        -Q "${PORTAL_CELERY_QUEUE:-portal}" ;;
    beat)
      install -d -o portal -g portal /var/lib/portal/beat
      as_portal celery -A workers.celery beat --loglevel INFO --schedule /var/lib/portal/beat/schedule ;;
    migrate)
      install -d -o portal -g portal /var/lib/portal/static
      # No statement or lock timeout: a migration may rewrite a big table. collectstatic into the
      # `static` volume the proxy serves, so it always matches this image's code.
      as_portal bash -c 'PORTAL_DB_STATEMENT_TIMEOUT=0 PORTAL_DB_LOCK_TIMEOUT=0 python3 manage.py migrate --noinput \
        && python3 manage.py collectstatic --noinput --clear -v 0 && echo "migrate: done"' ;;
    manage)
      as_portal python3 manage.py "$@" ;;
  esac
}

ROLE=${1:-}
[ $# -gt 0 ] && shift
case "$ROLE" in
  postgres) run_postgres ;;
  redis) run_redis ;;
  mariadb) run_mariadb ;;
  proxy) run_proxy ;;
  slurmdbd) run_slurmdbd ;;
  slurm-init) run_slurm_init ;;
  slurmctld) run_slurmctld ;;
  slurmd) run_slurmd "$@" ;;
  slurmrestd) run_slurmrestd ;;
  web|worker|beat|migrate|manage) run_portal "$ROLE" "$@" ;;
  *) echo "usage: entrypoint.sh postgres|redis|mariadb|proxy|slurmdbd|slurm-init|slurmctld|slurmd NODE|slurmrestd|web|worker|beat|migrate|manage ARGS" >&2
     exit 2 ;;
esac
