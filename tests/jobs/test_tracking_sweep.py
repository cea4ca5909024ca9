"""The tracker's queue sweep (squeue -O) reads what users see: names, exit codes, output paths."""

from __future__ import annotations

import subprocess
from datetime import UTC, datetime, timedelta

import pytest

from portal.slurm import gateway, parse
from tests.slurm.helpers import home


def sweep_line(**values: str) -> str:
    row = {"JobID": "42", "State": "RUNNING", "Reason": "None", "NodeList": "gpu01",
           "SubmitTime": "2026-11-21T10:00:00", "StartTime": "2026-11-21T10:00:05", "EndTime": "N/A",
           "exit_code": "0", "RestartCnt": "0", "UserName": "alice", "Account": "vision", "Partition": "gpu",
           "NumNodes": "1", "cpus-per-task": "8", "MinMemory": "32G", "tres-per-node": "gres:gpu:h100:4",
           "TimeLimit": "1:00:00", "Requeue": "1", "StdOut": "/home/alice/%x-%j.out",
           "StdErr": "/home/alice/%x-%5j.err", "WorkDir": "/home/alice", "Name": "train", "Comment": "(null)",
           **values}
    return parse.SEP.join(row[name] for name in parse.TRACK_FIELDS)


def test_a_failed_job_shows_its_exit_code_and_a_killed_one_its_signal_as_a_shell_would():
    jobs, _ = parse.jobs_from_tracking_sweep("\n".join([
        sweep_line(JobID="1", State="FAILED", exit_code="768", EndTime="2026-11-21T10:01:00"),
        sweep_line(JobID="2", State="CANCELLED", exit_code="15", EndTime="2026-11-21T10:01:00"),
        sweep_line(JobID="3", State="CANCELLED", exit_code="0", NodeList="", EndTime="2026-11-21T10:01:00"),
        sweep_line(JobID="4", State="RUNNING", exit_code="0"),
    ]))
    codes = {job.job_id: job.exit_code for job in jobs}
    assert codes == {1: 3, 2: 143, 3: None, 4: None}  # 3 never ran; 4 has not ended
    never_ran = next(job for job in jobs if job.job_id == 3)
    assert never_ran.start_time is None


def test_slurm_24_11_exit_codes_read_the_same():
    # 24.11's squeue prints "code:signal" (recorded from 24.11.5: `exit 3`, `kill -9 $$`, scancel).
    jobs, _ = parse.jobs_from_tracking_sweep("\n".join([
        sweep_line(JobID="1", State="FAILED", exit_code="3:0", EndTime="2026-11-21T10:01:00"),
        sweep_line(JobID="2", State="FAILED", exit_code="0:9", EndTime="2026-11-21T10:01:00"),
        sweep_line(JobID="3", State="COMPLETED", exit_code="0:0", EndTime="2026-11-21T10:01:00"),
        sweep_line(JobID="4", State="CANCELLED", exit_code="0:15", EndTime="2026-11-21T10:01:00"),
        sweep_line(JobID="5", State="FAILED", exit_code="x:1", EndTime="2026-11-21T10:01:00"),
    ]))
    assert {job.job_id: job.exit_code for job in jobs} == {1: 3, 2: 137, 3: 0, 4: 143, 5: None}


def test_output_paths_are_expanded_so_the_output_viewer_finds_the_file():
    [job], _ = parse.jobs_from_tracking_sweep(sweep_line(JobID="1234"))
    assert job.stdout == "/home/alice/train-1234.out"
    assert job.stderr == "/home/alice/train-01234.err"
    assert parse.expand_output_path("/o/100%%-%u.log", job_id=7, user="bob", name="x") == "/o/100%-bob.log"


def test_requested_resources_are_read_for_adopted_jobs():
    [job], _ = parse.jobs_from_tracking_sweep(sweep_line())
    assert (job.gres_per_node, job.cpus_per_task, job.mem_mb, job.time_limit_min) == ("gpu:h100:4", 8, 32768, 60)
    assert job.restarts == 0 and job.requeue


def test_jobs_that_ended_before_the_last_sweep_are_counted_but_not_parsed():
    text = "\n".join([sweep_line(JobID="1", State="COMPLETED", EndTime="2026-11-21T09:00:00"),
                      sweep_line(JobID="2", State="COMPLETED", EndTime="2026-11-21T11:00:00"),
                      sweep_line(JobID="3", State="PENDING"), "garbage"])
    cutoff = datetime.fromisoformat("2026-11-21T10:00:00").astimezone(UTC)  # squeue prints local time
    jobs, ids = parse.jobs_from_tracking_sweep(text, skip_ended_before=cutoff)
    assert ids == {1, 2, 3}
    assert [job.job_id for job in jobs] == [2, 3]


@pytest.mark.usefixtures("slurm_accounts")
def test_the_live_sweep_keeps_long_names_and_separators_intact(unique):
    name = f"a|b <c>, a name much longer than twenty characters {unique}"
    out = subprocess.run(["runuser", "-u", "alice", "--", "sbatch", "--parsable", "--hold", "-A", "vision",
                          "-J", name, "--comment", "x|y, z", "-t", "5", "-o", f"{home('alice')}/trk-%j.out",
                          "--wrap", "sleep 60"], capture_output=True, text=True, check=True, cwd=home("alice"))
    job_id = int(out.stdout.strip())
    try:
        sweep = gateway.sweep_jobs(skip_ended_before=datetime.now(UTC) - timedelta(minutes=1))
        [job] = [j for j in sweep.jobs if j.job_id == job_id]
        assert (job.name, job.comment, job.user, job.account) == (name, "x|y, z", "alice", "vision")
        assert (job.state, job.reason) == ("PENDING", "JobHeldUser")
        assert job.stdout == f"{home('alice')}/trk-{job_id}.out"
        assert job_id in sweep.queued_ids
    finally:
        subprocess.run(["scancel", str(job_id)], check=False)
