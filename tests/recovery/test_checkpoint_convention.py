"""The checkpoint convention on the real cluster: what the TaskProlog gives every (re)start.

Jobs are plain sbatch jobs submitted as alice (team vision), reading back what Slurm holds
(scontrol show job) and what the job itself printed.
"""

from __future__ import annotations

import json
import os
import pwd
import shutil
import subprocess
import tempfile
import time
from pathlib import Path

import pytest
from django.conf import settings

from portal.jobs import checkpoints as job_checkpoints
from portal.jobs.services import SubmitRequest, submit_job
from portal.recovery.checkpoints import checkpoint_dir_for, latest_for
from portal.teams.models import Membership, Team
from slurm_plugins.checkpoint_scan import GENERATION_FILE, default_dir
from tests.conftest import ROOT, wait_until
from tests.jobs.views_support import make_job

pytestmark = pytest.mark.usefixtures("slurm_accounts")

ENV_SCRIPT = """#!/bin/bash
echo "CHECKPOINT_DIR=${CHECKPOINT_DIR-<unset>}"
echo "PORTAL_RESUME_FROM=${PORTAL_RESUME_FROM-<unset>}"
echo "PORTAL_GENERATION=${PORTAL_GENERATION-<unset>}"
echo "SLURM_RESTART_COUNT=${SLURM_RESTART_COUNT-<unset>}"
"""
TRAIN_SCRIPT = """#!/bin/bash
echo "attempt restart=${{SLURM_RESTART_COUNT-<unset>}} gen=${{PORTAL_GENERATION-}} \\
resume=${{PORTAL_RESUME_FROM-<unset>}}"
exec python3 {train} {args}
"""


def owned_by(path: Path, user: str) -> None:
    entry = pwd.getpwnam(user)
    os.lchown(path, entry.pw_uid, entry.pw_gid)


@pytest.fixture
def work():
    """A directory alice owns for scripts and output, with a copy of the example."""
    path = Path(tempfile.mkdtemp(prefix="ckpt-conv-", dir="/tmp"))
    shutil.copy(ROOT / "examples/train_with_checkpoints.py", path / "train.py")
    os.chmod(path, 0o755)  # noqa: S103 - bob's job in one test reads the example too
    for item in [path, *path.iterdir()]:
        owned_by(item, "alice")
    yield path
    shutil.rmtree(path, ignore_errors=True)


@pytest.fixture
def jobs():
    """Slurm job ids a test started: cancelled, and their default checkpoint dirs removed, afterwards."""
    ids: list[int] = []
    yield ids
    if ids:
        subprocess.run(["scancel", *map(str, ids)], check=False, capture_output=True)
    for job_id in ids:
        shutil.rmtree(default_dir(settings.CHECKPOINT_ROOT, "vision", "alice", job_id), ignore_errors=True)


def script(work: Path, name: str, text: str) -> Path:
    path = work / name
    path.write_text(text)
    os.chmod(path, 0o755)  # noqa: S103 - a job script, run by its user
    owned_by(path, "alice")
    return path


def sbatch(jobs: list[int], work: Path, batch: Path, *extra: str, user: str = "alice", env: str = "ALL") -> int:
    out = subprocess.run(
        ["runuser", "-u", user, "--", "sbatch", "--parsable", "-A", "vision", "-t", "5", "--open-mode=append",
         f"--export={env}", "-o", f"{work}/%j.out", "-e", f"{work}/%j.out", *extra, str(batch)],
        check=True, capture_output=True, text=True, cwd=work)
    job_id = int(out.stdout.strip().split(";")[0])
    jobs.append(job_id)
    return job_id


def show(job_id: int) -> dict[str, str]:
    out = subprocess.run(["scontrol", "-o", "show", "job", str(job_id)], capture_output=True, text=True, check=True)
    return dict(part.split("=", 1) for part in out.stdout.split() if "=" in part)


def output(work: Path, job_id: int) -> str:
    try:
        return (work / f"{job_id}.out").read_text()
    except FileNotFoundError:
        return ""


def ended(job_id: int, state: str = "COMPLETED", timeout: float = 60) -> dict[str, str]:
    return wait_until(lambda: (info := show(job_id))["JobState"] == state and info, timeout=timeout,
                      what=f"job {job_id} {state}")


