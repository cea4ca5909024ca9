"""API test fixtures: the demo teams in the test DB and bearer-token clients."""

from __future__ import annotations

import pytest
from django.test import Client

from portal.api.services import issue_token
from portal.slurm import gateway
from portal.teams.models import Membership, Team


@pytest.fixture
def teams(slurm_accounts, db):
    vision = Team.objects.create(name="vision")
    nlp = Team.objects.create(name="nlp")
    return {"vision": vision, "nlp": nlp}


@pytest.fixture
def member(teams):
    def add(user, team: str, role: str = Membership.Role.MEMBER):
        Membership.objects.create(user=user, team=teams[team], role=role)
        return user
    return add


@pytest.fixture
def world(member, alice, bob, make_user, charlie):
    """alice, bob in vision; carol leads nlp, erin is in nlp; admin; charlie in no team."""
    carol, erin = make_user("carol"), make_user("erin")
    admin_user = make_user("admin", is_staff=True, is_superuser=True)
    member(alice, "vision")
    member(bob, "vision")
    member(carol, "nlp", Membership.Role.LEAD)
    member(erin, "nlp")
    return {"alice": alice, "bob": bob, "carol": carol, "erin": erin, "admin": admin_user, "charlie": charlie}


class ApiClient:
    """A test client that sends a real bearer token issued for one user."""

    def __init__(self, user):
        self.token, _ = issue_token(user=user, name="test")
        self.client = Client()
        self.headers = {"Authorization": f"Bearer {self.token}"}

    def get(self, path: str, **params):
        return self.client.get(f"/api/v1{path}", params, headers=self.headers)

    def post(self, path: str, body: dict | None = None, headers: dict | None = None):
        return self.client.post(f"/api/v1{path}", body or {}, content_type="application/json",
                                headers={**self.headers, **(headers or {})})


@pytest.fixture
def api(world):
    return {name: ApiClient(user) for name, user in world.items()}


@pytest.fixture
def submitted(api):
    """Submit through the API; every job is cancelled afterwards."""
    made: list[tuple[str, int]] = []

    def submit(who: str, **fields):
        body = {"name": "api-test", "team": "vision", "script": "#!/bin/bash\nsleep 120\n", **fields}
        resp = api[who].post("/jobs", body)
        assert resp.status_code == 201, resp.content
        data = resp.json()
        made.append((who, data["slurm_job_id"]))
        return data
    yield submit
    for _, slurm_id in made:
        job = gateway.get_job(slurm_id)
        if not job.finished:
            gateway.cancel_job(job.user, slurm_id)
