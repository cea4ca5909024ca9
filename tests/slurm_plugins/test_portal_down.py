"""Sensors against a down portal (a closed port) and a live one (pytest-django's live_server).

Each test has its own emulated GPUs for gpu07 or gpu08, so only the test's own sensor sees its
fault: when the node gets drained, this sensor did it. Nodes are resumed afterwards.
"""

from __future__ import annotations

import json
import shutil
import subprocess

import pytest

from portal.nodes.models import Finding, HealthReport
from slurm_plugins import emulated
from tests.conftest import wait_until
from tests.slurm_plugins.helpers import (
    break_gpus,
    closed_port_url,
    healthy_gpus,
    resume,
    run_hook,
    slurm_node,
    spool_files,
    write_config,
)

XID48 = "portal: xid: Xid 48 on GPU 1: double-bit ECC error"


@pytest.fixture
def gpu07(cluster, tmp_path):
    resume("gpu07")
    healthy_gpus(tmp_path / "gpu", "gpu07")
    yield tmp_path
    resume("gpu07")


def spooled_bodies(tmp, node="gpu07") -> list[dict]:
    return [json.loads(p.read_text())["body"] for p in spool_files(tmp, node)]


def test_with_the_portal_down_the_sensor_drains_itself_spools_and_replays_later(
        gpu07, live_server, celery_settled):
    break_gpus(gpu07 / "gpu", "gpu07", lambda st: emulated.inject_xid(st, 1, 48))
    down = write_config(gpu07, portal_url=closed_port_url())
    proc = run_hook("healthcheck", "gpu07", down)
    assert proc.returncode == 1, proc.stderr
    assert slurm_node("gpu07") == ("drained", XID48)
    [spooled] = spooled_bodies(gpu07)
    assert spooled["spooled"] is True and spooled["source"] == "healthcheck"
    assert [(f["check"], f["xid"], f["gpu"]) for f in spooled["findings"]] == [("xid", 48, 1)]

    # The portal is back and the GPU healthy: the next run replays the spool first.
    healthy_gpus(gpu07 / "gpu", "gpu07")
    up = write_config(gpu07, portal_url=live_server.url)
    proc = run_hook("healthcheck", "gpu07", up)
    assert proc.returncode == 0, proc.stderr
    assert spool_files(gpu07, "gpu07") == []
    reports = list(HealthReport.objects.filter(node__name="gpu07").order_by("sent_at"))
    assert [(r.clean, r.late) for r in reports] == [(False, False), (True, False)]
    assert Finding.objects.get(report=reports[0]).xid == 48
    # A drain stays until the portal's policy (or an admin) resumes the node.
    assert slurm_node("gpu07") == ("drained", XID48)


def test_a_prolog_with_the_portal_down_and_no_fault_exits_0(gpu07):
    conf = write_config(gpu07, portal_url=closed_port_url())
    proc = run_hook("prolog", "gpu07", conf, env={"SLURM_JOB_ID": "9001", "SLURM_JOB_GPUS": "0,1"})
    assert proc.returncode == 0, proc.stderr
    assert slurm_node("gpu07")[0] in {"idle", "mixed", "allocated", "completing"}
    [spooled] = spooled_bodies(gpu07)
    assert (spooled["source"], spooled["job_id"], spooled["findings"]) == ("prolog", 9001, [])


def test_a_prolog_on_a_faulty_node_fails_and_drains_it_even_with_the_portal_up(
        gpu07, live_server, celery_settled):
    """Slurm drains a node whose prolog fails anyway; the sensor's `portal:` reason keeps
    that drain one the portal's policy may later undo."""
    break_gpus(gpu07 / "gpu", "gpu07", lambda st: emulated.inject_xid(st, 1, 48))
    conf = write_config(gpu07, portal_url=live_server.url)
    proc = run_hook("prolog", "gpu07", conf, env={"SLURM_JOB_ID": "9002"})
    assert proc.returncode == 1
    assert slurm_node("gpu07") == ("drained", XID48)
    report = HealthReport.objects.get(node__name="gpu07")
    assert (report.source, report.job_id, report.clean) == ("prolog", 9002, False)
    assert spool_files(gpu07, "gpu07") == []


