"""Budgets on the real cluster: a used-up hard budget starts no new GPU job (sbatch or portal)
while running jobs run on; a used-up soft budget runs the team's jobs behind other teams'; the
switch is undone when the budget is raised or the period turns; drift is shown and repaired.
Every value sent to Slurm is read back with sacctmgr or scontrol."""

from __future__ import annotations

import json
import re
import subprocess
import time
from datetime import timedelta
from io import StringIO

import pytest
from django.core.management import call_command
from django.test import Client
from django.utils import timezone

from portal.api.services import issue_token
from portal.jobs import services
from portal.jobs.models import Job
from portal.jobs.quota import GpuAsk, QuotaExceeded
from portal.quotas.limits import team_wait_words
from portal.quotas.reconcile import reconcile_teams
from portal.quotas.usage import period_bounds
from portal.slurm import gateway
from portal.teams.models import Membership, Team, TeamPolicy
from tests.conftest import wait_until
from tests.jobs.views_support import make_job
from tests.teams.conftest import CLUSTER, sacctmgr, sacctmgr_write

pytestmark = [pytest.mark.slow, pytest.mark.django_db]


# ---------------------------------------------------------------- read-backs, straight from Slurm

def budget_row(account: str) -> dict[str, str]:
    """GrpTRESRunMins, QOS and DefaultQOS of the account's own association."""
    for line in sacctmgr("show", "assoc", f"cluster={CLUSTER}", f"account={account}",
                         "format=account,user,grptresrunmins,qos,defaultqos").splitlines():
        name, user, run_mins, qos, default = line.split("|")
        if name == account and not user:
            return {"run_mins": run_mins, "qos": qos, "default_qos": default}
    raise AssertionError(f"no association for {account}")


def qos_priority(name: str) -> int | None:
    out = sacctmgr("show", "qos", "format=name,priority")
    return next((int(p) for n, p in (line.split("|") for line in out.splitlines()) if n == name), None)


def show_job(job_id: int) -> dict[str, str]:
    """`scontrol show job -o` as a dict (JobState, Reason, QOS, Priority, ...); {} once purged."""
    proc = subprocess.run(["scontrol", "show", "job", "-o", str(job_id)], capture_output=True, text=True,
                          check=False)
    return dict(item.split("=", 1) for item in proc.stdout.split() if "=" in item)


def sbatch(user: str, account: str, name: str, *, gpus: int = 1, seconds: int = 60, node: str = "") -> int:
    args = ["runuser", "-u", user, "--", "sbatch", "--parsable", "-A", account, "-J", name, "-p", "gpu",
            f"--gres=gpu:{gpus}", "-t", "2", "-o", "/dev/null", "--chdir", "/tmp"]
    if node:
        args += ["-w", node]
    out = subprocess.run([*args, "--wrap", f"sleep {seconds}"], capture_output=True, text=True, check=True).stdout
    return int(out.strip().split(";")[0])


def to_the_front(job_id: int) -> int:
    """An admin priority above the shared cluster's other work, so only a limit (not the queue
    of other people's tests) can keep the job from starting: its reason is then the limit's."""
    subprocess.run(["scontrol", "update", f"jobid={job_id}", "priority=4000000000"], check=True)
    return job_id


def _sbatch_held(account: str) -> int:
    out = subprocess.run(["runuser", "-u", "alice", "--", "sbatch", "--parsable", "-H", "-A", account, "-p", "gpu",
                          "--gres=gpu:1", "-t", "1", "-o", "/dev/null", "--chdir", "/tmp", "--wrap", "true"],
                         capture_output=True, text=True, check=True).stdout
    return int(out.strip().split(";")[0])


def cancel(jobs: list[int]) -> None:
    if jobs:
        subprocess.run(["scancel", *map(str, jobs)], check=False)


def use_up_budget(team: Team, owner, *, gpu_hours_budget: float, mode: str) -> None:
    """A finished 4-GPU job of 30 s in this period (0.033 GPU-hours) against a smaller budget."""
    end = timezone.now()
    make_job(owner, team, gpus_per_node=4, state="COMPLETED", start_time=end - timedelta(seconds=30), end_time=end)
    TeamPolicy.objects.update_or_create(team=team, defaults={"gpu_hours_budget": gpu_hours_budget,
                                                             "over_budget": mode})


