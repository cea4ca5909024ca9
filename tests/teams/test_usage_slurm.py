"""GPU-hours of a real GPU job, compared with what sacct itself says.

A plain sbatch job (adopted by the real tracker) on the shared cluster, under a `qt-` account of
its own so no one else's jobs land in the team; the rollup runs as the real Celery task.
"""

from __future__ import annotations

import subprocess
import time

import pytest

from portal.jobs.models import Job
from portal.quotas.usage import team_usage
from portal.slurm import gateway
from portal.teams.models import UsageDay
from tests.jobs.test_submit_contract import job_tres
from tests.jobs.test_tracking import cycle_until, fresh_tracker, sbatch, slurm_jobs  # noqa: F401
from workers.tasks.teams import fold_usage_task

pytestmark = [pytest.mark.usefixtures("fresh_tracker"), pytest.mark.slow]


def sacct_gpu_hours(slurm_id: int) -> float:
    """ElapsedRaw x the allocated GPUs (AllocTRES gres/gpu), as sacct reports the job."""
    out = subprocess.run(["sacct", "-a", "-X", "-n", "-P", "-S", "now-10minutes", "-j", str(slurm_id),
                          "-o", "ElapsedRaw,AllocTRES"], check=True, capture_output=True, text=True).stdout
    elapsed, tres = out.strip().splitlines()[-1].split("|")
    gpus = dict(item.split("=") for item in tres.split(",") if "=" in item).get("gres/gpu", "0")
    return int(elapsed) * int(gpus) / 3600


def slurmctld_gpu_hours(slurm_id: int) -> float:
    """RunTime x the allocated GPUs as slurmctld holds a running job (sacct may still show it
    PENDING with no TRES: slurmdbd records the start a moment later)."""
    out = subprocess.run(["scontrol", "show", "job", "-o", str(slurm_id)], check=True, capture_output=True,
                         text=True).stdout
    fields = dict(item.split("=", 1) for item in out.split() if "=" in item)
    hours, minutes, seconds = (int(part) for part in fields["RunTime"].split(":"))
    tres = job_tres(fields)
    return (hours * 3600 + minutes * 60 + seconds) * int(tres["gres/gpu"]) / 3600


@pytest.fixture
def slurm_team(qt_team):
    """qt_team as a Slurm account that alice may submit to (removed afterwards by qt_names)."""
    gateway.ensure_account(qt_team.name)
    gateway.ensure_association("alice", qt_team.name)
    return qt_team


def test_a_real_gpu_jobs_hours_match_sacct_running_and_finished(slurm_team, celery_settled, slurm_jobs):  # noqa: F811
    slurm_id = sbatch("alice", slurm_team.name, "usage-real", "-p", "gpu", "--gres=gpu:h100:2", wrap="sleep 12")
    slurm_jobs.append(slurm_id)

    cycle_until(lambda: Job.objects.filter(slurm_job_id=slurm_id, state="RUNNING").exists(),
                what="the job running", timeout=120)
    time.sleep(2)
    slurm_before = slurmctld_gpu_hours(slurm_id)
    running = team_usage(slurm_team)
    slurm_after = slurmctld_gpu_hours(slurm_id)
    assert running.running_gpus == 2
    # Between slurmctld's readings either side; RunTime is whole seconds (1 s x 2 GPUs of slack).
    assert slurm_before - 2 / 3600 <= running.running_gpu_hours <= slurm_after + 2 / 3600
    assert running.gpu_hours == running.running_gpu_hours

    cycle_until(lambda: Job.objects.filter(slurm_job_id=slurm_id, accounted=True).exists(),
                what="sacct's figures for the job", timeout=120)
    expected = sacct_gpu_hours(slurm_id)
    assert expected > 0

    # Before the rollup has folded it: counted from its row, nothing missing meanwhile.
    before = team_usage(slurm_team)
    assert before.gpu_hours == pytest.approx(expected, rel=1e-9)
    assert before.running_gpus == 0 and before.running_gpu_hours == 0

    fold_usage_task.delay().get(timeout=60)

    after = team_usage(slurm_team)
    assert UsageDay.objects.filter(team=slurm_team).exists()
    assert after.gpu_hours == pytest.approx(expected, rel=1e-9)   # folded, and counted once
    assert after.by_user == pytest.approx({"alice": expected})
    assert after.by_type == pytest.approx({"h100": expected})
    assert after.by_day[-1].cumulative == pytest.approx(expected)