def test_with_the_portal_up_a_health_check_leaves_the_drain_to_the_portal(
        gpu07, live_server, celery_settled):
    break_gpus(gpu07 / "gpu", "gpu07", lambda st: emulated.inject_hot(st, 2))
    conf = write_config(gpu07, portal_url=live_server.url)
    proc = run_hook("healthcheck", "gpu07", conf)
    assert proc.returncode == 1        # slurmd logs it; the node stays up until the policy decides
    assert "drain" not in slurm_node("gpu07")[0]
    finding = Finding.objects.get(node__name="gpu07")
    assert (finding.check_name, finding.severity, finding.action, finding.gpu) == ("temperature", "fatal", "drain", 2)


def test_a_health_check_never_relabels_an_admins_drain(gpu07):
    subprocess.run(["scontrol", "update", "nodename=gpu07", "state=drain", "reason=admin: new PSU"], check=True)
    break_gpus(gpu07 / "gpu", "gpu07", lambda st: emulated.inject_ecc(st, 0))
    proc = run_hook("healthcheck", "gpu07", write_config(gpu07, portal_url=closed_port_url()))
    assert proc.returncode == 1
    assert slurm_node("gpu07") == ("drained", "admin: new PSU")


def test_the_epilog_kills_processes_left_on_the_jobs_gpus(gpu07):
    stray = subprocess.Popen(["sleep", "300"])
    other = subprocess.Popen(["sleep", "300"])
    try:
        break_gpus(gpu07 / "gpu", "gpu07", lambda st: (emulated.add_process(st, 1, stray.pid),
                                                       emulated.add_process(st, 2, other.pid)))
        conf = write_config(gpu07, portal_url=closed_port_url())
        proc = run_hook("epilog", "gpu07", conf, env={"SLURM_JOB_ID": "9003", "SLURM_JOB_GPUS": "0,1"})
        assert proc.returncode == 0, proc.stderr
        assert stray.wait(timeout=5) == -9            # killed: it was on the job's GPU 1
        assert other.poll() is None                   # GPU 2 belongs to someone else
        [spooled] = spooled_bodies(gpu07)
        assert [(f["check"], f["severity"], f["gpu"]) for f in spooled["findings"]] == \
            [("stray-process", "warning", 1)]
        assert "drain" not in slurm_node("gpu07")[0]
    finally:
        for proc in (stray, other):
            proc.kill()
            proc.wait()


def test_an_epilog_that_may_not_kill_drains_the_node(gpu07):
    stray = subprocess.Popen(["sleep", "300"])
    try:
        break_gpus(gpu07 / "gpu", "gpu07", lambda st: emulated.add_process(st, 0, stray.pid))
        conf = write_config(gpu07, portal_url=closed_port_url(), sensor="kill_stray = false")
        proc = run_hook("epilog", "gpu07", conf, env={"SLURM_JOB_ID": "9004", "SLURM_JOB_GPUS": "0"})
        assert proc.returncode == 1
        state, reason = slurm_node("gpu07")
        assert state == "drained"
        assert reason.startswith(f"portal: stray-process: GPU 0: process(es) {stray.pid} still on the GPU")
    finally:
        stray.kill()
        stray.wait()


def test_a_full_spool_keeps_the_newest_reports(gpu07):
    conf = write_config(gpu07, portal_url=closed_port_url(), sensor="spool_max = 3")
    for job in range(5):
        assert run_hook("prolog", "gpu07", conf, env={"SLURM_JOB_ID": str(100 + job)}).returncode == 0
    assert [b["job_id"] for b in spooled_bodies(gpu07)] == [102, 103, 104]


def test_a_spooled_report_the_portal_already_has_is_dropped_not_stored_twice(
        gpu07, live_server, celery_settled):
    """If the portal stored a report but its answer was lost, the replay is refused as a seen
    nonce, and the sensor deletes it instead of retrying forever."""
    down = write_config(gpu07, portal_url=closed_port_url())
    assert run_hook("prolog", "gpu07", down, env={"SLURM_JOB_ID": "77"}).returncode == 0
    [path] = spool_files(gpu07, "gpu07")
    copy = path.with_suffix(".keep")
    shutil.copy(path, copy)
    up = write_config(gpu07, portal_url=live_server.url)
    assert run_hook("healthcheck", "gpu07", up).returncode == 0
    shutil.move(copy, path)                    # the same report, once more in the spool
    assert run_hook("healthcheck", "gpu07", up).returncode == 0
    assert spool_files(gpu07, "gpu07") == []
    assert HealthReport.objects.filter(node__name="gpu07", job_id=77).count() == 1
    wait_until(lambda: HealthReport.objects.filter(node__name="gpu07").count() == 3, timeout=20,
               what="the prolog report and two health checks")