# ---------------------------------------------------------------- fixtures

@pytest.fixture
def budget_qos(settings, unique, qt_names):
    """An over-budget QOS of this test's own, removed after (the accounts first: they use it); the
    normal QOS's Priority, which the reconciler raises, put back as it was."""
    name = f"qtb-ob-{unique}"
    settings.TEAM_BUDGETS = {**settings.TEAM_BUDGETS, "OVER_BUDGET_QOS": name}
    normal = settings.TEAM_BUDGETS["NORMAL_QOS"]
    before = qos_priority(normal)
    yield name
    for account in qt_names:
        gateway.remove_account(account)
    subprocess.run(["sacctmgr", "-i", "remove", "qos", name], capture_output=True, check=False)
    if before is not None and qos_priority(normal) != before:
        sacctmgr_write("modify", "qos", "where", f"name={normal}", "set", f"priority={before}")


@pytest.fixture
def other_team(qt_names, unique, make_user):
    """A second team, in budget, with carol as its member."""
    name = f"qt-{unique}b"
    qt_names.append(name)
    team = Team.objects.create(name=name)
    Membership.objects.create(user=make_user("carol"), team=team)
    return team


@pytest.fixture
def filler(qt_names, unique, bob):
    """A third team (bob) only to fill a node, so neither compared team's fair share moves."""
    team = Team.objects.create(name=f"qt-{unique}c")
    qt_names.append(team.name)
    Membership.objects.create(user=bob, team=team)
    return team


# ---------------------------------------------------------------- hard

def test_a_team_over_its_hard_budget_starts_no_new_gpu_job(qt_team, alice, bob):
    TeamPolicy.objects.create(team=qt_team, gpu_hours_budget=100, over_budget="hard")
    reconcile_teams()
    name, jobs = qt_team.name, []
    try:
        jobs.append(to_the_front(sbatch("alice", name, "qtb-hard-before", seconds=100)))
        wait_until(lambda: show_job(jobs[0]).get("JobState") == "RUNNING", timeout=120, what="the first job")

        use_up_budget(qt_team, bob, gpu_hours_budget=0.01, mode="hard")
        started = time.monotonic()
        plan = reconcile_teams()
        switch_s = time.monotonic() - started
        assert [str(c) for c in plan.changes] == [
            f"set GrpTRESRunMins=gres/gpu=0 on {name} (budget used up, hard) "
            "(Slurm has Fairshare=1 GrpTRES=- GrpTRESRunMins=- QOS=normal DefaultQOS=-)"]
        assert budget_row(name) == {"run_mins": "gres/gpu=0", "qos": "normal", "default_qos": ""}
        print(f"hard budget switch: one reconcile run {switch_s:.2f} s")

        jobs.append(to_the_front(sbatch("alice", name, "qtb-hard-after", seconds=5)))
        wait_until(lambda: (show_job(jobs[1]).get("JobState"), show_job(jobs[1]).get("Reason"))
                   == ("PENDING", "AssocGrpGRESRunMinutes"), timeout=15, what="the new job to wait")
        assert show_job(jobs[0])["JobState"] == "RUNNING"     # not killed

        # The portal refuses before Slurm is asked, and explains the sbatch job's wait.
        spec = services.SubmitRequest(team=qt_team, name="qtb-hard-portal", script="#!/bin/bash\nsleep 5\n",
                                      partition="gpu", gpus_per_node=1, time_limit_min=1)
        with pytest.raises(QuotaExceeded, match=rf"^Team {name} has used 0.03 of 0.01 GPU-hours this "):
            services.submit_job(user=alice, spec=spec)
        words = team_wait_words("AssocGrpGRESRunMinutes", qt_team, GpuAsk(1, 1))
        assert words.startswith(f"Your team {name} has used 0.03 of 0.01 GPU-hours this ")
        assert "running jobs keep running" in words

        # Raised: the limit goes, and the waiting job starts.
        TeamPolicy.objects.filter(team=qt_team).update(gpu_hours_budget=100)
        raised = time.monotonic()
        reconcile_teams()
        assert budget_row(name)["run_mins"] == ""
        wait_until(lambda: show_job(jobs[1]).get("JobState") in ("RUNNING", "COMPLETED", "COMPLETING"),
                   timeout=120, interval=0.5, what="the waiting job to start once the budget was raised")
        print(f"budget raised -> waiting job started: {time.monotonic() - raised:.1f} s")
        # The job that ran through the switch was never stopped: still running or ended normally.
        assert show_job(jobs[0]).get("JobState") in ("RUNNING", "COMPLETING", "COMPLETED")
    finally:
        cancel(jobs)


