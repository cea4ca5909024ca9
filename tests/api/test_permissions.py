"""Who sees and controls which jobs through the API: owner, team lead, admin; nobody else."""

from __future__ import annotations

import pytest

from portal.jobs.models import Job, JobEvent

OWNERS = {"alice": "vision", "bob": "vision", "erin": "nlp"}
# viewer -> owners whose jobs they may see (and control)
SEES = {
    "alice": {"alice"},
    "bob": {"bob"},                      # a teammate is not enough
    "carol": {"erin"},                   # lead of nlp
    "erin": {"erin"},
    "admin": {"alice", "bob", "erin"},
    "charlie": set(),                    # in no team
}


@pytest.fixture
def jobs(world, teams):
    return {owner: Job.objects.create(owner=world[owner], team=teams[team], name=f"{owner}-job",
                                      script="#!/bin/bash\ntrue\n")
            for owner, team in OWNERS.items()}


@pytest.mark.parametrize("viewer", sorted(SEES))
def test_the_list_shows_exactly_what_the_viewer_may_see(api, jobs, viewer):
    resp = api[viewer].get("/jobs")
    assert resp.status_code == 200
    assert {j["owner"] for j in resp.json()["results"]} == SEES[viewer]


@pytest.mark.parametrize("viewer", sorted(SEES))
@pytest.mark.parametrize("owner", sorted(OWNERS))
def test_detail_and_output_are_404_for_foreign_jobs(api, jobs, viewer, owner):
    job = jobs[owner]
    detail = api[viewer].get(f"/jobs/{job.id}")
    output = api[viewer].get(f"/jobs/{job.id}/output")
    if owner in SEES[viewer]:
        assert detail.status_code == 200
        assert output.status_code == 404 and "not reported an output file" in output.json()["detail"]
    else:
        assert detail.status_code == 404
        assert output.status_code == 404 and output.json()["detail"] == "Not found."


@pytest.mark.parametrize("action", ["cancel", "hold", "release", "requeue"])
@pytest.mark.parametrize("viewer", sorted(SEES))
def test_controls_on_foreign_jobs_are_404_and_never_reach_slurm(api, jobs, viewer, action):
    job = jobs["alice"]
    resp = api[viewer].post(f"/jobs/{job.id}/{action}")
    if "alice" in SEES[viewer]:
        assert resp.status_code == 403            # visible, but Slurm has not confirmed it yet
        assert "not confirmed" in resp.json()["detail"]
    else:
        assert resp.status_code == 404
    assert not JobEvent.objects.filter(job=job).exists()


def test_filters_and_cursor_pages(api, jobs, world, teams):
    for i in range(5):
        Job.objects.create(owner=world["alice"], team=teams["vision"], name=f"more-{i}", state="RUNNING")
    first = api["admin"].get("/jobs", limit=3).json()
    second = api["admin"].get("/jobs", limit=3, cursor=first["next_cursor"]).json()
    ids = [j["id"] for j in first["results"] + second["results"]]
    assert ids == sorted(ids, reverse=True) and len(set(ids)) == 6
    running = api["admin"].get("/jobs", state="running").json()["results"]
    assert {j["name"] for j in running} == {f"more-{i}" for i in range(5)}
    assert {j["owner"] for j in api["admin"].get("/jobs", team="nlp").json()["results"]} == {"erin"}
    oldest = api["admin"].get("/jobs", order="oldest", limit=1).json()["results"][0]
    assert oldest["name"] == "alice-job"


@pytest.mark.parametrize("params", [
    {"state": "EXPLODED"}, {"team": "<script>"}, {"cursor": "-1"}, {"limit": "100000"},
    {"cursor": str(2**64)}, {"owner": "a b"}, {"submitted_after": "yesterday"}, {"order": "random"},
])
def test_bad_list_parameters_are_a_clear_4xx(api, jobs, params):
    resp = api["alice"].get("/jobs", **params)
    assert 400 <= resp.status_code < 500
    assert resp.json()["detail"]


@pytest.mark.parametrize("path", ["/jobs/0", f"/jobs/{2**63}", "/jobs/abc", "/jobs/1/explode"])
def test_bad_job_ids_are_a_clear_4xx(api, jobs, path):
    assert 400 <= api["alice"].get(path).status_code < 500
