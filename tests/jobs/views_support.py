"""Shared set-up for the researcher page tests: teams, a person in every role, job rows.

Plain functions rather than a conftest, so these tests and the tracker's can share the
tests/jobs package without fixture names colliding.
"""

from __future__ import annotations

import os
import pwd
from pathlib import Path

from django.test import Client
from django.utils import timezone

from portal.jobs import services
from portal.jobs.models import Job
from portal.slurm import gateway
from portal.teams.models import Membership, Team

VISION_LEAD = "victor"  # a portal-only user (no Unix account) who leads vision


def build_world(make_user) -> dict:
    """alice, bob: vision members; victor: vision lead; carol: nlp lead; erin: nlp member;
    admin; charlie: in no team."""
    # People before teams: a tracker running meanwhile (the browser tests' `tracker`) adopts a
    # leftover sbatch job of alice's as soon as team vision exists, and makes her portal user if
    # she has none yet, which make_user would then collide with.
    people = {name: make_user(name) for name in ("alice", "bob", "carol", "erin", VISION_LEAD, "charlie")}
    people["admin"] = make_user("admin", is_staff=True, is_superuser=True)
    vision = Team.objects.create(name="vision", description="Computer vision")
    nlp = Team.objects.create(name="nlp", description="Language models")
    for name, team, role in [("alice", vision, "member"), ("bob", vision, "member"), (VISION_LEAD, vision, "lead"),
                             ("carol", nlp, "lead"), ("erin", nlp, "member")]:
        Membership.objects.create(user=people[name], team=team, role=role)
    people["vision"], people["nlp"] = vision, nlp
    return people


def make_job(owner, team: Team, **fields) -> Job:
    """A job row as the tracker would have left it; no Slurm job behind it unless given one."""
    now = timezone.now()
    defaults = {"name": f"{owner.username}-job", "state": "RUNNING", "partition": "gpu",
                "script": "#!/bin/bash\necho hi\n", "submit_time": now, "start_time": now,
                "gpus_per_node": 1, "gpu_type": "h100", "nodes_list": "gpu01"}
    return Job.objects.create(owner=owner, team=team, **{**defaults, **fields})


def client_for(user) -> Client:
    client = Client()
    client.force_login(user)
    return client


def write_owned(path: Path, text: str, owner: str) -> Path:
    """A file the way Slurm leaves job output: written by the job's own user."""
    path.write_text(text)
    entry = pwd.getpwnam(owner)
    os.chown(path, entry.pw_uid, entry.pw_gid)
    return path


def home(user: str) -> Path:
    return Path(pwd.getpwnam(user).pw_dir)


def cancel_all(submitted: list[tuple[str, int]]) -> None:
    """Teardown: no test leaves a job running on the shared cluster."""
    for username, slurm_id in submitted:
        if not gateway.get_job(slurm_id).finished:
            gateway.cancel_job(username, slurm_id)


SLEEPER = "#!/bin/bash\nsleep 120\n"


def submit(user, *, team: str = "vision", script: str = SLEEPER, **extra) -> Job:
    """Submit a real job through the service, as the submit form would."""
    fields = {"name": f"ui-test-{user.username}", "partition": "gpu", "time_limit_min": 5, **extra}
    spec = services.SubmitRequest(team=Team.objects.get(name=team), script=script, **fields)
    return services.submit_job(user=user, spec=spec).job
