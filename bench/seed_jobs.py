"""Fill a bench database with N jobs (default 1,000,000) across 205 users and 22 teams.

    PORTAL_DB_NAME=portal_bench_list .venv/bin/python bench/seed_jobs.py [N]

alice owns 5% of all jobs (a heavy user); carol leads nlp; admin sees everything. Rows are
made by one INSERT ... SELECT generate_series in PostgreSQL: about 20 s for a million.
"""

from __future__ import annotations

import os
import sys
import time

import django

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
os.environ.setdefault("DJANGO_SETTINGS_MODULE", "portal.settings")
# Seeding a million rows is set-up, not a request: no web statement timeout (settings: 10 s).
os.environ["PORTAL_DB_STATEMENT_TIMEOUT"] = "0"
django.setup()

from django.contrib.auth import get_user_model  # noqa: E402
from django.db import connection, transaction  # noqa: E402

from portal.jobs.models import Job  # noqa: E402
from portal.teams.models import Membership, Team  # noqa: E402

TEAMS = ["vision", "nlp"] + [f"team{i:02d}" for i in range(20)]
NAMED = {"alice": "vision", "bob": "vision", "carol": "nlp", "erin": "nlp"}

# Seeded PENDING/RUNNING rows carry no Slurm id: the job-list bench runs the real tracker on this
# database, which reconciles every active row that has one against Slurm (these are not in Slurm).
INSERT = """
INSERT INTO jobs_job (uuid, slurm_job_id, owner_id, team_id, name, partition, script, state, reason,
    submit_time, start_time, end_time, nodes, gpus_per_node, gpu_type, cpus_per_task, mem_mb,
    time_limit_min, requeue, checkpoint_dir, nodes_list, exit_code, restart_count, working_dir,
    stdout_path, stderr_path, accounted, adopted, state_changed_at, created_at, updated_at)
SELECT gen_random_uuid(), CASE WHEN i %% 8 IN (5, 6) THEN NULL ELSE 1000000 + i END, o.user_id, o.team_id,
    'train-' || i, 'gpu', '#!/bin/bash\ntrue\n',
    (ARRAY['COMPLETED','COMPLETED','COMPLETED','FAILED','CANCELLED','RUNNING','PENDING','TIMEOUT'])[1 + i %% 8],
    '', now() - (%(n)s - i) * interval '20 seconds', now() - (%(n)s - i) * interval '20 seconds',
    NULL, 1, 1 + i %% 4, 'h100', 8, 32768, 60, true, '', 'gpu0' || (1 + i %% 8), 0, i %% 3, '', '', '', true,
    false, now(), now(), now()
FROM generate_series(1, %(n)s) AS i
JOIN owners o ON o.slot = CASE WHEN i %% 20 = 0 THEN 0 ELSE 1 + i %% (SELECT count(*) - 1 FROM owners) END
ORDER BY i  -- ids follow submit order, so owners interleave as in real life
"""


def _people() -> list[tuple[int, int]]:
    users = get_user_model().objects
    teams = {name: Team.objects.get_or_create(name=name)[0] for name in TEAMS}
    users.get_or_create(username="admin", defaults={"is_staff": True, "is_superuser": True})
    owners = []
    for name, team in [*NAMED.items(), *((f"user{i:03d}", TEAMS[2 + i % 20]) for i in range(200))]:
        user, _ = users.get_or_create(username=name)
        role = Membership.Role.LEAD if name == "carol" else Membership.Role.MEMBER
        Membership.objects.get_or_create(user=user, team=teams[team], defaults={"role": role})
        owners.append((user.id, teams[team].id))
    return owners


@transaction.atomic
def seed(n: int) -> None:
    owners = _people()
    with connection.cursor() as cur:
        cur.execute("CREATE TEMP TABLE owners (slot int, user_id bigint, team_id bigint) ON COMMIT DROP")
        cur.executemany("INSERT INTO owners VALUES (%s, %s, %s)",
                        [(slot, uid, tid) for slot, (uid, tid) in enumerate(owners)])
        cur.execute(INSERT, {"n": n})


def main() -> None:
    n = int(sys.argv[1]) if len(sys.argv) > 1 else 1_000_000
    # Databases seeded before the tracker ran beside the bench gave those rows made-up Slurm ids.
    Job.objects.filter(state__in=["PENDING", "RUNNING"], slurm_job_id__gte=1000000,
                       name__startswith="train-").update(slurm_job_id=None)
    have = Job.objects.count()
    if have >= n:
        print(f"bench database already holds {have:,} jobs")
        return
    started = time.monotonic()
    seed(n - have)
    with connection.cursor() as cur:
        cur.execute("ANALYZE jobs_job")
    print(f"seeded {n - have:,} jobs in {time.monotonic() - started:.1f} s")


if __name__ == "__main__":
    main()