def test_an_sbatch_job_of_a_team_gets_a_default_checkpoint_dir(work, jobs):
    job_id = sbatch(jobs, work, script(work, "env.sh", ENV_SCRIPT), "-p", "cpu")
    info = ended(job_id)
    assert info["Account"] == "vision" and info["UserId"].startswith("alice(")
    expected = default_dir(settings.CHECKPOINT_ROOT, "vision", "alice", job_id)
    assert f"CHECKPOINT_DIR={expected}\n" in output(work, job_id)
    assert "PORTAL_RESUME_FROM=<unset>\n" in output(work, job_id)  # first run: nothing to resume
    assert "PORTAL_GENERATION=0\n" in output(work, job_id)
    assert "SLURM_RESTART_COUNT=<unset>\n" in output(work, job_id)
    made = os.stat(expected, follow_symlinks=False)
    assert made.st_uid == pwd.getpwnam("alice").pw_uid
    assert made.st_mode & 0o777 == 0o700  # not world-writable, not even readable by others
    assert Path(expected, GENERATION_FILE).read_text() == "0\n"


def test_a_stale_resume_variable_from_the_submit_shell_is_removed(work, jobs):
    batch = script(work, "env.sh", ENV_SCRIPT)
    job_id = sbatch(jobs, work, batch, "-p", "cpu", env="ALL,PORTAL_RESUME_FROM=/somewhere/stale")
    ended(job_id)
    assert "PORTAL_RESUME_FROM=<unset>\n" in output(work, job_id)


@pytest.fixture
def own_dir(unique):
    """A checkpoint directory alice chose herself, in her level of the checkpoint root."""
    path = Path(settings.CHECKPOINT_ROOT, "vision", "alice", f"own-{unique}")
    path.mkdir(mode=0o700)
    owned_by(path, "alice")
    yield path
    shutil.rmtree(path, ignore_errors=True)


def alices_tree(root: Path, files: dict[str, str]) -> None:
    for rel, text in files.items():
        path = root / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text)
    for item in [root, *root.rglob("*")]:
        owned_by(item, "alice")


def test_a_job_keeps_its_own_checkpoint_dir_and_half_written_checkpoints_are_ignored(work, jobs, own_dir):
    alices_tree(own_dir, {".checkpoint.json.4242.tmp": '{"step": 90',          # the example mid-save
                          "step-50/__0_0.distcp": "w",                          # torchtitan mid-save
                          "ckpt-000070/weights.bin": "w"})                      # no marker yet
    batch = script(work, "env.sh", ENV_SCRIPT)
    job_id = sbatch(jobs, work, batch, "-p", "cpu", env=f"ALL,CHECKPOINT_DIR={own_dir}")
    ended(job_id)
    assert f"CHECKPOINT_DIR={own_dir}\n" in output(work, job_id)
    assert "PORTAL_RESUME_FROM=<unset>\n" in output(work, job_id)
    assert not Path(default_dir(settings.CHECKPOINT_ROOT, "vision", "alice", job_id)).exists()

    alices_tree(own_dir, {"step-10/__0_0.distcp": "w", "step-10/.metadata": "m"})  # one complete checkpoint
    job_id = sbatch(jobs, work, batch, "-p", "cpu", env=f"ALL,CHECKPOINT_DIR={own_dir}")
    ended(job_id)
    assert f"PORTAL_RESUME_FROM={own_dir}/step-10\n" in output(work, job_id)


def saved_steps(text: str) -> list[int]:
    return [int(line.rsplit(" ", 1)[1]) for line in text.splitlines()
            if line.startswith(("checkpoint saved at step", "stopping on signal"))]


def requeue_and_restart(job_id: int, restarts: int) -> None:
    """`scontrol requeue` as an operator, then start it soon (Slurm itself would wait ~2 minutes).

    Not at once: slurmd revokes the old run's credential with a one-second clock, and a launch
    within that second fails the job ("Killing non-startable batch job: Job credential revoked",
    exit 1; seen on 22.05).
    """
    subprocess.run(["scontrol", "requeue", str(job_id)], check=True, capture_output=True)
    requeued = time.monotonic()
    wait_until(lambda: show(job_id)["JobState"] == "PENDING" and show(job_id)["Restarts"] == str(restarts),
               what=f"job {job_id} requeued ({restarts})")
    time.sleep(max(0.0, requeued + 2.5 - time.monotonic()))
    subprocess.run(["scontrol", "update", f"jobid={job_id}", "StartTime=now"], check=True, capture_output=True)