# ---------------------------------------------------------------- soft

def _idle_gpu_node() -> str:
    def idle():
        return sorted(subprocess.run(["sinfo", "-h", "-p", "gpu", "-t", "idle", "-N", "-o", "%N"],
                                     capture_output=True, text=True, check=True).stdout.split())
    return wait_until(idle, timeout=150, interval=2, what="an idle GPU node")[-1]


def _qos_weight() -> int:
    out = subprocess.run(["scontrol", "show", "config"], capture_output=True, text=True, check=True).stdout
    return int(re.search(r"PriorityWeightQOS\s*=\s*(\d+)", out).group(1))


def _fairshare(account: str, user: str) -> float:
    out = subprocess.run(["sshare", "-n", "-P", "-A", account, "-u", user, "-o", "account,user,fairshare"],
                         capture_output=True, text=True, check=True).stdout
    return next((float(f or 0) for a, u, f in (line.split("|") for line in out.splitlines()) if u == user), 0.0)


def _sprio(job_id: int) -> dict[str, int]:
    """The job's weighted priority parts: {"priority", "fairshare", "qos", "age"}."""
    out = subprocess.run(["sprio", "-h", "-j", str(job_id), "-o", "%Y|%F|%Q|%A"], capture_output=True, text=True,
                         check=False).stdout.split("|")
    return dict(zip(("priority", "fairshare", "qos", "age"), map(int, map(float, out)), strict=True)) \
        if len(out) == 4 else {}


def test_a_team_over_its_soft_budget_runs_behind_the_others(qt_team, other_team, filler, budget_qos, bob):
    TeamPolicy.objects.create(team=qt_team, gpu_hours_budget=100, over_budget="soft")
    reconcile_teams()
    over, fine, jobs = qt_team.name, other_team.name, []
    normal_qos = "normal"
    # Slurm gives a new association a fair-share factor of 0 until its next priority pass
    # (PriorityCalcPeriod, a minute here): wait for it, or fair share, not the QOS, decides.
    wait_until(lambda: _fairshare(over, "alice") > 0 and _fairshare(fine, "carol") > 0, timeout=75, interval=2,
               what="Slurm's first fair-share pass over the new teams")
    try:
        node = _idle_gpu_node()
        jobs.append(sbatch("bob", filler.name, "qtb-soft-filler", gpus=4, seconds=110, node=node))
        wait_until(lambda: show_job(jobs[0]).get("JobState") == "RUNNING", timeout=30, what="the filler")
        # Two whole-node jobs queue for the full node: the over-budget team's first.
        jobs.append(sbatch("alice", over, "qtb-soft-over", gpus=4, seconds=5, node=node))
        assert show_job(jobs[1])["QOS"] == normal_qos

        use_up_budget(qt_team, bob, gpu_hours_budget=0.01, mode="soft")
        plan = reconcile_teams()
        assert f"set QOS={budget_qos} DefaultQOS={budget_qos} on {over} (budget used up, soft)" in \
            "\n".join(str(c) for c in plan.changes)
        assert qos_priority(budget_qos) == 0 and qos_priority(normal_qos) > 0
        assert budget_row(over) == {"run_mins": "", "qos": budget_qos, "default_qos": budget_qos}
        assert budget_row(fine)["qos"] == normal_qos
        assert show_job(jobs[1])["QOS"] == budget_qos          # the pending job was moved

        jobs.append(sbatch("carol", fine, "qtb-soft-fine", gpus=4, seconds=5, node=node))
        assert show_job(jobs[2])["QOS"] == normal_qos
        wait_until(lambda: _sprio(jobs[1]).get("fairshare") and _sprio(jobs[2]).get("fairshare"), timeout=75,
                   interval=2, what="both jobs' fair-share factors")
        behind, ahead = _sprio(jobs[1]), _sprio(jobs[2])
        print(f"soft budget: sprio in budget {ahead}, over budget {behind}")
        assert (ahead["qos"], behind["qos"]) == (_qos_weight(), 0)   # PriorityWeightQOS x (1 vs 0)
        assert ahead["priority"] > behind["priority"]
        assert int(show_job(jobs[2])["Priority"]) > int(show_job(jobs[1])["Priority"])
        words = team_wait_words("Priority", qt_team, GpuAsk(1, 4))
        assert words.startswith(f"Your team {over} has used 0.03 of 0.01 GPU-hours") and "low priority" in words

        # The node frees: the in-budget team's job, queued later, starts first.
        cancel(jobs[:1])
        wait_until(lambda: show_job(jobs[2]).get("JobState") in ("RUNNING", "COMPLETING", "COMPLETED"),
                   timeout=150, interval=0.5, what="the in-budget team's job to start")
        assert show_job(jobs[1])["JobState"] == "PENDING"

        # Raised: the association and the still-pending job go back to the normal QOS.
        TeamPolicy.objects.filter(team=qt_team).update(gpu_hours_budget=100)
        plan = reconcile_teams()
        assert budget_row(over) == {"run_mins": "", "qos": normal_qos, "default_qos": ""}
        assert show_job(jobs[1])["QOS"] == normal_qos
        assert f"move pending jobs {jobs[1]} of {over} to QOS {normal_qos} (in budget)" in \
            [str(c) for c in plan.changes]
        assert reconcile_teams().empty
    finally:
        cancel(jobs)


