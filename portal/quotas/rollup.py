"""The GPU-hour rollup: finished jobs folded into GPU-seconds per team, user, GPU type and day.

What a finished job counts (its "runs"):

* every earlier run of a requeued job: the recovery app's Attempt rows numbered below the
  job's restart count, each its GPUs x (ended_at - started_at);
* its last run: sacct's elapsed (Job.elapsed_s, filled by the tracker; end - start until then)
  times its GPUs (the last attempt's, which is Slurm's allocated TRES when known, else nodes x
  GPUs per node), ending at its end time. Skipped when it is one of the earlier runs again:
  a job cancelled while waiting after a requeue carries its previous run's figures.

Each run is split at local midnights (PORTAL_TIME_ZONE), so a period (whole local days) is an
exact sum of days. A fold writes the job's per-day rows (UsageFold) and adds them to UsageDay,
after taking out what the job added before: folding twice counts once, and changed figures
are corrected. Jobs still queued or running are not folded; team_usage counts them live.

A cycle (beat, every PORTAL_USAGE_ROLLUP_SECONDS) reads the jobs changed since its cursor
(Job.updated_at, minus OVERLAP because the tracker stamps a change before it commits it) and
the jobs with attempts newer than its attempt cursor. When nothing changed it costs two
indexed queries. Folds serialise on a PostgreSQL advisory lock, so beat and the rebuild command
may overlap safely.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from datetime import datetime, timedelta

from django.conf import settings
from django.db import connection, transaction
from django.utils import timezone

from portal.jobs.models import Job
from portal.jobs.states import ENDED
from portal.recovery.models import Attempt
from portal.teams.models import UsageCursor, UsageDay, UsageFold

log = logging.getLogger(__name__)

CURSOR = "rollup"
OVERLAP = timedelta(seconds=30)   # the tracker stamps updated_at, then commits a little later
BATCH = 5000
LOCK_KEY = 0x75736167             # "usag": the advisory lock every fold takes
CYCLE_KEY = 0x75736163            # "usac": one cycle at a time (a first cycle over 1M jobs is long)

_JOB, _ATTEMPT = Job._meta.db_table, Attempt._meta.db_table
_DAY, _FOLD = UsageDay._meta.db_table, UsageFold._meta.db_table

# Runs of the given finished jobs, one row per (job, local day) with its GPU-seconds.
# Parameters: time zone (x4), job ids, finished states.
RUNS_BY_DAY_SQL = f"""
WITH jobs AS (
  SELECT j.* FROM {_JOB} j WHERE j.id = ANY(%(ids)s) AND j.state = ANY(%(ended)s)
), runs AS (
  SELECT j.id AS job_id, j.team_id, j.owner_id, j.gpu_type, a.started_at AS s, a.ended_at AS e, a.gpus AS g
  FROM jobs j JOIN {_ATTEMPT} a ON a.job_id = j.id
  WHERE a.number < j.restart_count AND a.started_at IS NOT NULL AND a.ended_at IS NOT NULL
  UNION ALL
  SELECT j.id, j.team_id, j.owner_id, j.gpu_type,
    j.end_time - COALESCE(make_interval(secs => j.elapsed_s), j.end_time - j.start_time), j.end_time,
    COALESCE(NULLIF(last.gpus, 0), j.nodes * j.gpus_per_node)
  FROM jobs j LEFT JOIN {_ATTEMPT} last ON last.job_id = j.id AND last.number = j.restart_count
  WHERE j.end_time IS NOT NULL AND (j.elapsed_s IS NOT NULL OR j.start_time IS NOT NULL)
    AND NOT EXISTS (SELECT 1 FROM {_ATTEMPT} p WHERE p.job_id = j.id AND p.number < j.restart_count
                    AND p.started_at = j.start_time)
), split AS (
  SELECT r.job_id, r.team_id, r.owner_id, r.gpu_type, d.day::date AS day,
    r.g * EXTRACT(EPOCH FROM LEAST(r.e, (d.day + interval '1 day') AT TIME ZONE %(tz)s)
                           - GREATEST(r.s, d.day AT TIME ZONE %(tz)s))::float8 AS gpu_s
  FROM runs r, generate_series(date_trunc('day', r.s AT TIME ZONE %(tz)s),
                               date_trunc('day', r.e AT TIME ZONE %(tz)s), interval '1 day') AS d(day)
  WHERE r.g > 0 AND r.e > r.s
)
SELECT job_id, day, team_id, owner_id, gpu_type, SUM(gpu_s) AS gpu_s FROM split
WHERE gpu_s > 0 GROUP BY job_id, day, team_id, owner_id, gpu_type
"""  # noqa: S608 - table names come from the models; every value is a parameter

# Take the jobs' earlier contributions back out of the day buckets.
UNFOLD_SQL = f"""
WITH old AS (DELETE FROM {_FOLD} WHERE job_id = ANY(%(ids)s) RETURNING team_id, user_id, gpu_type, day, gpu_seconds),
sums AS (SELECT team_id, user_id, gpu_type, day, SUM(gpu_seconds) AS s FROM old GROUP BY 1, 2, 3, 4)
UPDATE {_DAY} u SET gpu_seconds = u.gpu_seconds - sums.s FROM sums
WHERE u.team_id = sums.team_id AND u.user_id = sums.user_id AND u.gpu_type = sums.gpu_type AND u.day = sums.day
"""  # noqa: S608

FOLD_SQL = f"""
WITH new AS ({RUNS_BY_DAY_SQL}),
ins AS (INSERT INTO {_FOLD} (job_id, day, team_id, user_id, gpu_type, gpu_seconds)
        SELECT job_id, day, team_id, owner_id, gpu_type, gpu_s FROM new)