def runs(text: str) -> list[str]:
    """The job's output split per run (each starts with the script's "attempt restart=" line)."""
    return text.split("attempt restart=")[1:]


def test_a_job_requeued_twice_resumes_from_the_newest_checkpoint_each_time(work, jobs):
    train = script(work, "train.sh", TRAIN_SCRIPT.format(
        train=work / "train.py", args="--steps 60 --step-seconds 0.3 --save-every 5"))
    job_id = sbatch(jobs, work, train, "-p", "gpu", "-w", "gpu01", "--requeue")
    expected_dir = default_dir(settings.CHECKPOINT_ROOT, "vision", "alice", job_id)
    for restart in (1, 2):
        wait_until(lambda r=restart: len(runs(output(work, job_id))) == r
                   and len(saved_steps(runs(output(work, job_id))[r - 1])) >= 2,
                   timeout=60, what=f"two checkpoints in run {restart - 1}")
        requeue_and_restart(job_id, restart)
        wait_until(lambda r=restart: len(runs(output(work, job_id))) > r
                   and "resumed from" in runs(output(work, job_id))[r], timeout=60, what=f"run {restart} resumed")
        stopped, resumed = runs(output(work, job_id))[restart - 1:restart + 1]
        assert "stopping on signal 15" in stopped
        newest = saved_steps(stopped)[-1]  # the SIGTERM save: the newest checkpoint of the stopped run
        assert resumed.startswith(f"{restart} gen={restart} resume={expected_dir}/checkpoint.json\n")
        assert f"resumed from step {newest} (run {restart + 1}, Slurm restart {restart})" in resumed
    info = ended(job_id, timeout=90)
    assert info["Restarts"] == "2" and info["ExitCode"] == "0:0"
    assert "training finished: 60 steps" in output(work, job_id)
    assert json.loads(Path(expected_dir, "checkpoint.json").read_text())["step"] == 60
    assert Path(expected_dir, GENERATION_FILE).read_text() == "2\n"


def test_an_old_generation_may_not_save_after_the_generation_was_bumped(work, jobs):
    """A copy of the job left on a hung node wakes up after a newer attempt has started: it must
    not overwrite the newer attempt's checkpoints (the TaskProlog of attempt 1 wrote `1`)."""
    train = script(work, "train.sh", TRAIN_SCRIPT.format(
        train=work / "train.py", args="--steps 400 --step-seconds 0.2 --save-every 2"))
    job_id = sbatch(jobs, work, train, "-p", "gpu", "-w", "gpu02", "--no-requeue")
    directory = Path(default_dir(settings.CHECKPOINT_ROOT, "vision", "alice", job_id))
    wait_until(lambda: len(saved_steps(output(work, job_id))) >= 2, what="two saves of generation 0")
    generation = directory / GENERATION_FILE
    generation.write_text("1\n")
    owned_by(generation, "alice")
    time.sleep(0.2)  # a save already past its check finishes; no later one may happen
    frozen = json.loads((directory / "checkpoint.json").read_text())["step"]
    info = ended(job_id, state="FAILED")
    assert info["ExitCode"] == "75:0"
    assert "fenced, not saving: generation 1 owns" in output(work, job_id)
    assert json.loads((directory / "checkpoint.json").read_text())["step"] == frozen
    assert generation.read_text() == "1\n"


@pytest.fixture
def bobs_tree(work):
    """A checkpoint of bob's that alice could read (mode 755): only the owner check protects it."""
    path = work / "bob-tree"
    path.mkdir()
    (path / "checkpoint.json").write_text(json.dumps({"step": 42, "loss": 1.0, "runs": 1}))
    for item in (path, path / "checkpoint.json"):
        owned_by(item, "bob")
        os.chmod(item, 0o755 if item.is_dir() else 0o644)  # readable on purpose
    return path


@pytest.fixture
def link_to_bobs_tree(bobs_tree, unique):
    """alice's own symlink, in her level of the checkpoint root, pointing into bob's tree."""
    # alice's level exists once she submitted anything; on a fresh machine make it as the portal does.
    job_checkpoints.prepare(str(Path(settings.CHECKPOINT_ROOT, "vision", "alice", f"own-{unique}")),
                            username="alice", teams=["vision"])
    link = Path(settings.CHECKPOINT_ROOT, "vision", "alice", f"link-{unique}")
    link.symlink_to(bobs_tree)
    owned_by(link, "alice")
    yield link
    link.unlink()
    Path(settings.CHECKPOINT_ROOT, "vision", "alice", f"own-{unique}").rmdir()