# ---------------------------------------------------------------- drift, dry-run, the period's edge

def test_drift_is_shown_by_a_dry_run_and_repaired_and_a_new_period_switches_back(qt_team, budget_qos, bob):
    name = qt_team.name
    use_up_budget(qt_team, bob, gpu_hours_budget=0.01, mode="soft")
    reconcile_teams()
    assert budget_row(name) == {"run_mins": "", "qos": budget_qos, "default_qos": budget_qos}
    # Plain sbatch lands in the over-budget QOS, and cannot ask its way out of it.
    held = _sbatch_held(name)
    try:
        assert show_job(held)["QOS"] == budget_qos
    finally:
        cancel([held])
    escape = subprocess.run(["runuser", "-u", "alice", "--", "sbatch", "-A", name, "--qos=normal", "-p", "gpu",
                             "--gres=gpu:1", "-t", "1", "-o", "/dev/null", "--chdir", "/tmp", "--wrap", "true"],
                            capture_output=True, text=True, check=False)
    assert escape.returncode != 0 and "Invalid qos specification" in escape.stderr

    # Someone puts the team back by hand, and adds a run-minutes cap of their own.
    sacctmgr_write("modify", "account", "where", f"name={name}", f"cluster={CLUSTER}", "set", "qos=normal",
                   "defaultqos=-1", "GrpTRESRunMins=gres/gpu=5")
    out = StringIO()
    call_command("sync_slurm_accounts", "--dry-run", stdout=out)
    assert (f"would set GrpTRESRunMins=gres/gpu=-1 QOS={budget_qos} DefaultQOS={budget_qos} on {name} "
            "(budget used up, soft) (Slurm has Fairshare=1 GrpTRES=- GrpTRESRunMins=gres/gpu=5 QOS=normal "
            "DefaultQOS=-)") in out.getvalue()
    assert budget_row(name) == {"run_mins": "gres/gpu=5", "qos": "normal", "default_qos": ""}   # dry: unchanged
    reconcile_teams()
    assert budget_row(name) == {"run_mins": "", "qos": budget_qos, "default_qos": budget_qos}
    assert reconcile_teams().empty

    # The period turns: the usage that used the budget up now lies in the last period.
    start, _ = period_bounds("month", timezone.now())
    Job.objects.filter(team=qt_team).update(start_time=start - timedelta(hours=2), end_time=start - timedelta(hours=1))
    plan = reconcile_teams()
    assert [str(c) for c in plan.changes] == [
        f"set QOS=normal DefaultQOS=- on {name} (in budget) (Slurm has Fairshare=1 GrpTRES=- "
        f"GrpTRESRunMins=- QOS={budget_qos} DefaultQOS={budget_qos})"]
    assert budget_row(name) == {"run_mins": "", "qos": "normal", "default_qos": ""}


