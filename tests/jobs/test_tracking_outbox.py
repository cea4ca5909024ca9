"""Exactly-once submission, through real crashes: the outbox row, Slurm's comment and the tracker.

A portal process is really killed (SIGKILL) between Slurm's accept and the database commit;
it runs the real API and the real gateway against the real Slurm (tests/jobs/submit_child.py).
Then the tracker must fill in the row, once, and Slurm must hold exactly one job with its UUID.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from django.db import connection
from django.utils import timezone

from portal.api.services import issue_token
from portal.jobs import cluster_info, tracking
from portal.jobs.models import Job
from portal.jobs.services import portal_comment
from portal.slurm import gateway
from portal.slurm.types import FINISHED_STATES
from tests.api.conftest import ApiClient
from tests.conftest import ROOT, wait_until
from tests.jobs.test_tracking import SLEEPER, cycle_until, fresh_tracker, sbatch, slurm_jobs, vision  # noqa: F401
from tests.slurm.helpers import spec_for

pytestmark = pytest.mark.usefixtures("slurm_accounts", "fresh_tracker")

CLOSED_PORT = "http://127.0.0.1:1"  # nothing listens there: slurmrestd "down" for this process only


def comment_jobs(comment: str) -> list[int]:
    """Every job Slurm holds with this comment (squeue -t all: queued and recently ended)."""
    out = subprocess.run(["squeue", "-h", "-a", "-t", "all", "-o", "%i|%k"], capture_output=True, text=True,
                         check=True).stdout
    return sorted(int(i) for i, _, c in (line.partition("|") for line in out.splitlines()) if c == comment)


class Child:
    """A separate portal process submitting through the API; it pauses once Slurm has accepted."""

    def __init__(self, user, unique: str, tmp_path: Path, **env):
        self.key, self.stop, self.go = f"crash-{unique}", tmp_path / "accepted", tmp_path / "go"
        self.body = {"name": f"crash-{unique}", "team": "vision", "script": SLEEPER, "hold": True,
                     "time_limit_min": 5}
        token, _ = issue_token(user=user, name="crash")
        cluster_info.partitions()  # in Redis for the child's form validation
        env = {**os.environ, "PORTAL_DB_NAME": connection.settings_dict["NAME"], **env}
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "tests.jobs.submit_child", token, self.key, json.dumps(self.body),
             str(self.stop), str(self.go)], cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL,
            text=True)

    def accepted(self) -> int:
        """Slurm's job id, once Slurm has accepted the job and the child is stopped before its commit."""
        return int(wait_until(lambda: self.stop.exists() and self.stop.read_text(), timeout=60,
                              what="Slurm to accept the child's submission"))

    def crash(self) -> None:
        self.proc.kill()  # SIGKILL: no finally, no atexit, no commit
        self.proc.wait(timeout=10)

    def resume(self) -> dict:
        self.go.touch()
        out, _ = self.proc.communicate(timeout=60)
        return json.loads(out.strip().splitlines()[-1])

    def row(self) -> Job:
        return Job.objects.get(idempotency_key=self.key)


@pytest.fixture
def child(alice, vision, unique, tmp_path, slurm_jobs):  # noqa: F811
    made: list[Child] = []

    def start(**env) -> Child:
        made.append(Child(alice, unique, tmp_path, **env))
        return made[-1]
    yield start
    for c in made:
        if c.proc.poll() is None:
            c.crash()


@pytest.mark.django_db(transaction=True)
def test_a_submit_killed_between_slurms_accept_and_the_commit_is_recovered_once(child, slurm_jobs):  # noqa: F811
    portal = child()
    slurm_id = portal.accepted()
    slurm_jobs.append(slurm_id)
    portal.crash()

    row = portal.row()
    assert (row.slurm_job_id, row.state) == (None, "")  # the crash left the outbox row as written

    cycle_until(lambda: Job.objects.get(pk=row.pk).slurm_job_id == slurm_id, what="the tracker to adopt the job")
    row.refresh_from_db()
    assert (row.state, row.reason, row.adopted) == ("PENDING", "JobHeldUser", False)
    assert comment_jobs(portal_comment(row)) == [slurm_id]
    assert Job.objects.filter(slurm_job_id=slurm_id).count() == 1


