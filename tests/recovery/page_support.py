"""Shared rows for the recovery page and metric tests: a requeued job with its runs."""

from __future__ import annotations

from datetime import datetime, timedelta

from portal.jobs.models import Job
from portal.recovery.models import Attempt
from tests.jobs.views_support import make_job


def attempt(job: Job, number: int, start: datetime, minutes: float, **fields) -> Attempt:
    """A run of `job` from `start` lasting `minutes`, as the recovery code records it."""
    defaults = {"gpus": job.nodes * job.gpus_per_node, "nodes_list": job.nodes_list}
    return Attempt.objects.create(job=job, number=number, started_at=start,
                                  ended_at=start + timedelta(minutes=minutes), **{**defaults, **fields})


def requeued_job(owner, team, t0: datetime, **fields) -> tuple[Job, Attempt, Attempt]:
    """4 GPUs. Run 1: 60 min, ended by XID 79 on gpu03, 10 min since its checkpoint (40 GPU-min lost),
    requeued; run 2: 60 min on gpu05, finished. Submitted at t0, ended at t0 + 140 min."""
    job = make_job(owner, team, name="llama-pretrain", state="COMPLETED", slurm_job_id=4242, nodes=1,
                   gpus_per_node=4, nodes_list="gpu05", submit_time=t0, start_time=t0 + timedelta(minutes=80),
                   end_time=t0 + timedelta(minutes=140), exit_code=0, restart_count=1, auto_requeues=1,
                   checkpoint_dir="", **fields)
    first = attempt(job, 0, t0 + timedelta(minutes=10), 60, nodes_list="gpu03", outcome="requeued",
                    failure_class="infrastructure", cause="fatal_finding", failed_node="gpu03",
                    detail="GPU 2 reported XID 79 (fell off the bus)", lost_gpu_s=4 * 600,
                    last_checkpoint="/ckpt/step-1200", last_checkpoint_at=t0 + timedelta(minutes=60))
    second = attempt(job, 1, t0 + timedelta(minutes=80), 60, nodes_list="gpu05", outcome="succeeded",
                     resumed_from="/ckpt/step-1200")
    return job, first, second
