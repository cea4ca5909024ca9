"""Quota waits in plain words: with the team's numbers on the job page and in the API's job
detail, precise generic words everywhere else (the list, teams without a policy)."""

from __future__ import annotations

from datetime import timedelta

import pytest
from django.utils import timezone

from portal.api.services import issue_token
from portal.jobs.explain import REASON_WORDS, job_reason_words, reason_words
from portal.teams.models import TeamPolicy
from tests.jobs.views_support import build_world, client_for, make_job

pytestmark = pytest.mark.django_db

QUOTA_REASONS = ("AssocGrpGRES", "QOSGrpGRES", "AssocGrpGRESMinutes", "AssocGrpGRESRunMinutes",
                 "AssocMaxJobsLimit", "QOSMaxGRESPerUser", "AssocGrpJobsLimit", "QOSGrpGRESRunMinutes",
                 "QOSMaxJobsPerUserLimit", "AssocMaxGRESPerJob", "QOSMaxGRESPerJob", "InvalidQOS")


@pytest.fixture
def world(make_user):
    return build_world(make_user)


def _waiting(world, reason: str, **fields):
    return make_job(world["alice"], world["vision"], state="PENDING", reason=reason, start_time=None, **fields)


def _running(world, gpus: int, gpu_type: str = "h100") -> None:
    make_job(world["bob"], world["vision"], gpus_per_node=gpus, gpu_type=gpu_type)


def test_every_quota_reason_has_its_own_words():
    for reason in QUOTA_REASONS:
        assert reason in REASON_WORDS, reason
    assert len({REASON_WORDS[r] for r in QUOTA_REASONS}) == len(QUOTA_REASONS)


def test_a_gpu_cap_wait_gives_the_teams_numbers(world):
    TeamPolicy.objects.create(team=world["vision"], max_gpus=8)
    _running(world, 4)
    _running(world, 4)
    job = _waiting(world, "AssocGrpGRES", gpus_per_node=2)
    assert job_reason_words(job) == ("Your team vision is using 8 of its 8 GPUs; this job starts when some of "
                                     "them finish.")


def test_a_type_cap_wait_names_the_type(world):
    TeamPolicy.objects.create(team=world["vision"], max_gpus=32, max_gpus_by_type={"h100": 4})
    _running(world, 4)
    job = _waiting(world, "AssocGrpGRES", gpus_per_node=1, gpu_type="h100")
    assert job_reason_words(job) == ("Your team vision is using 4 of its 4 h100 GPUs; this job starts when some "
                                     "of them finish.")


def _use_up(world, mode: str) -> None:
    end = timezone.now()
    make_job(world["bob"], world["vision"], gpus_per_node=4, state="COMPLETED",
             start_time=end - timedelta(seconds=30), end_time=end)
    TeamPolicy.objects.create(team=world["vision"], gpu_hours_budget=0.01, over_budget=mode)


def test_a_used_up_hard_budget_explains_the_run_minutes_wait(world):
    _use_up(world, "hard")
    words = job_reason_words(_waiting(world, "AssocGrpGRESRunMinutes"))
    assert words.startswith("Your team vision has used 0.03 of 0.01 GPU-hours this month (resets ")
    assert "new GPU jobs do not start" in words and "running jobs keep running" in words


def test_a_used_up_soft_budget_explains_the_low_priority(world):
    _use_up(world, "soft")
    words = job_reason_words(_waiting(world, "Priority"))
    assert words.startswith("Your team vision has used 0.03 of 0.01 GPU-hours this month")
    assert "low priority, behind other teams' jobs" in words


def test_without_a_policy_or_a_used_up_budget_the_generic_words_stay(world):
    assert job_reason_words(_waiting(world, "AssocGrpGRES")) == reason_words("AssocGrpGRES")
    TeamPolicy.objects.create(team=world["vision"], gpu_hours_budget=1000, over_budget="hard")
    assert job_reason_words(_waiting(world, "AssocGrpGRESRunMinutes")) == reason_words("AssocGrpGRESRunMinutes")
    assert job_reason_words(make_job(world["alice"], world["vision"])) == ""   # running: nothing to explain


def test_the_api_detail_and_the_job_page_give_the_numbers_and_the_list_the_words(world):
    TeamPolicy.objects.create(team=world["vision"], max_gpus=4)
    _running(world, 4)
    job = _waiting(world, "AssocGrpGRES")
    token, _ = issue_token(user=world["alice"], name="words")
    client = client_for(world["alice"])
    auth = {"Authorization": f"Bearer {token}"}
    detail = client.get(f"/api/v1/jobs/{job.pk}", headers=auth).json()
    assert detail["reason"] == "AssocGrpGRES"
    assert detail["reason_text"] == ("Your team vision is using 4 of its 4 GPUs; this job starts when some of "
                                     "them finish.")
    listed = client.get("/api/v1/jobs", {"state": "PENDING"}, headers=auth).json()["results"]
    assert [row["reason_text"] for row in listed] == [reason_words("AssocGrpGRES")]
    assert "is using 4 of its 4 GPUs" in client.get(f"/jobs/{job.pk}/").content.decode()
