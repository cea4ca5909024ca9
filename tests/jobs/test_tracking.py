"""The tracker keeps the portal's job rows in step with the live cluster.

Everything here is real: jobs run on the local Slurm, rows live in PostgreSQL, the memo and
the lock in Redis. Other people's jobs may share the cluster, so assertions look at the jobs
a test submitted.
"""

from __future__ import annotations

import re
import subprocess
import threading
from datetime import timedelta
from pathlib import Path

import pytest
from django.db import connection
from django.utils import timezone

from portal.jobs import tracking
from portal.jobs.access import visible_jobs
from portal.jobs.models import Job, JobEvent
from portal.jobs.services import SubmitRequest, portal_comment, submit_job
from portal.slurm import gateway
from portal.teams.models import Membership, Team
from tests.api.conftest import ApiClient
from tests.conftest import wait_until
from tests.slurm.helpers import home, spec_for
from workers.tasks.jobs import track_jobs_task

pytestmark = pytest.mark.usefixtures("slurm_accounts", "fresh_tracker")

SLEEPER = "#!/bin/bash\nsleep 120\n"


@pytest.fixture
def fresh_tracker():
    """The memo lives in Redis while each test gets a fresh database: start every test cold."""
    tracking.reset_tracker()
    yield
    tracking.reset_tracker()


@pytest.fixture
def vision(alice):
    team = Team.objects.create(name="vision")
    Membership.objects.create(user=alice, team=team)
    return team


@pytest.fixture
def slurm_jobs():
    """Slurm job ids a test started; all cancelled afterwards."""
    ids: list[int] = []
    yield ids
    if ids:
        subprocess.run(["scancel", *map(str, ids)], check=False, capture_output=True)


def sbatch(user: str, account: str, name: str, *extra: str, wrap: str = "sleep 120") -> int:
    out = subprocess.run(
        ["runuser", "-u", user, "--", "sbatch", "--parsable", "-A", account, "-J", name, "-t", "5",
         "-o", f"{home(user)}/portal-trk-%j.out", *extra, "--wrap", wrap],
        check=True, capture_output=True, text=True, cwd=home(user))
    return int(out.stdout.strip().split(";")[0])


def portal_job(user, unique: str, script: str) -> Job:
    spec = SubmitRequest(team=Team.objects.get(name="vision"), name=f"trk-{unique}", script=script,
                         time_limit_min=5)
    return submit_job(user=user, spec=spec).job


def cycle_until(predicate, *, what: str, timeout: float = 60):
    """Run tracking cycles until `predicate()` holds, as beat would, a few times a second."""
    def step():
        tracking.track_jobs()
        return predicate()
    return wait_until(step, timeout=timeout, interval=0.3, what=what)


def row_for(slurm_id: int) -> Job | None:
    return Job.objects.filter(slurm_job_id=slurm_id).first()


def timeline(job: Job) -> list[str]:
    return list(job.events.filter(kind=JobEvent.Kind.STATE).values_list("name", flat=True))


# ---------------------------------------------------------------- portal jobs

@pytest.mark.django_db
def test_a_portal_job_goes_pending_running_completed_with_its_timeline(alice, vision, unique, slurm_jobs):
    job = portal_job(alice, unique, "#!/bin/bash\nsleep 4\n")
    slurm_jobs.append(job.slurm_job_id)
    assert job.state == "PENDING"

    running = cycle_until(lambda: Job.objects.get(pk=job.pk).state == "RUNNING" and Job.objects.get(pk=job.pk),
                          what="the row to show RUNNING")
    assert running.nodes_list.startswith(("gpu", "cpu"))
    assert running.start_time is not None and running.end_time is None

    done = cycle_until(lambda: Job.objects.get(pk=job.pk).state == "COMPLETED" and Job.objects.get(pk=job.pk),
                       what="the row to show COMPLETED")
    assert done.exit_code == 0
    assert done.end_time >= done.start_time
    assert done.state_changed_at is not None
    assert [s for s in timeline(done) if s != "COMPLETING"] == ["RUNNING", "COMPLETED"]
    assert list(done.events.filter(kind=JobEvent.Kind.ACTION).values_list("name", flat=True)) == ["submit"]


