"""The job-list page cache follows the portal's real writers, not hand-made notices.

Each test caches erin's list page (erin has no jobs from other people's tests in the shared
queue), then changes her job only through a writer the portal runs: an API submit, the
tracker marking a submission lost, the tracker completing a job from sacct, a control. The
page lives for an hour here, so only the writer's notice can make the change show.
"""

from __future__ import annotations

from datetime import timedelta

import pytest
from django.utils import timezone

from portal.jobs import tracking
from portal.jobs.models import Job
from tests.jobs.test_tracking import cycle_until, fresh_tracker  # noqa: F401

pytestmark = pytest.mark.usefixtures("slurm_accounts", "fresh_tracker")


@pytest.fixture(autouse=True)
def _long_lived_pages(settings):
    settings.JOB_LIST_CACHE_SECONDS = 3600


def listed(client, name: str) -> dict | None:
    rows = [row for row in client.get("/jobs", limit=200).json()["results"] if row["name"] == name]
    return rows[0] if rows else None


@pytest.fixture
def erin_jobs():
    ids: list[int] = []
    yield ids
    if ids:
        import subprocess  # noqa: PLC0415
        subprocess.run(["scancel", *map(str, ids)], check=False, capture_output=True)


@pytest.mark.django_db
def test_a_submit_shows_in_the_cached_list(api, unique, erin_jobs):
    assert listed(api["erin"], f"c-{unique}") is None  # the page is cached now

    resp = api["erin"].post("/jobs", {"name": f"c-{unique}", "team": "nlp", "script": "#!/bin/bash\nsleep 60\n",
                                      "hold": True, "time_limit_min": 5})
    assert resp.status_code == 201
    erin_jobs.append(resp.json()["slurm_job_id"])

    row = listed(api["erin"], f"c-{unique}")
    assert row is not None and (row["state"], row["slurm_job_id"]) == ("PENDING", resp.json()["slurm_job_id"])


@pytest.mark.django_db
def test_a_submission_marked_lost_by_the_tracker_shows_in_the_cached_list(api, world, teams, unique):
    job = Job.objects.create(owner=world["erin"], team=teams["nlp"], name=f"c-{unique}", script="#!/bin/bash\n")
    Job.objects.filter(pk=job.pk).update(created_at=timezone.now() - tracking.OUTBOX_GRACE - timedelta(minutes=1))
    assert listed(api["erin"], f"c-{unique}")["state"] == ""

    assert tracking.track_jobs().submit_failed == 1

    assert listed(api["erin"], f"c-{unique}")["state"] == tracking.SUBMIT_FAILED


@pytest.mark.django_db
def test_a_completion_from_sacct_shows_in_the_cached_list(api, unique, erin_jobs):
    resp = api["erin"].post("/jobs", {"name": f"c-{unique}", "team": "nlp", "script": "#!/bin/bash\nsleep 1\n",
                                      "time_limit_min": 5, "partition": "cpu"})
    assert resp.status_code == 201
    erin_jobs.append(resp.json()["slurm_job_id"])
    pk = resp.json()["id"]

    cycle_until(lambda: Job.objects.get(pk=pk).state == "COMPLETED", what="the job to complete", timeout=120)
    assert listed(api["erin"], f"c-{unique}")["elapsed_s"] is None  # cached before sacct's figures
    cycle_until(lambda: Job.objects.get(pk=pk).accounted, what="sacct's figures", timeout=60)

    row = listed(api["erin"], f"c-{unique}")
    assert row["elapsed_s"] is not None and row["elapsed_s"] == Job.objects.get(pk=pk).elapsed_s
