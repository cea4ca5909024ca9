"""Checkpoint directories: a user gets their own, and never root's powers over anything else.

Real file system, real Unix users (alice, bob), a fresh checkpoint root per test, and submits
through the API and the web form. Each attack from the issue must end in a 400 on the
checkpoint_dir field with the target left as it was.
"""

from __future__ import annotations

import os
import pwd
import shutil
import stat
import subprocess
import tempfile
import uuid
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest

from portal.jobs import checkpoints
from portal.jobs.models import Job
from portal.teams.models import Membership, Team
from tests.api.conftest import ApiClient
from tests.jobs.views_support import client_for, home

pytestmark = pytest.mark.usefixtures("slurm_accounts")

HELD = {"script": "#!/bin/bash\nsleep 60\n", "hold": True, "time_limit_min": 5}


@pytest.fixture
def root(settings):
    """A fresh checkpoint root, root-owned and 0755 like the site's."""
    path = Path(tempfile.mkdtemp(prefix="portal-ckpt-test-", dir="/tmp"))
    path.chmod(0o755)
    settings.CHECKPOINT_ROOT = str(path)
    yield path
    shutil.rmtree(path)


@pytest.fixture
def vision(alice, bob):
    team = Team.objects.create(name="vision")
    Team.objects.create(name="nlp")
    for user in (alice, bob):
        Membership.objects.create(user=user, team=team)
    return team


@pytest.fixture
def submit(vision):
    """POST /api/v1/jobs as a user; every job it made is cancelled afterwards."""
    made: list[int] = []

    def post(user, **fields):
        resp = ApiClient(user).post("/jobs", {"name": "ckpt-test", "team": "vision", **HELD, **fields})
        if resp.status_code == 201:
            made.append(resp.json()["slurm_job_id"])
        return resp
    yield post
    if made:
        subprocess.run(["scancel", *map(str, made)], check=False, capture_output=True)


@pytest.fixture
def root_owned():
    """A directory only root may change, with a file in it: what an attacker wants to own."""
    target = Path(tempfile.mkdtemp(prefix="portal-ckpt-target-", dir="/tmp"))
    target.chmod(0o755)
    (target / "secret").write_text("root's\n")
    yield target
    shutil.rmtree(target)


def as_user(user: str, *command: str) -> None:
    subprocess.run(["runuser", "-u", user, "--", *command], check=True, capture_output=True)


def owner_and_mode(path: Path) -> tuple[str, int]:
    info = path.lstat()
    return pwd.getpwuid(info.st_uid).pw_name, stat.S_IMODE(info.st_mode)


def snapshot(path: Path) -> list[tuple]:
    """Owner, mode and names of a directory and its entries, to show nothing changed."""
    entries = [path, *sorted(path.iterdir())]
    return [(p.name, p.lstat().st_uid, p.lstat().st_gid, stat.S_IMODE(p.lstat().st_mode)) for p in entries]


def refused(resp, fragment: str = "") -> str:
    assert resp.status_code == 400, resp.content
    message = resp.json()["errors"]["checkpoint_dir"][0]
    assert fragment in message
    return message


def own_tree(root: Path, submit, alice) -> Path:
    """alice's <root>/vision/alice, made by the portal on her first submit."""
    assert submit(alice).status_code == 201
    return root / "vision" / "alice"


# ---------------------------------------------------------------- the happy paths

def test_the_default_dir_is_made_for_the_user_alone(root, submit, alice):
    resp = submit(alice)
    assert resp.status_code == 201, resp.content
    made = Path(resp.json()["checkpoint_dir"])
    assert made == root / "vision" / "alice" / resp.json()["uuid"]
    assert owner_and_mode(made) == ("alice", 0o700)
    assert owner_and_mode(made.parent) == ("alice", 0o700)        # <root>/vision/alice
    assert owner_and_mode(made.parent.parent) == ("root", 0o755)  # <root>/vision: traversable, root's


def test_a_path_in_the_users_own_tree_is_made_as_the_user(root, submit, alice):
    wanted = own_tree(root, submit, alice) / "experiment-1" / "run.2"
    resp = submit(alice, checkpoint_dir=str(wanted))
    assert resp.status_code == 201, resp.content
    assert owner_and_mode(wanted) == ("alice", 0o700)
    assert owner_and_mode(wanted.parent) == ("alice", 0o700)


def test_a_path_in_the_users_home_is_made_as_the_user(root, submit, alice):
    wanted = home("alice") / f"ckpt-test-{uuid.uuid4().hex[:8]}" / "run"
    try:
        resp = submit(alice, checkpoint_dir=str(wanted) + "/")
        assert resp.status_code == 201, resp.content
        assert resp.json()["checkpoint_dir"] == str(wanted)
        assert owner_and_mode(wanted) == ("alice", 0o700)
    finally:
        shutil.rmtree(wanted.parent, ignore_errors=True)


def test_reusing_an_existing_dir_of_ones_own_works(root, submit, alice):
    first = submit(alice).json()["checkpoint_dir"]
    again = submit(alice, checkpoint_dir=first)
    assert again.status_code == 201, again.content
    assert owner_and_mode(Path(first)) == ("alice", 0o700)


# ---------------------------------------------------------------- the attacks in the issue

def test_a_symlink_to_a_root_owned_dir_is_not_followed(root, submit, alice, root_owned):
    link = own_tree(root, submit, alice) / "lnk"
    as_user("alice", "ln", "-s", str(root_owned), str(link))
    before = snapshot(root_owned)
    refused(submit(alice, checkpoint_dir=f"{link}/sub"), "symbolic link")
    refused(submit(alice, checkpoint_dir=str(link)), "symbolic link")
    assert snapshot(root_owned) == before
    assert Job.objects.count() == 1   # only own_tree's job: the refused ones kept no row, queued nothing


