"""The job page: timeline, plain-word reasons, queue position from Slurm, accounting, live status."""

from __future__ import annotations

from datetime import timedelta

import pytest
from django.test import override_settings
from django.utils import timezone

from portal.jobs.models import Job, JobEvent
from portal.slurm import gateway
from portal.slurm.types import JobSpec
from tests.conftest import wait_until
from tests.jobs.views_support import build_world, cancel_all, client_for, home, make_job

pytestmark = pytest.mark.django_db


@pytest.fixture
def world(make_user):
    return build_world(make_user)


@pytest.fixture
def slurm_jobs(slurm_accounts):
    made: list[tuple[str, int]] = []
    yield made
    cancel_all(made)


def _held_job(user: str, unique: str, **extra) -> int:
    spec = JobSpec(name=f"ui-{unique}", account="vision", script="#!/bin/bash\nsleep 60\n",
                   working_dir=str(home(user)), stdout="/dev/null", time_limit_min=5, **extra)
    return gateway.submit_job(user, spec)


def test_it_shows_the_timeline_with_requeues(world):
    t0 = timezone.now() - timedelta(minutes=30)
    job = make_job(world["alice"], world["vision"], name="flaky", state="RUNNING", restart_count=2,
                   submit_time=t0, start_time=t0 + timedelta(minutes=20))
    for minutes, name, detail in [(1, "RUNNING", "on gpu03"), (5, "REQUEUED", "node failure"),
                                  (6, "PENDING", "BeginTime"), (20, "RUNNING", "on gpu05")]:
        event = JobEvent.objects.create(job=job, kind="state", name=name, detail=detail)
        JobEvent.objects.filter(pk=event.pk).update(at=t0 + timedelta(minutes=minutes))
    html = client_for(world["alice"]).get(f"/jobs/{job.pk}/").content.decode()
    assert "requeued \u00d72" in html
    timeline = html[html.index('class="timeline"'):]
    positions = [timeline.index(text) for text in ("Submitted", "on gpu03", "node failure", "BeginTime", "on gpu05")]
    assert positions == sorted(positions)


def test_a_waiting_job_explains_why_in_plain_words(world):
    job = make_job(world["alice"], world["vision"], state="PENDING", reason="AssocGrpGRES", start_time=None)
    html = client_for(world["alice"]).get(f"/jobs/{job.pk}/").content.decode()
    assert "Your team is using all the GPUs its limit allows at once" in html
    assert "AssocGrpGRES" not in html.split("Why it waits")[1][:200]


def test_a_finished_job_shows_its_accounting_and_stops_polling(world):
    now = timezone.now()
    job = make_job(world["alice"], world["vision"], state="COMPLETED", exit_code=0, end_time=now,
                   elapsed_s=3725, cpu_time_s=7450, max_rss_kb=2 * 1024 * 1024, accounted=True)
    html = client_for(world["alice"]).get(f"/jobs/{job.pk}/").content.decode()
    assert ">Completed<" in html
    assert "1h 02m" in html and "2h 04m" in html and "2.0\xa0GB" in html  # filesizeformat uses a no-break space
    status = html[html.index('id="job-status"'):]
    assert "hx-trigger" not in status[:200]


def test_the_status_partial_polls_until_the_job_is_accounted(world):
    job = make_job(world["alice"], world["vision"], state="RUNNING", slurm_job_id=999_997)
    client = client_for(world["alice"])
    first = client.get(f"/jobs/{job.pk}/status/")
    assert b"<html" not in first.content and b'hx-trigger="every 2s' in first.content
    assert b'id="job-audit" class="card" hx-swap-oob="true"' in first.content
    Job.objects.filter(pk=job.pk).update(state="FAILED", exit_code=3, end_time=timezone.now())
    after = client.get(f"/jobs/{job.pk}/status/").content.decode()
    assert ">Failed<" in after and "exit code 3" in after
    assert 'hx-trigger="every 2s' in after  # still waiting for sacct
    Job.objects.filter(pk=job.pk).update(accounted=True, elapsed_s=10, cpu_time_s=10)
    assert b'hx-trigger="every 2s' not in client.get(f"/jobs/{job.pk}/status/").content