@pytest.fixture
def hand_set_qos(unique):
    """A QOS of this test's own, as an admin would give a team by hand (removed after the accounts:
    request it before the team and budget fixtures)."""
    name = f"qtb-gold-{unique}"
    sacctmgr_write("add", "qos", name)
    yield name
    subprocess.run(["sacctmgr", "-i", "remove", "qos", name], capture_output=True, check=False)


def test_the_switch_back_restores_the_qos_list_an_admin_had_set_by_hand(hand_set_qos, qt_team, budget_qos, bob):
    name, gold = qt_team.name, hand_set_qos
    TeamPolicy.objects.create(team=qt_team)
    reconcile_teams()
    sacctmgr_write("modify", "account", "where", f"name={name}", f"cluster={CLUSTER}", "set",
                   f"qos=normal,{gold}", f"defaultqos={gold}")

    use_up_budget(qt_team, bob, gpu_hours_budget=0.01, mode="soft")
    reconcile_teams()
    assert budget_row(name) == {"run_mins": "", "qos": budget_qos, "default_qos": budget_qos}
    # Drift while over budget does not replace the kept list. (24.11 refuses a QOS list without
    # the default QOS, so the hand edit moves the default too, as an admin there must.)
    sacctmgr_write("modify", "account", "where", f"name={name}", f"cluster={CLUSTER}", "set", "qos=normal",
                   "defaultqos=normal")
    reconcile_teams()
    assert budget_row(name)["qos"] == budget_qos
    held = _sbatch_held(name)
    try:
        assert show_job(held)["QOS"] == budget_qos
        TeamPolicy.objects.filter(team=qt_team).update(gpu_hours_budget=100)   # raised: back in budget
        plan = reconcile_teams()
        assert not plan.failed
        row = budget_row(name)
        assert (set(row["qos"].split(",")), row["default_qos"]) == ({"normal", gold}, gold)
        assert show_job(held)["QOS"] == gold   # pending jobs go back to the team's own default
    finally:
        cancel([held])
    assert TeamPolicy.objects.get(team=qt_team).qos_before_budget == {}
    assert reconcile_teams().empty


def test_a_cleared_budget_takes_the_hard_switch_away(qt_team, bob):
    use_up_budget(qt_team, bob, gpu_hours_budget=0.01, mode="hard")
    reconcile_teams()
    assert budget_row(qt_team.name)["run_mins"] == "gres/gpu=0"
    TeamPolicy.objects.filter(team=qt_team).update(gpu_hours_budget=None)
    reconcile_teams()
    assert budget_row(qt_team.name)["run_mins"] == ""
    assert reconcile_teams().empty


@pytest.mark.django_db(transaction=True)
def test_a_budget_lowered_below_usage_reaches_slurm_within_10_seconds(qt_team, bob, admin_user, celery_settled):
    use_up_budget(qt_team, bob, gpu_hours_budget=100, mode="hard")
    reconcile_teams()
    token, _ = issue_token(user=admin_user, name="test")
    started = time.monotonic()
    resp = Client().put(f"/api/v1/teams/{qt_team.name}/policy", data=json.dumps({"gpu_hours_budget": 0.01}),
                        content_type="application/json", headers={"Authorization": f"Bearer {token}"})
    assert resp.status_code == 200, resp.content
    wait_until(lambda: budget_row(qt_team.name)["run_mins"] == "gres/gpu=0", timeout=10, interval=0.25,
               what="the hard budget's limit in sacctmgr")
    print(f"budget lowered via the API -> GrpTRESRunMins in Slurm: {time.monotonic() - started:.1f} s")
