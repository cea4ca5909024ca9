"""What the health policy decides for a node, from plain data: no Slurm, no database.

The findings come from the sensors' own classifier (slurm_plugins.findings), so each XID class
is followed from the kernel's number to the policy's action.
"""

from __future__ import annotations

import pytest

from portal.nodes.policy import (
    DRAIN,
    NOTHING,
    RESUME,
    NodeEvidence,
    RecentReport,
    Thresholds,
    cap_allows,
    decide,
    drain_cap,
)
from slurm_plugins.findings import NODE_ACTIONS, xid_finding

T = Thresholds(clean_checks=3, lemon_xids=3, soft_repeats=5, failed_jobs=5, drain_cap=0.10)
CLEAN = RecentReport(clean=True)


def report_with_xid(xid: int) -> tuple[RecentReport, bool]:
    """The report a sensor would send for one XID, and whether it is a soft (warning) XID."""
    f = xid_finding(xid, gpu=0)
    fatal = f"{f.check}: {f.detail}" if f.severity == "fatal" and f.action in NODE_ACTIONS else ""
    return RecentReport(clean=f.severity not in {"fatal", "warning"}, fatal=fatal), f.severity == "warning"


def evidence(*recent: RecentReport, **extra) -> NodeEvidence:
    return NodeEvidence(node_id=1, name="gpu08", recent=tuple(recent), **extra)


@pytest.mark.parametrize("xid", [48, 61, 62, 64, 74, 79, 95, 119, 120, 140])
def test_a_hardware_xid_drains_the_node_at_once(xid):
    report, _ = report_with_xid(xid)
    decision = decide(evidence(report), T)
    assert decision.action == DRAIN
    assert decision.why.startswith("xid: Xid") and str(xid) in decision.why


@pytest.mark.parametrize("xid", [13, 31, 43, 45, 68, 94, 777])
def test_one_application_or_unclassified_xid_leaves_the_node_in_service(xid):
    report, soft = report_with_xid(xid)
    assert soft
    assert decide(evidence(report, xid_warnings=1), T).action == NOTHING


@pytest.mark.parametrize("xid", [63, 92])
def test_an_informational_xid_changes_nothing(xid):
    report, soft = report_with_xid(xid)
    assert report.clean and not soft
    assert decide(evidence(report), T).action == NOTHING


def test_the_third_application_xid_in_the_window_makes_a_lemon():
    assert decide(evidence(CLEAN, xid_warnings=2), T).action == NOTHING
    decision = decide(evidence(CLEAN, xid_warnings=3), T)
    assert decision.action == DRAIN and decision.why == "lemon: 3 soft XIDs in 1 h"


def test_a_warning_repeated_in_many_reports_drains():
    assert decide(evidence(CLEAN, soft_repeats={"temperature": 4}), T).action == NOTHING
    decision = decide(evidence(CLEAN, soft_repeats={"temperature": 5, "power": 1}), T)
    assert decision.action == DRAIN and "temperature warning in 5 reports" in decision.why


def test_many_failed_jobs_make_a_lemon_only_when_several_users_failed_there():
    assert decide(evidence(CLEAN, failed_jobs=9, failed_job_users=1), T).action == NOTHING
    decision = decide(evidence(CLEAN, failed_jobs=5, failed_job_users=2), T)
    assert decision.action == DRAIN and "5 jobs of 2 users failed" in decision.why


def test_a_fatal_finding_stays_in_force_until_n_clean_checks_follow_it():
    fatal, _ = report_with_xid(48)
    assert decide(evidence(CLEAN, CLEAN, fatal), T).action == DRAIN  # a clean run or two is not healed
    assert decide(evidence(CLEAN, CLEAN, CLEAN, fatal), T).action == NOTHING  # not drained: nothing to do


def test_a_warning_between_clean_checks_restarts_the_count():
    fatal, _ = report_with_xid(79)
    warned = RecentReport(clean=False)
    assert decide(evidence(CLEAN, CLEAN, warned, CLEAN, fatal), T).action == DRAIN


def test_a_node_drained_by_the_portal_is_resumed_after_n_clean_checks():
    fatal, _ = report_with_xid(79)
    drained = {"drained": True, "reason": "portal: xid: Xid 79 on GPU 0"}
    assert decide(evidence(CLEAN, CLEAN, fatal, **drained), T).action == NOTHING
    decision = decide(evidence(CLEAN, CLEAN, CLEAN, fatal, **drained), T)
    assert decision.action == RESUME and "3 consecutive clean checks" in decision.why


def test_an_admins_drain_is_never_resumed_however_healthy_the_node():
    decision = decide(evidence(*[CLEAN] * 20, drained=True, reason="fan replacement (ticket 4711)"), T)
    assert decision.action == NOTHING


def test_a_fault_on_a_node_an_admin_drained_does_not_relabel_it():
    fatal, _ = report_with_xid(48)
    assert decide(evidence(fatal, drained=True, reason="fan replacement"), T).action == NOTHING


def test_a_lemon_is_not_resumed_while_its_xids_are_still_in_the_window():
    drained = {"drained": True, "reason": "portal: lemon: 3 soft XIDs in 1 h"}
    assert decide(evidence(*[CLEAN] * 5, xid_warnings=3, **drained), T).action == NOTHING
    assert decide(evidence(*[CLEAN] * 5, xid_warnings=2, **drained), T).action == RESUME


def test_a_node_without_reports_is_left_alone():
    assert decide(evidence(), T).action == NOTHING


@pytest.mark.parametrize(("size", "share", "cap"), [(8, 0.10, 1), (10, 0.10, 1), (20, 0.10, 2), (100, 0.10, 10),
                                                    (2, 0.10, 1), (8, 0.5, 4), (1000, 0.10, 100)])
def test_the_drain_cap_is_a_floor_of_the_share_but_at_least_one(size, share, cap):
    assert drain_cap(size, share) == cap


def test_half_of_a_partition_faulting_at_once_drains_only_the_cap():
    """8 GPU nodes, 4 report fatal faults at once: one is drained, three are left for admins."""
    drained = 0
    verdicts = []
    for _ in range(4):
        allowed = cap_allows(drained, 8, 0.10)
        drained += allowed
        verdicts.append(allowed)
    assert verdicts == [True, False, False, False]