def test_a_symlinked_home_subdir_is_not_followed_either(root, submit, alice, root_owned):
    link = home("alice") / f"ckpt-lnk-{uuid.uuid4().hex[:8]}"
    as_user("alice", "ln", "-s", str(root_owned), str(link))
    try:
        before = snapshot(root_owned)
        refused(submit(alice, checkpoint_dir=f"{link}/sub"), "symbolic link")
        assert snapshot(root_owned) == before
    finally:
        link.unlink()


def test_another_users_tree_is_refused(root, submit, alice, bob):
    bobs = Path(submit(bob).json()["checkpoint_dir"])
    before = snapshot(bobs.parent)
    refused(submit(alice, checkpoint_dir=f"{bobs}/x"), "your own directory")
    refused(submit(alice, checkpoint_dir=str(bobs.parent)), "your own directory")
    assert snapshot(bobs.parent) == before
    assert owner_and_mode(bobs) == ("bob", 0o700)


@pytest.mark.parametrize("tail", [
    "vision/\u2024\u2024/x",            # ONE DOT LEADER twice looks like ".."
    "vision/alice/\u2024\u2024/x",
    "vision/.. /x",                     # ".." with a trailing space
    "vision/alice/x /y",
    "vision/alice/../bob/x",
    "vision/alice/./x",
    "vision/alice//x",
    "vision/alice/a\x01b",
    "vision/alice/caf\u00e9",
])
def test_lookalike_and_odd_path_parts_are_refused(root, submit, alice, tail):
    refused(submit(alice, checkpoint_dir=f"{root}/{tail}"))
    assert sorted(p.name for p in root.iterdir()) == []   # not even the team level got made


@pytest.mark.parametrize("where", ["", "/x", "/vision", "/nlp/alice/x", "/vision/alicex/y"])
def test_the_root_the_team_level_and_foreign_teams_are_refused(root, submit, alice, where):
    refused(submit(alice, checkpoint_dir=f"{root}{where}"), "your own directory")
    assert owner_and_mode(root) == ("root", 0o755)
    assert list(root.iterdir()) == []


def test_paths_outside_the_tree_and_home_are_refused(root, submit, alice):
    for path in ("/etc/cron.d", "/tmp/x", str(home("bob")) + "/x", str(home("alice")), "relative/path"):
        refused(submit(alice, checkpoint_dir=path))


# ---------------------------------------------------------------- nothing that exists is taken over

def test_an_existing_root_owned_dir_in_ones_tree_is_never_chowned(root, submit, alice):
    planted = own_tree(root, submit, alice) / "planted"
    planted.mkdir(mode=0o755)   # made by root, e.g. by an admin
    refused(submit(alice, checkpoint_dir=f"{planted}/sub"), "may not create")
    refused(submit(alice, checkpoint_dir=str(planted)), "may not create or write")
    assert owner_and_mode(planted) == ("root", 0o755)
    assert list(planted.iterdir()) == []


def test_a_user_level_dir_that_is_not_the_users_is_refused(root, submit, alice):
    squatted = root / "vision" / "alice"
    squatted.mkdir(parents=True)
    os.chown(squatted, pwd.getpwnam("bob").pw_uid, pwd.getpwnam("bob").pw_gid)
    refused(submit(alice), "not yours")
    assert owner_and_mode(squatted)[0] == "bob"
    assert list(squatted.iterdir()) == []


def test_a_symlinked_team_level_is_not_followed(root, submit, alice, root_owned):
    (root / "vision").symlink_to(root_owned)
    before = snapshot(root_owned)
    refused(submit(alice), "symbolic link")
    assert snapshot(root_owned) == before


def test_a_checkpoint_root_others_can_write_is_refused(root, submit, alice):
    root.chmod(0o777)
    try:
        refused(submit(alice), "writable by others")
        assert list(root.iterdir()) == []
    finally:
        root.chmod(0o755)


# ---------------------------------------------------------------- the web form says the same

def test_the_form_shows_the_refusal_on_the_field(root, vision, alice, root_owned):
    client = client_for(alice)
    data = {"name": "ckpt-form", "team": "vision", "partition": "gpu", "nodes": 1, "gpus_per_node": 0,
            "cpus_per_task": 1, "mem_mb": 0, "time_limit_min": 5, "hold": "on", "script": HELD["script"],
            "idempotency_key": uuid.uuid4().hex, "checkpoint_dir": f"{root}/vision/bob/{uuid.uuid4()}/x"}
    resp = client.post("/jobs/new/", data)
    assert resp.status_code == 400
    assert "your own directory" in " ".join(resp.context["form"].errors["checkpoint_dir"])
    assert not (root / "vision" / "bob").exists()


def test_first_submits_racing_for_a_new_tree_all_get_their_dirs(root):
    """Portal processes making <team>/<user> at once: a loser must not see it still root's."""
    teams = [f"team{i}" for i in range(6)]   # each a fresh race
    paths = [checkpoints.default_path(team, "alice", uuid.uuid4()) for team in teams for _ in range(6)]
    with ThreadPoolExecutor(max_workers=6) as pool:
        list(pool.map(lambda p: checkpoints.prepare(p, username="alice", teams=teams), paths))
    assert {owner_and_mode(Path(p)) for p in paths} == {("alice", 0o700)}
    for team in teams:
        assert owner_and_mode(root / team / "alice") == ("alice", 0o700)
        assert [p.name for p in (root / team).iterdir()] == ["alice"]   # no staging left behind
