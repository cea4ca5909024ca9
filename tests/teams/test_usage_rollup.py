"""GPU-hours of finished, requeued and running jobs: what the rollup folds and team_usage adds.

Job and Attempt rows shaped as the tracker and the recovery cycle write them (sacct's elapsed in
Job.elapsed_s, earlier runs as attempts); the real-job comparison with sacct is in
test_usage_slurm.py. The site zone is Europe/Berlin here so day and period edges are not UTC's.
"""

from __future__ import annotations

from datetime import datetime, timedelta
from io import StringIO
from zoneinfo import ZoneInfo

import pytest
from django.core.management import call_command

from portal.jobs.models import Job
from portal.quotas import rollup
from portal.quotas.usage import daily_series, team_usage
from portal.recovery.models import Attempt
from portal.teams.models import Membership, Team, TeamPolicy, UsageDay
from workers.tasks.teams import fold_usage_task

pytestmark = pytest.mark.django_db
BERLIN = ZoneInfo("Europe/Berlin")


@pytest.fixture(autouse=True)
def _berlin(settings):
    settings.TIME_ZONE = "Europe/Berlin"


@pytest.fixture
def team(alice, bob):
    team = Team.objects.create(name="qt-usage")
    Membership.objects.create(user=alice, team=team)
    Membership.objects.create(user=bob, team=team)
    return team


def local(*args: int) -> datetime:
    return datetime(*args, tzinfo=BERLIN)


def finished(team, owner, *, start: datetime, hours: float, gpus: int = 1, nodes: int = 1, gpu_type: str = "h100",
             state: str = "COMPLETED", restarts: int = 0, elapsed: bool = True) -> Job:
    end = start + timedelta(hours=hours)
    return Job.objects.create(owner=owner, team=team, name="j", state=state, start_time=start, end_time=end,
                              submit_time=start, nodes=nodes, gpus_per_node=gpus, gpu_type=gpu_type,
                              restart_count=restarts, elapsed_s=round(hours * 3600) if elapsed else None,
                              accounted=elapsed)


def run(job: Job, number: int, start: datetime, hours: float, gpus: int) -> Attempt:
    return Attempt.objects.create(job=job, number=number, started_at=start, ended_at=start + timedelta(hours=hours),
                                  gpus=gpus, outcome=Attempt.Outcome.REQUEUED)


def fold_all() -> None:
    rollup.fold_jobs(list(Job.objects.values_list("id", flat=True)))


def test_it_counts_elapsed_times_gpus_by_user_and_type(team, alice, bob):
    finished(team, alice, start=local(2026, 11, 3, 10), hours=2, gpus=4)          # 8 GPU-h
    finished(team, bob, start=local(2026, 11, 4, 10), hours=1.5, gpus=2, nodes=2)  # 6 GPU-h
    finished(team, bob, start=local(2026, 11, 5, 10), hours=1, gpus=1, gpu_type="")  # 1 GPU-h
    fold_all()

    usage = team_usage(team, now=local(2026, 11, 20, 12))

    assert usage.gpu_hours == pytest.approx(15)
    assert usage.by_user == pytest.approx({"alice": 8, "bob": 7})
    assert usage.by_type == pytest.approx({"h100": 14, "any": 1})
    assert usage.running_gpu_hours == 0 and usage.running_gpus == 0


def test_a_job_over_midnight_and_the_month_edge_is_split_in_the_site_zone(team, alice):
    # 22:00 on 31 Oct to 02:00 on 1 Nov, Berlin time (21:00-01:00 UTC): 2 h in each month.
    finished(team, alice, start=local(2026, 10, 31, 22), hours=4, gpus=2)
    fold_all()

    october = team_usage(team, now=local(2026, 10, 31, 23, 59))
    november = team_usage(team, now=local(2026, 11, 2, 12))

    assert october.gpu_hours == pytest.approx(4)
    assert november.gpu_hours == pytest.approx(4)
    assert november.start == local(2026, 11, 1)
    assert [(d.day.isoformat(), d.gpu_hours, d.cumulative) for d in november.by_day] == [
        ("2026-11-01", pytest.approx(4), pytest.approx(4)), ("2026-11-02", 0, pytest.approx(4))]


def test_a_week_budget_splits_at_monday_midnight(team, alice):
    TeamPolicy.objects.create(team=team, budget_period=TeamPolicy.Period.WEEK, gpu_hours_budget=10)
    # Sunday 29 Nov 23:00 to Monday 30 Nov 01:00: one hour in each week.
    finished(team, alice, start=local(2026, 11, 29, 23), hours=2, gpus=1)
    fold_all()

    assert team_usage(team, now=local(2026, 11, 29, 23, 30)).gpu_hours == pytest.approx(1)
    monday = team_usage(team, now=local(2026, 11, 30, 9))
    assert monday.period == "week" and monday.start == local(2026, 11, 30)
    assert monday.gpu_hours == pytest.approx(1) and monday.left == pytest.approx(9)


def test_every_run_of_a_requeued_job_counts(team, alice):
    job = finished(team, alice, start=local(2026, 11, 10, 14), hours=1, gpus=4, restarts=2)
    run(job, 0, local(2026, 11, 10, 8), 2, gpus=4)     # 8 GPU-h, ended by a node failure
    run(job, 1, local(2026, 11, 10, 11), 0.5, gpus=4)  # 2 GPU-h
    fold_all()

    assert team_usage(team, now=local(2026, 11, 20)).gpu_hours == pytest.approx(8 + 2 + 4)


