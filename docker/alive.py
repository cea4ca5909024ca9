"""A container health check for the worker and beat: is the part's heartbeat fresh?

    python3 /usr/local/lib/portal/alive.py worker|beat

The worker writes its heartbeat every 5 s and beat whenever it sends a task (every second: the
tracker's cycle), to Redis, for /healthz (portal/infra/liveness.py, whose key this reads). This
check costs one Redis read, where `celery inspect ping` loads Celery and Django and waits out its
timeout (1 s of CPU and 6 s here), which at every check slowed the web's requests.
"""

import os
import sys
import time
from pathlib import Path

import redis

STALE_S = 30.0
CACHE_DB = 2  # settings: PORTAL_CACHE_URL's default database, where liveness.mark() writes


def main() -> int:
    part = sys.argv[1]
    password = Path(os.environ["PORTAL_REDIS_PASSWORD_FILE"]).read_text().strip()
    client = redis.Redis(host="127.0.0.1", port=int(os.environ["PORTAL_REDIS_PORT"]), db=CACHE_DB,
                         password=password, socket_timeout=3, socket_connect_timeout=3)
    raw = client.get(f"portal:liveness:{os.environ.get('PORTAL_DB_NAME', 'portal')}:{part}")
    age = None if raw is None else time.time() - float(raw)
    if age is None or age > STALE_S:
        print(f"{part}: no heartbeat for {'ever' if age is None else f'{age:.0f} s'}")
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