@pytest.mark.django_db(transaction=True)
def test_a_same_key_retry_after_the_crash_adopts_the_job_instead_of_sending_it_again(child, slurm_jobs, alice):  # noqa: F811
    portal = child(SLURM_TIMEOUT="3")  # the dead request's sending claim runs out after 3 x 3 s
    slurm_id = portal.accepted()
    slurm_jobs.append(slurm_id)
    portal.crash()
    client = ApiClient(alice)

    def retry():
        return client.post("/jobs", portal.body, headers={"Idempotency-Key": portal.key})
    early = retry()  # the crashed request may, for all the portal knows, still be talking to Slurm
    assert early.status_code == 503 and early.json()["id"] == portal.row().pk
    late = wait_until(lambda: (r := retry()).status_code == 200 and r, timeout=30, interval=1,
                      what="the claim of the crashed request to run out")

    assert (late.json()["id"], late.json()["slurm_job_id"]) == (portal.row().pk, slurm_id)
    assert comment_jobs(portal_comment(portal.row())) == [slurm_id]


@pytest.mark.django_db(transaction=True)
def test_the_tracker_adopting_first_is_neither_duplicated_nor_undone_by_the_slow_request(child, slurm_jobs):  # noqa: F811
    portal = child()
    slurm_id = portal.accepted()
    slurm_jobs.append(slurm_id)
    row = portal.row()
    cycle_until(lambda: Job.objects.get(pk=row.pk).slurm_job_id == slurm_id, what="the tracker to adopt the job")
    subprocess.run(["scancel", str(slurm_id)], check=True)
    cycle_until(lambda: Job.objects.get(pk=row.pk).state == "CANCELLED", what="the cancel to reach the row")
    before = Job.objects.values().get(pk=row.pk)

    answer = portal.resume()  # the request now records the id the tracker already wrote

    assert answer["status"] == 201
    assert (answer["body"]["id"], answer["body"]["slurm_job_id"], answer["body"]["state"]) == \
        (row.pk, slurm_id, "CANCELLED")
    after = Job.objects.values().get(pk=row.pk)
    changed = {k for k in before if before[k] != after[k]} - {"updated_at", "sending_until"}
    assert changed == set(), f"the late request overwrote {changed}"
    assert Job.objects.filter(slurm_job_id=slurm_id).count() == 1
    assert comment_jobs(portal_comment(row)) == [slurm_id]


@pytest.mark.django_db
def test_a_row_older_than_the_grace_whose_job_is_queued_is_recovered_not_failed(alice, vision, unique,  # noqa: F811
                                                                               slurm_jobs):  # noqa: F811
    row = Job.objects.create(owner=alice, team=vision, name=f"trk-{unique}", script=SLEEPER)
    Job.objects.filter(pk=row.pk).update(created_at=timezone.now() - tracking.OUTBOX_GRACE - timedelta(minutes=1))
    slurm_id = gateway.submit_job("alice", spec_for("alice", unique, SLEEPER, hold=True, comment=portal_comment(row)))
    slurm_jobs.append(slurm_id)

    result = tracking.track_jobs()  # a fresh memo: a full reconcile, which also settles the outbox

    row.refresh_from_db()
    assert result.submit_failed == 0
    assert (row.slurm_job_id, row.state, row.reason) == (slurm_id, "PENDING", "JobHeldUser")


