#!/usr/bin/env bash
# Start or stop the demo's portal processes: gunicorn on 127.0.0.1:8000, a Celery worker and
# Celery beat. Pid files live in var/run; stop touches only those pids. Logs go to var/log, one
# file per process kind, rotated by size (web.log: Django and gunicorn errors; web-access.log;
# worker.log; beat.log), through settings' LOGGING with PORTAL_LOG_DIR set.
set -euo pipefail
cd "$(dirname "$0")/.."
VENV=.venv/bin
RUN=var/run LOG=${PORTAL_LOG_DIR:-$PWD/var/log}
mkdir -p "$RUN"
install -d -m 750 "$LOG"   # tracebacks may show request data: not for every user
export PORTAL_LOG_DIR=$LOG
# Workers' statements may run longer than a web request's (the tracker's sweep, the node
# check), so they get their own database timeouts (settings: PORTAL_DB_*_TIMEOUT).
WORKER_DB_TIMEOUTS=(PORTAL_DB_STATEMENT_TIMEOUT="${PORTAL_WORKER_DB_STATEMENT_TIMEOUT:-60}"
                    PORTAL_DB_LOCK_TIMEOUT="${PORTAL_WORKER_DB_LOCK_TIMEOUT:-30}")
BIND=${PORTAL_BIND:-127.0.0.1:8000}
WEB_WORKERS=${PORTAL_WEB_WORKERS:-$(( $(nproc) * 2 + 1 ))}

alive() { [ -s "$RUN/$1.pid" ] && kill -0 "$(cat "$RUN/$1.pid")" 2>/dev/null; }

start() {
  # No --logfile: Celery's file would never rotate; settings' LOGGING writes worker.log/beat.log.
  alive worker || env PORTAL_LOG_NAME=worker "${WORKER_DB_TIMEOUTS[@]}" $VENV/celery -A workers.celery \
      worker --detach --loglevel INFO --concurrency 2 --pidfile "$RUN/worker.pid" -Q "${PORTAL_CELERY_QUEUE:-portal}"
  alive beat || env PORTAL_LOG_NAME=beat "${WORKER_DB_TIMEOUTS[@]}" $VENV/celery -A workers.celery \
      beat --detach --loglevel INFO --pidfile "$RUN/beat.pid" --schedule "$RUN/beat-schedule"
  # Processes rather than threads: requests are mostly Python, and threads of one process
  # contend for its GIL. Measured with submits arriving at 50 a second: 2 threads per worker
  # cost 22 ms of CPU per submit against 14 with one, and p95 went from 55 ms to 1.2 s.
  # --keep-alive 10: live pages poll every second or two, and gunicorn's default (2 s) would
  # close many of their connections between two polls.
  # --config: gunicorn's own error and access logs go to rotated files (scripts/gunicorn.conf.py).
  alive web || PORTAL_LOG_NAME=web $VENV/gunicorn portal.wsgi:application --config scripts/gunicorn.conf.py \
      --daemon --bind "$BIND" --workers "$WEB_WORKERS" --threads 1 --keep-alive 10 --pid "$RUN/web.pid"
  for _ in $(seq 100); do
    curl -fs -o /dev/null "http://$BIND/accounts/login/" && { echo "portal: serving on http://$BIND"; return; }
    sleep 0.2
  done
  echo "portal: web server did not answer on $BIND; see $LOG/web.log" >&2
  exit 1
}

stop() {
  for name in web beat worker; do
    if alive "$name"; then
      pid=$(cat "$RUN/$name.pid"); kill "$pid"
      for _ in $(seq 50); do kill -0 "$pid" 2>/dev/null || break; sleep 0.2; done
      kill -0 "$pid" 2>/dev/null && kill -9 "$pid"
      echo "portal: stopped $name"
    fi
    rm -f "$RUN/$name.pid"
  done
}

case "${1:-}" in
  start) start ;;
  stop) stop ;;
  *) echo "usage: $0 start|stop" >&2; exit 2 ;;
esac
