"""The failure classes, on plain data (the cluster tests cover how the facts are gathered)."""

from __future__ import annotations

from portal.recovery import classify
from portal.recovery.classify import NodeFault
from portal.recovery.models import Cause, FailureClass

XID79 = NodeFault("gpu04", "xid: Xid 79 on GPU 0: GPU has fallen off the bus", 79)


def test_endings_that_are_the_jobs_own_doing_are_application_failures():
    for state, cause in (("FAILED", Cause.EXIT_CODE), ("OUT_OF_MEMORY", Cause.OUT_OF_MEMORY),
                         ("TIMEOUT", Cause.TIMEOUT), ("CANCELLED", Cause.CANCELLED)):
        verdict = classify.ended(state, 3, None, nodes=["gpu04"], faults=[])
        assert (verdict.failure_class, verdict.cause) == (FailureClass.APPLICATION, cause), state
    assert classify.ended("COMPLETED", 0, None, nodes=["gpu04"], faults=[]).failure_class == ""


def test_a_job_that_failed_while_its_gpu_fell_off_the_bus_is_the_nodes_fault():
    verdict = classify.ended("FAILED", 1, None, nodes=["gpu04"], faults=[XID79])
    assert (verdict.failure_class, verdict.cause, verdict.failed_node, verdict.xid) == (
        FailureClass.INFRASTRUCTURE, Cause.FATAL_FINDING, "gpu04", 79)
    # ...but running out of time or memory stays the job's own doing, whatever the node did.
    assert classify.ended("TIMEOUT", None, None, nodes=["gpu04"], faults=[XID79]).cause == Cause.TIMEOUT


def test_requeues_made_behind_the_workers_back():
    node_fail = classify.requeued("NODE_FAIL", nodes=["gpu04"], elapsed_s=30, out_of_service={"gpu04": "down"},
                                  faults=[], by_person=False)
    assert (node_fail.cause, node_fail.failed_node) == (Cause.NODE_FAIL, "gpu04")
    hung = classify.requeued("NODE_FAIL", nodes=["gpu04"], elapsed_s=30, faults=[], by_person=False,
                             out_of_service={"gpu04": "portal: hung: no health report for 16 s"})
    assert (hung.failure_class, hung.cause, hung.failed_node) == (FailureClass.INFRASTRUCTURE, Cause.HUNG_NODE,
                                                                  "gpu04")
    # sacct never showed the run (slurmdbd lagging): the node now down tells.
    unseen = classify.requeued("", nodes=["gpu04"], elapsed_s=0, out_of_service={"gpu04": "rq-test node failure"},
                               faults=[], by_person=False)
    assert (unseen.failure_class, unseen.cause, unseen.failed_node) == (FailureClass.INFRASTRUCTURE,
                                                                        Cause.NODE_FAIL, "gpu04")
    prolog = classify.requeued("REQUEUED", nodes=["gpu04"], elapsed_s=0, out_of_service={"gpu04": "portal: xid"},
                               faults=[], by_person=False)
    assert prolog.cause == Cause.PROLOG_FAIL
    person = classify.requeued("REQUEUED", nodes=["gpu04"], elapsed_s=40, out_of_service={}, faults=[],
                               by_person=True)
    assert person.failure_class == ""


def test_the_same_fault_on_two_nodes_is_a_crash_loop_but_two_different_faults_are_not():
    now = classify.infrastructure(Cause.FATAL_FINDING, "gpu05: xid: Xid 79 on GPU 1", "gpu05")
    assert classify.crash_loop(now, [("fatal_finding:79", "gpu04")], 2) == ["gpu04", "gpu05"]
    assert classify.crash_loop(now, [("fatal_finding:48", "gpu04")], 2) == []
    assert classify.crash_loop(now, [("fatal_finding:79", "gpu05")], 2) == []   # one node twice: the node


def test_backoff_follows_the_schedule_and_repeats_its_last_step():
    assert [classify.backoff_s(n, [0, 30, 120]) for n in range(5)] == [0, 30, 120, 120, 120]
