"""The policy reads its evidence from the stored reports, findings and jobs (PostgreSQL, no Slurm calls)."""

from __future__ import annotations

import time
from datetime import timedelta

import pytest
from django.utils import timezone

from portal.jobs.models import Job
from portal.nodes.models import Node
from portal.nodes.policy import DRAIN, NOTHING, Thresholds, decide, decide_all, load_evidence
from portal.teams.models import Team
from tests.nodes.policy_support import report, xid
from tests.slurm_plugins.signed_reports import master_key  # noqa: F401

pytestmark = [pytest.mark.django_db, pytest.mark.usefixtures("master_key")]
T = Thresholds()


def decision_for(node: str):
    [evidence] = load_evidence([Node.objects.get(name=node).pk], T)
    return evidence, decide(evidence, T)


def hot(gpu: int = 0) -> dict:
    return {"check": "temperature", "severity": "warning", "action": "none", "gpu": gpu, "xid": None,
            "detail": f"GPU {gpu} at 87 C"}


def test_the_newest_reports_decide_and_old_faults_are_forgiven_after_clean_checks():
    base = time.time() - 100
    report("gpu05", xid(48), at=base)
    assert decision_for("gpu05")[1].action == DRAIN
    for i in range(1, 4):
        report("gpu05", at=base + i)
    evidence, decision = decision_for("gpu05")
    assert [r.clean for r in evidence.recent] == [True, True, True, False]
    assert decision.action == NOTHING


def test_a_repeated_warning_in_stored_reports_makes_a_lemon():
    base = time.time() - 100
    for i in range(4):
        report("gpu06", hot(), at=base + i)
    assert decision_for("gpu06")[1].action == NOTHING
    report("gpu06", hot(), at=base + 5)
    evidence, decision = decision_for("gpu06")
    assert evidence.soft_repeats == {"temperature": 5}
    assert (decision.action, decision.why) == (DRAIN, "lemon: temperature warning in 5 reports in 1 h")


def test_soft_xids_older_than_the_window_do_not_count():
    report("gpu04", xid(13), at=time.time() - 2 * 3600 + 60)  # outside the 1 h window
    report("gpu04", xid(13), at=time.time() - 20)
    report("gpu04", xid(31), at=time.time() - 10)
    evidence, decision = decision_for("gpu04")
    assert evidence.xid_warnings == 2 and decision.action == NOTHING


def test_jobs_of_two_users_failing_on_a_node_make_it_a_lemon(alice, bob):
    team = Team.objects.create(name="vision")
    now = timezone.now()
    for i, owner in enumerate([alice, alice, alice, bob, bob]):
        Job.objects.create(owner=owner, team=team, name=f"j{i}", state="FAILED" if i else "NODE_FAIL",
                           end_time=now - timedelta(minutes=i), nodes_list="gpu[02-03]")
    Job.objects.create(owner=bob, team=team, name="long ago", state="FAILED", end_time=now - timedelta(hours=3),
                       nodes_list="gpu03")
    Node.objects.create(name="gpu02")
    Node.objects.create(name="gpu03")
    decisions = {e.name: (e.failed_jobs, d.action) for e, d in decide_all(T)}
    assert decisions["gpu02"] == (5, DRAIN)
    assert decisions["gpu03"] == (5, DRAIN)


@pytest.mark.parametrize(("nodes_list", "node"), [("r[1-2]n[01-02]", "r2n02"), ("gpu[01-02]-ib", "gpu02-ib")])
def test_lemon_detection_reads_multi_bracket_and_suffixed_node_lists(alice, bob, nodes_list, node):
    # The policy once had its own hostlist parser that read "r[1-2]n[01-02]" as r1 r2 n01 n02.
    team = Team.objects.create(name="vision")
    for i, owner in enumerate([alice, alice, alice, bob, bob]):
        Job.objects.create(owner=owner, team=team, name=f"j{i}", state="FAILED", end_time=timezone.now(),
                           nodes_list=nodes_list)
    Node.objects.create(name=node)
    evidence, decision = decision_for(node)
    assert (evidence.failed_jobs, evidence.failed_job_users, decision.action) == (5, 2, DRAIN)


def test_one_users_failing_jobs_are_not_the_nodes_fault(alice):
    team = Team.objects.create(name="vision")
    for i in range(8):
        Job.objects.create(owner=alice, team=team, name=f"bug{i}", state="FAILED", end_time=timezone.now(),
                           nodes_list="gpu01")
    Node.objects.create(name="gpu01")
    evidence, decision = decision_for("gpu01")
    assert (evidence.failed_jobs, evidence.failed_job_users, decision.action) == (8, 1, NOTHING)