def _purged_portal_job() -> tuple[int, str, datetime]:
    """A portal job that ran and that slurmctld no longer holds: only sacct still knows it."""
    out = subprocess.run(["sacct", "-a", "-X", "-n", "-P", "-S", "now-2days", "-o", "JobIDRaw,State,Submit,Comment"],
                         capture_output=True, text=True, check=True).stdout
    queued = {job.job_id for job in gateway.sweep_jobs().jobs}
    for line in reversed(out.splitlines()):
        raw_id, state, submit, comment = line.split("|", 3)
        if comment.startswith("portal:") and raw_id.isdigit() and int(raw_id) not in queued \
                and state.split()[0] in FINISHED_STATES:
            return int(raw_id), comment, datetime.fromisoformat(submit).astimezone(UTC)
    pytest.skip("no purged portal job with its comment in sacct: the cluster must run with "
                "AccountingStoreFlags=job_comment (cluster/templates/slurm.conf) for 5 minutes first")


@pytest.mark.late
@pytest.mark.django_db
def test_a_job_that_ran_and_was_purged_before_a_full_sweep_is_recovered_from_sacct_not_failed(alice, vision):  # noqa: F811
    slurm_id, comment, submitted = _purged_portal_job()
    row = Job.objects.create(owner=alice, team=vision, name="purged", script=SLEEPER,
                             uuid=comment.removeprefix("portal:"))
    Job.objects.filter(pk=row.pk).update(created_at=submitted)  # the portal stopped right after writing it

    result = tracking.track_jobs()

    row.refresh_from_db()
    assert result.submit_failed == 0
    assert row.slurm_job_id == slurm_id
    assert row.state in FINISHED_STATES and row.accounted


@pytest.mark.django_db
def test_a_row_slurm_never_received_is_failed_after_sacct_was_asked_too(alice, vision, unique):  # noqa: F811
    """A row no one ever sent, past its grace, is still marked never queued after Slurm was asked."""
    row = Job.objects.create(owner=alice, team=vision, name=f"trk-{unique}", script=SLEEPER)
    Job.objects.filter(pk=row.pk).update(created_at=timezone.now() - timedelta(minutes=10))

    result = tracking.track_jobs()

    row.refresh_from_db()
    assert result.submit_failed == 1 and row.state == tracking.SUBMIT_FAILED


@pytest.mark.django_db
def test_a_row_still_being_sent_is_not_failed(alice, vision, unique):  # noqa: F811
    """A request still waiting for Slurm's answer holds the row: the tracker must not call it lost."""
    row = Job.objects.create(owner=alice, team=vision, name=f"trk-{unique}", script=SLEEPER,
                             sending_until=timezone.now() + timedelta(seconds=30))
    Job.objects.filter(pk=row.pk).update(created_at=timezone.now() - timedelta(minutes=3))

    result = tracking.track_jobs()

    row.refresh_from_db()
    assert result.submit_failed == 0 and row.state == ""


# ---------------------------------------------------------------- tracking without slurmrestd

@pytest.mark.django_db
@pytest.mark.usefixtures("vision")
def test_tracking_goes_on_with_squeue_while_slurmrestd_is_down(unique, slurm_jobs, monkeypatch, settings):  # noqa: F811
    monkeypatch.setattr(tracking, "BUSY_WINDOW_S", 0)  # go quiet at once: the next cycles probe first
    monkeypatch.setattr(tracking, "PROBE_MAX_JOBS", 1_000_000)  # however full the shared queue is
    slurm_id = sbatch("alice", "vision", f"trk-{unique}", "--hold")
    slurm_jobs.append(slurm_id)
    tracking.track_jobs()
    assert Job.objects.get(slurm_job_id=slurm_id).state == "PENDING"
    settings.SLURM = {**settings.SLURM, "REST_URL": CLOSED_PORT}

    subprocess.run(["scancel", str(slurm_id)], check=True)
    result = tracking.track_jobs()

    assert result.queries[:2] == ["probe", "sweep"]  # the probe failed, squeue answered
    cycle_until(lambda: Job.objects.get(slurm_job_id=slurm_id).state == "CANCELLED",
                what="the cancel to reach the row without slurmrestd", timeout=20)