INSERT INTO {_DAY} (team_id, user_id, gpu_type, day, gpu_seconds)
SELECT team_id, owner_id, gpu_type, day, SUM(gpu_s) FROM new GROUP BY 1, 2, 3, 4
ON CONFLICT (team_id, day, user_id, gpu_type) DO UPDATE SET gpu_seconds = {_DAY}.gpu_seconds + EXCLUDED.gpu_seconds
"""  # noqa: S608


@dataclass
class FoldResult:
    ran: bool = True        # False: another cycle was running
    looked_at: int = 0      # jobs read since the cursor (finished or not)
    batches: int = 0

    def as_dict(self) -> dict:
        return {"ran": self.ran, "looked_at": self.looked_at, "batches": self.batches}


def fold_params(ids: list[int]) -> dict:
    return {"ids": ids, "ended": sorted(ENDED), "tz": settings.TIME_ZONE}


def fold_jobs(ids: list[int]) -> None:
    """Make the rollup hold exactly what these jobs count now (nothing for unfinished ones)."""
    if not ids:
        return
    with transaction.atomic(), connection.cursor() as cursor:
        cursor.execute("SELECT pg_advisory_xact_lock(%s)", [LOCK_KEY])
        cursor.execute(UNFOLD_SQL, fold_params(ids))
        cursor.execute(FOLD_SQL, fold_params(ids))


def fold_changed_jobs() -> FoldResult:
    """One rollup cycle, unless another is running (beat starts one every interval)."""
    with connection.cursor() as cursor:
        cursor.execute("SELECT pg_try_advisory_lock(%s)", [CYCLE_KEY])
        if not cursor.fetchone()[0]:
            return FoldResult(ran=False)
        try:
            return _cycle()
        finally:
            cursor.execute("SELECT pg_advisory_unlock(%s)", [CYCLE_KEY])


def _cycle() -> FoldResult:
    """Fold the jobs changed since the cursor, then move the cursor.

    The cursor ends OVERLAP before this cycle began: everything stamped earlier has committed
    by now, and what was stamped later is read again next cycle (folding twice is harmless).
    """
    result, began = FoldResult(), timezone.now()
    state, _ = UsageCursor.objects.get_or_create(name=CURSOR)
    changed = Job.objects.order_by("updated_at", "id").values_list("id", "updated_at")
    if state.changed_at:
        changed = changed.filter(updated_at__gte=state.changed_at)
    after: tuple[int, datetime] | None = None
    while True:
        # Keyset pages: a bulk load stamps thousands of rows with one time.
        page = changed
        if after:
            page = changed.filter(updated_at__gte=after[1]).exclude(updated_at=after[1], id__lte=after[0])
        rows = list(page[:BATCH])
        ids = [pk for pk, _ in rows]
        fold_jobs(ids + _jobs_with_new_attempts(state, set(ids)))
        result.looked_at += len(ids)
        result.batches += 1
        if len(rows) < BATCH:
            break
        after = rows[-1]
    state.changed_at = max(filter(None, [state.changed_at, began - OVERLAP]))
    state.save(update_fields=["changed_at", "attempt_id"])
    return result


def _jobs_with_new_attempts(state: UsageCursor, skip: set[int]) -> list[int]:
    """Jobs given attempt rows since the last cycle (the recovery cycle records runs a moment
    after the tracker's change, and history of jobs adopted late without changing the job)."""
    rows = list(Attempt.objects.filter(id__gt=state.attempt_id).order_by("id").values_list("id", "job_id")[:BATCH])
    if rows:
        state.attempt_id = rows[-1][0]
    return sorted({job_id for _, job_id in rows} - skip)


def rebuild(*, batch: int = 20000, progress=None) -> int:
    """Fold every job anew (after a time zone change, or to repair); the cursor ends where it began.
    Beat may keep folding meanwhile: the advisory lock orders the folds, and each is exact."""
    started = timezone.now()
    with transaction.atomic(), connection.cursor() as cursor:
        cursor.execute("SELECT pg_advisory_xact_lock(%s)", [LOCK_KEY])
        # Deferred foreign-key checks still pending in this transaction would block TRUNCATE.
        cursor.execute("SET CONSTRAINTS ALL IMMEDIATE")
        cursor.execute(f"TRUNCATE {_FOLD}, {_DAY}")
    last, folded = 0, 0
    finished = Job.objects.filter(state__in=ENDED).order_by("id").values_list("id", flat=True)
    while ids := list(finished.filter(id__gt=last)[:batch]):
        fold_jobs(ids)
        last, folded = ids[-1], folded + len(ids)
        if progress:
            progress(folded)
    newest = Attempt.objects.order_by("-id").values_list("id", flat=True).first() or 0
    # OVERLAP back: a job stamped just before the rebuild began may have committed after its batch.
    UsageCursor.objects.update_or_create(name=CURSOR, defaults={"changed_at": started - OVERLAP, "attempt_id": newest})
    return folded


def cursor_time() -> datetime | None:
    """Up to when changed jobs are folded (None: never): team_usage adds the later ones live."""
    return UsageCursor.objects.filter(name=CURSOR).values_list("changed_at", flat=True).first()