@pytest.mark.django_db
def test_a_failed_job_ends_failed_with_its_exit_code_and_accounting(alice, vision, unique, slurm_jobs):
    job = portal_job(alice, unique, "#!/bin/bash\nsleep 2\nexit 3\n")
    slurm_jobs.append(job.slurm_job_id)

    failed = cycle_until(lambda: Job.objects.get(pk=job.pk).state == "FAILED" and Job.objects.get(pk=job.pk),
                         what="the row to show FAILED")
    assert failed.exit_code == 3
    assert timeline(failed)[-1] == "FAILED"

    accounted = cycle_until(lambda: Job.objects.get(pk=job.pk).accounted and Job.objects.get(pk=job.pk),
                            what="sacct's figures to reach the row")
    assert accounted.state == "FAILED"
    assert accounted.exit_code == 3
    assert accounted.elapsed_s >= 2
    assert accounted.cpu_time_s is not None


@pytest.mark.django_db
def test_a_requeued_job_counts_its_restart_on_the_timeline(alice, vision, unique, slurm_jobs):
    job = portal_job(alice, unique, SLEEPER)
    slurm_jobs.append(job.slurm_job_id)
    cycle_until(lambda: Job.objects.get(pk=job.pk).state == "RUNNING", what="the row to show RUNNING")

    gateway.requeue_job("alice", job.slurm_job_id)
    requeued = cycle_until(lambda: Job.objects.get(pk=job.pk).state == "PENDING" and Job.objects.get(pk=job.pk),
                           what="the row to show the job waiting again")
    assert requeued.restart_count == 1
    # Slurm may be caught stopping the job (COMPLETING) on the way back to the queue.
    assert [s for s in timeline(requeued) if s != "COMPLETING"] == ["RUNNING", "REQUEUED", "PENDING"]
    assert requeued.events.get(name="REQUEUED").detail == "Restart 1"


# ---------------------------------------------------------------- adoption

@pytest.mark.django_db
def test_a_plain_sbatch_job_is_adopted_and_shows_for_its_owner(alice, vision, unique, slurm_jobs):
    slurm_id = sbatch("alice", "vision", f"trk-{unique}", "--hold", "--gres=gpu:h100:2", "-c", "4")
    slurm_jobs.append(slurm_id)

    result = tracking.track_jobs()

    assert result.adopted >= 1 and result.slurm_queried
    job = visible_jobs(alice).get(slurm_job_id=slurm_id)
    assert job.adopted and job.owner == alice and job.team == vision
    assert (job.name, job.partition, job.state, job.reason) == (f"trk-{unique}", "gpu", "PENDING", "JobHeldUser")
    assert (job.gpus_per_node, job.gpu_type, job.cpus_per_task, job.time_limit_min) == (2, "h100", 4, 5)
    assert job.stdout_path == f"{home('alice')}/portal-trk-{slurm_id}.out"
    assert job.working_dir == str(home("alice"))
    assert timeline(job) == ["PENDING"]


@pytest.mark.django_db
def test_an_sbatch_user_without_a_portal_account_gets_one_without_a_password(django_user_model, unique,
                                                                            slurm_jobs):
    Team.objects.create(name="vision")
    slurm_id = sbatch("bob", "vision", f"trk-{unique}", "--hold")
    slurm_jobs.append(slurm_id)

    tracking.track_jobs()

    bob = django_user_model.objects.get(username="bob")
    assert not bob.has_usable_password()  # bob signs in through SSO
    assert visible_jobs(bob).filter(slurm_job_id=slurm_id, adopted=True).exists()


@pytest.mark.django_db
def test_a_job_whose_account_is_no_portal_team_is_left_alone(django_user_model, unique, slurm_jobs):
    slurm_id = sbatch("carol", "nlp", f"trk-{unique}", "--hold")
    slurm_jobs.append(slurm_id)

    result = tracking.track_jobs()

    assert result.unmanaged >= 1
    assert row_for(slurm_id) is None
    assert not django_user_model.objects.filter(username="carol").exists()


@pytest.mark.django_db
def test_a_job_slurm_accepted_but_the_portal_never_recorded_is_recovered(alice, vision, unique, slurm_jobs):
    # The portal wrote its row, Slurm accepted the job, and the portal died before saving the id.
    row = Job.objects.create(owner=alice, team=vision, name=f"trk-{unique}", script=SLEEPER)
    spec = spec_for("alice", unique, SLEEPER, hold=True, comment=portal_comment(row))
    slurm_id = gateway.submit_job("alice", spec)
    slurm_jobs.append(slurm_id)

    result = tracking.track_jobs()

    row.refresh_from_db()
    assert result.adopted >= 1
    assert (row.slurm_job_id, row.state, row.reason) == (slurm_id, "PENDING", "JobHeldUser")
    assert not row.adopted
    assert row.stdout_path == f"{home('alice')}/portal-test-{unique}-{slurm_id}.out"
    assert Job.objects.filter(slurm_job_id=slurm_id).count() == 1
    assert timeline(row) == ["PENDING"]