@pytest.mark.django_db
def test_a_symlinked_checkpoint_dir_into_another_users_tree_is_refused(work, jobs, link_to_bobs_tree, alice, bob):
    link, bobs_tree = link_to_bobs_tree, work / "bob-tree"
    args = "--steps 3 --step-seconds 0.1"
    train = script(work, "train.sh", TRAIN_SCRIPT.format(train=work / "train.py", args=args))
    job_id = sbatch(jobs, work, train, "-p", "cpu", "--no-requeue", env=f"ALL,CHECKPOINT_DIR={link}")
    info = ended(job_id, state="FAILED")
    assert "resume=<unset>" in output(work, job_id)
    assert f"portal checkpoint: warning: CHECKPOINT_DIR {link} refused" in output(work, job_id)
    assert f"checkpoint directory {link} belongs to uid {pwd.getpwnam('bob').pw_uid}" in output(work, job_id)
    assert info["ExitCode"] == "2:0"
    assert json.loads((bobs_tree / "checkpoint.json").read_text())["step"] == 42
    assert not (bobs_tree / GENERATION_FILE).exists()

    # The portal (root) shows nothing for alice's job either, and bob's own checkpoint to bob.
    vision = Team.objects.create(name="vision")
    assert latest_for(make_job(alice, vision, checkpoint_dir=str(link))) is None
    assert latest_for(make_job(bob, vision, checkpoint_dir=str(bobs_tree))).step == 42


@pytest.mark.django_db
def test_the_portal_finds_an_adopted_sbatch_jobs_checkpoint(work, jobs, alice):
    train = script(work, "train.sh", TRAIN_SCRIPT.format(
        train=work / "train.py", args="--steps 10 --step-seconds 0.1 --save-every 5"))
    job_id = sbatch(jobs, work, train, "-p", "cpu")
    ended(job_id)
    job = make_job(alice, Team.objects.create(name="vision"), slurm_job_id=job_id, adopted=True)
    assert checkpoint_dir_for(job) == default_dir(settings.CHECKPOINT_ROOT, "vision", "alice", job_id)
    found = latest_for(job)
    assert (found.step, found.format) == (10, "example")
    assert found.path == f"{checkpoint_dir_for(job)}/checkpoint.json"


def sacctmgr(*args: str) -> None:
    subprocess.run(["sacctmgr", "-i", *args], check=True, capture_output=True, text=True)


@pytest.fixture
def new_team(unique):
    """A fresh Slurm account with alice in it, made a portal team by its root-only checkpoint level.
    Nobody has a level under it yet, so the Prolog's creation of alice's can be seen."""
    account = f"ck{unique}"
    sacctmgr("add", "account", account, "description=checkpoint convention test")
    sacctmgr("add", "user", "alice", f"account={account}")
    team = Path(settings.CHECKPOINT_ROOT, account)
    team.mkdir(mode=0o755)
    yield account
    shutil.rmtree(team, ignore_errors=True)
    for args in (["user", "alice", f"account={account}"], ["account", account]):
        subprocess.run(["sacctmgr", "-i", "delete", *args], check=False, capture_output=True)


def test_the_prolog_makes_a_members_level_and_the_task_prolog_the_jobs_dir(work, jobs, new_team):
    batch = script(work, "env.sh", ENV_SCRIPT)
    command = ["runuser", "-u", "alice", "--", "sbatch", "--parsable", "-A", new_team, "-p", "cpu", "-t", "2",
               "-o", f"{work}/%j.out", str(batch)]

    def submit() -> str:  # slurmctld learns of the new association within a moment
        return subprocess.run(command, check=False, capture_output=True, text=True, cwd=work).stdout.strip()
    job_id = wait_until(submit, timeout=20, what="sbatch to the new account")
    jobs.append(int(job_id))
    assert ended(int(job_id))["Account"] == new_team
    level = Path(settings.CHECKPOINT_ROOT, new_team, "alice")
    made = os.stat(level, follow_symlinks=False)
    assert (made.st_uid, made.st_mode & 0o777) == (pwd.getpwnam("alice").pw_uid, 0o700)
    assert f"CHECKPOINT_DIR={level}/slurm-{job_id}\n" in output(work, int(job_id))
    assert os.stat(level / f"slurm-{job_id}").st_uid == made.st_uid