def test_a_job_cancelled_while_waiting_after_a_requeue_counts_its_run_once(team, alice):
    # sacct's record then carries the earlier run's start and elapsed (portal/slurm/parse.py).
    job = finished(team, alice, start=local(2026, 11, 10, 8), hours=2, gpus=4, restarts=1, state="CANCELLED")
    run(job, 0, local(2026, 11, 10, 8), 2, gpus=4)
    fold_all()

    assert team_usage(team, now=local(2026, 11, 20)).gpu_hours == pytest.approx(8)


def test_the_last_runs_allocated_gpus_win_over_the_request(team, alice):
    # sbatch --gpus=3 shows no per-node gres: the tracker's row has 0, the attempt Slurm's TRES.
    job = finished(team, alice, start=local(2026, 11, 10, 8), hours=1, gpus=0)
    Attempt.objects.create(job=job, number=0, started_at=job.start_time, ended_at=job.end_time, gpus=3,
                           outcome=Attempt.Outcome.SUCCEEDED)
    fold_all()

    assert team_usage(team, now=local(2026, 11, 20)).gpu_hours == pytest.approx(3)


def test_folding_twice_counts_once_and_changed_figures_are_corrected(team, alice):
    job = finished(team, alice, start=local(2026, 11, 10, 8), hours=2, gpus=2, elapsed=False)  # end - start
    fold_all()
    fold_all()
    assert team_usage(team, now=local(2026, 11, 20)).gpu_hours == pytest.approx(4)

    Job.objects.filter(pk=job.pk).update(elapsed_s=3600, accounted=True)  # sacct's figure arrives
    fold_all()

    assert team_usage(team, now=local(2026, 11, 20)).gpu_hours == pytest.approx(2)
    assert sum(UsageDay.objects.values_list("gpu_seconds", flat=True)) == pytest.approx(2 * 3600)


def test_a_finished_job_counts_before_the_rollup_folds_it_and_once_after(team, alice):
    now = datetime.now(tz=BERLIN)
    if now.hour < 2:
        pytest.skip("the job below would start yesterday")
    rollup.fold_changed_jobs()   # the cursor is now; this job ends after it
    finished(team, alice, start=now - timedelta(hours=1), hours=0.5, gpus=2)

    before = team_usage(team).gpu_hours
    result = rollup.fold_changed_jobs()
    after = team_usage(team).gpu_hours

    assert before == pytest.approx(1) and after == pytest.approx(1)
    assert result.looked_at >= 1 and UsageDay.objects.filter(team=team).exists()


def test_a_cycle_with_nothing_new_reads_nothing_old(team, alice):
    old = finished(team, alice, start=local(2026, 11, 10, 8), hours=1, gpus=1)
    Job.objects.filter(pk=old.pk).update(updated_at=datetime.now(tz=BERLIN) - timedelta(hours=1))
    rollup.fold_changed_jobs()   # the first cycle reads everything

    assert rollup.fold_changed_jobs().looked_at == 0


def test_running_jobs_count_so_far_and_their_earlier_runs_too(team, alice, bob):
    now = datetime.now(tz=BERLIN).replace(microsecond=0)
    if now.hour < 3:
        pytest.skip("the runs below would start yesterday")
    Job.objects.create(owner=alice, team=team, name="r", state="RUNNING", start_time=now - timedelta(hours=1),
                       nodes=1, gpus_per_node=2, gpu_type="h100")
    waiting = Job.objects.create(owner=bob, team=team, name="w", state="PENDING", nodes=1, gpus_per_node=4,
                                 gpu_type="h100", restart_count=1)
    run(waiting, 0, now - timedelta(hours=2), 0.5, gpus=4)   # requeued: 2 GPU-h, finished work

    usage = team_usage(team, now=now)

    assert usage.running_gpus == 2
    assert usage.running_gpu_hours == pytest.approx(2)
    assert usage.gpu_hours == pytest.approx(4)
    assert usage.by_user == pytest.approx({"alice": 2, "bob": 2})
    assert daily_series(team, now=now)[-1].cumulative == pytest.approx(4)


def test_over_budget_takes_the_policys_kind(team, alice):
    TeamPolicy.objects.create(team=team, gpu_hours_budget=5, over_budget=TeamPolicy.OverBudget.SOFT)
    finished(team, alice, start=local(2026, 11, 10, 8), hours=1, gpus=4)
    fold_all()
    assert team_usage(team, now=local(2026, 11, 20)).over_budget == ""

    finished(team, alice, start=local(2026, 11, 11, 8), hours=1, gpus=1)
    fold_all()
    usage = team_usage(team, now=local(2026, 11, 20))
    assert usage.over_budget == "soft" and usage.left == pytest.approx(0)


def test_rebuild_gives_the_same_figures(team, alice, bob):
    finished(team, alice, start=local(2026, 11, 3, 23), hours=3, gpus=2)
    job = finished(team, bob, start=local(2026, 11, 4, 10), hours=1, gpus=1, restarts=1)
    run(job, 0, local(2026, 11, 4, 8), 1, gpus=1)
    rollup.fold_changed_jobs()
    before = team_usage(team, now=local(2026, 11, 20))

    assert rollup.rebuild() == 2
    after = team_usage(team, now=local(2026, 11, 20))

    assert after.gpu_hours == pytest.approx(before.gpu_hours) == pytest.approx(8)
    assert after.by_day == before.by_day


def test_beat_folds_often_enough_for_the_60_s_promise(settings):
    entry = settings.CELERY_BEAT_SCHEDULE["fold-usage"]
    assert entry["task"] == fold_usage_task.name and entry["schedule"] <= 30


def test_the_command_rebuilds_and_says_how_many(team, alice):
    finished(team, alice, start=local(2026, 11, 3, 10), hours=1, gpus=2)
    out = StringIO()
    call_command("rebuild_usage", stdout=out)
    assert "from 1 finished jobs" in out.getvalue()
    assert team_usage(team, now=local(2026, 11, 20)).gpu_hours == pytest.approx(2)