@pytest.mark.django_db
def test_a_submission_slurm_never_received_is_marked_failed(alice, vision, unique):
    stale = Job.objects.create(owner=alice, team=vision, name=f"trk-{unique}-stale", script=SLEEPER)
    Job.objects.filter(pk=stale.pk).update(created_at=timezone.now() - timedelta(minutes=3))
    fresh = Job.objects.create(owner=alice, team=vision, name=f"trk-{unique}-fresh", script=SLEEPER)

    result = tracking.track_jobs()

    stale.refresh_from_db()
    fresh.refresh_from_db()
    assert result.submit_failed == 1
    assert (stale.state, stale.reason) == ("SUBMIT_FAILED", tracking.SUBMIT_FAILED_REASON)
    assert timeline(stale) == ["SUBMIT_FAILED"]
    assert fresh.state == ""  # its submission may still be on the way


@pytest.mark.late
@pytest.mark.django_db
def test_a_job_slurm_forgot_is_completed_from_accounting(alice, vision):
    """The portal was down while a job ended and slurmctld purged it (MinJobAge): sacct still knows."""
    record = _purged_job()
    row = Job.objects.create(owner=alice, team=vision, name="forgotten", slurm_job_id=record.job_id,
                             state="RUNNING", nodes_list="gpu01", submit_time=record.start_time)

    tracking.track_jobs()

    row.refresh_from_db()
    assert row.state == record.state
    assert row.accounted and row.elapsed_s == record.elapsed_s
    assert timeline(row) == [record.state]


def _purged_job():
    """A finished job in sacct that slurmctld no longer holds; skip on a cluster too new to have one."""
    out = subprocess.run(["sacct", "-a", "-X", "-n", "-P", "-S", "now-2days", "-o", "JobIDRaw,State"],
                         capture_output=True, text=True, check=True).stdout
    queued = {job.job_id for job in gateway.sweep_jobs().jobs}
    for line in reversed(out.splitlines()):
        raw_id, state = line.split("|")
        if raw_id.isdigit() and int(raw_id) not in queued and state.split()[0] in {"COMPLETED", "FAILED"}:
            [record] = gateway.accounting([int(raw_id)])
            if record.start_time is not None:
                return record
    pytest.skip("no purged finished job in sacct yet (MinJobAge is 5 minutes)")


# ---------------------------------------------------------------- incremental and idempotent

@pytest.mark.django_db
def test_a_second_cycle_writes_nothing(alice, vision, unique, slurm_jobs):
    slurm_id = sbatch("alice", "vision", f"trk-{unique}", "--hold")
    slurm_jobs.append(slurm_id)
    tracking.track_jobs()
    job = row_for(slurm_id)
    before = (job.updated_at, job.events.count(), Job.objects.count())

    def a_quiet_repeat():
        tracking.track_jobs()
        again = tracking.track_jobs()
        return again.changed == 0 and again.adopted == 0
    # Other people's jobs may change between two cycles; the tracker must settle anyway.
    wait_until(a_quiet_repeat, timeout=30, interval=0.5, what="a repeated cycle that writes nothing")

    job.refresh_from_db()
    assert (job.updated_at, job.events.count(), Job.objects.filter(slurm_job_id=slurm_id).count()) == \
        (before[0], before[1], 1)


@pytest.mark.django_db
def test_a_change_after_a_quiet_spell_is_still_seen(alice, vision, unique, slurm_jobs, monkeypatch):
    monkeypatch.setattr(tracking, "BUSY_WINDOW_S", 0)  # go quiet at once instead of after 15 s
    monkeypatch.setattr(tracking, "PROBE_MAX_JOBS", 1_000_000)  # however full the shared queue is
    slurm_id = sbatch("alice", "vision", f"trk-{unique}", "--hold")
    slurm_jobs.append(slurm_id)
    tracking.track_jobs()
    quiet = tracking.track_jobs()
    assert quiet.queries[0] == "probe"  # the cheap question first

    subprocess.run(["scancel", str(slurm_id)], check=True)
    cycle_until(lambda: row_for(slurm_id).state == "CANCELLED", what="the cancel to reach the row", timeout=10)
    assert timeline(row_for(slurm_id)) == ["PENDING", "CANCELLED"]