@pytest.mark.django_db
def test_a_portal_job_keeps_its_own_checkpoint_dir(alice, jobs, unique):
    vision = Team.objects.create(name="vision")
    Membership.objects.create(user=alice, team=vision)
    spec = SubmitRequest(team=vision, name=f"ckpt-{unique}", script=ENV_SCRIPT, partition="cpu", time_limit_min=5)
    job = submit_job(user=alice, spec=spec).job
    jobs.append(job.slurm_job_id)
    out = Path(pwd.getpwnam("alice").pw_dir, f"slurm-{job.slurm_job_id}.out")
    try:
        ended(job.slurm_job_id)
        assert job.checkpoint_dir.endswith(f"/vision/alice/{job.uuid}")  # the portal's own default
        text = out.read_text()
        assert f"CHECKPOINT_DIR={job.checkpoint_dir}\n" in text
        assert "PORTAL_RESUME_FROM=<unset>\n" in text and "PORTAL_GENERATION=0\n" in text
        assert Path(job.checkpoint_dir, GENERATION_FILE).read_text() == "0\n"
        assert checkpoint_dir_for(job) == job.checkpoint_dir and latest_for(job) is None
    finally:
        out.unlink(missing_ok=True)
        Path(str(out)[:-4] + ".err").unlink(missing_ok=True)
        shutil.rmtree(job.checkpoint_dir, ignore_errors=True)


@pytest.fixture
def hang_gpu02():
    """Hang gpu02 (its slurmd killed: the job's processes there live on) and mark it DOWN, as the
    portal does for a hung node; healed and resumed afterwards whatever happens."""
    def hang() -> None:
        subprocess.run([str(ROOT / "cluster/ctl"), "fault", "gpu02", "--hang"], check=True, capture_output=True)
        subprocess.run(["scontrol", "update", "nodename=gpu02", "state=down", "reason=ckpt test: hung"],
                       check=True, capture_output=True)
    yield hang
    subprocess.run([str(ROOT / "cluster/ctl"), "heal", "gpu02"], check=False, capture_output=True)
    subprocess.run(["scontrol", "update", "nodename=gpu02", "state=resume"], check=False, capture_output=True)


def test_the_old_copy_on_a_hung_node_is_fenced_when_the_job_restarts_elsewhere(work, jobs, hang_gpu02):
    train = script(work, "train.sh", TRAIN_SCRIPT.format(
        train=work / "train.py", args="--steps 200 --step-seconds 0.3 --save-every 2"))
    job_id = sbatch(jobs, work, train, "-p", "gpu", "-w", "gpu02", "--requeue")
    directory = Path(default_dir(settings.CHECKPOINT_ROOT, "vision", "alice", job_id))
    wait_until(lambda: len(saved_steps(output(work, job_id))) >= 2, what="two saves on gpu02")
    hang_gpu02()
    requeued = time.monotonic()
    wait_until(lambda: show(job_id)["JobState"] == "PENDING" and show(job_id)["Restarts"] == "1",
               what="the job requeued off the DOWN node")
    time.sleep(max(0.0, requeued + 2.5 - time.monotonic()))
    subprocess.run(["scontrol", "update", f"jobid={job_id}", "ReqNodeList=gpu01", "StartTime=now"],
                   check=True, capture_output=True)
    # The old copy still runs on gpu02 (its slurmd is dead, nobody killed it); the new attempt's
    # TaskProlog writes generation 1, and the old copy's next save is refused. The old copy runs
    # for 60 s: Slurm may start the new attempt only at its next backfill pass (every 30 s).
    wait_until(lambda: "fenced, not saving: generation 1 owns" in output(work, job_id), timeout=60,
               what="the old copy to be fenced")
    info = ended(job_id, timeout=150)
    assert info["NodeList"] == "gpu01" and info["Restarts"] == "1" and info["ExitCode"] == "0:0"
    assert "resumed from step" in runs(output(work, job_id))[1]
    assert json.loads((directory / "checkpoint.json").read_text())["step"] == 200
    assert (directory / GENERATION_FILE).read_text() == "1\n"