@pytest.mark.slow
def test_a_job_waiting_for_resources_shows_slurms_priority_factors(world, slurm_jobs, unique):
    # Two whole-node jobs fill the small cpu partition, so the third has to wait its turn.
    spec = JobSpec(name=f"ui-fill-{unique}", account="vision", script="#!/bin/bash\nsleep 60\n",
                   working_dir=str(home("alice")), stdout="/dev/null", partition="cpu", cpus_per_task=32,
                   time_limit_min=2)
    slurm_jobs.extend(("alice", gateway.submit_job("alice", spec)) for _ in range(3))

    def waiting_with_factors():
        # Right after submission all three are PENDING; wait for the one Slurm decided cannot start.
        return next((sid for _, sid in slurm_jobs if gateway.get_job(sid).reason in {"Resources", "Priority"}
                     and gateway.job_priority(sid)), None)
    waiting = wait_until(waiting_with_factors, timeout=20, what="a queued job with priority factors")
    job = make_job(world["alice"], world["vision"], state="PENDING", reason="Resources", start_time=None,
                   slurm_job_id=waiting, partition="cpu")
    html = client_for(world["alice"]).get(f"/jobs/{job.pk}/").content.decode()
    queue = html[html.index("Place in the queue"):html.index("Timeline")]
    assert "Fair share" in queue and "Age" in queue and "%</td>" in queue
    # Its place among the waiting jobs; the fillers ahead of it (if still waiting) are alice's own.
    assert 'id="queue-position"' in queue and "Why it waits:" in html
    assert "used less of their share" not in html or "other teams" in html


def test_a_held_job_offers_release_not_hold(world, slurm_jobs, unique):
    slurm_id = _held_job("alice", unique, hold=True)
    slurm_jobs.append(("alice", slurm_id))
    job = make_job(world["alice"], world["vision"], state="PENDING", reason="JobHeldUser", start_time=None,
                   slurm_job_id=slurm_id)
    html = client_for(world["alice"]).get(f"/jobs/{job.pk}/").content.decode()
    assert "Held by you, your team lead, or the portal after repeated failures" in html
    assert f'action="/jobs/{job.pk}/release/"' in html and f'action="/jobs/{job.pk}/hold/"' not in html
    assert "no priority factors" in html


def test_the_page_still_works_when_slurm_is_not_answering(world, slurm_jobs, settings, unique):
    slurm_id = _held_job("alice", unique, hold=True)
    slurm_jobs.append(("alice", slurm_id))
    job = make_job(world["alice"], world["vision"], state="PENDING", reason="JobHeldUser", start_time=None,
                   slurm_job_id=slurm_id)
    unreachable = {**settings.SLURM, "REST_URL": "http://127.0.0.1:1", "TIMEOUT_S": 1.0}
    local_cache = {"default": {"BACKEND": "django.core.cache.backends.locmem.LocMemCache"}}
    with override_settings(SLURM=unreachable, CACHES=local_cache):
        resp = client_for(world["alice"]).get(f"/jobs/{job.pk}/")
    assert resp.status_code == 200
    assert b"Slurm is not answering" in resp.content


def test_clone_and_edit_opens_the_form_prefilled(world, slurm_accounts):
    job = make_job(world["alice"], world["vision"], name="sweep-7", script="#!/bin/bash\necho lr=0.1\n",
                   cpus_per_task=6, time_limit_min=42)
    client = client_for(world["alice"])
    assert f'href="/jobs/new/?clone={job.pk}"'.encode() in client.get(f"/jobs/{job.pk}/").content
    form = client.get("/jobs/new/", {"clone": job.pk}).context["form"]
    assert form.initial["name"] == "sweep-7 (copy)"
    assert form.initial["script"] == "#!/bin/bash\necho lr=0.1\n"
    assert (form.initial["cpus_per_task"], form.initial["time_limit_min"]) == (6, 42)