# ---------------------------------------------------------------- one cycle at a time

@pytest.mark.django_db
def test_a_cycle_returns_at_once_while_another_holds_the_lock(alice, vision, unique, slurm_jobs):
    slurm_id = sbatch("alice", "vision", f"trk-{unique}", "--hold")
    slurm_jobs.append(slurm_id)
    other = tracking._redis().lock(tracking._key("lock"), timeout=30)
    assert other.acquire(blocking=False)
    try:
        result = tracking.track_jobs()
        assert not result.ran and not result.slurm_queried
        assert row_for(slurm_id) is None
    finally:
        other.release()
    assert tracking.track_jobs().ran
    assert row_for(slurm_id) is not None


@pytest.mark.django_db(transaction=True)
def test_concurrent_cycles_adopt_a_job_once(alice, vision, unique, slurm_jobs):
    slurm_id = sbatch("alice", "vision", f"trk-{unique}", "--hold")
    slurm_jobs.append(slurm_id)
    start, results = threading.Barrier(3), []

    def run():
        start.wait()
        try:
            results.append(tracking.track_jobs())
        finally:
            connection.close()
    threads = [threading.Thread(target=run) for _ in range(3)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()

    assert len(results) == 3 and any(r.ran for r in results)
    assert Job.objects.filter(slurm_job_id=slurm_id).count() == 1
    assert JobEvent.objects.filter(job__slurm_job_id=slurm_id).count() == 1



# ---------------------------------------------------------------- the Celery task

@pytest.mark.django_db(transaction=True)
def test_the_worker_runs_a_tracking_cycle(celery_worker_session, alice, vision, unique, slurm_jobs):
    slurm_id = sbatch("alice", "vision", f"trk-{unique}", "--hold")
    slurm_jobs.append(slurm_id)

    result = track_jobs_task.delay().get(timeout=60)

    assert result["ran"] and result["adopted"] >= 1 and "sweep" in result["queries"]
    assert visible_jobs(alice).filter(slurm_job_id=slurm_id, state="PENDING").exists()


@pytest.mark.django_db(transaction=True)
@pytest.mark.usefixtures("celery_worker_session", "vision")
def test_the_worker_retries_while_slurm_is_unreachable(alice, unique, slurm_jobs, monkeypatch, tmp_path):
    slurm_id = sbatch("alice", "vision", f"trk-{unique}", "--hold")
    slurm_jobs.append(slurm_id)
    # The worker runs in this process: its squeue now looks for slurmctld on a closed port.
    conf = Path("/etc/slurm/slurm.conf").read_text()
    unreachable = tmp_path / "slurm.conf"
    unreachable.write_text(re.sub(r"(?m)^SlurmctldPort=.*$", "SlurmctldPort=1", conf) + "MessageTimeout=1\n")
    monkeypatch.setenv("SLURM_CONF", str(unreachable))

    pending = track_jobs_task.delay()
    wait_until(lambda: pending.state == "RETRY", timeout=30, what="the task to schedule a retry")
    assert row_for(slurm_id) is None
    monkeypatch.delenv("SLURM_CONF")

    result = pending.get(timeout=60)  # a retry succeeds once slurmctld answers again
    assert result["ran"]
    assert visible_jobs(alice).filter(slurm_job_id=slurm_id).exists()


def test_job_list_api_shows_tracker_changes_despite_its_cache(alice, vision, unique, slurm_jobs):
    """The list API caches pages; the tracker's writes must still show within a cycle or two."""
    api = ApiClient(alice)
    name = f"trk-{unique}"
    # Only jobs from now on: alice's older jobs in the shared queue must not fill the page.
    since = (timezone.now() - timedelta(seconds=1)).replace(microsecond=0).isoformat()

    def listed_state():
        rows = [row for row in api.get("/jobs", submitted_after=since).json()["results"] if row["name"] == name]
        return rows[0]["state"] if rows else None

    assert listed_state() is None   # now cached: the page stays until alice's jobs change
    slurm_jobs.append(sbatch("alice", "vision", name, "--hold"))
    # Well inside the cache's 30 s lifetime: only the tracker's notice can make it show this fast.
    cycle_until(lambda: listed_state() == "PENDING", what="adopted job in the list", timeout=10)
    subprocess.run(["scancel", str(slurm_jobs[0])], check=True)
    cycle_until(lambda: listed_state() == "CANCELLED", what="cancel in the list", timeout=10)
